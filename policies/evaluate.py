"""Answer "would this policy let this packet in?" without nftables, for safety checks.

The apply engine asks it before an apply: does the admin's own connection (their address,
the port they use) still reach the box under the new policy? It follows the compiled
semantics: anti-lockout first, block lists, then the rules to ``self`` in order, then the
zone's default. A rule with a schedule is not counted as access (it may be closed now or
later), so a policy that keeps the admin in only part of the week is reported as unsafe.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from policies.intervals import contains
from policies.model import SELF, Family, Policy, Rule, Service


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str


def zone_of(policy: Policy, address: str) -> str | None:
    """The zone whose own network holds ``address`` (None: not inside any zone network)."""
    ip = ipaddress.ip_address(address)
    for zone in policy.zones:
        for a in zone.addresses:
            if a.family == ip.version and ip in ipaddress.ip_network(
                f"{a.address}/{a.prefix}", strict=False
            ):
                return zone.name
    return None


def _service_matches(services: tuple[Service, ...], proto: str, port: int) -> bool:
    if not services:
        return True
    for s in services:
        ranges = s.tcp if proto == "tcp" else s.udp if proto == "udp" else ()
        if any(lo <= port <= hi for lo, hi in ranges):
            return True
    return False


def _rule_matches(rule: Rule, zone: str, family: Family, value: int, proto: str, port: int) -> bool:
    if not rule.dst.is_self or rule.src.is_self:
        return False
    if rule.src.zones is not None and zone not in rule.src.zones:
        return False
    if rule.src.addresses is not None and not contains(list(rule.src.addresses.of(family)), value):
        return False
    return _service_matches(rule.services, proto, port)


def access_to_box(policy: Policy, address: str, proto: str, port: int) -> Verdict:
    """Would a new connection from ``address`` to the box's ``proto``/``port`` be accepted?"""
    ip = ipaddress.ip_address(address)
    family: Family = 4 if ip.version == 4 else 6
    value = int(ip)
    zone = zone_of(policy, address)
    if zone is None:
        return Verdict(False, f"{address} is in no zone's network, so its zone is unknown")
    m = policy.management
    if (
        proto == "tcp"
        and m.anti_lockout
        and zone in m.zones
        and any(lo <= port <= hi for lo, hi in m.tcp_ports)
    ):
        return Verdict(True, f"anti-lockout keeps tcp/{port} open from zone {zone}")
    for bl in policy.blocklists:
        if (
            bl.block in ("both", "inbound")
            and zone in bl.zones
            and contains(list(bl.addresses.of(family)), value)
        ):
            return Verdict(False, f"{address} is on block list {bl.name}")
    for rule in policy.rules:
        if _rule_matches(rule, zone, family, value, proto, port):
            if rule.schedule is not None:
                if rule.action == "accept":
                    continue  # open only some of the time: not counted as access
                return Verdict(
                    False, f"rule {rule.name} {rule.action}s it (at least some of the time)"
                )
            return Verdict(rule.action == "accept", f"rule {rule.name} {rule.action}s it")
    default = policy.default_for(zone, SELF)
    return Verdict(default.action == "accept", f"default {default.src}->self {default.action}s it")


def allows_everything(policy: Policy) -> bool:
    """True when nothing is ever dropped or rejected: every default accepts, no deny rule."""
    if any(r.action != "accept" for r in policy.rules):
        return False
    zones = [z.name for z in policy.zones]
    pairs = [(s, d) for s in zones for d in [*zones, SELF]]
    return all(policy.default_for(s, d).action == "accept" for s, d in pairs)

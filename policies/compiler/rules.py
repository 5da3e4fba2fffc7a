"""Render one policy rule as the nft rule lines of one zone-pair chain.

A rule becomes one line per (address family, protocol part, schedule piece) it needs:
addresses split by family (``ip`` vs ``ip6``), ICMP types are per family, a reject must
say how (TCP reset vs ICMP), and a schedule crossing UTC midnight needs two day matches.
Families are only split when addresses or ICMP require it; a plain port rule is one line
for IPv4 and IPv6 alike.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from policies.compiler.matches import IP, ConstSets, address_match, log_statement
from policies.compiler.schedule import schedule_matches
from policies.model import AddressSet, ClientMembers, Endpoint, Family, Rule

_UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True)
class DynamicSet:
    """A per-source rate-limit set (a meter) that a rule adds source addresses to."""

    name: str
    family: Family
    timeout: str


@dataclass(frozen=True)
class _Part:
    family: Family | None  # None: both families
    match: str
    proto: str | None  # "tcp", "udp", "icmp", "icmpv6" or None (any)


def _protocol_parts(rule: Rule, consts: ConstSets) -> list[_Part]:
    tcp = sorted({r for s in rule.services for r in s.tcp})
    udp = sorted({r for s in rule.services for r in s.udp})
    icmp = list(dict.fromkeys(t for s in rule.services for t in s.icmp))
    icmp6 = list(dict.fromkeys(t for s in rule.services for t in s.icmpv6))
    if not rule.services:
        return [_Part(None, "", None)]
    parts: list[_Part] = []
    if tcp:
        parts.append(_Part(None, f"tcp dport {consts.ports(tcp)}", "tcp"))
    if udp:
        parts.append(_Part(None, f"udp dport {consts.ports(udp)}", "udp"))
    if icmp:
        parts.append(_Part(4, "icmp type " + _names(icmp), "icmp"))
    if icmp6:
        parts.append(_Part(6, "icmpv6 type " + _names(icmp6), "icmpv6"))
    return parts


def _names(items: list[str]) -> str:
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def rule_families(rule: Rule) -> list[Family | None]:
    """[None] when addresses do not force a split, else the families both sides share."""
    if rule.src.addresses is None and rule.dst.addresses is None and rule.dst.domains is None:
        return [None]
    fams: set[Family] = {4, 6}
    for side in (rule.src.addresses, rule.dst.addresses):
        if side is not None:
            fams &= set(side.families())
    return sorted(fams)  # type: ignore[return-value]


def _verdict(rule: Rule, proto: str | None) -> list[tuple[str, str]]:
    """(extra match, verdict) pairs; an any-protocol reject needs a TCP and a non-TCP line."""
    if rule.action != "reject":
        return [("", rule.action)]
    if proto == "tcp":
        return [("", "reject with tcp reset")]
    if proto is None:
        return [
            ("meta l4proto tcp", "reject with tcp reset"),
            ("", "reject with icmpx admin-prohibited"),
        ]
    return [("", "reject with icmpx admin-prohibited")]


def dynamic_sets(rule: Rule) -> list[DynamicSet]:
    if rule.limit is None or not rule.limit.per_source:
        return []
    unit = rule.limit.rate.split("/")[1]
    timeout = f"{2 * _UNIT_SECONDS[unit]}s"
    fams: list[Family] = [f for f in rule_families(rule) if f is not None] or [4, 6]
    return [DynamicSet(f"rl_{rule.name}_v{f}", f, timeout) for f in fams]


def _limit(rule: Rule, family: Family) -> str:
    assert rule.limit is not None
    burst = f" burst {rule.limit.burst} packets" if rule.limit.burst else ""
    spec = f"limit rate {rule.limit.rate}{burst}"
    if rule.limit.per_source:
        return f"add @rl_{rule.name}_v{family} {{ {IP[family]} saddr {spec} }}"
    return spec


def _variants(end: Endpoint, source: bool) -> list[Endpoint]:
    m = end.members
    if m is None:
        return [end]
    out: list[Endpoint] = []
    if m.addresses.v4 or m.addresses.v6:
        out.append(Endpoint(end.zones, addresses=m.addresses))
    if m.macs and source:
        out.append(Endpoint(end.zones, members=ClientMembers(AddressSet(m.addresses.name), m.macs)))
    zones = tuple(z for z in m.zones if end.zones is None or z in end.zones)
    if zones:
        out.append(Endpoint(zones))
    return out


def expand_members(rule: Rule) -> list[Rule]:
    """A rule naming a client group, as one rule per kind of member the group has.

    Addresses match ``ip saddr @cg_<group>_v4``, MACs ``ether saddr @cg_<group>_mac`` (the
    sender on the office's own segment; MACs only ever match sources), and zone members
    become the zone itself.
    """
    if rule.src.members is None and rule.dst.members is None:
        return [rule]
    return [
        replace(rule, src=s, dst=d)
        for s in _variants(rule.src, True)
        for d in _variants(rule.dst, False)
    ]


def rule_lines(rule: Rule, offset_minutes: int, consts: ConstSets) -> list[str]:
    """The nft lines for ``rule`` (schedules in UTC for the given site offset)."""
    when = schedule_matches(rule.schedule.windows, offset_minutes) if rule.schedule else [""]
    comment = f'comment "{rule.name}{": " + rule.comment if rule.comment else ""}"'
    lines: list[str] = []
    for family in rule_families(rule):
        for part in _protocol_parts(rule, consts):
            if family is not None and part.family is not None and part.family != family:
                continue
            fams: list[Family | None] = [family]
            if family is None and rule.limit and rule.limit.per_source:
                fams = [part.family] if part.family else [4, 6]
            for fam in fams:
                base: list[str] = []
                src, dst = rule.src, rule.dst
                if fam is not None and not (src.addresses or dst.addresses or dst.domains):
                    base.append(f"meta nfproto ipv{fam}")
                if src.members is not None and src.members.macs:
                    base.append(f"ether saddr @{src.members.mac_set}")
                if fam is not None and src.addresses is not None:
                    base.append(address_match(src.addresses, fam, "saddr", consts))
                if fam is not None and dst.addresses is not None:
                    base.append(address_match(dst.addresses, fam, "daddr", consts))
                if fam is not None and dst.domains is not None:
                    base.append(f"{IP[fam]} daddr @{dst.domains.name}_v{fam}")
                if part.match:
                    base.append(part.match)
                for sched in when:
                    match = " ".join(x for x in (*base, sched) if x)
                    lines.extend(_statements(rule, match, part.proto, fam, comment))
    return lines


def _statements(
    rule: Rule, match: str, proto: str | None, fam: Family | None, comment: str
) -> list[str]:
    out: list[str] = []
    if rule.log and rule.log.rate:
        out.append(_join(match, f"limit rate {rule.log.rate}", log_statement(rule.log), comment))
    for extra, verdict in _verdict(rule, proto):
        stmts: list[str] = []
        if rule.limit:
            stmts.append(_limit(rule, fam or 4))
        if rule.counter:
            stmts.append("counter")
        if rule.log and not rule.log.rate:
            stmts.append(log_statement(rule.log))
        out.append(_join(match, extra, *stmts, verdict, comment))
    return out


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)

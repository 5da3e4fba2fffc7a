"""Parse the sections that use the objects: rules, defaults, NAT and management.

Names in these sections are resolved against zones, groups, block lists, services and
schedules defined earlier; an unknown name is reported with what exists instead.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from typing import Any

from policies.checks import Checker, suggest, type_name
from policies.dns_section import domain_name
from policies.intervals import Interval, merge
from policies.model import (
    ANY,
    SELF,
    Action,
    AddressSet,
    BlockList,
    ClientMembers,
    Default,
    DomainSet,
    Endpoint,
    LimitSpec,
    LogSpec,
    Rule,
    Schedule,
    Service,
    Zone,
)
from policies.objects import looks_like_address, parse_literal, parse_windows
from policies.schema_base import NAME_PATTERN
from policies.webcatalog import Catalogue
from policies.yaml_source import Path

_RATE = re.compile(r"^[1-9]\d{0,8}/(second|minute|hour|day)$")
_LOG_PREFIX = re.compile(r"^[A-Za-z0-9 _:.,=/@#+-]{1,64}$")
_LOG_LEVELS = ("emerg", "alert", "crit", "err", "warn", "notice", "info", "debug")
ACTIONS: tuple[Action, ...] = ("accept", "drop", "reject")


@dataclass
class Names:
    """Everything a rule may refer to, by name."""

    zones: dict[str, Zone]
    groups: dict[str, AddressSet]
    blocklists: dict[str, BlockList]
    services: dict[str, Service]
    schedules: dict[str, Schedule]
    client_groups: dict[str, ClientMembers] = field(default_factory=dict)
    catalogue: Catalogue | None = None

    def address_set(self, name: str) -> AddressSet | None:
        if name in self.groups:
            return self.groups[name]
        if name in self.blocklists:
            return self.blocklists[name].addresses
        return None


def _zone_list(names: Names) -> str:
    return ", ".join(names.zones) or "none defined"


def parse_addresses(ck: Checker, value: Any, path: Path, names: Names) -> AddressSet | None:
    """Groups, block lists and literals; one named set is referenced as is, others merged."""
    items = ck.strings(value, path)
    if len(items) == 1 and (single := names.address_set(items[0][1])) is not None:
        return single
    v4: list[Interval] = []
    v6: list[Interval] = []
    ok = True
    for ipath, text in items:
        named = names.address_set(text)
        if named is not None:
            v4 += named.v4
            v6 += named.v6
            continue
        parsed = parse_literal(text)
        if isinstance(parsed, str):
            ok = False
            if looks_like_address(text):
                ck.error(ipath, parsed)
            else:
                known = [*names.groups, *names.blocklists]
                ck.error(
                    ipath,
                    f"unknown address group '{text}' (groups: {', '.join(known) or 'none defined'})"
                    f"{suggest(text, known)}",
                )
            continue
        fam, iv = parsed
        (v4 if fam == 4 else v6).append(iv)
    if not ok or not items:
        return None
    return AddressSet(None, tuple(merge(v4)), tuple(merge(v6)))


def parse_endpoint(ck: Checker, value: Any, path: Path, names: Names) -> Endpoint | None:
    """``lan`` / ``[lan, guest]`` / ``printers`` / ``192.0.2.7`` / ``{zone: lan, address: x}``."""
    if value is None or value == ANY:
        return Endpoint(None)
    if value == SELF:
        return Endpoint(None, is_self=True)
    if isinstance(value, dict):
        data = ck.mapping(value, path, "endpoint")
        if data is None:
            return None
        zones: tuple[str, ...] | None = None
        if "zone" in data:
            zl = [
                z
                for zp, z in ck.strings(data["zone"], (*path, "zone"))
                if _zone_ok(ck, zp, z, names)
            ]
            zones = tuple(zl)
        addrs = (
            parse_addresses(ck, data["address"], (*path, "address"), names)
            if "address" in data
            else None
        )
        members = (
            _client_groups(ck, data["group"], (*path, "group"), names) if "group" in data else None
        )
        domains = _destination_names(ck, data, path, names)
        if sum(x is not None for x in (addrs, members, domains)) > 1:
            ck.error(path, "use one of address, group, or domains/web_services per side")
            return None
        return Endpoint(zones, addresses=addrs, members=members, domains=domains)
    items = ck.strings(value, path)
    if not items:
        ck.error(path, f"expected a zone, address group or address, got {type_name(value)}")
        return None
    if len(items) == 1 and items[0][1] in names.client_groups:
        return Endpoint(None, members=_client_groups(ck, items[0][1], path, names))
    zone_items = [(p, v) for p, v in items if v in names.zones or v in (ANY, SELF)]
    addr_items = [(p, v) for p, v in items if (p, v) not in zone_items]
    if any(v in (ANY, SELF) for _, v in items) and len(items) > 1:
        ck.error(path, "'any' and 'self' stand alone, not in a list")
        return None
    # A bare word that is neither zone nor group is most likely a zone typo.
    unknown = [
        (p, v) for p, v in addr_items if names.address_set(v) is None and not looks_like_address(v)
    ]
    groups = [*names.groups, *names.blocklists]
    for p, v in unknown:
        extra = f"; groups: {', '.join(groups)}" if groups else ""
        if names.client_groups:
            extra += f"; client groups: {', '.join(names.client_groups)}"
        ck.error(
            p,
            f"unknown zone '{v}' (zones: {_zone_list(names)}{extra})"
            f"{suggest(v, [*names.zones, *groups, *names.client_groups])}",
        )
    if unknown:
        return None
    if zone_items and addr_items:
        ck.error(path, "mixes zones and addresses; write {zone: [...], address: [...]} instead")
        return None
    if zone_items:
        return Endpoint(tuple(v for _, v in zone_items))
    addrs = parse_addresses(ck, [v for _, v in addr_items], path, names)
    return Endpoint(None, addresses=addrs) if addrs else None


def _client_groups(ck: Checker, value: Any, path: Path, names: Names) -> ClientMembers | None:
    """One client group, or several merged (their addresses, MACs and zones together)."""
    found: list[ClientMembers] = []
    for gpath, gname in ck.strings(value, path):
        if gname not in names.client_groups:
            known = list(names.client_groups)
            ck.error(
                gpath,
                f"unknown client group '{gname}' (web_filter.groups: "
                f"{', '.join(known) or 'none defined'}){suggest(gname, known)}",
            )
        else:
            found.append(names.client_groups[gname])
    found = list(dict.fromkeys(found))
    if not found:
        return None
    if len(found) == 1:
        return found[0]
    # Group names may contain '_', so joining them is ambiguous (kids+staff vs kids_staff)
    # and would share one nft set between different members: name the merge by a digest.
    key = ",".join(sorted(m.addresses.name or "" for m in found))
    label = "cgm_" + hashlib.sha1(key.encode()).hexdigest()[:12]
    return ClientMembers(
        AddressSet(
            label,
            tuple(merge([iv for m in found for iv in m.addresses.v4])),
            tuple(merge([iv for m in found for iv in m.addresses.v6])),
        ),
        tuple(dict.fromkeys(mac for m in found for mac in m.macs)),
        tuple(dict.fromkeys(z for m in found for z in m.zones)),
    )


def _destination_names(
    ck: Checker, data: dict[str, Any], path: Path, names: Names
) -> DomainSet | None:
    """``domains`` and ``web_services`` of an endpoint; the set is named by parse_rules."""
    patterns: list[str] = []
    before = len(ck.problems)
    for dpath, text in ck.strings(data.get("domains"), (*path, "domains")):
        wild = text.strip().startswith("*.")
        name = domain_name(ck, text.strip()[2:] if wild else text, dpath)
        if name is not None:
            patterns.append(f"*.{name}" if wild else name)
    for spath, sname in ck.strings(data.get("web_services"), (*path, "web_services")):
        if names.catalogue is None:
            continue
        try:
            for service in names.catalogue.expand_services([sname]):
                patterns += service.domains
        except KeyError:
            known = [*names.catalogue.service_groups, *names.catalogue.services]
            ck.error(spath, f"unknown service '{sname}'{suggest(sname, known)}")
    if "domains" not in data and "web_services" not in data:
        return None
    if len(ck.problems) > before:  # reported; "no destination names" would only repeat it
        return None
    return DomainSet("", tuple(dict.fromkeys(patterns)))


def _zone_ok(
    ck: Checker, path: Path, zone: str, names: Names, *, allow: tuple[str, ...] = ()
) -> bool:
    if zone in names.zones or zone in allow:
        return True
    extra = f", {', '.join(allow)}" if allow else ""
    ck.error(
        path,
        f"unknown zone '{zone}' (zones: {_zone_list(names)}{extra}){suggest(zone, names.zones)}",
    )
    return False


def parse_log(ck: Checker, value: Any, path: Path, default_prefix: str) -> LogSpec | None:
    if value is None or value is False:
        return None
    if value is True:
        return LogSpec(default_prefix[:64])
    data = ck.mapping(value, path, "log")
    if data is None:
        return None
    prefix = data.get("prefix", default_prefix[:64])
    if not isinstance(prefix, str) or not _LOG_PREFIX.match(prefix):
        ck.error((*path, "prefix"), "log prefix: 1-64 letters, digits, spaces or _:.,=/@#+-")
        prefix = default_prefix[:64]
    level = data.get("level", "info")
    if level not in _LOG_LEVELS:
        ck.error(
            (*path, "level"), f"unknown log level {level!r} (allowed: {', '.join(_LOG_LEVELS)})"
        )
        level = "info"
    rate = data.get("rate")
    if rate is not None and not (isinstance(rate, str) and _RATE.match(rate)):
        ck.error((*path, "rate"), f"expected a rate like 10/minute, got {rate!r}")
        rate = None
    return LogSpec(prefix, level, rate)


def parse_limit(ck: Checker, value: Any, path: Path) -> LimitSpec | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = {"rate": value}
    data = ck.mapping(value, path, "limit")
    if data is None or "rate" not in data:
        return None
    rate = data["rate"]
    if not (isinstance(rate, str) and _RATE.match(rate)):
        ck.error((*path, "rate"), f"expected a rate like 10/second, got {rate!r}")
        return None
    burst = data.get("burst")
    if burst is not None and (isinstance(burst, bool) or not isinstance(burst, int) or burst < 1):
        ck.error((*path, "burst"), f"expected a whole number of packets >= 1, got {burst!r}")
        burst = None
    per_source = ck.boolean(data.get("per_source", False), (*path, "per_source")) or False
    return LimitSpec(rate, burst, per_source)


def parse_action(ck: Checker, value: Any, path: Path) -> Action | None:
    for action in ACTIONS:
        if value == action:
            return action
    ck.error(path, f"unknown action {value!r} (allowed: accept, drop, reject)")
    return None


def parse_rules(ck: Checker, value: Any, names: Names) -> list[Rule]:
    rules: list[Rule] = []
    seen: set[str] = set()
    for path, rdef in ck.items(value, ("rules",), scalar=False):
        data = ck.mapping(rdef, path, "rule")
        if data is None:
            continue
        idx = path[-1]
        rname = data.get("name", f"rule-{int(idx) + 1}")
        name_ok = ck.name(rname, (*path, "name"), NAME_PATTERN, "rule name")
        if name_ok and rname in seen:
            ck.error((*path, "name"), f"rule name '{rname}' is used twice")
        if name_ok:
            seen.add(rname)
        src = parse_endpoint(ck, data.get("from"), (*path, "from"), names)
        dst = parse_endpoint(ck, data.get("to"), (*path, "to"), names)
        if src is not None and src.domains is not None:
            ck.error(
                (*path, "from"), "domains and web_services name destinations: use them in 'to'"
            )
        if dst is not None and dst.domains is not None:
            if not dst.domains.patterns:
                ck.error((*path, "to"), "no destination names given")
            dst = replace(dst, domains=DomainSet(f"dom_{rname}", dst.domains.patterns))
        if src and dst and src.is_self and dst.is_self:
            ck.error((*path, "to"), "a rule cannot go from self to self")
        for side, end in (("from", src), ("to", dst)):
            _check_members(ck, data.get(side), (*path, side), end)
        services: list[Service] = []
        for spath, sname in ck.strings(data.get("service"), (*path, "service")):
            if sname == ANY:
                continue
            if sname not in names.services:
                ck.error(spath, f"unknown service '{sname}'{suggest(sname, names.services)}")
            else:
                services.append(names.services[sname])
        action = (
            parse_action(ck, data.get("action"), (*path, "action")) if "action" in data else None
        )
        log = parse_log(ck, data.get("log"), (*path, "log"), f"eg {rname} {action or ''}: ")
        limit = parse_limit(ck, data.get("limit"), (*path, "limit"))
        if log and log.rate and limit:
            ck.error(
                (*path, "log", "rate"),
                "log.rate cannot be combined with limit (the limit already bounds logging)",
            )
        schedule = _rule_schedule(ck, data.get("schedule"), (*path, "schedule"), names, rname)
        counter = ck.boolean(data.get("counter", False), (*path, "counter")) or False
        comment = ck.text(data.get("comment", ""), (*path, "comment"), max_len=96) or ""
        enabled = ck.boolean(data.get("enabled", True), (*path, "enabled"))
        if not name_ok or src is None or dst is None or action is None or enabled is False:
            continue
        rules.append(
            Rule(rname, src, dst, tuple(services), action, log, counter, limit, schedule, comment)
        )
    return rules


def _check_members(ck: Checker, value: Any, path: Path, end: Endpoint | None) -> None:
    """A client group that the compiler could not turn into a single nft line is an error,
    not a rule that silently matches nothing."""
    if end is None or end.members is None:
        return
    m = end.members
    where = (*path, "group") if isinstance(value, dict) else path
    raw = value.get("group") if isinstance(value, dict) else value
    label = ", ".join(map(str, raw)) if isinstance(raw, list) else str(raw)
    if m.empty():
        ck.error(
            where,
            f"client group '{label}' has no addresses, MACs or zones to match "
            "(a rule cannot match the clients that no group names)",
        )
    elif path[-1] == "to" and not (m.addresses.v4 or m.addresses.v6 or m.zones):
        ck.error(
            where,
            f"client group '{label}' has only MAC addresses, and a MAC only matches a sender: "
            "use the group in 'from', or give it addresses or a zone",
        )


def _rule_schedule(
    ck: Checker, value: Any, path: Path, names: Names, rname: str
) -> Schedule | None:
    if value is None:
        return None
    if isinstance(value, str):
        if value not in names.schedules:
            ck.error(
                path,
                f"unknown schedule '{value}' "
                f"(schedules: {', '.join(names.schedules) or 'none defined'})"
                f"{suggest(value, names.schedules)}",
            )
            return None
        return names.schedules[value]
    return Schedule(f"{rname}-schedule", tuple(parse_windows(ck, value, path)))


def parse_defaults(ck: Checker, value: Any, names: Names) -> list[Default]:
    out: list[Default] = []
    seen: dict[tuple[str, str], int] = {}
    for path, ddef in ck.items(value, ("defaults",), scalar=False):
        data = ck.mapping(ddef, path, "default")
        if data is None or not {"from", "to", "action"} <= data.keys():
            continue
        src, dst = data["from"], data["to"]
        for end, v in (("from", src), ("to", dst)):
            if not isinstance(v, str):
                what = type_name(v)
                ck.error((*path, end), f"expected one zone name, 'any' or 'self', got {what}")
        ok = isinstance(src, str) and _zone_ok(ck, (*path, "from"), src, names, allow=(ANY, SELF))
        ok = (
            isinstance(dst, str)
            and _zone_ok(ck, (*path, "to"), dst, names, allow=(SELF, ANY))
            and ok
        )
        action = parse_action(ck, data["action"], (*path, "action"))
        log = parse_log(ck, data.get("log"), (*path, "log"), f"eg default {src}-{dst}: ")
        counter = ck.boolean(data.get("counter", False), (*path, "counter")) or False
        if not ok or action is None:
            continue
        if src == SELF and dst == SELF:
            ck.error(path, "a default cannot go from self to self")
            continue
        if (src, dst) in seen:
            ck.error(
                path, f"a default for {src} -> {dst} is already set (defaults[{seen[(src, dst)]}])"
            )
            continue
        seen[(src, dst)] = int(path[-1])
        out.append(Default(src, dst, action, log, counter))
    return out

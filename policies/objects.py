"""Parse the object sections of a policy: site, zones, groups, block lists, services, schedules.

Each function reads one section through a Checker and returns resolved model objects; a
broken entry is reported and left out, so later sections still get checked.
"""

from __future__ import annotations

import ipaddress
import re
import zoneinfo
from collections.abc import Callable
from pathlib import Path as FsPath
from typing import Any, Literal

from policies.catalog import BUILTIN_SERVICES, ICMP_TYPES, ICMPV6_TYPES
from policies.checks import Checker, suggest, type_name
from policies.feeds import FeedData
from policies.intervals import Interval, merge, parse_address
from policies.model import (
    ANY,
    DAYS,
    SELF,
    AddressSet,
    BlockList,
    InterfaceAddress,
    PortRange,
    Schedule,
    Service,
    Site,
    TimeWindow,
    Zone,
)
from policies.schema_base import IFNAME_PATTERN, NAME_PATTERN, ZONE_PATTERN
from policies.yaml_source import Path

FeedReader = Callable[[FsPath], FeedData]
RESERVED_NAMES = (ANY, SELF)
_DAY_ALIASES = {
    "weekdays": DAYS[:5],
    "weekend": DAYS[5:],
    "daily": DAYS,
}
_TIME_RANGE = re.compile(r"^(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})$")
_PORT_RANGE = re.compile(r"^(\d{1,5})\s*-\s*(\d{1,5})$")
WEEK = 7 * 1440


def parse_site(ck: Checker, value: Any) -> Site | None:
    data = ck.mapping(value, ("site",), "site")
    if data is None:
        return None
    name = data.get("name")
    ok = ck.name(name, ("site", "name"), NAME_PATTERN, "site name")
    tz = data.get("timezone", "UTC")
    if not isinstance(tz, str):
        ck.error(("site", "timezone"), f"expected a time zone name, got {type_name(tz)}")
        tz = "UTC"
    else:
        try:
            zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            ck.error(
                ("site", "timezone"), f"unknown time zone '{tz}' (IANA name, e.g. Europe/Berlin)"
            )
            tz = "UTC"
    desc = ck.text(data.get("description", ""), ("site", "description")) or ""
    return Site(name, tz, desc) if ok and isinstance(name, str) else None


def parse_zones(ck: Checker, value: Any) -> list[Zone]:
    zones: list[Zone] = []
    owner: dict[str, str] = {}
    before = len(ck.problems)
    section = ck.named_mapping(value, ("zones",))
    if len(ck.problems) > before:  # not a mapping; already reported
        return zones
    for zname, zdef in section.items():
        path: Path = ("zones", zname)
        if not ck.name(zname, path, ZONE_PATTERN, "zone name", key=True):
            continue
        if zname in RESERVED_NAMES:
            ck.error(path, f"'{zname}' is a reserved word, not a zone name", key=True)
            continue
        data = ck.mapping(zdef, path, "zone")
        if data is None:
            continue
        ifaces: list[str] = []
        iface_problems = len(ck.problems)
        for ipath, ifname in ck.strings(data.get("interfaces"), (*path, "interfaces")):
            if not ck.name(ifname, ipath, IFNAME_PATTERN, "interface name"):
                continue
            if ifname in owner:
                ck.error(ipath, f"interface '{ifname}' already belongs to zone '{owner[ifname]}'")
                continue
            owner[ifname] = zname
            ifaces.append(ifname)
        if "interfaces" in data and not ifaces and len(ck.problems) == iface_problems:
            ck.error((*path, "interfaces"), "a zone needs at least one interface")
        addrs: list[InterfaceAddress] = []
        for apath, text in ck.strings(data.get("addresses"), (*path, "addresses")):
            try:
                iface = ipaddress.ip_interface(text.strip())
            except ValueError:
                ck.error(apath, f"'{text}' is not an address with prefix (e.g. 192.0.2.1/24)")
                continue
            fam: Literal[4, 6] = 4 if iface.version == 4 else 6
            addrs.append(InterfaceAddress(fam, str(iface.ip), iface.network.prefixlen))
        desc = ck.text(data.get("description", ""), (*path, "description")) or ""
        zones.append(Zone(zname, tuple(ifaces), tuple(addrs), desc))
    if not zones and len(ck.problems) == before:
        ck.error(("zones",), "define at least one zone")
    return zones


def _intervals(v4: list[Interval], v6: list[Interval], name: str | None) -> AddressSet:
    return AddressSet(name, tuple(merge(v4)), tuple(merge(v6)))


def parse_literal(text: str) -> tuple[int, Interval] | str:
    """An address, CIDR or range; the error message on failure."""
    try:
        return parse_address(text)
    except ValueError as exc:
        return str(exc)


def looks_like_address(text: str) -> bool:
    return bool(text) and (text[0].isdigit() or ":" in text)


def parse_groups(ck: Checker, value: Any) -> dict[str, AddressSet]:
    """Address groups; members are literals or other groups (nesting, cycles reported)."""
    section = ck.named_mapping(value, ("address_groups",))
    raw: dict[str, list[tuple[Path, Any]]] = {}
    for gname, members in section.items():
        path: Path = ("address_groups", gname)
        if ck.name(gname, path, NAME_PATTERN, "group name", key=True):
            raw[gname] = ck.items(members, path)
    resolved: dict[str, AddressSet] = {}

    def resolve(gname: str, stack: tuple[str, ...]) -> AddressSet:
        if gname in resolved:
            return resolved[gname]
        v4: list[Interval] = []
        v6: list[Interval] = []
        for mpath, member in raw[gname]:
            if not isinstance(member, str):
                ck.error(
                    mpath,
                    f"expected an address, CIDR, range or group name, got {type_name(member)}",
                )
                continue
            if member in raw:
                if member in stack or member == gname:
                    cycle = " -> ".join((*stack, gname, member))
                    ck.error(mpath, f"groups include each other in a cycle: {cycle}")
                    continue
                sub = resolve(member, (*stack, gname))
                v4.extend(sub.v4)
                v6.extend(sub.v6)
                continue
            parsed = parse_literal(member)
            if isinstance(parsed, str):
                hint = "" if looks_like_address(member) else suggest(member, raw)
                what = parsed if looks_like_address(member) else f"unknown group '{member}'"
                ck.error(mpath, f"{what}{hint}")
                continue
            fam, iv = parsed
            (v4 if fam == 4 else v6).append(iv)
        result = _intervals(v4, v6, f"g_{gname}")
        resolved[gname] = result
        return result

    for gname in raw:
        resolve(gname, ())
    return resolved


def parse_blocklists(
    ck: Checker, value: Any, base_dir: FsPath, read_feed: FeedReader, zones: list[str]
) -> dict[str, BlockList]:
    """Block lists; ``zones`` left empty here are filled with the WAN zones by the loader."""
    out: dict[str, BlockList] = {}
    for bname, bdef in ck.named_mapping(value, ("blocklists",)).items():
        path: Path = ("blocklists", bname)
        if not ck.name(bname, path, NAME_PATTERN, "block list name", key=True):
            continue
        data = ck.mapping(bdef, path, "blocklist")
        if data is None:
            continue
        v4: list[Interval] = []
        v6: list[Interval] = []
        entries = skipped = 0
        sources: list[str] = []
        for fpath, fname in ck.strings(data.get("files"), (*path, "files")):
            file = (base_dir / fname) if not FsPath(fname).is_absolute() else FsPath(fname)
            try:
                feed = read_feed(file)
            except OSError as exc:
                ck.error(fpath, f"cannot read feed file {file}: {exc.strerror or exc}")
                continue
            v4.extend(feed.v4)
            v6.extend(feed.v6)
            entries += feed.entries
            skipped += feed.skipped_count
            sources.append(fname)
            if feed.skipped_count:
                first = "; ".join(f"line {n}: {why}" for n, why in feed.skipped[:3])
                ck.warn(fpath, f"{feed.skipped_count} line(s) of {fname} skipped ({first})")
            if feed.entries == 0:
                ck.warn(fpath, f"feed {fname} has no addresses")
        for epath, text in ck.strings(data.get("entries"), (*path, "entries")):
            parsed = parse_literal(text)
            if isinstance(parsed, str):
                ck.error(epath, parsed)
                continue
            fam, iv = parsed
            (v4 if fam == 4 else v6).append(iv)
            entries += 1
        if "files" not in data and "entries" not in data:
            ck.error(path, "a block list needs 'files' or 'entries'")
        block = data.get("block", "both")
        if block not in ("both", "inbound", "outbound", "none"):
            ck.error(
                (*path, "block"),
                f"unknown direction {block!r} (allowed: both, inbound, outbound, none)",
            )
            block = "both"
        log = ck.boolean(data.get("log", False), (*path, "log")) or False
        bl_zones: list[str] = []
        for zpath, zone in ck.strings(data.get("zones"), (*path, "zones")):
            if zone in zones:
                bl_zones.append(zone)
            else:
                ck.error(
                    zpath,
                    f"unknown zone '{zone}' (zones: {', '.join(zones)}){suggest(zone, zones)}",
                )
        addresses = _intervals(v4, v6, f"bl_{bname}")
        out[bname] = BlockList(
            bname, addresses, block, tuple(bl_zones), log, tuple(sources), entries, skipped
        )
    return out


def parse_port_range(ck: Checker, value: Any, path: Path) -> PortRange | None:
    if isinstance(value, int) and not isinstance(value, bool):
        lo = hi = value
    elif isinstance(value, str) and (m := _PORT_RANGE.match(value.strip())):
        lo, hi = int(m.group(1)), int(m.group(2))
    elif isinstance(value, str) and value.strip().isdigit():
        lo = hi = int(value)
    else:
        ck.error(path, f"expected a port (1-65535) or range 'a-b', got {value!r}")
        return None
    if not (1 <= lo <= 65535 and 1 <= hi <= 65535):
        ck.error(path, f"port {value!r} is out of range (1-65535)")
        return None
    if lo > hi:
        ck.error(path, f"port range {value!r} starts after it ends")
        return None
    return (lo, hi)


def parse_services(ck: Checker, value: Any) -> dict[str, Service]:
    """User services (with ``include``) layered over the built-in catalogue."""
    section = ck.named_mapping(value, ("services",))
    raw: dict[str, dict[str, Any]] = {}
    for sname, sdef in section.items():
        path: Path = ("services", sname)
        if ck.name(sname, path, NAME_PATTERN, "service name", key=True):
            data = ck.mapping(sdef, path, "service")
            if data is not None:
                raw[sname] = data
    known = {**BUILTIN_SERVICES}
    done: dict[str, Service] = {}

    def resolve(sname: str, stack: tuple[str, ...]) -> Service:
        if sname in done:
            return done[sname]
        data, path = raw[sname], ("services", sname)
        before = len(ck.problems)
        tcp: list[PortRange] = []
        udp: list[PortRange] = []
        icmp: list[str] = []
        icmp6: list[str] = []
        for proto, bucket in (("tcp", tcp), ("udp", udp)):
            for ppath, port in ck.items(data.get(proto), (*path, proto)):
                rng = parse_port_range(ck, port, ppath)
                if rng:
                    bucket.append(rng)
        for proto, bucket6, types in (("icmp", icmp, ICMP_TYPES), ("icmpv6", icmp6, ICMPV6_TYPES)):
            for tpath, tname in ck.strings(data.get(proto), (*path, proto)):
                if tname not in types:
                    ck.error(tpath, f"unknown {proto} type '{tname}'{suggest(tname, types)}")
                else:
                    bucket6.append(tname)
        for ipath, inc in ck.strings(data.get("include"), (*path, "include")):
            if inc in stack or inc == sname:
                ck.error(
                    ipath,
                    f"services include each other in a cycle: {' -> '.join((*stack, sname, inc))}",
                )
                continue
            sub = resolve(inc, (*stack, sname)) if inc in raw else known.get(inc)
            if sub is None:
                ck.error(ipath, f"unknown service '{inc}'{suggest(inc, [*raw, *known])}")
                continue
            tcp += sub.tcp
            udp += sub.udp
            icmp += sub.icmp
            icmp6 += sub.icmpv6
        svc = Service(
            sname,
            tuple(sorted(set(tcp))),
            tuple(sorted(set(udp))),
            tuple(dict.fromkeys(icmp)),
            tuple(dict.fromkeys(icmp6)),
        )
        if not (svc.tcp or svc.udp or svc.icmp or svc.icmpv6) and len(ck.problems) == before:
            ck.error(path, "a service needs tcp, udp, icmp, icmpv6 or include")
        done[sname] = svc
        return svc

    for sname in raw:
        known[sname] = resolve(sname, ())
    return known


def parse_windows(ck: Checker, value: Any, path: Path) -> list[TimeWindow]:
    """Weekly windows in local minutes; an end before the start runs into the next day."""
    windows: list[TimeWindow] = []
    items = ck.items(value, path, scalar=False)
    if not items:
        ck.error(path, "a schedule needs at least one window ({days: ..., time: HH:MM-HH:MM})")
    for wpath, wdef in items:
        data = ck.mapping(wdef, wpath, "window")
        if data is None:
            continue
        days: list[int] = []
        for dpath, day in ck.strings(data.get("days", "daily"), (*wpath, "days")):
            key = day.lower()[:3] if day.lower()[:3] in DAYS else day.lower()
            if key in DAYS:
                days.append(DAYS.index(key))
            elif key in _DAY_ALIASES:
                days.extend(DAYS.index(d) for d in _DAY_ALIASES[key])
            else:
                choices = [*DAYS, *_DAY_ALIASES]
                ck.error(dpath, f"unknown day '{day}' (allowed: {', '.join(choices)})")
        time_text = data.get("time", "00:00-24:00")
        m = _TIME_RANGE.match(time_text.strip()) if isinstance(time_text, str) else None
        if not m:
            ck.error((*wpath, "time"), f"expected HH:MM-HH:MM, got {time_text!r}")
            continue
        h1, m1, h2, m2 = (int(g) for g in m.groups())
        if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2 != 0):
            ck.error((*wpath, "time"), f"{time_text!r} is not a valid time of day (00:00-24:00)")
            continue
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if start == end:
            ck.error((*wpath, "time"), f"{time_text!r} is an empty window")
            continue
        if end < start:
            end += 1440
        for d in sorted(set(days)):
            windows.append(TimeWindow(d * 1440 + start, d * 1440 + end))
    return windows


def parse_schedules(ck: Checker, value: Any) -> dict[str, Schedule]:
    out: dict[str, Schedule] = {}
    for sname, sdef in ck.named_mapping(value, ("schedules",)).items():
        path: Path = ("schedules", sname)
        if ck.name(sname, path, NAME_PATTERN, "schedule name", key=True):
            out[sname] = Schedule(sname, tuple(parse_windows(ck, sdef, path)))
    return out

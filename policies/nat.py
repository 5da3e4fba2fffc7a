"""Parse NAT (masquerade, port forwards with hairpin) and management (anti-lockout)."""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from policies.checks import Checker, suggest
from policies.model import Management, Nat, PortForward, PortRange
from policies.objects import parse_port_range
from policies.schema_base import NAME_PATTERN
from policies.sections import Names, _zone_ok, parse_addresses
from policies.yaml_source import Path

DEFAULT_MANAGEMENT_SERVICES = ("ssh", "https")


def parse_nat(ck: Checker, value: Any, names: Names) -> Nat:
    if value is None:
        return Nat()
    data = ck.mapping(value, ("nat",), "nat")
    if data is None:
        return Nat()
    masq = tuple(
        z
        for p, z in ck.strings(data.get("masquerade"), ("nat", "masquerade"))
        if _zone_ok(ck, p, z, names)
    )
    forwards: list[PortForward] = []
    seen: set[str] = set()
    for path, fdef in ck.items(data.get("port_forwards"), ("nat", "port_forwards"), scalar=False):
        pf = _port_forward(ck, fdef, path, names, masq)
        if pf is None:
            continue
        if pf.name in seen:
            ck.error((*path, "name"), f"port forward name '{pf.name}' is used twice")
        seen.add(pf.name)
        forwards.append(pf)
    return Nat(masq, tuple(forwards))


def _port_forward(
    ck: Checker, value: Any, path: Path, names: Names, masq: tuple[str, ...]
) -> PortForward | None:
    data = ck.mapping(value, path, "port_forward")
    if data is None or "port" not in data or "to" not in data:
        return None
    name = data.get("name", f"forward-{int(path[-1]) + 1}")
    ok = ck.name(name, (*path, "name"), NAME_PATTERN, "port forward name")
    if "zone" in data:
        zones = tuple(
            z for p, z in ck.strings(data["zone"], (*path, "zone")) if _zone_ok(ck, p, z, names)
        )
    else:
        zones = masq
        if not zones:
            ck.error(path, "no zone given and no masquerade zone to default to: set 'zone'")
            ok = False
    proto = data.get("protocol", "tcp")
    protocols: tuple[Literal["tcp", "udp"], ...]
    if proto == "tcp":
        protocols = ("tcp",)
    elif proto == "udp":
        protocols = ("udp",)
    elif proto == "both":
        protocols = ("tcp", "udp")
    else:
        ck.error((*path, "protocol"), f"unknown protocol {proto!r} (allowed: tcp, udp, both)")
        return None
    ports: PortRange | None = parse_port_range(ck, data["port"], (*path, "port"))
    target = data["to"]
    try:
        addr = ipaddress.ip_address(target.strip() if isinstance(target, str) else "")
    except ValueError:
        ck.error((*path, "to"), f"expected one inside address, got {target!r}")
        return None
    to_port = data.get("to_port")
    if to_port is not None:
        rng = parse_port_range(ck, to_port, (*path, "to_port"))
        if rng is None:
            ok = False
        elif rng[0] != rng[1]:
            ck.error((*path, "to_port"), f"to_port is one port, got the range {to_port!r}")
            ok = False
        elif ports and ports[0] != ports[1]:
            ck.error(
                (*path, "to_port"), "to_port cannot be combined with a port range (ports are kept)"
            )
            ok = False
        to_port = rng[0] if rng else None
    sources = parse_addresses(ck, data["from"], (*path, "from"), names) if "from" in data else None
    hairpin_value = data.get("hairpin", False)
    hairpin: tuple[str, ...] = ()
    if hairpin_value is True:
        hairpin = tuple(z for z in names.zones if z not in zones)
    elif isinstance(hairpin_value, list):
        hairpin = tuple(
            z for p, z in ck.strings(hairpin_value, (*path, "hairpin")) if _zone_ok(ck, p, z, names)
        )
    elif hairpin_value is not False:
        ck.error((*path, "hairpin"), "expected true, false or a list of zones")
    comment = ck.text(data.get("comment", ""), (*path, "comment"), max_len=96) or ""
    if not ok or ports is None:
        return None
    if hairpin and sources is not None:
        ck.warn(
            (*path, "hairpin"),
            "hairpin applies the 'from' restriction too: inside hosts reach the forward only "
            "if 'from' lists them",
        )
    family: Literal[4, 6] = 4 if addr.version == 4 else 6
    if sources is not None and not sources.of(family):
        ck.error((*path, "from"), f"no IPv{family} source addresses for an IPv{family} target")
    return PortForward(
        name, zones, protocols, ports, family, str(addr), to_port, sources, hairpin, comment
    )


def parse_management(ck: Checker, value: Any, names: Names) -> Management:
    data = ck.mapping(value if value is not None else {}, ("management",), "management") or {}
    anti = ck.boolean(data.get("anti_lockout", True), ("management", "anti_lockout"))
    if "zones" in data:
        zones = tuple(
            z
            for p, z in ck.strings(data["zones"], ("management", "zones"))
            if _zone_ok(ck, p, z, names)
        )
    else:
        zones = next(((z,) for z in ("mgmt", "lan") if z in names.zones), ())
        if anti is not False and not zones and names.zones:
            ck.error(
                ("management",),
                "anti-lockout needs management zones: no zone is named mgmt or lan, so set "
                "management.zones (or anti_lockout: false to go without)",
            )
    ports: list[PortRange] = []
    svc_value = data.get("services", list(DEFAULT_MANAGEMENT_SERVICES))
    for spath, sname in ck.strings(svc_value, ("management", "services")):
        svc = names.services.get(sname)
        if svc is None:
            ck.error(spath, f"unknown service '{sname}'{suggest(sname, names.services)}")
        elif not svc.tcp:
            ck.error(spath, f"service '{sname}' has no TCP ports (management access is TCP)")
        else:
            ports.extend(svc.tcp)
    return Management(anti is not False, zones, tuple(sorted(set(ports))))

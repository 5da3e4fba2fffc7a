"""A plain-language account of what a policy does, for ``edgeguard run/check`` and the UI."""

from __future__ import annotations

from policies.anomaly_section import describe_anomaly
from policies.intervals import format_elements
from policies.model import AddressSet, Endpoint, Policy, PortRange, Rule


def _addresses(a: AddressSet) -> str:
    if a.name:
        return a.name.split("_", 1)[1]
    items = format_elements(4, a.v4) + format_elements(6, a.v6)
    return ", ".join(items[:3]) + (f" (+{len(items) - 3})" if len(items) > 3 else "")


def _endpoint(e: Endpoint) -> str:
    if e.is_self:
        return "the box"
    named = e.addresses or e.members
    zones = "/".join(e.zones) if e.zones else ("any zone" if named is None else "")
    addrs = _addresses(e.addresses) if e.addresses else ""
    if e.members is not None and e.members.addresses.name:
        addrs = f"client group {e.members.addresses.name[3:]}"
    if e.domains is not None:
        shown = ", ".join(e.domains.patterns[:2])
        more = len(e.domains.patterns) - 2
        addrs = f"names {shown}" + (f" (+{more})" if more > 0 else "")
    return " ".join(x for x in (zones, addrs) if x)


def _web_filter(policy: Policy) -> list[str]:
    wf = policy.web_filter
    if wf is None:
        return []
    lines = [
        f"web filter: DNS of {', '.join(wf.zones) or 'no zone'} goes through the box"
        + ("; DoT/DoQ and known DoH servers blocked" if wf.block_doh else "")
    ]
    for g in wf.groups:
        m = g.members
        addrs = format_elements(4, m.addresses.v4) + format_elements(6, m.addresses.v6)
        who = [*m.zones, *addrs, *m.macs]
        if not who:
            who = ["everyone else"] if g.name == wf.default_group else ["nobody"]
        elif g.name == wf.default_group:
            who.append("everyone else")
        if not g.filtered:
            lines.append(f"group {g.name} ({', '.join(who)}): unfiltered")
            continue
        blocks = [
            *(f"category {c}" for c in g.blocks.categories),
            *([f"{len(g.blocks.services)} services"] if g.blocks.services else []),
            *(f"list {b}" for b in g.blocks.blocklists),
            *([f"{len(g.blocks.domains)} domains"] if g.blocks.domains else []),
        ]
        extras = [
            f"safe search {', '.join(p for p, _ in g.safe_search)}" if g.safe_search else "",
            f"block mode {g.block_mode}" if g.block_mode else "",
            *(f"schedule {s.schedule.name} changes it" for s in g.schedules),
        ]
        extra = "; ".join(x for x in extras if x)
        lines.append(
            f"group {g.name} ({', '.join(who)}): blocks {', '.join(blocks) or 'nothing'}"
            + (f"; {extra}" if extra else "")
        )
    return lines


def _ports(ranges: tuple[PortRange, ...]) -> str:
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def _rule(r: Rule) -> str:
    services = ", ".join(s.name for s in r.services) or "any service"
    extras = [
        f"schedule {r.schedule.name}" if r.schedule else "",
        f"limit {r.limit.rate}{' per source' if r.limit.per_source else ''}" if r.limit else "",
        "logged" if r.log else "",
        "counted" if r.counter else "",
    ]
    extra = "; ".join(x for x in extras if x)
    return f"{r.name}: {_endpoint(r.src)} -> {_endpoint(r.dst)}, {services}: {r.action.upper()}" + (
        f" ({extra})" if extra else ""
    )


def describe(policy: Policy) -> list[str]:
    lines = [f"site {policy.site.name} (time zone {policy.site.timezone})"]
    for z in policy.zones:
        addrs = ", ".join(f"{a.address}/{a.prefix}" for a in z.addresses)
        lines.append(f"zone {z.name}: {', '.join(z.interfaces)}" + (f" [{addrs}]" if addrs else ""))
    m = policy.management
    if m.anti_lockout:
        lines.append(
            f"anti-lockout: tcp {_ports(m.tcp_ports)} to the box always open "
            f"from {', '.join(m.zones)}"
        )
    else:
        lines.append("anti-lockout: DISABLED (rules alone decide management access)")
    for bl in policy.blocklists:
        n4, n6 = len(bl.addresses.v4), len(bl.addresses.v6)
        lines.append(
            f"block list {bl.name}: {bl.entries} entries -> {n4} IPv4 + {n6} IPv6 ranges, "
            f"dropped {bl.block} on {', '.join(bl.zones) or '-'}"
        )
    lines += _web_filter(policy)
    lines += describe_anomaly(policy.anomaly) if policy.anomaly is not None else []
    lines += [f"rule {_rule(r)}" for r in policy.rules]
    lines += [f"default {d.src} -> {d.dst}: {d.action.upper()}" for d in policy.defaults]
    if policy.nat.masquerade:
        lines.append(f"masquerade IPv4 leaving {', '.join(policy.nat.masquerade)}")
    for pf in policy.nat.port_forwards:
        lo, hi = pf.ports
        port = str(lo) if lo == hi else f"{lo}-{hi}"
        to = f"{pf.to_address}:{pf.to_port}" if pf.to_port else pf.to_address
        src = f" from {_addresses(pf.sources)}" if pf.sources else ""
        hp = f", hairpin from {', '.join(pf.hairpin_zones)}" if pf.hairpin_zones else ""
        lines.append(
            f"port forward {pf.name}: {'/'.join(pf.protocols)} {port} on "
            f"{', '.join(pf.zones)}{src} -> {to}{hp}"
        )
    return lines

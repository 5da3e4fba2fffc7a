"""The policy's web filter, as the resolver needs it: list sources, client groups, sets.

``policies`` says *what* (groups, categories, services, schedules); ``dns_filter`` knows
*how* to answer per client. This module translates one into the other:

* every category, service and group domain list becomes a named list source (``category:
  adult``, ``service:tiktok``, ``group:kids:block``...), loaded once into the one matcher;
* every group becomes a ``GroupSpec``: the names of the lists that apply to it, its safe
  search hosts, block mode, and its schedules as changes to that set of lists;
* the rules' destination names become ``DomainSets`` feeding the nft sets.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from dns_filter.domainsets import DomainSets
from dns_filter.groups import Change, ClientPolicy, GroupSpec, Membership
from dns_filter.updater import ListSource
from policies.model import Policy, Schedule
from policies.web_model import ClientGroup, FilterItems, WebFilter
from policies.webcatalog import default_catalogue

DOH_LIST = "builtin:doh"


def _category(name: str) -> str:
    return f"category:{name}"


def _service(name: str) -> str:
    return f"service:{name}"


def global_lists(policy: Policy) -> tuple[list[str], list[str]]:
    """(block lists every group may select, lists that apply to every group)."""
    dns = policy.dns
    if dns is None:
        return [], []
    always = [lst.name for lst in dns.allowlists]
    always += ["policy-block"] if dns.block else []
    always += ["policy-allow"] if dns.allow else []
    return [lst.name for lst in dns.blocklists], always


def filter_sources(wf: WebFilter) -> list[ListSource]:
    """The web filter's own lists (the dns section's lists are added by dns_service)."""
    sources: list[ListSource] = []
    for cat in wf.categories:
        sources.append(
            ListSource(_category(cat.name), "block", cat.files, cat.urls, lines=cat.domains)
        )
    for name, domains in wf.services:
        sources.append(ListSource(_service(name), "block", lines=domains))
    for g in wf.groups:
        if g.blocks.domains:
            sources.append(ListSource(f"group:{g.name}:block", "block", lines=g.blocks.domains))
        if g.allow:
            sources.append(ListSource(f"group:{g.name}:allow", "allow", lines=g.allow))
        for i, sched in enumerate(g.schedules):
            if sched.block.domains:
                sources.append(
                    ListSource(f"group:{g.name}:{i}:block", "block", lines=sched.block.domains)
                )
            if sched.unblock.domains:
                sources.append(
                    ListSource(f"group:{g.name}:{i}:allow", "allow", lines=sched.unblock.domains)
                )
    if wf.block_doh and wf.doh_names:
        sources.append(ListSource(DOH_LIST, "block", lines=wf.doh_names))
    return sources


def _names(items: FilterItems) -> set[str]:
    return {
        *(_category(c) for c in items.categories),
        *(_service(s) for s in items.services),
        *items.blocklists,
    }


def _windows(schedule: Schedule) -> tuple[tuple[int, int], ...]:
    return tuple((w.start, w.end) for w in schedule.windows)


def group_spec(g: ClientGroup, always: list[str], doh: bool) -> GroupSpec:
    catalogue = default_catalogue()
    lists = _names(g.blocks) | set(always)
    if g.blocks.domains:
        lists.add(f"group:{g.name}:block")
    if g.allow:
        lists.add(f"group:{g.name}:allow")
    if doh and g.filtered:
        lists.add(DOH_LIST)
    changes = []
    for i, sched in enumerate(g.schedules):
        add = _names(sched.block) | (
            {f"group:{g.name}:{i}:block"} if sched.block.domains else set()
        )
        if sched.unblock.domains:
            add.add(f"group:{g.name}:{i}:allow")
        safe = (
            catalogue.safe_hosts(dict(sched.safe_search)) if sched.safe_search is not None else None
        )
        changes.append(
            Change(_windows(sched.schedule), frozenset(add), frozenset(_names(sched.unblock)), safe)
        )
    return GroupSpec(
        g.name,
        frozenset(lists),
        catalogue.safe_hosts(dict(g.safe_search)),
        g.block_mode,
        g.filtered,
        tuple(changes),
    )


def membership(policy: Policy, wf: WebFilter) -> Membership:
    macs: dict[str, str] = {}
    addresses: list[tuple[str, str]] = []
    zones: list[tuple[str, str]] = []
    for g in wf.groups:
        for mac in g.members.macs:
            macs[mac] = g.name
        for fam in (4, 6):
            for start, end in g.members.addresses.of(fam):
                first = ipaddress.ip_address(start) if fam == 4 else ipaddress.IPv6Address(start)
                last = ipaddress.ip_address(end) if fam == 4 else ipaddress.IPv6Address(end)
                for net in ipaddress.summarize_address_range(first, last):
                    addresses.append((str(net), g.name))
        for z in g.members.zones:
            for a in policy.zone(z).addresses:
                net = ipaddress.ip_interface(f"{a.address}/{a.prefix}").network
                zones.append((str(net), g.name))
    return Membership(wf.default_group, macs, addresses, zones)


def client_policy(
    policy: Policy,
    *,
    mac_for: Callable[[str], str | None] | None = None,
    mac_version: Callable[[], int] | None = None,
) -> ClientPolicy | None:
    wf = policy.web_filter
    if wf is None:
        return None
    _, always = global_lists(policy)
    specs = [group_spec(g, always, wf.block_doh) for g in wf.groups]
    return ClientPolicy(
        specs,
        membership(policy, wf),
        policy.site.timezone,
        mac_for=mac_for,
        mac_version=mac_version,
    )


def domain_sets(policy: Policy) -> DomainSets | None:
    sets = [
        (r.dst.domains.name, r.dst.domains.patterns)
        for r in policy.rules
        if r.dst.domains is not None
    ]
    return DomainSets(sets) if sets else None


def uses_macs(policy: Policy) -> bool:
    wf = policy.web_filter
    return wf is not None and any(g.members.macs for g in wf.groups)

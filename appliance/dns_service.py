"""The policy's resolver: DnsSettings (from the policy) -> a configured Resolver.

Used by ``edgeguard run``: the controller enforces the ruleset first, then starts the
resolver with the policy's ``dns:`` section. Client networks default to the box's inside
zones (never the masquerade/WAN zones) plus loopback, so it is never an open resolver.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from pathlib import Path

from appliance.hashseed import hash_seed_pinned, seed_file
from appliance.neighbors import NeighborTable
from appliance.webfilter import client_policy, domain_sets, filter_sources
from dns_filter.feeds import RecentBlocks, SetFeed
from dns_filter.listcache import ListCache
from dns_filter.matcher import Matcher
from dns_filter.querylog import QueryLog
from dns_filter.resolver import Resolver, ResolverConfig
from dns_filter.server import ListenAddress
from dns_filter.updater import ListSource, ListUpdater
from policies.model import Policy


def _inside_zones(policy: Policy) -> list[str]:
    return [z.name for z in policy.zones if z.name not in policy.nat.masquerade]


def listen_addresses(policy: Policy) -> list[ListenAddress]:
    dns = policy.dns
    assert dns is not None
    if dns.listen:
        return [ListenAddress.parse(a) for a in dns.listen]
    return [
        ListenAddress(a.address, 53)
        for z in policy.zones
        if z.name in _inside_zones(policy)
        for a in z.addresses
    ]


def client_networks(policy: Policy) -> tuple[str, ...]:
    nets = ["127.0.0.0/8", "::1/128"]
    for z in policy.zones:
        if z.name in _inside_zones(policy):
            for a in z.addresses:
                nets.append(str(ipaddress.ip_interface(f"{a.address}/{a.prefix}").network))
    return tuple(nets)


def list_sources(policy: Policy) -> list[ListSource]:
    dns = policy.dns
    assert dns is not None
    sources = [
        ListSource(lst.name, kind, lst.files, lst.urls)
        for kind, lists in (("block", dns.blocklists), ("allow", dns.allowlists))
        for lst in lists
    ]
    if dns.block:
        sources.append(ListSource("policy-block", "block", lines=dns.block))
    if dns.allow:
        sources.append(ListSource("policy-allow", "allow", lines=dns.allow))
    if policy.web_filter is not None:
        sources += filter_sources(policy.web_filter)
    return sources


def index_cache() -> ListCache | None:
    """The compiled-list cache beside the box's hash seed, when this process hashes with that
    seed (``appliance.hashseed``); None otherwise: lists are then parsed at every build."""
    seed = seed_file()
    if seed is None or not hash_seed_pinned():
        return None
    return _list_cache(seed.parent / "index")


@functools.cache
def _list_cache(directory: Path) -> ListCache | None:
    """One cache object per directory and process (its counters cover every build)."""
    try:
        return ListCache(directory)
    except OSError:
        return None


def updater_for(policy: Policy, state_dir: Path, on_swap: Callable[[Matcher], None]) -> ListUpdater:
    lists = list_sources(policy)
    return ListUpdater(lists, state_dir / "lists", on_swap, index_cache=index_cache())


def build_matcher(policy: Policy, state_dir: Path) -> tuple[Matcher, list[str]]:
    """Every list of the dns section (URL lists from their last download), one line per list
    saying what it held, and one on the compiled-list cache."""
    updater = updater_for(policy, state_dir, lambda _: None)
    cache = updater.index_cache
    before = (cache.hits, cache.misses) if cache is not None else (0, 0)
    matcher = updater.build()
    lines = [f"list {name}: {summary}" for name, summary in matcher.lists.items()]
    return matcher, [*lines, cache_line(cache, before)]


def cache_line(cache: ListCache | None, before: tuple[int, int] = (0, 0)) -> str:
    """What the compiled-list cache did since ``before`` (hits, misses), and its problems."""
    if cache is None:
        return "list files parsed in full (no pinned hash seed, so no compiled-list cache)"
    hits, misses = cache.hits - before[0], cache.misses - before[1]
    line = f"list files: {hits} loaded compiled, {misses} parsed (cache {cache.directory})"
    problems, cache.problems[:] = list(cache.problems), []
    return line + "".join(f"; {problem}" for problem in problems)


def resolver_for(
    policy: Policy,
    state_dir: Path,
    *,
    neighbors: NeighborTable | None = None,
    set_feed: SetFeed | None = None,
    recent_blocks: RecentBlocks | None = None,
) -> tuple[Resolver, list[ListenAddress], list[str], ListUpdater]:
    """The resolver, where it listens, a line per list, and the updater keeping lists fresh.

    With a web filter: per-client groups (MACs from ``neighbors``), addresses of the rules'
    destination names into ``set_feed``, blocks noted in ``recent_blocks`` for the block
    page."""
    dns = policy.dns
    if dns is None or not dns.upstreams:
        raise ValueError("the policy's dns section needs at least one upstream")
    matcher, lines = build_matcher(policy, state_dir)
    config = ResolverConfig(
        upstreams=dns.upstreams,
        block_mode=dns.block_mode,
        block_ttl=dns.block_ttl,
        block_ipv4=dns.block_ipv4,
        block_ipv6=dns.block_ipv6,
        client_networks=client_networks(policy),
        rate_limit=dns.rate_limit,
        rate_burst=dns.rate_burst,
        rate_limit_action=dns.rate_limit_action,
        rebinding_protection=dns.rebinding_protection,
        rebind_allow=dns.rebind_allow,
        local_records=dns.local_records,
        forward_zones=dns.forward_zones,
        cache_size=dns.cache_size,
        domain_set_timeout=(
            policy.web_filter.domain_set_timeout if policy.web_filter is not None else 600
        ),
    )
    log = (
        QueryLog(state_dir / "querylog.db", retention_days=dns.log_retention_days)
        if dns.query_log
        else None
    )
    clients = client_policy(
        policy,
        mac_for=neighbors.mac_for if neighbors is not None else None,
        mac_version=(lambda: neighbors.version) if neighbors is not None else None,
    )
    resolver = Resolver(
        config,
        matcher,
        log=log,
        clients=clients,
        domain_sets=domain_sets(policy),
        set_feed=set_feed,
        recent_blocks=recent_blocks,
    )

    def swap(new: Matcher) -> None:
        resolver.matcher = new  # one reference assignment: queries see old or new, never half

    return resolver, listen_addresses(policy), lines, updater_for(policy, state_dir, swap)

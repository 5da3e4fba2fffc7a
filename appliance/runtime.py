"""What ``edgeguard run`` keeps running next to the ruleset: resolver, set feeder, block page.

``DnsRuntime`` owns them for one live policy and follows the live version: when an apply
(from the CLI, the web UI or a sync) or a rollback makes another version live, the new
policy's lists, groups and rule names are swapped into the running resolver if its ``dns``
settings are unchanged (the cache survives), else the resolver is restarted. Either way
the new table's name sets start empty, so they are refilled at once: the feeder re-adds
what it remembers, and every cached answer for a followed name is fed again.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from appliance.blockpage import BlockPageServer
from appliance.dns_service import resolver_for, updater_for
from appliance.neighbors import NeighborTable
from appliance.nftset import NftSetFeeder
from appliance.webfilter import client_policy, domain_sets, uses_macs
from dns_filter.feeds import RecentBlocks
from dns_filter.matcher import Matcher
from dns_filter.resolver import Resolver
from dns_filter.server import DnsServer
from dns_filter.updater import ListUpdater
from policies.model import Policy

BLOCK_PAGE_PORT = 80
_WEB_LISTS = ("list service:", "list category:", "list group:", "list builtin:")


def _block_page_addresses(policy: Policy) -> list[tuple[str, int]]:
    dns, wf = policy.dns, policy.web_filter
    if dns is None:
        return []
    uses_ip = dns.block_mode == "ip" or (
        wf is not None and any(g.block_mode == "ip" for g in wf.groups)
    )
    if not uses_ip:
        return []
    return [(a, BLOCK_PAGE_PORT) for a in (dns.block_ipv4, dns.block_ipv6) if a]


@dataclass
class DnsRuntime:
    state_dir: Path
    block_page_port: int = BLOCK_PAGE_PORT
    policy: Policy | None = None
    resolver: Resolver | None = None
    server: DnsServer | None = None
    updater: ListUpdater | None = None
    feeder: NftSetFeeder | None = None
    neighbors: NeighborTable | None = None
    block_page: BlockPageServer | None = None
    recent_blocks: RecentBlocks = field(default_factory=RecentBlocks)
    _prime: asyncio.Task[int] | None = None

    async def start(self, policy: Policy) -> list[str]:
        """Start serving ``policy``; the lines say what runs (raises on a bad dns section)."""
        self.policy = policy
        lines: list[str] = []
        if policy.web_filter is not None:
            if self.feeder is None:
                self.feeder = NftSetFeeder()
                self.feeder.start()
            if uses_macs(policy) and self.neighbors is None:
                self.neighbors = NeighborTable()
                self.neighbors.start(interval=2.0)
        resolver, listen, list_lines, updater = resolver_for(
            policy,
            self.state_dir,
            neighbors=self.neighbors,
            set_feed=self.feeder,
            recent_blocks=self.recent_blocks,
        )
        self.resolver, self.updater = resolver, updater
        web = [ln for ln in list_lines if ln.startswith(_WEB_LISTS)]
        lines += [ln for ln in list_lines if not ln.startswith(_WEB_LISTS)]
        if policy.web_filter is not None:
            groups = ", ".join(g.name for g in policy.web_filter.groups)
            lines.append(f"web filter: groups {groups}; {len(web)} category/service lists")
        self.server = DnsServer(resolver, listen)
        await self.server.start()
        lines.append(f"resolver answering on {', '.join(f'{h}:{p}' for h, p in self.server.bound)}")
        updater.start()
        lines += self._start_block_page(policy)
        self._refill()
        return lines

    def _start_block_page(self, policy: Policy) -> list[str]:
        listen = [(h, self.block_page_port) for h, _ in _block_page_addresses(policy)]
        if not listen:
            return []
        wf = policy.web_filter
        page = BlockPageServer(
            listen,
            self.recent_blocks.lookup,
            site_name=policy.site.name,
            unblock_requests=wf is not None and wf.unblock_requests,
            requests_db=self.state_dir / "unblock-requests.db",
        )
        try:
            page.start()
        except OSError as exc:
            return [f"block page not started: {exc}"]
        self.block_page = page
        return [f"block page on {', '.join(f'{h}:{p}' for h, p in page.bound)}"]

    def _refill(self) -> None:
        """The live table's name sets are new and empty: fill them from memory and cache."""
        resolver = self.resolver
        if self.feeder is not None:
            self.feeder.forget_sets(_set_names(self.policy))
            self.feeder.resync()
        if resolver is not None and resolver.domain_sets is not None:
            resolver.seed_domain_sets()
            if self._prime is None or self._prime.done():
                self._prime = asyncio.get_running_loop().create_task(resolver.prime_domain_sets())

    async def follow(self, policy: Policy) -> list[str]:
        """A new version went live: take its policy (in place when ``dns`` is unchanged)."""
        old = self.policy
        if old is None or self.resolver is None or old.dns != policy.dns:
            await self.stop(keep_feeder=True)
            return ["DNS settings changed: resolver restarted", *await self.start(policy)]
        self.policy = policy
        resolver = self.resolver
        if self.updater is not None:
            self.updater.stop()

        def swap(new: Matcher) -> None:
            resolver.matcher = new

        updater = updater_for(policy, self.state_dir, swap)
        resolver.matcher = updater.build()
        neighbors = self.neighbors
        resolver.clients = client_policy(
            policy,
            mac_for=neighbors.mac_for if neighbors is not None else None,
            mac_version=(lambda: neighbors.version) if neighbors is not None else None,
        )
        if resolver.clients is not None:
            resolver.clients.use_lists(resolver.matcher.lists)
        resolver.domain_sets = domain_sets(policy)
        self.updater = updater
        updater.start()
        self._refill()
        return ["web filter updated in place (cache kept)"]

    def table_replaced(self) -> None:
        """The same policy was re-applied (or rolled back to): its sets are empty again."""
        self._refill()

    async def stop(self, *, keep_feeder: bool = False) -> None:
        if self._prime is not None:
            self._prime.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._prime
        if self.updater is not None:
            self.updater.stop()
        if self.server is not None:
            await self.server.stop()
        if self.resolver is not None:
            await self.resolver.close()
            if self.resolver.log is not None:
                self.resolver.log.close()
        if self.block_page is not None:
            self.block_page.stop()
        self.server = self.resolver = self.updater = self.block_page = None
        if not keep_feeder:
            if self.feeder is not None:
                self.feeder.stop()
            if self.neighbors is not None:
                self.neighbors.stop()
            self.feeder = self.neighbors = None


def _set_names(policy: Policy | None) -> list[str]:
    if policy is None:
        return []
    return [
        f"{r.dst.domains.name}_v{fam}"
        for r in policy.rules
        if r.dst.domains is not None
        for fam in (4, 6)
    ]

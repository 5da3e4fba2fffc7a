"""The resolver's decisions: what to answer, from where. No sockets here.

``handle`` is the synchronous hot path the server calls for every packet: parse the
question from the wire bytes, check the client, answer blocked, local and cached names from
prebuilt bytes. Only a cache miss becomes a ``Pending`` that the server resolves with
``resolve`` (upstream, CNAME and rebinding checks, caching) on its event loop.
"""

from __future__ import annotations

import copy
import ipaddress
import socket
import struct
import time
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Literal, Protocol

from dnslib import EDNS0, QTYPE, DNSRecord

from dns_filter import wire
from dns_filter.cache import DnsCache
from dns_filter.domainsets import DomainSets
from dns_filter.errors import UpstreamError, WireError
from dns_filter.feeds import BlockNote, RecentBlocks, SetFeed
from dns_filter.groups import ClientPolicy, Profile
from dns_filter.metrics import Metrics
from dns_filter.querylog import QueryLog
from dns_filter.ratelimit import ClientRateLimiter
from dns_filter.safesearch import safe_search_answer
from dns_filter.upstream import UpstreamPool, UpstreamSpec

BlockMode = Literal["nxdomain", "null", "ip", "refused"]
DEFAULT_CLIENT_NETWORKS = (
    "127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
    "100.64.0.0/10", "169.254.0.0/16", "fc00::/7", "fe80::/10",
)  # fmt: skip
# Answers that point into a private network: a public name resolving here is a DNS
# rebinding attack (a web page turning the browser against the office's own devices).
PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.168.0.0/16", "100.64.0.0/10", "::/128", "::1/128", "fc00::/7", "fe80::/10",
    )
)  # fmt: skip
TYPE_A, TYPE_AAAA, TYPE_CNAME, TYPE_PTR, TYPE_ANY = 1, 28, 5, 12, 255
LOCAL_TTL = 60
VERDICT_MEMO = 200_000  # names per verdict memo before it starts over
# Longer names are decided afresh each time: a tunnelling or DGA client sends endless unique
# long names, and 200,000 of them at full length would cost ~120 MB of memo. Real names are
# ~25 bytes; 64 covers nearly all, and caps the memo near 50 MB even under such a flood.
MEMO_KEY_BYTES = 64
NOT_SERVED, SERVED, SERVED_LIMITED = 0, 1, 2  # what the hot path does for a client address
DOH_CANARY = "use-application-dns.net"


class Match(Protocol):
    verdict: str
    list_name: str
    rule: str


class DomainMatcher(Protocol):
    def match(self, qname: str, enabled: AbstractSet[str] | None = None) -> Match | None: ...

    @property
    def lists(self) -> Mapping[str, object]: ...


@dataclass(frozen=True)
class ResolverConfig:
    upstreams: tuple[str, ...]
    block_mode: BlockMode = "nxdomain"
    block_ttl: int = 10
    block_ipv4: str | None = None
    block_ipv6: str | None = None
    client_networks: tuple[str, ...] = DEFAULT_CLIENT_NETWORKS
    rate_limit: float | None = 200.0
    rate_burst: float = 1000.0
    rate_limit_action: Literal["refuse", "drop"] = "refuse"
    rate_limit_loopback: bool = False  # the box itself (and benchmarks) are not limited
    rebinding_protection: bool = True
    rebind_allow: tuple[str, ...] = ()
    local_records: tuple[tuple[str, str, str], ...] = ()  # (name, "A"|"AAAA"|"CNAME", value)
    forward_zones: tuple[tuple[str, tuple[str, ...]], ...] = ()
    cache_size: int = 10_000
    min_ttl: int = 0
    max_ttl: int = 86_400
    negative_ttl: int = 300
    stale_window: int = 86_400
    timeout: float = 2.0
    attempt_timeout: float = 0.8
    domain_set_timeout: int = 600  # least seconds an answered address stays in a rule's set


@dataclass(slots=True)
class Pending:
    """A query that needs an upstream; the server awaits ``Resolver.resolve`` for it."""

    query: wire.Query
    client: str
    tcp: bool
    started: float
    profile: Profile | None = None
    rewrite: str | None = None  # safe search: answer with this host's addresses


def _suffixes(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[i:]) for i in range(len(parts))]


def _in_domains(name: str, domains: frozenset[str]) -> bool:
    return any(s in domains for s in _suffixes(name)) if domains else False


def _truncated(q: wire.Query, response: bytes) -> bytes:
    """Header + question with TC set: the client retries over TCP (RFC 1035 4.2.1)."""
    flags = struct.unpack_from("!H", response, 2)[0] | 0x0200
    return struct.pack("!HHHHHH", q.id, flags, 1, 0, 0, 0) + q.raw[12 : q.question_end]


@dataclass
class Resolver:
    config: ResolverConfig
    matcher: DomainMatcher  # replaced whole when lists reload (one reference swap)
    log: QueryLog | None = None
    metrics: Metrics = field(default_factory=Metrics)
    clock: Callable[[], float] = time.monotonic
    wallclock: Callable[[], float] = time.time
    clients: ClientPolicy | None = None  # per-client groups (web filtering); None: one policy
    domain_sets: DomainSets | None = None  # names firewall rules follow
    set_feed: SetFeed | None = None  # where their answered addresses go (nft sets)
    recent_blocks: RecentBlocks | None = None  # for the block page

    def __post_init__(self) -> None:
        c = self.config
        self.cache = DnsCache(
            max_entries=c.cache_size,
            min_ttl=c.min_ttl,
            max_ttl=c.max_ttl,
            negative_ttl=c.negative_ttl,
            stale_window=c.stale_window,
            clock=self.clock,
        )
        self.networks = [ipaddress.ip_network(n) for n in c.client_networks]
        self._clients: dict[str, int] = {}  # address -> NOT_SERVED, SERVED or SERVED_LIMITED
        # The hot path's verdict memo, by the name's wire bytes as sent (``wire.Query.key``): a
        # Match when a list matched, else the decoded name (the cache's key needs it). A name
        # in it skips parse_query's validation and decoding, the biggest part of an answer.
        # The CNAME paths, which have names not wire bytes, use ``_verdicts`` by name.
        self._by_key: dict[bytes, Match | str] = {}
        self._verdicts: dict[str, Match | None] = {}
        self._shared_matches: dict[tuple[str, str, str], Match] = {}
        self._cname_targets: dict[str, tuple[str, ...]] = {}
        self._matcher_seen: DomainMatcher = self.matcher
        if self.clients is not None:
            self.clients.use_lists(self.matcher.lists)
        self.limiter = ClientRateLimiter(c.rate_limit, c.rate_burst) if c.rate_limit else None
        self.rebind_allow = frozenset(c.rebind_allow)
        self.local = self._local_records()
        self.local_names = frozenset(n for n, _ in self.local)
        self.pool = UpstreamPool(
            [UpstreamSpec.parse(u) for u in c.upstreams],
            timeout=c.timeout,
            attempt_timeout=c.attempt_timeout,
        )
        self.zone_pools = {
            zone: UpstreamPool([UpstreamSpec.parse(u) for u in servers], timeout=c.timeout)
            for zone, servers in c.forward_zones
        }

    # -- static data -------------------------------------------------------------------------
    def _local_records(self) -> dict[tuple[str, int], list[tuple[int, int, bytes]]]:
        """Answers for office hosts, with PTR records derived from their addresses."""
        out: dict[tuple[str, int], list[tuple[int, int, bytes]]] = {}
        for name, rtype, value in self.config.local_records:
            if rtype == "CNAME":
                rec = (TYPE_CNAME, LOCAL_TTL, wire.encode_name(value))
                for qtype in (TYPE_A, TYPE_AAAA, TYPE_CNAME):
                    out.setdefault((name, qtype), []).append(rec)
                continue
            qtype = TYPE_A if rtype == "A" else TYPE_AAAA
            family = socket.AF_INET if rtype == "A" else socket.AF_INET6
            out.setdefault((name, qtype), []).append(
                (qtype, LOCAL_TTL, socket.inet_pton(family, value))
            )
            reverse = ipaddress.ip_address(value).reverse_pointer
            out.setdefault((reverse, TYPE_PTR), []).append(
                (TYPE_PTR, LOCAL_TTL, wire.encode_name(name))
            )
        return out

    # -- the hot path ------------------------------------------------------------------------
    def _client_access(self, client: str) -> int:
        """Whether ``client`` is served, and rate limited: decided once per address, for the
        hot path, which looks in ``_clients`` first."""
        try:
            ip = ipaddress.ip_address(client.split("%", 1)[0])
            access = SERVED if any(ip in net for net in self.networks) else NOT_SERVED
        except ValueError:
            access = NOT_SERVED
        if (
            access
            and self.limiter is not None
            and (
                self.config.rate_limit_loopback
                or (not client.startswith("127.") and client != "::1")
            )
        ):
            access = SERVED_LIMITED
        if len(self._clients) > 65_536:
            self._clients.clear()
        self._clients[client] = access
        return access

    def _check_lists(self) -> None:
        """Forget every verdict when the lists were reloaded (the matcher swapped whole)."""
        if self.matcher is not self._matcher_seen:
            self._by_key = {}
            self._verdicts = {}
            self._shared_matches = {}
            self._matcher_seen = self.matcher
            if self.clients is not None:
                self.clients.use_lists(self.matcher.lists)

    def _shared(self, found: Match, qname: str) -> Match:
        """``found`` as a Match shared by every name that matched the same way, whose ``rule``
        is "" when the listed name is ``qname`` itself.

        Why: the verdict memos hold up to 200,000 names, and a Match object per name costs
        68 bytes more than a shared one (6.5 MB for the 100,000 blocked names of the dnsperf
        run; the resolver's budget with a 1M-name list is 60 MB)."""
        key = (found.verdict, found.list_name, "" if found.rule == qname else found.rule)
        shared = self._shared_matches.get(key)
        if shared is None:
            if len(self._shared_matches) > VERDICT_MEMO:
                self._shared_matches.clear()
            shared = copy.copy(found)
            shared.rule = key[2]
            self._shared_matches[key] = shared
        return shared

    def _remember(
        self, memo: dict[bytes, Match | str], q: wire.Query, profile: Profile | None
    ) -> Match | str:
        """Decide a name the hot path has not seen in this form, and memoise the decision."""
        qname = q.qname
        found = self.matcher.match(qname, None if profile is None else profile.lists)
        seen: Match | str = qname if found is None else self._shared(found, qname)
        if len(q.key) <= MEMO_KEY_BYTES:
            if len(memo) > VERDICT_MEMO:
                memo.clear()
            memo[q.key] = seen
        return seen

    def _lookup(self, qname: str, profile: Profile | None = None) -> Match | None:
        """The verdict for ``qname`` by name (the CNAME paths' form), shared as ``_shared``."""
        self._check_lists()
        verdicts = self._verdicts if profile is None else profile.verdicts
        try:
            return verdicts[qname]
        except KeyError:
            pass
        found = self.matcher.match(qname, None if profile is None else profile.lists)
        if found is not None:
            found = self._shared(found, qname)
        if len(verdicts) > VERDICT_MEMO:
            verdicts.clear()
        verdicts[qname] = found
        return found

    def _match(self, qname: str, profile: Profile | None = None) -> Match | None:
        """The verdict for ``qname`` with its rule spelled out (for the CNAME paths)."""
        found = self._lookup(qname, profile)
        if found is None or found.rule:
            return found
        full = copy.copy(found)
        full.rule = qname
        return full

    def blocked_answer(self, q: wire.Query, mode: str | None = None) -> bytes:
        c = self.config
        mode = mode or c.block_mode
        if mode == "nxdomain":
            return wire.nxdomain(q, c.block_ttl)
        if mode == "null":
            return wire.null_answer(q, c.block_ttl)
        if mode == "ip":
            return wire.address_answer(q, c.block_ttl, c.block_ipv4, c.block_ipv6)
        return wire.refused(q)

    def _record(
        self,
        q: wire.Query,
        client: str,
        verdict: str,
        response: bytes,
        started: float,
        rule: str | None = None,
        list_name: str | None = None,
        upstream: str | None = None,
        group: str | None = None,
    ) -> None:
        self.metrics.answered(verdict, q.qtype)
        if self.log is not None:  # a plain tuple: a NamedTuple costs 5x more to build
            # A name not decoded yet goes as its wire key, and a rule "" (the name itself)
            # as is: the log's writer spells both out (QueryLog.log), off the answer path.
            name = q.decoded if q.decoded is not None else q.key
            self.log.log(
                (
                    self.wallclock(), client, name, q.qtype, verdict, rule, list_name,
                    upstream, (self.clock() - started) * 1000.0, response[3] & 0x0F, group,
                )
            )  # fmt: skip

    def _blocked(
        self,
        q: wire.Query,
        client: str,
        started: float,
        profile: Profile | None,
        rule: str | None,
        list_name: str | None,
        upstream: str | None = None,
    ) -> bytes:
        """The block answer; ``rule`` "" means the name itself was listed (spelled out only
        when something records it: decoding the name is most of a parse's cost)."""
        mode = profile.block_mode if profile is not None else None
        response = self.blocked_answer(q, mode)
        if self.log is None and self.recent_blocks is None:
            self.metrics.answered("blocked", q.qtype)
            return response
        group = profile.group if profile is not None else None
        if self.recent_blocks is not None and (mode or self.config.block_mode) == "ip":
            note = BlockNote(client, q.qname, group or "", rule or q.qname, list_name,
                             self.wallclock())  # fmt: skip
            self.recent_blocks.record(note)
        self._record(q, client, "blocked", response, started, rule, list_name, upstream, group)
        return response

    def _feed_sets(self, qname: str, response: bytes, *, stale: bool = False) -> None:
        if self.domain_sets is not None and self.set_feed is not None:
            self.domain_sets.feed(
                self.set_feed, qname, response, self.config.domain_set_timeout, stale=stale
            )

    def handle(self, data: bytes, client: str, tcp: bool = False) -> bytes | Pending | None:
        """Answer now (bytes), drop (None), or ask the server to resolve upstream (Pending)."""
        started = self.clock()
        access = self._clients.get(client)
        if access is None:
            access = self._client_access(client)
        if not access:
            return None  # never an open resolver: strangers get nothing, not even REFUSED
        if self.matcher is not self._matcher_seen:
            self._check_lists()
        profile = None
        if self.clients is None:
            memo = self._by_key
        else:
            profile = self.clients.profile(client, self.wallclock())
            memo = profile.by_key
        try:
            q = wire.parse_query(data, memo)
        except WireError:
            self.metrics.answered("formerr", 0)
            return wire.formerr(data)
        if (
            access == SERVED_LIMITED
            and self.limiter is not None
            and not self.limiter.allow(client, started)
        ):
            if self.config.rate_limit_action == "drop":
                self.metrics.answered("ratelimited", q.qtype)
                return None
            response = wire.refused(q)
            self._record(q, client, "ratelimited", response, started)
            return response
        if q.qtype == TYPE_ANY:
            response = wire.rfc8482_any(q, 3600)
            self._record(q, client, "any-refused", response, started)
            return response
        if q.qclass != 1:
            response = wire.refused(q)
            self._record(q, client, "refused", response, started)
            return response
        seen = memo.get(q.key)
        if seen is None:  # local names and the canary never enter the memo
            if q.qname in self.local_names:
                records = self.local.get((q.qname, q.qtype))
                response = wire.local_answer(q, records) if records else wire.nodata(q, LOCAL_TTL)
                self._record(q, client, "local", response, started)
                return response
            if profile is not None and profile.filtered and q.qname == DOH_CANARY:
                # Firefox turns its own DNS-over-HTTPS off when this name does not exist.
                response = wire.nxdomain(q, 300)
                self._record(q, client, "blocked", response, started, "doh-canary", None, None,
                             profile.group)  # fmt: skip
                return response
            seen = self._remember(memo, q, profile)
        if isinstance(seen, str):
            q.decoded = seen  # no list matched
        elif seen.verdict == "block":
            return self._blocked(q, client, started, profile, seen.rule, seen.list_name)
        qname = q.qname
        if profile is not None and profile.safe_hosts:
            target = profile.safe_hosts.get(qname)
            if target is not None:
                if q.qtype not in (TYPE_A, TYPE_AAAA):  # no HTTPS/SVCB hints around it
                    response = wire.nodata(q, 300)
                    self._record(q, client, "safe-search", response, started,
                                 target, None, None, profile.group)  # fmt: skip
                    return response
                return Pending(q, client, tcp, started, profile, target)
        cached = self.cache.get((qname, q.qtype, q.qclass, q.do), q.id)
        if cached is not None and profile is not None and qname in self._cname_targets:
            found = self._cname_blocked(qname, profile)
            if found is not None:
                rule = f"cname: {found.rule}"
                return self._blocked(q, client, started, profile, rule, found.list_name)
        if cached is not None:
            if self.domain_sets is not None:
                self._feed_sets(qname, cached)
            if not tcp and len(cached) > max(512, q.edns_size or 512):
                cached = _truncated(q, cached)
            group = profile.group if profile is not None else None
            self._record(q, client, "cached", cached, started, group=group)
            return cached
        return Pending(q, client, tcp, started, profile)

    # -- the upstream path -------------------------------------------------------------------
    def _pool_for(self, qname: str) -> UpstreamPool:
        for suffix in _suffixes(qname):
            pool = self.zone_pools.get(suffix)
            if pool is not None:
                return pool
        return self.pool

    def _inspect(
        self, q: wire.Query, response: bytes, profile: Profile | None = None
    ) -> tuple[str, str | None, str | None]:
        """(verdict, rule, list): block CNAME targets on a list and rebinding answers."""
        try:
            record = DNSRecord.parse(response)
        except Exception:  # an upstream's garbage: pass it on uncached, let the client judge
            return "allowed", None, None
        targets: list[str] = []
        for rr in record.rr:
            if rr.rtype == QTYPE.CNAME:
                target = str(rr.rdata.label).rstrip(".").lower()
                targets.append(target)
                found = self._match(target, profile)
                if found is not None and found.verdict == "block":
                    return "blocked", f"cname {target}: {found.rule}", found.list_name
            elif (
                rr.rtype in (QTYPE.A, QTYPE.AAAA)
                and self.config.rebinding_protection
                and not _in_domains(q.qname, self.rebind_allow)
            ):
                ip = ipaddress.ip_address(str(rr.rdata))
                if any(ip in net for net in PRIVATE_NETWORKS if net.version == ip.version):
                    return "blocked", f"rebinding: {ip}", None
        if targets and self.clients is not None:  # other groups must check them on cache hits
            if len(self._cname_targets) > 100_000:
                self._cname_targets.clear()
            self._cname_targets[q.qname] = tuple(targets)
        return "allowed", None, None

    def _cname_blocked(self, qname: str, profile: Profile) -> Match | None:
        for target in self._cname_targets.get(qname, ()):
            found = self._match(target, profile)
            if found is not None and found.verdict == "block":
                return found
        return None

    def _fit(self, pending: Pending, response: bytes) -> bytes:
        q = pending.query
        if not pending.tcp and len(response) > max(512, q.edns_size or 512):
            return _truncated(q, response)
        return response

    async def resolve(self, pending: Pending) -> bytes:
        q, started, profile = pending.query, pending.started, pending.profile
        group = profile.group if profile is not None else None
        if pending.rewrite is not None:
            return await self._safe_search(pending, pending.rewrite)
        key = (q.qname, q.qtype, q.qclass, q.do)
        pool = self._pool_for(q.qname)
        try:
            response, upstream = await pool.query(q.raw)
        except (TimeoutError, UpstreamError, OSError):
            stale = self.cache.get_stale(key, q.id)
            if stale is not None:
                self._feed_sets(q.qname, stale, stale=True)
                self._record(q, pending.client, "stale", stale, started, group=group)
                return self._fit(pending, stale)
            response = wire.servfail(q)
            self._record(q, pending.client, "servfail", response, started, group=group)
            return response
        self.metrics.upstream_latency((self.clock() - started) * 1000.0)
        verdict, rule, list_name = self._inspect(q, response, profile)
        if verdict == "blocked":
            address = upstream.spec.address
            return self._blocked(q, pending.client, started, profile, rule, list_name, address)
        self.cache.put(key, response)
        self._feed_sets(q.qname, response)
        response = wire.with_id(response, q.id)
        self._record(q, pending.client, "allowed", response, started,
                     upstream=upstream.spec.address, group=group)  # fmt: skip
        return self._fit(pending, response)

    async def _safe_search(self, pending: Pending, target: str) -> bytes:
        """The safe host's addresses under the asked name, behind a CNAME (like AdGuard Home
        and Pi-hole do): the browser keeps its URL, the provider serves the safe version."""
        q = pending.query
        group = pending.profile.group if pending.profile is not None else None
        key = (target, q.qtype, 1, q.do)
        upstream = None
        answer = self.cache.get(key, q.id)
        if answer is None:
            record = DNSRecord.question(target, QTYPE.get(q.qtype, "A"))
            if q.do:
                record.add_ar(EDNS0(flags="do", udp_len=1232))
            try:
                answer, used = await self._pool_for(target).query(bytes(record.pack()))
                upstream = used.spec.address
            except (TimeoutError, UpstreamError, OSError):
                answer = self.cache.get_stale(key, q.id)
            if answer is None:
                response = wire.servfail(q)
                self._record(q, pending.client, "servfail", response, pending.started, group=group)
                return response
            self.cache.put(key, answer)
        response = safe_search_answer(q, target, answer)
        self._record(q, pending.client, "safe-search", response, pending.started,
                     target, None, upstream, group)  # fmt: skip
        return self._fit(pending, response)

    async def prefetch(self, limit: int = 50) -> int:
        """Refresh popular entries before they expire, so clients keep hitting the cache."""
        done = 0
        for qname, qtype, qclass, do in self.cache.due_for_prefetch()[:limit]:
            record = DNSRecord.question(qname, QTYPE.get(qtype, "A"))
            if do:
                record.add_ar(EDNS0(flags="do", udp_len=1232))
            packet = bytes(record.pack())
            try:
                response, _ = await self._pool_for(qname).query(packet)
            except (UpstreamError, OSError, WireError):
                continue
            q = wire.parse_query(packet)
            if self._inspect(q, response)[0] == "allowed":
                self.cache.put((qname, qtype, qclass, do), response)
                self._feed_sets(qname, response)
                done += 1
        return done

    def seed_domain_sets(self) -> int:
        """Feed every cached answer for names the rules follow (after the sets were made or
        emptied by a new ruleset): clients that resolved a name before the rule existed
        still use those addresses."""
        if self.domain_sets is None or self.set_feed is None:
            return 0
        count = 0
        for (qname, _, _, _), data in self.cache.responses():
            count += self.domain_sets.feed(
                self.set_feed, qname, data, self.config.domain_set_timeout
            )
        return count

    async def prime_domain_sets(self, limit: int = 500) -> int:
        """Resolve the rules' exact names (A and AAAA) so their sets are filled before any
        client asks: a device that kept an address from before cannot slip through."""
        if self.domain_sets is None or self.set_feed is None:
            return 0
        count = 0
        for name in self.domain_sets.exact_names[:limit]:
            for qtype in ("A", "AAAA"):
                packet = bytes(DNSRecord.question(name, qtype).pack())
                try:
                    response, _ = await self._pool_for(name).query(packet)
                except (TimeoutError, UpstreamError, OSError, WireError):
                    continue
                q = wire.parse_query(packet)
                if self._inspect(q, response)[0] == "allowed":
                    self.cache.put((name, q.qtype, 1, False), response)
                    self._feed_sets(name, response)
                    count += 1
        return count

    async def close(self) -> None:
        await self.pool.close()
        for pool in self.zone_pools.values():
            await pool.close()

"""The resolver end to end: real UDP/TCP sockets on loopback, a real local upstream server.

The upstream is dnslib's DNSServer with a ZoneResolver the test starts; queries are sent
with dnslib over UDP and TCP. No mocks: lists are real files, answers real packets.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSRecord, EDNSOption
from dnslib.server import DNSLogger, DNSServer
from dnslib.zoneresolver import ZoneResolver

from dns_filter.matcher import Matcher
from dns_filter.querylog import QueryLog
from dns_filter.resolver import Resolver, ResolverConfig
from dns_filter.server import DnsServer, ListenAddress

BIG = "\n".join(f"big.test. 60 A 198.51.100.{i}" for i in range(1, 41))
ZONE = f"""
allowed.test. 60 A 198.51.100.10
allowed.test. 60 AAAA 2001:db8:100::10
alias.test. 60 CNAME tracker.ads.test.
tracker.ads.test. 60 A 198.51.100.66
www.ads.test. 60 A 198.51.100.67
rebind.test. 60 A 192.168.1.5
nas.rebind-ok.test. 60 A 192.168.1.6
short.test. 1 A 198.51.100.11
{BIG}
"""
QUIET = DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data")


class Upstream:
    """A real DNS server on 127.0.0.1 (UDP+TCP) serving ``zone``; counts queries."""

    def __init__(self, zone: str) -> None:
        self.resolver = ZoneResolver(zone)
        self.count = 0
        outer = self

        class Counting:
            def resolve(self, request, handler):  # type: ignore[no-untyped-def]
                outer.count += 1
                return outer.resolver.resolve(request, handler)

        for _ in range(10):  # the UDP port's TCP twin may be taken by another test's socket
            self.udp = DNSServer(Counting(), port=0, address="127.0.0.1", logger=QUIET)
            self.port = self.udp.server.server_address[1]
            try:
                self.tcp = DNSServer(
                    Counting(), port=self.port, address="127.0.0.1", tcp=True, logger=QUIET
                )
                break
            except OSError:
                self.udp.server.server_close()
        else:
            raise RuntimeError("no free UDP+TCP port pair for the test upstream")
        for s in (self.udp, self.tcp):
            s.start_thread()

    def stop(self) -> None:
        for s in (self.udp, self.tcp):
            s.stop()
            s.server.server_close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    up = Upstream(ZONE)
    yield up
    up.stop()


@pytest.fixture
def lists(tmp_path: Path) -> tuple[Path, Path]:
    block = tmp_path / "ads.txt"
    block.write_text("# ads\nads.test\n||doubleclick.example^\n0.0.0.0 tracker.example\n")
    allow = tmp_path / "allow.txt"
    allow.write_text("@@||www.ads.test^\n")
    return block, allow


class Running:
    """A resolver + server on an ephemeral loopback port, run in a background event loop."""

    def __init__(
        self,
        config: ResolverConfig,
        lists: tuple[Path, Path],
        tmp_path: Path,
        *,
        host: str = "127.0.0.1",
        batched: bool | None = None,
    ) -> None:
        matcher = Matcher()
        matcher.add_list("ads", lists[0], kind="block")
        matcher.add_list("office", lists[1], kind="allow")
        self.log = QueryLog(tmp_path / "q.db", interval=0.05)
        self.resolver = Resolver(config, matcher, log=self.log)
        self.server = DnsServer(self.resolver, [ListenAddress(host, 0)], batched=batched)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(5)
        self.port = self.server.bound[0][1]

    def query(self, name: str, qtype: str = "A", *, tcp: bool = False, edns: bool = False,
              timeout: float = 3.0) -> DNSRecord:  # fmt: skip
        q = DNSRecord.question(name, qtype)
        if edns:
            q.add_ar(EDNS0(udp_len=1232))
        return DNSRecord.parse(q.send("127.0.0.1", self.port, tcp=tcp, timeout=timeout))

    def raw(self, data: bytes, timeout: float = 0.5) -> bytes | None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(data, ("127.0.0.1", self.port))
            try:
                return s.recv(4096)
            except TimeoutError:
                return None

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        asyncio.run_coroutine_threadsafe(self.resolver.close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
        self.log.close()


@pytest.fixture
def make(upstream: Upstream, lists: tuple[Path, Path], tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    made: list[Running] = []

    def factory(**changes: object) -> Running:
        config = replace(
            ResolverConfig(
                upstreams=(f"127.0.0.1:{upstream.port}",), timeout=1.0, attempt_timeout=0.4
            ),
            **changes,
        )
        r = Running(config, lists, tmp_path / f"r{len(made)}")
        made.append(r)
        return r

    yield factory
    for r in made:
        r.close()


def _a(record: DNSRecord) -> list[str]:
    return [str(rr.rdata) for rr in record.rr if rr.rtype == QTYPE.A]


def test_forwards_then_answers_from_cache_over_udp_and_tcp(make, upstream: Upstream) -> None:
    r = make()
    first = r.query("allowed.test")
    assert first.header.rcode == RCODE.NOERROR and _a(first) == ["198.51.100.10"]
    seen = upstream.count
    again = r.query("Allowed.TEST")  # same name, other case: a cache hit
    assert _a(again) == ["198.51.100.10"] and upstream.count == seen
    assert again.rr[0].ttl <= 60
    tcp = r.query("allowed.test", "AAAA", tcp=True)
    assert [str(rr.rdata) for rr in tcp.rr] == ["2001:db8:100::10"]
    assert r.resolver.metrics.answers["cached"] >= 1


def test_block_lists_subdomains_exceptions_and_cname_chains(make) -> None:
    r = make()
    assert r.query("ads.test").header.rcode == RCODE.NXDOMAIN
    assert r.query("deep.sub.ads.test").header.rcode == RCODE.NXDOMAIN  # subdomain matching
    assert r.query("tracker.example").header.rcode == RCODE.NXDOMAIN  # hosts format
    assert r.query("x.doubleclick.example").header.rcode == RCODE.NXDOMAIN  # adblock format
    allowed = r.query("www.ads.test")  # allow list beats block list
    assert _a(allowed) == ["198.51.100.67"]
    cname = r.query("alias.test")  # permitted name whose CNAME target is blocked
    assert cname.header.rcode == RCODE.NXDOMAIN
    r.log.flush()
    logged = {e.qname: e for e in r.log.recent(50)}
    assert logged["ads.test"].verdict == "blocked" and logged["ads.test"].list == "ads"
    assert logged["alias.test"].rule is not None and logged["alias.test"].rule.startswith("cname")


def test_the_rule_is_logged_the_same_on_a_cached_verdict_and_the_cache_shares_it(make) -> None:
    """The verdict cache keeps one Match per way of matching (memory: 100,000 blocked names
    must not cost 100,000 Match objects), but the query log still names the rule that hit."""
    r = make()
    for _ in range(2):  # the first decision, then the cached one
        for name in ("ads.test", "one.ads.test", "two.ads.test", "tracker.example"):
            assert r.query(name).header.rcode == RCODE.NXDOMAIN
    r.log.flush()
    rules = [(e.qname, e.rule, e.list) for e in r.log.recent(50)]
    assert sorted(set(rules)) == [
        ("ads.test", "ads.test", "ads"),
        ("one.ads.test", "ads.test", "ads"),
        ("tracker.example", "tracker.example", "ads"),
        ("two.ads.test", "ads.test", "ads"),
    ]
    assert len(rules) == 8
    cached = r.resolver._by_key  # by the names' wire bytes
    assert cached[b"\x03ads\x04test"] is cached[b"\x07tracker\x07example"], (
        "exact matches share one object"
    )
    assert cached[b"\x03one\x03ads\x04test"] is cached[b"\x03two\x03ads\x04test"], (
        "so do names under one parent"
    )
    full = r.resolver._match("tracker.example")
    assert full is not None and (full.verdict, full.list_name, full.rule) == (
        "block",
        "ads",
        "tracker.example",
    )


@pytest.mark.parametrize(
    ("mode", "check"),
    [
        ("null", lambda rec: _a(rec) == ["0.0.0.0"]),
        ("ip", lambda rec: _a(rec) == ["192.0.2.1"]),
        ("refused", lambda rec: rec.header.rcode == RCODE.REFUSED),
    ],
)
def test_block_modes(make, mode: str, check) -> None:  # type: ignore[no-untyped-def]
    r = make(block_mode=mode, block_ipv4="192.0.2.1", block_ttl=5)
    answer = r.query("ads.test")
    assert check(answer)
    assert all(rr.ttl <= 5 for rr in answer.rr)


def test_rebinding_protection(make) -> None:
    r = make(rebind_allow=("rebind-ok.test",))
    assert r.query("rebind.test").header.rcode == RCODE.NXDOMAIN
    assert _a(r.query("nas.rebind-ok.test")) == ["192.168.1.6"]


def test_any_is_refused_rfc8482_style(make, upstream: Upstream) -> None:
    r = make()
    seen = upstream.count
    answer = r.query("allowed.test", "ANY")
    assert [QTYPE[rr.rtype] for rr in answer.rr] == ["HINFO"]
    assert upstream.count == seen


def test_local_records_and_ptr(make) -> None:
    r = make(
        local_records=(
            ("nas.office.lan", "A", "192.0.2.170"),
            ("files.office.lan", "CNAME", "nas.office.lan"),
        )
    )
    assert _a(r.query("nas.office.lan")) == ["192.0.2.170"]
    ptr = r.query("170.2.0.192.in-addr.arpa", "PTR")
    assert str(ptr.rr[0].rdata) == "nas.office.lan."
    assert QTYPE[r.query("files.office.lan").rr[0].rtype] == "CNAME"


def test_conditional_forwarding(make) -> None:
    corp = Upstream("dc1.corp.example. 60 A 192.0.2.5\n")
    try:
        r = make(forward_zones=(("corp.example", (f"127.0.0.1:{corp.port}",)),))
        assert _a(r.query("dc1.corp.example")) == ["192.0.2.5"]
        assert corp.count == 1
    finally:
        corp.stop()


def test_truncation_and_tcp_fallback(make) -> None:
    r = make()
    q = DNSRecord.question("big.test")
    udp = DNSRecord.parse(q.send("127.0.0.1", r.port, timeout=3))
    assert udp.header.tc == 1 and not udp.rr  # 40 A records do not fit 512 bytes
    full = r.query("big.test", tcp=True)
    assert len(_a(full)) == 40
    with_edns = r.query("big.test", edns=True)  # 1232 bytes are enough
    assert len(_a(with_edns)) == 40 and with_edns.header.tc == 0


def test_tcp_pipelining(make) -> None:
    r = make()
    names = ["allowed.test", "ads.test", "big.test", "tracker.example", "short.test"]
    with socket.create_connection(("127.0.0.1", r.port), timeout=3) as s:
        for i, name in enumerate(names):
            packet = DNSRecord.question(name)
            packet.header.id = 1000 + i
            data = packet.pack()
            s.sendall(struct.pack("!H", len(data)) + data)
        got = {}
        for _ in names:
            (length,) = struct.unpack("!H", s.recv(2, socket.MSG_WAITALL))
            rec = DNSRecord.parse(s.recv(length, socket.MSG_WAITALL))
            got[rec.header.id] = rec
    assert sorted(got) == [1000 + i for i in range(len(names))]
    assert got[1001].header.rcode == RCODE.NXDOMAIN and len(_a(got[1002])) == 40


def test_dead_upstream_gives_stale_answers_or_fast_servfail(make, upstream: Upstream) -> None:
    r = make()
    assert _a(r.query("short.test")) == ["198.51.100.11"]  # cached with TTL 1
    time.sleep(1.2)
    upstream.stop()
    start = time.monotonic()
    stale = r.query("short.test")
    assert _a(stale) == ["198.51.100.11"] and stale.rr[0].ttl == 30  # RFC 8767 stale TTL
    never_cached = r.query("allowed.test", timeout=5)
    assert never_cached.header.rcode == RCODE.SERVFAIL
    assert time.monotonic() - start < 3.0  # within the configured timeout, no hanging


def test_strangers_get_no_answer(make) -> None:
    r = make(client_networks=("10.0.0.0/8",))
    assert r.raw(DNSRecord.question("allowed.test").pack()) is None


def test_rate_limit_per_client(make) -> None:
    r = make(rate_limit=5.0, rate_burst=5.0, rate_limit_loopback=True)
    codes = [r.query("ads.test").header.rcode for _ in range(7)]
    assert codes[:5] == [RCODE.NXDOMAIN] * 5 and RCODE.REFUSED in codes[5:]


def test_formerr_and_garbage_never_stop_the_server(make) -> None:
    r = make()
    header_only = struct.pack("!HHHHHH", 0x1234, 0x0100, 2, 0, 0, 0)  # two questions
    reply = r.raw(header_only)
    assert reply is not None and reply[:2] == b"\x12\x34" and reply[3] & 0x0F == 1  # FORMERR
    assert r.raw(b"\x01") is None  # too short to answer: dropped
    assert _a(r.query("allowed.test")) == ["198.51.100.10"]


LONG = "x" * 60  # with ".ads.test", over resolver.MEMO_KEY_BYTES


def test_answers_from_the_verdict_memo_are_the_first_answers(make) -> None:
    """A name seen before, spelled the same, skips parsing and the lists (``_by_key``); every
    later answer must still be what the first query got. Local names never enter the memo."""
    r = make(local_records=(("nas.office.lan", "A", "192.0.2.170"),))
    for _ in range(3):
        assert r.query("ads.test").header.rcode == RCODE.NXDOMAIN
        assert r.query("One.ADS.test").header.rcode == RCODE.NXDOMAIN
        assert _a(r.query("www.ads.test")) == ["198.51.100.67"]  # the allow list's exception
        assert _a(r.query("Allowed.Test")) == ["198.51.100.10"]
        assert _a(r.query("nas.office.lan")) == ["192.0.2.170"]
        assert [QTYPE[rr.rtype] for rr in r.query("ads.test", "ANY").rr] == ["HINFO"]
        assert r.query(LONG + ".ads.test").header.rcode == RCODE.NXDOMAIN
    memo = r.resolver._by_key
    assert not any(LONG.encode() in key for key in memo), "long names are decided afresh"
    assert {b"\x03ads\x04test", b"\x03One\x03ADS\x04test", b"\x07Allowed\x04Test"} <= set(memo)
    assert memo[b"\x07Allowed\x04Test"] == "allowed.test", "not listed: the name, for the cache"
    assert not any(b"office" in key for key in memo)
    r.log.flush()
    logged = {(e.qname, e.verdict, e.rule) for e in r.log.recent(100)}
    assert ("one.ads.test", "blocked", "ads.test") in logged
    assert ("ads.test", "blocked", "ads.test") in logged


def test_an_oversized_udp_query_is_answered_formerr(make) -> None:
    """Datagrams are read into 479 bytes (server.UDP_QUERY_BYTES): real queries fit, with
    room for EDNS padding; a longer one arrives cut short and gets FORMERR, not a guess."""
    r = make()

    def padded(length: int) -> bytes:
        q = DNSRecord.question("allowed.test")
        q.add_ar(EDNS0(udp_len=1232, opts=[EDNSOption(12, bytes(length))]))  # RFC 7830
        return bytes(q.pack())

    fits = padded(400)
    assert len(fits) <= 479
    reply = r.raw(fits)
    assert reply is not None and reply[3] & 0x0F == 0 and _a(DNSRecord.parse(reply))
    too_long = padded(600)
    reply = r.raw(too_long)
    assert reply is not None and reply[:2] == too_long[:2] and reply[3] & 0x0F == 1  # FORMERR


def test_fuzzed_packets_over_the_wire(make) -> None:
    """Random and mutated packets at the socket: the server answers or drops, never dies.

    (The parser itself is fuzzed with hypothesis in test_wire.py; this drives the whole
    receive path, including the resolver and the upstream path for odd but valid queries.)
    """
    r = make()
    rng = random.Random(7)
    valid = DNSRecord.question("allowed.test").pack()
    for i in range(600):
        if i % 2:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 300)))
        else:
            data = bytearray(valid)
            for _ in range(rng.randrange(1, 6)):
                data[rng.randrange(len(data))] = rng.getrandbits(8)
            data = bytes(data[: rng.randrange(len(data) + 1)])
        r.raw(data, timeout=0.01)
    assert r.query("ads.test", timeout=2).header.rcode == RCODE.NXDOMAIN  # still answering
    assert _a(r.query("allowed.test", timeout=2)) == ["198.51.100.10"]


def test_an_ephemeral_udp_port_whose_tcp_twin_is_taken_is_retried(
    make,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    """With port 0 the kernel picks the UDP port; on a busy machine that number can be in
    use for TCP. The first pick is forced onto such a port here: the start must retry."""
    taken = socket.create_server(("127.0.0.1", 0))
    busy = taken.getsockname()[1]
    real = DnsServer._udp_socket
    calls: list[int] = []

    def first_on_the_busy_port(self: DnsServer, addr: ListenAddress) -> socket.socket:
        calls.append(addr.port)
        if len(calls) == 1:
            return real(self, ListenAddress(addr.host, busy))
        return real(self, addr)

    monkeypatch.setattr(DnsServer, "_udp_socket", first_on_the_busy_port)
    try:
        r = make()
        assert len(calls) == 2 and r.port != busy
        assert _a(r.query("allowed.test", tcp=True)) == ["198.51.100.10"]  # TCP answers
    finally:
        taken.close()

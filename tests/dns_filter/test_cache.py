"""Response cache: TTL bookkeeping, negative caching, stale serving, LRU bounds, prefetch."""

from __future__ import annotations

import pytest
from dnslib import CNAME, EDNS0, QTYPE, RR, SOA, A, DNSHeader, DNSQuestion, DNSRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from dns_filter.cache import STALE_TTL, CacheKey, DnsCache

NAME = "www.example.com"
KEY: CacheKey = (NAME, 1, 1, False)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def soa(ttl: int = 3600, minimum: int = 600, zone: str = "example.com") -> RR:
    times = (2024010101, 7200, 900, 1209600, minimum)
    return RR(zone, QTYPE.SOA, rdata=SOA("ns1." + zone, "hostmaster." + zone, times), ttl=ttl)


def response(
    name: str = NAME,
    qtype: int = QTYPE.A,
    *,
    answers: list[RR] | None = None,
    auth: list[RR] | None = None,
    rcode: int = 0,
    tc: bool = False,
    edns_flags: str | None = None,
    qid: int = 1,
) -> bytes:
    record = DNSRecord(
        DNSHeader(id=qid, qr=1, rd=1, ra=1, rcode=rcode, tc=int(tc)), q=DNSQuestion(name, qtype)
    )
    for rr in answers if answers is not None else [a_record(300)]:
        record.add_answer(rr)
    for rr in auth or []:
        record.add_auth(rr)
    if edns_flags is not None:
        record.add_ar(EDNS0(flags=edns_flags, udp_len=1232))
    return bytes(record.pack())


def a_record(ttl: int, address: str = "192.0.2.1", name: str = NAME) -> RR:
    return RR(name, QTYPE.A, rdata=A(address), ttl=ttl)


def ttls(data: bytes | None) -> list[int]:
    assert data is not None
    parsed = DNSRecord.parse(data)
    return [rr.ttl for rr in parsed.rr + parsed.auth + parsed.ar if rr.rtype != QTYPE.OPT]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_hit_decrements_ttl_and_rewrites_id(clock: FakeClock) -> None:
    cache = DnsCache(clock=clock)
    cache.put(KEY, response(qid=1))
    hit = cache.get(KEY, 0xBEEF)
    assert hit is not None and hit[:2] == b"\xbe\xef"
    parsed = DNSRecord.parse(hit)
    assert parsed.header.id == 0xBEEF and str(parsed.rr[0].rdata) == "192.0.2.1"
    assert ttls(hit) == [300]
    clock.advance(100.7)
    assert ttls(cache.get(KEY, 2)) == [200]
    clock.advance(199.2)  # 299.9 s old
    assert ttls(cache.get(KEY, 3)) == [1]
    clock.advance(0.1)
    assert cache.get(KEY, 4) is None
    assert (cache.hits, cache.misses) == (3, 1)
    assert len(cache) == 1  # kept for stale serving


def test_hits_within_a_second_share_the_rendered_answer(clock: FakeClock) -> None:
    """TTLs are rewritten when the age in whole seconds changes, not on every hit; each hit
    still carries its own ID, and stale serving still sees the original offsets."""
    cache = DnsCache(clock=clock)
    cache.put(KEY, response(qid=1))
    clock.advance(10.2)
    first, second = cache.get(KEY, 0x1111), cache.get(KEY, 0x2222)
    assert first is not None and second is not None
    assert (first[:2], second[:2], first[2:] == second[2:]) == (b"\x11\x11", b"\x22\x22", True)
    assert ttls(first) == ttls(second) == [290]
    clock.advance(0.7)  # 10.9 s: the same whole second
    assert ttls(cache.get(KEY, 3)) == [290]
    clock.advance(0.2)  # 11.1 s
    assert ttls(cache.get(KEY, 4)) == [289]
    clock.advance(300)
    assert ttls(cache.get_stale(KEY, 5)) == [STALE_TTL]


def test_each_record_keeps_its_own_ttl_and_the_shortest_decides(clock: FakeClock) -> None:
    cname = RR(NAME, QTYPE.CNAME, rdata=CNAME("edge.example.net"), ttl=3600)
    answers = [cname, a_record(60, name="edge.example.net"), a_record(90, name="edge.example.net")]
    cache = DnsCache(clock=clock)
    cache.put(KEY, response(answers=answers, edns_flags="do"))
    clock.advance(50)
    hit = cache.get(KEY, 1)
    assert ttls(hit) == [3550, 10, 40]
    assert hit is not None
    opt = DNSRecord.parse(hit).ar[0]
    assert opt.rtype == QTYPE.OPT and opt.ttl == 0x8000  # the OPT's DO bit is not a TTL
    clock.advance(10)
    assert cache.get(KEY, 1) is None


def test_ttl_clamps(clock: FakeClock) -> None:
    cache = DnsCache(min_ttl=60, max_ttl=100, clock=clock)
    low, high = (NAME, 1, 1, False), ("high.example", 1, 1, False)
    cache.put(low, response(answers=[a_record(10)]))
    cache.put(high, response("high.example", answers=[a_record(3600, name="high.example")]))
    assert ttls(cache.get(low, 1)) == [60]
    assert ttls(cache.get(high, 1)) == [100]
    clock.advance(59)
    assert ttls(cache.get(low, 1)) == [1]
    clock.advance(1)
    assert cache.get(low, 1) is None
    assert ttls(cache.get(high, 1)) == [40]
    clock.advance(40)
    assert cache.get(high, 1) is None


@pytest.mark.parametrize(
    ("soa_ttl", "minimum", "negative_ttl", "expected"),
    [(3600, 600, 300, 300), (3600, 600, 900, 600), (60, 600, 900, 60), (3600, 0, 300, 0)],
)
def test_nxdomain_is_cached_for_the_soa_negative_ttl(
    clock: FakeClock, soa_ttl: int, minimum: int, negative_ttl: int, expected: int
) -> None:
    cache = DnsCache(negative_ttl=negative_ttl, clock=clock)
    cache.put(KEY, response(answers=[], auth=[soa(soa_ttl, minimum)], rcode=3))
    if expected == 0:
        assert cache.get(KEY, 1) is None and len(cache) == 1  # only good for stale serving
        return
    hit = cache.get(KEY, 1)
    assert hit is not None and DNSRecord.parse(hit).header.rcode == 3
    assert ttls(hit) == [expected]
    assert DNSRecord.parse(hit).auth[0].rdata.times[-1] == minimum  # MINIMUM left alone
    clock.advance(expected - 1)
    assert ttls(cache.get(KEY, 1)) == [1]
    clock.advance(1)
    assert cache.get(KEY, 1) is None


def test_nodata_with_soa_is_cached_without_soa_is_not(clock: FakeClock) -> None:
    cache = DnsCache(clock=clock)
    aaaa: CacheKey = (NAME, 28, 1, False)
    cache.put(aaaa, response(qtype=QTYPE.AAAA, answers=[], auth=[soa(120, 600)]))
    assert ttls(cache.get(aaaa, 1)) == [120]
    mx: CacheKey = (NAME, 15, 1, False)
    cache.put(mx, response(qtype=QTYPE.MX, answers=[]))
    cache.put(KEY, response(answers=[], rcode=3))
    assert cache.get(mx, 1) is None and cache.get(KEY, 1) is None
    assert len(cache) == 1


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(response(rcode=2, answers=[]), id="SERVFAIL"),
        pytest.param(response(rcode=5, answers=[]), id="REFUSED"),
        pytest.param(response(rcode=4, answers=[]), id="NOTIMP"),
        pytest.param(response(tc=True), id="truncated TC"),
        pytest.param(response()[:-3], id="cut short"),
        pytest.param(response() + b"\x00", id="trailing byte"),
        pytest.param(b"\x00\x01\x80", id="no header"),
        pytest.param(response("other.example"), id="other question"),
        pytest.param(response(qtype=QTYPE.AAAA, answers=[]), id="other qtype"),
        pytest.param(bytes(DNSRecord.question(NAME).pack()), id="a query, not a response"),
    ],
)
def test_uncacheable_responses_are_ignored(clock: FakeClock, bad: bytes) -> None:
    cache = DnsCache(clock=clock)
    cache.put(KEY, bad)
    assert len(cache) == 0 and cache.get(KEY, 1) is None


def test_extended_rcode_in_opt_is_not_cached(clock: FakeClock) -> None:
    record = DNSRecord.parse(response())
    record.add_ar(EDNS0(ext_rcode=1, udp_len=1232))  # BADVERS = 16
    cache = DnsCache(clock=clock)
    cache.put(KEY, bytes(record.pack()))
    assert len(cache) == 0


def test_question_match_ignores_case(clock: FakeClock) -> None:
    cache = DnsCache(clock=clock)
    cache.put(KEY, response("WWW.Example.COM", answers=[a_record(30, name="WWW.Example.COM")]))
    assert ttls(cache.get(KEY, 1)) == [30]


def test_ttl_with_high_bit_counts_as_zero(clock: FakeClock) -> None:
    cache = DnsCache(clock=clock)
    cache.put(KEY, response(answers=[a_record(0x80000000)]))
    assert cache.get(KEY, 1) is None
    assert ttls(cache.get_stale(KEY, 1)) == [STALE_TTL]


def test_stale_serving_window(clock: FakeClock) -> None:
    cache = DnsCache(stale_window=3600, clock=clock)
    cache.put(KEY, response(answers=[a_record(300)], auth=[soa(7200, 600)], edns_flags="do"))
    assert ttls(cache.get_stale(KEY, 1)) == [300, 7200]  # still fresh: served like get
    assert cache.stale_hits == 0
    clock.advance(300)
    assert cache.get(KEY, 1) is None
    stale = cache.get_stale(KEY, 0x4242)
    assert ttls(stale) == [STALE_TTL, STALE_TTL]
    assert stale is not None and DNSRecord.parse(stale).header.id == 0x4242
    assert DNSRecord.parse(stale).ar[0].ttl == 0x8000
    clock.advance(3599)
    assert cache.get_stale(KEY, 1) is not None
    assert cache.stale_hits == 2
    clock.advance(1)
    assert cache.get_stale(KEY, 1) is None
    assert len(cache) == 0  # past the window the entry is dropped
    assert cache.get_stale(("never.example", 1, 1, False), 1) is None


def test_get_drops_entries_past_the_stale_window(clock: FakeClock) -> None:
    cache = DnsCache(stale_window=10, clock=clock)
    cache.put(KEY, response(answers=[a_record(5)]))
    clock.advance(14)
    assert cache.get(KEY, 1) is None and len(cache) == 1
    clock.advance(1)
    assert cache.get(KEY, 1) is None and len(cache) == 0


def key(i: int) -> CacheKey:
    return (f"n{i}.example", 1, 1, False)


def put_n(cache: DnsCache, i: int, ttl: int = 300) -> None:
    cache.put(key(i), response(f"n{i}.example", answers=[a_record(ttl, name=f"n{i}.example")]))


def test_lru_eviction_order(clock: FakeClock) -> None:
    cache = DnsCache(max_entries=3, clock=clock)
    for i in range(3):
        put_n(cache, i)
    assert cache.get(key(0), 1) is not None  # 0 becomes most recently used
    put_n(cache, 3)
    assert len(cache) == 3 and cache.evictions == 1
    assert cache.get(key(1), 1) is None
    put_n(cache, 2)  # re-putting refreshes 2 without growing
    put_n(cache, 4)
    assert [cache.get(key(i), 1) is not None for i in range(5)] == [False, False, True, True, True]


def test_byte_budget_bounds_memory(clock: FakeClock) -> None:
    size = len(response("n0.example", answers=[a_record(300, name="n0.example")]))
    cache = DnsCache(max_bytes=size * 2, clock=clock)
    for i in range(5):
        put_n(cache, i)
    assert len(cache) == 2 and cache.evictions == 3
    cache.put(("big.example", 1, 1, False), response("big.example", answers=[]) * 3)
    assert len(cache) == 2


def test_prefetch_candidates(clock: FakeClock) -> None:
    cache = DnsCache(clock=clock)
    put_n(cache, 0, ttl=100)  # popular
    put_n(cache, 1, ttl=100)  # not popular enough
    put_n(cache, 2, ttl=1000)  # popular, long TTL
    for _ in range(3):
        cache.get(key(0), 1)
        cache.get(key(2), 1)
    for _ in range(2):
        cache.get(key(1), 1)
    clock.advance(50)
    assert cache.due_for_prefetch() == []
    clock.advance(45)  # 5 s of 100 left: below 10 %
    assert cache.due_for_prefetch() == [key(0)]
    assert cache.due_for_prefetch(threshold_hits=2) == [key(0), key(1)]
    assert cache.due_for_prefetch(fraction=0.91) == [key(0), key(2)]
    put_n(cache, 0, ttl=100)  # refreshed: fresh TTL, hits reset
    assert cache.due_for_prefetch() == []
    clock.advance(10)  # 1 and 2 expired or not due; expired entries are not prefetched
    assert cache.due_for_prefetch(threshold_hits=0) == []


def test_clear_and_stats(clock: FakeClock) -> None:
    cache = DnsCache(clock=clock)
    put_n(cache, 0)
    cache.get(key(0), 1)
    cache.get(key(1), 1)
    cache.clear()
    assert len(cache) == 0 and cache.get(key(0), 1) is None
    assert cache.stats() == {"hits": 1, "misses": 2, "stale_hits": 0, "evictions": 0}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_entries": 0},
        {"max_bytes": 0},
        {"min_ttl": -1},
        {"min_ttl": 10, "max_ttl": 5},
        {"negative_ttl": -1},
        {"stale_window": -1},
    ],
)
def test_rejects_bad_settings(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        DnsCache(**kwargs)  # type: ignore[arg-type]


def test_uses_monotonic_clock_by_default() -> None:
    cache = DnsCache()
    cache.put(KEY, response())
    assert ttls(cache.get(KEY, 1)) == [300]


GOOD = response(answers=[a_record(300)], auth=[soa()], edns_flags="do")


@settings(max_examples=2000, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.builds(
            lambda i, b, cut: (GOOD[: i % len(GOOD)] + bytes([b]) + GOOD[i % len(GOOD) + 1 :])[
                : len(GOOD) - cut
            ],
            st.integers(0, 500),
            st.integers(0, 255),
            st.integers(0, 20),
        ),
    )
)
def test_put_never_raises_on_garbage(data: bytes) -> None:
    cache = DnsCache(clock=FakeClock())
    cache.put(KEY, data)
    hit = cache.get(KEY, 7) or cache.get_stale(KEY, 7)
    if hit is None:
        return
    assert len(hit) == len(data) and hit[:2] == b"\x00\x07"
    # The cache walks records but does not validate RDATA, so it may keep what dnslib rejects
    # (as forwarding would pass it on); what dnslib can read must stay readable after patching.
    try:
        original = DNSRecord.parse(data)
    except Exception:
        return
    patched = DNSRecord.parse(hit)
    assert [len(s) for s in (patched.rr, patched.auth, patched.ar)] == [
        len(s) for s in (original.rr, original.auth, original.ar)
    ]

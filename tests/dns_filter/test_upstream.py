"""Upstream forwarding against real DNS servers on loopback (tests/dns_filter/upstream_server)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal, TypeVar

import pytest
from dnslib import DNSRecord

from dns_filter.errors import UpstreamError, WireError
from dns_filter.upstream import Upstream, UpstreamPool, UpstreamSpec

from .upstream_server import (
    SERVER_NAME,
    SPOOF_ADDRESS,
    LocalUpstream,
    make_test_certs,
    openssl_available,
)

ZONE = {"a.test": "192.0.2.1", "v6.test": "2001:db8::1", "b.test": ["192.0.2.2", "192.0.2.3"]}
T = TypeVar("T")


def _query(name: str, qid: int = 0x1234, qtype: str = "A") -> bytes:
    record = DNSRecord.question(name, qtype)
    record.header.id = qid
    return bytes(record.pack())


def _addresses(reply: bytes) -> list[str]:
    return [str(rr.rdata) for rr in DNSRecord.parse(reply).rr]


def _with_pool(pool: UpstreamPool, body: Callable[[UpstreamPool], Awaitable[T]]) -> T:
    """Run ``body`` on a fresh loop and always close the pool's connections on that loop."""

    async def main() -> T:
        try:
            return await body(pool)
        finally:
            await pool.close()

    return asyncio.run(main())


def _spec(
    server: LocalUpstream, protocol: Literal["udp", "tcp", "tls"] = "udp", name: str = ""
) -> UpstreamSpec:
    port = server.port if protocol == "udp" else server.tcp_port
    return UpstreamSpec(server.host, port, protocol, name)


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


# -- specs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5399", UpstreamSpec("127.0.0.1", 5399, "udp")),
        ("127.0.0.1", UpstreamSpec("127.0.0.1", 53, "udp")),
        ("udp://127.0.0.1:53", UpstreamSpec("127.0.0.1", 53, "udp")),
        ("TCP://[::1]:53", UpstreamSpec("::1", 53, "tcp")),
        ("tcp://[::1]", UpstreamSpec("::1", 53, "tcp")),
        ("::1", UpstreamSpec("::1", 53, "udp")),
        ("tls://1.1.1.1", UpstreamSpec("1.1.1.1", 853, "tls", "1.1.1.1")),
        (
            " tls://1.1.1.1:853#cloudflare-dns.com ",
            UpstreamSpec("1.1.1.1", 853, "tls", "cloudflare-dns.com"),
        ),
        ("tls://[2606:4700:4700:0::1111]:8853", UpstreamSpec("2606:4700:4700::1111", 8853, "tls")),
    ],
)
def test_spec_parse(text: str, expected: UpstreamSpec) -> None:
    spec = UpstreamSpec.parse(text)
    assert spec == expected
    assert UpstreamSpec.parse(str(spec)) == spec


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty upstream address"),
        ("https://1.1.1.1", "unknown protocol 'https'"),
        ("dns.google:53", "'dns.google' is not an IP address"),
        ("127.0.0.1:", "missing port"),
        ("127.0.0.1:dns", "port 'dns' is not a number"),
        ("127.0.0.1:70000", "out of range"),
        ("127.0.0.1:0", "out of range"),
        ("tcp://[::1", "missing ']'"),
        ("tcp://[::1]53", "unexpected '53' after ']'"),
        ("udp://1.1.1.1#one.one.one.one", "only tls:// takes it"),
        ("tls://1.1.1.1#", "empty TLS name"),
        ("tls://:853", "missing host"),
    ],
)
def test_spec_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        UpstreamSpec.parse(text)


def test_spec_rendering() -> None:
    spec = UpstreamSpec.parse("tls://[::1]:853#dns.test")
    assert (spec.address, str(spec)) == ("[::1]:853", "tls://[::1]:853#dns.test")


# -- UDP -------------------------------------------------------------------------------


def test_udp_answer_keeps_the_callers_id() -> None:
    with LocalUpstream(ZONE) as server:
        pool = UpstreamPool([_spec(server)])

        async def body(pool: UpstreamPool) -> None:
            reply, upstream = await pool.query(_query("a.test", 0xBEEF))
            assert reply[:2] == b"\xbe\xef"
            assert _addresses(reply) == ["192.0.2.1"]
            reply, _ = await pool.query(_query("V6.Test", 7, "AAAA"))
            assert DNSRecord.parse(reply).header.id == 7
            assert _addresses(reply) == ["2001:db8::1"]
            reply, _ = await pool.query(_query("missing.test"))
            assert DNSRecord.parse(reply).header.rcode == 3  # NXDOMAIN passes through
            stats = upstream.stats()
            assert stats["address"] == f"127.0.0.1:{server.port}"
            assert (stats["queries"], stats["failures"], stats["healthy"]) == (3, 0, True)
            assert isinstance(stats["ewma_ms"], float)

        _with_pool(pool, body)
        assert [seen.protocol for seen in server.seen] == ["udp"] * 3


def test_reply_question_case_may_differ() -> None:
    with LocalUpstream(ZONE, flip_case=True) as server:
        pool = UpstreamPool([_spec(server)])
        reply, upstream = _with_pool(pool, lambda p: p.query(_query("a.TEST")))
        assert _addresses(reply) == ["192.0.2.1"]
        assert upstream.spoofed == 0


def test_truncated_udp_answer_is_retried_over_tcp() -> None:
    with LocalUpstream(ZONE, truncate_udp=True) as server:
        pool = UpstreamPool([_spec(server)])
        reply, upstream = _with_pool(pool, lambda p: p.query(_query("b.test", 99)))
        assert DNSRecord.parse(reply).header.id == 99
        assert DNSRecord.parse(reply).header.tc == 0
        assert sorted(_addresses(reply)) == ["192.0.2.2", "192.0.2.3"]
        assert [seen.protocol for seen in server.seen] == ["udp", "tcp"]
        assert (upstream.truncated, upstream.queries, upstream.failures) == (1, 1, 0)


def test_spoofed_udp_replies_are_ignored_and_counted() -> None:
    with LocalUpstream(ZONE, spoof=True) as server:
        pool = UpstreamPool([_spec(server)])
        reply, upstream = _with_pool(pool, lambda p: p.query(_query("a.test")))
        assert _addresses(reply) == ["192.0.2.1"]
        assert SPOOF_ADDRESS not in _addresses(reply)
        assert upstream.spoofed == 2  # wrong ID, then right ID for another question


def test_random_source_ports_and_ids() -> None:
    with LocalUpstream(ZONE) as server:
        pool = UpstreamPool([_spec(server)])

        async def body(pool: UpstreamPool) -> None:
            for _ in range(30):
                await pool.query(_query("a.test", 0x4242))

        _with_pool(pool, body)
        ports = {seen.client_port for seen in server.seen}
        ids = [seen.qid for seen in server.seen]
        assert len(server.seen) == 30
        assert len(ports) >= 25, ports  # a fresh socket, so a fresh ephemeral port, per query
        assert len(set(ids)) >= 28, ids
        assert ids.count(0x4242) <= 1  # the client's own ID is not what goes on the wire


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_upstream_over_udp_and_tcp() -> None:
    with LocalUpstream(ZONE, host="::1", truncate_udp=True) as server:
        pool = UpstreamPool([UpstreamSpec.parse(f"[::1]:{server.port}")])
        reply, upstream = _with_pool(pool, lambda p: p.query(_query("a.test")))
        assert _addresses(reply) == ["192.0.2.1"]
        assert [seen.protocol for seen in server.seen] == ["udp", "tcp"]
        assert upstream.spoofed == 0


def test_malformed_query_is_a_wire_error_and_blames_no_upstream() -> None:
    with LocalUpstream(ZONE) as server:
        pool = UpstreamPool([_spec(server)])

        async def body(pool: UpstreamPool) -> None:
            for bad in (b"\x00\x01", _query("a.test")[:-3]):
                with pytest.raises(WireError):
                    await pool.query(bad)

        _with_pool(pool, body)
        assert pool.stats()[0]["queries"] == 0
        assert server.queries == 0


# -- TCP -------------------------------------------------------------------------------


def test_tcp_pipelines_concurrent_queries_on_one_connection() -> None:
    zone = {f"n{i}.test": f"10.0.0.{i}" for i in range(40)}
    # The first query is answered last, the rest at once (in whatever order the server's
    # threads finish): answers come back out of order and must be matched by ID.
    with LocalUpstream(zone, delay=lambda name: 0.5 if name == "n0.test." else 0.0) as srv:
        pool = UpstreamPool([_spec(srv, "tcp")])

        async def body(pool: UpstreamPool) -> list[tuple[bytes, Upstream]]:
            queries = [pool.query(_query(f"n{i}.test", 1000 + i)) for i in range(40)]
            return await asyncio.gather(*queries)

        started = time.monotonic()
        results = _with_pool(pool, body)
        assert time.monotonic() - started < 1.5  # concurrent: the slow one holds up no other
        for i, (reply, _) in enumerate(results):
            assert DNSRecord.parse(reply).header.id == 1000 + i
            assert _addresses(reply) == [f"10.0.0.{i}"]
        assert srv.stream_connections == 1
        assert {seen.protocol for seen in srv.seen} == {"tcp"}
        assert srv.sent[-1] == "n0.test.", srv.sent  # answered out of order


def test_tcp_reconnects_after_the_server_closes_the_connection() -> None:
    with LocalUpstream(ZONE) as server:
        pool = UpstreamPool([_spec(server, "tcp")])

        async def body(pool: UpstreamPool) -> None:
            assert _addresses((await pool.query(_query("a.test")))[0]) == ["192.0.2.1"]
            server.cut_streams()
            await asyncio.sleep(0.05)
            assert _addresses((await pool.query(_query("a.test")))[0]) == ["192.0.2.1"]

        _with_pool(pool, body)
        assert server.stream_connections == 2
        assert pool.stats()[0]["failures"] == 0


def test_tcp_stalled_connection_is_replaced() -> None:
    with LocalUpstream(ZONE, drop=True) as server:
        pool = UpstreamPool([_spec(server, "tcp")], timeout=0.2, attempt_timeout=0.2)

        async def body(pool: UpstreamPool) -> None:
            with pytest.raises(UpstreamError, match="no answer within 200 ms"):
                await pool.query(_query("a.test"))
            server.drop = False
            assert _addresses((await pool.query(_query("a.test")))[0]) == ["192.0.2.1"]

        _with_pool(pool, body)
        assert server.stream_connections == 2


def test_spoofed_tcp_frames_are_ignored() -> None:
    with LocalUpstream(ZONE, spoof=True) as server:
        pool = UpstreamPool([_spec(server, "tcp")])
        reply, upstream = _with_pool(pool, lambda p: p.query(_query("a.test")))
        assert _addresses(reply) == ["192.0.2.1"]
        assert upstream.spoofed == 2


# -- DNS over TLS ----------------------------------------------------------------------


def _dot_round_trip(certs_dir: Path, *, use_openssl: bool = False) -> None:
    certs = make_test_certs(certs_dir, use_openssl=use_openssl)
    with LocalUpstream(ZONE, tls_context=certs.server_context()) as server:
        by_name = _spec(server, "tls", SERVER_NAME)
        by_ip = _spec(server, "tls")  # the certificate also names 127.0.0.1
        pool = UpstreamPool([by_name], ssl_context=certs.client_context())

        async def body(pool: UpstreamPool) -> None:
            replies = await asyncio.gather(*(pool.query(_query("a.test", i)) for i in range(10)))
            for i, (reply, _) in enumerate(replies):
                assert DNSRecord.parse(reply).header.id == i
                assert _addresses(reply) == ["192.0.2.1"]
            ip_pool = UpstreamPool([by_ip], ssl_context=certs.client_context())
            try:
                assert _addresses((await ip_pool.query(_query("a.test")))[0]) == ["192.0.2.1"]
            finally:
                await ip_pool.close()

        _with_pool(pool, body)
        assert server.stream_connections == 2  # one per pool, however many queries
        assert {seen.protocol for seen in server.seen} == {"tls"}


def test_dns_over_tls_with_a_test_ca(tmp_path: Path) -> None:
    _dot_round_trip(tmp_path)


@pytest.mark.skipif(not openssl_available(), reason="no openssl command")
def test_dns_over_tls_with_openssl_made_certificates(tmp_path: Path) -> None:
    _dot_round_trip(tmp_path, use_openssl=True)


def test_dns_over_tls_refuses_untrusted_or_misnamed_certificates(tmp_path: Path) -> None:
    certs = make_test_certs(tmp_path)
    with LocalUpstream(ZONE, tls_context=certs.server_context()) as server:
        cases = [
            (_spec(server, "tls", SERVER_NAME), None, "CERTIFICATE_VERIFY_FAILED"),  # system CAs
            (_spec(server, "tls", "other.test"), certs.client_context(), "other.test"),
        ]
        for spec, context, message in cases:
            pool = UpstreamPool([spec], ssl_context=context, timeout=1.0, attempt_timeout=1.0)
            with pytest.raises(UpstreamError, match=message):
                _with_pool(pool, lambda p: p.query(_query("a.test")))
            assert pool.stats()[0]["failures"] == 1
        assert server.queries == 0


def test_default_context_verifies_certificates() -> None:
    pool = UpstreamPool([UpstreamSpec.parse("tls://127.0.0.1:853")])
    context = pool.upstreams[0]._ssl_context
    assert context is not None
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)


# -- the pool --------------------------------------------------------------------------


def test_dead_upstream_times_out_and_the_pool_fails_over() -> None:
    with LocalUpstream(ZONE, drop=True) as dead, LocalUpstream(ZONE) as good:
        pool = UpstreamPool([_spec(dead), _spec(good)], timeout=2.0, attempt_timeout=0.3)

        async def body(pool: UpstreamPool) -> tuple[float, Upstream]:
            started = time.monotonic()
            reply, upstream = await pool.query(_query("a.test"))
            assert _addresses(reply) == ["192.0.2.1"]
            return time.monotonic() - started, upstream

        elapsed, upstream = _with_pool(pool, body)
        assert upstream.spec.port == good.port
        assert 0.3 <= elapsed < 0.3 + 0.4
        assert good.queries == 1
        dead_stats, good_stats = pool.stats()
        assert (dead_stats["timeouts"], dead_stats["failures"], dead_stats["healthy"]) == (
            1,
            1,
            True,
        )
        assert good_stats["failures"] == 0


def test_stopped_upstream_fails_fast() -> None:
    with LocalUpstream(ZONE) as stopped, LocalUpstream(ZONE) as good:
        stopped.stop()
        pool = UpstreamPool([_spec(stopped), _spec(good)], attempt_timeout=1.0)

        async def body(pool: UpstreamPool) -> float:
            started = time.monotonic()
            _, upstream = await pool.query(_query("a.test"))
            assert upstream.spec.port == good.port
            return time.monotonic() - started

        assert _with_pool(pool, body) < 0.5  # ICMP port unreachable, not the 1 s timeout
        assert pool.stats()[0]["timeouts"] == 0
        assert pool.stats()[0]["failures"] == 1


def test_fastest_healthy_upstream_is_preferred_once_latency_is_known() -> None:
    with LocalUpstream(ZONE, delay=0.05) as slow, LocalUpstream(ZONE) as fast:
        pool = UpstreamPool([_spec(slow), _spec(fast)])

        async def body(pool: UpstreamPool) -> list[int]:
            return [(await pool.query(_query("a.test")))[1].spec.port for _ in range(6)]

        ports = _with_pool(pool, body)
        # Untried upstreams count as fast: each is tried once, then the fast one wins.
        assert ports == [slow.port] + [fast.port] * 5
        slow_ms, fast_ms = (s["ewma_ms"] for s in pool.stats())
        assert isinstance(slow_ms, float) and isinstance(fast_ms, float)
        assert slow_ms >= 50 > fast_ms
        assert [u.spec.port for u in pool.order()] == [fast.port, slow.port]


def test_all_dead_raises_within_the_overall_timeout() -> None:
    with LocalUpstream(ZONE, drop=True) as one, LocalUpstream(ZONE, drop=True) as two:
        pool = UpstreamPool([_spec(one), _spec(two)], timeout=0.5, attempt_timeout=0.2)

        async def body(pool: UpstreamPool) -> list[float]:
            times = []
            for _ in range(4):
                started = time.monotonic()
                with pytest.raises(UpstreamError) as caught:
                    await pool.query(_query("a.test"))
                times.append(time.monotonic() - started)
            assert "all upstreams are unhealthy" in str(caught.value)
            return times

        times = _with_pool(pool, body)
        # Two attempts of 0.2 s; the 0.1 s left is too short for a whole second try.
        assert 0.4 <= times[0] < 0.5 + 0.15
        assert all(t < 0.5 + 0.15 for t in times)
        assert times[-1] < 0.1  # every upstream unhealthy: fail at once, no waiting
        assert not any(s["healthy"] for s in pool.stats())


def test_unhealthy_upstream_is_probed_after_the_backoff_and_recovers() -> None:
    with LocalUpstream(ZONE, drop=True) as flaky, LocalUpstream(ZONE) as good:
        pool = UpstreamPool(
            [_spec(flaky), _spec(good)], timeout=1.0, attempt_timeout=0.1, backoff=0.4
        )
        flaky_upstream = pool.upstreams[0]

        async def body(pool: UpstreamPool) -> None:
            for _ in range(3):
                with pytest.raises(UpstreamError):
                    await flaky_upstream.query(_query("a.test"), 0.1)
            assert not flaky_upstream.healthy
            sent = flaky_upstream.queries  # counted by the client: no race with server threads
            for _ in range(3):  # within the back-off the unhealthy one is skipped
                await pool.query(_query("a.test"))
            assert flaky_upstream.queries == sent
            await asyncio.sleep(0.45)
            await pool.query(_query("a.test"))  # the probe: still dead, one attempt, then good
            assert flaky_upstream.queries == sent + 1
            await pool.query(_query("a.test"))  # the next probe waits another back-off
            assert flaky_upstream.queries == sent + 1
            flaky.drop = False
            await asyncio.sleep(0.45)
            _, upstream = await pool.query(_query("a.test"))
            assert upstream is flaky_upstream
            assert flaky_upstream.healthy and flaky_upstream.consecutive_failures == 0

        _with_pool(pool, body)


def test_pool_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError, match="at least one upstream"):
        UpstreamPool([])
    with pytest.raises(ValueError, match="must be positive"):
        UpstreamPool([UpstreamSpec("127.0.0.1")], timeout=0)


def test_closed_pool_refuses_queries() -> None:
    pool = UpstreamPool([UpstreamSpec("127.0.0.1", 9)])
    asyncio.run(pool.close())
    with pytest.raises(UpstreamError, match="closed"):
        asyncio.run(pool.query(_query("a.test")))

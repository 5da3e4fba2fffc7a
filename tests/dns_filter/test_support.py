"""Query log, metrics and per-client rate limiting."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from dns_filter.metrics import Metrics
from dns_filter.querylog import LogEntry, QueryLog
from dns_filter.ratelimit import ClientRateLimiter


def _entry(i: int, verdict: str = "blocked") -> LogEntry:
    return LogEntry(
        1_800_000_000.0 + i,
        "192.0.2.10",
        f"n{i}.example",
        1,
        verdict,
        "example",
        "ads",
        None,
        0.1,
        3,
    )


def test_query_log_writes_in_batches_off_the_answer_path(tmp_path: Path) -> None:
    # 20,000 entries at once (no DNS server logs that fast): room for all of them
    log = QueryLog(tmp_path / "q.db", interval=0.05, max_pending=20_000)
    try:
        start = time.perf_counter()
        for i in range(20_000):
            log.log(_entry(i))
        per_call_us = (time.perf_counter() - start) / 20_000 * 1e6
        assert per_call_us < 20  # an append, no disk I/O
        deadline = time.monotonic() + 10
        while log.written < 20_000:
            assert time.monotonic() < deadline, "writer thread did not drain the queue"
            time.sleep(0.05)
        newest = log.recent(1)[0]
        assert newest.qname == "n19999.example" and newest.verdict == "blocked"
    finally:
        log.close()
    with sqlite3.connect(tmp_path / "q.db") as db:
        assert db.execute("SELECT count(*) FROM queries").fetchone()[0] == 20_000


def test_query_log_spells_out_names_passed_as_wire_keys(tmp_path: Path) -> None:
    """The answer path may log a name as its wire key and the rule "" for "the name itself"
    (no decoding on the answer path); the log holds names."""
    log = QueryLog(tmp_path / "q.db", interval=3600)
    now = time.time()  # (older rows would fall to the retention)
    try:
        log.log(
            (
                now + 1.0,
                "192.0.2.7",
                b"\x03Ads\x04TEST",
                1,
                "blocked",
                "",
                "ads",
                None,
                0.1,
                3,
                None,
            )
        )
        log.log((now + 2.0, "192.0.2.7", b"\x01x\x03ads\x04test", 1, "blocked", "ads.test", "ads",
                 None, 0.1, 3, "kids"))  # fmt: skip
        log.log((now + 3.0, "192.0.2.7", "ads.test", 1, "blocked", "", "ads", None, 0.1, 3, None))
        log.log((now + 4.0, "192.0.2.7", "ok.test", 1, "cached", None, None, None, 0.1, 0, None))
        rows = [(e.qname, e.rule, e.client_group) for e in reversed(log.recent(10))]
    finally:
        log.close()
    assert rows == [
        ("ads.test", "ads.test", None),
        ("x.ads.test", "ads.test", "kids"),
        ("ads.test", "ads.test", None),
        ("ok.test", None, None),
    ]


def test_query_log_drops_instead_of_blocking_when_the_writer_falls_behind(tmp_path: Path) -> None:
    log = QueryLog(tmp_path / "q.db", interval=3600, max_pending=100)
    try:
        for i in range(150):
            log.log(_entry(i))
        assert log.dropped == 50
    finally:
        log.close()  # flushes what was kept
    with sqlite3.connect(tmp_path / "q.db") as db:
        assert db.execute("SELECT count(*) FROM queries").fetchone()[0] == 100


def test_query_log_writer_runs_only_when_the_answer_loop_idles(tmp_path: Path) -> None:
    log = QueryLog(tmp_path / "q.db")
    try:
        tid = log._thread.native_id
        assert tid is not None
        deadline = time.monotonic() + 5
        while os.sched_getscheduler(tid) != os.SCHED_IDLE and time.monotonic() < deadline:
            time.sleep(0.01)
        assert os.sched_getscheduler(tid) == os.SCHED_IDLE
        assert os.sched_getscheduler(0) == os.SCHED_OTHER, "only the writer thread"
    finally:
        log.close()


def test_query_log_retention_deletes_old_rows(tmp_path: Path) -> None:
    log = QueryLog(tmp_path / "q.db", retention_days=1, interval=3600)
    try:
        now = time.time()
        log.log(
            LogEntry(now - 3 * 86_400, "c", "old.example", 1, "allowed", None, None, "u", 1.0, 0)
        )
        log.log(LogEntry(now, "c", "new.example", 1, "allowed", None, None, "u", 1.0, 0))
        log.flush()
        assert [e.qname for e in log.recent(10)] == ["new.example"]
    finally:
        log.close()


def test_metrics_render_prometheus_text() -> None:
    m = Metrics()
    m.answered("blocked", 1)
    m.answered("blocked", 28)
    m.answered("cached", 1)
    for ms in (0.3, 4.0, 4.5, 3000.0):
        m.upstream_latency(ms)
    text = m.render(
        cache={"hits": 5},
        upstreams=[{"address": "127.0.0.1:5399", "protocol": "udp", "healthy": True}],
        extra={"blocklist_entries": 1000},
        querylog={"written": 7, "dropped": 2},
    )
    assert 'edgeguard_dns_answers_total{verdict="blocked"} 2' in text
    assert 'edgeguard_dns_queries_by_type_total{qtype="28"} 1' in text
    assert 'edgeguard_dns_upstream_latency_ms_bucket{le="0.5"} 1' in text
    assert 'edgeguard_dns_upstream_latency_ms_bucket{le="5"} 3' in text
    assert 'edgeguard_dns_upstream_latency_ms_bucket{le="+Inf"} 4' in text
    assert "edgeguard_dns_cache_hits_total 5" in text
    assert 'edgeguard_dns_upstream_healthy{upstream="127.0.0.1:5399",protocol="udp"} 1' in text
    assert "edgeguard_dns_blocklist_entries 1000" in text
    assert 'edgeguard_dns_querylog_entries_total{outcome="dropped"} 2' in text
    assert m.total == 3


def test_rate_limiter_allows_bursts_then_the_rate() -> None:
    rl = ClientRateLimiter(rate=10, burst=5)
    t = 100.0
    assert [rl.allow("a", t) for _ in range(6)] == [True] * 5 + [False]
    assert rl.allow("b", t)  # per client
    assert not rl.allow("a", t + 0.05)  # half a token
    assert rl.allow("a", t + 0.15)  # refilled at 10/s
    assert rl.limited == 2


def test_rate_limiter_memory_is_bounded() -> None:
    rl = ClientRateLimiter(rate=1, burst=2, max_clients=100)
    for i in range(1000):
        assert rl.allow(f"c{i}", float(i))
    assert len(rl._buckets) <= 100
    with pytest.raises(ValueError, match="rate must be"):
        ClientRateLimiter(rate=0, burst=1)


def test_query_log_is_safe_to_use_from_several_threads(tmp_path: Path) -> None:
    log = QueryLog(tmp_path / "q.db", interval=0.01)
    try:
        threads = [
            threading.Thread(
                target=lambda k=k: [log.log(_entry(k * 1000 + i)) for i in range(1000)]
            )
            for k in range(4)
        ]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        log.flush()
        time.sleep(0.05)
        log.flush()
        assert log.written == 4000
    finally:
        log.close()

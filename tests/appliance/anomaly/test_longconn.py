"""Long connections: tracked while running, reported once ended, dropped when idle."""

from __future__ import annotations

from appliance.anomaly.longconn import LongConnections
from appliance.anomaly.records import FlowRecord
from tests.appliance.anomaly.traffic import HOUR, MB, T0, host


def report(i: int, out: int, back: int = 0, state: str = "open") -> FlowRecord:
    return FlowRecord(
        T0, T0 + (i + 1) * 300, 6, host(5), 50000, "198.51.100.7", 22, out, back, 9, 9, state
    )  # type: ignore[arg-type]


def tracker() -> LongConnections:
    return LongConnections(min_age=HOUR, min_bytes=10 * MB, upload_ratio=2.0, steady_share=0.5)


def test_reported_after_an_hour_of_steady_upload_and_graded_by_age_and_volume() -> None:
    longs = tracker()
    for i in range(11):
        longs.add(report(i, 2 * MB), "peer")
    assert longs.evaluate(T0 + 11 * 300) == []  # 55 minutes: not yet
    longs.add(report(11, 2 * MB), "peer")
    (first,) = longs.evaluate(T0 + 12 * 300)
    for i in range(12, 48):
        longs.add(report(i, 2 * MB), "peer")
    (later,) = longs.evaluate(T0 + 48 * 300)
    assert first.kind == "long-conn" and first.peer == "peer"
    assert 0.5 <= first.score < later.score


def test_bursty_or_download_heavy_flows_are_not_reported() -> None:
    bursty, download = tracker(), tracker()
    for i in range(24):
        bursty.add(report(i, 30 * MB if i == 0 else 0), "peer")
        download.add(report(i, 2 * MB, back=5 * MB), "peer")
    assert bursty.evaluate(T0 + 2 * HOUR) == []
    assert download.evaluate(T0 + 2 * HOUR) == []


def test_ended_flows_are_reported_once_and_idle_ones_dropped() -> None:
    longs = tracker()
    for i in range(23):
        longs.add(report(i, 2 * MB), "peer")
    longs.add(report(23, 2 * MB, state="established"), "peer")
    assert len(longs.evaluate(T0 + 2 * HOUR)) == 1
    assert longs.tracked() == 0
    longs.add(report(0, 1), "peer")
    assert longs.tracked() == 1
    longs.evaluate(T0 + 2 * HOUR)
    assert longs.tracked() == 0

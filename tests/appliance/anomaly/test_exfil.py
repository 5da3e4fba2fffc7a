"""Exfiltration against the host's own baseline, to new peers, and over long connections."""

from __future__ import annotations

import random

from appliance.anomaly.detector import Context
from appliance.anomaly.exfil import ExfilDetector
from appliance.anomaly.records import Finding, FlowRecord
from tests.appliance.anomaly.traffic import DAY, HOUR, MB, T0, flow, host, upload

DROP = "185.220.101.9"
CLOUD = "52.95.0.10"


def feed(detector: ExfilDetector, records: list[FlowRecord]) -> None:
    for rec in sorted(records, key=lambda r: r.end):
        detector.add_flow(rec)


def office_week(src: str, days: int, rng: random.Random, daily_upload: int = 0) -> list[FlowRecord]:
    """Ordinary days: a few MB an hour in office hours to known peers, an optional big upload."""
    records = []
    for day in range(days):
        base = T0 + day * DAY
        for hour in range(8, 18):
            for _ in range(10):
                t = base + hour * HOUR + rng.uniform(0, HOUR)
                records.append(flow(t, src, CLOUD, out=rng.randint(100_000, 600_000)))
        if daily_upload:
            records += upload(base + rng.randint(9, 16) * HOUR, src, CLOUD, daily_upload)
    return records


def only(findings: list[Finding], kind: str) -> list[Finding]:
    return [f for f in findings if f.kind == kind]


def test_200_mb_to_a_new_peer_from_a_fresh_host_is_exfil() -> None:
    detector = ExfilDetector(Context())
    feed(detector, upload(T0 + 10 * HOUR, host(10), DROP, 200 * MB))
    (finding,) = detector.evaluate(T0 + 10.5 * HOUR)
    assert (finding.kind, finding.peer) == ("exfil", DROP)
    assert finding.subscores["volume"] > 0.5
    assert finding.evidence["bytes"] == 200 * MB


def test_an_ordinary_upload_from_a_fresh_host_is_not() -> None:
    detector = ExfilDetector(Context())
    feed(detector, upload(T0 + 10 * HOUR, host(11), DROP, 40 * MB))
    assert detector.evaluate(T0 + 10.5 * HOUR) == []


def test_200_mb_to_a_new_peer_after_a_week_is_flagged_both_ways() -> None:
    detector = ExfilDetector(Context())
    feed(detector, office_week(host(12), 7, random.Random(1)))
    feed(detector, upload(T0 + 7 * DAY + 11 * HOUR, host(12), DROP, 200 * MB))
    (finding,) = detector.evaluate(T0 + 7 * DAY + 11.5 * HOUR)
    assert finding.peer == DROP
    assert set(finding.subscores) == {"volume", "new_peer"}
    assert finding.evidence["history_hours"] >= 60


def test_30_mb_is_flagged_only_when_the_peer_is_new_to_the_office() -> None:
    detector = ExfilDetector(Context())
    feed(detector, office_week(host(13), 3, random.Random(2)))
    later = T0 + 3 * DAY + 11 * HOUR
    feed(detector, upload(later, host(13), CLOUD, 30 * MB))
    assert detector.evaluate(later + 1800) == []
    feed(detector, upload(later + 2 * HOUR, host(13), DROP, 30 * MB))
    (finding,) = detector.evaluate(later + 2.5 * HOUR)
    assert (finding.peer, set(finding.subscores)) == (DROP, {"new_peer"})


def test_no_peer_is_new_before_the_warmup() -> None:
    detector = ExfilDetector(Context())
    feed(detector, upload(T0 + HOUR, host(14), DROP, 30 * MB))
    assert detector.evaluate(T0 + 1.5 * HOUR) == []


def test_a_normal_large_upload_for_a_host_with_a_big_baseline_is_not_exfil() -> None:
    detector = ExfilDetector(Context())
    feed(detector, office_week(host(15), 7, random.Random(3), daily_upload=400 * MB))
    day8 = T0 + 7 * DAY
    feed(detector, upload(day8 + 14 * HOUR, host(15), CLOUD, 400 * MB))
    assert detector.evaluate(day8 + 14.5 * HOUR) == []
    feed(detector, upload(day8 + 16 * HOUR, host(15), CLOUD, 3000 * MB, seconds=3000))
    (finding,) = detector.evaluate(day8 + 16.9 * HOUR)
    assert finding.peer == CLOUD
    assert "volume" in finding.subscores


def test_a_video_call_sends_a_lot_but_receives_as_much() -> None:
    detector = ExfilDetector(Context())
    feed(detector, upload(T0 + 10 * HOUR, host(16), CLOUD, 600 * MB, seconds=3000, back_share=1.2))
    assert detector.evaluate(T0 + 11 * HOUR - 1) == []


def test_an_hour_is_judged_once_more_after_it_closes() -> None:
    detector = ExfilDetector(Context())
    feed(detector, upload(T0 + 10.9 * HOUR, host(17), DROP, 300 * MB, seconds=300))
    (finding,) = detector.evaluate(T0 + 11.2 * HOUR)  # the burst's hour is now the previous one
    assert finding.first == T0 + 10 * HOUR


def long_flow(src: str, dst: str, hours: float, out_per_report: int, back: int) -> list[FlowRecord]:
    start = T0 + 9 * HOUR
    reports = int(hours * 12)
    return [
        FlowRecord(
            start,
            start + (i + 1) * 300,
            6,
            src,
            50000,
            dst,
            443,
            out_per_report,
            back,
            10,
            10,
            "open" if i < reports - 1 else "established",
        )
        for i in range(reports)
    ]


def test_a_steady_two_hour_upload_stream_is_a_long_connection() -> None:
    detector = ExfilDetector(Context())
    feed(detector, long_flow(host(18), DROP, 2.0, 2 * MB, 20_000)[:-1])
    (finding,) = only(detector.evaluate(T0 + 11 * HOUR), "long-conn")
    assert finding.peer == DROP
    assert finding.evidence["age_s"] == 23 * 300
    assert finding.evidence["bytes_out"] >= 40 * MB


def test_a_chat_websocket_open_all_day_is_not_a_long_connection() -> None:
    detector = ExfilDetector(Context())
    feed(detector, long_flow(host(19), CLOUD, 8.0, 3_000, 9_000))
    assert detector.evaluate(T0 + 17 * HOUR + 60) == []


def test_state_ages_out_short_windows_first_then_baselines() -> None:
    detector = ExfilDetector(Context())
    feed(detector, office_week(host(20), 1, random.Random(4)))
    feed(detector, long_flow(host(21), DROP, 2.0, 2 * MB, 20_000)[:-1])
    detector.evaluate(T0 + 11 * HOUR)
    assert detector.tracked() > 2
    detector.evaluate(T0 + 3 * DAY)
    assert detector.tracked() == 2  # one baseline per host: the host's own history
    detector.evaluate(T0 + 9 * DAY)
    assert detector.tracked() == 0


def test_peers_per_host_are_capped() -> None:
    detector = ExfilDetector(Context(), max_peers_per_host=50)
    for i in range(2000):
        detector.add_flow(flow(T0 + i, host(22), f"20.1.{i // 256}.{i % 256}", out=10_000))
    assert detector.tracked() <= 51


def test_a_slow_trickle_to_a_new_peer_adds_up() -> None:
    """36 MB in 1 MB pieces over four hours: no hour stands out, the new peer's sum does."""
    detector = ExfilDetector(Context())
    feed(detector, office_week(host(23), 1, random.Random(5)))
    t = T0 + DAY + 9 * HOUR
    feed(
        detector,
        [flow(t + i * 400, host(23), DROP, 21, MB, 5000, sport=20000 + i) for i in range(36)],
    )
    (finding,) = detector.evaluate(t + 4 * HOUR)
    assert (finding.peer, set(finding.subscores)) == (DROP, {"new_peer"})
    assert finding.evidence["bytes"] == 36 * MB


def test_a_nightly_multi_gigabyte_backup_does_not_hide_a_small_exfil() -> None:
    """The typical hour is a geometric mean: one huge hour a day does not inflate it."""
    detector = ExfilDetector(Context())
    records = office_week(host(24), 4, random.Random(6))
    for day in range(4):
        records += upload(T0 + day * DAY + HOUR, host(24), CLOUD, 3000 * MB, seconds=3000)
    feed(detector, records)
    later = T0 + 4 * DAY + 10 * HOUR
    feed(detector, upload(later, host(24), DROP, 60 * MB, seconds=30))
    (finding,) = detector.evaluate(later + 600)
    assert finding.peer == DROP
    # an arithmetic mean of these hours would be ~270 MB; the typical hour stays small
    assert finding.evidence["baseline"] < 30 * MB < 1000 * MB < finding.evidence["peak"]

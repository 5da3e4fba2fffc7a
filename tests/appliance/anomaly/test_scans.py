"""Scans, fast and slow, vertical and horizontal, and lateral movement; ordinary use is not one."""

from __future__ import annotations

import random

from appliance.anomaly.detector import Context
from appliance.anomaly.records import Finding, FlowRecord
from appliance.anomaly.scans import ScanDetector
from tests.appliance.anomaly.traffic import DAY, HOUR, T0, browser, flow, host


def run(records: list[FlowRecord], now: float, **params: float) -> list[Finding]:
    detector = ScanDetector(Context(), **params)  # type: ignore[arg-type]
    for rec in records:
        detector.add_flow(rec)
    return detector.evaluate(now)


def closed(t: float, src: str, dst: str, port: int) -> FlowRecord:
    return flow(t, src, dst, port, 60, 40, state="rejected", duration=0.01)


def test_fast_vertical_scan_of_one_host() -> None:
    records = [
        closed(T0 + i * 0.01, host(10), host(50), port) for i, port in enumerate(range(1, 1001))
    ]
    (finding,) = run(records, T0 + 60)
    assert (finding.kind, finding.peer) == ("scan", host(50))
    assert finding.score == 1.0
    assert finding.evidence["speed"] == "fast"
    assert finding.evidence["failed"] == 1000
    assert finding.subscores["failed_share"] == 1.0


def test_slow_vertical_scan_over_six_hours_is_found_and_called_slow() -> None:
    rng = random.Random(1)
    ports = rng.sample(range(1, 10000), 40)
    step = 6 * HOUR / len(ports)
    records = [closed(T0 + i * step, host(11), host(51), p) for i, p in enumerate(ports)]
    (finding,) = run(records, T0 + 6 * HOUR)
    assert finding.peer == host(51)
    assert finding.evidence["speed"] == "slow"
    assert 0.5 <= finding.score < 1.0


def test_horizontal_scan_of_the_lan_on_one_port() -> None:
    records = [
        flow(T0 + i, host(12), host(100 + i), 8080, 60, 0, state="unanswered") for i in range(40)
    ]
    (finding,) = run(records, T0 + 60)
    assert (finding.kind, finding.peer) == ("scan", "")
    assert finding.subscores["horizontal"] == finding.score
    assert finding.evidence["ports"] == [8080]


def test_horizontal_scan_of_the_internet_counts_failures() -> None:
    rng = random.Random(2)
    targets = [f"{rng.randint(11, 90)}.{rng.randint(0, 255)}.0.{i}" for i in range(30)]
    records = [
        flow(T0 + i, host(13), t, 23, 60, 0, state="unanswered") for i, t in enumerate(targets)
    ]
    (finding,) = run(records, T0 + 60)
    assert finding.evidence["ports"] == [23]
    answered = [r._replace(state="established") for r in records]
    assert run(answered, T0 + 60) == []


def test_lateral_movement_on_smb_is_its_own_kind_and_confirmed_when_answered() -> None:
    records = [
        flow(
            T0 + i,
            host(14),
            host(60 + i),
            445,
            2000,
            3000 if i < 4 else 0,
            state="established" if i < 4 else "rejected",
        )
        for i in range(8)
    ]
    (finding,) = run(records, T0 + 60)
    assert finding.kind == "lateral"
    assert finding.evidence["confirmed"] is True
    assert finding.evidence["answered"] == 4
    assert finding.score >= 0.7
    assert finding.evidence["ports"] == [445]


def test_lateral_finding_starts_when_the_sweep_did_not_at_the_daily_file_share() -> None:
    daily = [flow(T0 + i * 600, host(14), host(2), 445) for i in range(30)]
    sweep = [closed(T0 + 6 * HOUR + i, host(14), host(60 + i), 445) for i in range(6)]
    (finding,) = run(daily + sweep, T0 + 7 * HOUR)
    assert finding.first == T0 + 6 * HOUR + 1  # the fifth newest target of the sweep


def test_wmi_and_winrm_count_as_lateral_movement_not_as_a_scan() -> None:
    records = [closed(T0 + i, host(14), host(60 + i), (135, 5985)[i % 2]) for i in range(12)]
    (finding,) = run(records, T0 + 60)
    assert (finding.kind, finding.evidence["ports"]) == ("lateral", [135, 5985])


def test_lateral_movement_without_answers_is_graded_by_breadth() -> None:
    records = [closed(T0 + i, host(15), host(60 + i), 3389) for i in range(5)]
    (finding,) = run(records, T0 + 60)
    assert finding.kind == "lateral"
    assert finding.evidence["confirmed"] is False
    assert finding.score == 0.5
    assert run(records[:4], T0 + 60) == []


def test_a_workstation_using_a_few_servers_is_not_lateral_movement() -> None:
    servers = [(host(2), 445), (host(3), 445), (host(4), 22), (host(2), 139)]
    records = [flow(T0 + i * 60, host(16), s, p) for i in range(100) for s, p in servers]
    assert run(records, T0 + DAY) == []


def busy_browsing(src: str, seed: int) -> list[FlowRecord]:
    """Ten hours of browsing with 3 % of connections failing, each to a different address."""
    rng = random.Random(seed)
    records = browser(src, T0, T0 + 10 * HOUR, rng, sites=1500)
    failed = [
        flow(
            r.start,
            src,
            f"{rng.randint(11, 90)}.{rng.randint(0, 255)}.1.{i % 250}",
            443,
            60,
            0,
            state="unanswered",
        )
        for i, r in enumerate(records[::33])
    ]
    assert len(failed) > 40
    return sorted(records + failed, key=lambda r: r.end)


def test_a_busy_browser_with_failing_connections_is_not_a_scan() -> None:
    assert run(busy_browsing(host(17), 3), T0 + 10 * HOUR) == []


def test_a_scan_on_443_stands_out_of_a_busy_browser_s_failures() -> None:
    scan = [
        flow(
            T0 + 5 * HOUR + i,
            host(17),
            f"91.{i // 250}.7.{i % 250}",
            443,
            60,
            0,
            state="unanswered",
        )
        for i in range(300)
    ]
    (finding,) = run(sorted(busy_browsing(host(17), 4) + scan, key=lambda r: r.end), T0 + 10 * HOUR)
    assert (finding.kind, finding.evidence["ports"]) == ("scan", [443])


def test_state_ages_out_and_external_answered_contacts_are_not_kept() -> None:
    detector = ScanDetector(Context())
    for i in range(100):
        detector.add_flow(closed(T0 + i, host(18), host(52), i + 1))
        detector.add_flow(flow(T0 + i, host(18), f"20.0.0.{i}", 443))  # answered, external
    assert detector.tracked() == 100
    assert detector.evaluate(T0 + DAY - 200)
    assert detector.evaluate(T0 + 2 * DAY) == []
    assert detector.tracked() == 0


def test_a_flood_of_targets_is_capped_and_still_reported() -> None:
    detector = ScanDetector(Context(), max_contacts_per_host=1000)
    for port in range(1, 65536):
        detector.add_flow(closed(T0 + port * 0.001, host(19), host(53), port))
    assert detector.tracked() <= 1000
    (finding,) = detector.evaluate(T0 + 120)
    assert finding.peer == host(53)

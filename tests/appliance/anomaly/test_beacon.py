"""Beaconing: jittered C2 check-ins are found, and the named hard negatives are not."""

from __future__ import annotations

import random

import pytest

from appliance.anomaly.beacon import BeaconDetector, size_score, timing_score
from appliance.anomaly.detector import Context
from appliance.anomaly.records import Finding, FlowRecord
from tests.appliance.anomaly.traffic import (
    DAY,
    HOUR,
    T0,
    beacon,
    browser,
    chat,
    flow,
    host,
    ntp,
    resolve,
    update_check,
)

C2 = "198.51.100.7"


def run(records: list[FlowRecord], now: float, **params: float) -> list[Finding]:
    detector = BeaconDetector(Context(), **params)  # type: ignore[arg-type]
    for rec in records:
        detector.add_flow(rec)
    return detector.evaluate(now)


def test_timing_score_separates_jittered_beacons_from_a_poisson_process() -> None:
    rng = random.Random(7)
    jittered = [60 * (1 + rng.uniform(-0.8, 0.8)) for _ in range(500)]
    poisson = [rng.expovariate(1 / 60) for _ in range(500)]
    assert timing_score([60.0] * 500)[0] > 0.95
    assert timing_score(jittered)[0] > 0.55
    assert timing_score(poisson)[0] < 0.35


def test_size_score_is_one_for_constant_sizes_and_zero_for_scattered_ones() -> None:
    assert size_score([420] * 50) == 1.0
    assert size_score([100, 4000, 900, 20000, 350, 7000, 50, 12000]) == 0.0
    assert 0.5 < size_score([400, 410, 420, 430, 440]) < 1.0


def test_ten_second_beacon_with_80_percent_jitter_is_found() -> None:
    rng = random.Random(1)
    records = beacon(host(10), C2, T0, T0 + 6 * HOUR, 10, 0.8, rng)
    (finding,) = run(records, T0 + 6 * HOUR)
    assert (finding.host, finding.kind, finding.peer) == (host(10), "beacon", C2)
    assert set(finding.subscores) == {"timing", "size", "persistence"}
    assert finding.subscores["timing"] > 0.5
    assert finding.subscores["persistence"] == 1.0
    assert 8 <= finding.evidence["median_interval"] <= 12


def test_hourly_beacon_with_20_percent_jitter_over_a_day_is_found_by_timing_alone() -> None:
    rng = random.Random(2)
    records = [
        r._replace(bytes_out=rng.randint(300, 30000))  # sizes say nothing: timing must
        for r in beacon(host(11), C2, T0, T0 + DAY, HOUR, 0.2, rng)
    ]
    (finding,) = run(records, T0 + DAY)
    assert finding.subscores["timing"] > 0.6
    assert finding.subscores["size"] < 0.2
    assert finding.subscores["persistence"] > 0.8


def test_regular_sizes_with_random_timing_are_found_by_size() -> None:
    rng = random.Random(3)
    records, t = [], T0
    while t < T0 + 8 * HOUR:
        records.append(flow(t, host(12), C2, out=512))
        t += rng.expovariate(1 / 120)
    (finding,) = run(records, T0 + 8 * HOUR)
    assert finding.subscores["size"] == 1.0
    assert finding.subscores["timing"] < 0.4


def test_flows_to_several_addresses_of_one_name_aggregate_under_the_name() -> None:
    rng = random.Random(4)
    detector = BeaconDetector(Context())
    addresses = ["203.0.113.1", "203.0.113.2", "203.0.113.3"]
    t = T0
    while t < T0 + 5 * HOUR:
        address = rng.choice(addresses)
        detector.add_dns(resolve(t - 0.1, host(13), "cdn.example-c2.net", "edge.cdn.test", address))
        detector.add_flow(flow(t, host(13), address, out=333))
        t += 60 * (1 + rng.uniform(-0.3, 0.3))
    (finding,) = detector.evaluate(T0 + 5 * HOUR)
    assert finding.peer == "cdn.example-c2.net"
    assert finding.evidence["addresses"] == addresses
    assert detector.tracked() == 1


def test_ntp_to_a_pool_is_not_a_beacon_and_the_exemption_is_what_skips_it() -> None:
    rng = random.Random(5)
    pool = ["162.159.200.1", "162.159.200.123", "45.33.2.1", "129.6.15.28"]
    records = ntp(host(20), pool, T0, T0 + DAY, rng)
    assert run(records, T0 + DAY) == []
    assert {f.peer for f in run(records, T0 + DAY, skip_ntp=False)} == set(pool)


def test_update_check_every_six_hours_is_too_few_connections() -> None:
    records = update_check(host(21), "140.82.112.3", T0 - 2 * DAY, T0 + DAY)
    assert run(records, T0 + DAY) == []


def test_a_chat_app_with_many_irregular_flows_to_one_peer_is_not_a_beacon() -> None:
    rng = random.Random(6)
    records = chat(host(22), "52.112.0.10", T0, T0 + DAY, rng)
    assert len(records) > 300
    assert run(records, T0 + DAY) == []


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_a_busy_web_browser_is_not_a_beacon(seed: int) -> None:
    rng = random.Random(seed)
    records = browser(host(23), T0 + 8 * HOUR, T0 + 18 * HOUR, rng)
    assert len(records) > 1000
    assert run(records, T0 + 18 * HOUR) == []


def test_regularity_without_persistence_is_not_enough() -> None:
    """A minute of polling every 2 s, then silence for five hours: regular, not persistent."""
    records = [flow(T0 + 2 * i, host(24), C2, out=300) for i in range(40)]
    assert run(records, T0 + 5 * HOUR) == []
    assert run(records, T0 + 120) != []  # the same flows, judged right away, are a beacon


def test_failed_connections_are_not_check_ins() -> None:
    """A slow scan of one host probes as regularly as any beacon, but nothing answers."""
    records = [
        flow(T0 + 60 * i, host(30), C2, 1 + i, 60, 0, state=("unanswered", "rejected")[i % 2])
        for i in range(300)
    ]
    assert run(records, T0 + 5 * HOUR) == []
    assert run([r._replace(state="established") for r in records], T0 + 5 * HOUR) != []


def test_open_reports_inbound_and_external_to_external_flows_are_ignored() -> None:
    rng = random.Random(10)
    records = beacon(host(25), C2, T0, T0 + 4 * HOUR, 30, 0.1, rng)
    ignored = (
        [r._replace(state="open") for r in records]
        + [r._replace(src=C2, dst=host(25)) for r in records]
        + [r._replace(src="8.8.8.8") for r in records]
        + [r._replace(dst="239.255.255.250") for r in records]  # SSDP multicast
    )
    detector = BeaconDetector(Context())
    for rec in ignored:
        detector.add_flow(rec)
    assert detector.evaluate(T0 + 4 * HOUR) == []
    assert detector.tracked() == 0


def test_infrastructure_peers_are_never_beacons() -> None:
    rng = random.Random(11)
    detector = BeaconDetector(Context(infrastructure=frozenset({C2})))
    for rec in beacon(host(26), C2, T0, T0 + 4 * HOUR, 30, 0.1, rng):
        detector.add_flow(rec)
    assert detector.evaluate(T0 + 4 * HOUR) == []


def test_state_ages_out_after_the_horizon() -> None:
    rng = random.Random(12)
    detector = BeaconDetector(Context())
    for rec in beacon(host(27), C2, T0, T0 + DAY, 60, 0.5, rng):
        detector.add_flow(rec)
    assert detector.evaluate(T0 + DAY) and detector.tracked() == 1
    assert detector.evaluate(T0 + 3 * DAY) == []
    assert detector.tracked() == 0


def test_memory_is_capped_per_host_and_per_peer() -> None:
    detector = BeaconDetector(Context(), max_peers_per_host=100, max_connections_per_peer=500)
    for i in range(5000):
        detector.add_flow(flow(T0 + i, host(28), f"11.0.{i // 256}.{i % 256}"))
        detector.add_flow(flow(T0 + i, host(29), C2))
    assert detector.tracked() == 101
    assert detector.dropped == 4900
    series = detector._hosts[host(29)][C2]
    assert len(series.times) <= 500

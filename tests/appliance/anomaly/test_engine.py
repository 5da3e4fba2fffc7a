"""The scorer: filtering, modifiers, alert lifecycle, host scores, params, the offline driver,
and bounded state."""

from __future__ import annotations

import random
from collections.abc import Iterable

import pytest

from appliance.anomaly.beacon import BeaconDetector
from appliance.anomaly.detector import Context, Detector
from appliance.anomaly.engine import Scorer, ScoringConfig, default_detectors, severity_for
from appliance.anomaly.exfil import ExfilDetector
from appliance.anomaly.intel import IntelDetector, ThreatIntel
from appliance.anomaly.records import DnsRecord, Finding, FlowRecord
from appliance.anomaly.scans import ScanDetector
from appliance.errors import AnomalyError
from tests.appliance.anomaly.traffic import (
    DAY,
    HOUR,
    MB,
    T0,
    beacon,
    browser,
    flow,
    host,
    resolve,
    upload,
)

C2 = "198.51.100.7"


class Scripted:
    """A detector that records what it is fed and returns the findings a test sets."""

    kinds = ("beacon", "intel", "lateral")

    def __init__(self) -> None:
        self.flows: list[FlowRecord] = []
        self.dns: list[DnsRecord] = []
        self.findings: list[Finding] = []
        self.evaluated: list[float] = []

    def add_flow(self, rec: FlowRecord) -> None:
        self.flows.append(rec)

    def add_dns(self, rec: DnsRecord) -> None:
        self.dns.append(rec)

    def evaluate(self, now: float) -> Iterable[Finding]:
        self.evaluated.append(now)
        return list(self.findings)

    def tracked(self) -> int:
        return len(self.findings)


def finding(
    score: float, kind: str = "beacon", peer: str = C2, src: str = host(10), **ev: object
) -> Finding:
    return Finding(src, kind, peer, score, T0, T0 + 60, f"{kind} to {peer}", {"x": score}, dict(ev))


def scripted() -> tuple[Scorer, Scripted]:
    detector = Scripted()
    return Scorer(detectors=[detector]), detector


def flow_detectors(context: Context | None = None) -> list[Detector]:
    context = context or Context()
    return [BeaconDetector(context), ScanDetector(context), ExfilDetector(context)]


def test_severity_bands() -> None:
    assert [severity_for(s) for s in (0, 29, 30, 49, 50, 69, 70, 84, 85, 100)] == [
        "info",
        "info",
        "low",
        "low",
        "medium",
        "medium",
        "high",
        "high",
        "critical",
        "critical",
    ]


def test_only_office_traffic_reaches_the_detectors() -> None:
    scorer, detector = scripted()
    scorer.add_flow(flow(T0, "8.8.8.8", "1.1.1.1"))
    scorer.add_flow(flow(T0, host(1), "1.1.1.1"))
    scorer.add_flow(flow(T0, "1.1.1.1", host(1)))
    scorer.add_dns(DnsRecord(T0, "8.8.4.4", "x.example", 1, 0))
    scorer.add_dns(resolve(T0, host(1), "one.example", "1.1.1.1"))
    assert len(detector.flows) == 2 and len(detector.dns) == 1
    assert scorer.names.key("1.1.1.1") == "one.example"


def test_alerts_open_once_and_re_emit_only_when_they_rise() -> None:
    scorer, detector = scripted()
    detector.findings = [finding(0.55)]
    (alert,) = scorer.evaluate(T0 + 300)
    assert (alert.score, alert.severity) == (55, "medium")
    assert scorer.evaluate(T0 + 600) == []
    detector.findings = [finding(0.6)]
    assert scorer.evaluate(T0 + 900) == []  # +5: not worth a new message
    detector.findings = [finding(0.72)]
    (raised,) = scorer.evaluate(T0 + 1200)
    assert (raised.score, raised.severity) == (72, "high")
    assert [a.score for a in scorer.alerts()] == [72]


def test_alerts_come_back_after_a_quiet_gap_and_close_after_the_ttl() -> None:
    scorer, detector = scripted()
    detector.findings = [finding(0.55)]
    assert scorer.evaluate(T0) != []
    detector.findings = []
    assert scorer.evaluate(T0 + 7 * HOUR) == []
    assert len(scorer.alerts()) == 1
    detector.findings = [finding(0.55)]
    assert len(scorer.evaluate(T0 + 7 * HOUR + 300)) == 1  # back after > 6 h of silence
    detector.findings = []
    scorer.evaluate(T0 + 2 * DAY)
    assert scorer.alerts() == [] and scorer.host_scores() == {}


def test_emitted_alerts_are_snapshots() -> None:
    scorer, detector = scripted()
    detector.findings = [finding(0.55)]
    (alert,) = scorer.evaluate(T0)
    detector.findings = [finding(0.9)]
    scorer.evaluate(T0 + 300)
    assert alert.score == 55


def test_intel_and_confirmed_lateral_start_high_and_hosts_outside_the_office_are_dropped() -> None:
    scorer, detector = scripted()
    detector.findings = [
        finding(0.3, "intel", "evil.example"),
        finding(0.5, "lateral", "", confirmed=True),
        finding(0.5, "lateral", "", host(11), confirmed=False),
        finding(0.9, "beacon", C2, "8.8.8.8"),
    ]
    got = {(a.host, a.kind): (a.score, a.severity) for a in scorer.evaluate(T0)}
    assert got == {
        (host(10), "intel"): (70, "high"),
        (host(10), "lateral"): (70, "high"),
        (host(11), "lateral"): (50, "medium"),
    }


def test_host_score_combines_open_alerts_and_fades_with_their_age() -> None:
    scorer, detector = scripted()
    detector.findings = [finding(0.5), finding(0.5, "intel", "evil.example")]
    scorer.evaluate(T0 + 60)
    assert scorer.host_scores() == {host(10): 85}  # 1 - 0.5 * 0.3
    scorer.evaluate(T0 + 60 + 6 * HOUR)
    assert scorer.host_scores() == {host(10): round(100 * (1 - (1 - 0.25) * (1 - 0.35)))}  # halved


def test_modifiers_lower_a_peer_the_whole_office_uses_and_raise_a_rare_one() -> None:
    scorer, detector = scripted()
    scorer.add_flow(flow(T0, host(200), "9.9.9.9"))  # watching begins
    later = T0 + 2 * HOUR  # past the first hour: these peers are not "there before us"
    for i in range(10):
        scorer.add_flow(flow(later, host(100 + i), "52.0.0.1"))
    scorer.add_flow(flow(later, host(10), C2))
    detector.findings = [finding(0.6, peer="52.0.0.1"), finding(0.6, peer=C2)]
    got = {a.peer: a for a in scorer.evaluate(later + 60)}
    assert got["52.0.0.1"].score == 10 and got["52.0.0.1"].modifiers == {"rarity": -0.5}
    assert got[C2].score == 70 and got[C2].modifiers == {"rarity": 0.1}
    assert got[C2].severity == "high" and got["52.0.0.1"].severity == "info"


def test_params_override_defaults_by_name_and_mistakes_are_named() -> None:
    context = Context()
    detectors = default_detectors(
        context, {"beacon": {"threshold": 0.9}, "lateral": {"lateral_hosts": 9}}
    )
    assert [type(d).__name__ for d in detectors][:4] == [
        "BeaconDetector",
        "ScanDetector",
        "ExfilDetector",
        "IntelDetector",
    ]
    assert {k for d in detectors for k in d.kinds} >= {"dns-tunnel", "dga", "long-conn", "scan"}
    beacon_detector, scan_detector = detectors[0], detectors[1]
    assert isinstance(beacon_detector, BeaconDetector) and beacon_detector.threshold == 0.9
    assert isinstance(scan_detector, ScanDetector) and scan_detector.lateral_hosts == 9
    with pytest.raises(AnomalyError, match="unknown detector kind 'beacons'"):
        default_detectors(context, {"beacons": {}})
    with pytest.raises(
        AnomalyError, match=r"params\.beacon\.treshold: unknown parameter; .*threshold"
    ):
        default_detectors(context, {"beacon": {"treshold": 0.5}})
    with pytest.raises(AnomalyError, match=r"params\.beacon\.skip_ntp: 1 is not true or false"):
        default_detectors(context, {"beacon": {"skip_ntp": 1}})
    with pytest.raises(AnomalyError, match=r"params\.scan\.max_contacts_per_host: 1\.5 is not"):
        default_detectors(context, {"scan": {"max_contacts_per_host": 1.5}})
    with pytest.raises(AnomalyError, match=r"params\.beacon\.names: unknown"):
        default_detectors(context, {"beacon": {"names": 1}})
    with pytest.raises(AnomalyError, match="params apply to the default detectors"):
        Scorer(ScoringConfig(params={"beacon": {"threshold": 0.9}}), detectors=[Scripted()])


def test_default_scorer_shares_names_history_and_intel_with_its_detectors() -> None:
    intel = ThreatIntel()
    intel.add_lines(["198.51.100.0/24"])
    scorer = Scorer(ScoringConfig(intel=intel))
    beacon_detector = next(d for d in scorer.detectors if isinstance(d, BeaconDetector))
    intel_detector = next(d for d in scorer.detectors if isinstance(d, IntelDetector))
    assert beacon_detector._names is scorer.names
    scorer.add_flow(flow(T0, host(10), C2))
    (alert,) = scorer.evaluate(T0 + 60)
    assert (alert.kind, alert.score, intel_detector.tracked()) == ("intel", 80, 1)
    assert alert.modifiers == {"first_seen": -0.1}  # in use since watching began


def test_run_evaluates_every_interval_of_event_time_and_at_the_end() -> None:
    scorer, detector = scripted()
    records = [flow(T0 + 10 + 100 * i, host(10), C2) for i in range(10)]  # T0+10 .. T0+910
    detector.findings = [finding(0.55)]
    out = list(scorer.run(records, every=300))
    assert detector.evaluated == [T0 + 300, T0 + 600, T0 + 900, T0 + 910]
    assert [t for t, _ in out] == [T0 + 300]


def test_run_finds_a_beacon_among_busy_traffic_and_alerts_once() -> None:
    rng = random.Random(1)
    records: list[FlowRecord] = beacon(host(10), C2, T0, T0 + 8 * HOUR, 60, 0.5, rng)
    for n in range(11, 16):
        records += browser(host(n), T0, T0 + 8 * HOUR, rng)
    scorer = Scorer(detectors=flow_detectors())
    out = list(scorer.run(sorted(records, key=lambda r: r.end)))
    assert {(a.host, a.kind, a.peer) for _, a in out} == {(host(10), "beacon", C2)}
    assert len(out) <= 3  # opened, then at most a couple of rises
    assert scorer.host_scores().keys() == {host(10)}


def test_state_is_gone_two_days_after_a_day_of_traffic_and_floods_are_capped() -> None:
    rng = random.Random(2)
    records: list[FlowRecord] = beacon(host(10), C2, T0, T0 + DAY, 60, 0.5, rng)
    records += upload(T0 + 10 * HOUR, host(11), "185.220.101.9", 300 * MB)
    records += [flow(T0 + i, host(12), host(50), i + 1, state="rejected") for i in range(200)]
    for n in range(13, 18):
        records += browser(host(n), T0, T0 + DAY, rng, sites=300)
    scorer = Scorer(detectors=flow_detectors())
    alerts = list(scorer.run(sorted(records, key=lambda r: r.end), every=900))
    assert {a.kind for _, a in alerts} == {"beacon", "exfil", "scan"}
    scorer.evaluate(T0 + 3 * DAY)
    tracked = scorer.tracked()
    assert tracked["BeaconDetector"] == tracked["ScanDetector"] == tracked["alerts"] == 0
    assert tracked["ExfilDetector"] == 7  # one baseline per uploading host, kept for a week
    scorer.evaluate(T0 + 9 * DAY)
    assert scorer.tracked()["ExfilDetector"] == 0


def test_a_flood_of_distinct_peers_is_capped() -> None:
    context = Context()
    flood = Scorer(
        detectors=[
            BeaconDetector(context, max_peers_per_host=200),
            ScanDetector(context, max_contacts_per_host=500),
            ExfilDetector(context, max_peers_per_host=300),
        ]
    )
    for i in range(20_000):
        dst = f"20.{i // 65536}.{i // 256 % 256}.{i % 256}"
        flood.add_flow(
            flow(T0 + i * 0.01, host(20), dst, 80, state=("established", "unanswered")[i % 2])
        )
    flood.evaluate(T0 + 300)
    sizes = flood.tracked()
    assert sizes["BeaconDetector"] == 200
    assert sizes["ScanDetector"] <= 500
    assert sizes["ExfilDetector"] <= 1 + 300
    assert sizes["history"] == 20_000 + 1  # bounded by its own cap (100,000 peers)


def test_the_same_host_doing_it_again_hours_later_is_a_new_emission() -> None:
    scorer, detector = scripted()
    detector.findings = [finding(0.9, "lateral", "")]
    assert len(scorer.evaluate(T0 + 300)) == 1
    again = Finding(host(10), "lateral", "", 0.8, T0 + 3 * HOUR, T0 + 3 * HOUR + 60, "again")
    detector.findings = [again]
    (alert,) = scorer.evaluate(T0 + 3 * HOUR + 300)  # lower score, but separate evidence
    assert (alert.first, alert.score) == (T0 + 3 * HOUR, 80)
    near = Finding(host(10), "lateral", "", 0.8, T0 + 3 * HOUR + 600, T0 + 3 * HOUR + 900, "near")
    detector.findings = [near]
    assert scorer.evaluate(T0 + 3 * HOUR + 1200) == []


def test_evidence_resuming_after_a_silence_is_a_new_emission_even_with_an_old_first() -> None:
    """A detector keeping a day of state (lateral movement) reports the day's first contact;
    the same host starting again hours later must still reach the admin."""
    scorer, detector = scripted()
    detector.findings = [finding(0.9, kind="lateral", peer="")]
    (alert,) = scorer.evaluate(T0 + 300)
    assert alert.score == 90
    later = finding(0.9, kind="lateral", peer="")
    later.last = T0 + 60 + HOUR  # new evidence within the episode gap: same episode
    detector.findings = [later]
    assert scorer.evaluate(T0 + HOUR + 300) == []
    resumed = finding(0.9, kind="lateral", peer="")
    resumed.last = T0 + 5 * HOUR  # silent since T0 + 1 h, then evidence again
    detector.findings = [resumed]
    (again,) = scorer.evaluate(T0 + 5 * HOUR + 300)
    assert (again.first, again.last) == (T0 + 60 + HOUR, T0 + 5 * HOUR)

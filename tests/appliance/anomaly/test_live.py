"""The live loop, driven step by step with an injected clock and record lists.

Real store (SQLite in tmp), real scorer and actions; the inputs and the nft sets are the
doubles (the real ones have their own tests: conntrack and quarantine in namespaces).
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from appliance.anomaly.live import AnomalyService, Inputs, kind_params, scoring_config
from appliance.anomaly.quarantine import MemoryQuarantineSets
from appliance.anomaly.records import DnsRecord, FlowRecord
from appliance.anomaly.store import AnomalyStore
from appliance.errors import AnomalyError
from policies.loader import parse_policy
from policies.model import Policy
from tests.appliance.anomaly.traffic import HOUR, T0, beacon, flow

EXAMPLES = Path(__file__).parents[3] / "policies" / "examples"
C2 = "198.51.100.7"
INFECTED, QUIET = "192.0.2.10", "192.0.2.11"


def _policy(tmp_path: Path, anomaly: str) -> Policy:
    text = (EXAMPLES / "office-guest-iot.yaml").read_text()
    text = text[: text.index("anomaly:")] + anomaly
    if not (tmp_path / "feeds").exists():
        shutil.copytree(EXAMPLES / "feeds", tmp_path / "feeds")
    (tmp_path / "intel.txt").write_text(f"# test feed\n{C2}\n")
    return parse_policy(text, "office.yaml", base_dir=tmp_path).policy


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Feed:
    """Records handed to the service at each step (what conntrack / the log would give)."""

    def __init__(self) -> None:
        self.flows: list[FlowRecord] = []
        self.queries: list[DnsRecord] = []

    def take_flows(self) -> list[FlowRecord]:
        out, self.flows = self.flows, []
        return out

    def take_queries(self) -> list[DnsRecord]:
        out, self.queries = self.queries, []
        return out


def _service(
    tmp_path: Path, clock: Clock, feed: Feed
) -> tuple[AnomalyService, MemoryQuarantineSets]:
    sets = MemoryQuarantineSets()
    inputs = Inputs(flows=feed.take_flows, queries=feed.take_queries)
    service = AnomalyService(tmp_path / "state", sets, inputs, evaluate_every=300, clock=clock)
    return service, sets


def test_intel_hit_is_recorded_and_quarantined_and_a_lift_sticks(tmp_path: Path) -> None:
    policy = _policy(
        tmp_path,
        "anomaly:\n  feeds: [intel.txt]\n  quarantine: high\n  quarantine_min_score: 70\n",
    )
    clock, feed = Clock(T0), Feed()
    service, sets = _service(tmp_path, clock, feed)
    assert "started" in service.configure(policy)
    feed.flows = [flow(T0 + 5, INFECTED, C2), flow(T0 + 6, QUIET, "203.0.113.50")]
    clock.t = T0 + 10
    assert service.step() >= 1
    store = AnomalyStore.in_state_dir(tmp_path / "state")
    alerts = store.alerts()
    assert [(a.alert.host, a.alert.kind) for a in alerts] == [(INFECTED, "intel")]
    assert sets.sets["quarantine4"] == {INFECTED}
    # the admin lifts it: the next sync takes it out, the same open alert does not put it back
    service.quarantine.lift(INFECTED, by="admin")
    feed.flows = [flow(T0 + 400, INFECTED, C2)]
    clock.t = T0 + 700
    service.step()
    assert sets.sets["quarantine4"] == set()


def test_beacon_scored_live_and_quiet_host_not(tmp_path: Path) -> None:
    policy = _policy(tmp_path, "anomaly:\n  record: info\n")
    clock, feed = Clock(T0), Feed()
    service, sets = _service(tmp_path, clock, feed)
    service.configure(policy)
    rng = random.Random(7)
    records = beacon(INFECTED, C2, T0, T0 + 8 * HOUR, 300, 0.2, rng)
    records += [flow(T0 + i * 977.0, QUIET, f"203.0.113.{i % 40 + 1}") for i in range(30)]
    records.sort(key=lambda r: r.end)
    for t in range(int(T0), int(T0 + 8 * HOUR) + 1, 60):
        clock.t = float(t)
        feed.flows = [r for r in records if t - 60 < r.end <= t]
        service.step()
    alerts = AnomalyStore.in_state_dir(tmp_path / "state").alerts()
    kinds = {(a.alert.host, a.alert.kind) for a in alerts}
    assert (INFECTED, "beacon") in kinds
    assert not [a for a in alerts if a.alert.host == QUIET and a.alert.severity != "info"]
    assert sets.sets["quarantine4"] == set(), "quarantine is never by default"


def test_settings_change_keeps_state_unless_scoring_changes(tmp_path: Path) -> None:
    clock, feed = Clock(T0), Feed()
    service, _ = _service(tmp_path, clock, feed)
    service.configure(_policy(tmp_path, "anomaly:\n  notify: high\n"))
    scorer = service.scorer
    assert "state kept" in service.configure(_policy(tmp_path, "anomaly:\n  notify: medium\n"))
    assert service.scorer is scorer
    service.configure(_policy(tmp_path, "anomaly:\n  feeds: [intel.txt]\n"))
    assert service.scorer is not scorer
    assert "off" in service.configure(_policy(tmp_path, "anomaly:\n  enabled: false\n"))
    assert service.scorer is None


def test_detector_names_map_to_kinds() -> None:
    assert kind_params({"scans": {"x": 1}, "beacon": {"y": 2}}) == {
        "scan": {"x": 1},
        "beacon": {"y": 2},
    }
    with pytest.raises(AnomalyError, match="no such detector"):
        kind_params({"nonsense": {}})


def test_scoring_config_uses_the_inside_zones(tmp_path: Path) -> None:
    config = scoring_config(_policy(tmp_path, "anomaly:\n  record: low\n"))
    assert config.networks.is_lan(INFECTED)
    assert not config.networks.is_lan(C2)
    assert "192.0.2.1" in config.infrastructure

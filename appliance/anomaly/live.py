"""Live scoring on the box: conntrack + the query log -> scorer -> record/notify/quarantine.

It runs as its own process (``edgeguard anomaly serve``, started by ``edgeguard run``): the
scorer is CPU work, and in the resolver's process it would take the GIL from answers. It
follows the live policy version like the resolver does: a changed ``anomaly:`` section
rebuilds the scorer only when what it scores changed (networks, feeds, detector
parameters); a change of actions alone keeps the learned state.

Quarantine needs no message between processes: the ``quarantine`` table in
``<state>/anomalies.db`` is the truth (the CLI and the web UI write it), and this loop makes
the nft sets match it every ``SYNC_EVERY`` seconds and after every apply.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from appliance.anomaly.actions import ActionSettings, AlertActions
from appliance.anomaly.conntrack import ConntrackCollector
from appliance.anomaly.detector import Networks
from appliance.anomaly.engine import DETECTORS, ParamValue, Scorer, ScoringConfig
from appliance.anomaly.intel import ThreatIntel
from appliance.anomaly.notify import BackgroundNotifier, notifier_for
from appliance.anomaly.quarantine import QuarantineManager, QuarantineSetFeed
from appliance.anomaly.querytail import QueryLogTail
from appliance.anomaly.records import DnsRecord, FlowRecord
from appliance.anomaly.store import AnomalyStore
from appliance.errors import AnomalyError
from policies.anomaly_section import AnomalySettings
from policies.model import Policy

EVALUATE_EVERY = 60.0
SYNC_EVERY = 2.0


def kind_params(
    given: Mapping[str, Mapping[str, ParamValue]],
) -> dict[str, dict[str, ParamValue]]:
    """The policy names a detector by module (``scans``) or by kind (``scan``); the scorer
    takes kinds. A module name is given to the first kind it serves."""
    first_kind = {module: kind for kind, (module, _cls) in reversed(DETECTORS.items())}
    out: dict[str, dict[str, ParamValue]] = {}
    for name, params in given.items():
        kind = name if name in DETECTORS else first_kind.get(name)
        if kind is None:
            raise AnomalyError(f"anomaly.detectors.{name}: no such detector")
        out.setdefault(kind, {}).update(params)
    return out


def scoring_config(policy: Policy) -> ScoringConfig:
    settings = policy.anomaly or AnomalySettings()
    own = frozenset(x.address for z in policy.zones for x in z.addresses)
    return ScoringConfig(
        networks=Networks(settings.lan) if settings.lan else Networks(),
        intel=ThreatIntel.load(settings.feeds) if settings.feeds else None,
        infrastructure=own,
        params=kind_params(settings.detector_params()),
    )


def _scoring_key(policy: Policy) -> object:
    a = policy.anomaly or AnomalySettings()
    stamps = tuple((str(p), p.stat().st_mtime_ns if p.exists() else 0) for p in a.feeds)
    return (a.lan, stamps, a.detectors, tuple(x.address for z in policy.zones for x in z.addresses))


@dataclass
class Inputs:
    """Where records come from (real: conntrack + the query log; tests: lists)."""

    flows: Callable[[], list[FlowRecord]]
    queries: Callable[[], list[DnsRecord]]


class AnomalyService:
    """One step at a time, so tests drive it with an injected clock."""

    def __init__(
        self,
        state_dir: Path,
        feed: QuarantineSetFeed,
        inputs: Inputs,
        *,
        evaluate_every: float = EVALUATE_EVERY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = AnomalyStore.in_state_dir(state_dir)
        self.quarantine = QuarantineManager(self.store, clock)
        self.feed, self.inputs, self.clock = feed, inputs, clock
        self.evaluate_every = evaluate_every
        self.scorer: Scorer | None = None
        self.actions: AlertActions | None = None
        self.notifier: BackgroundNotifier | None = None
        self._key: object = None
        self._next_eval = 0.0
        self._next_sync = 0.0
        self._next_prune = 0.0

    def configure(self, policy: Policy | None) -> str:
        """Follow a (new) live policy; returns a line for the log."""
        if policy is None or policy.anomaly is None or not policy.anomaly.enabled:
            self.scorer = self.actions = None
            self._stop_notifier()
            return "anomaly scoring: off (no enabled anomaly: section)"
        key = _scoring_key(policy)
        kept = self.scorer is not None and key == self._key
        if not kept:
            self.scorer, self._key = Scorer(scoring_config(policy)), key
        a = policy.anomaly
        self._stop_notifier()
        self.notifier = notifier_for(a.webhook, a.syslog, a.syslog_address)
        settings = ActionSettings.from_policy(policy)
        self.actions = AlertActions(
            self.store, settings, self.notifier, self.quarantine, self.clock
        )
        return (
            f"anomaly scoring: {'settings changed, state kept' if kept else 'started'}; "
            f"record >= {a.record}, notify >= {a.notify}, quarantine {a.quarantine}"
        )

    def table_replaced(self) -> None:
        """An apply loaded a new table: its quarantine sets are empty until refilled."""
        self.quarantine.refill(self.feed)
        self._next_sync = self.clock() + SYNC_EVERY

    def step(self) -> int:
        """Read, score when due, act, keep the sets in sync; returns alerts acted on."""
        now = self.clock()
        acted = 0
        if self.scorer is not None and self.actions is not None:
            flows, queries = self.inputs.flows(), self.inputs.queries()
            for q in queries:
                self.scorer.add_dns(q)
            for f in flows:
                self.scorer.add_flow(f)
            if now >= self._next_eval:
                self._next_eval = now + self.evaluate_every
                alerts = self.scorer.evaluate(now)
                self.actions.handle(alerts, self.scorer.host_scores())
                acted = len(alerts)
        if now >= self._next_sync:
            self._next_sync = now + SYNC_EVERY
            self.quarantine.sync(self.feed)
        if now >= self._next_prune:
            self._next_prune = now + 3600
            self.store.prune(now)
        return acted

    def _stop_notifier(self) -> None:
        if self.notifier is not None:
            self.notifier.stop()
            self.notifier = None

    def close(self) -> None:
        self._stop_notifier()
        self.store.close()


def live_inputs(state_dir: Path, collector: ConntrackCollector) -> Inputs:
    tail = QueryLogTail(state_dir / "querylog.db")
    return Inputs(flows=collector.poll, queries=tail.read)

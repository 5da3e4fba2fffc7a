"""The scorer: records in, detectors' findings out as alerts, per-host scores kept.

Live (conntrack + query log) and offline (``run`` over a capture or flow file) take the same
path: ``add_flow`` / ``add_dns`` per record (dict updates only, >= 50,000 flows/s on one
core), ``evaluate(now)`` every few minutes of *event* time. On evaluation the findings get
the office-wide modifiers (``modifiers.peer_modifiers``), become 0-100 scores with a
severity, and update one open alert per (host, kind, peer): an alert is emitted when it opens,
when its score or severity rises, or when it comes back after a quiet gap (no findings for
``quiet_gap``, or evidence starting ``episode_gap`` after the alert's last); it closes after
``alert_ttl`` without evidence. A host's score combines its open alerts, fading with age.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import import_module

from appliance.anomaly.detector import Context, Detector, Networks
from appliance.anomaly.intel import ThreatIntel
from appliance.anomaly.modifiers import DEFAULT_RULES, ModifierRules, PeerHistory, peer_modifiers
from appliance.anomaly.params import ParamValue as ParamValue  # re-exported: live.py uses it
from appliance.anomaly.params import checked_params
from appliance.anomaly.peers import PeerNames, remote_check
from appliance.anomaly.records import SEVERITIES, Alert, DnsRecord, Finding, FlowRecord, Severity
from appliance.errors import AnomalyError

HOUR = 3600.0
DAY = 86400.0

# kind -> (module, class): kinds of one detector share its parameters
DETECTORS: dict[str, tuple[str, str]] = {
    "beacon": ("beacon", "BeaconDetector"),
    "scan": ("scans", "ScanDetector"),
    "lateral": ("scans", "ScanDetector"),
    "exfil": ("exfil", "ExfilDetector"),
    "long-conn": ("exfil", "ExfilDetector"),
    "intel": ("intel", "IntelDetector"),
    "dns-tunnel": ("dnstunnel", "DnsTunnelDetector"),
    "dga": ("dga", "DgaDetector"),
}
# kinds whose evidence alone is high severity: someone already judged the peer / the host moved
FLOOR_INTEL, FLOOR_CONFIRMED_LATERAL = 70, 70


@dataclass
class ScoringConfig:
    networks: Networks = field(default_factory=Networks)
    intel: ThreatIntel | None = None
    infrastructure: frozenset[str] = frozenset()
    params: Mapping[str, Mapping[str, ParamValue]] = field(default_factory=dict)
    alert_ttl: float = DAY  # an open alert without evidence for this long closes
    quiet_gap: float = 6 * HOUR  # evidence coming back after this long is news again
    episode_gap: float = 2 * HOUR  # evidence starting this long after the alert's last is too
    rise_step: int = 10  # a score rise that re-emits an open alert (severity rises always do)
    half_life: float = 6 * HOUR  # how fast an alert's weight in its host's score fades
    min_score: int = 0  # findings scoring below this (after modifiers) open no alert
    rules: ModifierRules = DEFAULT_RULES


def severity_for(score: int) -> Severity:
    for limit, severity in ((30, "info"), (50, "low"), (70, "medium"), (85, "high")):
        if score < limit:
            return severity  # type: ignore[return-value]
    return "critical"


def default_detectors(
    context: Context,
    params: Mapping[str, Mapping[str, ParamValue]] | None = None,
    *,
    intel: ThreatIntel | None = None,
    names: PeerNames | None = None,
    history: PeerHistory | None = None,
) -> list[Detector]:
    """All six detectors, ``params[kind]`` overriding their defaults by name.

    ``names`` and ``history`` are the scorer's own, shared so the detectors do not each keep
    a copy. The DNS detectors are imported here, not at module level, so the flow side works
    on its own.
    """
    params = params or {}
    unknown = sorted(set(params) - set(DETECTORS))
    if unknown:
        raise AnomalyError(
            f"params: unknown detector kind {', '.join(map(repr, unknown))}; "
            f"known kinds: {', '.join(DETECTORS)}"
        )
    shared = {"intel": intel, "names": names, "history": history}
    classes: dict[str, type] = {}
    given: dict[str, dict[str, ParamValue]] = {}
    for kind, (module, name) in DETECTORS.items():
        if module not in classes:
            classes[module] = getattr(import_module(f"appliance.anomaly.{module}"), name)
            given[module] = {}
        if kind in params:
            given[module].update(checked_params(kind, classes[module], params[kind]))
    detectors: list[Detector] = []
    for module, cls in classes.items():
        accepted = inspect.signature(cls).parameters
        extra = {k: v for k, v in shared.items() if k in accepted and v is not None}
        detectors.append(cls(context, **extra, **given[module]))
    return detectors


class _Open:
    """An open alert and what was last emitted of it."""

    __slots__ = ("alert", "emitted_score", "emitted_severity", "seen")

    def __init__(self, alert: Alert, now: float) -> None:
        self.alert = alert
        self.emitted_score = alert.score
        self.emitted_severity = SEVERITIES.index(alert.severity)
        self.seen = now


class Scorer:
    """Feeds every record to every detector; turns findings into alerts and host scores."""

    def __init__(
        self, config: ScoringConfig | None = None, detectors: Sequence[Detector] | None = None
    ) -> None:
        self.config = config = config or ScoringConfig()
        self.context = Context(networks=config.networks, infrastructure=config.infrastructure)
        self.names = PeerNames()
        self.history = PeerHistory()
        if detectors is None:
            detectors = default_detectors(
                self.context,
                config.params,
                intel=config.intel,
                names=self.names,
                history=self.history,
            )
        elif config.params:
            raise AnomalyError(
                "params apply to the default detectors; set them on explicit detectors directly"
            )
        self.detectors = list(detectors)
        self._flow_sinks = [d.add_flow for d in self.detectors]
        self._dns_sinks = [d.add_dns for d in self.detectors]
        self._is_lan = config.networks.is_lan
        self._is_remote = remote_check(config.networks)
        self._open: dict[tuple[str, str, str], _Open] = {}
        self._host_scores: dict[str, int] = {}
        self._next_sweep = float("-inf")

    def add_flow(self, rec: FlowRecord) -> None:
        src, dst = rec.src, rec.dst
        if self._is_lan(src):
            if self._is_remote(dst):
                self.history.observe(src, self.names.key(dst), rec.start)
        elif not self._is_lan(dst):
            return  # two external hosts: not the office's traffic
        for sink in self._flow_sinks:
            sink(rec)

    def add_dns(self, rec: DnsRecord) -> None:
        if not self._is_lan(rec.client):
            return
        self.names.add_dns(rec)
        for sink in self._dns_sinks:
            sink(rec)

    def evaluate(self, now: float) -> list[Alert]:
        """Alerts opened, raised or back after a quiet gap since the last call."""
        config = self.config
        active = self.history.active_hosts(now)
        emitted: list[Alert] = []
        for detector in self.detectors:
            for finding in detector.evaluate(now):
                if self._is_lan(finding.host):
                    alert = self._update(finding, now, active)
                    if alert is not None:
                        emitted.append(copy.deepcopy(alert))
        for key in [k for k, o in self._open.items() if o.seen < now - config.alert_ttl]:
            del self._open[key]
        if now >= self._next_sweep:  # a pass over every peer: hourly is often enough
            self.names.expire(now)
            self.history.expire(now)
            self._next_sweep = now + HOUR
        self._host_scores = self._combine(now)
        return emitted

    def alerts(self) -> list[Alert]:
        """Every open alert, highest score first."""
        open_alerts = sorted(self._open.values(), key=lambda o: -o.alert.score)
        return [copy.deepcopy(o.alert) for o in open_alerts]

    def host_scores(self) -> dict[str, int]:
        """0-100 per host with open alerts, as of the last ``evaluate``."""
        return dict(self._host_scores)

    def tracked(self) -> dict[str, int]:
        """State entries per part, for the memory bound (and its test)."""
        out = {type(d).__name__: d.tracked() for d in self.detectors}
        out.update(
            names=self.names.tracked(), history=self.history.tracked(), alerts=len(self._open)
        )
        return out

    def run(
        self, records: Iterable[FlowRecord | DnsRecord], every: float = 300.0
    ) -> Iterator[tuple[float, Alert]]:
        """The offline driver: evaluate each ``every`` seconds of event time, and at the end.

        The clock is the latest record start (or query) time seen: a long flow's end, reported
        in a flow file sorted by start, must not move the clock hours ahead.
        """
        clock: float | None = None
        due = 0.0
        for rec in records:
            if isinstance(rec, FlowRecord):
                t = rec.start
                self.add_flow(rec)
            else:
                t = rec.ts
                self.add_dns(rec)
            if clock is None:
                clock, due = t, (t // every + 1) * every
            elif t > clock:
                clock = t
                if t >= due:
                    now = (t // every) * every
                    due = now + every
                    for alert in self.evaluate(now):
                        yield now, alert
        if clock is not None:
            for alert in self.evaluate(clock):
                yield clock, alert

    def _update(self, finding: Finding, now: float, active: int) -> Alert | None:
        config = self.config
        mods = (
            peer_modifiers(self.history, finding.peer, now, active, config.rules)
            if finding.peer
            else {}
        )
        raw = min(1.0, max(0.0, finding.score + sum(mods.values())))
        score = round(100 * raw)
        if finding.kind == "intel":
            score = max(score, FLOOR_INTEL)
        elif finding.kind == "lateral" and finding.evidence.get("confirmed"):
            score = max(score, FLOOR_CONFIRMED_LATERAL)
        if score < config.min_score:
            return None
        severity = severity_for(score)
        key = (finding.host, finding.kind, finding.peer)
        current = self._open.get(key)
        if current is None:
            alert = Alert(
                host=finding.host,
                kind=finding.kind,
                peer=finding.peer,
                score=score,
                severity=severity,
                first=finding.first,
                last=finding.last,
                explanation=finding.explanation,
                subscores=dict(finding.subscores),
                modifiers=mods,
                evidence=dict(finding.evidence),
            )
            self._open[key] = _Open(alert, now)
            return alert
        alert = current.alert
        # news again: evidence after a long silence, or evidence that starts well after
        # everything the alert has seen (the same host doing it again hours later)
        # (a detector that keeps a day of state reports an old ``first``: then the sign is
        # its evidence resuming after a silence of ``episode_gap``)
        separate = finding.first - alert.last >= config.episode_gap
        resumed = not separate and finding.last - alert.last >= config.episode_gap
        quiet = separate or resumed or now - current.seen >= config.quiet_gap
        alert.score, alert.severity = score, severity
        if separate:
            alert.first, alert.last = finding.first, finding.last
        elif resumed:
            alert.first, alert.last = alert.last, finding.last
        else:
            alert.first = min(alert.first, finding.first)
            alert.last = max(alert.last, finding.last)
        alert.explanation, alert.modifiers = finding.explanation, mods
        alert.subscores, alert.evidence = dict(finding.subscores), dict(finding.evidence)
        current.seen = now
        level = SEVERITIES.index(severity)
        if (
            quiet
            or level > current.emitted_severity
            or (score >= current.emitted_score + config.rise_step)
        ):
            current.emitted_score, current.emitted_severity = score, level
            return alert
        return None

    def _combine(self, now: float) -> dict[str, int]:
        """100 * (1 - prod(1 - s_i * fade_i)) over a host's open alerts."""
        remaining: dict[str, float] = {}
        for current in self._open.values():
            alert = current.alert
            fade = 0.5 ** (max(0.0, now - alert.last) / self.config.half_life)
            share = remaining.get(alert.host, 1.0)
            remaining[alert.host] = share * (1 - alert.score / 100 * fade)
        return {host: min(100, round(100 * (1 - r))) for host, r in remaining.items() if r < 1}

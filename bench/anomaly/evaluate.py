"""Benchmark: anomaly scoring against the labelled synthetic office (issue #7).

For each seed, ``officegen.generate`` builds an office with injected attacks; the scorer runs
over its records (``Scorer.run(records, every=300)``) and its alerts are matched against the
incidents. Per attack type it reports incident recall, alert precision, PR-AUC and time to
detect; on the same offices without attacks, false alerts per host per day; and the scorer's
throughput. Tune on one seed (``--tune-seed``), report on others.

    .venv/bin/python -m bench.anomaly.evaluate --seeds 2 3 4 --days 3 --hosts 20 --tune-seed 1

Matching: an alert matches an incident when host and type agree (``exfil`` incidents accept
``exfil`` and ``long-conn`` alerts) and the alert's evidence window, as emitted, overlaps
[incident start, incident end + 1 h]. An "alert" is one (host, kind, peer) alert of the
scorer, however often it was re-emitted (rises, quiet gaps); the count of emissions is in
the JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from appliance.anomaly.records import SEVERITIES, Alert, DnsRecord, FlowRecord
from bench.anomaly.officegen import KINDS, Incident, Office, generate

DAY = 86400.0
GRACE = 3600.0
"""An alert this long after an incident's end still counts as detecting it."""
TYPE_OF_KIND = {"long-conn": "exfil"}


def incident_type(kind: str) -> str:
    """The incident type an alert kind can detect (``scan`` and ``lateral`` stay apart)."""
    return TYPE_OF_KIND.get(kind, kind)


class AlertSource(Protocol):
    """What the harness needs of a scorer: the offline driver."""

    def run(
        self, records: Iterable[FlowRecord | DnsRecord], every: float = 300.0
    ) -> Iterator[tuple[float, Alert]]: ...


@dataclass
class Emission:
    at: float  # evaluation time
    first: float
    last: float
    score: int
    level: int  # index into SEVERITIES


@dataclass
class Episode:
    """One alert of the scorer and every time it was emitted."""

    host: str
    kind: str
    peer: str
    emissions: list[Emission] = field(default_factory=list)
    matched: bool = False

    @property
    def first(self) -> float:
        return min(e.first for e in self.emissions)

    @property
    def last(self) -> float:
        return max(e.last for e in self.emissions)

    @property
    def score(self) -> int:
        return max(e.score for e in self.emissions)

    @property
    def level(self) -> int:
        return max(e.level for e in self.emissions)


def collect(emitted: Iterable[tuple[float, Alert]]) -> list[Episode]:
    """Group emissions into alerts: same (host, kind, peer) and a window that continues."""
    open_: dict[tuple[str, str, str], Episode] = {}
    episodes: list[Episode] = []
    for at, alert in emitted:
        key = (alert.host, alert.kind, alert.peer)
        emission = Emission(
            at, alert.first, alert.last, alert.score, SEVERITIES.index(alert.severity)
        )
        episode = open_.get(key)
        if episode is None or alert.first > episode.last:
            episode = open_[key] = Episode(*key)
            episodes.append(episode)
        episode.emissions.append(emission)
    return episodes


def overlaps(emission: Emission, incident: Incident) -> bool:
    return emission.first <= incident.end + GRACE and emission.last >= incident.start


@dataclass
class Outcome:
    """What happened to one incident: when (if at all) it was detected, at any / notify level."""

    incident: Incident
    detected_at: float | None = None
    notified_at: float | None = None


def match(incidents: Sequence[Incident], episodes: Sequence[Episode], notify: int) -> list[Outcome]:
    """Mark matched alerts and time each incident's first detection (evaluation time)."""
    by_host: dict[str, list[Episode]] = {}
    for episode in episodes:
        by_host.setdefault(episode.host, []).append(episode)
    outcomes = []
    for incident in incidents:
        outcome = Outcome(incident)
        for episode in by_host.get(incident.host, []):
            if incident_type(episode.kind) != incident.kind:
                continue
            for emission in episode.emissions:
                if not overlaps(emission, incident):
                    continue
                episode.matched = True
                at = max(emission.at, incident.start)
                if outcome.detected_at is None or at < outcome.detected_at:
                    outcome.detected_at = at
                if emission.level >= notify and (
                    outcome.notified_at is None or at < outcome.notified_at
                ):
                    outcome.notified_at = at
        outcomes.append(outcome)
    return outcomes


def average_precision(ranked: Sequence[tuple[float, bool]], positives: int) -> float:
    """Area under the precision-recall curve as average precision (ties form one threshold).

    ``positives`` may exceed the positives in ``ranked``: missed incidents are positives the
    ranking never retrieves, so recall (and the area) stays below 1.
    """
    if positives <= 0:
        return float("nan")
    ordered = sorted(ranked, key=lambda item: -item[0])
    area, hits, seen, i = 0.0, 0, 0, 0
    while i < len(ordered):
        j = i
        gained = 0
        while j < len(ordered) and ordered[j][0] == ordered[i][0]:
            gained += ordered[j][1]
            j += 1
        seen, hits = j, hits + gained
        area += gained / positives * (hits / seen)
        i = j
    return area


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass
class RunResult:
    """One scorer run over one generated office."""

    seed: int
    attacks: bool
    hosts: int
    days: float
    records: int
    generate_seconds: float
    score_seconds: float
    episodes: list[Episode]
    outcomes: list[Outcome]
    emissions: int
    start: float = 0.0

    @property
    def records_per_second(self) -> float:
        return self.records / self.score_seconds if self.score_seconds else float("nan")


def run_office(
    office: Office,
    scorer: AlertSource,
    every: float = 300.0,
    notify: str = "medium",
    stream: bool = False,
) -> RunResult:
    """Score one office. Records are generated first (timed apart) unless ``stream``."""
    began = time.perf_counter()
    counted = [0]

    def counting(source: Iterable[FlowRecord | DnsRecord]) -> Iterator[FlowRecord | DnsRecord]:
        for record in source:
            counted[0] += 1
            yield record

    records: Iterable[FlowRecord | DnsRecord]
    if stream:  # memory stays flat; the throughput then includes generating
        records, generated = counting(office.records()), 0.0
    else:
        records = list(office.records())
        counted[0], generated = len(records), time.perf_counter() - began
    began = time.perf_counter()
    emitted = list(scorer.run(records, every=every))
    scored = time.perf_counter() - began
    episodes = collect(emitted)
    outcomes = match(office.incidents, episodes, SEVERITIES.index(notify))
    return RunResult(
        office.seed,
        bool(office.incidents),
        len(office.hosts),
        office.days,
        counted[0],
        generated,
        scored,
        episodes,
        outcomes,
        len(emitted),
        office.start,
    )


def type_metrics(runs: Sequence[RunResult], kind: str, notify: int) -> dict[str, Any]:
    """Recall, precision, PR-AUC and time to detect for one incident type over ``runs``."""
    outcomes = [o for r in runs for o in r.outcomes if o.incident.kind == kind]
    episodes = [e for r in runs for e in r.episodes if incident_type(e.kind) == kind]
    loud = [e for e in episodes if e.level >= notify]
    detected = [o for o in outcomes if o.detected_at is not None]
    notified = [o for o in outcomes if o.notified_at is not None]
    delays = [o.detected_at - o.incident.start for o in detected if o.detected_at is not None]
    missed = len(outcomes) - len(detected)
    matched = sum(e.matched for e in episodes)

    def ratio(part: int, whole: int) -> float:
        return part / whole if whole else float("nan")

    return {
        "type": kind,
        "incidents": len(outcomes),
        "detected": len(detected),
        "recall": ratio(len(detected), len(outcomes)),
        "notified": len(notified),
        "recall_notify": ratio(len(notified), len(outcomes)),
        "alerts": len(episodes),
        "alerts_notify": len(loud),
        "matched": matched,
        "precision": ratio(matched, len(episodes)),
        "precision_notify": ratio(sum(e.matched for e in loud), len(loud)),
        "pr_auc": average_precision([(e.score, e.matched) for e in episodes], matched + missed),
        "ttd_median": statistics.median(delays) if delays else float("nan"),
        "ttd_p90": percentile(delays, 0.9),
        "missed": [asdict(o.incident) for o in outcomes if o.detected_at is None],
    }


def false_alert_metrics(run: RunResult, notify: int) -> dict[str, Any]:
    """Alerts on an attack-free run, per host per day, all and at the notify level.

    Also counted apart: alerts first emitted after the first day, when the scorer has seen
    the office's habits once (the first day of a new install is its learning day).
    """
    host_days = run.hosts * run.days
    loud = [e for e in run.episodes if e.level >= notify]
    settled = [e for e in loud if e.emissions[0].at >= run.start + DAY]
    settled_days = run.hosts * max(run.days - 1.0, 0.0)
    by_kind: dict[str, int] = {}
    for episode in loud:
        by_kind[episode.kind] = by_kind.get(episode.kind, 0) + 1
    return {
        "seed": run.seed,
        "host_days": host_days,
        "alerts": len(run.episodes),
        "per_host_day": len(run.episodes) / host_days,
        "alerts_notify": len(loud),
        "per_host_day_notify": len(loud) / host_days,
        "after_day1_notify": len(settled),
        "after_day1_per_host_day_notify": len(settled) / settled_days if settled_days else math.nan,
        "notify_by_kind": dict(sorted(by_kind.items())),
        "emissions": run.emissions,
        "alerts_list": [
            {
                "host": e.host,
                "kind": e.kind,
                "peer": e.peer,
                "score": e.score,
                "severity": SEVERITIES[e.level],
                "first": e.first,
                "last": e.last,
            }
            for e in run.episodes
        ],
    }


def default_scorer(office: Office, params: dict[str, dict[str, Any]] | None = None) -> AlertSource:
    """The real scorer, configured for the office: its LAN, its threat feed, its appliance."""
    from appliance.anomaly.detector import Networks
    from appliance.anomaly.engine import Scorer, ScoringConfig
    from appliance.anomaly.intel import ThreatIntel

    intel = ThreatIntel()
    intel.add_lines(office.feed_lines, f"officegen seed {office.seed}")
    config = ScoringConfig(
        networks=Networks(office.lan_cidrs),
        intel=intel,
        infrastructure=office.infrastructure,
        params=params or {},
    )
    return Scorer(config)


ScorerFactory = Callable[[Office], AlertSource]


def evaluate_seeds(
    seeds: Sequence[int],
    days: float,
    hosts: int,
    make_scorer: ScorerFactory,
    attacks: bool = True,
    notify: str = "medium",
    stream: bool = False,
    log: Callable[[str], None] | None = None,
) -> list[RunResult]:
    runs = []
    for seed in seeds:
        office = generate(seed, hosts=hosts, days=days, attacks=attacks)
        run = run_office(office, make_scorer(office), notify=notify, stream=stream)
        if log:
            log(
                f"seed {seed} ({'attacks' if attacks else 'attack-free'}): {run.records:,} records"
                f" generated in {run.generate_seconds:.1f} s, scored in {run.score_seconds:.1f} s"
                f" ({run.records_per_second:,.0f} records/s), {len(run.episodes)} alerts,"
                f" {len(office.incidents)} incidents"
            )
        runs.append(run)
    return runs


def _duration(seconds: float) -> str:
    if seconds != seconds:  # NaN
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _number(value: float, digits: int = 2) -> str:
    return "-" if value != value else f"{value:.{digits}f}"


def _fraction(value: float, part: int, whole: int) -> str:
    return "-" if not whole else f"{value:.2f} ({part}/{whole})"


def summarise(runs: Sequence[RunResult], clean: Sequence[RunResult], notify: str) -> dict[str, Any]:
    level = SEVERITIES.index(notify)
    every_run = [*runs, *clean]
    records = sum(r.records for r in every_run)
    seconds = sum(r.score_seconds for r in every_run)
    return {
        "seeds": [r.seed for r in runs],
        "clean_seeds": [r.seed for r in clean],
        "notify": notify,
        "records": records,
        "records_per_second": records / seconds if seconds else float("nan"),
        "types": [type_metrics(runs, kind, level) for kind in KINDS],
        "false_alerts": [false_alert_metrics(r, level) for r in clean],
    }


def markdown(summary: dict[str, Any], title: str, hosts: int, days: float) -> str:
    notify = summary["notify"]
    lines = [
        f"### {title}: seeds {', '.join(map(str, summary['seeds']))} "
        f"({hosts} hosts, {days:g} days each)",
        "",
        f"Records scored: {summary['records']:,} at {summary['records_per_second']:,.0f}"
        " records/s (scorer only, one core).",
        "",
        f"| type | incidents | recall | recall >= {notify} | alerts | precision "
        f"| precision >= {notify} | PR-AUC | TTD median | TTD p90 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for t in summary["types"]:
        n, a = t["incidents"], t["alerts"]
        lines.append(
            f"| {t['type']} | {n} | {_fraction(t['recall'], t['detected'], n)} "
            f"| {_fraction(t['recall_notify'], t['notified'], n)} "
            f"| {a} | {_fraction(t['precision'], t['matched'], a)} "
            f"| {_number(t['precision_notify'])} | {_number(t['pr_auc'])} "
            f"| {_duration(t['ttd_median'])} | {_duration(t['ttd_p90'])} |"
        )
    if summary["false_alerts"]:
        lines += [
            "",
            "Attack-free runs (the same offices, no attacks injected):",
            "",
            f"| seed | host-days | alerts | per host per day | alerts >= {notify} "
            f"| per host per day >= {notify} | after day 1: >= {notify} per host per day "
            f"| >= {notify} by kind |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for f in summary["false_alerts"]:
            kinds = ", ".join(f"{k} {v}" for k, v in f["notify_by_kind"].items()) or "-"
            lines.append(
                f"| {f['seed']} | {f['host_days']:g} | {f['alerts']} | {f['per_host_day']:.3f} "
                f"| {f['alerts_notify']} | {f['per_host_day_notify']:.3f} "
                f"| {_number(f['after_day1_per_host_day_notify'], 3)} "
                f"({f['after_day1_notify']}) | {kinds} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument(
        "--clean-seeds",
        type=int,
        nargs="*",
        default=None,
        help="attack-free runs (default: the report seeds without attacks)",
    )
    parser.add_argument("--tune-seed", type=int, default=None)
    parser.add_argument("--days", type=float, default=3.0)
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--notify", choices=SEVERITIES, default="medium")
    parser.add_argument("--params", type=Path, help="JSON {kind: {parameter: value}}")
    parser.add_argument(
        "--stream",
        action="store_true",
        help="do not hold a run's records in memory (throughput then includes generating them)",
    )
    parser.add_argument("--json", type=Path, help="also write the full results here")
    args = parser.parse_args(argv)
    params = json.loads(args.params.read_text()) if args.params else None

    def make(office: Office) -> AlertSource:
        return default_scorer(office, params)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def evaluate(seeds: Sequence[int], attacks: bool) -> list[RunResult]:
        return evaluate_seeds(
            seeds, args.days, args.hosts, make, attacks, args.notify, args.stream, log
        )

    began = time.perf_counter()
    results: dict[str, Any] = {"days": args.days, "hosts": args.hosts, "params": params}
    if args.tune_seed is not None:
        tuned = summarise(
            evaluate([args.tune_seed], True), evaluate([args.tune_seed], False), args.notify
        )
        print(markdown(tuned, "Tuning seed", args.hosts, args.days), end="\n\n")
        results["tune"] = tuned
    clean_seeds = args.seeds if args.clean_seeds is None else args.clean_seeds
    report = summarise(evaluate(args.seeds, True), evaluate(clean_seeds, False), args.notify)
    print(markdown(report, "Report seeds", args.hosts, args.days))
    results["report"] = report
    log(f"total {time.perf_counter() - began:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``edgeguard score FILE...``: score captures or flow files offline, as the box scores live.

Each file is a pcap/pcapng capture (optionally gzipped) or a flow file (JSON lines, see
``flowfile``), told apart by its first bytes, not its name. Captures go through ``pcap``
and ``flowtable`` into the same records conntrack and the query log give live, and all
records go through ``engine.Scorer.run``: a capture is scored by exactly the live code.
Captures given together are read as one stream (a capture rotated into pieces keeps its
flows whole).

Output: a table of alerts and per-host scores for people, or with ``--json`` one JSON object
per alert per line (``Alert.to_json()``; an alert raised several times during the capture is
printed once, as it ended). Exit status: 0; 1 if ``--fail-on`` is given and an alert reached
that severity (for scripts and CI); 2 for usage errors (an unreadable or unrecognised file,
a bad ``--lan`` CIDR, an unreadable feed), each message naming the file and line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import ipaddress
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TextIO

from appliance.anomaly.detector import DEFAULT_LAN, Networks
from appliance.anomaly.flowfile import read_flow_file
from appliance.anomaly.flowtable import FlowTable
from appliance.anomaly.pcap import CaptureStats, read_capture
from appliance.anomaly.records import SEVERITIES, Alert, DnsRecord, FlowRecord
from appliance.errors import AnomalyError

if TYPE_CHECKING:
    from appliance.anomaly.intel import ThreatIntel

EXIT_OK, EXIT_ALERTS, EXIT_USAGE = 0, 1, 2
PCAP_MAGICS = frozenset(
    {b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"}
)
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
GZIP_MAGIC = b"\x1f\x8b"
InputFormat = Literal["capture", "flows"]


def detect_format(path: Path) -> InputFormat:
    """``capture`` or ``flows`` from the file's first bytes; ``AnomalyError`` otherwise."""
    try:
        with path.open("rb") as f:
            head = f.read(64)
        if head[:2] == GZIP_MAGIC:
            with gzip.open(path, "rb") as z:
                head = z.read(64)
    except (OSError, EOFError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise AnomalyError(f"{path}: cannot read: {reason}") from exc
    if not head:
        raise AnomalyError(f"{path}: the file is empty")
    if head[:4] in PCAP_MAGICS or head[:4] == PCAPNG_MAGIC:
        return "capture"
    if head.lstrip()[:1] in (b"{", b"#"):
        return "flows"
    raise AnomalyError(
        f"{path}: not a pcap, pcapng or flow file (JSON lines); it starts with {head[:8]!r}"
    )


@dataclass
class InputReport:
    """What was read, so the summary can say how much of the input was scored."""

    files: int = 0
    capture: CaptureStats = field(default_factory=CaptureStats)
    table: FlowTable = field(default_factory=FlowTable)
    flow_records: int = 0
    dns_records: int = 0
    damaged: list[str] = field(default_factory=list)

    def summary(self) -> str:
        c = self.capture
        parts = [f"{self.files} file(s)"]
        if c.records:
            skipped = c.records - c.packets
            detail = ", ".join(
                f"{n} {what}"
                for n, what in (
                    (c.truncated, "truncated"),
                    (c.not_ip, "not IP"),
                    (c.ignored, "neighbour discovery/ignored"),
                    (sum(c.unsupported_link.values()), "unsupported link type"),
                )
                if n
            )
            parts.append(
                f"{c.records} packets" + (f" ({skipped} skipped: {detail})" if skipped else "")
            )
        parts.append(f"{self.flow_records} flow records, {self.dns_records} DNS records")
        t = self.table
        if t.dns_malformed:
            parts.append(f"{t.dns_malformed} malformed DNS messages skipped")
        if t.orphan_fragments:
            parts.append(f"{t.orphan_fragments} fragments without their first skipped")
        return "read " + ", ".join(parts)


def records_of(
    paths: Sequence[tuple[Path, InputFormat]], report: InputReport
) -> Iterator[FlowRecord | DnsRecord]:
    """Every file's records, in the order given; captures share one flow table."""
    table = report.table

    def counted(records: Iterable[FlowRecord | DnsRecord]) -> Iterator[FlowRecord | DnsRecord]:
        for rec in records:
            if isinstance(rec, FlowRecord):
                report.flow_records += 1
            else:
                report.dns_records += 1
            yield rec

    for path, kind in paths:
        report.files += 1
        if kind == "flows":
            yield from counted(read_flow_file(path))
            continue
        stats = CaptureStats()
        yield from counted(table.records(read_capture(path, stats), flush=False))
        _merge(report.capture, stats)
        if stats.damaged:
            report.damaged.append(f"{path}: {stats.damaged}")
    yield from counted(table.flush())


def _merge(total: CaptureStats, part: CaptureStats) -> None:
    total.records += part.records
    total.packets += part.packets
    total.truncated += part.truncated
    total.not_ip += part.not_ip
    total.ignored += part.ignored
    for link, n in part.unsupported_link.items():
        total.unsupported_link[link] = total.unsupported_link.get(link, 0) + n


def _networks(cidrs: Sequence[str] | None) -> Networks:
    if not cidrs:
        return Networks(DEFAULT_LAN)
    for cidr in cidrs:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError as exc:
            raise AnomalyError(f"--lan {cidr}: not a CIDR ({exc})") from exc
    return Networks(tuple(cidrs))


def _intel(feeds: Sequence[Path] | None, err: TextIO) -> ThreatIntel | None:
    if not feeds:
        return None
    from appliance.anomaly.intel import ThreatIntel

    intel = ThreatIntel.load(feeds)
    for invalid in intel.invalid:
        print(f"warning: {invalid} (line skipped)", file=err)
    return intel


def _time(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def print_table(alerts: Sequence[Alert], scores: dict[str, int], out: TextIO) -> None:
    """Alerts by score, then hosts by score: what an admin reads first comes first."""
    if not alerts:
        print("No alerts.", file=out)
    else:
        print(f"Alerts ({len(alerts)}), highest score first (times UTC):", file=out)
        ordered = sorted(alerts, key=lambda a: (-a.score, a.host, a.kind, a.peer))
        header = ("SCORE", "SEVERITY", "HOST", "KIND", "PEER", "FIRST", "LAST")
        rows = [
            (str(a.score), a.severity, a.host, a.kind, a.peer or "-", _time(a.first), _time(a.last))
            for a in ordered
        ]
        widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
        for alert, row in [(None, header), *zip(ordered, rows, strict=True)]:
            line = "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
            print(f"  {line}".rstrip(), file=out)
            if alert is not None:
                print(f"      {alert.explanation}", file=out)
    if scores:
        print("Host scores:", file=out)
        for host, score in sorted(scores.items(), key=lambda hs: (-hs[1], hs[0])):
            print(f"  {score:>3}  {host}", file=out)


def cmd_score(args: argparse.Namespace) -> int:
    out, err = sys.stdout, sys.stderr
    try:
        networks = _networks(args.lan)
        intel = _intel(args.feed, err)
        inputs = [(path, detect_format(path)) for path in args.files]
    except AnomalyError as exc:
        print(f"edgeguard score: {exc}", file=err)
        return EXIT_USAGE
    from appliance.anomaly.engine import Scorer, ScoringConfig

    scorer = Scorer(ScoringConfig(networks=networks, intel=intel))
    report = InputReport()
    latest: dict[tuple[str, str, str], Alert] = {}
    try:
        for _when, alert in scorer.run(records_of(inputs, report), every=args.every):
            latest[(alert.host, alert.kind, alert.peer)] = alert
    except AnomalyError as exc:
        print(f"edgeguard score: {exc}", file=err)
        return EXIT_USAGE
    for alert in scorer.alerts():  # still open: its evidence may have grown since emitted
        latest[(alert.host, alert.kind, alert.peer)] = alert
    for damage in report.damaged:
        print(f"warning: {damage}", file=err)
    alerts = list(latest.values())
    shown = [a for a in alerts if _rank(a.severity) >= _rank(args.min_severity)]
    if args.json:
        for alert in sorted(shown, key=lambda a: (a.first, a.host, a.kind, a.peer)):
            print(json.dumps(alert.to_json(), sort_keys=False), file=out)
        print(report.summary(), file=err)
    else:
        print_table(shown, scorer.host_scores(), out)
        print(report.summary(), file=out)
    if args.fail_on and any(_rank(a.severity) >= _rank(args.fail_on) for a in alerts):
        return EXIT_ALERTS
    return EXIT_OK


def _rank(severity: str) -> int:
    return SEVERITIES.index(severity)


def _positive(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"--every: a number of seconds > 0, not {value!r}")
    return seconds


def add_score_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    help_ = "score pcap/pcapng captures or flow files for anomalies (beacons, scans, ...)"
    description = (
        "Score pcap/pcapng captures or flow files (JSON lines) offline, with the detectors"
        " the appliance runs live; exit 1 with --fail-on when an alert reaches it, 2 on"
        " usage errors."
    )
    p = sub.add_parser("score", help=help_, description=description)
    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help="capture or flow file")
    p.add_argument("--json", action="store_true", help="one JSON object per alert per line")
    p.add_argument(
        "--feed",
        action="append",
        type=Path,
        metavar="FILE",
        help="threat intel feed: one CIDR, address or domain per line, # comments (repeatable)",
    )
    p.add_argument(
        "--lan",
        action="append",
        metavar="CIDR",
        help="the office's own networks (repeatable; default: private and unique-local ranges)",
    )
    p.add_argument(
        "--every",
        type=_positive,
        default=300.0,
        metavar="SECONDS",
        help="evaluate every this many seconds of capture time (default 300)",
    )
    p.add_argument(
        "--min-severity", choices=SEVERITIES, default="info", help="show alerts from this up"
    )
    p.add_argument(
        "--fail-on",
        choices=SEVERITIES,
        help="exit 1 if any alert reaches this severity (default: always exit 0)",
    )
    p.set_defaults(func=cmd_score)

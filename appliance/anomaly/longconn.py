"""Long-lived connections carrying a steady, upload-heavy stream (kind ``long-conn``).

Part of ``exfil.ExfilDetector``: a tunnel or a slow exfiltration keeps one connection open
for hours and sends more than it receives. Only flows already older than ``track_after``
(or reported ``open``) are tracked, so the per-record cost for the millions of short flows
is one comparison. Hard negatives it is shaped around: a chat app's websocket (hours long,
but kilobytes), a video call (long and heavy, but it receives as much as it sends).
"""

from __future__ import annotations

import math

from appliance.anomaly.records import Finding, FlowRecord

HOUR = 3600.0
_FlowKey = tuple[str, int, str, int, int]


class _LongFlow:
    __slots__ = (
        "busy_reports",
        "bytes_in",
        "bytes_out",
        "ended",
        "last",
        "peer",
        "reports",
        "start",
    )

    def __init__(self, start: float, peer: str) -> None:
        self.start = start
        self.last = start
        self.peer = peer
        self.bytes_out = 0
        self.bytes_in = 0
        self.reports = 0
        self.busy_reports = 0
        self.ended = False


class LongConnections:
    """The running long flows of all hosts, keyed by 5-tuple."""

    def __init__(
        self,
        min_age: float,
        min_bytes: int,
        upload_ratio: float,
        steady_share: float,
        track_after: float = 600.0,
        idle: float = 1800.0,
        max_flows: int = 20_000,
    ) -> None:
        self.min_age = min_age
        self.min_bytes = min_bytes
        self.upload_ratio = upload_ratio
        self.steady_share = steady_share
        self.track_after = track_after
        self.idle = idle
        self.max_flows = max_flows
        self._flows: dict[_FlowKey, _LongFlow] = {}

    def add(self, rec: FlowRecord, peer: str) -> None:
        key = (rec.src, rec.sport, rec.dst, rec.dport, rec.proto)
        flow = self._flows.get(key)
        if flow is None:
            if len(self._flows) >= self.max_flows:
                return
            flow = self._flows[key] = _LongFlow(rec.start, peer)
        flow.last = max(flow.last, rec.end)
        flow.bytes_out += rec.bytes_out
        flow.bytes_in += rec.bytes_in
        flow.reports += 1
        if rec.bytes_out > 0:
            flow.busy_reports += 1
        if rec.state != "open":
            flow.ended = True

    def evaluate(self, now: float) -> list[Finding]:
        findings: dict[tuple[str, str], Finding] = {}
        stale = now - self.idle
        for key, flow in list(self._flows.items()):
            finding = self._judge(key[0], flow)
            if finding is not None:
                best = findings.get((key[0], flow.peer))
                if best is None or finding.score > best.score:
                    findings[(key[0], flow.peer)] = finding
            if flow.ended or flow.last < stale:
                del self._flows[key]
        return list(findings.values())

    def tracked(self) -> int:
        return len(self._flows)

    def _judge(self, host: str, flow: _LongFlow) -> Finding | None:
        age = flow.last - flow.start
        if age < self.min_age or flow.bytes_out < self.min_bytes:
            return None
        if flow.bytes_out < self.upload_ratio * flow.bytes_in:
            return None
        # one final record (a flow file) is steady by definition; reports must mostly carry data
        if flow.reports > 1 and flow.busy_reports < self.steady_share * flow.reports:
            return None
        longer = min(1.0, math.log2(age / self.min_age) / 3)
        heavier = min(1.0, math.log10(flow.bytes_out / self.min_bytes) / 2)
        score = 0.5 + 0.25 * longer + 0.25 * heavier
        return Finding(
            host=host,
            kind="long-conn",
            peer=flow.peer,
            score=round(score, 3),
            first=flow.start,
            last=flow.last,
            explanation=(
                f"connection to {flow.peer} open {age / HOUR:.1f} h, sent "
                f"{flow.bytes_out / 1e6:.1f} MB, received {flow.bytes_in / 1e6:.1f} MB"
            ),
            subscores={"duration": round(longer, 3), "volume": round(heavier, 3)},
            evidence={
                "age_s": round(age),
                "bytes_out": flow.bytes_out,
                "bytes_in": flow.bytes_in,
                "reports": flow.reports,
                "ended": flow.ended,
            },
        )

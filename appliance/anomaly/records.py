"""What anomaly scoring reads and what it says: flow and DNS records in, findings and alerts out.

Every input path (kernel conntrack on the box, a pcap, a flow file, the resolver's query log)
is turned into these records, so live and offline scoring share one code path. Records are
``NamedTuple``s: cheap to build (the scorer must take >= 50,000 flows/s on one core) and
immutable. Times are epoch seconds (float, UTC) of the *event*, never of the wall clock at
reading time, so a capture scores the same whenever it is replayed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58

FlowState = Literal["established", "rejected", "unanswered", "open", ""]
"""How a flow went: ``established`` (the responder answered), ``rejected`` (TCP RST or ICMP
unreachable back), ``unanswered`` (no packet came back), ``open`` (still running; a
long-lived flow reported before it ended), ``""`` (not known).

Long-lived flows: inputs emit an ``open`` record every few minutes while a flow runs and a
final record when it ends. Every record of a flow carries the flow's original ``start`` and
the counters *since the previous record of that flow* (deltas), so summing bytes over
records never double counts. An ``open`` record is not a new connection (connection counts,
e.g. for beaconing, take only non-``open`` records); ``end - start`` is the flow's age."""


class FlowRecord(NamedTuple):
    """One connection (conntrack entry, or a 5-tuple aggregated from packets).

    ``src`` is the originator. Bytes count IP total length (header included), so a capture
    cut to a snap length still counts what went over the wire.
    """

    start: float
    end: float
    proto: int
    src: str
    sport: int
    dst: str
    dport: int
    bytes_out: int  # originator -> responder
    bytes_in: int  # responder -> originator
    pkts_out: int
    pkts_in: int
    state: FlowState = ""


class DnsRecord(NamedTuple):
    """One DNS query as the resolver saw (or a capture showed) it.

    ``answers`` holds the A/AAAA addresses and CNAME targets of the answer when known (a
    capture has them; the live query log may not) so flows can be tied to names.
    """

    ts: float
    client: str
    qname: str  # lower case, no trailing dot
    qtype: int  # 1 A, 28 AAAA, 16 TXT, ...
    rcode: int  # 0 NOERROR, 3 NXDOMAIN, ...
    answers: tuple[str, ...] = ()


Severity = Literal["info", "low", "medium", "high", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "low", "medium", "high", "critical")


@dataclass
class Finding:
    """What one detector concluded about one host (and peer) at one evaluation.

    ``score`` is the detector's own confidence in [0, 1] before modifiers; ``subscores``
    names its parts (for beaconing: timing, size, persistence) so an admin can see why.
    """

    host: str
    kind: str  # "beacon", "scan", "lateral", "dns-tunnel", "dga", "exfil", "long-conn", "intel"
    peer: str  # an address, a name, or "" for host-wide findings (a scan of many hosts)
    score: float
    first: float
    last: float
    explanation: str
    subscores: dict[str, float] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class Alert:
    """A finding after modifiers (rarity, first seen), scaled to 0-100 with a severity.

    One alert per (host, kind, peer) stays open and is updated as evidence grows, instead
    of a new alert per evaluation: alert noise is what makes admins stop reading.
    """

    host: str
    kind: str
    peer: str
    score: int  # 0-100
    severity: Severity
    first: float
    last: float
    explanation: str
    subscores: dict[str, float] = field(default_factory=dict)
    modifiers: dict[str, float] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The ``edgeguard score --json`` line (and the webhook body)."""
        return {
            "host": self.host,
            "kind": self.kind,
            "score": self.score,
            "severity": self.severity,
            "first": self.first,
            "last": self.last,
            "peer": self.peer,
            "explanation": self.explanation,
            "subscores": self.subscores,
            "modifiers": self.modifiers,
            "evidence": self.evidence,
        }

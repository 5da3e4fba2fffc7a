"""Counting a host's contacts for the scan detector, and the ``scan`` finding they make.

A contact is one (target, port) a host reached, with when and how it went; a ``Tally`` sums
the contacts of one group (a target for a vertical scan, a port for a horizontal one).
"""

from __future__ import annotations

from appliance.anomaly.records import Finding

FAILED, ANSWERED, QUIET = 0, 1, 2  # QUIET: UDP without a reply (many UDP services never answer)
Contact = tuple[float, float, int]  # first, last, outcome


def grade(weight: float, threshold: float) -> float:
    """0.5 at the threshold, rising linearly to 1 at four times it."""
    return min(1.0, 0.5 + 0.5 * (weight - threshold) / (3 * threshold))


class Tally:
    """Failed and answered contacts of one group (a target, a port), and when they happened."""

    __slots__ = ("answered", "failed", "first", "last", "quiet")

    def __init__(self) -> None:
        self.failed = 0  # rejected or unanswered, UDP included
        self.quiet = 0  # of which: UDP without any reply
        self.answered = 0
        self.first = float("inf")
        self.last = float("-inf")

    def add(self, contact: Contact) -> None:
        if contact[2] == ANSWERED:
            self.answered += 1
        else:
            self.failed += 1
            self.quiet += contact[2] == QUIET
        self.first = min(self.first, contact[0])
        self.last = max(self.last, contact[1])

    def weight(self, success_weight: float, quiet_weight: float) -> float:
        loud = self.failed - self.quiet
        return loud + quiet_weight * self.quiet + success_weight * self.answered


def scan_finding(
    host: str, peer: str, direction: str, score: float, tally: Tally, what: str
) -> Finding:
    """A vertical (``peer`` is the target) or horizontal (``peer`` is empty) scan finding."""
    minutes = (tally.last - tally.first) / 60
    speed = "slow" if minutes > 60 else "fast"
    total = tally.failed + tally.answered
    return Finding(
        host=host,
        kind="scan",
        peer=peer,
        score=round(score, 3),
        first=tally.first,
        last=tally.last,
        explanation=f"{direction} {speed} scan: {what}, {tally.failed} failed, {minutes:.0f} min",
        subscores={direction: round(score, 3), "failed_share": round(tally.failed / total, 3)},
        evidence={
            "failed": tally.failed,
            "answered": tally.answered,
            "speed": speed,
            "per_minute": round(total / max(minutes, 1.0), 2),
        },
    )

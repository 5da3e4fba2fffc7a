"""Beaconing: a host calling the same peer at regular intervals, or with regular sizes, for hours.

Modelled on RITA: per (host, peer) the connection start times and sizes are kept (compact
``array``s, capped), and ``evaluate`` scores three things separately so an admin sees why:

* ``timing``: how tight the intervals are, robust to jitter. A C2 sleeping 60 s with 80 %
  jitter draws intervals from a bounded range (P90/P10 of ~5) with no skew; human traffic
  (a chat app, a browser) is bursty: long tails, P90/P10 in the tens to thousands, skewed.
  The score is two thirds the spread (ln P90/P10) and one third Bowley's quartile skew.
* ``size``: how tight the bytes sent per connection are (quartile dispersion IQR/median).
* ``persistence``: the share of hourly buckets since the pair was first seen (the last 24 h)
  that had a connection.

``score = min(1, persistence / persistence_full) * max(timing, size)``: timing *or* size
regularity, *and* persistence. Persistence alone (NTP, a chat app, a busy browser) never
flags; neither does regularity for a few connections (an update check every 6 h). Failed
connections are not check-ins (a slow scan's probes are regular too, and answer nothing). NTP
(UDP 123) is skipped outright: it is periodic with fixed-size packets by design, and so is
the appliance's own infrastructure.
"""

from __future__ import annotations

import itertools
import math
from array import array
from collections.abc import Sequence

from appliance.anomaly.detector import Context
from appliance.anomaly.peers import PeerNames, remote_check
from appliance.anomaly.records import UDP, DnsRecord, Finding, FlowRecord

DAY = 86400.0
HOUR = 3600.0
SPREAD_REGULAR = 0.3  # ln(P90/P10) at or below this: as regular as 20 % jitter
SPREAD_IRREGULAR = 2.6  # ln(P90/P10) at or above this: a Poisson process or burstier
SIZE_IRREGULAR = 0.2  # size IQR/median at or above this: sizes say nothing
MAX_ADDRESSES = 8  # addresses remembered per named peer, for the evidence
SWEEP_EVERY = HOUR  # how often evaluate() ages state out: a full pass is not free


class _Series:
    """One (host, peer): start times and bytes sent, and what ``evaluate`` needs cheaply.

    ``hours`` counts distinct hourly buckets as connections arrive (inputs are in time
    order), so persistence, which decides whether the series is a candidate at all, costs
    nothing; ``timing``/``size`` are recomputed only when the series grew by a tenth.
    """

    __slots__ = (
        "addresses",
        "dirty",
        "hour",
        "hours",
        "last",
        "median_gap",
        "scored",
        "size",
        "sizes",
        "times",
        "timing",
    )

    def __init__(self) -> None:
        self.times = array("d")
        self.sizes = array("q")
        self.last = 0.0
        self.addresses: set[str] = set()
        self.dirty = False  # a connection arrived since the last evaluation
        self.hour = -1  # the latest hourly bucket counted in ``hours``
        self.hours = 0
        self.scored = 0  # connections when timing/size/median_gap were computed; 0: stale
        self.timing = self.size = self.median_gap = 0.0


def _quantile(ordered: Sequence[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


def timing_score(intervals: Sequence[float]) -> tuple[float, float, float]:
    """(score, ln(P90/P10), Bowley skew) of the intervals, in any order.

    Quartiles of a couple of dozen intervals are noisy (a Poisson process can look tight by
    chance), so the score is shrunk by n / (n + 10): a day of hourly beacons keeps 70 %.
    """
    ordered = sorted(intervals)
    p10, q1, q2, q3, p90 = (_quantile(ordered, q) for q in (0.1, 0.25, 0.5, 0.75, 0.9))
    spread = math.log(p90 / p10) if p10 > 0 else SPREAD_IRREGULAR
    spread_score = (SPREAD_IRREGULAR - spread) / (SPREAD_IRREGULAR - SPREAD_REGULAR)
    spread_score = min(1.0, max(0.0, spread_score))
    skew = (q3 + q1 - 2 * q2) / (q3 - q1) if q3 > q1 else 0.0
    shrink = len(ordered) / (len(ordered) + 10)
    return shrink * (2 * spread_score + 1 - min(1.0, abs(skew))) / 3, spread, skew


def size_score(sizes: Sequence[int]) -> float:
    """1 for constant sizes, 0 once the quartiles are ``SIZE_IRREGULAR`` of the median apart."""
    ordered = sorted(sizes)
    median = _quantile(ordered, 0.5)
    if median <= 0:
        return 0.0
    dispersion = (_quantile(ordered, 0.75) - _quantile(ordered, 0.25)) / median
    return max(0.0, 1.0 - dispersion / SIZE_IRREGULAR)


class BeaconDetector:
    """Regular calls from an internal host to one external peer (address, or name if known)."""

    kinds = ("beacon",)

    def __init__(
        self,
        context: Context,
        *,
        names: PeerNames | None = None,
        threshold: float = 0.45,
        min_connections: int = 12,
        min_hours: int = 3,
        persistence_full: float = 0.6,
        min_gap: float = 1.0,
        horizon: float = DAY,
        max_peers_per_host: int = 1024,
        max_connections_per_peer: int = 4096,
        skip_ntp: bool = True,
    ) -> None:
        self._is_lan = context.networks.is_lan
        self._is_remote = remote_check(context.networks)
        self._infrastructure = context.infrastructure
        self._own_names = names is None
        self._names = PeerNames() if names is None else names
        self.threshold = threshold
        self.min_connections = min_connections
        self.min_hours = min_hours
        self.persistence_full = persistence_full
        self.min_gap = min_gap
        self.horizon = horizon
        self.max_peers_per_host = max_peers_per_host
        self.max_connections_per_peer = max_connections_per_peer
        self.skip_ntp = skip_ntp
        self.dropped = 0  # connections not kept because a host hit max_peers_per_host
        self._hosts: dict[str, dict[str, _Series]] = {}
        self._dirty: list[tuple[str, str, _Series]] = []
        self._next_sweep = float("-inf")

    def add_flow(self, rec: FlowRecord) -> None:
        state = rec.state
        if state == "open" or state == "rejected" or state == "unanswered":
            return  # a running flow's report is no new connection; a beacon needs an answer
        src, dst = rec.src, rec.dst
        if not self._is_lan(src) or not self._is_remote(dst) or dst in self._infrastructure:
            return
        if rec.dport == 123 and rec.proto == UDP and self.skip_ntp:
            return
        key = self._names.key(dst)
        peers = self._hosts.get(src)
        if peers is None:
            peers = self._hosts[src] = {}
        series = peers.get(key)
        if series is None:
            if len(peers) >= self.max_peers_per_host:
                self.dropped += 1
                return
            series = peers[key] = _Series()
        start = rec.start
        series.times.append(start)
        series.sizes.append(rec.bytes_out)
        if start > series.last:
            series.last = start
            hour = int(start // HOUR)
            if hour != series.hour:
                series.hour = hour
                series.hours += 1
        if not series.dirty:
            series.dirty = True
            self._dirty.append((src, key, series))
        if key is not dst and len(series.addresses) < MAX_ADDRESSES:
            series.addresses.add(dst)
        if len(series.times) > self.max_connections_per_peer:
            half = len(series.times) // 2
            del series.times[:half]
            del series.sizes[:half]
            _recount(series)

    def add_dns(self, rec: DnsRecord) -> None:
        if self._own_names:
            self._names.add_dns(rec)

    def evaluate(self, now: float) -> list[Finding]:
        """Score the series that grew since the last call; age out state once an hour.

        A series without new connections can only have lost persistence since it was last
        scored, so skipping it never misses a finding.
        """
        if now >= self._next_sweep:
            self._sweep(now - self.horizon)
            self._next_sweep = now + SWEEP_EVERY
        findings: list[Finding] = []
        dirty, self._dirty = self._dirty, []
        for host, key, series in dirty:
            series.dirty = False
            if len(series.times) >= self.min_connections:
                finding = self._score(host, key, series, now)
                if finding is not None:
                    findings.append(finding)
        if self._own_names:
            self._names.expire(now)
        return findings

    def _sweep(self, cutoff: float) -> None:
        for host in list(self._hosts):
            peers = self._hosts[host]
            for key in list(peers):
                series = peers[key]
                if series.last < cutoff:
                    del peers[key]
                elif series.times[0] < cutoff:
                    _trim(series, cutoff)
            if not peers:
                del self._hosts[host]

    def tracked(self) -> int:
        return sum(len(peers) for peers in self._hosts.values())

    def _score(self, host: str, peer: str, series: _Series, now: float) -> Finding | None:
        times = series.times
        first = times[0]
        current = int(now // HOUR)
        spanned = current - int(first // HOUR) + (1 if series.hour == current else 0)
        persistence = min(1.0, series.hours / max(spanned, self.min_hours))
        gate = min(1.0, persistence / self.persistence_full)
        if gate < self.threshold:  # not persistent enough for any regularity to matter
            return None
        if series.scored == 0 or len(times) >= series.scored * 1.1:
            ordered = sorted(times)
            gaps = sorted(b - a for a, b in itertools.pairwise(ordered) if b - a >= self.min_gap)
            enough = len(gaps) >= self.min_connections - 1
            series.timing = timing_score(gaps)[0] if enough else 0.0
            series.size = size_score(series.sizes)
            series.median_gap = gaps[len(gaps) // 2] if gaps else 0.0
            series.scored = len(times)
        timing, size, median_gap = series.timing, series.size, series.median_gap
        score = gate * max(timing, size)
        if score < self.threshold:
            return None
        median_size = sorted(series.sizes)[len(series.sizes) // 2]
        return Finding(
            host=host,
            kind="beacon",
            peer=peer,
            score=round(score, 3),
            first=first,
            last=series.last,
            explanation=(
                f"{len(times)} connections to {peer}, about every {median_gap:.0f} s, "
                f"~{median_size} bytes sent each, in {series.hours} of the last "
                f"{max(spanned, series.hours)} hours"
            ),
            subscores={
                "timing": round(timing, 3),
                "size": round(size, 3),
                "persistence": round(persistence, 3),
            },
            evidence={
                "connections": len(times),
                "median_interval": round(median_gap, 1),
                "median_bytes": median_size,
                "hours": series.hours,
                "addresses": sorted(series.addresses),
            },
        )


def _trim(series: _Series, cutoff: float) -> None:
    """Drop connections older than ``cutoff`` (times are near-sorted: inputs are in order)."""
    keep = [i for i, t in enumerate(series.times) if t >= cutoff]
    series.times = array("d", (series.times[i] for i in keep))
    series.sizes = array("q", (series.sizes[i] for i in keep))
    _recount(series)


def _recount(series: _Series) -> None:
    """After dropping old connections: exact hourly buckets, and scores due again."""
    series.hours = len({int(t // HOUR) for t in series.times})
    series.scored = 0

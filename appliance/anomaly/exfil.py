"""Exfiltration: a host sending far more than its own history, or a lot to a peer new to the office.

Per internal host, outbound bytes to external peers are summed per hour (and per peer within
the hour: the finding names the peer that got most). Two baselines of the host's own history
are kept, both exponentially weighted so old habits fade:

* ``baseline``: the typical *active* hour (hours with no upload at all do not drag it to 0),
  a geometric mean (an EWMA of log bytes): one nightly multi-GB backup must not make every
  other hour of a file server look small;
* ``peak``: the typical day's largest hour, so a host that uploads 400 MB once a day (a backup,
  a designer's renders) is not flagged for doing it again.

An hour is flagged when it exceeds ``max(min_bytes, hour_ratio * baseline, peak_ratio * peak)``:
``min_bytes`` is the floor that keeps a fresh host (no history yet) from being flagged for an
ordinary upload. Separately, uploads to a peer the office first contacted after watching for
``warmup`` (before that every peer is new) are summed while the peer is younger than
``new_peer_age``; reaching ``new_peer_bytes`` (or ``new_peer_ratio`` typical hours) is flagged,
however slowly it was sent. Only upload-heavy peers count: a video call sends a lot, but
receives as much.

Long-lived upload streams (kind ``long-conn``) are followed by ``longconn.LongConnections``.
"""

from __future__ import annotations

import math

from appliance.anomaly.detector import Context
from appliance.anomaly.longconn import LongConnections
from appliance.anomaly.modifiers import PeerHistory
from appliance.anomaly.peers import PeerNames, remote_check
from appliance.anomaly.records import DnsRecord, Finding, FlowRecord

HOUR = 3600.0
DAY = 86400.0
MB = 1_000_000


class _HostVolume:
    """One host's outbound bytes: the running hour, the one before, and its baselines."""

    __slots__ = (
        "active_hours",
        "baseline",
        "day",
        "day_peak",
        "days",
        "fresh",
        "hour",
        "hour_bytes",
        "last",
        "log_baseline",
        "peak",
        "peers",
        "prev_bytes",
        "prev_hour",
        "prev_limit",
        "prev_peers",
    )

    def __init__(self, hour: int) -> None:
        self.hour = hour
        self.hour_bytes = 0
        self.peers: dict[str, list[int]] = {}  # peer -> [bytes out, bytes in] this hour
        self.prev_hour = -1
        self.prev_bytes = 0
        self.prev_limit = 0.0
        self.prev_peers: dict[str, list[int]] = {}
        self.baseline = 0.0  # exp of the EWMA of ln(bytes) over active hours
        self.log_baseline = 0.0
        self.active_hours = 0
        self.fresh: dict[str, list[float]] = {}  # new peer -> [bytes out, bytes in, first seen]
        self.day = hour // 24
        self.day_peak = 0
        self.peak = 0.0
        self.days = 0
        self.last = 0.0


class ExfilDetector:
    """Uploads against the host's own baseline (``exfil``) and long uploads (``long-conn``)."""

    kinds = ("exfil", "long-conn")

    def __init__(
        self,
        context: Context,
        *,
        names: PeerNames | None = None,
        history: PeerHistory | None = None,
        min_bytes: int = 100 * MB,
        hour_ratio: float = 10.0,
        peak_ratio: float = 2.5,
        alpha: float = 0.05,
        peak_alpha: float = 0.3,
        new_peer_bytes: int = 20 * MB,
        new_peer_ratio: float = 2.0,
        new_peer_age: float = DAY,
        warmup: float = 12 * HOUR,
        upload_ratio: float = 2.0,
        long_conn_age: float = HOUR,
        long_conn_bytes: int = 10 * MB,
        steady_share: float = 0.5,
        baseline_horizon: float = 7 * DAY,
        max_peers_per_host: int = 2048,
        max_new_peers_per_host: int = 256,
    ) -> None:
        self._is_lan = context.networks.is_lan
        self._is_remote = remote_check(context.networks)
        self._infrastructure = context.infrastructure
        self._own_names = names is None
        self._names = PeerNames() if names is None else names
        self._own_history = history is None
        self._history = PeerHistory() if history is None else history
        self.min_bytes = min_bytes
        self.hour_ratio = hour_ratio
        self.peak_ratio = peak_ratio
        self.alpha = alpha
        self.peak_alpha = peak_alpha
        self.new_peer_bytes = new_peer_bytes
        self.new_peer_ratio = new_peer_ratio
        self.new_peer_age = new_peer_age
        self.warmup = warmup
        self.upload_ratio = upload_ratio
        self.baseline_horizon = baseline_horizon
        self.max_peers_per_host = max_peers_per_host
        self.max_new_peers_per_host = max_new_peers_per_host
        self._hosts: dict[str, _HostVolume] = {}
        self._long = LongConnections(long_conn_age, long_conn_bytes, upload_ratio, steady_share)

    def add_flow(self, rec: FlowRecord) -> None:
        src, dst = rec.src, rec.dst
        if not self._is_lan(src) or not self._is_remote(dst) or dst in self._infrastructure:
            return
        peer = self._names.key(dst)
        if self._own_history:
            self._history.observe(src, peer, rec.start)
        if rec.state == "open" or rec.end - rec.start >= self._long.track_after:
            self._long.add(rec, peer)
        if rec.bytes_out == 0 and rec.bytes_in == 0:
            return
        hour = int(rec.end // HOUR)
        volume = self._hosts.get(src)
        if volume is None:
            volume = self._hosts[src] = _HostVolume(hour)
        elif hour > volume.hour:
            self._roll(volume, hour)
        volume.hour_bytes += rec.bytes_out
        volume.last = rec.end
        counts = volume.peers.get(peer)
        if counts is None:
            if len(volume.peers) >= self.max_peers_per_host:
                return
            counts = volume.peers[peer] = [0, 0]
        counts[0] += rec.bytes_out
        counts[1] += rec.bytes_in
        first = self._history.first_seen(peer)
        if first is not None and rec.start - first < self.new_peer_age:
            started = self._history.started
            if started is not None and first - started >= self.warmup:
                fresh = volume.fresh.get(peer)
                if fresh is None:
                    if len(volume.fresh) >= self.max_new_peers_per_host:
                        return
                    fresh = volume.fresh[peer] = [0.0, 0.0, first]
                fresh[0] += rec.bytes_out
                fresh[1] += rec.bytes_in

    def add_dns(self, rec: DnsRecord) -> None:
        if self._own_names:
            self._names.add_dns(rec)

    def evaluate(self, now: float) -> list[Finding]:
        findings = self._long.evaluate(now)
        hour = int(now // HOUR)
        for host in list(self._hosts):
            volume = self._hosts[host]
            if volume.last < now - self.baseline_horizon:
                del self._hosts[host]
                continue
            if hour > volume.hour:
                self._roll(volume, hour)
            findings.extend(self._judge(host, volume, now))
        if self._own_names:
            self._names.expire(now)
        if self._own_history:
            self._history.expire(now)
        return findings

    def tracked(self) -> int:
        total = self._long.tracked()
        for volume in self._hosts.values():
            total += 1 + len(volume.peers) + len(volume.prev_peers)
        return total

    def limit(self, volume: _HostVolume) -> float:
        """Bytes in one hour above which this host's upload is out of character."""
        return max(
            float(self.min_bytes), self.hour_ratio * volume.baseline, self.peak_ratio * volume.peak
        )

    def _roll(self, volume: _HostVolume, hour: int) -> None:
        """Close the running hour: fold it into the baselines, keep it for one more look."""
        done = volume.hour_bytes
        consecutive = hour == volume.hour + 1
        volume.prev_hour = volume.hour if consecutive else -1
        volume.prev_bytes = done if consecutive else 0
        volume.prev_limit = self.limit(volume)
        volume.prev_peers = volume.peers if consecutive else {}
        if done > 0:
            if volume.active_hours == 0:
                volume.log_baseline = math.log(done)
            else:
                volume.log_baseline += self.alpha * (math.log(done) - volume.log_baseline)
            volume.baseline = math.exp(volume.log_baseline)
            volume.active_hours += 1
            volume.day_peak = max(volume.day_peak, done)
        day = hour // 24
        if day != volume.day:
            if volume.day_peak > 0:
                if volume.days == 0:
                    volume.peak = float(volume.day_peak)
                else:
                    volume.peak += self.peak_alpha * (volume.day_peak - volume.peak)
                volume.days += 1
            volume.day, volume.day_peak = day, 0
        volume.hour, volume.hour_bytes, volume.peers = hour, 0, {}
        too_old = hour * HOUR - self.new_peer_age
        for peer in [p for p, fresh in volume.fresh.items() if fresh[2] < too_old]:
            del volume.fresh[peer]

    def _judge(self, host: str, volume: _HostVolume, now: float) -> list[Finding]:
        out: dict[str, Finding] = {}
        hours = [(volume.hour, volume.hour_bytes, self.limit(volume), volume.peers)]
        if volume.prev_hour == volume.hour - 1:
            hours.append(
                (volume.prev_hour, volume.prev_bytes, volume.prev_limit, volume.prev_peers)
            )
        for hour, total, limit, peers in hours:
            if total < limit:
                continue  # uploads are a part of the hour's total
            start = hour * HOUR
            uploads = {p: c[0] for p, c in peers.items() if c[0] >= self.upload_ratio * c[1]}
            total = sum(uploads.values())  # a video call's share is not an upload
            if total >= limit:
                peer = max(uploads, key=uploads.__getitem__)
                why = (
                    f"sent {total / MB:.0f} MB in one hour, {total / limit:.1f}x its limit "
                    f"({limit / MB:.0f} MB from its own history); most to {peer}"
                )
                self._keep(
                    out, host, peer, _grade(total / limit), "volume", why, volume, start, total
                )
        new_limit = max(float(self.new_peer_bytes), self.new_peer_ratio * volume.baseline)
        for peer, (sent, received, first) in volume.fresh.items():
            if sent >= new_limit and sent >= self.upload_ratio * received:
                why = (
                    f"sent {sent / MB:.0f} MB to {peer}, first contacted by the office "
                    f"{(now - first) / 60:.0f} min ago"
                )
                score = _grade(sent / new_limit) * 0.9
                self._keep(out, host, peer, score, "new_peer", why, volume, first, int(sent))
        return list(out.values())

    @staticmethod
    def _keep(
        out: dict[str, Finding],
        host: str,
        peer: str,
        score: float,
        part: str,
        why: str,
        volume: _HostVolume,
        start: float,
        sent: int,
    ) -> None:
        """One finding per peer: the strongest reason leads, the others stay as subscores."""
        found = out.get(peer)
        if found is None:
            found = out[peer] = Finding(
                host=host,
                kind="exfil",
                peer=peer,
                score=0.0,
                first=start,
                last=volume.last,
                explanation=why,
                evidence={
                    "bytes": sent,
                    "baseline": round(volume.baseline),
                    "peak": round(volume.peak),
                    "history_hours": volume.active_hours,
                },
            )
        found.subscores[part] = round(score, 3)
        found.first = min(found.first, start)
        if score > found.score:
            found.score, found.explanation = round(score, 3), why
            found.evidence["bytes"] = sent


def _grade(ratio: float) -> float:
    """0.5 at the limit, 1.0 at ten times it."""
    return min(1.0, 0.5 + 0.5 * math.log10(max(ratio, 1.0)))

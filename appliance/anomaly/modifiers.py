"""RITA-style score modifiers: how common a peer is in the office, and how long it has been.

A detector judges one host's traffic on its own; what the rest of the office does is context
it does not have. A peer most of the office's hosts talk to (the mail provider, an update
CDN) is far less likely to be a C2 than one a single host talks to, and a peer the office has
used for weeks is less suspicious than one first contacted this morning. ``PeerHistory``
keeps, per external peer, the first-seen time and which internal hosts contacted it (bounded:
counting past ``max_hosts_per_peer`` changes nothing); ``peer_modifiers`` turns that into
additive adjustments of a finding's [0, 1] score, named so an alert can show them.
"""

from __future__ import annotations

from dataclasses import dataclass

DAY = 86400.0


class _PeerSeen:
    """First and last contact, and the (few) internal hosts that made it.

    A tuple, not a set, of hosts: most peers have one or two, and a one-element set costs
    four times the memory of a one-element tuple; it is replaced only when a new host shows up.
    """

    __slots__ = ("first", "hosts", "last")

    def __init__(self, ts: float, host: str) -> None:
        self.first = ts
        self.last = ts
        self.hosts: tuple[str, ...] = (host,)


class PeerHistory:
    """Office-wide memory of external peers, fed with every outbound flow (cheap dict work).

    ``horizon`` is long (weeks): "used for weeks" is exactly what the first-seen modifier
    needs to know. ``max_peers`` bounds memory; past it, the least recently used peers go.
    """

    def __init__(
        self,
        horizon: float = 30 * DAY,
        max_peers: int = 100_000,
        max_hosts_per_peer: int = 64,
    ) -> None:
        self.horizon = horizon
        self.max_peers = max_peers
        self.max_hosts_per_peer = max_hosts_per_peer
        self.started: float | None = None
        self._peers: dict[str, _PeerSeen] = {}
        self._hosts: dict[str, float] = {}

    def observe(self, host: str, peer: str, ts: float) -> None:
        """``host`` (internal) contacted ``peer`` (an external address or name) at ``ts``."""
        seen = self._peers.get(peer)
        if seen is None:
            if self.started is None or ts < self.started:
                self.started = ts
            self._peers[peer] = _PeerSeen(ts, host)
            if len(self._peers) > self.max_peers:
                self._shrink(self.max_peers * 3 // 4)
        else:
            if ts > seen.last:
                seen.last = ts
            elif ts < seen.first:
                seen.first = ts
            hosts = seen.hosts
            if host not in hosts and len(hosts) < self.max_hosts_per_peer:
                seen.hosts = (*hosts, host)
        self._hosts[host] = ts

    def first_seen(self, peer: str) -> float | None:
        seen = self._peers.get(peer)
        return seen.first if seen is not None else None

    def host_count(self, peer: str) -> int:
        seen = self._peers.get(peer)
        return len(seen.hosts) if seen is not None else 0

    def active_hosts(self, now: float, window: float = DAY) -> int:
        """Internal hosts that contacted any external peer in the last ``window`` seconds."""
        cutoff = now - window
        return sum(1 for ts in self._hosts.values() if ts >= cutoff)

    def observed_for(self, now: float) -> float:
        """How long the office has been watched: before a day, every peer looks new."""
        return 0.0 if self.started is None else now - self.started

    def expire(self, now: float) -> None:
        cutoff = now - self.horizon
        for peer in [p for p, seen in self._peers.items() if seen.last < cutoff]:
            del self._peers[peer]
        for host in [h for h, ts in self._hosts.items() if ts < cutoff]:
            del self._hosts[host]

    def tracked(self) -> int:
        return len(self._peers) + len(self._hosts)

    def _shrink(self, keep: int) -> None:
        recent = sorted(self._peers.items(), key=lambda item: item[1].last, reverse=True)
        self._peers = dict(recent[:keep])


@dataclass(frozen=True)
class ModifierRules:
    """The adjustments, in score units (a finding's score is in [0, 1]).

    Rarity only speaks once the office has ``min_office_hosts`` active hosts (in a two-host
    office every peer is "rare"). A peer most hosts use is lowered by up to ``common_lower``:
    enough to take even a perfect beacon (an MSP's agent on every machine) below medium.
    First seen only speaks once the office has been watched for ``warmup`` (at start-up
    every peer is new); a peer already in use in the first ``settle`` seconds of watching
    was there before the scorer and counts as old.
    """

    single_host_raise: float = 0.10
    common_share: float = 0.5  # share of active hosts at which the full lowering applies
    uncommon_share: float = 0.2  # share below which nothing is lowered
    common_lower: float = 0.5
    min_office_hosts: int = 3
    new_age: float = DAY
    new_raise: float = 0.10
    old_age: float = 14 * DAY
    old_lower: float = 0.10
    warmup: float = 12 * 3600.0
    settle: float = 3600.0


DEFAULT_RULES = ModifierRules()


def peer_modifiers(
    history: PeerHistory,
    peer: str,
    now: float,
    active_hosts: int,
    rules: ModifierRules = DEFAULT_RULES,
) -> dict[str, float]:
    """``{"rarity": delta, "first_seen": delta}`` for ``peer``; empty for peers never seen
    leaving the office (LAN targets, host-wide findings)."""
    first = history.first_seen(peer)
    if first is None:
        return {}
    out: dict[str, float] = {}
    if active_hosts >= rules.min_office_hosts:
        hosts = history.host_count(peer)
        share = hosts / active_hosts
        if hosts == 1:
            out["rarity"] = rules.single_host_raise
        elif share > rules.uncommon_share:
            span = rules.common_share - rules.uncommon_share
            weight = min(1.0, (share - rules.uncommon_share) / span) if span > 0 else 1.0
            out["rarity"] = -round(rules.common_lower * weight, 3)
    started = history.started if history.started is not None else first
    if first - started < rules.settle or now - first > rules.old_age:
        out["first_seen"] = -rules.old_lower
    elif history.observed_for(now) >= rules.warmup and now - first < rules.new_age:
        out["first_seen"] = rules.new_raise
    return out

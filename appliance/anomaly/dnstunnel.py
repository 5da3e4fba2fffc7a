"""DNS tunnelling and C2 over DNS: many unique, long, random-looking names under one domain.

A DNS tunnel (iodine, dnscat2, and C2 frameworks' DNS channels) carries data in the query
name, so every query is a new name under the operator's registered domain: hundreds to
thousands of unique subdomains an hour, labels of 30-60 characters of base32 or hex, and
often TXT, NULL, CNAME or MX queries (bigger answers than A). Per client and registered
domain, in a window, sub-scores (all in [0, 1], reported separately):

* ``unique``: how many different subdomain names were asked (the volume);
* ``length``: the mean length of each name's longest label;
* ``entropy``: the mean Shannon entropy of a name's characters (bits per character);
* ``qtype``: the share of TXT/NULL/CNAME/MX queries;
* ``rate``: queries per hour (reported; the unique count already carries the volume).

``score = unique * (0.35 * length + 0.35 * entropy + 0.3 * qtype)``: volume alone never
alerts. That is what keeps the hard negatives quiet: a CDN's hashed host names
(``d1a2b3c4.cloudfront.net``, ``e1234.a.akamaiedge.net``) are few per client; a DNS-based
reputation service (DNSBL, anti-virus lookups) asks many unique names but short ones;
a browser prefetching spreads its names over many registered domains, a few each.

Per record: a cached name split and a few dict/int updates. Lengths and entropies are
computed in ``evaluate`` and only for the client/domain pairs over ``min_unique``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from itertools import islice

from appliance.anomaly.detector import Context
from appliance.anomaly.domains import is_internet_name, split_name
from appliance.anomaly.records import DnsRecord, Finding, FlowRecord

ODD_QTYPES = frozenset({16, 10, 5, 15})
"""TXT, NULL, CNAME, MX: the record types tunnels use for their bigger answers."""


class _Zone:
    """One client's queries under one registered domain."""

    __slots__ = ("first", "last", "names", "odd", "overflow", "queries")

    def __init__(self, ts: float) -> None:
        self.names: dict[str, float] = {}  # subdomain part -> last asked (capped)
        self.queries = 0
        self.odd = 0
        self.overflow = 0  # queries for a name not tracked because ``names`` was full
        self.first = ts
        self.last = ts


def _clamp(value: float) -> float:
    return 0.0 if value < 0.0 else 1.0 if value > 1.0 else value


def entropy_bits(text: str) -> float:
    """Shannon entropy of the characters of ``text`` in bits per character."""
    if not text:
        return 0.0
    total = len(text)
    return -sum(n / total * math.log2(n / total) for n in Counter(text).values())


class DnsTunnelDetector:
    """Findings of kind ``dns-tunnel``, per client and registered domain (the peer)."""

    kinds = ("dns-tunnel",)

    def __init__(
        self,
        context: Context,
        *,
        window: float = 3600.0,
        min_unique: int = 20,
        full_unique: int = 80,
        short_label: float = 12.0,
        long_label: float = 32.0,
        low_entropy: float = 3.0,
        high_entropy: float = 3.8,
        full_rate: float = 600.0,
        min_score: float = 0.25,
        max_names: int = 512,
        max_domains: int = 1024,
        max_client_names: int = 8192,
        sample: int = 256,
    ) -> None:
        """``window`` (s): how long a name counts. ``min_unique``: unique names under one
        domain before it is looked at; ``full_unique``: where ``unique`` saturates.
        ``short_label``/``long_label`` (chars) and ``low_entropy``/``high_entropy`` (bits)
        map the shape sub-scores linearly to [0, 1]; ``full_rate``: queries/h for
        ``rate`` = 1. ``max_names``: names kept per client and domain (past it, new names
        are only counted); ``max_domains`` / ``max_client_names``: domains and names kept
        per client (past either, the least recently seen quarter of its domains goes: a
        running tunnel is recent); ``sample``: names measured per evaluation."""
        self.context = context
        self.window = window
        self.min_unique = min_unique
        self.full_unique = max(full_unique, min_unique + 1)
        self.short_label, self.long_label = short_label, max(long_label, short_label + 1)
        self.low_entropy, self.high_entropy = low_entropy, max(high_entropy, low_entropy + 0.1)
        self.full_rate = full_rate
        self.min_score = min_score
        self.max_names = max_names
        self.max_domains = max_domains
        self.max_client_names = max_client_names
        self.sample = sample
        self._clients: dict[str, dict[str, _Zone]] = {}
        self._names: dict[str, int] = {}  # names kept per client, for max_client_names
        self._infrastructure = context.infrastructure

    def add_flow(self, rec: FlowRecord) -> None:
        """Tunnels show in DNS; their flows all go to the resolver."""

    def add_dns(self, rec: DnsRecord) -> None:
        if rec.client in self._infrastructure:
            return  # the appliance's own resolver forwarding everyone's queries
        split = split_name(rec.qname)
        sub = split.subdomain
        if not sub or not is_internet_name(split):
            return
        zones = self._clients.get(rec.client)
        if zones is None:
            zones = self._clients[rec.client] = {}
        registered = split.registered
        zone = zones.get(registered)
        if zone is None:
            if len(zones) >= self.max_domains:
                self._evict(rec.client, zones)
            zone = zones[registered] = _Zone(rec.ts)
        zone.queries += 1
        zone.last = rec.ts
        if rec.qtype in ODD_QTYPES:
            zone.odd += 1
        names = zone.names
        if sub in names:
            names[sub] = rec.ts
        elif len(names) < self.max_names:
            names[sub] = rec.ts
            kept = self._names.get(rec.client, 0) + 1
            self._names[rec.client] = kept
            if kept > self.max_client_names:
                self._evict(rec.client, zones, keep=zone)
        else:
            zone.overflow += 1

    def _evict(self, client: str, zones: dict[str, _Zone], keep: _Zone | None = None) -> None:
        """Drop the least recently seen quarter of a client's domains (amortised)."""
        oldest = sorted(zones, key=lambda k: zones[k].last)[: len(zones) // 4 or 1]
        freed = 0
        for key in oldest:
            if zones[key] is not keep:
                freed += len(zones.pop(key).names)
        self._names[client] = self._names.get(client, 0) - freed

    def evaluate(self, now: float) -> Iterable[Finding]:
        horizon = now - self.window
        findings: list[Finding] = []
        for client in list(self._clients):
            zones = self._clients[client]
            for registered in list(zones):
                zone = zones[registered]
                if zone.last < horizon:
                    self._names[client] -= len(zones.pop(registered).names)
                    continue
                if len(zone.names) + zone.overflow < self.min_unique:
                    continue
                stale = [name for name, ts in zone.names.items() if ts < horizon]
                for name in stale:
                    del zone.names[name]
                self._names[client] -= len(stale)
                finding = self._judge(client, registered, zone)
                zone.overflow = 0
                if finding is not None and finding.score >= self.min_score:
                    findings.append(finding)
            if not zones:
                del self._clients[client]
                self._names.pop(client, None)
        return findings

    def tracked(self) -> int:
        return sum(
            1 + len(zone.names) for zones in self._clients.values() for zone in zones.values()
        )

    def _judge(self, client: str, registered: str, zone: _Zone) -> Finding | None:
        unique = len(zone.names) + zone.overflow
        if unique < self.min_unique:
            return None
        names = list(islice(reversed(zone.names), self.sample))  # the most recent ones
        longest = [max(len(label) for label in name.split(".")) for name in names]
        mean_len = sum(longest) / len(longest)
        entropy = sum(entropy_bits(name.replace(".", "")) for name in names) / len(names)
        odd_share = zone.odd / zone.queries
        rate = zone.queries * 3600.0 / max(zone.last - zone.first, 60.0)
        s_unique = _clamp((unique - self.min_unique) / (self.full_unique - self.min_unique))
        s_length = _clamp((mean_len - self.short_label) / (self.long_label - self.short_label))
        s_entropy = _clamp((entropy - self.low_entropy) / (self.high_entropy - self.low_entropy))
        s_rate = _clamp(rate / self.full_rate)
        score = s_unique * (0.35 * s_length + 0.35 * s_entropy + 0.3 * odd_share)
        samples = sorted(names, key=len, reverse=True)[:5]
        explanation = (
            f"{unique} different names under {registered} in {self.window / 60:.0f} min"
            f" ({rate:.0f} queries/h): longest labels {mean_len:.0f} characters on average,"
            f" {entropy:.1f} bits/character, {odd_share:.0%} TXT/NULL/CNAME/MX queries"
        )
        return Finding(
            host=client,
            kind="dns-tunnel",
            peer=registered,
            score=round(score, 4),
            first=zone.first,
            last=zone.last,
            explanation=explanation,
            subscores={
                "unique": round(s_unique, 4),
                "length": round(s_length, 4),
                "entropy": round(s_entropy, 4),
                "qtype": round(odd_share, 4),
                "rate": round(s_rate, 4),
            },
            evidence={
                "unique_names": unique,
                "queries": zone.queries,
                "odd_qtype_queries": zone.odd,
                "mean_label_len": round(mean_len, 1),
                "max_label_len": max(longest),
                "entropy_bits": round(entropy, 2),
                "queries_per_hour": round(rate, 1),
                "names_capped": len(zone.names) >= self.max_names,
                "samples": [name[:80] for name in samples],
            },
        )

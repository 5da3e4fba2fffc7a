"""DGA malware: bursts of NXDOMAIN answers for many *different* names no person would pick.

A domain generation algorithm makes a bot try tens to hundreds of freshly generated
registered domains until one resolves (the one its operator registered that day). So per
client, in a window, the evidence is:

* how many distinct registered domains came back NXDOMAIN (``nxdomain`` sub-score), and
  their share of the client's queries (``ratio``);
* how unlike real names those labels are under the character n-gram model (``names``):
  the share of NXDOMAIN labels scoring below ``low_likelihood``, with their mean
  log-likelihood and the generated-looking names that *did* resolve during the burst (the
  bot's hit) as evidence.

``score = nxdomain * min(1, names + ratio_weight * ratio)``.

Counting *distinct registered domains* is what keeps the hard negatives quiet: a printer
asking for the same missing name all day is one domain; search-domain suffix queries
(``www.example.com.corp.example``) are all under ``corp.example``; a typo is one or two
names, and typos read like real names. A resolver that answers blocked ad domains with
NXDOMAIN makes many distinct NXDOMAIN names, but real ones: the ``names`` factor keeps that
low. Dictionary-word DGAs (suppobox) read like real names too and so score low unless the
share of NXDOMAIN answers is high: measured, not hidden (``train_ngram.py --report``).

Per record: one cached name split and one dict update. The n-gram scoring runs only in
``evaluate`` and only for clients over the NXDOMAIN threshold, cached per label (LRU).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from appliance.anomaly.detector import Context
from appliance.anomaly.domains import is_internet_name, split_name
from appliance.anomaly.ngram import NgramModel, default_model
from appliance.anomaly.records import DnsRecord, Finding, FlowRecord

NXDOMAIN = 3

# index of a domain entry's fields: [queries, first seen, last seen]
_COUNT, _FIRST, _LAST = 0, 1, 2


FLOOD_FLOOR = 0.7  # a flood alone is high severity: no office program does it


@dataclass(slots=True)
class _ClientDomains:
    """One client's registered domains in the window: NXDOMAIN ones and resolved ones."""

    nx: dict[str, list[float]] = field(default_factory=dict)
    ok: dict[str, list[float]] = field(default_factory=dict)
    dropped: int = 0  # entries evicted by the caps since the last evaluation


def _clamp(value: float) -> float:
    return 0.0 if value < 0.0 else 1.0 if value > 1.0 else value


class DgaDetector:
    """Findings of kind ``dga``, one per client (peer ``""``: a DGA has no single peer)."""

    kinds = ("dga",)

    def __init__(
        self,
        context: Context,
        *,
        window: float = 3600.0,
        min_nx_domains: int = 8,
        full_nx_domains: int = 40,
        low_likelihood: float = -3.6,
        ratio_weight: float = 0.8,
        flood_nx_domains: int = 120,
        min_score: float = 0.2,
        max_nx_domains: int = 512,
        max_ok_domains: int = 1024,
        cache_size: int = 8192,
        model: NgramModel | None = None,
    ) -> None:
        """``window`` (s): how long a domain counts. ``min_nx_domains``: distinct NXDOMAIN
        registered domains before a client is looked at; ``full_nx_domains``: where the
        volume sub-score saturates. ``low_likelihood``: the n-gram score (nats per symbol)
        below which a label reads as generated; the default flags ~5% of held-out real
        labels (see ``train_ngram.py --report``). ``ratio_weight``: how much the NXDOMAIN
        share of the client's queries adds for real-looking names. ``flood_nx_domains``:
        this many distinct non-existent domains in the window is a DGA burst however real
        the names look (dictionary DGAs): the flood sub-score starts at FLOOD_FLOOR (high
        severity) there and reaches 1 at twice it.
        ``max_*``: per client caps (the oldest quarter is evicted when one is reached)."""
        self.context = context
        self.window = window
        self.min_nx_domains = min_nx_domains
        self.full_nx_domains = max(full_nx_domains, min_nx_domains + 1)
        self.low_likelihood = low_likelihood
        self.ratio_weight = ratio_weight
        self.flood_nx_domains = flood_nx_domains
        self.min_score = min_score
        self.max_nx_domains = max_nx_domains
        self.max_ok_domains = max_ok_domains
        self.model = model or default_model()
        self.label_score = lru_cache(maxsize=cache_size)(self.model.score)
        self._clients: dict[str, _ClientDomains] = {}
        self._infrastructure = context.infrastructure

    def add_flow(self, rec: FlowRecord) -> None:
        """DGAs show in DNS only."""

    def add_dns(self, rec: DnsRecord) -> None:
        if rec.client in self._infrastructure:
            return  # the appliance's own resolver forwarding everyone's queries
        split = split_name(rec.qname)
        if not is_internet_name(split):
            return
        state = self._clients.get(rec.client)
        if state is None:
            state = self._clients[rec.client] = _ClientDomains()
        if rec.rcode == NXDOMAIN:
            table, cap = state.nx, self.max_nx_domains
        else:
            table, cap = state.ok, self.max_ok_domains
        registered = split.registered
        entry = table.get(registered)
        if entry is not None:
            entry[_COUNT] += 1
            entry[_LAST] = rec.ts
            return
        if len(table) >= cap:
            state.dropped += _evict_oldest(table, len(table) // 4 or 1)
        table[registered] = [1, rec.ts, rec.ts]

    def evaluate(self, now: float) -> Iterable[Finding]:
        horizon = now - self.window
        findings: list[Finding] = []
        for client in list(self._clients):
            state = self._clients[client]
            _age_out(state.nx, horizon)
            _age_out(state.ok, horizon)
            if not state.nx and not state.ok:
                del self._clients[client]
                continue
            if len(state.nx) >= self.min_nx_domains:
                finding = self._judge(client, state)
                if finding is not None and finding.score >= self.min_score:
                    findings.append(finding)
            state.dropped = 0
        return findings

    def tracked(self) -> int:
        return sum(len(s.nx) + len(s.ok) for s in self._clients.values())

    def _judge(self, client: str, state: _ClientDomains) -> Finding | None:
        low = self.low_likelihood
        nx_scores = {d: self.label_score(split_name(d).label) for d in state.nx}
        names = sum(s < low for s in nx_scores.values()) / len(nx_scores)
        mean_ll = sum(nx_scores.values()) / len(nx_scores)
        nx_queries = sum(int(e[_COUNT]) for e in state.nx.values())
        ok_queries = sum(int(e[_COUNT]) for e in state.ok.values())
        ratio = nx_queries / (nx_queries + ok_queries)
        distinct = len(state.nx)
        span = self.full_nx_domains - self.min_nx_domains
        volume = _clamp((distinct - self.min_nx_domains + 1) / (span + 1))
        # Generated-looking names carry the finding. Real-looking ones (blocked ads, typos,
        # dictionary DGAs) reach a score only when NXDOMAIN dominates the client's queries.
        score = volume * min(1.0, names + self.ratio_weight * ratio)
        # A flood of distinct non-existent domains: no office program does that, whatever
        # the names look like (the resolver's own blocks never get here: see querytail).
        over = (distinct - self.flood_nx_domains) / self.flood_nx_domains
        flood = 0.0 if over < 0 else FLOOD_FLOOR + (1 - FLOOD_FLOOR) * _clamp(over)
        score = max(score, flood)
        burst = min(e[_FIRST] for e in state.nx.values())
        hits = sorted(
            (
                d
                for d, e in state.ok.items()
                if e[_FIRST] >= burst and self.label_score(split_name(d).label) < low
            ),
            key=lambda d: state.ok[d][_FIRST],
        )
        first = burst
        last = max(e[_LAST] for e in state.nx.values())
        samples = sorted(nx_scores, key=nx_scores.__getitem__)[:8]
        explanation = (
            f"{distinct} different domains did not exist (NXDOMAIN) in"
            f" {self.window / 60:.0f} min, {ratio:.0%} of its queries;"
            f" {names:.0%} of their names read like generated ones"
            f" (mean n-gram score {mean_ll:.2f})"
        )
        if hits:
            explanation += f"; generated-looking names that resolved: {', '.join(hits[:3])}"
        return Finding(
            host=client,
            kind="dga",
            peer="",
            score=round(score, 4),
            first=first,
            last=last,
            explanation=explanation,
            subscores={
                "nxdomain": round(volume, 4),
                "ratio": round(ratio, 4),
                "names": round(names, 4),
                "flood": round(flood, 4),
            },
            evidence={
                "nx_domains": distinct,
                "nx_queries": nx_queries,
                "queries": nx_queries + ok_queries,
                "mean_loglik": round(mean_ll, 3),
                "samples": samples,
                "resolved_generated": hits[:8],
                "evicted": state.dropped,
            },
        )


def _age_out(table: dict[str, list[float]], horizon: float) -> None:
    stale = [key for key, entry in table.items() if entry[_LAST] < horizon]
    for key in stale:
        del table[key]


def _evict_oldest(table: dict[str, list[float]], count: int) -> int:
    """Drop the ``count`` least recently seen entries (amortised: a quarter at a time)."""
    for key in sorted(table, key=lambda k: table[k][_LAST])[:count]:
        del table[key]
    return count

"""Threat intelligence: contact with addresses and names on configured feeds (kind ``intel``).

Feeds are plain text, one CIDR, address or domain per line, ``#`` comments and blank lines
allowed (the format most public blocklists already have). A domain entry matches its
subdomains. A bad line is counted and reported with its file and line number, never fatal:
one malformed line in a 50,000-line feed must not switch the rest off.

Hits are high-confidence by nature (someone already judged the peer), so the finding's score
starts high; the scorer's modifiers can still lower it for a peer the whole office uses.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from appliance.anomaly.detector import Context
from appliance.anomaly.peers import remote_check
from appliance.anomaly.records import DnsRecord, Finding, FlowRecord
from appliance.errors import AnomalyError

DAY = 86400.0
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class InvalidLine:
    source: str
    line: int
    text: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}: {self.text!r}"


class ThreatIntel:
    """Listed networks (per address family and prefix length, as integer sets) and domains.

    ``match_address`` is cached per instance: every outbound flow asks, and an office talks to
    the same few thousand addresses all day.
    """

    def __init__(self) -> None:
        self.networks: dict[tuple[int, int], set[int]] = {}
        self.domains: set[str] = set()
        self.invalid: list[InvalidLine] = []
        self.entries = 0
        self.match_address = lru_cache(maxsize=65536)(self._match_address)

    @classmethod
    def load(cls, paths: Iterable[str | Path]) -> ThreatIntel:
        """Read every feed; a missing or unreadable file is a configuration error."""
        intel = cls()
        for path in paths:
            try:
                text = Path(path).read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                raise AnomalyError(
                    f"threat intel feed {path}: {exc.strerror or exc}; "
                    "give a readable file with one CIDR, address or domain per line"
                ) from exc
            intel.add_lines(text.splitlines(), str(path))
        return intel

    def add_lines(self, lines: Iterable[str], source: str = "<feed>") -> None:
        for number, raw in enumerate(lines, 1):
            text = raw.split("#", 1)[0].strip()
            if not text:
                continue
            reason = self._add(text.lower())
            if reason:
                self.invalid.append(InvalidLine(source, number, raw.strip(), reason))
            else:
                self.entries += 1
        self.match_address.cache_clear()

    def _add(self, text: str) -> str:
        """Add one entry; return why it is invalid, or "" when it was added."""
        if text[:1].isdigit() or ":" in text:
            try:
                net = ipaddress.ip_network(text, strict=False)
            except ValueError:
                return "not an address or CIDR"
            bucket = self.networks.setdefault((net.version, net.prefixlen), set())
            bucket.add(int(net.network_address))
            return ""
        name = text.removeprefix("*.").rstrip(".")
        labels = name.split(".")
        if not all(_LABEL.match(label) for label in labels):
            return "not a domain name"
        if len(labels) < 2:
            return "a single label would match a whole top-level domain"
        self.domains.add(name)
        return ""

    def _match_address(self, address: str) -> str | None:
        """The listed network (as CIDR text) that holds ``address``, if any."""
        if not self.networks:
            return None
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
        value, bits = int(ip), ip.max_prefixlen
        for (version, prefix), values in self.networks.items():
            if version == ip.version:
                masked = value >> (bits - prefix) << (bits - prefix)
                if masked in values:
                    return f"{ipaddress.ip_address(masked)}/{prefix}"
        return None

    def match_domain(self, name: str) -> str | None:
        """The listed domain equal to ``name`` or a parent of it, if any."""
        domains = self.domains
        while True:
            if name in domains:
                return name
            dot = name.find(".")
            if dot < 0:
                return None
            name = name[dot + 1 :]

    def __bool__(self) -> bool:
        return bool(self.networks or self.domains)


class _Hit:
    __slots__ = ("count", "first", "how", "indicator", "last")

    def __init__(self, ts: float, indicator: str, how: str) -> None:
        self.first = self.last = ts
        self.count = 0
        self.indicator = indicator
        self.how = how


class IntelDetector:
    """Flows to listed addresses (or to addresses of listed names) and queries for listed names."""

    kinds = ("intel",)

    def __init__(
        self,
        context: Context,
        *,
        intel: ThreatIntel | None = None,
        address_score: float = 0.9,
        domain_score: float = 0.85,
        horizon: float = DAY,
        max_hits: int = 10_000,
    ) -> None:
        self._is_lan = context.networks.is_lan
        self._is_remote = remote_check(context.networks)
        self._intel = intel if intel is not None else ThreatIntel()
        self.address_score = address_score
        self.domain_score = domain_score
        self.horizon = horizon
        self.max_hits = max_hits
        self._hits: dict[tuple[str, str], _Hit] = {}
        self._resolved: dict[str, tuple[str, str, float]] = {}  # address -> name, entry, ts

    def add_flow(self, rec: FlowRecord) -> None:
        if not self._intel:
            return
        src, dst = rec.src, rec.dst
        if self._is_lan(src):
            host, peer = src, dst
        elif self._is_lan(dst) and rec.state == "established":
            host, peer = dst, src  # a listed peer got an answer from inside
        else:
            return
        if not self._is_remote(peer):
            return
        entry = self._intel.match_address(peer)
        if entry is not None:
            self._hit(host, peer, rec.start, entry, "address")
            return
        resolved = self._resolved.get(peer)
        if resolved is not None:
            self._hit(host, resolved[0], rec.start, resolved[1], "resolved")

    def add_dns(self, rec: DnsRecord) -> None:
        if not self._intel or not self._is_lan(rec.client):
            return
        entry = self._intel.match_domain(rec.qname)
        for answer in rec.answers:
            if entry is None and not (answer[:1].isdigit() or ":" in answer):
                entry = self._intel.match_domain(answer.lower().rstrip("."))  # a CNAME target
        if entry is None:
            return
        self._hit(rec.client, rec.qname, rec.ts, entry, "domain")
        for answer in rec.answers:
            if (answer[:1].isdigit() or ":" in answer) and len(self._resolved) < self.max_hits:
                self._resolved[answer] = (rec.qname, entry, rec.ts)

    def evaluate(self, now: float) -> list[Finding]:
        cutoff = now - self.horizon
        for key in [k for k, hit in self._hits.items() if hit.last < cutoff]:
            del self._hits[key]
        for address in [a for a, r in self._resolved.items() if r[2] < cutoff]:
            del self._resolved[address]
        return [self._finding(host, peer, hit) for (host, peer), hit in self._hits.items()]

    def tracked(self) -> int:
        return len(self._hits) + len(self._resolved)

    def _hit(self, host: str, peer: str, ts: float, entry: str, how: str) -> None:
        hit = self._hits.get((host, peer))
        if hit is None:
            if len(self._hits) >= self.max_hits:
                return
            hit = self._hits[(host, peer)] = _Hit(ts, entry, how)
        hit.count += 1
        hit.last = max(hit.last, ts)
        hit.first = min(hit.first, ts)

    def _finding(self, host: str, peer: str, hit: _Hit) -> Finding:
        by_name = hit.how != "address"
        what = {
            "address": f"contacted {peer}, listed as {hit.indicator}",
            "domain": f"looked up {peer}, listed under {hit.indicator}",
            "resolved": f"contacted {peer} at an address its listed name ({hit.indicator}) gave",
        }[hit.how]
        return Finding(
            host=host,
            kind="intel",
            peer=peer,
            score=self.domain_score if by_name else self.address_score,
            first=hit.first,
            last=hit.last,
            explanation=f"{what} on a threat intel feed ({hit.count} times)",
            subscores={"intel": 1.0},
            evidence={"indicator": hit.indicator, "match": hit.how, "count": hit.count},
        )

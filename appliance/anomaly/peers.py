"""Who a flow's far end is: an external peer or not, and by which name the office knows it.

Detectors and the scorer ask both questions for every flow, so the answers are cached or a
single dict lookup. Names come from DNS answers seen in ``DnsRecord.answers``: a flow to an
address a host just resolved is reported by that name, and flows to several addresses of one
name are aggregated under it (a C2 behind a CDN rotates addresses, not names).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from functools import lru_cache

from appliance.anomaly.detector import Networks
from appliance.anomaly.records import DnsRecord

DAY = 86400.0


@lru_cache(maxsize=16)
def remote_check(networks: Networks) -> Callable[[str], bool]:
    """A cached ``is_remote(address)``: routable and not the office's own.

    One check (and one cache) per ``Networks``, shared by the scorer and every detector: a
    cache miss parses the address, and each detector missing on its own would parse it again.

    Multicast and broadcast (SSDP every 30 s to 239.255.255.250, mDNS) are neither LAN nor a
    peer on the internet: counted as external they would be the most regular "beacons" of all.
    """
    is_lan = networks.is_lan

    @lru_cache(maxsize=65536)
    def is_remote(address: str) -> bool:
        if is_lan(address):
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return not (
            ip.is_multicast
            or ip.is_loopback
            or ip.is_unspecified
            or ip.is_link_local
            or ip.is_reserved  # 255.255.255.255 and the rest of 240/4
        )

    return is_remote


class PeerNames:
    """Address -> the name a host last resolved to it, forgotten ``horizon`` seconds later.

    One map for the office, not one per host: two hosts resolving the same CDN address to
    different names is rare enough that "last answer wins" costs less than a map per host.
    """

    def __init__(self, horizon: float = DAY, max_entries: int = 50_000) -> None:
        self.horizon = horizon
        self.max_entries = max_entries
        self._names: dict[str, tuple[str, float]] = {}

    def add_dns(self, rec: DnsRecord) -> None:
        if not rec.answers:
            return
        names = self._names
        for answer in rec.answers:
            # answers hold CNAME targets as well: only addresses name a flow's peer
            if answer[:1].isdigit() or ":" in answer:
                names[answer] = (rec.qname, rec.ts)
        if len(names) > self.max_entries:
            self._shrink(self.max_entries * 3 // 4)

    def key(self, address: str) -> str:
        """The name of ``address`` if a DNS answer gave one, else the address itself."""
        entry = self._names.get(address)
        return entry[0] if entry is not None else address

    def name(self, address: str) -> str | None:
        entry = self._names.get(address)
        return entry[0] if entry is not None else None

    def expire(self, now: float) -> None:
        cutoff = now - self.horizon
        stale = [a for a, (_name, ts) in self._names.items() if ts < cutoff]
        for address in stale:
            del self._names[address]

    def tracked(self) -> int:
        return len(self._names)

    def _shrink(self, keep: int) -> None:
        newest = sorted(self._names.items(), key=lambda item: item[1][1], reverse=True)[:keep]
        self._names = dict(newest)

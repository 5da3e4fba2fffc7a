"""Names that firewall rules follow: which nft sets a name's answers feed.

A rule such as "IoT may reach *.vendor-cloud.example" compiles to nft sets that hold the
addresses of those names. The resolver knows them first: whenever it answers such a name
(from upstream, the cache or stale), it hands the A/AAAA addresses to a ``SetFeed``.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Sequence

from dns_filter.feeds import SetFeed

_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
TYPE_A, TYPE_AAAA = 1, 28


class DomainSets:
    """``sets_for(name)``: the set base names (``dom_<rule>``) whose patterns match.

    ``example.com`` matches the name and its subdomains, ``*.example.com`` only subdomains.
    """

    def __init__(self, sets: Iterable[tuple[str, Sequence[str]]]) -> None:
        self._names: dict[str, list[str]] = {}
        self._wild: dict[str, list[str]] = {}
        self.set_names: list[str] = []
        self.exact_names: list[str] = []  # names without a wildcard, for priming
        for set_name, patterns in sets:
            self.set_names.append(set_name)
            for p in patterns:
                table, key = (self._wild, p[2:]) if p.startswith("*.") else (self._names, p)
                table.setdefault(key.lower(), []).append(set_name)
                if table is self._names and key not in self.exact_names:
                    self.exact_names.append(key)
        self._cache: dict[str, tuple[str, ...]] = {}

    def __bool__(self) -> bool:
        return bool(self.set_names)

    def sets_for(self, qname: str) -> tuple[str, ...]:
        found = self._cache.get(qname)
        if found is not None:
            return found
        hits: list[str] = []
        name = qname
        first = True
        while name:
            hits += self._names.get(name, ())
            if not first:
                hits += self._wild.get(name, ())
            first = False
            _, _, name = name.partition(".")
        result = tuple(dict.fromkeys(hits))
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[qname] = result
        return result

    def feed(
        self, feed: SetFeed, qname: str, response: bytes, min_timeout: int, *, stale: bool = False
    ) -> int:
        """Queue the answer's addresses for every set ``qname`` feeds; how many were queued.

        An element lives at least ``min_timeout`` seconds, and longer when the record's TTL
        is longer: clients may keep using an address as long as they cached it.
        """
        sets = self.sets_for(qname)
        if not sets:
            return 0
        count = 0
        for family, address, ttl in answer_addresses(response):
            timeout = max(min_timeout, ttl + 60 if not stale else min_timeout)
            for s in sets:
                feed.add(f"{s}_v{family}", family, address, min(timeout, 7 * 86_400))
                count += 1
        return count


def _skip_name(data: bytes, pos: int) -> int:
    while True:
        length = data[pos]
        if length == 0:
            return pos + 1
        if length >= 0xC0:
            return pos + 2
        pos += 1 + length


def answer_addresses(response: bytes) -> list[tuple[int, str, int]]:
    """(family, address, TTL) of each A/AAAA record in the answer section; [] if malformed."""
    try:
        _, _, qdcount, ancount, _, _ = _HEADER.unpack_from(response, 0)
        pos = 12
        for _ in range(qdcount):
            pos = _skip_name(response, pos) + 4
        out: list[tuple[int, str, int]] = []
        for _ in range(ancount):
            pos = _skip_name(response, pos)
            rtype, rclass, ttl, rdlength = _RR.unpack_from(response, pos)
            rdata = response[pos + 10 : pos + 10 + rdlength]
            if len(rdata) != rdlength:
                return []
            if rclass == 1 and rtype == TYPE_A and rdlength == 4:
                out.append((4, socket.inet_ntop(socket.AF_INET, rdata), ttl))
            elif rclass == 1 and rtype == TYPE_AAAA and rdlength == 16:
                out.append((6, socket.inet_ntop(socket.AF_INET6, rdata), ttl))
            pos += 10 + rdlength
        return out
    except (IndexError, struct.error):
        return []

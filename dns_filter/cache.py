"""Bounded LRU cache of upstream responses that answers hits without parsing them again.

Why wire bytes and not dnslib objects: a cache hit is the most common answer the resolver
gives, and re-packing a dnslib record costs ~30 µs on this box. ``put`` walks the response
once, by hand, and records where every TTL field sits; ``get`` copies the bytes, writes the
client's ID and the remaining TTLs at those offsets, and is done.

TTL rules: a positive answer lives as long as its shortest answer/authority record; a
negative answer (NXDOMAIN, or NODATA = NOERROR without answers) lives min(SOA TTL, SOA
MINIMUM) per RFC 2308, capped by ``negative_ttl``, and is not cached at all without a SOA.
Both are clamped to [min_ttl, max_ttl]. Expired entries stay around for ``stale_window``
seconds so the server can answer from them when every upstream fails (RFC 8767).
"""

from __future__ import annotations

import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from dns_filter.errors import WireError

__all__ = ["STALE_TTL", "CacheKey", "DnsCache"]

CacheKey = tuple[str, int, int, bool]
"""(qname lowercase without trailing dot, qtype, qclass, DNSSEC OK bit)."""

STALE_TTL = 30
"""TTL written into stale answers, as RFC 8767 recommends."""

_TYPE_SOA = 6
_TYPE_OPT = 41
_unpack_header = struct.Struct("!HHHHHH").unpack_from
_unpack_hh = struct.Struct("!HH").unpack_from
_unpack_rr = struct.Struct("!HHIH").unpack_from  # type, class, ttl, rdlength
_unpack_u32 = struct.Struct("!I").unpack_from
_pack_id_into = struct.Struct("!H").pack_into
_pack_id = struct.Struct("!H").pack
_pack_ttl_into = struct.Struct("!I").pack_into


@dataclass(slots=True)
class _Entry:
    data: bytes
    stored: float  # clock() when cached
    expires: float  # clock() when the entry stops being fresh
    ttl: int  # the lifetime kept, after clamping
    offsets: tuple[int, ...]  # where each TTL field (OPT excluded) starts in ``data``
    ttls: tuple[int, ...]  # the TTL to write at each offset when the entry is brand new
    hits: int = 0  # fresh hits since this response was cached (prefetch popularity)
    age: int = -1  # whole seconds ``data``'s TTL fields are counted down by; -1: not yet


def _skip_name(data: bytes, pos: int) -> int:
    """Offset just past a possibly compressed name; a pointer ends the name (2 bytes).

    Pointer targets are not followed: the cache never needs the names, only the offsets.
    """
    while True:
        length = data[pos]  # IndexError when truncated: the caller refuses the response
        if length == 0:
            return pos + 1
        if length >= 0xC0:
            return pos + 2  # a missing second byte shows up as a truncated record next
        if length > 63:
            raise WireError("reserved label type")
        pos += 1 + length


def _scan(data: bytes, key: CacheKey) -> tuple[bool, list[int], list[int], list[int], int] | None:
    """Walk a response once: (negative, TTL offsets, TTLs, answer+authority TTLs, SOA TTL).

    Negative means NXDOMAIN, or NODATA (NOERROR without answers).

    The SOA TTL is min(SOA TTL, MINIMUM) of the first SOA in the authority section, or -1.
    Returns None for anything that must not be cached (see ``DnsCache.put``); raises
    WireError, IndexError or struct.error for malformed data.
    """
    n = len(data)
    _, flags, qdcount, ancount, nscount, arcount = _unpack_header(data)
    rcode = flags & 0xF
    # Must be a QUERY response, not truncated, NOERROR or NXDOMAIN, for exactly our question.
    if flags & 0xFA00 != 0x8000 or rcode not in (0, 3) or qdcount != 1:
        return None
    pos = 12
    labels: list[bytes] = []
    while length := data[pos]:
        if length > 63:
            return None  # a compressed question name is legal but nothing sends one
        labels.append(data[pos + 1 : pos + 1 + length])
        pos += 1 + length
    qtype, qclass = _unpack_hh(data, pos + 1)
    if b".".join(labels).lower() != key[0].encode("ascii") or (qtype, qclass) != key[1:3]:
        return None
    pos += 5

    offsets: list[int] = []
    ttls: list[int] = []
    section_ttls: list[int] = []
    soa_ttl = -1
    for index in range(ancount + nscount + arcount):
        pos = _skip_name(data, pos)
        rtype, _, ttl, rdlength = _unpack_rr(data, pos)
        rdata = pos + 10
        end = rdata + rdlength
        if end > n:
            raise WireError("record data runs past the end")
        if rtype == _TYPE_OPT:
            if ttl >> 24 or index < ancount + nscount:
                return None  # extended RCODE (e.g. BADVERS), or an OPT out of place
        else:
            ttl = ttl if ttl <= 0x7FFFFFFF else 0  # RFC 2181 section 8
            offsets.append(pos + 4)
            ttls.append(ttl)
            if index < ancount + nscount:
                section_ttls.append(ttl)
                if rtype == _TYPE_SOA and index >= ancount and soa_ttl < 0:
                    times = _skip_name(data, _skip_name(data, rdata))  # MNAME, RNAME
                    if times + 20 != end:
                        raise WireError("malformed SOA")
                    soa_ttl = min(ttl, _unpack_u32(data, times + 16)[0])
        pos = end
    if pos != n:
        raise WireError("trailing bytes")
    return rcode == 3 or ancount == 0, offsets, ttls, section_ttls, soa_ttl


class DnsCache:
    """LRU response cache keyed by ``CacheKey``; hits are byte copies with TTLs patched in.

    Memory is bounded twice: by ``max_entries`` and by ``max_bytes`` of stored responses
    (a single DNS response can be 64 KiB). Not thread-safe: the resolver's event loop owns it.
    Counters (``hits``, ``misses``, ``stale_hits``, ``evictions``) survive ``clear()``
    because they feed monotonic Prometheus counters.
    """

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        min_ttl: int = 0,
        max_ttl: int = 86_400,
        negative_ttl: int = 300,
        stale_window: int = 86_400,
        max_bytes: int = 32 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("max_entries and max_bytes must be at least 1")
        if not 0 <= min_ttl <= max_ttl:
            raise ValueError("need 0 <= min_ttl <= max_ttl")
        if negative_ttl < 0 or stale_window < 0:
            raise ValueError("negative_ttl and stale_window must not be negative")
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._min_ttl = min_ttl
        self._max_ttl = max_ttl
        self._negative_ttl = negative_ttl
        self._stale_window = stale_window
        self._clock = clock
        self._entries: OrderedDict[CacheKey, _Entry] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0
        self.stale_hits = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def responses(self) -> list[tuple[CacheKey, bytes]]:
        """Every stored response (fresh or stale), e.g. to seed sets after a policy change."""
        return [(key, entry.data) for key, entry in self._entries.items()]

    def clear(self) -> None:
        """Forget every entry (e.g. after a policy change); counters keep counting."""
        self._entries.clear()
        self._bytes = 0

    def stats(self) -> dict[str, int]:
        """Counters for ``Metrics.render(cache=...)``."""
        return {
            "hits": self.hits,
            "misses": self.misses,
            "stale_hits": self.stale_hits,
            "evictions": self.evictions,
        }

    def _clamp(self, ttl: int) -> int:
        return min(max(ttl, self._min_ttl), self._max_ttl)

    def put(self, key: CacheKey, response: bytes) -> None:
        """Cache an upstream response for ``key`` if it is cacheable; otherwise do nothing.

        Not cached: malformed or truncated (TC) responses, rcodes other than NOERROR and
        NXDOMAIN (SERVFAIL and REFUSED say nothing about the name), responses whose question
        is not ``key``, negative answers without a SOA, and responses over ``max_bytes``.
        """
        if len(response) > self._max_bytes:
            return
        try:
            scanned = _scan(response, key)
        except (WireError, IndexError, struct.error, UnicodeEncodeError):
            return
        if scanned is None:
            return
        negative, offsets, ttls, section_ttls, soa_ttl = scanned
        if negative:
            if soa_ttl < 0:
                return  # RFC 2308: a negative answer without SOA must not be cached
            keep = self._clamp(min(soa_ttl, self._negative_ttl, *section_ttls))
            ttls = [min(self._clamp(ttl), keep) for ttl in ttls]
        else:
            keep = self._clamp(min(section_ttls))
            ttls = [self._clamp(ttl) for ttl in ttls]

        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= len(old.data)
        now = self._clock()
        self._entries[key] = _Entry(response, now, now + keep, keep, tuple(offsets), tuple(ttls))
        self._bytes += len(response)
        while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= len(evicted.data)
            self.evictions += 1

    def get(self, key: CacheKey, qid: int) -> bytes | None:
        """Fresh cached response with ``qid`` and the remaining TTLs, or None on a miss.

        An expired entry is kept for ``get_stale`` until its stale window has passed too.
        """
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        now = self._clock()
        if now >= entry.expires:
            self.misses += 1
            if now >= entry.expires + self._stale_window:
                self._drop(key, entry)
            return None
        self._entries.move_to_end(key)
        entry.hits += 1
        self.hits += 1
        age = int(now - entry.stored)
        if age != entry.age:
            # TTLs change once a second: rewrite them then, not on every hit (1.37 µs a hit
            # before, 0.3 µs now; popular names are answered thousands of times a second).
            buf = bytearray(entry.data)
            for offset, ttl in zip(entry.offsets, entry.ttls, strict=True):
                _pack_ttl_into(buf, offset, ttl - age if ttl > age else 0)
            entry.data = bytes(buf)
            entry.age = age
        return _pack_id(qid) + entry.data[2:]

    def get_stale(self, key: CacheKey, qid: int) -> bytes | None:
        """For when every upstream failed: an answer expired less than ``stale_window`` ago,
        with every TTL set to ``STALE_TTL`` (RFC 8767). A still fresh entry is served like
        ``get``; anything older than the window is dropped and None returned."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = self._clock()
        if now < entry.expires:
            return self.get(key, qid)
        if now >= entry.expires + self._stale_window:
            self._drop(key, entry)
            return None
        self._entries.move_to_end(key)
        self.stale_hits += 1
        buf = bytearray(entry.data)
        _pack_id_into(buf, 0, qid)
        for offset in entry.offsets:
            _pack_ttl_into(buf, offset, STALE_TTL)
        return bytes(buf)

    def due_for_prefetch(self, threshold_hits: int = 3, fraction: float = 0.1) -> list[CacheKey]:
        """Keys of popular entries (``threshold_hits`` fresh hits since cached) with less than
        ``fraction`` of their TTL left, so the server refreshes them before clients miss.

        O(entries); meant for a periodic task, not the answer path. A key stays listed until
        a new response is ``put`` for it (which resets its hits) or it expires.
        """
        now = self._clock()
        return [
            key
            for key, entry in self._entries.items()
            if entry.hits >= threshold_hits and 0 < entry.expires - now < fraction * entry.ttl
        ]

    def _drop(self, key: CacheKey, entry: _Entry) -> None:
        del self._entries[key]
        self._bytes -= len(entry.data)

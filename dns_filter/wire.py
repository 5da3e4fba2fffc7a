"""Hand-written DNS wire parsing and response building for the resolver's hot path.

Why not dnslib here: on this box ``DNSRecord.parse`` of one query costs about 10 µs and a
reply plus ``pack`` about 30 µs, while the budget for a blocked or cached answer is a few
microseconds. A query has a rigid shape (one question, no answers, at most an OPT record),
so a strict parser is short and refuses everything else with a ``WireError`` the server
turns into FORMERR (``formerr``) or a silent drop. Responses are built by concatenating the
original question bytes (which also echoes the client's 0x20 mixed case) with fixed
records; answer owners are the compression pointer ``0xC00C`` to the question name.

Everything else (upstream responses, zone data) may use dnslib; this module must not.
"""

from __future__ import annotations

import functools
import ipaddress
import struct
from collections.abc import Container
from dataclasses import dataclass

from dns_filter.errors import WireError

__all__ = [
    "EDNS_UDP_SIZE",
    "Query",
    "address_answer",
    "dotted_name",
    "encode_name",
    "formerr",
    "local_answer",
    "nodata",
    "null_answer",
    "nxdomain",
    "parse_query",
    "refused",
    "rfc8482_any",
    "servfail",
    "with_id",
]

TYPE_A = 1
TYPE_SOA = 6
TYPE_HINFO = 13
TYPE_AAAA = 28
TYPE_OPT = 41
CLASS_IN = 1

RCODE_NOERROR = 0
RCODE_FORMERR = 1
RCODE_SERVFAIL = 2
RCODE_NXDOMAIN = 3
RCODE_REFUSED = 5

EDNS_UDP_SIZE = 1232
"""UDP payload size we advertise: the DNS Flag Day 2020 value, safe against fragmentation."""

_HEADER = struct.Struct("!HHHHHH")
_pack_header = _HEADER.pack
_unpack_header = _HEADER.unpack_from
_unpack_hh = struct.Struct("!HH").unpack_from
# qtype, qclass, then the OPT record: owner length byte, type, class (UDP size), ttl, rdlength
_unpack_question_opt = struct.Struct("!HHBHHIH").unpack_from
_pack_rr_fixed = struct.Struct("!HHIH").pack  # type, class, ttl, rdlength
_pack_h = struct.Struct("!H").pack
_pack_soa_times = struct.Struct("!IIIII").pack

# Graphic ASCII except '.': a '.' inside a label cannot survive as a dotted string (it would
# alias another name), and control bytes, spaces or non-ASCII have no business in names we
# match against block lists or write to logs.
_NAME_BYTES = bytes(b for b in range(0x21, 0x7F) if b != 0x2E)
_SEPARATORS = tuple(b"." * max(i - 1, 0) for i in range(128))  # by label count (<= 127)

_OPT_PLAIN = b"\x00" + _pack_rr_fixed(TYPE_OPT, EDNS_UDP_SIZE, 0, 0)
_OPT_DO = b"\x00" + _pack_rr_fixed(TYPE_OPT, EDNS_UDP_SIZE, 0x8000, 0)
_ANSWER_PTR = b"\xc0\x0c"  # the question name starts right after the 12-byte header
_HINFO_RFC8482 = b"\x07RFC8482\x00"
_ZERO_V4 = bytes(4)
_ZERO_V6 = bytes(16)
# SOA timers other than MINIMUM hardly matter for a synthetic zone; keep them conventional.
_SOA_SERIAL, _SOA_REFRESH, _SOA_RETRY, _SOA_EXPIRE = 1, 3600, 600, 86_400
_HOSTMASTER = b"\x0ahostmaster"


@dataclass(slots=True)
class Query:
    """One parsed DNS query; ``raw`` is kept so answers can copy the question verbatim."""

    id: int
    flags: int
    """The 16-bit header flags word as received (RD is 0x0100, CD is 0x0010)."""
    key: bytes
    """The question name's wire labels exactly as sent (no terminating zero): what the
    resolver's verdict memo is keyed by, so a name seen before costs no decoding."""
    qtype: int
    qclass: int
    question_end: int
    """Offset just past the question section in ``raw``."""
    edns_size: int | None
    """The OPT record's UDP payload size as sent (RFC 6891: below 512 means 512); None without
    EDNS."""
    do: bool
    raw: bytes
    decoded: str | None = None
    """The dotted name once decoded; read ``qname``, which decodes ``key`` on first use."""

    @property
    def qname(self) -> str:
        """Lowercase ASCII, no trailing dot, "" for the root."""
        name = self.decoded
        if name is None:
            name = self.decoded = dotted_name(self.key)
        return name


def dotted_name(key: bytes) -> str:
    """Lowercase dotted form of wire labels ``parse_query`` has already validated (a
    ``Query.key``)."""
    labels = []
    pos, end = 0, len(key)
    while pos < end:
        stop = pos + 1 + key[pos]
        labels.append(key[pos + 1 : stop])
        pos = stop
    return b".".join(labels).lower().decode("ascii")


def parse_query(data: bytes, known: Container[bytes] = frozenset()) -> Query:
    """Parse a client query strictly, without dnslib, or raise ``WireError(reason)``.

    Only the shape a stub resolver sends is accepted (see the module docstring), so the rest
    of the server never sees a half-understood message. The question name is lowercased
    (ASCII only) because block lists and the cache key on it.

    ``known`` holds name keys (``Query.key``) this function accepted before: such a name is
    not validated or decoded again (``qname`` decodes it when asked). That is most of the
    parse's cost, and the resolver's verdict memo is such a set. The key is the bytes up to
    the first zero byte, which for a valid name is its terminator (length bytes are 1-63,
    label bytes graphic ASCII), so a known key is the same name, validated.
    """
    n = len(data)
    if n < 12:
        raise WireError("packet shorter than the 12-byte DNS header")
    if n > 65535:
        raise WireError("packet longer than 65535 bytes")
    qid, flags, qdcount, ancount, nscount, arcount = _unpack_header(data)
    if flags & 0x8000:
        raise WireError("not a query (QR=1)")
    if flags & 0x7800:
        raise WireError(f"unsupported opcode {(flags >> 11) & 0xF}")
    if qdcount != 1:
        raise WireError(f"query must have exactly one question, has {qdcount}")
    if ancount or nscount:
        raise WireError("query carries answer or authority records")
    if arcount > 1:
        raise WireError(f"query carries {arcount} additional records (only one OPT allowed)")

    qname: str | None = None
    if known and (end := data.find(0, 12)) >= 0 and (key := data[12:end]) in known:
        pos = end + 1
    else:
        qname, pos = _parse_name(data)
        key = data[12 : pos - 1]

    question_end = pos + 4
    if arcount == 0:
        if question_end != n:
            raise WireError(
                "truncated question" if question_end > n else "trailing bytes after the question"
            )
        qtype, qclass = _unpack_hh(data, pos)
        return Query(qid, flags, key, qtype, qclass, question_end, None, False, data, qname)

    # The one additional record: OPT, root owner (a single zero byte), fixed 10-byte tail.
    if question_end + 11 > n:
        raise WireError("truncated question" if question_end > n else "truncated OPT record")
    qtype, qclass, owner, rtype, udp_size, ttl, rdlength = _unpack_question_opt(data, pos)
    if owner != 0:
        raise WireError("additional record is not an OPT with the root name")
    if rtype != TYPE_OPT:
        raise WireError(f"additional record of type {rtype} (only OPT allowed)")
    rdata_end = question_end + 11 + rdlength
    if rdata_end > n:
        raise WireError("OPT RDATA runs past the end of the packet")
    if rdata_end != n:
        raise WireError("trailing bytes after the OPT record")
    do = bool(ttl & 0x8000)
    return Query(qid, flags, key, qtype, qclass, question_end, udp_size, do, data, qname)


def _parse_name(data: bytes) -> tuple[str, int]:
    """The question name at offset 12, validated and lowercased, and the offset past it."""
    # The name starts at offset 12 and may use at most 255 bytes, so its terminating zero sits
    # at offset 266 at the latest; that also bounds the loop on hostile input to 128 labels.
    # Indexing past the end raises IndexError, which is cheaper than checking on every label.
    pos = 12
    labels: list[bytes] = []
    try:
        length = data[12]
        while length:
            if length > 63:
                if length >= 0xC0:
                    raise WireError("compression pointer in the question name")
                raise WireError("label longer than 63 bytes")
            end = pos + 1 + length
            labels.append(data[pos + 1 : end])
            pos = end
            if pos > 266:  # 255 bytes of name need the terminating zero at offset <= 266
                raise WireError("name longer than 255 bytes")
            length = data[pos]
    except IndexError:
        raise WireError("truncated question name") from None
    pos += 1
    # Deleting every allowed byte must leave exactly the separators; anything else left over
    # (a '.' inside a label, a control or non-ASCII byte) is refused. One join, one translate.
    name = b".".join(labels)
    if name.translate(None, _NAME_BYTES) != _SEPARATORS[len(labels)]:
        raise WireError("unsupported character in name")
    return name.lower().decode("ascii"), pos


def formerr(data: bytes) -> bytes | None:
    """Header-only FORMERR for a packet that looked like a query, or None to drop it.

    Replying to anything that is not a query (QR=1) or has no full header could bounce
    forged traffic at a victim or start a loop between two servers, so those are dropped.
    """
    if len(data) < 12 or data[2] & 0x80:
        return None
    flags = 0x8080 | (data[2] & 0x79) << 8 | RCODE_FORMERR  # QR, RA; opcode and RD copied
    return data[:2] + _pack_header(0, flags, 0, 0, 0, 0)[2:]


def _respond(q: Query, rcode: int, ancount: int, nscount: int, body: bytes) -> bytes:
    """Header + echoed question + ``body`` + our OPT when the client used EDNS.

    RD and CD are copied (RFC 1035, RFC 6840); RA=1 because this server recurses.
    """
    flags = 0x8080 | (q.flags & 0x0110) | rcode
    if q.edns_size is None:
        return _pack_header(q.id, flags, 1, ancount, nscount, 0) + q.raw[12 : q.question_end] + body
    return (
        _pack_header(q.id, flags, 1, ancount, nscount, 1)
        + q.raw[12 : q.question_end]
        + body
        + (_OPT_DO if q.do else _OPT_PLAIN)
    )


@functools.lru_cache(maxsize=1024)
def _soa_at(question_end: int, ttl: int, soa_name: str) -> bytes:
    """SOA record for the authority section whose TTL and MINIMUM are ``ttl``.

    RFC 2308: a downstream cache keeps the negative answer min(SOA TTL, MINIMUM) seconds.
    The record sits right after the question (the answer section is empty), so MNAME and
    RNAME compress against its owner at offset ``question_end``. Memoised by what it depends
    on: a few hundred shapes in all (name lengths x TTLs), so every blocked answer after the
    first of its length is a cache hit (0.1 µs, not 0.6)."""
    ptr = _pack_h(0xC000 | question_end)
    rdata = (
        ptr
        + _HOSTMASTER
        + ptr
        + _pack_soa_times(_SOA_SERIAL, _SOA_REFRESH, _SOA_RETRY, _SOA_EXPIRE, ttl)
    )
    return encode_name(soa_name) + _pack_rr_fixed(TYPE_SOA, CLASS_IN, ttl, len(rdata)) + rdata


def nxdomain(q: Query, ttl: int, *, soa_name: str = "blocked.edgeguard") -> bytes:
    """NXDOMAIN with a SOA in the authority section, so downstream caches hold it ``ttl`` s."""
    return _respond(q, RCODE_NXDOMAIN, 0, 1, _soa_at(q.question_end, ttl, soa_name))


def nodata(q: Query, ttl: int, *, soa_name: str = "blocked.edgeguard") -> bytes:
    """NOERROR without answers, with a SOA so the empty answer is cacheable (RFC 2308)."""
    return _respond(q, RCODE_NOERROR, 0, 1, _soa_at(q.question_end, ttl, soa_name))


def _one_answer(q: Query, rtype: int, ttl: int, rdata: bytes) -> bytes:
    rr = _ANSWER_PTR + _pack_rr_fixed(rtype, q.qclass, ttl, len(rdata)) + rdata
    return _respond(q, RCODE_NOERROR, 1, 0, rr)


def null_answer(q: Query, ttl: int, *, soa_name: str = "blocked.edgeguard") -> bytes:
    """Block by address: A 0.0.0.0 / AAAA ::, NODATA (with SOA) for every other type."""
    if q.qclass == CLASS_IN:
        if q.qtype == TYPE_A:
            return _one_answer(q, TYPE_A, ttl, _ZERO_V4)
        if q.qtype == TYPE_AAAA:
            return _one_answer(q, TYPE_AAAA, ttl, _ZERO_V6)
    return nodata(q, ttl, soa_name=soa_name)


@functools.lru_cache(maxsize=256)
def _packed_address(address: str, version: int) -> bytes:
    """Packed form of a block-page address; cached, ``ipaddress`` costs about 1 µs."""
    ip = ipaddress.ip_address(address)
    if ip.version != version:
        raise ValueError(f"{address!r} is not an IPv{version} address")
    return ip.packed


def address_answer(
    q: Query,
    ttl: int,
    ipv4: str | None,
    ipv6: str | None,
    *,
    soa_name: str = "blocked.edgeguard",
) -> bytes:
    """Block by pointing the name at a block page; NODATA when that family has no address.

    Raises ``ValueError`` when an address is not valid for its family (a configuration error
    the caller should have caught when loading the policy).
    """
    if q.qclass == CLASS_IN:
        if q.qtype == TYPE_A and ipv4 is not None:
            return _one_answer(q, TYPE_A, ttl, _packed_address(ipv4, 4))
        if q.qtype == TYPE_AAAA and ipv6 is not None:
            return _one_answer(q, TYPE_AAAA, ttl, _packed_address(ipv6, 6))
    return nodata(q, ttl, soa_name=soa_name)


def refused(q: Query) -> bytes:
    """REFUSED (policy says no, e.g. a client outside the served networks)."""
    return _respond(q, RCODE_REFUSED, 0, 0, b"")


def servfail(q: Query) -> bytes:
    """SERVFAIL (no upstream answered and nothing stale to serve)."""
    return _respond(q, RCODE_SERVFAIL, 0, 0, b"")


def rfc8482_any(q: Query, ttl: int) -> bytes:
    """RFC 8482 minimal answer to ANY: one HINFO "RFC8482" "" instead of every RRset."""
    return _one_answer(q, TYPE_HINFO, ttl, _HINFO_RFC8482)


def local_answer(q: Query, records: list[tuple[int, int, bytes]]) -> bytes:
    """NOERROR with ``(type, ttl, rdata)`` answers owned by the question name.

    ``rdata`` must be uncompressed wire form (or compress only against offset 12, the
    question name). The caller keeps the message within the client's size limit.
    """
    qclass = q.qclass
    body = b"".join(
        _ANSWER_PTR + _pack_rr_fixed(rtype, qclass, ttl, len(rdata)) + rdata
        for rtype, ttl, rdata in records
    )
    return _respond(q, RCODE_NOERROR, len(records), 0, body)


def with_id(response: bytes, qid: int) -> bytes:
    """The same response for another query ID (one cached answer serves many queries)."""
    return _pack_h(qid) + response[2:]


@functools.lru_cache(maxsize=1024)
def encode_name(name: str) -> bytes:
    """Wire form of a dotted ASCII name ("" or "." is the root); raises ``WireError``.

    Cached because builders encode the same few names (the SOA owner) on every answer.
    Internationalised names must be IDNA-encoded (``xn--``) by the caller.
    """
    try:
        raw = name.encode("ascii")
    except UnicodeEncodeError:
        raise WireError(f"name {name!r} is not ASCII (IDNA-encode it first)") from None
    if raw.endswith(b"."):
        raw = raw[:-1]
    if not raw:
        return b"\x00"
    out = bytearray()
    for label in raw.split(b"."):
        if not 1 <= len(label) <= 63:
            raise WireError(f"name {name!r} has an empty label or one longer than 63 bytes")
        out.append(len(label))
        out += label
    out.append(0)
    if len(out) > 255:
        raise WireError(f"name {name!r} is longer than 255 bytes in wire form")
    return bytes(out)

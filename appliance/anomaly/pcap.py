"""Packets from a capture file (pcap or pcapng), streamed: ``read_capture(path, stats)``.

Why by hand: scapy 2.8 dissects ~8k packets/s, and a million-packet capture must score in
well under a minute. Scapy's ``RawPcapReader`` only frames the file (it yields the raw bytes
and the record metadata, ~1M records/s, and opens classic pcap, pcapng and gzipped captures
through the same entry point); the headers are then read here with ``struct``: link layer
(Ethernet with 802.1Q/802.1ad tags and PPPoE, Linux cooked SLL and SLL2, raw IP, BSD
loopback), IPv4 (options, fragments), IPv6 (extension headers), TCP, UDP, ICMP and ICMPv6.

Bytes are counted from the IP header's total length, not the captured length: captures are
often cut to a snap length, and a flow's size is what went over the wire.

A packet that cannot be read (cut before its ports, not IP, a damaged record) is counted in
``CaptureStats`` and skipped; nothing in a capture can make the parser raise.
"""

from __future__ import annotations

import gzip
import logging
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from appliance.anomaly.records import ICMP, ICMPV6, TCP, UDP
from appliance.errors import AnomalyError

# Link types (https://www.tcpdump.org/linktypes.html)
LINK_NULL, LINK_ETHERNET, LINK_RAW, LINK_LOOP = 0, 1, 101, 108
LINK_SLL, LINK_SLL2, LINK_IPV4, LINK_IPV6 = 113, 276, 228, 229
LINK_RAW_ALIASES = frozenset({12, 14, LINK_RAW, LINK_IPV4, LINK_IPV6})
SUPPORTED_LINKTYPES = frozenset({LINK_NULL, LINK_ETHERNET, LINK_LOOP, LINK_SLL, LINK_SLL2})
SUPPORTED_LINKTYPES |= LINK_RAW_ALIASES

LINK_LOOPBACK = frozenset({LINK_NULL, LINK_LOOP})
ICMP_PROTOS = frozenset({ICMP, ICMPV6})
ETH_IPV4, ETH_IPV6, ETH_PPPOE = 0x0800, 0x86DD, 0x8864
ETH_VLAN_TAGS = frozenset({0x8100, 0x88A8, 0x9100})
PPP_IPV4, PPP_IPV6 = 0x0021, 0x0057

# ICMP types the flow table needs to tell apart
ICMP_ECHO_TYPES = frozenset({0, 8, 13, 14})  # echo reply/request, timestamp request/reply
ICMP_ERROR_TYPES = frozenset({3, 4, 5, 11, 12})  # unreachable, quench, redirect, time, param
ICMPV6_ECHO_TYPES = frozenset({128, 129})
ICMPV6_ERROR_TYPES = frozenset({1, 2, 3, 4})  # unreachable, too big, time exceeded, param
ICMPV6_LINK_LOCAL_TYPES = frozenset(range(130, 154))  # MLD, NDP, router renumbering, ...
ICMP_UNREACHABLE, ICMPV6_UNREACHABLE = 3, 1

# IPv6 extension headers walked to the transport header (hop-by-hop, routing, destination
# options, mobility, HIP, shim6; fragment and AH have their own layouts).
IPV6_EXT_GENERIC = frozenset({0, 43, 60, 135, 139, 140})
IPV6_FRAGMENT, IPV6_AH, IPV6_NONE = 44, 51, 59
MAX_IPV6_EXT = 8

DNS_PORT = 53
NOT_FRAGMENT = -1
LATER_FRAGMENT_PORT = -1

_IPV4 = struct.Struct("!BxHHHxB10x")  # ver/ihl, total length, id, flags/offset, protocol
_IPV6 = struct.Struct("!4xHB")  # payload length, next header
_PORTS = struct.Struct("!HH")
_TCP = struct.Struct("!HH8xBB")  # ports, data offset, flags
_ICMP = struct.Struct("!BB2xH")  # type, code, identifier (echo)
_U16 = struct.Struct("!H")
_IPV6_FRAG = struct.Struct("!BxHI")  # next header, offset/flags, identification

_inet_ntoa = socket.inet_ntoa
_inet6 = socket.AF_INET6
_inet_ntop = socket.inet_ntop


class Packet(NamedTuple):
    """What the flow table needs of one IP packet.

    ``length`` is the IP total length (IPv6: 40 + payload length). ``flags`` are the TCP
    flags, or ``type << 8 | code`` for ICMP. ICMP echo packets carry their identifier as
    both ports (so a reply finds its request); other ICMP has ports 0. ``fragment`` is
    ``NOT_FRAGMENT`` or the IP identification: the first fragment has the ports, later
    ones have ``LATER_FRAGMENT_PORT`` as ports. ``payload`` is kept only where it is read
    again: DNS (port 53) and the datagram an ICMP error quotes.
    """

    ts: float
    proto: int
    src: str
    sport: int
    dst: str
    dport: int
    length: int
    flags: int
    fragment: int
    payload: bytes


@dataclass
class CaptureStats:
    """Why packets were skipped, so a report can say how much of a capture was scored."""

    records: int = 0  # capture records read
    packets: int = 0  # IP packets handed on
    truncated: int = 0  # cut before the transport ports (snap length too short, damage)
    not_ip: int = 0  # ARP, LLDP, STP, ...
    ignored: int = 0  # IPv6 neighbour discovery / MLD, "no next header"
    unsupported_link: dict[int, int] = field(default_factory=dict)
    damaged: str = ""  # where reading stopped early, if it did


def _ipv4(data: bytes, off: int, ts: float, wirelen: int) -> Packet | None:
    ver_ihl, total, ident, frag, proto = _IPV4.unpack_from(data, off)
    if ver_ihl >> 4 != 4:
        return None
    hlen = (ver_ihl & 15) * 4
    if hlen < 20:
        return None
    src = _inet_ntoa(data[off + 12 : off + 16])
    dst = _inet_ntoa(data[off + 16 : off + 20])
    if total < hlen:  # 0 on segmentation-offloaded packets captured on the sender
        total = wirelen - off
    fragment = NOT_FRAGMENT
    if frag & 0x3FFF:  # more fragments, or an offset
        fragment = ident
        if frag & 0x1FFF:
            return Packet(ts, proto, src, -1, dst, -1, total, 0, fragment, b"")
    return _transport(data, off + hlen, ts, proto, src, dst, total, fragment, False)


def _ipv6(data: bytes, off: int, ts: float, wirelen: int) -> Packet | None:
    if data[off] >> 4 != 6:
        return None
    plen, nxt = _IPV6.unpack_from(data, off)
    src = _inet_ntop(_inet6, data[off + 8 : off + 24])
    dst = _inet_ntop(_inet6, data[off + 24 : off + 40])
    total = plen + 40 if plen else wirelen - off  # 0: a jumbogram
    fragment = NOT_FRAGMENT
    pos = off + 40
    for _ in range(MAX_IPV6_EXT):
        if nxt in IPV6_EXT_GENERIC:
            nxt, ext_len = data[pos], data[pos + 1]
            pos += (ext_len + 1) * 8
        elif nxt == IPV6_FRAGMENT:
            nxt, offset_flags, fragment = _IPV6_FRAG.unpack_from(data, pos)
            pos += 8
            if offset_flags & 0xFFF8:
                return Packet(ts, nxt, src, -1, dst, -1, total, 0, fragment, b"")
            if not offset_flags & 1:
                fragment = NOT_FRAGMENT  # an atomic fragment: the whole packet
        elif nxt == IPV6_AH:
            nxt, ext_len = data[pos], data[pos + 1]
            pos += (ext_len + 2) * 4
        else:
            break
    if nxt == IPV6_NONE:
        return None
    return _transport(data, pos, ts, nxt, src, dst, total, fragment, True)


def _transport(
    data: bytes,
    pos: int,
    ts: float,
    proto: int,
    src: str,
    dst: str,
    total: int,
    fragment: int,
    v6: bool,
) -> Packet | None:
    if proto == TCP:
        sport, dport, offset, flags = _TCP.unpack_from(data, pos)
        payload = b""
        if sport == DNS_PORT or dport == DNS_PORT:
            payload = data[pos + (offset >> 4) * 4 :]
        return Packet(ts, proto, src, sport, dst, dport, total, flags, fragment, payload)
    if proto == UDP:
        sport, dport = _PORTS.unpack_from(data, pos)
        payload = data[pos + 8 :] if sport == DNS_PORT or dport == DNS_PORT else b""
        return Packet(ts, proto, src, sport, dst, dport, total, 0, fragment, payload)
    if proto in ICMP_PROTOS:
        kind, code = data[pos], data[pos + 1]
        ident, payload = 0, b""
        if proto == ICMPV6 and kind in ICMPV6_LINK_LOCAL_TYPES:
            return None
        if kind in (ICMPV6_ECHO_TYPES if v6 else ICMP_ECHO_TYPES):
            ident = _ICMP.unpack_from(data, pos)[2]
        elif kind in (ICMPV6_ERROR_TYPES if v6 else ICMP_ERROR_TYPES):
            payload = data[pos + 8 :]
        return Packet(ts, proto, src, ident, dst, ident, total, kind << 8 | code, fragment, payload)
    return Packet(ts, proto, src, 0, dst, 0, total, 0, fragment, b"")


def _network_offset(data: bytes, linktype: int) -> tuple[int, int]:
    """(offset of the IP header, 4 or 6 or 0 for "not IP") for one frame."""
    if linktype == LINK_ETHERNET:
        off = 14
        ethertype = _U16.unpack_from(data, 12)[0]
        while ethertype in ETH_VLAN_TAGS:
            ethertype = _U16.unpack_from(data, off + 2)[0]
            off += 4
    elif linktype == LINK_SLL:
        off, ethertype = 16, _U16.unpack_from(data, 14)[0]
    elif linktype == LINK_SLL2:
        off, ethertype = 20, _U16.unpack_from(data, 0)[0]
    elif linktype in LINK_RAW_ALIASES:
        return 0, data[0] >> 4
    elif linktype in LINK_LOOPBACK:
        return 4, data[4] >> 4
    else:
        return 0, 0
    while ethertype in ETH_VLAN_TAGS:  # SLL with the tag kept in the frame
        ethertype = _U16.unpack_from(data, off + 2)[0]
        off += 4
    if ethertype == ETH_IPV4:
        return off, 4
    if ethertype == ETH_IPV6:
        return off, 6
    if ethertype == ETH_PPPOE:  # 6 bytes PPPoE session header, then the PPP protocol
        ppp = _U16.unpack_from(data, off + 6)[0]
        return off + 8, 4 if ppp == PPP_IPV4 else 6 if ppp == PPP_IPV6 else 0
    return off, 0


def parse_frame(
    data: bytes, linktype: int, ts: float, stats: CaptureStats, wirelen: int = 0
) -> Packet | None:
    """One captured frame -> ``Packet``, or ``None`` (counted in ``stats``) if it is not
    an IP packet this reader can use. Never raises for any input bytes."""
    try:
        off, version = _network_offset(data, linktype)
        if version == 4:
            pkt = _ipv4(data, off, ts, wirelen or len(data))
        elif version == 6:
            pkt = _ipv6(data, off, ts, wirelen or len(data))
        else:
            if linktype not in SUPPORTED_LINKTYPES:
                stats.unsupported_link[linktype] = stats.unsupported_link.get(linktype, 0) + 1
            else:
                stats.not_ip += 1
            return None
    except (struct.error, IndexError, ValueError, OSError):
        stats.truncated += 1
        return None
    if pkt is None:
        stats.ignored += 1
        return None
    stats.packets += 1
    return pkt


def quoted_flow(payload: bytes, v6: bool) -> tuple[int, str, int, str, int] | None:
    """(proto, src, sport, dst, dport) of the datagram an ICMP error quotes, or ``None``."""
    try:
        read_ip = _ipv6 if v6 else _ipv4
        pkt = read_ip(payload, 0, 0.0, len(payload))
    except (struct.error, IndexError, ValueError, OSError):
        return None
    if pkt is None or pkt.sport < 0:
        return None
    return pkt.proto, pkt.src, pkt.sport, pkt.dst, pkt.dport


def _quiet_scapy() -> tuple[logging.Logger, int]:
    """Scapy logs each damaged record; ``CaptureStats`` counts them instead."""
    logger = logging.getLogger("scapy.runtime")
    level = logger.level
    logger.setLevel(logging.ERROR)
    return logger, level


def open_capture(path: Path) -> Any:
    """Scapy's raw reader for a pcap/pcapng (optionally gzipped) file; ``AnomalyError`` if
    the file cannot be opened or is not a capture."""
    from scapy.error import Scapy_Exception
    from scapy.utils import RawPcapReader

    try:
        f: Any = path.open("rb")  # opened here: scapy leaks its own file when the magic is wrong
        if f.read(2) == b"\x1f\x8b":
            # Unzipped here: scapy before 2.6 (Debian bookworm's 2.5) unzips only the files it
            # opens by name, and reads a gzipped file object as a damaged capture.
            f.close()
            f = gzip.open(path, "rb")  # noqa: SIM115 (the reader owns it and closes it)
        else:
            f.seek(0)
    except OSError as exc:
        raise AnomalyError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    logger, level = _quiet_scapy()
    try:
        return RawPcapReader(f)  # scapy's hints say str; it takes files
    except (Scapy_Exception, OSError, EOFError) as exc:
        f.close()
        raise AnomalyError(f"{path}: not a readable pcap or pcapng capture ({exc})") from exc
    finally:
        logger.setLevel(level)


def read_capture(path: Path, stats: CaptureStats | None = None) -> Iterator[Packet]:
    """The IP packets of a capture, in file order, one at a time (memory stays flat)."""
    from scapy.utils import RawPcapNgReader

    stats = stats if stats is not None else CaptureStats()
    reader: Any = open_capture(path)
    logger, level = _quiet_scapy()
    parse = parse_frame
    try:
        if isinstance(reader, RawPcapNgReader):
            last_ts = 0.0
            meta: Any
            for data, meta in reader:
                stats.records += 1
                if meta.tshigh is not None:
                    last_ts = ((meta.tshigh << 32) | meta.tslow) / meta.tsresol
                pkt = parse(data, meta.linktype, last_ts, stats, meta.wirelen)
                if pkt is not None:
                    yield pkt
            stats.damaged = _pcapng_damage(reader)
        else:
            linktype = reader.linktype
            scale = 1e-9 if reader.nano else 1e-6
            consumed = 24  # the file header; then each record: 16 + its captured length
            for data, (sec, frac, wirelen, caplen) in reader:
                stats.records += 1
                consumed += 16 + caplen
                if len(data) < caplen and caplen <= 0xFFFF:  # the file ends inside it
                    stats.truncated += 1
                    stats.damaged = f"record {stats.records} is cut short: the file ends in it"
                    return
                pkt = parse(data, linktype, sec + frac * scale, stats, wirelen)
                if pkt is not None:
                    yield pkt
            size = _plain_size(reader)
            if size is not None and consumed < size:
                stats.damaged = (
                    f"reading stopped at byte {consumed} of {size}: the rest is a cut or damaged"
                    " record"
                )
    finally:
        logger.setLevel(level)
        reader.close()


def _plain_size(reader: Any) -> int | None:
    """The file's size, or ``None`` when it is gzipped (offsets are then not comparable)."""
    f = reader.f
    if type(f).__name__ == "GzipFile":
        return None
    try:
        return os.fstat(f.fileno()).st_size
    except (OSError, AttributeError, ValueError):
        return None


def _pcapng_damage(reader: Any) -> str:
    """Scapy's pcapng reader ends quietly at a damaged block. Two checks: it stopped before
    the end, or the file does not end with a whole block (a block's length is repeated at
    its end, so the last 4 bytes name where the last block must begin)."""
    size = _plain_size(reader)
    if size is None:
        return ""
    f = reader.f
    try:
        pos = f.tell()
        if pos < size:
            return f"reading stopped at byte {pos} of {size}: the rest is damaged"
        f.seek(size - 4)
        (last_len,) = struct.unpack(reader.endian + "I", f.read(4))
        if last_len < 12 or last_len > size:
            return "the file ends inside a block (cut short)"
        f.seek(size - last_len + 4)
        (head_len,) = struct.unpack(reader.endian + "I", f.read(4))
    except (OSError, ValueError, struct.error):
        return ""
    return "" if head_len == last_len else "the file ends inside a block (cut short)"

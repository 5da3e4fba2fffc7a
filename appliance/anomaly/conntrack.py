"""Live flow records from the kernel's connection tracking, over ctnetlink.

Why not per-packet capture: Python parses 2-3k packets/s, an office link carries far more.
Conntrack already aggregates packets into flows in the kernel; Python only sees one message
per flow. Two sources, both on one netlink socket family (stdlib ``socket``, no library: the
messages are a few nested TLVs and parsing them by hand is ~10x cheaper than a generic
netlink library):

* DESTROY events (multicast group ``NFNLGRP_CONNTRACK_DESTROY``): one per ended flow, with
  final counters and start/stop timestamps when accounting and timestamps are on.
* A dump every few seconds: the kernel garbage-collects expired entries while dumping (so
  DESTROY events do not arrive ~45 s late), and flows running longer than ``open_every`` are
  reported as ``open`` records (deltas since their last report; see ``records.FlowState``).

Accounting and timestamps are off by default in a fresh namespace:
``enable_accounting()`` turns them on (it writes two sysctls of the *current* namespace).
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from appliance.anomaly.records import FlowRecord, FlowState
from appliance.errors import AnomalyError

NETLINK_NETFILTER = 12
NFNLGRP_CONNTRACK_DESTROY = 3
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
CT_SUBSYS = 1 << 8
IPCTNL_MSG_CT_NEW, IPCTNL_MSG_CT_GET, IPCTNL_MSG_CT_DELETE = 0, 1, 2

# attribute numbers (linux/netfilter/nfnetlink_conntrack.h)
CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_STATUS, CTA_PROTOINFO = 1, 2, 3, 4
CTA_COUNTERS_ORIG, CTA_COUNTERS_REPLY, CTA_ID, CTA_TIMESTAMP = 9, 10, 12, 20
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST, CTA_IP_V6_SRC, CTA_IP_V6_DST = 1, 2, 3, 4
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
CTA_PROTOINFO_TCP, CTA_PROTOINFO_TCP_STATE = 1, 1
CTA_COUNTERS_PACKETS, CTA_COUNTERS_BYTES = 1, 2
CTA_TIMESTAMP_START, CTA_TIMESTAMP_STOP = 1, 2
IPS_SEEN_REPLY, IPS_ASSURED = 1 << 1, 1 << 2
TCP_CONNTRACK_TIME_WAIT, TCP_CONNTRACK_CLOSE = 7, 8

_TCP_DONE = frozenset({TCP_CONNTRACK_TIME_WAIT, TCP_CONNTRACK_CLOSE})

_NLMSG = struct.Struct("=IHHII")
_NLA = struct.Struct("=HH")
_NFGEN = struct.Struct("=BBH")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


def _attrs(data: bytes | memoryview, offset: int, end: int) -> dict[int, memoryview]:
    """One level of netlink attributes: type (flags masked off) -> payload."""
    view = memoryview(data)
    out: dict[int, memoryview] = {}
    while offset + 4 <= end:
        length, kind = _NLA.unpack_from(view, offset)
        if length < 4 or offset + length > end:
            break
        out[kind & 0x3FFF] = view[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    return out


def _nested(payload: memoryview) -> dict[int, memoryview]:
    return _attrs(payload, 0, len(payload))


@dataclass(frozen=True, slots=True)
class CtEntry:
    """One conntrack entry as ctnetlink reports it (counters are cumulative)."""

    id: int
    proto: int
    src: str
    sport: int
    dst: str
    dport: int
    reply_src: str
    status: int
    tcp_state: int
    pkts_out: int
    bytes_out: int
    pkts_in: int
    bytes_in: int
    start: float  # 0.0 when timestamps are off
    stop: float


def _tuple(payload: memoryview) -> tuple[int, str, int, str, int]:
    t = _nested(payload)
    ip = _nested(t[CTA_TUPLE_IP]) if CTA_TUPLE_IP in t else {}
    proto = _nested(t[CTA_TUPLE_PROTO]) if CTA_TUPLE_PROTO in t else {}
    if CTA_IP_V4_SRC in ip:
        src = socket.inet_ntop(socket.AF_INET, bytes(ip[CTA_IP_V4_SRC]))
        dst = socket.inet_ntop(socket.AF_INET, bytes(ip[CTA_IP_V4_DST]))
    elif CTA_IP_V6_SRC in ip:
        src = socket.inet_ntop(socket.AF_INET6, bytes(ip[CTA_IP_V6_SRC]))
        dst = socket.inet_ntop(socket.AF_INET6, bytes(ip[CTA_IP_V6_DST]))
    else:
        raise ValueError("conntrack tuple without addresses")
    num = proto[CTA_PROTO_NUM][0] if CTA_PROTO_NUM in proto else 0
    sport = _U16.unpack(proto[CTA_PROTO_SRC_PORT])[0] if CTA_PROTO_SRC_PORT in proto else 0
    dport = _U16.unpack(proto[CTA_PROTO_DST_PORT])[0] if CTA_PROTO_DST_PORT in proto else 0
    return num, src, sport, dst, dport


def _counters(attrs: dict[int, memoryview], kind: int) -> tuple[int, int]:
    if kind not in attrs:
        return 0, 0
    c = _nested(attrs[kind])
    pkts = _U64.unpack(c[CTA_COUNTERS_PACKETS])[0] if CTA_COUNTERS_PACKETS in c else 0
    nbytes = _U64.unpack(c[CTA_COUNTERS_BYTES])[0] if CTA_COUNTERS_BYTES in c else 0
    return pkts, nbytes


def parse_entry(payload: memoryview) -> CtEntry:
    """A ctnetlink message body (after nlmsghdr + nfgenmsg) -> CtEntry; ValueError if broken."""
    try:
        a = _nested(payload)
        proto, src, sport, dst, dport = _tuple(a[CTA_TUPLE_ORIG])
        reply_src = _tuple(a[CTA_TUPLE_REPLY])[1] if CTA_TUPLE_REPLY in a else dst
        status = _U32.unpack(a[CTA_STATUS])[0] if CTA_STATUS in a else 0
        tcp_state = 0
        if CTA_PROTOINFO in a:
            info = _nested(a[CTA_PROTOINFO])
            if CTA_PROTOINFO_TCP in info:
                tcp = _nested(info[CTA_PROTOINFO_TCP])
                if CTA_PROTOINFO_TCP_STATE in tcp:
                    tcp_state = tcp[CTA_PROTOINFO_TCP_STATE][0]
        pkts_out, bytes_out = _counters(a, CTA_COUNTERS_ORIG)
        pkts_in, bytes_in = _counters(a, CTA_COUNTERS_REPLY)
        start = stop = 0.0
        if CTA_TIMESTAMP in a:
            ts = _nested(a[CTA_TIMESTAMP])
            if CTA_TIMESTAMP_START in ts:
                start = _U64.unpack(ts[CTA_TIMESTAMP_START])[0] / 1e9
            if CTA_TIMESTAMP_STOP in ts:
                stop = _U64.unpack(ts[CTA_TIMESTAMP_STOP])[0] / 1e9
        ct_id = _U32.unpack(a[CTA_ID])[0] if CTA_ID in a else 0
    except (KeyError, struct.error, IndexError) as exc:
        raise ValueError(f"malformed conntrack message: {exc}") from exc
    return CtEntry(
        ct_id, proto, src, sport, dst, dport, reply_src, status, tcp_state,
        pkts_out, bytes_out, pkts_in, bytes_in, start, stop,
    )  # fmt: skip


def _state(entry: CtEntry) -> FlowState:
    if not entry.status & IPS_SEEN_REPLY:
        # A RST to a SYN is counted in the reply direction without setting SEEN_REPLY.
        return "rejected" if entry.pkts_in else "unanswered"
    if (
        entry.proto == socket.IPPROTO_TCP
        and not entry.status & IPS_ASSURED
        and entry.tcp_state == TCP_CONNTRACK_CLOSE
        and entry.pkts_in <= 1
    ):
        return "rejected"  # the only answer was a RST
    return "established"


def iter_messages(data: bytes) -> Iterator[tuple[int, memoryview]]:
    """(message type, body after nfgenmsg) of every netlink message in one datagram."""
    view = memoryview(data)
    offset = 0
    while offset + _NLMSG.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(view, offset)
        if length < _NLMSG.size or offset + length > len(data):
            return
        if kind == NLMSG_ERROR:
            (err,) = struct.unpack_from("=i", view, offset + _NLMSG.size)
            if err:
                raise AnomalyError(f"conntrack: netlink error {-err} ({os.strerror(-err)})")
        elif kind != NLMSG_DONE:
            yield kind, view[offset + _NLMSG.size + _NFGEN.size : offset + length]
        else:
            yield kind, view[0:0]
        offset += (length + 3) & ~3


@dataclass
class _Reported:
    last: float
    pkts_out: int
    bytes_out: int
    pkts_in: int
    bytes_in: int


@dataclass
class ConntrackCollector:
    """Turns DESTROY events and periodic dumps into FlowRecords.

    ``poll()`` never blocks: it drains what the kernel queued, dumps if a dump is due and
    returns the records. Memory: one small entry per *long-lived* flow already reported
    (bounded by the kernel's conntrack table), nothing per short flow.
    """

    open_every: float = 600.0
    dump_every: float = 5.0
    clock: Callable[[], float] = time.time
    lost: int = 0  # events the kernel dropped (socket buffer overrun)
    malformed: int = 0
    _reported: dict[int, _Reported] = field(default_factory=dict)
    _finished: set[int] = field(default_factory=set)  # closed TCP, reported before DESTROY
    _events: socket.socket | None = None
    _next_dump: float = 0.0
    _seq: int = 0

    def open(self) -> None:
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.bind((0, 0))
            sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_CONNTRACK_DESTROY)
        except OSError as exc:
            raise AnomalyError(f"conntrack events: {exc} (needs root and nf_conntrack)") from exc
        sock.setblocking(False)
        self._events = sock

    def close(self) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None

    def poll(self) -> list[FlowRecord]:
        if self._events is None:
            self.open()
        out: list[FlowRecord] = []
        now = self.clock()
        if now >= self._next_dump:
            self._next_dump = now + self.dump_every
            out.extend(self._dump(now))  # first: the dump releases expired entries
        out.extend(self._drain())
        return out

    def _drain(self) -> Iterator[FlowRecord]:
        assert self._events is not None
        while True:
            try:
                data = self._events.recv(1 << 16)
            except BlockingIOError:
                return
            except OSError as exc:  # ENOBUFS: the kernel dropped events
                if exc.errno == 105:
                    self.lost += 1
                    continue
                raise AnomalyError(f"conntrack events: {exc}") from exc
            for kind, body in iter_messages(data):
                if kind & 0xFF != IPCTNL_MSG_CT_DELETE or kind >> 8 != 1:
                    continue
                try:
                    entry = parse_entry(body)
                except ValueError:
                    self.malformed += 1
                    continue
                if entry.id in self._finished:
                    self._finished.discard(entry.id)
                    continue
                yield self.final(entry)

    def final(self, entry: CtEntry, end: float | None = None) -> FlowRecord:
        """The record of an ended flow (a delta if it was reported as open before)."""
        prior = self._reported.pop(entry.id, None)
        end = end or entry.stop or self.clock()
        return self._record(entry, entry.start or end, end, _state(entry), prior)

    def _dump(self, now: float) -> list[FlowRecord]:
        out: list[FlowRecord] = []
        seen: set[int] = set()
        for entry in dump_entries():
            seen.add(entry.id)
            if entry.id in self._finished:
                continue
            if entry.proto == socket.IPPROTO_TCP and entry.tcp_state in _TCP_DONE:
                # Closed: the kernel keeps it (TIME_WAIT) for two more minutes before its
                # DESTROY event; report it now, with an end no later than this dump.
                self._finished.add(entry.id)
                out.append(self.final(entry, end=now))
                continue
            if not entry.start or now - entry.start < self.open_every:
                continue
            prior = self._reported.get(entry.id)
            if prior is not None and now - prior.last < self.open_every:
                continue
            out.append(self._record(entry, entry.start, now, "open", prior))
            self._reported[entry.id] = _Reported(
                now, entry.pkts_out, entry.bytes_out, entry.pkts_in, entry.bytes_in
            )
        for gone in self._reported.keys() - seen:  # ended, its DESTROY event lost
            del self._reported[gone]
        self._finished &= seen
        return out

    @staticmethod
    def _record(
        e: CtEntry, start: float, end: float, state: FlowState, prior: _Reported | None
    ) -> FlowRecord:
        p = prior or _Reported(0.0, 0, 0, 0, 0)
        # DNAT (a port forward): the host that answers is the reply tuple's source.
        dst = e.reply_src if e.reply_src != e.dst and e.reply_src != e.src else e.dst
        return FlowRecord(
            start, end, e.proto, e.src, e.sport, dst, e.dport,
            e.bytes_out - p.bytes_out, e.bytes_in - p.bytes_in,
            e.pkts_out - p.pkts_out, e.pkts_in - p.pkts_in, state,
        )  # fmt: skip


def dump_entries() -> Iterator[CtEntry]:
    """Every conntrack entry of the current namespace (IPv4 and IPv6), one netlink dump."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
        sock.bind((0, 0))
        body = _NFGEN.pack(socket.AF_UNSPEC, 0, 0)
        kind = CT_SUBSYS | IPCTNL_MSG_CT_GET
        msg = _NLMSG.pack(_NLMSG.size + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
        sock.send(msg + body)
        while True:
            data = sock.recv(1 << 16)
            for kind, payload in iter_messages(data):
                if kind == NLMSG_DONE:
                    return
                try:
                    yield parse_entry(payload)
                except ValueError:
                    continue


def enable_accounting(proc: Path = Path("/proc/sys/net/netfilter")) -> list[str]:
    """Turn on per-flow byte counters and timestamps in this namespace; returns what changed."""
    changed = []
    for name in ("nf_conntrack_acct", "nf_conntrack_timestamp"):
        path = proc / name
        try:
            if path.read_text().strip() != "1":
                path.write_text("1\n")
                changed.append(name)
        except OSError as exc:
            raise AnomalyError(f"cannot enable {name}: {exc} (is nf_conntrack loaded?)") from exc
    return changed

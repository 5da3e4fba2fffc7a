"""Packets -> the flow and DNS records conntrack and the resolver give live.

A capture scores through the same detectors as the appliance itself, so the records must
mean the same: one ``FlowRecord`` per bidirectional 5-tuple (originator = sender of the
first packet; for TCP the SYN sender, so a capture that starts with a SYN-ACK still gets
the direction right), bytes from IP total length each way, and a ``state``:

* ``established``: the responder sent anything (TCP: a SYN-ACK or data);
* ``rejected``: a TCP RST from the responder before that, or an ICMP/ICMPv6 destination
  unreachable quoting the flow;
* ``unanswered``: nothing came back.

When a flow ends (in capture time, never the wall clock):

* TCP: a RST ends it at once; FINs from both sides end it after ``linger`` seconds (so the
  last ACK is counted);
* idle: no packet for ``idle_tcp`` / ``idle_udp`` / ``idle_icmp`` seconds (300 / 60 / 30,
  close to conntrack's established/UDP-stream/ICMP timeouts);
* long flows: the first packet ``open_every`` seconds (600) after the flow's previous record
  emits an ``open`` record with the counters since that record (deltas, as
  ``records.FlowState`` specifies; conntrack's periodic dumps do the same for live flows).
  It is emitted on a packet rather than on a timer because a flow quiet for 10 minutes has
  already ended by idle timeout;
* the table is full (``max_flows``): the flow closest to its idle timeout is emitted as if
  it had ended (memory stays bounded whatever the capture holds);
* the capture ends: ``flush()`` emits everything left.

Records therefore come out in roughly time order: a flow is reported when it ends, an idle
one up to its timeout after its last packet.

ICMP errors are not flows of their own (conntrack counts them as *related*): they only
mark the flow they quote. Non-first fragments carry no ports; they are counted to the flow
their first fragment named (``orphan_fragments`` counts those whose first was not seen).

DNS: UDP/TCP port 53 messages are parsed with dnslib (only those) into ``DnsRecord``, timed
at the query when it was seen. A query without a response within ``dns_timeout`` seconds
becomes a record with ``rcode`` ``NO_ANSWER`` (-1: "no answer seen", which is not SERVFAIL:
the server may have answered outside the capture). Malformed DNS is counted and skipped.
"""

from __future__ import annotations

import heapq
import itertools
import struct
from collections.abc import Iterable, Iterator

from appliance.anomaly.pcap import (
    ICMP_UNREACHABLE,
    ICMPV6_UNREACHABLE,
    NOT_FRAGMENT,
    Packet,
    quoted_flow,
)
from appliance.anomaly.records import ICMP, ICMPV6, TCP, UDP, DnsRecord, FlowRecord, FlowState

NO_ANSWER = -1
"""``DnsRecord.rcode`` of a query whose response the capture does not hold."""

TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10
ICMP_PROTOS, DNS_PROTOS = frozenset({ICMP, ICMPV6}), frozenset({TCP, UDP})
ICMP_REPLY_TYPES = frozenset({0, 14, 129})  # a reply seen first: the peer originated
ICMP_ERRORS = {ICMP: frozenset({3, 4, 5, 11, 12}), ICMPV6: frozenset({1, 2, 3, 4})}
DNS_QTYPES_ANSWERED = frozenset({1, 5, 28})  # A, CNAME, AAAA
DNS_PORT = 53
SWEEP_EVERY = 1.0  # seconds of capture time between expiry sweeps
FlowKey = tuple[int, str, int, str, int]
_U16 = struct.Struct("!H")


class _Flow:
    """One tracked flow; counters are since its previous record."""

    __slots__ = (
        "answered",
        "bytes_in",
        "bytes_out",
        "deadline",
        "done",
        "dport",
        "dst",
        "fins",
        "key",
        "last",
        "pkts_in",
        "pkts_out",
        "rejected",
        "reported",
        "sport",
        "src",
        "start",
        "timeout",
    )

    def __init__(self, key: FlowKey, ts: float, timeout: float) -> None:
        self.key = key
        proto, self.src, self.sport, self.dst, self.dport = key
        if proto in ICMP_PROTOS:  # the echo identifier is only a key, as in conntrack
            self.sport = self.dport = 0
        self.start = self.last = self.reported = ts
        self.timeout = timeout
        self.deadline = ts + timeout
        self.bytes_out = self.bytes_in = self.pkts_out = self.pkts_in = 0
        self.answered = self.rejected = self.done = False
        self.fins = 0  # 1: originator sent FIN, 2: responder did


class FlowTable:
    """Aggregates packets (``add``) into records (``drain``; ``flush`` at the end).

    Per-packet work is two dict lookups and a few attribute updates; expiry runs once per
    second of capture time off a heap of deadlines, so a packet never scans the table.
    """

    def __init__(
        self,
        *,
        idle_tcp: float = 300.0,
        idle_udp: float = 60.0,
        idle_icmp: float = 30.0,
        open_every: float = 600.0,
        linger: float = 2.0,
        max_flows: int = 100_000,
        dns_timeout: float = 5.0,
        max_pending_dns: int = 20_000,
        max_fragments: int = 10_000,
    ) -> None:
        self.idle_tcp, self.idle_udp, self.idle_icmp = idle_tcp, idle_udp, idle_icmp
        self.open_every, self.linger, self.max_flows = open_every, linger, max_flows
        self.dns_timeout, self.max_pending_dns = dns_timeout, max_pending_dns
        self.max_fragments = max_fragments
        self.flows: dict[FlowKey, _Flow] = {}
        self._deadlines: list[tuple[float, int, _Flow]] = []
        self._seq = itertools.count()
        self._closing: list[tuple[float, _Flow]] = []
        self._closing_head = 0
        self._fragments: dict[tuple[int, str, str, int], tuple[int, int]] = {}
        self._pending_dns: dict[tuple[str, int, str, int], tuple[float, str, int]] = {}
        self._out: list[FlowRecord | DnsRecord] = []
        self.now = 0.0
        self._next_sweep = 0.0
        # counters for the report
        self.flow_records = 0
        self.dns_records = 0
        self.dns_malformed = 0
        self.dns_unanswered = 0
        self.orphan_fragments = 0
        self.evicted = 0

    # -- packets in ------------------------------------------------------------------
    def add(self, pkt: Packet) -> None:
        """Count one packet to its flow (creating it), and expire what is due."""
        ts = pkt.ts
        if ts > self.now:
            self.now = ts
            if ts >= self._next_sweep:
                self._sweep(ts)
                self._next_sweep = ts + SWEEP_EVERY
        proto, src, sport, dst, dport = pkt.proto, pkt.src, pkt.sport, pkt.dst, pkt.dport
        if pkt.fragment != NOT_FRAGMENT:
            ports = self._fragment_ports(pkt)
            if ports is None:
                return
            sport, dport = ports
        flags = pkt.flags
        if proto in ICMP_PROTOS:
            if flags >> 8 in ICMP_ERRORS[proto]:
                if pkt.payload:
                    self._icmp_error(pkt)
                return
        elif pkt.payload and proto in DNS_PROTOS:
            self._dns(pkt)
        flows = self.flows
        flow = flows.get((proto, src, sport, dst, dport))
        outbound = True
        if flow is None:
            flow = flows.get((proto, dst, dport, src, sport))
            outbound = False
            if flow is None:
                flow, outbound = self._new_flow(pkt, proto, src, sport, dst, dport)
        if proto == TCP:
            if flags & TCP_SYN and not flags & TCP_ACK and flow.fins and outbound:
                self._finish(flow)  # the port is reused for a new connection
                flow, outbound = self._new_flow(pkt, proto, src, sport, dst, dport)
            if outbound:
                flow.bytes_out += pkt.length
                flow.pkts_out += 1
                if flags & TCP_FIN:
                    flow.fins |= 1
            else:
                flow.bytes_in += pkt.length
                flow.pkts_in += 1
                if flags & TCP_RST and not flow.answered:
                    flow.rejected = True
                else:
                    flow.answered = True
                if flags & TCP_FIN:
                    flow.fins |= 2
            flow.last = ts
            if flags & TCP_RST:
                self._finish(flow)
                return
            if flow.fins == 3 and flags & TCP_FIN:
                self._closing.append((ts, flow))
        else:
            if outbound:
                flow.bytes_out += pkt.length
                flow.pkts_out += 1
            else:
                flow.bytes_in += pkt.length
                flow.pkts_in += 1
                flow.answered = True
            flow.last = ts
        if ts - flow.reported >= self.open_every:
            self._emit(flow, "open")

    def _new_flow(
        self, pkt: Packet, proto: int, src: str, sport: int, dst: str, dport: int
    ) -> tuple[_Flow, bool]:
        outbound = True
        if proto == TCP:
            timeout = self.idle_tcp
            if pkt.flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK:
                outbound = False  # the capture began after the SYN: the peer originated
        elif proto in ICMP_PROTOS:
            timeout = self.idle_icmp
            outbound = pkt.flags >> 8 not in ICMP_REPLY_TYPES
        else:
            timeout = self.idle_udp
        key = (proto, src, sport, dst, dport) if outbound else (proto, dst, dport, src, sport)
        flow = _Flow(key, pkt.ts, timeout)
        if len(self.flows) >= self.max_flows:
            self._evict_one()
        self.flows[key] = flow
        heapq.heappush(self._deadlines, (flow.deadline, next(self._seq), flow))
        return flow, outbound

    def _fragment_ports(self, pkt: Packet) -> tuple[int, int] | None:
        key = (pkt.proto, pkt.src, pkt.dst, pkt.fragment)
        if pkt.sport >= 0:  # the first fragment names the ports
            if len(self._fragments) >= self.max_fragments:
                del self._fragments[next(iter(self._fragments))]
            self._fragments[key] = (pkt.sport, pkt.dport)
            return pkt.sport, pkt.dport
        ports = self._fragments.get(key)
        if ports is None:
            self.orphan_fragments += 1
        return ports

    def _icmp_error(self, pkt: Packet) -> None:
        unreachable = ICMPV6_UNREACHABLE if pkt.proto == ICMPV6 else ICMP_UNREACHABLE
        if pkt.flags >> 8 != unreachable:
            return
        quoted = quoted_flow(pkt.payload, pkt.proto == ICMPV6)
        if quoted is None:
            return
        flow = self.flows.get(quoted)
        if flow is not None and not flow.answered:
            flow.rejected = True

    # -- records out -----------------------------------------------------------------
    def drain(self) -> list[FlowRecord | DnsRecord]:
        """The records completed since the last call."""
        out, self._out = self._out, []
        return out

    def flush(self) -> list[FlowRecord | DnsRecord]:
        """End of input: every flow and pending query becomes a record."""
        for flow in sorted(self.flows.values(), key=lambda f: f.last):
            self._finish(flow)
        self._deadlines.clear()
        self._closing.clear()
        self._closing_head = 0
        for key in list(self._pending_dns):
            self._dns_unanswered(key)
        return self.drain()

    def records(
        self, packets: Iterable[Packet], flush: bool = True
    ) -> Iterator[FlowRecord | DnsRecord]:
        """Packets in, records out as flows complete, then (``flush``) the rest at the end;
        ``flush=False`` keeps flows open for the next piece of a capture split in files."""
        add = self.add
        for pkt in packets:
            add(pkt)
            if self._out:
                yield from self.drain()
        yield from self.flush() if flush else self.drain()

    def _emit(self, flow: _Flow, state: FlowState) -> None:
        f = flow
        record = FlowRecord(
            f.start, f.last, f.key[0], f.src, f.sport, f.dst, f.dport,
            f.bytes_out, f.bytes_in, f.pkts_out, f.pkts_in, state,
        )  # fmt: skip
        self._out.append(record)
        self.flow_records += 1
        flow.bytes_out = flow.bytes_in = flow.pkts_out = flow.pkts_in = 0
        flow.reported = flow.last

    def _finish(self, flow: _Flow) -> None:
        if flow.done:
            return
        flow.done = True
        del self.flows[flow.key]
        if flow.answered:
            state: FlowState = "established"
        else:
            state = "rejected" if flow.rejected else "unanswered"
        self._emit(flow, state)

    def _sweep(self, now: float) -> None:
        closing = self._closing
        head = self._closing_head
        while head < len(closing) and closing[head][0] + self.linger <= now:
            self._finish(closing[head][1])
            head += 1
        if head > 1024 and head * 2 > len(closing):
            del closing[:head]
            head = 0
        self._closing_head = head
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            _deadline, _seq, flow = heapq.heappop(heap)
            if flow.done:
                continue
            if flow.last + flow.timeout <= now:
                self._finish(flow)
            else:
                heapq.heappush(heap, (flow.last + flow.timeout, next(self._seq), flow))
        if len(heap) > 2 * self.max_flows:  # ended flows' stale entries
            self._deadlines = [e for e in heap if not e[2].done]
            heapq.heapify(self._deadlines)
        pending = self._pending_dns
        while pending:
            key = next(iter(pending))
            if pending[key][0] + self.dns_timeout > now:
                break
            self._dns_unanswered(key)

    def _evict_one(self) -> None:
        heap = self._deadlines
        while heap:
            _deadline, _seq, flow = heapq.heappop(heap)
            if flow.done:
                continue
            if flow.last + flow.timeout > _deadline:
                heapq.heappush(heap, (flow.last + flow.timeout, next(self._seq), flow))
                continue
            self.evicted += 1
            self._finish(flow)
            return

    # -- DNS -------------------------------------------------------------------------
    def _dns(self, pkt: Packet) -> None:
        payload = pkt.payload
        if pkt.proto == TCP:  # one whole message per segment only (2-byte length prefix)
            if len(payload) < 2 or int.from_bytes(payload[:2], "big") != len(payload) - 2:
                return
            payload = payload[2:]
        if len(payload) < 12:
            self.dns_malformed += 1
            return
        if not payload[2] & 0x80:  # a query
            if pkt.dport != DNS_PORT:
                return
            question = read_query(payload)
            if question is None:
                self.dns_malformed += 1
                return
            txid, qname, qtype = question
            key = (pkt.src, pkt.sport, pkt.dst, txid)
            pending = self._pending_dns
            if key not in pending:  # a retransmission keeps the first time
                if len(pending) >= self.max_pending_dns:
                    self._dns_unanswered(next(iter(pending)))
                pending[key] = (pkt.ts, qname, qtype)
            return
        if pkt.sport != DNS_PORT:
            return
        response = read_response(payload)
        if response is None:
            self.dns_malformed += 1
            return
        txid, qname, qtype, rcode, answers = response
        query = self._pending_dns.pop((pkt.dst, pkt.dport, pkt.src, txid), None)
        ts = pkt.ts
        if query is not None:
            ts, qname, qtype = query if not qname else (query[0], qname, qtype)
        elif not qname:
            return
        self._out.append(DnsRecord(ts, pkt.dst, qname, qtype, rcode, answers))
        self.dns_records += 1

    def _dns_unanswered(self, key: tuple[str, int, str, int]) -> None:
        ts, qname, qtype = self._pending_dns.pop(key)
        self._out.append(DnsRecord(ts, key[0], qname, qtype, NO_ANSWER))
        self.dns_records += 1
        self.dns_unanswered += 1


def read_query(msg: bytes) -> tuple[int, str, int] | None:
    """(id, name, type) of a query's first question, read by hand: dnslib takes ~10x as
    long, and queries are half of all DNS. ``None`` if it cannot be read (or uses name
    compression, which no stub resolver puts in a question)."""
    if len(msg) < 17 or not _U16.unpack_from(msg, 4)[0]:
        return None
    labels: list[bytes] = []
    pos, end = 12, len(msg)
    while pos < end:
        size = msg[pos]
        if size == 0:
            if pos + 3 > end:
                return None
            name = b".".join(labels).decode("ascii", "backslashreplace").lower()
            return _U16.unpack_from(msg, 0)[0], name, _U16.unpack_from(msg, pos + 1)[0]
        if size & 0xC0 or pos + 1 + size > end or pos > 12 + 255:
            return None
        labels.append(msg[pos + 1 : pos + 1 + size])
        pos += 1 + size
    return None


def read_response(msg: bytes) -> tuple[int, str, int, int, tuple[str, ...]] | None:
    """(id, name, type, rcode, answer addresses and CNAME targets) of a response, parsed
    with dnslib; ``None`` if it is malformed."""
    from dnslib import DNSRecord

    try:
        parsed = DNSRecord.parse(msg)
        question = parsed.questions[0] if parsed.questions else None
        qname = str(question.qname).rstrip(".").lower() if question else ""
        answers = tuple(
            str(rr.rdata).rstrip(".").lower() for rr in parsed.rr if rr.rtype in DNS_QTYPES_ANSWERED
        )
        return (
            int(parsed.header.id),
            qname,
            int(question.qtype) if question else 0,
            int(parsed.header.rcode),
            answers,
        )
    except Exception:  # dnslib raises many kinds on hostile input (DNSError, struct, ...)
        return None

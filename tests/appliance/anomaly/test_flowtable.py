"""Packets -> flow and DNS records: direction, counters, states, endings, bounds, DNS."""

from __future__ import annotations

from collections.abc import Iterable

from dnslib import AAAA, CNAME, QTYPE, RR, A, DNSRecord
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import Ether

from appliance.anomaly.flowtable import NO_ANSWER, FlowTable, read_query
from appliance.anomaly.pcap import NOT_FRAGMENT, CaptureStats, Packet, parse_frame
from appliance.anomaly.records import DnsRecord, FlowRecord

C, S, R = "192.168.1.50", "203.0.113.7", "192.168.1.1"
T0 = 1_700_000_000.0
SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08


def tcp(
    ts: float, src: str, sport: int, dst: str, dport: int, flags: int, size: int = 40
) -> Packet:
    return Packet(T0 + ts, 6, src, sport, dst, dport, size, flags, NOT_FRAGMENT, b"")


def udp(
    ts: float, src: str, sport: int, dst: str, dport: int, size: int = 60, payload: bytes = b""
) -> Packet:
    return Packet(T0 + ts, 17, src, sport, dst, dport, size, 0, NOT_FRAGMENT, payload)


def run(packets: Iterable[Packet], **params: float) -> list[FlowRecord | DnsRecord]:
    return list(FlowTable(**params).records(packets))  # type: ignore[arg-type]


def flows(records: Iterable[FlowRecord | DnsRecord]) -> list[FlowRecord]:
    return [r for r in records if isinstance(r, FlowRecord)]


def handshake(sport: int = 40000, at: float = 0.0) -> list[Packet]:
    return [
        tcp(at, C, sport, S, 443, SYN, 60),
        tcp(at + 0.03, S, 443, C, sport, SYN | ACK, 60),
        tcp(at + 0.031, C, sport, S, 443, ACK, 52),
    ]


def test_tcp_session_counts_both_ways_and_ends_after_fins() -> None:
    pkts = [
        *handshake(),
        tcp(0.1, C, 40000, S, 443, PSH | ACK, 552),
        tcp(0.13, S, 443, C, 40000, ACK, 1500),
        tcp(0.13, S, 443, C, 40000, ACK, 1500),
        tcp(5.0, C, 40000, S, 443, FIN | ACK, 52),
        tcp(5.03, S, 443, C, 40000, FIN | ACK, 52),
        tcp(5.031, C, 40000, S, 443, ACK, 52),
    ]
    table = FlowTable()
    for p in pkts:
        table.add(p)
    assert table.drain() == []  # both FINs seen, but the linger has not passed
    table.add(udp(9.0, C, 5000, "198.51.100.1", 123))  # capture time moves on
    (rec,) = table.drain()
    assert rec == FlowRecord(
        T0, T0 + 5.031, 6, C, 40000, S, 443,
        60 + 52 + 552 + 52 + 52, 60 + 1500 + 1500 + 52, 5, 4, "established",
    )  # fmt: skip


def test_capture_starting_at_the_syn_ack_keeps_the_syn_sender_as_originator() -> None:
    pkts = [
        tcp(0.0, S, 443, C, 40000, SYN | ACK, 60),
        tcp(0.01, C, 40000, S, 443, ACK, 52),
        tcp(0.02, C, 40000, S, 443, RST, 40),
    ]
    (rec,) = flows(run(pkts))
    assert (rec.src, rec.sport, rec.dst, rec.dport) == (C, 40000, S, 443)
    assert (rec.pkts_out, rec.pkts_in, rec.state) == (2, 1, "established")


def test_rst_from_responder_is_rejected_and_emitted_at_once() -> None:
    table = FlowTable()
    table.add(tcp(0.0, C, 40000, "192.168.1.5", 22, SYN, 60))
    table.add(tcp(0.001, "192.168.1.5", 22, C, 40000, RST | ACK, 40))
    (rec,) = table.drain()
    assert isinstance(rec, FlowRecord)
    assert (rec.state, rec.bytes_out, rec.bytes_in) == ("rejected", 60, 40)


def test_unanswered_syn_ends_at_the_tcp_idle_timeout_not_before() -> None:
    table = FlowTable(idle_tcp=300)
    table.add(tcp(0.0, C, 40000, S, 443, SYN, 60))
    table.add(udp(299.0, C, 1, R, 2))
    assert flows(table.drain()) == []
    table.add(udp(301.0, C, 1, R, 2))
    (rec,) = flows(table.drain())
    assert (rec.state, rec.end, rec.pkts_in) == ("unanswered", T0, 0)


def test_idle_timeouts_differ_per_protocol() -> None:
    table = FlowTable()
    table.add(Packet(T0, 1, C, 7, S, 7, 84, 8 << 8, NOT_FRAGMENT, b""))  # ping
    table.add(udp(0.0, C, 5000, S, 5001))
    table.add(tcp(0.0, C, 40000, S, 443, SYN))
    ended: list[int] = []
    for second in range(1, 400):
        table.add(udp(second, R, 9, "192.168.1.2", 9))  # keeps one flow busy
        ended += [r.proto for r in flows(table.drain()) if r.src == C]
        if second in (29, 59, 299):
            assert len(ended) == {29: 0, 59: 1, 299: 2}[second]
    assert ended == [1, 17, 6]


def test_udp_answer_establishes_and_icmp_unreachable_rejects() -> None:
    unreachable = parse_frame(
        bytes(
            Ether()
            / IP(src=S, dst=C)
            / ICMP(type=3, code=3)
            / IP(src=C, dst=S)
            / UDP(sport=5001, dport=9999)
        ),
        1,
        T0 + 0.05,
        CaptureStats(),
    )
    assert unreachable is not None
    pkts = [
        udp(0.0, C, 5000, S, 4000),
        udp(0.02, S, 4000, C, 5000, 200),
        udp(0.04, C, 5001, S, 9999),
        unreachable,
        udp(0.06, C, 5002, S, 9998),
    ]
    by_port = {r.sport: r for r in flows(run(pkts))}
    assert by_port[5000].state == "established" and by_port[5000].bytes_in == 200
    assert by_port[5001].state == "rejected" and by_port[5001].pkts_in == 0
    assert by_port[5002].state == "unanswered"
    assert len(by_port) == 3  # the ICMP error is not a flow of its own


def test_icmp_echo_pairs_by_identifier_and_reports_no_ports() -> None:
    pkts = [
        Packet(T0, 1, C, 77, S, 77, 84, 8 << 8, NOT_FRAGMENT, b""),
        Packet(T0 + 0.02, 1, S, 77, C, 77, 84, 0, NOT_FRAGMENT, b""),
        Packet(T0 + 1, 1, C, 78, S, 78, 84, 8 << 8, NOT_FRAGMENT, b""),
    ]
    recs = flows(run(pkts))
    assert sorted((r.pkts_out, r.pkts_in, r.state) for r in recs) == [
        (1, 0, "unanswered"),
        (1, 1, "established"),
    ]
    assert {(r.sport, r.dport) for r in recs} == {(0, 0)}


def test_long_flow_reports_open_deltas_every_ten_minutes() -> None:
    pkts = [*handshake()]
    for i in range(1, 150):  # 25 minutes, a packet each way every 10 s
        pkts.append(tcp(i * 10.0, C, 40000, S, 443, PSH | ACK, 100))
        pkts.append(tcp(i * 10.0 + 0.03, S, 443, C, 40000, ACK, 1000))
    pkts.append(tcp(1500.0, C, 40000, S, 443, RST | ACK, 40))
    recs = flows(run(pkts))
    assert [r.state for r in recs] == ["open", "open", "established"]
    assert {r.start for r in recs} == {T0}
    assert recs[0].end - recs[0].start >= 600 and recs[1].end - recs[0].end >= 600
    sent = sum(p.length for p in pkts if p.src == C)
    received = sum(p.length for p in pkts if p.src == S)
    assert sum(r.bytes_out for r in recs) == sent
    assert sum(r.bytes_in for r in recs) == received
    assert sum(r.pkts_out + r.pkts_in for r in recs) == len(pkts)


def test_port_reuse_after_close_starts_a_new_flow() -> None:
    pkts = [
        *handshake(),
        tcp(1.0, C, 40000, S, 443, FIN | ACK),
        tcp(1.01, S, 443, C, 40000, FIN | ACK),
        *handshake(at=1.5),  # within the linger
        tcp(3.0, C, 40000, S, 443, RST),
    ]
    recs = flows(run(pkts))
    assert [(r.start - T0, r.pkts_out, r.pkts_in) for r in recs] == [(0.0, 3, 2), (1.5, 3, 1)]


def test_table_is_bounded_and_evicts_the_flow_closest_to_timing_out() -> None:
    table = FlowTable(max_flows=10)
    for i in range(25):
        table.add(udp(i * 0.1, C, 10000 + i, S, 53))
        assert len(table.flows) <= 10
    evicted = flows(table.drain())
    assert [r.sport for r in evicted] == list(range(10000, 10015))
    assert table.evicted == 15
    rest = flows(table.flush())
    assert sorted(r.sport for r in rest) == list(range(10015, 10025))


def test_non_first_fragments_count_to_their_flow() -> None:
    pkts = [
        Packet(T0, 17, C, 5000, S, 6000, 1500, 0, 42, b""),
        Packet(T0, 17, C, -1, S, -1, 1500, 0, 42, b""),
        Packet(T0, 17, C, -1, S, -1, 300, 0, 42, b""),
        Packet(T0, 17, C, -1, S, -1, 300, 0, 43, b""),  # its first fragment was not seen
    ]
    table = FlowTable()
    (rec,) = flows(table.records(pkts))
    assert (rec.sport, rec.dport, rec.bytes_out, rec.pkts_out) == (5000, 6000, 3300, 3)
    assert table.orphan_fragments == 1


def test_records_come_out_in_rough_time_order_and_all_at_the_end() -> None:
    pkts = []
    for i in range(200):
        pkts += handshake(sport=20000 + i, at=i * 5.0)
        pkts.append(tcp(i * 5.0 + 1, C, 20000 + i, S, 443, RST))
    pkts.append(tcp(1001.0, C, 1, S, 2, SYN))  # left open: flushed
    recs = flows(run(pkts))
    assert len(recs) == 201
    assert [r.start for r in recs] == sorted(r.start for r in recs)


# -- DNS -----------------------------------------------------------------------------


def dns_query(txid: int, name: str, qtype: str = "A") -> bytes:
    q = DNSRecord.question(name, qtype)
    q.header.id = txid
    return bytes(q.pack())


def dns_reply(txid: int, name: str) -> bytes:
    q = DNSRecord.question(name, "AAAA")
    q.header.id = txid
    r = q.reply()
    r.add_answer(RR(name, QTYPE.CNAME, rdata=CNAME("Edge.CDN.example.net.")))
    r.add_answer(RR("edge.cdn.example.net", QTYPE.AAAA, rdata=AAAA("2001:db8::9")))
    r.add_answer(RR("edge.cdn.example.net", QTYPE.A, rdata=A("198.51.100.9")))
    return bytes(r.pack())


def test_dns_query_and_response_become_one_record_timed_at_the_query() -> None:
    pkts = [
        udp(0.0, C, 33333, R, 53, payload=dns_query(0x1234, "WWW.Example.COM.", "AAAA")),
        udp(0.04, R, 53, C, 33333, payload=dns_reply(0x1234, "WWW.Example.COM.")),
    ]
    recs = run(pkts)
    dns = [r for r in recs if isinstance(r, DnsRecord)]
    answers = ("edge.cdn.example.net", "2001:db8::9", "198.51.100.9")
    assert dns == [DnsRecord(T0, C, "www.example.com", 28, 0, answers)]
    assert len(flows(recs)) == 1  # DNS is also a flow, as conntrack sees it


def test_unanswered_query_becomes_no_answer_after_the_timeout() -> None:
    table = FlowTable(dns_timeout=5.0)
    table.add(udp(0.0, C, 33333, R, 53, payload=dns_query(7, "lost.example.org")))
    table.add(udp(4.0, C, 1, S, 2))
    assert [r for r in table.drain() if isinstance(r, DnsRecord)] == []
    table.add(udp(6.0, C, 1, S, 2))
    dns = [r for r in table.drain() if isinstance(r, DnsRecord)]
    assert dns == [DnsRecord(T0, C, "lost.example.org", 1, NO_ANSWER)]


def test_nxdomain_and_tcp_dns() -> None:
    q = DNSRecord.question("nope.example", "TXT")
    q.header.id = 9
    reply = q.reply()
    reply.header.rcode = 3
    wire_q, wire_r = bytes(q.pack()), bytes(reply.pack())
    pkts = [
        Packet(T0, 6, C, 44000, R, 53, 100, PSH | ACK, NOT_FRAGMENT,
               len(wire_q).to_bytes(2, "big") + wire_q),
        Packet(T0 + 0.01, 6, R, 53, C, 44000, 100, PSH | ACK, NOT_FRAGMENT,
               len(wire_r).to_bytes(2, "big") + wire_r),
    ]  # fmt: skip
    dns = [r for r in run(pkts) if isinstance(r, DnsRecord)]
    assert dns == [DnsRecord(T0, C, "nope.example", 16, 3)]


def test_malformed_dns_is_counted_and_skipped() -> None:
    table = FlowTable()
    good = dns_query(1, "ok.example")
    for payload in (b"\x00\x01", good[:15], b"\x12\x34\x81\x80" + b"\xff" * 30):
        table.add(udp(0.0, C, 40000, R, 53, payload=payload) if payload[2:3] != b"\x81"
                  else udp(0.0, R, 53, C, 40000, payload=payload))  # fmt: skip
    assert table.dns_malformed == 3
    assert [r for r in table.flush() if isinstance(r, DnsRecord)] == []


def test_read_query_matches_dnslib() -> None:
    for name, qtype in (("a.b.example.com", "A"), ("x" * 63 + ".io", "TXT"), ("Mixed.Case", "MX")):
        wire = dns_query(321, name, qtype)
        parsed = DNSRecord.parse(wire)
        assert read_query(wire) == (321, name.lower(), parsed.q.qtype)
    assert read_query(dns_query(1, "ok.example")[:-3]) is None

"""Conntrack flow records: the parser on crafted messages, the collector on real flows.

The real test runs the collector inside a scratch namespace (conntrack is per namespace),
with a one-rule nft table there so the kernel tracks anything at all.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import textwrap

import pytest

from appliance import netns
from appliance.anomaly import conntrack as ct
from appliance.anomaly.records import FlowRecord


def _nla(kind: int, payload: bytes, nested: bool = False) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind | (0x8000 if nested else 0)) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _tuple(src: str, dst: str, proto: int, sport: int, dport: int) -> bytes:
    fam = socket.AF_INET6 if ":" in src else socket.AF_INET
    s, d = (ct.CTA_IP_V6_SRC, ct.CTA_IP_V6_DST) if fam == socket.AF_INET6 else (1, 2)
    ip = _nla(s, socket.inet_pton(fam, src)) + _nla(d, socket.inet_pton(fam, dst))
    ports = (
        _nla(ct.CTA_PROTO_NUM, bytes([proto]))
        + _nla(ct.CTA_PROTO_SRC_PORT, struct.pack(">H", sport))
        + _nla(ct.CTA_PROTO_DST_PORT, struct.pack(">H", dport))
    )
    return _nla(ct.CTA_TUPLE_IP, ip, True) + _nla(ct.CTA_TUPLE_PROTO, ports, True)


def _counters(pkts: int, nbytes: int) -> bytes:
    return _nla(1, struct.pack(">Q", pkts)) + _nla(2, struct.pack(">Q", nbytes))


def _message(
    *, reply_src: str = "198.51.100.7", status: int = 0xE, pkts_in: int = 5, start: float = 100.0
) -> bytes:
    body = (
        _nla(ct.CTA_TUPLE_ORIG, _tuple("192.0.2.10", "198.51.100.7", 6, 40000, 443), True)
        + _nla(ct.CTA_TUPLE_REPLY, _tuple(reply_src, "192.0.2.10", 6, 443, 40000), True)
        + _nla(ct.CTA_STATUS, struct.pack(">I", status))
        + _nla(ct.CTA_COUNTERS_ORIG, _counters(7, 1200), True)
        + _nla(ct.CTA_COUNTERS_REPLY, _counters(pkts_in, 9000), True)
        + _nla(ct.CTA_ID, struct.pack(">I", 42))
        + _nla(
            ct.CTA_TIMESTAMP,
            _nla(1, struct.pack(">Q", int(start * 1e9)))
            + _nla(2, struct.pack(">Q", int((start + 3) * 1e9))),
            True,
        )
    )
    return body


def test_parse_entry_reads_tuple_counters_and_timestamps() -> None:
    e = ct.parse_entry(memoryview(_message()))
    assert (e.proto, e.src, e.sport, e.dst, e.dport) == (
        6,
        "192.0.2.10",
        40000,
        "198.51.100.7",
        443,
    )
    assert (e.pkts_out, e.bytes_out, e.pkts_in, e.bytes_in) == (7, 1200, 5, 9000)
    assert (e.id, e.start, e.stop) == (42, 100.0, 103.0)


def test_final_record_states_and_dnat() -> None:
    collector = ct.ConntrackCollector(clock=lambda: 500.0)
    rec = collector.final(ct.parse_entry(memoryview(_message())))
    assert rec == FlowRecord(
        100.0, 103.0, 6, "192.0.2.10", 40000, "198.51.100.7", 443, 1200, 9000, 7, 5, "established"
    )
    unanswered = collector.final(ct.parse_entry(memoryview(_message(status=0, pkts_in=0))))
    assert unanswered.state == "unanswered"
    rejected = collector.final(ct.parse_entry(memoryview(_message(status=0, pkts_in=1))))
    assert rejected.state == "rejected"
    # a port forward: the client dialled the WAN address, an inside host answered
    forwarded = collector.final(ct.parse_entry(memoryview(_message(reply_src="192.0.2.170"))))
    assert forwarded.dst == "192.0.2.170"


@pytest.mark.parametrize("cut", [3, 9, 17, 40])
def test_truncated_messages_are_refused_not_crashed_on(cut: int) -> None:
    data = _message()[:cut]
    try:
        ct.parse_entry(memoryview(data))
    except ValueError:
        return
    pytest.fail("a truncated message parsed")


def test_iter_messages_stops_at_a_bad_length() -> None:
    body = struct.pack("=BBH", 2, 0, 0) + _message()
    good = struct.pack("=IHHII", 16 + len(body), (1 << 8) | 2, 0, 0, 0) + body
    bad = struct.pack("=IHHII", 9999, (1 << 8) | 2, 0, 0, 0)
    kinds = [k for k, _ in ct.iter_messages(good + bad)]
    assert kinds == [(1 << 8) | 2]


COLLECT = textwrap.dedent(
    """
    import json, socket, threading, time
    from appliance.anomaly.conntrack import ConntrackCollector, enable_accounting
    enable_accounting()
    col = ConntrackCollector(open_every=0.4, dump_every=0.2)
    col.open()
    srv = socket.create_server(("127.0.0.1", 8099))
    def serve():
        for _ in range(2):
            conn, _ = srv.accept()
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data[:100])
    threading.Thread(target=serve, daemon=True).start()
    out = []
    def poll():
        out.extend(r._asdict() for r in col.poll())
    # a short request/answer flow: 3000 bytes up, 100 down
    with socket.create_connection(("127.0.0.1", 8099)) as c:
        c.sendall(b"x" * 3000)
        c.recv(100)
    # a long-lived flow, reported as open on the way
    long = socket.create_connection(("127.0.0.1", 8099))
    for _ in range(4):
        long.sendall(b"y" * 1000)
        long.recv(100)
        time.sleep(0.3)
        poll()
    long.close()
    # refused TCP and unanswered UDP (IPv6)
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", 9))
    except OSError:
        pass
    u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    u.sendto(b"z" * 52, ("::1", 9999))
    deadline = time.time() + 5
    while time.time() < deadline:
        time.sleep(0.2)
        poll()
        ended = [r["dport"] for r in out if r["state"] != "open"]
        if ended.count(8099) >= 2 and 9 in ended and any(r["dport"] == 9999 for r in out):
            break
    u.close()
    print(json.dumps(out))
    """
)


@pytest.mark.netns
def test_collector_reports_real_flows(netns_root: None, lab_prefix: str) -> None:
    with netns.scratch_namespace(f"{lab_prefix}-ct") as ns:
        netns.ip(["link", "set", "lo", "up"], ns=ns)
        netns.nft(
            ns,
            ["-f", "-"],
            "table inet probe {\n chain egress {\n type filter hook output priority 0;\n"
            " ct state new counter\n }\n}\n",
        )
        proc = netns.run(ns, [sys.executable, "-c", COLLECT], timeout=30)
    records = [FlowRecord(**r) for r in json.loads(proc.stdout)]
    to_server = [r for r in records if r.dport == 8099]
    finals = [r for r in to_server if r.state != "open"]
    opens = [r for r in to_server if r.state == "open"]
    assert len(finals) == 2 and all(r.state == "established" for r in finals)
    short = min(finals, key=lambda r: r.start)
    # IP total lengths: the payload plus 20 + 32 bytes of headers per packet
    assert short.bytes_out > 3000 and short.bytes_in > 100 and short.pkts_out >= 3
    long_final = max(finals, key=lambda r: r.start)
    assert opens, "a flow older than open_every is reported while it runs"
    assert all(o.start == long_final.start for o in opens)
    total_out = long_final.bytes_out + sum(o.bytes_out for o in opens)
    assert 4000 < total_out < 4000 + 60 * 20, "deltas add up to the flow's bytes once"
    [refused] = [r for r in records if r.dport == 9]
    assert refused.state == "rejected"
    udp = [r for r in records if r.dport == 9999]
    assert udp and all(r.src == "::1" and r.proto == 17 for r in udp)
    assert sum(r.bytes_out for r in udp) == 40 + 8 + 52, "one IPv6 datagram, counted once"

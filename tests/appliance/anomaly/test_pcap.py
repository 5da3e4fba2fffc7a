"""The capture reader: link types, IP versions, fragments, snap length, damage, fuzzing.

Packets are built with scapy (an independent encoder) and read back by the struct parser.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    ICMPv6ND_NS,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether
from scapy.packet import Packet as ScapyPacket
from scapy.packet import Raw
from scapy.utils import wrpcap, wrpcapng

from appliance.anomaly.pcap import (
    LINK_ETHERNET,
    LINK_RAW,
    LINK_SLL,
    LINK_SLL2,
    NOT_FRAGMENT,
    CaptureStats,
    Packet,
    parse_frame,
    quoted_flow,
    read_capture,
)
from appliance.errors import AnomalyError

A, B = "192.168.1.50", "203.0.113.7"
A6, B6 = "fd00::50", "2001:db8::7"
TS = 1_700_000_000.25


def parse(pkt: ScapyPacket, linktype: int = LINK_ETHERNET) -> tuple[Packet | None, CaptureStats]:
    stats = CaptureStats()
    data = bytes(pkt)
    return parse_frame(data, linktype, TS, stats, len(data)), stats


def write_truncated_pcap(path: Path, frames: list[bytes], snaplen: int, linktype: int = 1) -> None:
    """A classic pcap whose records keep only ``snaplen`` bytes (like ``tcpdump -s``)."""
    with path.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype))
        for i, frame in enumerate(frames):
            cut = frame[:snaplen]
            f.write(struct.pack("<IIII", 1_700_000_000 + i, 500_000, len(cut), len(frame)))
            f.write(cut)


# -- link layers ---------------------------------------------------------------------


def test_ethernet_ipv4_tcp_fields() -> None:
    pkt, stats = parse(
        Ether() / IP(src=A, dst=B) / TCP(sport=40000, dport=443, flags="S") / Raw(b"x" * 10)
    )
    assert pkt == Packet(TS, 6, A, 40000, B, 443, 20 + 20 + 10, 0x02, NOT_FRAGMENT, b"")
    assert stats.packets == 1


@pytest.mark.parametrize(
    "frame",
    [
        Ether() / Dot1Q(vlan=10) / IP(src=A, dst=B) / UDP(sport=5000, dport=6000),
        Ether() / Dot1AD(vlan=20) / Dot1Q(vlan=10) / IP(src=A, dst=B) / UDP(sport=5000, dport=6000),
    ],
    ids=["802.1Q", "QinQ"],
)
def test_vlan_tags_are_walked(frame: ScapyPacket) -> None:
    pkt, _ = parse(frame)
    assert pkt is not None
    assert (pkt.proto, pkt.src, pkt.sport, pkt.dst, pkt.dport) == (17, A, 5000, B, 6000)


@pytest.mark.parametrize(
    ("frame", "linktype"),
    [
        (CookedLinux(proto=0x0800) / IP(src=A, dst=B) / UDP(sport=1, dport=2), LINK_SLL),
        (CookedLinuxV2(proto=0x0800) / IP(src=A, dst=B) / UDP(sport=1, dport=2), LINK_SLL2),
        (IP(src=A, dst=B) / UDP(sport=1, dport=2), LINK_RAW),
    ],
    ids=["SLL", "SLL2", "raw"],
)
def test_cooked_and_raw_link_types(frame: ScapyPacket, linktype: int) -> None:
    pkt, _ = parse(frame, linktype)
    assert pkt is not None
    assert (pkt.src, pkt.sport, pkt.dst, pkt.dport, pkt.length) == (A, 1, B, 2, 28)


def test_non_ip_and_unknown_link_types_are_counted_not_raised() -> None:
    stats = CaptureStats()
    arp = bytes(Ether(type=0x0806) / Raw(b"\x00" * 28))
    assert parse_frame(arp, LINK_ETHERNET, TS, stats) is None
    assert parse_frame(b"\x00" * 40, 147, TS, stats) is None  # a user DLT
    assert (stats.not_ip, stats.unsupported_link, stats.packets) == (1, {147: 1}, 0)


# -- IP ------------------------------------------------------------------------------


def test_ipv6_walks_extension_headers() -> None:
    frame = (
        Ether()
        / IPv6(src=A6, dst=B6)
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrRouting()
        / IPv6ExtHdrDestOpt()
        / TCP(sport=50000, dport=22, flags="PA")
        / Raw(b"y" * 7)
    )
    pkt, _ = parse(frame)
    assert pkt is not None
    assert (pkt.proto, pkt.src, pkt.sport, pkt.dst, pkt.dport) == (6, A6, 50000, B6, 22)
    assert pkt.length == len(bytes(frame)) - 14
    assert pkt.flags == 0x18


def test_ipv4_fragments_only_the_first_has_ports() -> None:
    whole = IP(src=A, dst=B, id=777) / UDP(sport=5353, dport=9999) / Raw(b"z" * 3000)
    frags = fragment(whole, fragsize=1200)
    assert len(frags) == 3
    parsed = [parse(Ether() / f)[0] for f in frags]
    assert all(p is not None and p.fragment == 777 for p in parsed)
    first, *rest = parsed
    assert first is not None and (first.sport, first.dport) == (5353, 9999)
    assert all(p is not None and (p.sport, p.dport) == (-1, -1) for p in rest)
    assert sum(p.length for p in parsed if p) == sum(len(bytes(f)) for f in frags)


def test_ipv6_fragment_header() -> None:
    first = IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(id=99, m=1, offset=0) / UDP(sport=7, dport=8)
    later = IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(id=99, m=0, offset=100, nh=17) / Raw(b"q" * 8)
    p1, _ = parse(Ether() / first)
    p2, _ = parse(Ether() / later)
    assert p1 is not None and (p1.proto, p1.sport, p1.dport, p1.fragment) == (17, 7, 8, 99)
    assert p2 is not None and (p2.proto, p2.sport, p2.dport, p2.fragment) == (17, -1, -1, 99)


def test_icmp_echo_identifier_and_error_payload() -> None:
    echo, _ = parse(Ether() / IP(src=A, dst=B) / ICMP(type=8, id=4242))
    assert echo is not None and (echo.sport, echo.dport, echo.flags) == (4242, 4242, 8 << 8)
    quoted = IP(src=A, dst=B) / UDP(sport=40001, dport=53)
    err, _ = parse(Ether() / IP(src=B, dst=A) / ICMP(type=3, code=3) / quoted)
    assert err is not None and err.flags == (3 << 8 | 3)
    assert quoted_flow(err.payload, v6=False) == (17, A, 40001, B, 53)


def test_icmpv6_errors_quote_and_neighbour_discovery_is_ignored() -> None:
    quoted = IPv6(src=A6, dst=B6) / TCP(sport=1234, dport=80)
    err, _ = parse(Ether() / IPv6(src=B6, dst=A6) / ICMPv6DestUnreach(code=1) / quoted)
    assert err is not None and quoted_flow(err.payload, v6=True) == (6, A6, 1234, B6, 80)
    echo, _ = parse(Ether() / IPv6(src=A6, dst=B6) / ICMPv6EchoRequest(id=5))
    assert echo is not None and echo.sport == 5
    ns, stats = parse(Ether() / IPv6(src=A6, dst="ff02::1:ff00:7") / ICMPv6ND_NS(tgt=B6))
    assert ns is None and stats.ignored == 1


def test_dns_payload_kept_only_for_port_53() -> None:
    dns, _ = parse(Ether() / IP(src=A, dst=B) / UDP(sport=40000, dport=53) / Raw(b"\x12\x34q"))
    other, _ = parse(Ether() / IP(src=A, dst=B) / UDP(sport=40000, dport=54) / Raw(b"\x12\x34q"))
    assert dns is not None and dns.payload == b"\x12\x34q"
    assert other is not None and other.payload == b""


# -- files ---------------------------------------------------------------------------


def test_snap_length_cut_packets_count_ip_total_length(tmp_path: Path) -> None:
    frames = [
        bytes(Ether() / IP(src=A, dst=B) / TCP(sport=1000, dport=443) / Raw(b"d" * size))
        for size in (1400, 600, 0)
    ]
    path = tmp_path / "cut.pcap"
    write_truncated_pcap(path, frames, snaplen=64)
    stats = CaptureStats()
    packets = list(read_capture(path, stats))
    assert [p.length for p in packets] == [len(f) - 14 for f in frames]
    assert [p.ts for p in packets] == [1_700_000_000.5, 1_700_000_001.5, 1_700_000_002.5]
    assert (stats.records, stats.packets, stats.truncated, stats.damaged) == (3, 3, 0, "")


def test_snap_length_before_the_ports_counts_as_truncated(tmp_path: Path) -> None:
    path = tmp_path / "tiny.pcap"
    frame = bytes(Ether() / IP(src=A, dst=B) / TCP(sport=1, dport=2))
    write_truncated_pcap(path, [frame, frame], snaplen=30)  # cut inside the IP header
    stats = CaptureStats()
    assert list(read_capture(path, stats)) == []
    assert (stats.records, stats.truncated) == (2, 2)


def test_pcapng_and_sll_files(tmp_path: Path) -> None:
    pkts = [
        Ether() / IP(src=A, dst=B) / TCP(sport=1, dport=80),
        Ether() / IPv6(src=A6, dst=B6) / UDP(sport=2, dport=53) / Raw(b"\x00" * 12),
    ]
    for i, p in enumerate(pkts):
        p.time = 1_700_000_000 + i + 0.125
    ng = tmp_path / "x.pcapng"
    wrpcapng(str(ng), pkts)
    sll = tmp_path / "sll.pcap"
    wrpcap(str(sll), [CookedLinux(proto=0x0800) / IP(src=A, dst=B) / UDP(sport=3, dport=4)])
    read_ng = list(read_capture(ng))
    assert [(p.proto, p.src, p.dport) for p in read_ng] == [(6, A, 80), (17, A6, 53)]
    assert [p.ts for p in read_ng] == pytest.approx([1_700_000_000.125, 1_700_000_001.125])
    assert [(p.src, p.sport, p.dport) for p in read_capture(sll)] == [(A, 3, 4)]


def test_gzipped_capture(tmp_path: Path) -> None:
    path = tmp_path / "x.pcap.gz"
    wrpcap(str(path), [Ether() / IP(src=A, dst=B) / UDP(sport=9, dport=10)], gz=True)
    assert [(p.sport, p.dport) for p in read_capture(path)] == [(9, 10)]


def test_garbage_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.pcap"
    path.write_bytes(b"this is not a capture at all\n" * 10)
    with pytest.raises(AnomalyError, match=r"notes\.pcap: not a readable pcap or pcapng"):
        list(read_capture(path))


def test_file_cut_inside_a_record_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "cut.pcap"
    wrpcap(str(path), [Ether() / IP(src=A, dst=B) / UDP(sport=i, dport=1) for i in range(1, 4)])
    data = path.read_bytes()
    path.write_bytes(data[:-10])  # the last record loses its end
    stats = CaptureStats()
    assert [p.sport for p in read_capture(path, stats)] == [1, 2]
    assert stats.truncated == 1 and "cut short" in stats.damaged
    path.write_bytes(data[: len(data) - 42 - 16 + 7])  # the last record header itself is cut
    stats = CaptureStats()
    assert [p.sport for p in read_capture(path, stats)] == [1, 2]
    assert "stopped at byte" in stats.damaged


# -- fuzzing -------------------------------------------------------------------------

LINKTYPES = st.sampled_from([0, 1, 12, 101, 108, 113, 228, 229, 276, 147])


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=200), linktype=LINKTYPES)
def test_fuzz_random_frames_never_raise(data: bytes, linktype: int) -> None:
    stats = CaptureStats()
    pkt = parse_frame(data, linktype, TS, stats, len(data))
    assert pkt is None or isinstance(pkt, Packet)
    skipped = stats.truncated + stats.not_ip + stats.ignored + sum(stats.unsupported_link.values())
    assert stats.packets + skipped == 1


HEADERS = [bytes(Ether() / IP(src=A, dst=B, proto=p)) for p in (1, 6, 17)] + [
    bytes(Ether() / IPv6(src=A6, dst=B6, nh=n)) for n in (0, 6, 17, 44, 51, 58)
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header=st.sampled_from(HEADERS), tail=st.binary(max_size=120), cut=st.integers(0, 80))
def test_fuzz_valid_headers_with_random_rest_never_raise(
    header: bytes, tail: bytes, cut: int
) -> None:
    data = (header + tail)[: len(header) + len(tail) - cut]
    stats = CaptureStats()
    pkt = parse_frame(data, LINK_ETHERNET, TS, stats)
    if pkt is not None and pkt.payload:
        quoted_flow(pkt.payload, pkt.src.count(":") > 0)


PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
PCAPNG_HEADER = struct.pack("<IIIHHqI", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1, 28) + struct.pack(
    "<IIHHII", 1, 20, 1, 0, 65535, 20
)  # section header block, then one Ethernet interface description block


@settings(max_examples=120, deadline=None)
@given(header=st.sampled_from([PCAP_HEADER, PCAPNG_HEADER]), body=st.binary(max_size=300))
def test_fuzz_capture_files_give_packets_or_a_clear_error(
    tmp_path_factory: pytest.TempPathFactory, header: bytes, body: bytes
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "f.cap"
    path.write_bytes(header + body)
    try:
        for pkt in read_capture(path):
            assert isinstance(pkt, Packet)
    except AnomalyError:
        pass


def test_pcapng_cut_short_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "cut.pcapng"
    wrpcapng(str(path), [Ether() / IP(src=A, dst=B) / UDP(sport=i, dport=1) for i in range(1, 4)])
    whole = CaptureStats()
    assert len(list(read_capture(path, whole))) == 3 and whole.damaged == ""
    path.write_bytes(path.read_bytes()[:-9])
    stats = CaptureStats()
    assert [p.sport for p in read_capture(path, stats)] == [1, 2]
    assert stats.damaged

"""A synthetic office capture, written fast with ``struct`` (no scapy per packet).

Why synthetic: the speed target is "a million packets in well under a minute" and a real
capture of that size cannot be kept in the repository. The mix is shaped like an office
link so the flow table and detectors do realistic work: a few hundred interleaved
connections at any time (HTTPS sessions with handshakes, data and FIN teardown; DNS
queries with real wire format answers; pings), plus planted activity to find: a beacon
(192.168.1.50 -> 203.0.113.7 every 60 s +- 10 %) and a vertical port scan (192.168.1.60 ->
192.168.1.5).

Frames are Ethernet/IPv4, cut to ``snaplen`` like ``tcpdump -s 128`` captures (the IP total
length keeps the real size). Checksums are zero: nothing here verifies them.

    python bench/anomaly/make_pcap.py OUT.pcap [--packets 1000000] [--seed 1]
"""

from __future__ import annotations

import argparse
import heapq
import random
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

START = 1_700_000_000.0
BEACON_HOST, BEACON_PEER, BEACON_EVERY = "192.168.1.50", "203.0.113.7", 60.0
SCANNER, SCAN_TARGET = "192.168.1.60", "192.168.1.5"
RESOLVER = "192.168.1.1"

_PCAP_HEADER = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")
_ETH = bytes.fromhex("0200000000010200000000020800")  # dst MAC, src MAC, IPv4
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
_UDP = struct.Struct("!HHHH")
_ICMP = struct.Struct("!BBHHH")
_DNS_HEADER = struct.Struct("!HHHHHH")

SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08

Frame = tuple[bytes, int]  # (header bytes, IP payload bytes after those headers)


def ip_header(src: bytes, dst: bytes, proto: int, l4_len: int, ident: int) -> bytes:
    return _IPV4.pack(0x45, 0, 20 + l4_len, ident & 0xFFFF, 0x4000, 64, proto, 0, src, dst)


def tcp(src: bytes, dst: bytes, sport: int, dport: int, flags: int, size: int = 0) -> Frame:
    head = _TCP.pack(sport, dport, 1, 1, 0x50, flags, 65535, 0, 0)
    return _ETH + ip_header(src, dst, 6, 20 + size, sport) + head, size


def udp(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> Frame:
    head = _UDP.pack(sport, dport, 8 + len(payload), 0)
    return _ETH + ip_header(src, dst, 17, 8 + len(payload), sport) + head + payload, 0


def icmp_echo(src: bytes, dst: bytes, kind: int, ident: int) -> Frame:
    head = _ICMP.pack(kind, 0, 0, ident, 1)
    return _ETH + ip_header(src, dst, 1, 8 + 56, ident) + head, 56


def dns_name(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"


def dns_query(txid: int, name: str) -> bytes:
    return _DNS_HEADER.pack(txid, 0x0100, 1, 0, 0, 0) + dns_name(name) + b"\x00\x01\x00\x01"


def dns_answer(txid: int, name: str, address: bytes) -> bytes:
    question = dns_name(name) + b"\x00\x01\x00\x01"
    answer = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x01\x2c\x00\x04" + address
    return _DNS_HEADER.pack(txid, 0x8180, 1, 1, 0, 0) + question + answer


class Traffic:
    """Makes sessions (lists of (delay, frame)) and interleaves them in time."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.hosts = [socket.inet_aton(f"192.168.1.{i}") for i in range(100, 200)]
        self.servers = [
            socket.inet_aton(
                f"{self.rng.randrange(11, 223)}.{self.rng.randrange(256)}."
                f"{self.rng.randrange(256)}.{self.rng.randrange(1, 255)}"
            )
            for _ in range(5000)
        ]
        self.resolver = socket.inet_aton(RESOLVER)
        self.next_beacon = START + 5.0
        self.scan_port = 1

    def web(self) -> list[tuple[float, Frame]]:
        r = self.rng
        c, s = r.choice(self.hosts), r.choice(self.servers)
        cp, rtt = r.randrange(32768, 61000), r.uniform(0.005, 0.08)
        out = [(0.0, tcp(c, s, cp, 443, SYN)), (rtt, tcp(s, c, 443, cp, SYN | ACK))]
        out.append((0.0005, tcp(c, s, cp, 443, ACK)))
        for _ in range(r.randrange(1, 4)):
            out.append(
                (r.uniform(0.001, 2.0), tcp(c, s, cp, 443, PSH | ACK, r.randrange(200, 900)))
            )
            for _ in range(r.randrange(1, 8)):
                out.append((rtt / 4, tcp(s, c, 443, cp, ACK, 1448)))
            out.append((0.0005, tcp(c, s, cp, 443, ACK)))
        out.append((r.uniform(0.1, 20.0), tcp(c, s, cp, 443, FIN | ACK)))
        out.append((rtt, tcp(s, c, 443, cp, FIN | ACK)))
        out.append((0.0005, tcp(c, s, cp, 443, ACK)))
        return out

    def dns(self) -> list[tuple[float, Frame]]:
        r = self.rng
        c, txid, port = r.choice(self.hosts), r.randrange(65536), r.randrange(32768, 61000)
        name = f"host{r.randrange(3000)}.example{r.randrange(300)}.com"
        answer = r.choice(self.servers)
        return [
            (0.0, udp(c, self.resolver, port, 53, dns_query(txid, name))),
            (
                r.uniform(0.001, 0.05),
                udp(self.resolver, c, 53, port, dns_answer(txid, name, answer)),
            ),
        ]

    def ping(self) -> list[tuple[float, Frame]]:
        c, s, ident = (
            self.rng.choice(self.hosts),
            self.rng.choice(self.servers),
            self.rng.randrange(65536),
        )
        return [(0.0, icmp_echo(c, s, 8, ident)), (0.02, icmp_echo(s, c, 0, ident))] * 3

    def scan(self) -> list[tuple[float, Frame]]:
        a, b = socket.inet_aton(SCANNER), socket.inet_aton(SCAN_TARGET)
        out = []
        for _ in range(20):
            port, self.scan_port = self.scan_port, self.scan_port % 65535 + 1
            out.append((0.01, tcp(a, b, 40000, port, SYN)))
            out.append((0.0002, tcp(b, a, port, 40000, RST | ACK)))
        return out

    def beacon(self) -> list[tuple[float, Frame]]:
        c, s, cp = (
            socket.inet_aton(BEACON_HOST),
            socket.inet_aton(BEACON_PEER),
            self.rng.randrange(32768, 61000),
        )
        return [
            (0.0, tcp(c, s, cp, 443, SYN)),
            (0.03, tcp(s, c, 443, cp, SYN | ACK)),
            (0.0005, tcp(c, s, cp, 443, PSH | ACK, 310)),
            (0.03, tcp(s, c, 443, cp, PSH | ACK, 120)),
            (0.01, tcp(c, s, cp, 443, FIN | ACK)),
            (0.03, tcp(s, c, 443, cp, FIN | ACK)),
            (0.0005, tcp(c, s, cp, 443, ACK)),
        ]

    def session(self, now: float) -> list[tuple[float, Frame]]:
        if now >= self.next_beacon:
            self.next_beacon += BEACON_EVERY * self.rng.uniform(0.9, 1.1)
            return self.beacon()
        pick = self.rng.random()
        if pick < 0.62:
            return self.web()
        if pick < 0.94:
            return self.dns()
        if pick < 0.99:
            return self.ping()
        return self.scan()

    def frames(self, count: int, rate: float) -> Iterator[tuple[float, Frame]]:
        """``count`` frames, in time order, about ``rate`` per second of capture time:
        sessions start at random (Poisson) and their packets interleave."""
        r, seq = self.rng, 0
        session_rate = rate / 10.7  # mean packets per session of the mix above
        next_start = START
        pending: list[tuple[float, int, Frame]] = []
        for _ in range(count):
            while not pending or pending[0][0] > next_start:
                at = next_start
                for delay, frame in self.session(next_start):
                    at += delay
                    seq += 1
                    heapq.heappush(pending, (at, seq, frame))
                next_start += r.expovariate(session_rate)
            at, _seq, frame = heapq.heappop(pending)
            yield at, frame


def write_pcap(
    path: Path, packets: int = 1_000_000, seed: int = 1, snaplen: int = 128, rate: float = 300.0
) -> int:
    """Writes ``packets`` frames to ``path`` (classic little-endian pcap, Ethernet)."""
    record, pad = _RECORD.pack, bytes(65536)
    with path.open("wb") as f:
        f.write(_PCAP_HEADER.pack(0xA1B2C3D4, 2, 4, 0, 0, snaplen, 1))
        chunk: list[bytes] = []
        for ts, (head, extra) in Traffic(seed).frames(packets, rate):
            wirelen = len(head) + extra
            caplen = min(wirelen, snaplen)
            data = head[:caplen] if caplen <= len(head) else head + pad[: caplen - len(head)]
            sec = int(ts)
            chunk.append(record(sec, int((ts - sec) * 1e6), caplen, wirelen))
            chunk.append(data)
            if len(chunk) >= 20_000:
                f.write(b"".join(chunk))
                chunk.clear()
        f.write(b"".join(chunk))
    return packets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--snaplen", type=int, default=128)
    parser.add_argument("--rate", type=float, default=300.0, help="packets per capture second")
    args = parser.parse_args()
    t0 = time.perf_counter()
    write_pcap(args.out, args.packets, args.seed, args.snaplen, args.rate)
    took = time.perf_counter() - t0
    size = args.out.stat().st_size / 1e6
    print(f"{args.out}: {args.packets} packets, {size:.0f} MB in {took:.1f} s")


if __name__ == "__main__":
    main()

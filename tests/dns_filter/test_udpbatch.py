"""The UDP answer loops, batched (recvmmsg/sendmmsg) and one datagram per call, side by side:
bursts from many sockets, answers now and later (upstream), long answers, IPv6."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSRecord

from dns_filter import udpbatch
from dns_filter.resolver import ResolverConfig
from tests.dns_filter.test_server import Running, Upstream

HUGE = "\n".join(f"huge.test. 60 A 198.51.100.{i}" for i in range(1, 101))  # ~1.7 KB answer
ZONE = f"""
allowed.test. 60 A 198.51.100.10
other.test. 60 A 198.51.100.11
{HUGE}
"""
LOOPS = [
    pytest.param(True, id="batched",
                 marks=pytest.mark.skipif(not udpbatch.available(), reason="no recvmmsg")),
    pytest.param(False, id="per-datagram"),
]  # fmt: skip


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    upstream = Upstream(ZONE)
    (tmp_path / "ads.txt").write_text("ads.test\n")
    (tmp_path / "allow.txt").write_text("@@||nothing.invalid^\n")
    lists = (tmp_path / "ads.txt", tmp_path / "allow.txt")
    config = ResolverConfig(upstreams=(f"127.0.0.1:{upstream.port}",), timeout=2.0)
    made: list[Running] = []

    def factory(batched: bool, host: str = "127.0.0.1") -> tuple[Running, tuple[str, int]]:
        served = Running(config, lists, tmp_path / f"r{len(made)}", host=host, batched=batched)
        made.append(served)
        return served, (host, served.port)

    yield factory
    for served in made:
        served.close()
    upstream.stop()


def query(name: str, qid: int, *, edns: int | None = None) -> bytes:
    record = DNSRecord.question(name)
    record.header.id = qid
    if edns:
        record.add_ar(EDNS0(udp_len=edns))
    return bytes(record.pack())


@pytest.mark.parametrize("batched", LOOPS)
def test_a_burst_from_many_sockets_gets_every_answer_to_its_sender(serve, batched: bool) -> None:
    _, address = serve(batched)
    names = ["ads.test", "x.ads.test", "allowed.test", "other.test"]
    senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(20)]
    try:
        for round_ in range(2):  # the second round: blocked from the memo, the rest cached
            for n, s in enumerate(senders):  # 200 datagrams in flight: batches of many
                for k in range(10):
                    s.sendto(query(names[(n + k) % 4], n * 100 + k), address)
            for n, s in enumerate(senders):
                s.settimeout(5)
                got = {}
                for _ in range(10):
                    reply = DNSRecord.parse(s.recv(2048))
                    got[reply.header.id] = reply
                assert sorted(got) == [n * 100 + k for k in range(10)], f"round {round_}"
                for k, reply in ((qid % 100, r) for qid, r in got.items()):
                    name = names[(n + k) % 4]
                    assert str(reply.q.qname) == name + "."
                    if "ads" in name:
                        assert reply.header.rcode == RCODE.NXDOMAIN
                    else:
                        expected = {"allowed.test": "198.51.100.10", "other.test": "198.51.100.11"}
                        assert [str(rr.rdata) for rr in reply.rr] == [expected[name]]
    finally:
        for s in senders:
            s.close()


@pytest.mark.parametrize("batched", LOOPS)
def test_an_answer_longer_than_a_send_slot_still_arrives(serve, batched: bool) -> None:
    _, address = serve(batched)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        for _ in range(2):  # first from upstream (later), then from the cache (now)
            s.sendto(query("huge.test", 7, edns=4096), address)
            data = s.recv(8192)
            assert len(data) > udpbatch.SEND_BYTES
            reply = DNSRecord.parse(data)
            assert reply.header.tc == 0 and len(reply.rr) == 100


@pytest.mark.parametrize("batched", LOOPS)
def test_ipv6_clients_and_empty_datagrams(serve, batched: bool) -> None:
    served, address = serve(batched, "::1")
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(b"", address)  # not a stop: the server goes on
        for qid, name in enumerate(["ads.test", "allowed.test", "allowed.test"]):
            s.sendto(query(name, qid), address)
            reply = DNSRecord.parse(s.recv(2048))
            assert reply.header.id == qid
            blocked = reply.header.rcode == RCODE.NXDOMAIN
            assert blocked == (name == "ads.test")
            if not blocked:
                assert [QTYPE[rr.rtype] for rr in reply.rr] == ["A"]
    assert served.resolver._clients == {"::1": 1}, "the client string recvfrom would give"

"""``edgeguard score``: a small office capture with a beacon, a port scan and a quiet host.

The capture is built with scapy: 192.168.1.50 calls 45.33.12.7 every 60 s +- 10 % (200
times), 192.168.1.60 scans the ports of 192.168.1.5, and 192.168.1.70 browses a few sites
(resolving them first) at random times. The attackers must be flagged with the right kinds,
the quiet host must not be, and a flow file of the same capture must score the same.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from dnslib import QTYPE, RR, A, DNSRecord
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet as ScapyPacket
from scapy.packet import Raw
from scapy.utils import wrpcap

from appliance.anomaly.flowfile import write_flow_file
from appliance.anomaly.flowtable import FlowTable
from appliance.anomaly.pcap import read_capture
from appliance.cli import main

BEACON, C2 = "192.168.1.50", "45.33.12.7"
SCANNER, TARGET = "192.168.1.60", "192.168.1.5"
QUIET, RESOLVER = "192.168.1.70", "192.168.1.1"
SITES = {"news.example.com": "93.184.216.34", "mail.example.org": "151.101.1.69"}
T0 = 1_700_000_000.0


def frame(ts: float, src: str, dst: str, layer: ScapyPacket) -> ScapyPacket:
    pkt = Ether() / IP(src=src, dst=dst) / layer
    pkt.time = ts
    return pkt


def session(
    ts: float, client: str, server: str, sport: int, sent: int, got: int
) -> list[ScapyPacket]:
    """A whole HTTPS connection: handshake, one request and answer, FIN both ways."""
    c, s = (client, server), (server, client)
    return [
        frame(ts, *c, TCP(sport=sport, dport=443, flags="S")),
        frame(ts + 0.03, *s, TCP(sport=443, dport=sport, flags="SA")),
        frame(ts + 0.031, *c, TCP(sport=sport, dport=443, flags="A")),
        frame(ts + 0.04, *c, TCP(sport=sport, dport=443, flags="PA") / Raw(b"q" * sent)),
        frame(ts + 0.07, *s, TCP(sport=443, dport=sport, flags="PA") / Raw(b"r" * got)),
        frame(ts + 0.5, *c, TCP(sport=sport, dport=443, flags="FA")),
        frame(ts + 0.53, *s, TCP(sport=443, dport=sport, flags="FA")),
        frame(ts + 0.531, *c, TCP(sport=sport, dport=443, flags="A")),
    ]  # fmt: skip


def lookup(ts: float, client: str, name: str, address: str, txid: int) -> list[ScapyPacket]:
    query = DNSRecord.question(name)
    query.header.id = txid
    reply = query.reply()
    reply.add_answer(RR(name, QTYPE.A, rdata=A(address), ttl=300))
    return [
        frame(ts, client, RESOLVER, UDP(sport=30000 + txid, dport=53) / Raw(query.pack())),
        frame(ts + 0.01, RESOLVER, client, UDP(sport=53, dport=30000 + txid) / Raw(reply.pack())),
    ]


def office_capture() -> list[ScapyPacket]:
    rng = random.Random(7)
    pkts: list[ScapyPacket] = []
    ts = T0
    for i in range(200):  # the beacon
        pkts += session(ts, BEACON, C2, 40000 + i, 310, 120)
        ts += 60 * rng.uniform(0.9, 1.1)
    end = ts
    for port in range(1, 401):  # a vertical scan, 20 ports a second
        at = T0 + 1800 + port * 0.05
        pkts.append(frame(at, SCANNER, TARGET, TCP(sport=55555, dport=port, flags="S")))
        answer = "SA" if port in (22, 80) else "RA"
        pkts.append(frame(at + 0.001, TARGET, SCANNER, TCP(sport=port, dport=55555, flags=answer)))
    for n in range(30):  # the quiet host browsing
        at = rng.uniform(T0, end)
        name = rng.choice(sorted(SITES))
        pkts += lookup(at, QUIET, name, SITES[name], n)
        pkts += session(at + 0.1, QUIET, SITES[name], 50000 + n, rng.randrange(300, 900), 20000)
    pkts.sort(key=lambda p: float(p.time))
    return pkts


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("score") / "office.pcap"
    wrpcap(str(path), office_capture())
    return path


def score_json(
    capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, list[dict[str, object]]]:
    code = main(["score", "--json", *args])
    out = capsys.readouterr().out
    return code, [json.loads(line) for line in out.splitlines()]


def test_beacon_and_scan_are_flagged_and_the_quiet_host_is_not(
    capture: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, alerts = score_json(capsys, str(capture))
    assert code == 0
    kinds = {(a["host"], a["kind"], a["peer"]) for a in alerts}
    assert (BEACON, "beacon", C2) in kinds
    assert any(host == SCANNER and kind == "scan" for host, kind, _ in kinds)
    assert not any(host == QUIET for host, _, _ in kinds)
    for alert in alerts:
        assert set(alert) >= {
            "host",
            "kind",
            "score",
            "severity",
            "first",
            "last",
            "peer",
            "evidence",
        }
        assert T0 <= alert["first"] <= alert["last"] <= T0 + 200 * 66  # type: ignore[operator]


def test_table_output_lists_alerts_and_host_scores(
    capture: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["score", str(capture)]) == 0
    out = capsys.readouterr().out
    assert "SCORE" in out and "Host scores:" in out
    beacon_row = next(line for line in out.splitlines() if BEACON in line and "beacon" in line)
    assert C2 in beacon_row
    scores = out.split("Host scores:")[1]
    assert BEACON in scores and SCANNER in scores and QUIET not in scores
    assert "packets" in out.splitlines()[-1]


def test_a_flow_file_of_the_capture_scores_the_same(
    capture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flows = tmp_path / "office.jsonl"
    with flows.open("w", encoding="utf-8") as f:
        write_flow_file(FlowTable().records(read_capture(capture)), f)
    _, from_pcap = score_json(capsys, str(capture))
    _, from_flows = score_json(capsys, str(flows))
    assert from_flows == from_pcap


def test_a_capture_split_in_pieces_scores_as_one(
    capture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pkts = office_capture()
    half = len(pkts) // 2
    first, second = tmp_path / "part0.pcap", tmp_path / "part1.pcap"
    wrpcap(str(first), pkts[:half])
    wrpcap(str(second), pkts[half:])
    _, whole = score_json(capsys, str(capture))
    _, pieces = score_json(capsys, str(first), str(second))
    assert pieces == whole


def test_fail_on_and_min_severity(capture: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, alerts = score_json(capsys, str(capture), "--fail-on", "low")
    assert code == 1 and alerts
    code, shown = score_json(capsys, str(capture), "--min-severity", "critical")
    assert code == 0
    assert all(a["severity"] == "critical" for a in shown)
    assert len(shown) == sum(1 for a in alerts if a["severity"] == "critical")


def test_feed_adds_intel_alerts(
    capture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    feed = tmp_path / "feed.txt"
    feed.write_text("# bad hosts\n93.184.216.0/24\n", encoding="utf-8")
    _, alerts = score_json(capsys, str(capture), "--feed", str(feed))
    assert any(a["host"] == QUIET and a["kind"] == "intel" for a in alerts)


def test_lan_option_decides_which_hosts_are_scored(
    capture: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, alerts = score_json(capsys, str(capture), "--lan", "10.0.0.0/8")
    assert alerts == []  # no 192.168.1.x host is the office's now


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (None, ["missing.pcap"], r"missing\.pcap: cannot read"),
        ("garbage", ["garbage.bin"], r"garbage\.bin: not a pcap, pcapng or flow file"),
        ("empty", ["empty.pcap"], r"empty\.pcap: the file is empty"),
        ("badline", ["bad.jsonl"], r"bad\.jsonl:2: not JSON"),
        ("garbage", ["garbage.bin", "--lan", "10.0.0.0/33"], r"--lan 10\.0\.0\.0/33: not a CIDR"),
        ("garbage", ["garbage.bin", "--feed", "nofeed.txt"], r"nofeed\.txt"),
        ("cutpcap", ["cut.pcap"], r"cut\.pcap: not a readable pcap"),
    ],
)
def test_usage_errors_exit_2_with_a_message_naming_the_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    setup: str | None,
    args: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    if setup == "garbage":
        Path("garbage.bin").write_bytes(b"\x00\x01 definitely not a capture")
    elif setup == "empty":
        Path("empty.pcap").write_bytes(b"")
    elif setup == "badline":
        good = '{"type": "dns", "ts": 1, "client": "192.168.1.2", "qname": "a.b", "qtype": 1}'
        Path("bad.jsonl").write_text(good.replace("}", ', "rcode": 0}') + "\n{oops\n")
    elif setup == "cutpcap":
        Path("cut.pcap").write_bytes(b"\xd4\xc3\xb2\xa1\x02\x00")  # pcap magic, header cut
    code = main(["score", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    assert re.search(message, err), err


def test_truncated_capture_is_scored_up_to_the_damage(
    capture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(capture.read_bytes()[:-30])
    assert main(["score", str(cut)]) == 0
    captured = capsys.readouterr()
    assert "cut short" in captured.err
    assert "beacon" in captured.out

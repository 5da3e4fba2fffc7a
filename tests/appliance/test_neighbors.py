"""IP -> MAC from the neighbour table: parsing real ``ip -j neigh`` output, then a veth pair."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator

import pytest

from appliance import netns
from appliance.neighbors import NeighborError, NeighborTable, parse_neigh_json

# `ip -j neigh show` in a namespace after pinging 192.0.2.2 and 2001:db8::2 on a veth pair
# and 192.0.2.77 (nobody: INCOMPLETE, then FAILED), with one static entry added.
SAMPLE = (
    '[{"dst":"192.0.2.77","dev":"va","state":["FAILED"]},'
    '{"dst":"192.0.2.2","dev":"va","lladdr":"02:00:00:00:00:21","state":["REACHABLE"]},'
    '{"dst":"192.0.2.9","dev":"va","lladdr":"02:00:00:00:00:9a","state":["PERMANENT"]},'
    '{"dst":"2001:db8::2","dev":"va","lladdr":"02:00:00:00:00:21","state":["REACHABLE"]}]\n'
)
# From the other side, a moment later.
SAMPLE_PEER = (
    '[{"dst":"192.0.2.1","dev":"vb","lladdr":"02:00:00:00:00:11","state":["DELAY"]},'
    '{"dst":"2001:db8::1","dev":"vb","lladdr":"02:00:00:00:00:11","state":["DELAY"]}]\n'
)


def test_parse_real_output() -> None:
    assert parse_neigh_json(SAMPLE) == {
        "192.0.2.2": "02:00:00:00:00:21",
        "192.0.2.9": "02:00:00:00:00:9a",
        "2001:db8::2": "02:00:00:00:00:21",
    }
    assert parse_neigh_json(SAMPLE_PEER) == {
        "192.0.2.1": "02:00:00:00:00:11",
        "2001:db8::1": "02:00:00:00:00:11",
    }


def test_parse_normalises_and_skips_what_is_not_a_device() -> None:
    text = json.dumps(
        [
            {"dst": "192.0.2.5", "dev": "a", "lladdr": "02:AB:00:00:00:05", "state": ["STALE"]},
            {"dst": "2001:DB8:0::5", "dev": "a", "lladdr": "02:00:00:00:00:06", "state": []},
            {"dst": "192.0.2.6", "dev": "a", "lladdr": "02:00:00:00:00:07", "state": "INCOMPLETE"},
            {"dst": "192.0.2.7", "dev": "gre", "lladdr": "198.51.100.1", "state": ["NOARP"]},
            {"dst": "192.0.2.5", "dev": "b", "lladdr": "02:00:00:00:00:99", "state": ["STALE"]},
            {"dst": "not-an-ip", "dev": "a", "lladdr": "02:00:00:00:00:08"},
            {"dev": "a", "lladdr": "02:00:00:00:00:09"},
            "junk",
        ]
    )
    assert parse_neigh_json(text) == {
        "192.0.2.5": "02:ab:00:00:00:05",  # lower case; the first entry wins
        "2001:db8::5": "02:00:00:00:00:06",
    }
    assert parse_neigh_json("") == {} and parse_neigh_json("[]") == {}


@pytest.mark.parametrize("text", ["{", '{"dst": "192.0.2.1"}', "Cannot find device"])
def test_parse_refuses_what_is_not_a_json_list(text: str) -> None:
    with pytest.raises(NeighborError):
        parse_neigh_json(text)


class Source:
    def __init__(self, text: str) -> None:
        self.text = text
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.text.startswith("!"):
            raise NeighborError(self.text[1:])
        return self.text


def test_lookup_snapshot_and_version() -> None:
    source = Source(SAMPLE)
    table = NeighborTable(source)
    assert table.mac_for("192.0.2.2") is None and table.version == 0
    assert table.refresh() is True and table.version == 1
    assert table.mac_for("192.0.2.2") == "02:00:00:00:00:21"
    assert table.mac_for("::ffff:192.0.2.2") == "02:00:00:00:00:21"  # dual-stack socket
    assert table.mac_for("2001:db8::2") == "02:00:00:00:00:21"
    assert table.mac_for("192.0.2.77") is None  # FAILED
    snap = table.snapshot()
    assert table.refresh() is False and table.version == 1  # unchanged: same version
    source.text = SAMPLE_PEER
    assert table.refresh() is True and table.version == 2
    assert "192.0.2.2" in snap and "192.0.2.2" not in table.snapshot()  # old view stays whole
    with pytest.raises(TypeError):
        table.snapshot()["192.0.2.3"] = "02:00:00:00:00:03"  # type: ignore[index]


def test_a_failed_read_keeps_the_last_mapping() -> None:
    source = Source(SAMPLE)
    table = NeighborTable(source)
    table.refresh()
    source.text = "!ip timed out"
    with pytest.raises(NeighborError):
        table.refresh()
    table.start(interval=0.01)
    try:
        while source.calls < 5:
            threading.Event().wait(0.01)
    finally:
        table.stop()
    assert table.failures >= 3 and table.last_error == "ip timed out"
    assert table.mac_for("192.0.2.2") == "02:00:00:00:00:21" and table.version == 1
    assert not any(t.name == "neighbor-table" for t in threading.enumerate())


def test_the_default_source_reports_a_failing_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("appliance.neighbors.NEIGH_COMMAND", ("ip", "-j", "neigh", "nonsense"))
    table = NeighborTable()
    with pytest.raises(NeighborError, match="failed"):
        table.refresh()


# -- a real neighbour table: two namespaces joined by a veth pair ---------------------------

MAC_A, MAC_B = "02:00:00:00:00:11", "02:00:00:00:00:21"

# Runs in namespace A: the table of A's own namespace, read by the background refresher.
READ = r"""
import json, sys, time
from appliance.neighbors import NeighborTable
table = NeighborTable()
table.start(interval=0.1)
deadline = time.monotonic() + 5
while time.monotonic() < deadline and not all(table.mac_for(ip) for ip in sys.argv[1:]):
    time.sleep(0.05)
table.stop()
asked = [*sys.argv[1:], "192.0.2.3"]  # and one address nobody has
print(json.dumps({"macs": {ip: table.mac_for(ip) for ip in asked},
                  "snapshot": dict(table.snapshot()), "version": table.version}))
"""


@pytest.fixture
def veth_pair(netns_root: None, lab_prefix: str) -> Iterator[tuple[str, str]]:
    del netns_root
    with netns.scratch_namespace(lab_prefix) as a, netns.scratch_namespace(lab_prefix) as b:
        netns.ip(["link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", b], ns=a)
        for ns, dev, mac, v4, v6 in (
            (a, "va", MAC_A, "192.0.2.1/24", "2001:db8::1/64"),
            (b, "vb", MAC_B, "192.0.2.2/24", "2001:db8::2/64"),
        ):
            netns.ip(["link", "set", "dev", dev, "address", mac], ns=ns)
            netns.ip(["addr", "add", v4, "dev", dev], ns=ns)
            netns.ip(["addr", "add", v6, "dev", dev, "nodad"], ns=ns)
            netns.ip(["link", "set", "dev", dev, "up"], ns=ns)
            netns.ip(["link", "set", "dev", "lo", "up"], ns=ns)
        yield a, b


@pytest.mark.netns
def test_the_table_finds_the_peer_mac_after_a_ping(veth_pair: tuple[str, str]) -> None:
    a, _ = veth_pair
    probes = [
        {"kind": "icmp", "dst": "192.0.2.2", "timeout": 1.0},
        {"kind": "icmp", "dst": "2001:db8::2", "timeout": 1.0},  # NS/NA resolves the MAC
    ]
    res = netns.run(a, [sys.executable, "-m", "appliance.labprobe"], input=json.dumps(probes))
    assert json.loads(res.stdout)[0]["outcome"] == "open"
    out = netns.run(a, [sys.executable, "-c", READ, "192.0.2.2", "2001:db8::2"])
    seen = json.loads(out.stdout)
    assert seen["macs"] == {"192.0.2.2": MAC_B, "2001:db8::2": MAC_B, "192.0.2.3": None}
    assert seen["version"] >= 1
    assert MAC_A not in seen["snapshot"].values()  # our own address is not a neighbour

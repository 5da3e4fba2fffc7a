"""The nft set feeder: batching, dedupe, refresh, failures (fake libnftables), then real nft.

The fake backend follows the kernel's rules that matter here: one ``json_cmd`` is one
transaction (all or nothing), a missing set or deleting a missing element fails it, and an
``add`` of an existing element leaves its expiry alone (what kernel 6.18 does without an
explicit ``expires``), so only the add/delete/add form refreshes.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from appliance import netns
from appliance.nftset import MAX_TIMEOUT, MemorySetFeed, NftSetFeeder, validate_element

ROOT = Path(__file__).parents[2]
V4, V6 = int(socket.AF_INET), int(socket.AF_INET6)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeNft:
    """Sets of the table as address -> (timeout, expiry); one call = one transaction."""

    def __init__(
        self,
        clock: Clock,
        sets: tuple[str, ...] = ("dom_a_v4", "dom_a_v6"),
        size: int | None = None,
    ) -> None:
        self.clock = clock
        self.size = size
        self.sets: dict[str, dict[str, tuple[int, float]]] = {name: {} for name in sets}
        self.calls: list[dict[str, Any]] = []
        self.raise_next: Exception | None = None

    def json_cmd(self, json_root: dict[str, Any]) -> tuple[int, Any, str]:
        self.calls.append(copy.deepcopy(json_root))
        if self.raise_next is not None:
            exc, self.raise_next = self.raise_next, None
            raise exc
        work = copy.deepcopy(self.sets)
        for command in json_root["nftables"]:
            ((verb, body),) = command.items()
            element = body["element"]
            assert (element["family"], element["table"]) == ("inet", "edgeguard")
            target = work.get(element["name"])
            if target is None:
                return 1, "", "Error: No such file or directory\nError: No such file or directory\n"
            for item in element["elem"]:
                if verb == "add":
                    val, timeout = item["elem"]["val"], item["elem"]["timeout"]
                    if val in target:
                        continue  # an existing element keeps its expiry
                    if self.size is not None and len(target) >= self.size:
                        return 1, "", "Error: Could not process rule: Too many open files in system"
                    target[val] = (timeout, self.clock() + timeout)
                elif verb == "delete":
                    if item not in target:
                        return 1, "", "Error: No such file or directory\n"
                    del target[item]
        self.sets = work
        return 0, "", ""

    def members(self, name: str) -> dict[str, tuple[int, float]]:
        now = self.clock()
        return {a: te for a, te in self.sets[name].items() if te[1] > now}

    def elements_sent(self) -> list[int]:
        """Elements per transaction (the first add of each set's add/delete/add)."""
        return [
            sum(len(c["add"]["element"]["elem"]) for c in call["nftables"][::3])
            for call in self.calls
        ]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def nft(clock: Clock) -> FakeNft:
    return FakeNft(clock)


def v4(i: int) -> str:
    return str(ipaddress.IPv4Address("198.51.100.0") + i % 256)


def v6(i: int) -> str:
    return str(ipaddress.IPv6Address("2001:db8::") + i)


def test_one_transaction_per_batch_of_json_elements(clock: Clock, nft: FakeNft) -> None:
    feeder = NftSetFeeder(nft, clock=clock)
    feeder.add("dom_a_v4", V4, "198.51.100.7", 300)
    feeder.add("dom_a_v6", V6, "2001:db8::7", 60)
    assert nft.calls == []  # add() only queues
    assert feeder.pump() == 2
    base4 = {"family": "inet", "table": "edgeguard", "name": "dom_a_v4"}
    base6 = {**base4, "name": "dom_a_v6"}
    elem4 = [{"elem": {"val": "198.51.100.7", "timeout": 300}}]
    elem6 = [{"elem": {"val": "2001:db8::7", "timeout": 60}}]
    assert nft.calls == [
        {
            "nftables": [
                {"add": {"element": {**base4, "elem": elem4}}},
                {"delete": {"element": {**base4, "elem": ["198.51.100.7"]}}},
                {"add": {"element": {**base4, "elem": elem4}}},
                {"add": {"element": {**base6, "elem": elem6}}},
                {"delete": {"element": {**base6, "elem": ["2001:db8::7"]}}},
                {"add": {"element": {**base6, "elem": elem6}}},
            ]
        }
    ]
    assert nft.members("dom_a_v4") == {"198.51.100.7": (300, clock.now + 300)}
    stats = feeder.stats()
    assert (stats["added"], stats["batches"], stats["errors"], stats["queued"]) == (2, 1, 0, 0)


def test_batches_are_bounded_across_sets(clock: Clock, nft: FakeNft) -> None:
    feeder = NftSetFeeder(nft, clock=clock, max_batch=2000)
    for i in range(5000):
        if i % 2:
            feeder.add("dom_a_v6", V6, v6(i), 600)
        else:
            feeder.add("dom_a_v4", V4, str(ipaddress.IPv4Address("192.0.2.0") + i // 2 % 256), 600)
    assert feeder.flush(5)
    assert len(nft.calls) == 3
    assert max(nft.elements_sent()) <= 2000
    assert len(nft.members("dom_a_v6")) == 2500
    assert len(nft.members("dom_a_v4")) == 256  # the rest were repeats, deduped
    assert feeder.stats()["skipped"] == 2500 - 256


def test_duplicates_are_skipped_until_half_the_timeout_is_left(clock: Clock, nft: FakeNft) -> None:
    feeder = NftSetFeeder(nft, clock=clock)
    for _ in range(3):
        feeder.add("dom_a_v4", V4, "198.51.100.9", 100)
    feeder.pump()
    assert nft.elements_sent() == [1]  # three answers, one element
    clock.now += 49  # 51 s left: more than half
    feeder.add("dom_a_v4", V4, "198.51.100.9", 100)
    feeder.pump()
    assert len(nft.calls) == 1 and feeder.stats()["skipped"] == 3
    clock.now += 2  # 49 s left: refresh, and the kernel element gets the full timeout again
    feeder.add("dom_a_v4", V4, "198.51.100.9", 100)
    feeder.pump()
    assert len(nft.calls) == 2
    assert nft.members("dom_a_v4")["198.51.100.9"] == (100, clock.now + 100)


def test_a_longer_ttl_refreshes_at_once(clock: Clock, nft: FakeNft) -> None:
    feeder = NftSetFeeder(nft, clock=clock)
    feeder.add("dom_a_v4", V4, "198.51.100.9", 60)
    feeder.pump()
    clock.now += 10  # 50 s left, but the new answer says an hour: 50 < 1800
    feeder.add("dom_a_v4", V4, "198.51.100.9", 3600)
    feeder.pump()
    assert nft.members("dom_a_v4")["198.51.100.9"] == (3600, clock.now + 3600)


def test_failure_of_one_set_keeps_the_others(clock: Clock, nft: FakeNft) -> None:
    feeder = NftSetFeeder(nft, clock=clock)
    feeder.add("dom_a_v4", V4, "198.51.100.1", 60)
    feeder.add("dom_gone_v4", V4, "198.51.100.2", 60)  # the policy no longer has this set
    feeder.add("dom_a_v6", V6, "2001:db8::1", 60)
    feeder.pump()
    assert len(nft.calls) == 4  # the batch, then one retry per set
    assert set(nft.members("dom_a_v4")) == {"198.51.100.1"}
    assert set(nft.members("dom_a_v6")) == {"2001:db8::1"}
    stats = feeder.stats()
    assert (stats["added"], stats["dropped"], stats["errors"]) == (2, 1, 1)
    assert stats["last_error"] == "set dom_gone_v4: Error: No such file or directory"
    nft.sets["dom_gone_v4"] = {}  # the set comes back: the element was not remembered
    feeder.add("dom_gone_v4", V4, "198.51.100.2", 60)
    feeder.pump()
    assert set(nft.members("dom_gone_v4")) == {"198.51.100.2"}


def test_a_full_set_still_takes_refreshes(clock: Clock) -> None:
    nft = FakeNft(clock, size=3)
    feeder = NftSetFeeder(nft, clock=clock)
    held = [v4(i) for i in range(3)]
    for addr in held:
        feeder.add("dom_a_v4", V4, addr, 100)
    feeder.pump()
    clock.now += 60  # time to refresh them; a fourth address arrives in the same batch
    for addr in [*held, v4(3)]:
        feeder.add("dom_a_v4", V4, addr, 100)
    feeder.pump()
    assert nft.members("dom_a_v4") == {a: (100, clock.now + 100) for a in held}
    stats = feeder.stats()
    assert (stats["added"], stats["dropped"], stats["errors"]) == (6, 1, 1)
    assert "Too many open files" in stats["last_error"]


def test_a_backend_exception_is_counted_not_raised(clock: Clock, nft: FakeNft) -> None:
    feeder = NftSetFeeder(nft, clock=clock)
    nft.raise_next = OSError("netlink socket closed")
    feeder.add("dom_a_v4", V4, "198.51.100.1", 60)
    feeder.pump()
    assert feeder.stats()["errors"] == 1
    assert "netlink socket closed" in feeder.stats()["last_error"]


BAD: list[tuple[Any, ...]] = [
    ("Dom_a_v4", V4, "198.51.100.1", 60),  # upper case
    ("dom a_v4", V4, "198.51.100.1", 60),  # space: nft syntax
    ("dom_a_v4;flush", V4, "198.51.100.1", 60),
    ("x" * 62, V4, "198.51.100.1", 60),  # too long
    ("dom_a_v4", V4, "example.com", 60),  # nft would look the name up
    ("dom_a_v4", V4, "198.51.100.256", 60),
    ("dom_a_v4", V4, "198.51.100", 60),  # inet_aton would read these three
    ("dom_a_v4", V4, "0198.51.100.1", 60),
    ("dom_a_v4", V4, "0xc6.51.100.1", 60),
    ("dom_a_v4", V4, " 198.51.100.1", 60),
    ("dom_a_v4", V4, "198.51.100.1\x00", 60),
    ("dom_a_v6", V6, "2001:db8::/64", 60),
    ("dom_a_v4", V4, "2001:db8::1", 60),  # family disagrees
    ("dom_a_v4", V6, "2001:db8::1", 60),  # set suffix disagrees
    ("dom_a_v6", V6, "fe80::1%eth0", 60),  # scoped
    ("dom_a_v4", 99, "198.51.100.1", 60),  # unknown family
    ("dom_a_v4", V4, "198.51.100.1", "60"),  # not an int
    ("dom_a_v4", V4, "198.51.100.1", True),
    ("dom_a_v4", V4, None, 60),
]


@pytest.mark.parametrize("element", BAD, ids=[repr(b) for b in BAD])
def test_validate_element_refuses(element: tuple[Any, ...]) -> None:
    with pytest.raises(ValueError):
        validate_element(*element)


def test_bad_elements_are_dropped_in_the_sender_and_good_ones_go_through(
    clock: Clock, nft: FakeNft
) -> None:
    feeder = NftSetFeeder(nft, clock=clock)
    for element in BAD:
        feeder.add(*element)  # never raises on the answer path
    feeder.add("dom_a_v6", 6, "2001:DB8:0::5", 0)  # 4/6 accepted too; canonical; timeout >= 1
    feeder.add("dom_a_v4", 4, "198.51.100.5", 10**9)
    feeder.pump()
    assert nft.members("dom_a_v6") == {"2001:db8::5": (1, clock.now + 1)}
    assert nft.members("dom_a_v4")["198.51.100.5"][0] == MAX_TIMEOUT
    stats = feeder.stats()
    assert (stats["invalid"], stats["dropped"], stats["added"]) == (len(BAD), len(BAD), 2)
    sent = json.dumps(nft.calls)
    assert "example.com" not in sent and "flush" not in sent


def test_the_queue_is_bounded_and_counts_drops(clock: Clock, nft: FakeNft) -> None:
    feeder = NftSetFeeder(nft, clock=clock, max_queue=10)
    for i in range(15):
        feeder.add("dom_a_v4", V4, v4(i), 60)
    stats = feeder.stats()
    assert (stats["queued"], stats["dropped"], stats["dropped_full"]) == (10, 5, 5)
    feeder.pump()
    assert len(nft.members("dom_a_v4")) == 10
    feeder.add("dom_a_v4", V4, v4(20), 60)  # room again
    assert feeder.stats()["queued"] == 1


def test_resync_restores_unexpired_elements_with_their_remaining_time(
    clock: Clock, nft: FakeNft
) -> None:
    feeder = NftSetFeeder(nft, clock=clock)
    feeder.add("dom_a_v4", V4, "198.51.100.1", 100)
    feeder.add("dom_a_v4", V4, "198.51.100.2", 10)
    feeder.add("dom_a_v6", V6, "2001:db8::1", 100)
    feeder.pump()
    clock.now += 30.5
    nft.sets = {"dom_a_v4": {}, "dom_a_v6": {}}  # the table was replaced: sets are empty
    assert feeder.resync() == 2  # 198.51.100.2 has expired
    assert feeder.stats()["queued"] == 2
    feeder.pump()
    assert nft.members("dom_a_v4") == {"198.51.100.1": (70, clock.now + 70)}
    assert set(nft.members("dom_a_v6")) == {"2001:db8::1"}
    clock.now += 1  # remembered again: a fresh answer is deduped as before
    feeder.add("dom_a_v4", V4, "198.51.100.1", 100)
    feeder.pump()
    assert feeder.stats()["skipped"] == 1


def test_forget_sets_drops_the_memory_of_removed_sets(clock: Clock, nft: FakeNft) -> None:
    feeder = NftSetFeeder(nft, clock=clock)
    feeder.add("dom_a_v4", V4, "198.51.100.1", 100)
    feeder.add("dom_a_v6", V6, "2001:db8::1", 100)
    feeder.pump()
    feeder.forget_sets({"dom_a_v6"})
    assert feeder.stats()["remembered"] == 1
    nft.sets = {"dom_a_v4": {}, "dom_a_v6": {}}
    assert feeder.resync() == 1
    feeder.pump()
    assert nft.members("dom_a_v4") == {}
    assert set(nft.members("dom_a_v6")) == {"2001:db8::1"}


def test_expired_memory_is_pruned(clock: Clock, nft: FakeNft) -> None:
    feeder = NftSetFeeder(nft, clock=clock)
    for i in range(100):
        feeder.add("dom_a_v4", V4, v4(i), 5)
    feeder.pump()
    assert feeder.stats()["remembered"] == 100
    clock.now += 10
    feeder.pump()
    assert feeder.stats()["remembered"] == 0


def test_the_background_thread_sends_and_stop_drains(nft: FakeNft) -> None:
    feeder = NftSetFeeder(nft, interval=0.01)
    feeder.start()
    feeder.start()  # idempotent
    try:
        feeder.add("dom_a_v4", V4, "198.51.100.1", 60)
        assert feeder.flush(5)
        assert set(nft.sets["dom_a_v4"]) == {"198.51.100.1"}
        threads = [t for t in threading.enumerate() if t.name == "nftset-feeder"]
        assert len(threads) == 1 and threads[0].daemon
        feeder.add("dom_a_v4", V4, "198.51.100.2", 60)
    finally:
        feeder.stop()
    assert set(nft.sets["dom_a_v4"]) == {"198.51.100.1", "198.51.100.2"}
    assert not any(t.name == "nftset-feeder" for t in threading.enumerate())


def test_memory_set_feed_keeps_the_contract(clock: Clock) -> None:
    feed = MemorySetFeed(clock)
    feed.add("dom_a_v4", V4, "198.51.100.1", 10)
    feed.add("dom_a_v6", V6, "2001:DB8::1", 100)
    feed.add("dom_a_v4", V4, "example.com", 10)
    assert feed.invalid == 1
    assert feed.members("dom_a_v4") == {"198.51.100.1"}
    assert feed.members("dom_a_v6") == {"2001:db8::1"}
    assert feed.expiry("dom_a_v4", "198.51.100.1") == clock.now + 10
    clock.now += 10
    assert feed.members("dom_a_v4") == set() and feed.members("nope") == set()
    assert feed.expiry("dom_a_v4", "198.51.100.1") is None
    assert feed.resync() == 1
    feed.forget_sets(["dom_a_v4"])
    assert feed.members("dom_a_v6") == set()


# -- real nftables, in a scratch network namespace ------------------------------------------

TABLE = """table inet edgeguard {
\tset dom_iot-cloud_v4 { type ipv4_addr; size 65535; flags timeout; }
\tset dom_iot-cloud_v6 { type ipv6_addr; size 65535; flags timeout; }
\tchain forward {
\t\ttype filter hook forward priority filter; policy drop;
\t\tip daddr @dom_iot-cloud_v4 accept
\t\tip6 daddr @dom_iot-cloud_v6 accept
\t}
}
"""
REPLACE = "table inet edgeguard\ndelete table inet edgeguard\n" + TABLE

# Runs inside the namespace (libnftables acts on the namespace of its process): one JSON
# command per line on stdin, one JSON reply per line on stdout.
FEEDER = r"""
import json, sys
from appliance.nftset import NftSetFeeder
feeder = NftSetFeeder()
feeder.start()
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["op"] == "feed":
        for set_name, family, address, timeout in cmd["elems"]:
            feeder.add(set_name, family, address, timeout)
    elif cmd["op"] == "resync":
        feeder.resync()
    ok = feeder.flush(30)
    print(json.dumps({"ok": ok, "stats": feeder.stats()}), flush=True)
feeder.stop()
"""


class FeederProcess:
    def __init__(self, ns: str) -> None:
        self.proc = netns.popen(ns, [sys.executable, "-c", FEEDER], stdin=subprocess.PIPE)

    def send(self, op: str, elems: Sequence[tuple[str, int, str, int]] = ()) -> Any:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps({"op": op, "elems": list(elems)}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, self.proc.stderr.read() if self.proc.stderr else "feeder died"
        reply = json.loads(line)
        assert reply["ok"], reply
        return reply["stats"]

    def close(self) -> None:
        """End stdin (the feeder stops), reap it and close every pipe."""
        try:
            self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()


def listed(ns: str, name: str) -> dict[str, tuple[int, int]]:
    """Address -> (timeout, expires) of a set, from nft's JSON listing in ``ns``."""
    res = netns.nft(ns, ["-j", "list", "set", "inet", "edgeguard", name])
    out: dict[str, tuple[int, int]] = {}
    for item in json.loads(res.stdout)["nftables"]:
        for elem in item.get("set", {}).get("elem", []):
            e = elem["elem"]
            out[e["val"]] = (e["timeout"], e["expires"])
    return out


@pytest.fixture
def nft_ns(netns_root: None, lab_prefix: str) -> Iterator[str]:
    del netns_root
    with netns.scratch_namespace(lab_prefix) as ns:
        netns.nft(ns, ["-f", "-"], TABLE)
        yield ns


@pytest.mark.netns
def test_feeder_fills_real_timeout_sets_and_resyncs_after_a_table_replace(nft_ns: str) -> None:
    nets = ("192.0.2", "198.51.100", "203.0.113")
    v4s = [f"{net}.{host}" for net in nets for host in range(1, 255)]
    v6s = [v6((i << 16) + i) for i in range(1, 5001 - len(v4s))]
    elems = [("dom_iot-cloud_v4", V4, a, 600) for a in v4s]
    elems += [("dom_iot-cloud_v6", V6, a, 600) for a in v6s]
    assert len(elems) == 5000
    feeder = FeederProcess(nft_ns)
    try:
        stats = feeder.send("feed", elems)
        assert (stats["added"], stats["errors"], stats["dropped"]) == (5000, 0, 0), stats
        assert 3 <= stats["batches"] <= 4  # 2000 + 2000 + 1000 (if not caught mid-feed)
        got4, got6 = listed(nft_ns, "dom_iot-cloud_v4"), listed(nft_ns, "dom_iot-cloud_v6")
        assert set(got4) == set(v4s) and set(got6) == set(v6s)
        assert all(t == 600 and 590 <= e <= 600 for t, e in [*got4.values(), *got6.values()])

        # A refresh after more than half the timeout really moves the kernel's expiry.
        stats = feeder.send("feed", [("dom_iot-cloud_v4", V4, "192.0.2.1", 4)])  # deduped
        assert stats["skipped"] == 1
        short = [("dom_iot-cloud_v6", V6, "2001:db8:ffff::1", 4)]
        feeder.send("feed", short)
        threading.Event().wait(2.2)
        assert listed(nft_ns, "dom_iot-cloud_v6")["2001:db8:ffff::1"][1] <= 2
        feeder.send("feed", short)
        assert listed(nft_ns, "dom_iot-cloud_v6")["2001:db8:ffff::1"] in {(4, 4), (4, 3)}

        netns.nft(nft_ns, ["-f", "-"], REPLACE)  # what an apply does: the sets are empty
        assert listed(nft_ns, "dom_iot-cloud_v4") == {}
        stats = feeder.send("resync")
        assert stats["errors"] == 0, stats
        got4, got6 = listed(nft_ns, "dom_iot-cloud_v4"), listed(nft_ns, "dom_iot-cloud_v6")
        assert set(got4) == set(v4s) and set(got6) == {*v6s, "2001:db8:ffff::1"}
        assert all(590 <= t <= 600 and e <= t for t, e in got4.values())

        # The policy dropped the v4 set: its elements are lost, the v6 ones still go in.
        drop_v4 = (
            "delete chain inet edgeguard forward\ndelete set inet edgeguard dom_iot-cloud_v4\n"
        )
        netns.nft(nft_ns, ["-f", "-"], drop_v4)
        late = [
            ("dom_iot-cloud_v4", V4, "198.51.100.255", 60),
            ("dom_iot-cloud_v6", V6, "2001:db8:eeee::1", 60),
        ]
        stats = feeder.send("feed", late)
        assert stats["errors"] == 1 and "dom_iot-cloud_v4" in stats["last_error"]
        assert "2001:db8:eeee::1" in listed(nft_ns, "dom_iot-cloud_v6")
    finally:
        feeder.close()

"""The quarantine manager: the table decides, sync moves only the difference into the sets;
and ``edgeguard quarantine`` writes the same table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from appliance.anomaly.quarantine import (
    MemoryQuarantineSets,
    NftQuarantineSets,
    QuarantineManager,
    canonical_address,
)
from appliance.anomaly.store import AnomalyStore
from appliance.cli import main
from appliance.errors import AnomalyError


class Clock:
    def __init__(self) -> None:
        self.now = 1_760_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def manager(tmp_path: Path) -> QuarantineManager:
    return QuarantineManager(AnomalyStore.in_state_dir(tmp_path), Clock())


def test_addresses_are_canonical_and_checked() -> None:
    assert canonical_address(" 2001:DB8:0:10:0:0:0:23 ") == (6, "2001:db8:0:10::23")
    assert canonical_address("::ffff:192.0.2.9") == (4, "192.0.2.9")
    for bad in ("192.0.2.0/24", "lan", "127.0.0.1", "::", "fe80::1", "224.0.0.1", "1.2.3"):
        with pytest.raises(AnomalyError):
            canonical_address(bad)


def test_add_and_lift_by_hand(manager: QuarantineManager) -> None:
    entry = manager.add("2001:DB8:0:10::23", reason="  odd\n traffic ", by="alice")
    assert entry.address == "2001:db8:0:10::23" and entry.reason == "odd traffic"
    assert manager.is_quarantined("2001:db8:0:10:0::23")
    with pytest.raises(AnomalyError, match="already quarantined"):
        manager.add("2001:db8:0:10::23", reason="again", by="bob")
    lifted = manager.lift("2001:db8:0:10::23", by="bob")
    assert lifted.lifted_by == "bob" and not manager.is_quarantined("2001:db8:0:10::23")
    with pytest.raises(AnomalyError, match="not quarantined"):
        manager.lift("2001:db8:0:10::23", by="bob")
    assert not manager.is_quarantined("not an address")


def test_sync_moves_only_the_difference(manager: QuarantineManager) -> None:
    feed = MemoryQuarantineSets()
    feed.sets["quarantine4"].add("192.0.2.200")  # left over, no longer in the table
    manager.add("192.0.2.10", reason="x", by="a")
    manager.add("2001:db8:0:10::10", reason="x", by="a")
    result = manager.sync(feed)
    assert (result.added, result.removed, result.error) == (2, 1, "")
    assert feed.sets == {"quarantine4": {"192.0.2.10"}, "quarantine6": {"2001:db8:0:10::10"}}
    assert manager.sync(feed).added == 0 and feed.transactions == 2  # in step: nothing to send
    manager.lift("192.0.2.10", by="a")
    assert manager.sync(feed).removed == 1 and feed.sets["quarantine4"] == set()


def test_sync_without_the_sets_reports_and_recovers(manager: QuarantineManager) -> None:
    feed = MemoryQuarantineSets()
    feed.missing = True  # the live policy has no anomaly: section
    manager.add("192.0.2.10", reason="x", by="a")
    assert "No such file" in manager.sync(feed).error
    assert "No such file" in manager.refill(feed).error
    feed.missing = False  # a policy with the section was applied: its sets start empty
    assert manager.refill(feed).added == 1 and feed.sets["quarantine4"] == {"192.0.2.10"}
    assert manager.refill(feed).added == 1  # adding what is there is harmless in nft


class FakeBackend:
    """libnftables' json_cmd, answering like nft 1.0.6 for our two sets."""

    def __init__(self, sets: dict[str, set[str]], rc: int = 0) -> None:
        self.sets = sets
        self.rc = rc
        self.sent: list[list[dict[str, Any]]] = []

    def json_cmd(self, json_root: dict[str, Any]) -> tuple[int, Any, str]:
        commands = json_root["nftables"]
        self.sent.append(commands)
        if self.rc:
            return self.rc, "", "Error: No such file or directory\n"
        if "list" in commands[0]:
            name = commands[0]["list"]["set"]["name"]
            found: dict[str, Any] = {"name": name, "family": "inet", "table": "edgeguard"}
            if self.sets[name]:
                found["elem"] = sorted(self.sets[name])
            return 0, {"nftables": [{"metainfo": {}}, {"set": found}]}, ""
        return 0, "", ""


def test_nft_sets_speak_json_only(manager: QuarantineManager) -> None:
    backend = FakeBackend({"quarantine4": {"192.0.2.200"}, "quarantine6": set()})
    manager.add("192.0.2.10", reason="x", by="a")
    assert manager.sync(NftQuarantineSets(backend)).added == 1
    lists, change = backend.sent[:2], backend.sent[2]
    assert [c[0]["list"]["set"]["name"] for c in lists] == ["quarantine4", "quarantine6"]
    base = {"family": "inet", "table": "edgeguard", "name": "quarantine4"}
    assert change == [
        {"delete": {"element": {**base, "elem": ["192.0.2.200"]}}},
        {"add": {"element": {**base, "elem": ["192.0.2.10"]}}},
    ]
    failing = NftQuarantineSets(FakeBackend({}, rc=1))
    assert "No such file or directory" in manager.sync(failing).error


def test_cli_list_add_lift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = ["--state-dir", str(tmp_path)]
    assert main(["quarantine", "list", *state]) == 0
    assert "no host is quarantined" in capsys.readouterr().out
    assert (
        main(["quarantine", "add", "192.0.2.23", "--reason", "scans", "--by", "eve", *state]) == 0
    )
    assert "192.0.2.23 quarantined" in capsys.readouterr().out
    assert main(["quarantine", "add", "192.0.2.23", "--reason", "again", *state]) == 1
    assert "already quarantined" in capsys.readouterr().err
    assert main(["quarantine", "list", *state]) == 0
    out = capsys.readouterr().out
    assert "192.0.2.23" in out and "by eve: scans" in out
    assert main(["quarantine", "lift", "192.0.2.23", "--by", "eve", *state]) == 0
    assert main(["quarantine", "list", "--all", *state]) == 0
    assert "lifted by eve" in capsys.readouterr().out
    assert QuarantineManager(AnomalyStore.in_state_dir(tmp_path)).active() == []
    assert main(["quarantine", "add", "lan", "--reason", "x", *state]) == 1
    with pytest.raises(SystemExit):
        main(["quarantine", "add", "192.0.2.24", *state])  # no --reason

"""``edgeguard sync enrol`` and ``status`` through the real parser (no nftables needed)."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest

from appliance.cli import main
from appliance.sync.keys import generate_key
from appliance.sync.metadata import make_root
from appliance.sync.state import SyncPaths, SyncState
from appliance.sync.sync_cmd import status_lines

NOW = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def root_file(tmp_path: Path) -> tuple[Path, str]:
    key = generate_key()
    envelope = make_root(1, [key], [key], [key], [], NOW + dt.timedelta(days=365), [key])
    path = tmp_path / "root.json"
    path.write_text(json.dumps(envelope))
    return path, key.keyid


def _enrol(state: Path, root: Path, *extra: str) -> int:
    return main(["sync", "enrol", "--state-dir", str(state), "--server", "https://msp.example/p",
                 "--checkin", "https://msp.example", "--site", "acme-hq", "--root", str(root),
                 "--credential", "tok", *extra])  # fmt: skip


def test_enrol_writes_a_private_enrolment_and_the_trusted_root(tmp_path, root_file, capsys):
    root, keyid = root_file
    assert _enrol(tmp_path / "state", root, "--root-keyid", keyid) == 0
    paths = SyncPaths(tmp_path / "state")
    assert stat.S_IMODE(paths.enrolment.stat().st_mode) == 0o600
    enrolment = json.loads(paths.enrolment.read_text())
    assert enrolment["site"] == "acme-hq" and enrolment["credential"] == "tok"
    assert json.loads(paths.root.read_text()) == json.loads(root.read_text())
    assert "trusting root v1" in capsys.readouterr().out
    assert _enrol(tmp_path / "state", root) == 0  # re-enrolling keeps the appliance id
    assert json.loads(paths.enrolment.read_text())["appliance_id"] == enrolment["appliance_id"]


def test_enrol_refuses_a_root_without_the_pinned_key(tmp_path, root_file, capsys) -> None:
    root, _ = root_file
    assert _enrol(tmp_path / "state", root, "--root-keyid", "0" * 64) == 2
    assert "do not include the pinned" in capsys.readouterr().err
    assert not SyncPaths(tmp_path / "state").enrolment.exists()


def test_status_shows_last_synced_result_root_and_conflicts(tmp_path, root_file) -> None:
    root, _ = root_file
    _enrol(tmp_path / "state", root)
    paths = SyncPaths(tmp_path / "state")
    state = SyncState.load(paths.state)
    state.last_contact = "2026-12-29T00:00:00Z"
    state.last_sync = {"at": "2027-01-01T00:00:00Z", "result": "failed",
                       "reason": "unreachable", "error": "cannot connect"}  # fmt: skip
    state.failures, state.bundle_version = 4, 7
    state.conflicts = [{"section": "rules", "base": None, "local": [], "remote": []}]
    state.save(paths.state)
    text = "\n".join(status_lines(tmp_path / "state", NOW))
    assert "last synced: 2026-12-29T00:00:00Z (3 d ago)" in text
    assert "last result: failed (unreachable)" in text and "error: cannot connect" in text
    assert "trusted root: version 1" in text and "bundle: version 7" in text
    assert "4 cycle(s) in a row" in text and "conflict: section rules" in text

"""``edgeguard run``'s services follow MSP enrolment without a reboot: where the live policy's
list files resolve, and the restart when the box is enrolled (web UI form) or gets its first
bundle."""

from __future__ import annotations

import argparse
import asyncio
import threading
from pathlib import Path

import pytest

from appliance.commands import RESTART_ENROLLED, SyncThread, _serve, _services_setup
from appliance.engine import Engine
from appliance.nft import MemoryNft
from appliance.store import ConfigStore


def _args(tmp_path: Path) -> argparse.Namespace:
    return argparse.Namespace(state_dir=tmp_path / "state", policy=tmp_path / "p" / "office.yaml")


def test_the_policy_base_moves_to_the_bundle_files_only_once_a_bundle_is_there(
    tmp_path: Path,
) -> None:
    args = _args(tmp_path)
    local = (False, tmp_path / "p")
    assert _services_setup(args) == local
    sync = args.state_dir / "sync"
    sync.mkdir(parents=True)
    (sync / "enrolment.json").write_text("{}")
    # enrolled, but the local policy is still live: its files are still next to it
    assert _services_setup(args) == (True, tmp_path / "p")
    (sync / "site").mkdir()
    assert _services_setup(args) == (True, sync / "site")


def test_serve_returns_for_a_restart_when_the_setup_changes(tmp_path: Path) -> None:
    engine = Engine(ConfigStore(tmp_path / "state"), MemoryNft())
    enrolled = threading.Event()
    threading.Timer(0.3, enrolled.set).start()
    code = asyncio.run(_serve(engine, tmp_path, tmp_path / "state", enrolled.is_set))
    assert code == RESTART_ENROLLED


def test_the_sync_thread_is_started_once_and_again_only_if_it_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kept across the services' restarts: never a second agent beside one still in a cycle.
    A box whose enrolment cannot be read ends the loop; the next restart tries again."""
    sync = SyncThread(tmp_path / "state", 300.0)
    sync.ensure_running()  # not enrolled: the loop says why and ends
    thread = sync._thread
    assert thread is not None
    thread.join(10)
    assert not sync.running
    sync.ensure_running()
    assert sync._thread is not thread, "an ended loop is started again"
    sync._thread.join(10)

    started = threading.Event()
    release = threading.Event()

    def long_cycle(state_dir: Path, interval: float, stop: threading.Event) -> int:
        started.set()
        release.wait(10)
        return 0

    monkeypatch.setattr("appliance.sync.sync_cmd.serve_loop", long_cycle)
    busy = SyncThread(tmp_path / "state", 300.0)
    try:
        busy.ensure_running()
        assert started.wait(5)
        first = busy._thread
        busy.ensure_running()  # a restart while the first is in a cycle
        assert busy._thread is first
    finally:
        release.set()
        busy.stop(5)
    assert not busy.running

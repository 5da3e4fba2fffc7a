"""The agent's loop as ``edgeguard run`` runs it: a thread of the controller that applies
what the MSP publishes, survives a cycle that fails in an unforeseen way, and ends promptly
when told to."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from appliance.engine import Engine
from appliance.store import ConfigStore
from appliance.sync.agent import SyncAgent, SyncOutcome
from appliance.sync.checkin import HealthProbe
from appliance.sync.sync_cmd import serve_loop
from appliance.sync.transport import HttpTransport
from tests.appliance.helpers import wait_until
from tests.appliance.sync.conftest import Appliance, Msp


def _agent_in_thread(msp: Msp, box: Appliance) -> SyncAgent:
    """Like ``agent_for``: made in the loop's own thread (its own store connection), with
    the box's in-memory nftables."""
    engine = Engine(ConfigStore(box.state), box.nft, msp.clock)
    health = HealthProbe(box.nft.exists, lambda: True, uptime_s=lambda: 1)
    return SyncAgent(box.state, engine, HttpTransport(timeout=5), health)


def _run(msp: Msp, box: Appliance, interval: float) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(
        target=serve_loop,
        args=(box.state, interval, stop, lambda _state: _agent_in_thread(msp, box)),
        daemon=True,
    )
    thread.start()
    return thread, stop


def test_the_thread_applies_a_published_bundle_and_stops_when_told(
    msp: Msp, box: Appliance
) -> None:
    msp.publish(1)
    thread, stop = _run(msp, box, 0.05)
    try:
        assert wait_until(lambda: box.state_json().get("bundle_version") == 1, 20, 0.05), (
            box.state_json()
        )
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    live = ConfigStore(box.state).live()
    assert live is not None and "MSP bundle v1" in live.message


def test_an_unforeseen_error_in_a_cycle_is_reported_and_the_loop_goes_on(
    msp: Msp, box: Appliance, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    msp.publish(1)
    calls: list[int] = []
    real = SyncAgent.run_once

    def flaky(agent: SyncAgent) -> SyncOutcome:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug in the first cycle")
        return real(agent)

    monkeypatch.setattr(SyncAgent, "run_once", flaky)
    # interval 0.01 s: after the failed cycle the backoff doubles it, still well under a second
    thread, stop = _run(msp, box, 0.01)
    try:
        assert wait_until(lambda: box.state_json().get("bundle_version") == 1, 20, 0.05)
    finally:
        stop.set()
        thread.join(10)
    assert "sync cycle failed unexpectedly: RuntimeError('a bug in the first cycle')" in (
        capsys.readouterr().out
    )
    assert len(calls) >= 2


def test_a_box_that_is_not_enrolled_ends_the_loop_with_a_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stop = threading.Event()
    assert serve_loop(tmp_path / "state", 1.0, stop) == 2
    assert "not enrolled" in capsys.readouterr().err

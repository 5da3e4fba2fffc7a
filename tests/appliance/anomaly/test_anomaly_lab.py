"""Anomaly scoring end to end with real packets: ``edgeguard run`` in the lab's router.

A LAN client beacons to a server in the internet namespace, another LAN address port-scans
an IoT host on the inside, a guest browses a little. Scoring reads the router's conntrack
(the real collector) and must flag both attackers and not the guest; quarantine then cuts
the beaconing client off, and lifting it restores access.

Two things are shortened for a test: evaluation every 2 s instead of 60 s, and a beacon of
one minute instead of hours (the policy sets ``min_hours: 1`` so one hour bucket counts as
persistent). Everything else is the shipped code path.
"""

from __future__ import annotations

import sqlite3
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from appliance import netns
from appliance.lab import Lab
from appliance.labprobe import Probe
from tests.appliance.helpers import Controller

pytestmark = pytest.mark.netns

BEACON = textwrap.dedent(
    """
    import socket, time
    for _ in range(30):
        with socket.create_connection(("198.51.100.10", 80), timeout=2,
                                      source_address=("192.0.2.10", 0)) as s:
            s.sendall(b"GET /checkin HTTP/1.0\\r\\n\\r\\n")
            s.recv(4096)
        time.sleep(1.0)
    """
)

SRV, CAM = "198.51.100.10", "192.0.2.140"
BEACONER, SCANNER, GUEST = "192.0.2.10", "192.0.2.11", "192.0.2.70"


def _policy(policies: Path) -> Path:
    text = (policies / "office-guest-iot.yaml").read_text()
    # everything from the LAN to the IoT network, so the scan reaches the camera (a dropped
    # SYN never becomes a conntrack entry: scans the firewall already stops are not scored)
    allow = "    to: iot\n    service: [web, ping]\n"
    assert allow in text
    text = text.replace(allow, "    to: iot\n")
    text = text[: text.index("anomaly:")] + (
        "anomaly:\n  record: info\n  detectors: {beacon: {min_hours: 1, min_connections: 10}}\n"
    )
    path = policies / "anomaly-lab.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def box(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    tmp = tmp_path_factory.mktemp("anomaly")
    import shutil

    shutil.copytree(Path(__file__).parents[3] / "policies" / "examples", tmp / "policies")
    lab.load_ruleset(None)
    controller = Controller(lab, tmp / "state", _policy(tmp / "policies"), "--anomaly-every", "2")
    try:
        controller.wait_for("anomaly scoring: started")
        yield controller
    finally:
        controller.stop()
        lab.load_ruleset(None)


def _alerts(state: Path) -> list[tuple[str, str, int, str]]:
    db = state / "anomalies.db"
    if not db.exists():
        return []
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT host, kind, score, severity FROM anomalies").fetchall()
    return [(str(h), str(k), int(s), str(v)) for h, k, s, v in rows]


def _tcp(lab: Lab, role: str, dst: str, port: int, src: str | None = None) -> str:
    [r] = lab.probe(role, [Probe("tcp", dst, port, src=src, timeout=1.5)])
    return r.outcome


def test_beacon_and_scan_flagged_quiet_guest_not_then_quarantine_and_lift(
    lab: Lab, box: Controller
) -> None:
    # the scan: 150 closed ports on the camera, answered with RSTs (fast)
    lab.probe("lan", [Probe("tcp", CAM, p, src=SCANNER, timeout=0.5) for p in range(2000, 2150)])
    # the guest browses a little, irregularly
    for port in (80, 443, 80):
        lab.probe("guest", [Probe("tcp", SRV, port, timeout=1.0)])
        time.sleep(0.7)
    # the beacon: a check-in every second, same size each time, from an implant-like loop
    netns.run(lab.ns("lan"), [sys.executable, "-c", BEACON], timeout=90)
    deadline = time.monotonic() + 60
    flagged: set[tuple[str, str]] = set()
    while time.monotonic() < deadline:
        alerts = _alerts(box.state)
        flagged = {(h, k) for h, k, _s, sev in alerts if sev != "info"}
        if {(BEACONER, "beacon"), (SCANNER, "scan")} <= flagged:
            break
        time.sleep(1.0)
    assert (BEACONER, "beacon") in flagged, _alerts(box.state)
    assert (SCANNER, "scan") in flagged, _alerts(box.state)
    assert not [a for a in _alerts(box.state) if a[0] == GUEST and a[3] != "info"]

    # quarantine by hand (the CLI writes the table; the scorer's loop syncs the set)
    def cli(*args: str) -> None:
        netns.run(
            lab.ns("router"),
            [sys.executable, "-m", "appliance.cli", "quarantine", *args,
             "--state-dir", str(box.state)],
            timeout=30,
        )  # fmt: skip

    cli("add", BEACONER, "--reason", "beaconing to 198.51.100.10")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _tcp(lab, "lan", SRV, 80, src=BEACONER) == "open":
        time.sleep(0.5)
    assert _tcp(lab, "lan", SRV, 80, src=BEACONER) != "open"
    assert _tcp(lab, "lan", SRV, 80, src=SCANNER) == "open", "only the quarantined host"
    cli("lift", BEACONER)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _tcp(lab, "lan", SRV, 80, src=BEACONER) != "open":
        time.sleep(0.5)
    assert _tcp(lab, "lan", SRV, 80, src=BEACONER) == "open"

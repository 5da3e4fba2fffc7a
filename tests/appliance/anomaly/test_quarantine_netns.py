"""Quarantine with real packets: the lab's router runs a compiled ruleset with the
quarantine sets; the manager's ``sync`` puts a LAN client in, which then cannot reach the
internet (its open flow is cut too) but still gets DNS and ping from the box; lifting it
restores access. Everything happens in the lab's namespaces (documentation addresses)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance import netns
from appliance.anomaly.quarantine import NftQuarantineSets, QuarantineManager
from appliance.anomaly.store import AnomalyStore
from appliance.lab import Lab
from appliance.labprobe import Probe
from policies.compiler import compile_policy
from policies.loader import load_policy

pytestmark = pytest.mark.netns

EXAMPLE = Path(__file__).parents[3] / "policies" / "examples" / "office-guest-iot.yaml"
AT = dt.datetime(2026, 1, 15, 17, 0, tzinfo=dt.UTC)  # a Thursday, within opening hours


class NetnsJsonCmd:
    """``nftset.JsonCmdBackend`` inside a namespace: ``nft -j -f -`` there, never here."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def json_cmd(self, json_root: dict[str, Any]) -> tuple[int, Any, str]:
        proc = netns.nft(self.namespace, ["-j", "-f", "-"], json.dumps(json_root), check=False)
        out = json.loads(proc.stdout) if proc.stdout.strip() else ""
        return proc.returncode, out, proc.stderr


@pytest.fixture
def router_services(clean_lab: Lab) -> Iterator[Lab]:
    """Listeners on the router itself: DNS (53), NTP (123) and SSH/HTTPS (22, 443)."""
    argv = [sys.executable, "-m", "appliance.labserver", "--tcp", "22,443,53", "--udp", "53,123"]
    proc = netns.popen(clean_lab.ns("router"), argv)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield clean_lab
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=3)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


UDP_FLOW = textwrap.dedent(
    """\
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((sys.argv[1], 40123))
    s.connect((sys.argv[2], 5000))
    s.settimeout(1.0)
    def once():
        try:
            s.send(b"x")
            return "open" if s.recv(100) else "empty"
        except OSError as exc:
            return type(exc).__name__
    print(once(), flush=True)
    sys.stdin.readline()  # the test quarantines the host meanwhile
    print(once(), flush=True)
    """
)
"""One UDP flow (fixed ports, so the second datagram is conntrack-established)."""


def outcomes(lab: Lab, role: str, probes: list[Probe]) -> list[str]:
    return [r.outcome for r in lab.probe(role, probes)]


def test_quarantine_blocks_the_client_and_lifting_restores_access(
    router_services: Lab, tmp_path: Path
) -> None:
    lab = router_services
    policy = load_policy(EXAMPLE).policy
    lab.load_ruleset(compile_policy(policy, at=AT).text)
    manager = QuarantineManager(AnomalyStore.in_state_dir(tmp_path))
    feed = NftQuarantineSets(NetnsJsonCmd(lab.ns("router")))
    client, other = lab.addr("lan", 0), lab.addr("lan", 1)
    client6 = lab.addr6("lan", 0)
    box, box6 = lab.router_addr("lan"), lab.router_addr6("lan")
    web = Probe("tcp", lab.server(), 80, src=client, timeout=1.0)
    web6 = Probe("tcp", lab.server6(), 80, src=client6, timeout=1.0)
    other_web = Probe("tcp", lab.server(), 80, src=other, timeout=1.0)
    dns = Probe("udp", box, 53, src=client, timeout=1.0)
    dns6 = Probe("udp", box6, 53, src=client6, timeout=1.0)
    ping = Probe("icmp", box, src=client, timeout=1.0)
    ntp = Probe("udp", box, 123, src=client, timeout=1.0)
    every = [web, web6, other_web, dns, dns6, ping, ntp]
    assert outcomes(lab, "lan", every) == ["open"] * 7

    # A flow that is already established when the quarantine starts.
    flow = netns.popen(
        lab.ns("lan"), [sys.executable, "-c", UDP_FLOW, client, lab.server()], stdin=subprocess.PIPE
    )
    try:
        assert flow.stdout is not None and flow.stdin is not None
        assert flow.stdout.readline().strip() == "open"

        manager.add(client, reason="beacon alert", by="test")
        manager.add(client6, reason="beacon alert", by="test")
        assert manager.sync(feed).added == 2
        members = feed.members()
        assert members == {"quarantine4": {client}, "quarantine6": {client6}}

        flow.stdin.write("\n")
        flow.stdin.flush()
        assert flow.stdout.readline().strip() != "open"  # the established flow is cut
    finally:
        flow.kill()
        flow.communicate(timeout=5)

    quarantined = outcomes(lab, "lan", every)
    assert quarantined[0] == "refused" and quarantined[1] == "refused"  # tcp reset, fast
    assert quarantined[2] == "open"  # the other LAN client is not affected
    assert quarantined[3:6] == ["open", "open", "open"]  # DNS (v4, v6) and ping to the box
    assert quarantined[6] == "timeout"  # NTP to the box was allowed before; not any more

    # Anti-lockout wins: a quarantined host in the management zone keeps SSH/HTTPS to the box.
    mgmt = lab.addr("mgmt")
    manager.add(mgmt, reason="admin laptop", by="test")
    assert manager.sync(feed).added == 1
    admin = [Probe("tcp", lab.router_addr("mgmt"), p, timeout=1.0) for p in (22, 443)]
    assert outcomes(lab, "mgmt", admin) == ["open", "open"]

    manager.lift(client, by="test")
    manager.lift(client6, by="test")
    assert manager.sync(feed).removed == 2
    assert outcomes(lab, "lan", every) == ["open"] * 7

    # Replacing the table (an apply) empties the sets; refill puts the quarantine back.
    lab.load_ruleset(compile_policy(policy, at=AT).text)
    assert feed.members()["quarantine4"] == set()
    assert manager.refill(feed).added == 1
    assert feed.members()["quarantine4"] == {mgmt}

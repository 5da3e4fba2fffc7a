"""``edgeguard lab demo``: the appliance in a lab, with clients making real traffic.

Builds the namespace lab, runs the controller (``edgeguard run``) inside the router
namespace so it enforces the policy there, and every few seconds sends a fixed set of
flows from the office clients and the internet, printing what got through. This is what
``make run`` shows a newcomer: real packets filtered by the compiled policy.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from appliance import netns
from appliance.lab import Lab
from appliance.labprobe import Probe, ProbeResult

# (label, from role, probe): flows a small office makes; each names what it shows.
FLOWS: list[tuple[str, str, Probe]] = [
    (
        "LAN -> web server (IPv4, masqueraded)",
        "lan",
        Probe("tcp", "198.51.100.10", 80, timeout=0.5),
    ),
    ("LAN -> web server (IPv6)", "lan", Probe("tcp", "2001:db8:100::10", 443, timeout=0.5)),
    ("LAN -> NTP on the internet (udp)", "lan", Probe("udp", "198.51.100.10", 123, timeout=0.5)),
    ("LAN -> host on a block list", "lan", Probe("tcp", "198.51.100.66", 80, timeout=0.5)),
    ("LAN -> NAS in the DMZ (https)", "lan", Probe("tcp", "192.0.2.170", 443, timeout=0.5)),
    (
        "LAN -> DMZ ssh (not an admin)",
        "lan",
        Probe("tcp", "192.0.2.170", 22, src="192.0.2.11", timeout=0.5),
    ),
    ("LAN admin -> DMZ ssh", "lan", Probe("tcp", "192.0.2.170", 22, src="192.0.2.10", timeout=0.5)),
    ("internet -> port forward 8443 (NAS)", "inet", Probe("tcp", "203.0.113.2", 8443, timeout=0.5)),
    ("internet -> the box's ssh", "inet", Probe("tcp", "203.0.113.2", 22, timeout=0.5)),
    (
        "LAN asks the box: www.example.com",
        "lan",
        Probe("dns", "192.0.2.1", 53, qname="www.example.com"),
    ),
    (
        "LAN asks the box: tracker.example.net",
        "lan",
        Probe("dns", "192.0.2.1", 53, qname="tracker.example.net"),
    ),
    (
        "LAN asks: ads.example.net (CNAME to tracker)",
        "lan",
        Probe("dns", "192.0.2.1", 53, qname="ads.example.net"),
    ),
    (
        "LAN asks: nas.office.lan (local record)",
        "lan",
        Probe("dns", "192.0.2.1", 53, qname="nas.office.lan"),
    ),
    (
        "box 127.0.0.1:5353: c2.badnet.example",
        "router",
        Probe("dns", "127.0.0.1", 5353, qname="c2.badnet.example"),
    ),
]


def _verdict(result: ProbeResult, probe: Probe) -> str:
    if probe.kind == "dns" and result.ok:
        blocked = result.seen_as in ("NXDOMAIN", "REFUSED", "0.0.0.0")
        return f"{'BLOCKED' if blocked else 'ANSWERED'} ({result.seen_as})"
    if result.ok:
        seen = f" (server saw {result.seen_as})" if result.seen_as else ""
        return f"ALLOWED{seen}"
    if result.outcome == "timeout":
        return "BLOCKED (dropped)"
    return f"BLOCKED ({result.outcome}: rejected)"


def run_demo(
    policy: Path, state_dir: Path, prefix: str, duration: float | None, interval: float
) -> int:
    if state_dir.exists():
        shutil.rmtree(state_dir)  # every demo starts from a first boot
    with Lab.up(prefix) as lab:
        lab.start_servers()
        upstream = netns.popen(
            lab.ns("inet"),
            [sys.executable, "-m", "appliance.labdns", "--listen", "198.51.100.10"],
            stdout=subprocess.DEVNULL,
            stderr=None,
        )
        print(f"lab up: namespaces {', '.join(lab.namespaces)}", flush=True)
        controller = netns.popen(
            lab.ns("router"),
            [
                sys.executable,
                "-m",
                "appliance.cli",
                "run",
                "--state-dir",
                str(state_dir),
                "--policy",
                str(policy),
            ],
            stdout=None,
            stderr=None,
        )
        try:
            time.sleep(1.0)
            if controller.poll() is not None:
                print("the controller exited early; see its output above", file=sys.stderr)
                return 1
            deadline = time.monotonic() + duration if duration else None
            rounds = 0
            while deadline is None or time.monotonic() < deadline:
                rounds += 1
                print(f"\n--- traffic round {rounds} (Ctrl-C to stop) ---", flush=True)
                by_role: dict[str, list[tuple[str, Probe]]] = {}
                for label, role, probe in FLOWS:
                    by_role.setdefault(role, []).append((label, probe))
                for role, items in by_role.items():
                    results = lab.probe(role, [p for _, p in items])
                    for (label, probe), res in zip(items, results, strict=True):
                        print(f"  {label:<46} {_verdict(res, probe)}", flush=True)
                time.sleep(interval)
        except KeyboardInterrupt:
            print("\nstopping", flush=True)
        finally:
            upstream.terminate()
            controller.terminate()
            try:
                controller.wait(timeout=5)
            except subprocess.TimeoutExpired:
                controller.kill()
    print("lab down: all namespaces removed", flush=True)
    return 0

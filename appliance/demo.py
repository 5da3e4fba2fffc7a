"""``edgeguard lab demo``: the appliance in a lab, with clients making real traffic.

Builds the namespace lab, runs the controller (``edgeguard run``) inside the router
namespace so it enforces the policy there, and every few seconds sends a fixed set of
flows from the office clients and the internet, printing what got through. This is what
``make run`` shows a newcomer: real packets filtered by the compiled policy.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from appliance import netns
from appliance.lab import Lab
from appliance.labprobe import Probe, ProbeResult

Flow = tuple[str, str, Probe]  # (label, from role, probe)

# Flows a small office makes (small-office.yaml); each names what it shows.
FLOWS: list[Flow] = [
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


def _dns(label: str, role: str, server: str, name: str, src: str | None = None) -> Flow:
    return (label, role, Probe("dns", server, 53, src=src, qname=name, timeout=1.0))


def _tcp(label: str, role: str, dst: str, port: int, src: str | None = None) -> Flow:
    return (label, role, Probe("tcp", dst, port, src=src, timeout=0.5))


# The web filter (web-filter.yaml): groups of people and devices, and no way around it.
WEB_FILTER_FLOWS: list[Flow] = [
    _tcp("staff -> web server (https)", "lan", "198.51.100.10", 443, "192.0.2.10"),
    _dns("staff asks: adult.example", "lan", "192.0.2.1", "adult.example", "192.0.2.10"),
    _dns("staff asks: phish.example (malware)", "lan", "192.0.2.1", "phish.example", "192.0.2.10"),
    _dns("staff asks: social.example (lunch only)", "lan", "192.0.2.1", "social.example"),
    _dns("kids ask: adult.example", "guest", "192.0.2.65", "adult.example"),
    _dns("kids ask a rogue server: adult.example", "guest", "198.51.100.10", "adult.example"),
    _dns("kids ask: www.google.com (safe search)", "guest", "192.0.2.65", "www.google.com"),
    _dns("kids ask: use-application-dns.net", "guest", "192.0.2.65", "use-application-dns.net"),
    _tcp("kids -> DNS over TLS (853)", "guest", "198.51.100.10", 853),
    _tcp("kids -> social.example's address", "guest", "198.51.100.30", 443),
    _tcp("admin laptop -> DNS over TLS (unfiltered)", "lan", "198.51.100.10", 853, "192.0.2.11"),
    _dns("camera asks: cam.vendor-cloud.example", "iot", "192.0.2.129", "cam.vendor-cloud.example"),
    _tcp("camera -> its vendor cloud (https)", "iot", "198.51.100.40", 443),
    _tcp("camera -> any other server (https)", "iot", "198.51.100.10", 443),
    _tcp("internet -> the box's ssh", "inet", "203.0.113.2", 22),
]
BLOCK_PAGE = "192.0.2.1"
INFECTED = "192.0.2.10"  # the staff PC that, in the demo, also runs malware
DGA_LABEL = "infected PC asks: <generated name>.com"


def infected_client_flows(rounds: int) -> list[Flow]:
    """What the demo's malware does each round: DNS lookups of generated names (most do not
    exist: a DGA burst) on rounds 2, 5, 8, ... and a check-in to its server every round.
    Anomaly scoring (``anomaly:`` in the policy) should flag the DGA within minutes and the
    beacon after its usual hours of persistence."""
    rng = random.Random(rounds)
    out: list[Flow] = [
        _tcp("infected PC -> check-in (beacon)", "lan", "198.51.100.10", 80, INFECTED)
    ]
    if rounds % 3 == 2:
        for _ in range(60):
            name = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(14)) + ".com"
            out.append(_dns(DGA_LABEL, "lan", "192.0.2.1", name, INFECTED))
    return out


def flows_for(policy: Path) -> list[Flow]:
    return WEB_FILTER_FLOWS if "web_filter:" in policy.read_text() else FLOWS


def _verdict(result: ProbeResult, probe: Probe) -> str:
    if probe.kind == "dns" and result.ok:
        if result.seen_as == BLOCK_PAGE:
            return f"BLOCKED (block page {BLOCK_PAGE})"
        blocked = result.seen_as in ("NXDOMAIN", "REFUSED", "0.0.0.0")
        return f"{'BLOCKED' if blocked else 'ANSWERED'} ({result.seen_as})"
    if result.ok:
        seen = f" (server saw {result.seen_as})" if result.seen_as else ""
        return f"ALLOWED{seen}"
    if result.outcome == "timeout":
        return "BLOCKED (dropped)"
    return f"BLOCKED ({result.outcome}: rejected)"


def run_demo(
    policy: Path,
    state_dir: Path,
    prefix: str,
    duration: float | None,
    interval: float,
    *,
    start_extra: Callable[[Lab], list[subprocess.Popen[str]]] | None = None,
) -> int:
    """The demo; ``start_extra`` starts more processes once the lab is up (the web UI does,
    from the package above this one) and they are stopped with the demo."""
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
        extra = start_extra(lab) if start_extra is not None else []
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
                "--anomaly-every",
                "15",
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
                flows = flows_for(policy)
                if "\nanomaly:" in policy.read_text():
                    flows = flows + infected_client_flows(rounds)
                # DNS first: connections to names the firewall follows need the answer
                for phase in ([f for f in flows if f[2].kind == "dns"],
                              [f for f in flows if f[2].kind != "dns"]):  # fmt: skip
                    by_role: dict[str, list[tuple[str, Probe]]] = {}
                    for label, role, probe in phase:
                        by_role.setdefault(role, []).append((label, probe))
                    for role, items in by_role.items():
                        results = lab.probe(role, [p for _, p in items])
                        verdicts: dict[str, list[str]] = {}
                        for (label, probe), res in zip(items, results, strict=True):
                            verdicts.setdefault(label, []).append(_verdict(res, probe))
                        for label, said in verdicts.items():
                            text = said[0] if len(said) == 1 else f"{said[0]} (x{len(said)})"
                            print(f"  {label:<46} {text}", flush=True)
                time.sleep(interval)
        except KeyboardInterrupt:
            print("\nstopping", flush=True)
        finally:
            for proc in extra:
                proc.terminate()
            upstream.terminate()
            controller.terminate()
            try:
                controller.wait(timeout=5)
            except subprocess.TimeoutExpired:
                controller.kill()
    print("lab down: all namespaces removed", flush=True)
    return 0

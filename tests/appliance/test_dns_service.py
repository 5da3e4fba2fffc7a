"""The controller's resolver: built from the policy's dns: section, run by `edgeguard run`."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance import netns
from appliance.dns_service import build_matcher, client_networks, listen_addresses, resolver_for
from appliance.lab import Lab
from appliance.labprobe import Probe
from dns_filter.server import ListenAddress
from policies.loader import load_policy, parse_policy

EXAMPLES = Path(__file__).parents[2] / "policies" / "examples"


def test_resolver_settings_come_from_the_policy(tmp_path: Path) -> None:
    policy = load_policy(EXAMPLES / "small-office.yaml").policy
    assert ListenAddress("127.0.0.1", 5353) in listen_addresses(policy)
    nets = client_networks(policy)
    assert "192.0.2.0/26" in nets and "2001:db8:0:10::/64" in nets
    assert "203.0.113.0/24" not in nets  # the WAN zone: never an open resolver
    matcher, lines = build_matcher(policy, tmp_path)
    assert matcher.is_blocked("tracker.example.net") and matcher.is_blocked("x.popups.example")
    assert not matcher.is_blocked("intranet.example.com")
    assert any(line.startswith("list malware: hosts") for line in lines)
    resolver, _, _, _ = resolver_for(policy, tmp_path)
    try:
        assert resolver.config.upstreams == ("198.51.100.10:53",)
        assert ("nas.office.lan", "A", "192.0.2.170") in resolver.config.local_records
    finally:
        assert resolver.log is not None
        resolver.log.close()


def test_default_listen_is_the_inside_zones_on_port_53() -> None:
    text = (
        (EXAMPLES / "small-office.yaml")
        .read_text()
        .replace('  listen: ["192.0.2.1:53", "[2001:db8:0:10::1]:53", "127.0.0.1:5353"]\n', "")
    )
    policy = parse_policy(text, "p.yaml", base_dir=EXAMPLES).policy
    listen = listen_addresses(policy)
    assert ListenAddress("192.0.2.1", 53) in listen and ListenAddress("192.0.2.161", 53) in listen
    assert all(a.host != "203.0.113.2" for a in listen)


@pytest.mark.netns
def test_edgeguard_run_enforces_then_serves_dns_in_the_router(lab: Lab, tmp_path: Path) -> None:
    """`edgeguard run` in the router namespace: ruleset first, then the resolver answers the LAN."""
    lab.load_ruleset(None)
    upstream = netns.popen(
        lab.ns("inet"),
        [sys.executable, "-m", "appliance.labdns", "--listen", "198.51.100.10"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    controller = netns.popen(
        lab.ns("router"),
        [sys.executable, "-m", "appliance.cli", "run", "--state-dir", str(tmp_path / "state"),
         "--policy", str(EXAMPLES / "small-office.yaml")],
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert controller.stdout is not None
        seen: list[str] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = controller.stdout.readline()
            seen.append(line)
            if "resolver answering on" in line or not line:
                break
        assert any("applied " in s for s in seen), seen  # the ruleset came first
        assert any("resolver answering on 192.0.2.1:53" in s for s in seen), seen
        ask = [
            Probe("dns", "192.0.2.1", 53, qname="www.example.com"),
            Probe("dns", "192.0.2.1", 53, qname="tracker.example.net"),
            Probe("dns", "192.0.2.1", 53, qname="ads.example.net"),  # CNAME to a listed name
            Probe("dns", "192.0.2.1", 53, qname="nas.office.lan"),
            Probe("dns", "2001:db8:0:10::1", 53, qname="intranet.example.com"),
        ]
        answers = [r.seen_as for r in lab.probe("lan", ask)]
        assert answers == ["198.51.100.10", "NXDOMAIN", "NXDOMAIN", "192.0.2.170", "198.51.100.20"]
        [from_wan] = lab.probe(
            "inet", [Probe("dns", "203.0.113.2", 53, qname="www.example.com", timeout=0.5)]
        )
        assert from_wan.outcome == "timeout"  # the firewall drops it; the resolver is not open
    finally:
        controller.terminate()
        controller.wait(10)
        upstream.terminate()
        upstream.wait(10)
        lab.load_ruleset(None)
        if controller.stdout:
            controller.stdout.close()

"""The office lab with real packets: routing, NAT, reject versus drop, clean teardown."""

from __future__ import annotations

import json
import time

import pytest

from appliance import netns
from appliance.errors import LabError
from appliance.lab import LINKS, Lab, lab_down
from appliance.labprobe import Kind, Probe, ProbeResult

pytestmark = pytest.mark.netns

CLIENTS = ("lan", "guest", "iot", "dmz", "mgmt")

MASQUERADE = """\
table inet t {
    chain post {
        type nat hook postrouting priority srcnat;
        oifname "wan0" masquerade
    }
}
"""

FORWARD_VERDICTS = """\
table inet t {
    chain fw {
        type filter hook forward priority filter; policy accept;
        tcp dport 80 reject with tcp reset
        tcp dport 22 reject
        tcp dport 443 drop
        tcp dport 8080 reject with icmpx admin-prohibited
        udp dport 53 reject
        udp dport 123 drop
        ip saddr 192.0.2.11 icmp type echo-request drop
        ip6 saddr 2001:db8:0:10::11 icmpv6 type echo-request drop
        icmp type echo-request reject
        icmpv6 type echo-request reject
    }
}
"""


def outcomes(results: list[ProbeResult]) -> list[str]:
    return [r.outcome for r in results]


def test_plan_and_router_interfaces(lab: Lab) -> None:
    assert lab.namespaces == [lab.ns(role) for role in ("router", *LINKS)]
    assert all(netns.exists(ns) for ns in lab.namespaces)
    links = json.loads(netns.ip(["-j", "link"], ns=lab.ns("router")).stdout)
    names = {link["ifname"] for link in links}
    assert names == {"lo", "wan0", "lan0", "guest0", "iot0", "dmz0", "mgmt0"}
    assert (lab.addr("lan"), lab.addr("lan", 1)) == ("192.0.2.10", "192.0.2.11")
    assert (lab.addr6("dmz"), lab.router_addr("inet")) == ("2001:db8:0:40::70", "203.0.113.2")
    assert lab.iface("inet") == "wan0"

    def sysctl(role: str, key: str) -> str:
        return netns.run(lab.ns(role), ["sysctl", "-n", key]).stdout.strip()

    assert sysctl("router", "net.ipv4.ip_forward") == "1"
    assert sysctl("router", "net.ipv6.conf.all.forwarding") == "1"
    assert sysctl("lan", "net.ipv4.ip_forward") == "0"
    with pytest.raises(LabError, match="unknown lab role"):
        lab.ns("printer")


def test_every_client_reaches_internet_over_ipv6(clean_lab: Lab) -> None:
    lab = clean_lab
    for role in CLIENTS:
        res = lab.probe(
            role,
            [
                Probe("tcp", lab.server6(), 443),
                Probe("udp", lab.server6(), 53),
                Probe("icmp", lab.server6()),
                Probe("tcp", lab.server6(1), 8080),
            ],
        )
        assert outcomes(res) == ["open"] * 4, (role, res)
        assert [r.seen_as for r in res] == [lab.addr6(role), lab.addr6(role), None, lab.addr6(role)]


def test_lan_reaches_dmz_server_directly(clean_lab: Lab) -> None:
    lab = clean_lab
    dmz, dmz6 = lab.addr("dmz"), lab.addr6("dmz")
    res = lab.probe(
        "lan",
        [
            Probe("tcp", dmz, 22),
            Probe("udp", dmz, 123, src=lab.addr("lan", 1)),
            Probe("icmp", dmz),
            Probe("tcp", dmz6, 80, src=lab.addr6("lan", 1)),
            Probe("udp", dmz6, 5000),
            Probe("icmp", dmz6),
        ],
    )
    assert outcomes(res) == ["open"] * 6, res
    assert [r.seen_as for r in res] == [
        lab.addr("lan"), lab.addr("lan", 1), None, lab.addr6("lan", 1), lab.addr6("lan"), None,
    ]  # fmt: skip


def test_ipv4_to_internet_times_out_without_nat_and_batches_run_concurrently(
    clean_lab: Lab,
) -> None:
    lab = clean_lab
    kinds: list[tuple[Kind, int]] = [
        ("tcp", 80),
        ("tcp", 22),
        ("udp", 53),
        ("udp", 5000),
        ("icmp", 0),
    ]
    probes = [Probe(k, lab.server(i % 3), p, timeout=0.5) for i in range(6) for k, p in kinds]
    assert len(probes) == 30
    start = time.monotonic()
    res = lab.probe("lan", probes)
    elapsed = time.monotonic() - start
    assert set(outcomes(res)) == {"timeout"}, res
    assert all(0.4 < r.elapsed < 1.5 for r in res), res  # each waited its own timeout
    # One after another this would take 15 s; concurrently ~0.5 s plus interpreter start-up
    # (the bound is loose so a busy CI machine does not make it flaky).
    assert elapsed < 5.0, f"30 timeouts took {elapsed:.2f}s: probes are not concurrent"


def test_masquerade_makes_ipv4_work_and_shows_the_wan_address(clean_lab: Lab) -> None:
    lab = clean_lab
    lab.load_ruleset(MASQUERADE)
    assert 'oifname "wan0" masquerade' in lab.nft(["list", "ruleset"])
    res = lab.probe(
        "lan",
        [
            Probe("tcp", lab.server(), 80),
            Probe("udp", lab.server(2), 53, src=lab.addr("lan", 1)),
            Probe("icmp", lab.server(1)),
            Probe("tcp", lab.server6(), 80),
        ],
    )
    assert outcomes(res) == ["open"] * 4, res
    wan = lab.router_addr("inet")
    assert [r.seen_as for r in res[:3]] == [wan, wan, None]
    # An inet-family masquerade rule applies to IPv6 as well.
    assert res[3].seen_as == lab.router_addr6("inet")
    # Inside the office nothing is translated: the DMZ server still sees the LAN client.
    [dmz] = lab.probe("lan", [Probe("tcp", lab.addr("dmz"), 22)])
    assert dmz.seen_as == lab.addr("lan")


def test_reject_is_fast_and_drop_times_out(clean_lab: Lab) -> None:
    lab = clean_lab
    lab.load_ruleset(FORWARD_VERDICTS)
    for v6 in (False, True):
        dst = lab.addr6("dmz") if v6 else lab.addr("dmz")
        other_client = lab.addr6("lan", 1) if v6 else lab.addr("lan", 1)
        rejected = lab.probe(
            "lan",
            [
                Probe("tcp", dst, 80, timeout=3.0),
                Probe("tcp", dst, 22, timeout=3.0),
                Probe("tcp", dst, 8080, timeout=3.0),
                Probe("udp", dst, 53, timeout=3.0),
                Probe("icmp", dst, timeout=3.0),
                Probe("udp", dst, 5000, timeout=3.0),
            ],
        )
        expected = ["refused", "refused", "unreachable", "refused", "refused", "open"]
        assert outcomes(rejected) == expected, rejected
        # Well under TCP's 1 s SYN retransmission: the verdict came from the first answer.
        slow = [r for r in rejected if r.elapsed >= 0.9]
        assert not slow, f"rejects should not wait for a timeout: {slow}"
        dropped = lab.probe(
            "lan",
            [
                Probe("tcp", dst, 443, timeout=0.4),
                Probe("udp", dst, 123, timeout=0.4),
                Probe("icmp", dst, src=other_client, timeout=0.4),
            ],
        )
        assert outcomes(dropped) == ["timeout"] * 3, dropped


def test_context_manager_removes_everything_after_an_error(
    netns_root: None, lab_prefix: str
) -> None:
    prefix = f"{lab_prefix}-cm"
    netns.create(f"{prefix}-router")  # a leftover from a "crashed" run: up() must clear it
    with pytest.raises(RuntimeError, match="inside the lab"), Lab.up(prefix) as lab:
        lab.start_servers()
        procs = lab.processes
        assert len(netns.list_with_prefix(f"{prefix}-")) == len(LINKS) + 1
        raise RuntimeError("inside the lab")
    assert netns.list_with_prefix(f"{prefix}-") == []
    assert [proc.returncode for proc in procs] == [0, 0]  # servers stopped cleanly on SIGTERM
    lab.down()  # idempotent


def test_lab_down_removes_a_lab_with_running_servers(netns_root: None, lab_prefix: str) -> None:
    prefix = f"{lab_prefix}-ld"
    start = time.monotonic()
    lab = Lab.up(prefix)
    took = time.monotonic() - start
    try:
        lab.start_servers()
        server_pids = [pid for ns in lab.namespaces for pid in netns.pids(ns)]
        assert server_pids
        # What `edgeguard lab down` does after a crash: no Lab object, just the prefix.
        removed = lab_down(prefix)
        assert sorted(removed) == sorted(lab.namespaces)
        assert netns.list_with_prefix(f"{prefix}-") == []
        assert lab_down(prefix) == []
    finally:
        lab.down()
    # Typically ~0.1 s; the bound only catches a regression such as waiting out linkwatch.
    assert took < 5.0, f"lab up took {took:.2f}s"

"""Quarantine in the compiled ruleset: sets and rules only with an anomaly: section, placed
before the conntrack fast path, with anti-lockout first in the quarantine's input chain."""

from __future__ import annotations

import datetime as dt
import os
import re
import textwrap
from pathlib import Path

import pytest

from policies.compiler import Target, compile_policy
from policies.compiler.quarantine import QUARANTINE_SETS
from policies.loader import parse_policy

AT = dt.datetime(2026, 1, 15, 12, 0, tzinfo=dt.UTC)
BASE = """\
version: 1
site: {name: q}
zones:
  wan: {interfaces: [wan0], addresses: [203.0.113.2/24]}
  lan: {interfaces: [lan0], addresses: [192.0.2.1/26, "2001:db8:0:10::1/64"]}
  mgmt: {interfaces: [mgmt0], addresses: [192.0.2.193/27]}
rules:
  - {name: lan-out, from: lan, to: wan, action: accept}
nat: {masquerade: [wan]}
management: {zones: [mgmt]}
"""


def compiled(extra: str = "", base: str = BASE) -> str:
    text = base + textwrap.dedent(extra)
    return compile_policy(parse_policy(text, "q.yaml", base_dir=Path(".")).policy, at=AT).text


def chain(text: str, name: str) -> list[str]:
    m = re.search(rf"^\tchain {name} {{\n(.*?)^\t}}", text, re.S | re.M)
    assert m, f"no chain {name}"
    return [ln.strip() for ln in m.group(1).splitlines()]


def test_without_the_section_nothing_changes() -> None:
    text = compiled()
    assert "quarantine" not in text


@pytest.mark.parametrize("section", ["anomaly:\n", "anomaly: {enabled: false}\n"])
def test_sets_exist_whenever_the_section_does(section: str) -> None:
    text = compiled(section)
    for fam, name in QUARANTINE_SETS.items():
        kind = "ipv4_addr" if fam == 4 else "ipv6_addr"
        assert f"\tset {name} {{\n\t\ttype {kind}\n\t}}" in text


def test_jumps_come_before_the_fast_path_and_offload() -> None:
    policy = parse_policy(
        BASE + 'anomaly: {quarantine: critical}\noptions: {offload: "on"}\n', "q.yaml"
    ).policy
    text = compile_policy(policy, at=AT, target=Target(flowtable=True)).text
    fwd = chain(text, "forward")
    assert fwd[1:5] == [
        "ip saddr @quarantine4 jump quarantine_fwd",
        "ip6 saddr @quarantine6 jump quarantine_fwd",
        'ip daddr @quarantine4 counter drop comment "quarantined host"',
        'ip6 daddr @quarantine6 counter drop comment "quarantined host"',
    ]
    assert fwd[5].startswith("meta l4proto { tcp, udp } flow add @ft")
    assert fwd[6].startswith("ct state vmap")
    inp = chain(text, "input")
    assert inp[1:4] == [
        'iif "lo" accept',
        "ip saddr @quarantine4 jump quarantine_in",
        "ip6 saddr @quarantine6 jump quarantine_in",
    ]
    assert inp[4].startswith("ct state vmap")


def test_quarantine_input_keeps_anti_lockout_first_and_allows_only_the_basics() -> None:
    body = chain(compiled("anomaly:\n"), "quarantine_in")
    assert body[0] == 'iifname "mgmt0" tcp dport @ports_22_443 accept comment "anti-lockout"'
    assert body[-1] == 'counter drop comment "quarantined host"'
    allowed = "\n".join(body[1:-1])
    assert "th dport 53 accept" in allowed and "udp dport { 67, 547 } accept" in allowed
    assert "icmp type echo-request accept" in allowed and "nd-neighbor-solicit" in allowed
    assert "tcp dport 80" not in allowed  # no block page configured
    fwd = chain(compiled("anomaly:\n"), "quarantine_fwd")
    assert fwd == [
        'meta l4proto tcp counter reject with tcp reset comment "quarantined host"',
        'counter reject with icmpx admin-prohibited comment "quarantined host"',
    ]


def test_without_anti_lockout_there_is_nothing_to_keep() -> None:
    base = BASE.replace("management: {zones: [mgmt]}", "management: {anti_lockout: false}")
    body = chain(compiled("anomaly:\n", base), "quarantine_in")
    assert not any("anti-lockout" in ln for ln in body)


def test_block_page_addresses_are_reachable_and_counters_follow_options() -> None:
    extra = """\
    dns:
      block_mode: ip
      block_page: {ipv4: 192.0.2.1, ipv6: "2001:db8:0:10::1"}
    options: {counters: false}
    anomaly:
    """
    text = compiled(extra)
    body = chain(text, "quarantine_in")
    assert 'ip daddr 192.0.2.1 tcp dport 80 accept comment "quarantine: block page"' in body
    assert 'ip6 daddr 2001:db8:0:10::1 tcp dport 80 accept comment "quarantine: block page"' in body
    assert body[-1] == 'drop comment "quarantined host"'
    assert "ip daddr @quarantine4 drop" in "\n".join(chain(text, "forward"))


@pytest.mark.netns
@pytest.mark.skipif(os.geteuid() != 0, reason="nft -c in a network namespace needs root")
def test_nft_accepts_the_quarantine_parts() -> None:
    from appliance.netns import nft_check

    extra = "dns: {block_mode: ip, block_page: {ipv4: 192.0.2.1}}\nanomaly:\n"
    ok, err = nft_check(compiled(extra))
    assert ok, err

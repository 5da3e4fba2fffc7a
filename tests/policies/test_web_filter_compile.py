"""The web filter's nftables part, compiled from small inline policies.

Each policy in ``POLICIES`` is a snippet appended to ``BASE`` (zones lan with IPv4 and
IPv6, guest with IPv4 only, wan masqueraded) followed by a small ``dns`` section; the tests
check the lines of the compiled ruleset, and every one of these rulesets must also be
accepted by ``nft -c`` (in a throwaway network namespace, like the golden files).
"""

from __future__ import annotations

import datetime as dt
import os
import textwrap
from pathlib import Path

import pytest

from policies.compiler import compile_policy
from policies.loader import load_policy, parse_policy
from policies.model import Policy
from policies.webcatalog import default_catalogue

ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "policies" / "examples"
GOLDEN = ROOT / "tests" / "golden"
AT = dt.datetime(2026, 1, 15, 12, 0, tzinfo=dt.UTC)

BASE = """\
version: 1
site: {name: office}
zones:
  lan: {interfaces: [lan0], addresses: [192.0.2.1/26, "2001:db8:0:10::1/64"]}
  guest: {interfaces: [guest0], addresses: [192.0.2.65/26]}
  wan: {interfaces: [wan0], addresses: [203.0.113.2/24]}
nat: {masquerade: [wan]}
"""
DNS = """\
dns:
  upstreams: ["198.51.100.10:53"]
"""

POLICIES: dict[str, str] = {
    "redirect": """\
        web_filter:
          groups:
            kids: {clients: [guest]}
        """,
    "exempt": """\
        clients:
          boss: {ip: [192.0.2.11, "2001:db8:0:10::11"], mac: "02:00:00:00:00:11"}
        web_filter:
          groups:
            kids: {clients: [guest]}
            admins: {clients: [boss, "02:00:00:00:00:12"], filter: false}
        """,
    "exempt-zone": """\
        web_filter:
          groups:
            admins: {clients: [lan], filter: false}
        """,
    "all-exempt": """\
        web_filter:
          groups:
            admins: {clients: [lan, guest], filter: false}
        """,
    "doh-off": """\
        web_filter:
          doh: {block: false}
        """,
    "doh-extra": """\
        web_filter:
          doh: {addresses: [198.51.100.53, "2001:db8:53::53"]}
        """,
    "domains": """\
        rules:
          - name: iot-cloud
            from: lan
            to: {zone: wan, domains: ["*.vendor-cloud.example", vendor.example]}
            service: web
            action: accept
          - name: no-social
            from: 192.0.2.40/29
            to: {zone: wan, web_services: [social]}
            action: reject
        """,
    "client-group": """\
        clients:
          tablet: {mac: "02:00:00:00:00:70"}
        rules:
          - {name: kids-web, from: kids, to: wan, service: web, action: accept}
          - {name: kids-dns, from: kids, to: self, service: dns, action: accept}
          - {name: no-kids-in, from: wan, to: kids, action: drop}
        web_filter:
          groups:
            kids: {clients: [guest, tablet, 192.0.2.40/29]}
        """,
    "merged-groups": """\
        rules:
          - {name: both-out, from: {group: [kids, staff]}, to: wan, action: accept}
          - {name: ks-out, from: kids_staff, to: wan, action: drop}
          - {name: both-again, from: {group: [staff, kids]}, to: wan, action: drop}
        web_filter:
          groups:
            kids: {clients: [192.0.2.10, "02:00:00:00:00:10"]}
            staff: {clients: [192.0.2.20]}
            kids_staff: {clients: [192.0.2.30, "02:00:00:00:00:30"]}
        """,
    "block-page": """\
        web_filter: {}
        """,
}
BLOCK_PAGE_DNS = """\
dns:
  upstreams: ["198.51.100.10:53"]
  block_page: {ipv4: 192.0.2.1, ipv6: "2001:db8:0:10::1"}
"""


def policy(name: str) -> Policy:
    dns = BLOCK_PAGE_DNS if name == "block-page" else DNS
    loaded = parse_policy(BASE + textwrap.dedent(POLICIES[name]) + dns, f"{name}.yaml")
    assert not loaded.warnings, loaded.warnings
    return loaded.policy


def compiled(name: str) -> str:
    return compile_policy(policy(name), at=AT).text


def block(text: str, kind: str, name: str) -> list[str] | None:
    """The body lines of ``chain name``/``set name`` (without indentation), None if absent."""
    lines = text.splitlines()
    try:
        start = lines.index(f"\t{kind} {name} {{")
    except ValueError:
        return None
    end = lines.index("\t}", start)
    return [ln.strip() for ln in lines[start + 1 : end]]


def chain(text: str, name: str) -> list[str]:
    body = block(text, "chain", name)
    assert body is not None, f"no chain {name}"
    return body


def nft_set(text: str, name: str) -> list[str]:
    body = block(text, "set", name)
    assert body is not None, f"no set {name}"
    return body


def chains(text: str) -> list[str]:
    return [ln.strip()[6:-2] for ln in text.splitlines() if ln.startswith("\tchain ")]


def sets(text: str) -> list[str]:
    return [ln.strip()[4:-2] for ln in text.splitlines() if ln.startswith("\tset ")]


def redirect(iface: str, zone: str, family: int, address: str) -> str:
    target = address if family == 4 else f"[{address}]"
    ip = "ip" if family == 4 else "ip6"
    return (
        f'iifname "{iface}" meta nfproto ipv{family} dnat {ip} to {target} '
        f'comment "web filter: DNS of zone {zone} to the resolver"'
    )


PORT_53 = [
    'meta l4proto tcp th dport 53 reject with tcp reset comment "DNS around the resolver"',
    'udp dport 53 reject comment "DNS around the resolver"',
]
DOT_DOQ = [
    'tcp dport 853 reject with tcp reset comment "DNS over TLS"',
    'udp dport 853 reject comment "DNS over QUIC"',
]
DOH = [
    'ip daddr @wf_doh_v4 tcp dport 443 reject with tcp reset comment "DNS over HTTPS"',
    'ip daddr @wf_doh_v4 udp dport 443 reject comment "DNS over HTTP/3"',
    'ip6 daddr @wf_doh_v6 tcp dport 443 reject with tcp reset comment "DNS over HTTPS"',
    'ip6 daddr @wf_doh_v6 udp dport 443 reject comment "DNS over HTTP/3"',
]
RETURNS = [
    'ip saddr @wf_exempt_v4 return comment "unfiltered groups"',
    'ip6 saddr @wf_exempt_v6 return comment "unfiltered groups"',
    'ether saddr @wf_exempt_mac return comment "unfiltered groups"',
]


# -- the DNS redirect -------------------------------------------------------------------


def test_dns_of_every_inside_zone_is_redirected_to_the_box() -> None:
    text = compiled("redirect")
    assert chain(text, "wf_dns") == [
        redirect("lan0", "lan", 4, "192.0.2.1"),
        redirect("lan0", "lan", 6, "2001:db8:0:10::1"),
        redirect("guest0", "guest", 4, "192.0.2.65"),  # guest has no IPv6 address: no v6 line
    ]
    assert chain(text, "dstnat") == [
        "type nat hook prerouting priority dstnat; policy accept;",
        'iifname { "lan0", "guest0" } meta l4proto { tcp, udp } th dport 53 '
        "fib daddr type != local jump wf_dns",
    ]
    assert (
        'iifname { "lan0", "guest0" } meta l4proto { tcp, udp } th dport 53 '
        'accept comment "web filter: DNS to the box\'s resolver"'
    ) in chain(text, "input")
    assert 'iifname { "lan0", "guest0" } jump wf_guard' in chain(text, "forward")
    assert not any("wan0" in ln for ln in chain(text, "wf_dns"))


def test_block_page_is_reachable_from_enforced_zones() -> None:
    inp = chain(compiled("block-page"), "input")
    assert [ln for ln in inp if "block page" in ln] == [
        'iifname { "lan0", "guest0" } ip daddr 192.0.2.1 tcp dport 80 '
        'accept comment "web filter: block page"',
        'iifname { "lan0", "guest0" } ip6 daddr 2001:db8:0:10::1 tcp dport 80 '
        'accept comment "web filter: block page"',
    ]
    assert not any("block page" in ln for ln in chain(compiled("redirect"), "input"))


# -- unfiltered groups ------------------------------------------------------------------


def test_unfiltered_clients_pass_the_redirect_and_the_guard() -> None:
    text = compiled("exempt")
    assert nft_set(text, "wf_exempt_v4") == [
        "type ipv4_addr",
        "flags interval",
        "elements = { 192.0.2.11 }",
    ]
    assert nft_set(text, "wf_exempt_v6") == [
        "type ipv6_addr",
        "flags interval",
        "elements = { 2001:db8:0:10::11 }",
    ]
    assert nft_set(text, "wf_exempt_mac") == [
        "type ether_addr",
        "elements = { 02:00:00:00:00:11, 02:00:00:00:00:12 }",
    ]
    dns = chain(text, "wf_dns")
    assert dns[:3] == RETURNS
    assert dns[3:] == [
        redirect("lan0", "lan", 4, "192.0.2.1"),
        redirect("lan0", "lan", 6, "2001:db8:0:10::1"),
        redirect("guest0", "guest", 4, "192.0.2.65"),
    ]
    assert chain(text, "wf_guard")[:3] == RETURNS
    assert chain(text, "wf_guard")[3:] == [*PORT_53, *DOT_DOQ, *DOH]


def test_an_unfiltered_zone_is_not_enforced() -> None:
    text = compiled("exempt-zone")
    assert chain(text, "wf_dns") == [redirect("guest0", "guest", 4, "192.0.2.65")]
    assert chain(text, "dstnat")[1].startswith('iifname "guest0" meta l4proto { tcp, udp } ')
    assert 'iifname "guest0" jump wf_guard' in chain(text, "forward")
    assert not [s for s in sets(text) if s.startswith("wf_exempt")]  # a zone needs no set
    assert not [ln for ln in chain(text, "wf_guard") if "return" in ln]


def test_nothing_is_enforced_when_every_zone_is_unfiltered() -> None:
    text = compiled("all-exempt")
    assert not [c for c in chains(text) if c.startswith("wf_")]
    assert not [s for s in sets(text) if s.startswith("wf_")]
    assert "dstnat" not in chains(text)
    assert not [ln for ln in text.splitlines() if "wf_" in ln or "web filter" in ln]


# -- DoT, DoQ and DoH -------------------------------------------------------------------


def test_guard_blocks_dns_around_the_resolver() -> None:
    text = compiled("redirect")
    assert chain(text, "wf_guard") == [*PORT_53, *DOT_DOQ, *DOH]
    catalogue = default_catalogue()
    assert nft_set(text, "wf_doh_v4") == [
        "type ipv4_addr",
        "elements = { " + ", ".join(catalogue.doh_v4) + " }",
    ]
    assert nft_set(text, "wf_doh_v6") == [
        "type ipv6_addr",
        "elements = { " + ", ".join(catalogue.doh_v6) + " }",
    ]


def test_doh_block_off_keeps_only_the_port_53_guard() -> None:
    text = compiled("doh-off")
    assert chain(text, "wf_guard") == PORT_53
    assert "wf_doh_v4" not in sets(text)
    assert "wf_doh_v6" not in sets(text)
    assert chain(text, "wf_dns") == chain(compiled("redirect"), "wf_dns")  # still redirected


def test_extra_doh_addresses_join_the_catalogues() -> None:
    text = compiled("doh-extra")
    catalogue = default_catalogue()
    v4 = nft_set(text, "wf_doh_v4")[1]
    v6 = nft_set(text, "wf_doh_v6")[1]
    assert v4 == "elements = { " + ", ".join([*catalogue.doh_v4, "198.51.100.53"]) + " }"
    assert v6 == "elements = { " + ", ".join([*catalogue.doh_v6, "2001:db8:53::53"]) + " }"


# -- rules with destination names -------------------------------------------------------


def test_destination_names_are_timeout_sets_the_resolver_fills() -> None:
    text = compiled("domains")
    for rule in ("iot-cloud", "no-social"):
        for fam, kind in ((4, "ipv4_addr"), (6, "ipv6_addr")):
            assert nft_set(text, f"dom_{rule}_v{fam}") == [
                f"type {kind}",
                "size 65535",
                "flags timeout",
            ]
    fwd = chain(text, "fwd_lan-wan")
    assert fwd[:4] == [
        'ip daddr @dom_iot-cloud_v4 tcp dport @ports_80_443 accept comment "iot-cloud"',
        'ip daddr @dom_iot-cloud_v4 udp dport 443 accept comment "iot-cloud"',
        'ip6 daddr @dom_iot-cloud_v6 tcp dport @ports_80_443 accept comment "iot-cloud"',
        'ip6 daddr @dom_iot-cloud_v6 udp dport 443 accept comment "iot-cloud"',
    ]
    # an IPv4-only source: only the IPv4 set can match
    assert fwd[4:6] == [
        "ip saddr 192.0.2.40/29 ip daddr @dom_no-social_v4 meta l4proto tcp "
        'reject with tcp reset comment "no-social"',
        "ip saddr 192.0.2.40/29 ip daddr @dom_no-social_v4 "
        'reject with icmpx admin-prohibited comment "no-social"',
    ]
    assert not [ln for ln in text.splitlines() if "@dom_no-social_v6" in ln]


def test_domain_rules_need_no_web_filter() -> None:
    p = policy("domains")
    assert p.web_filter is None
    text = compiled("domains")
    assert not [c for c in chains(text) if c.startswith("wf_")]
    (iot, social) = p.rules
    assert iot.dst.domains is not None and social.dst.domains is not None
    assert iot.dst.domains.patterns == ("*.vendor-cloud.example", "vendor.example")
    assert "instagram.com" in social.dst.domains.patterns


# -- rules naming client groups ---------------------------------------------------------


def test_client_group_expands_to_addresses_macs_and_zones() -> None:
    text = compiled("client-group")
    assert nft_set(text, "cg_kids_v4") == [
        "type ipv4_addr",
        "flags interval",
        "elements = {",
        "192.0.2.40/29",
        "}",
    ]
    assert nft_set(text, "cg_kids_mac") == ["type ether_addr", "elements = { 02:00:00:00:00:70 }"]
    # addresses: only where they live (192.0.2.40/29 is in lan); MAC: any inside zone;
    # the zone member: its own chains, no extra match
    assert chain(text, "fwd_lan-wan")[:4] == [
        'ip saddr @cg_kids_v4 tcp dport @ports_80_443 accept comment "kids-web"',
        'ip saddr @cg_kids_v4 udp dport 443 accept comment "kids-web"',
        'ether saddr @cg_kids_mac tcp dport @ports_80_443 accept comment "kids-web"',
        'ether saddr @cg_kids_mac udp dport 443 accept comment "kids-web"',
    ]
    assert chain(text, "fwd_guest-wan")[:4] == [
        'ether saddr @cg_kids_mac tcp dport @ports_80_443 accept comment "kids-web"',
        'ether saddr @cg_kids_mac udp dport 443 accept comment "kids-web"',
        'tcp dport @ports_80_443 accept comment "kids-web"',
        'udp dport 443 accept comment "kids-web"',
    ]
    assert chain(text, "in_guest")[:4] == [
        'ether saddr @cg_kids_mac tcp dport 53 accept comment "kids-dns"',
        'ether saddr @cg_kids_mac udp dport 53 accept comment "kids-dns"',
        'tcp dport 53 accept comment "kids-dns"',
        'udp dport 53 accept comment "kids-dns"',
    ]


def test_macs_never_match_behind_the_wan_or_as_destinations() -> None:
    text = compiled("client-group")
    wan_chains = [c for c in chains(text) if c.startswith(("fwd_wan-", "in_wan"))]
    assert wan_chains == ["fwd_wan-lan", "fwd_wan-guest"]
    for name in wan_chains:
        assert not [ln for ln in chain(text, name) if "ether" in ln], name
    # as a destination: the group's addresses and its zone, never its MACs
    assert chain(text, "fwd_wan-lan") == [
        'ip daddr @cg_kids_v4 drop comment "no-kids-in"',
        'drop comment "default wan->lan"',
    ]
    assert chain(text, "fwd_wan-guest") == [
        'drop comment "no-kids-in"',
        'drop comment "default wan->guest"',
    ]


def test_merged_groups_get_their_own_sets() -> None:
    """``[kids, staff]`` is not the group ``kids_staff``: each rule matches its own members."""
    text = compiled("merged-groups")
    fwd = chain(text, "fwd_lan-wan")
    both = [ln for ln in fwd if ln.endswith('comment "both-out"')]
    ks = [ln for ln in fwd if ln.endswith('comment "ks-out"')]
    again = [ln for ln in fwd if ln.endswith('comment "both-again"')]
    merged = both[0].split()[2][1:-3]  # ip saddr @<name>_v4 accept ...
    assert merged.startswith("cgm_")
    assert both == [
        f'ip saddr @{merged}_v4 accept comment "both-out"',
        f'ether saddr @{merged}_mac accept comment "both-out"',
    ]
    assert again == [  # the same groups in another order share the set
        f'ip saddr @{merged}_v4 drop comment "both-again"',
        f'ether saddr @{merged}_mac drop comment "both-again"',
    ]
    assert ks == [
        'ip saddr @cg_kids_staff_v4 drop comment "ks-out"',
        'ether saddr @cg_kids_staff_mac drop comment "ks-out"',
    ]
    assert nft_set(text, f"{merged}_v4")[2:] == ["elements = {", "192.0.2.10,", "192.0.2.20", "}"]
    assert nft_set(text, f"{merged}_mac")[1] == "elements = { 02:00:00:00:00:10 }"
    assert nft_set(text, "cg_kids_staff_v4")[2:] == ["elements = {", "192.0.2.30", "}"]
    assert nft_set(text, "cg_kids_staff_mac")[1] == "elements = { 02:00:00:00:00:30 }"
    assert len(sets(text)) == len(set(sets(text)))


# -- no web filter: as before -----------------------------------------------------------


def test_policy_without_web_filter_compiles_as_before() -> None:
    text = compile_policy(load_policy(EXAMPLES / "small-office.yaml").policy, at=AT).text
    assert text == (GOLDEN / "small-office.nft").read_text(encoding="utf-8")
    assert not [ln for ln in text.splitlines() if any(w in ln for w in ("wf_", "cg_", "dom_"))]


def test_dns_section_alone_enforces_nothing() -> None:
    loaded = parse_policy(BASE + DNS + "rules: [{name: out, from: lan, to: wan, action: accept}]\n")
    text = compile_policy(loaded.policy, at=AT).text
    assert loaded.policy.web_filter is None
    assert not [ln for ln in text.splitlines() if "wf_" in ln or "web filter" in ln]
    assert "dstnat" not in chains(text)


# -- nft accepts all of it --------------------------------------------------------------


@pytest.mark.netns
@pytest.mark.skipif(os.geteuid() != 0, reason="nft -c in a network namespace needs root")
@pytest.mark.parametrize("name", sorted(POLICIES))
def test_nft_accepts_the_ruleset(name: str) -> None:
    from appliance.netns import nft_check

    ok, err = nft_check(compiled(name))
    assert ok, f"nft rejects the ruleset of {name}:\n{err}"

"""Web-filter mistakes (``clients:``, ``web_filter:``, rules naming groups, domains or web
services) are validation errors with file:line:column, and no policy is produced.

Like ``test_validation``, each test checks the whole finding: position, dotted field and the
start of the message, and most check that a mistake yields exactly one error. Snippets are
appended to ``BASE`` (zones lan, guest and wan with addresses, wan masqueraded), then the
``DNS`` section follows them unless a test brings its own (``GROUPS``, the client groups
kids and staff, can come in between); so a snippet's first line is
line ``BASE_LINES + 1`` and ``at(2, 9)`` reads "snippet line 2, column 9".

The bundled catalogue is only read when a policy has ``web_filter`` or a rule uses
``web_services``; a category or service can only be checked in such a policy.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import NoReturn

import pytest

from policies import loader
from policies.errors import PolicyValidationError, Problem
from policies.loader import LoadedPolicy, load_policy, parse_policy
from policies.web_model import WebFilter
from policies.webcatalog import CatalogueError, default_catalogue
from tests.policies.test_validation import FILE, assert_problem

EXAMPLE = Path(__file__).parents[2] / "policies" / "examples" / "web-filter.yaml"

BASE = """\
version: 1
site: {name: office}
zones:
  lan: {interfaces: [lan0], addresses: [192.0.2.1/26, "2001:db8:0:10::1/64"]}
  guest: {interfaces: [guest0], addresses: [192.0.2.65/26]}
  wan: {interfaces: [wan0], addresses: [203.0.113.2/24]}
nat: {masquerade: [wan]}
"""
BASE_LINES = BASE.count("\n")
GROUPS = """\
web_filter:
  groups:
    kids: {clients: [guest]}
    staff: {clients: [lan]}
"""
DNS = """\
dns:
  upstreams: ["198.51.100.10:53"]
  blocklists:
    ads: {urls: ["https://lists.example/ads.txt"]}
    malware: {urls: ["https://lists.example/malware.txt"]}
"""


def at(line: int, column: int) -> tuple[int, int]:
    """A position inside a snippet appended to BASE, as a position in the policy."""
    return BASE_LINES + line, column


def policy_text(snippet: str, *, dns: bool = True, groups: bool = False) -> str:
    """BASE, the snippet, then (optionally) GROUPS and DNS."""
    return BASE + textwrap.dedent(snippet) + (GROUPS if groups else "") + (DNS if dns else "")


def load(snippet: str, *, dns: bool = True, groups: bool = False) -> LoadedPolicy:
    return parse_policy(policy_text(snippet, dns=dns, groups=groups), FILE)


def web_filter(snippet: str, *, dns: bool = True) -> WebFilter:
    loaded = load(snippet, dns=dns)
    assert not loaded.warnings, loaded.warnings
    assert loaded.policy.web_filter is not None
    return loaded.policy.web_filter


def problems(snippet: str, *, dns: bool = True, groups: bool = False) -> list[Problem]:
    with pytest.raises(PolicyValidationError) as info:
        load(snippet, dns=dns, groups=groups)
    return info.value.problems


def the_error(snippet: str, *, dns: bool = True, groups: bool = False) -> Problem:
    """The only problem in the policy (fails listing all of them if there are more)."""
    found = problems(snippet, dns=dns, groups=groups)
    assert len(found) == 1, "\n".join(map(str, found))
    assert found[0].severity == "error"
    return found[0]


CATEGORIES = (
    "(categories: ads-trackers, adult, ai-chat, crypto-mining, dating, gambling, games, "
    "malware-phishing, messaging, shopping, social, streaming-music, video)"
)


# -- categories and services ------------------------------------------------------------


def test_unknown_category_in_a_group_suggests_the_closest() -> None:
    p = the_error("""\
        web_filter:
          groups:
            kids:
              clients: [guest]
              categories: [adult, adutl]
        """)
    assert_problem(
        p,
        at(5, 27),
        "web_filter.groups.kids.categories[1]",
        f"unknown category 'adutl' {CATEGORIES}",
    )
    assert p.message.endswith("; did you mean 'adult'?")
    assert str(p).startswith(f"{FILE}:{BASE_LINES + 5}:27: web_filter.groups.kids.categories[1]: ")


def test_unknown_category_without_a_close_match_has_no_suggestion() -> None:
    p = the_error("""\
        web_filter:
          groups:
            kids: {clients: [guest], categories: cartoons}
        """)
    assert_problem(p, at(3, 42), "web_filter.groups.kids.categories", "unknown category 'cartoons'")
    assert "did you mean" not in p.message


@pytest.mark.parametrize("key", ["block", "unblock"])
def test_unknown_category_in_a_schedule(key: str) -> None:
    p = the_error(f"""\
        schedules:
          lunch: [{{days: weekdays, time: "12:00-13:00"}}]
        web_filter:
          groups:
            staff:
              clients: [lan]
              schedules:
                - when: lunch
                  {key}: {{categories: [social, gamblin]}}
        """)
    column = 11 + len(key) + 24
    assert_problem(
        p,
        at(9, column),
        f"web_filter.groups.staff.schedules[0].{key}.categories[1]",
        f"unknown category 'gamblin' {CATEGORIES}; did you mean 'gambling'?",
    )


def test_unknown_service_in_a_group() -> None:
    p = the_error("""\
        web_filter:
          groups:
            kids:
              clients: [guest]
              services: [tiktok, facebok]
        """)
    assert_problem(
        p,
        at(5, 26),
        "web_filter.groups.kids.services[1]",
        "unknown service 'facebok' (service groups: social, video, streaming-music, games, "
        "messaging, ai-chat, shopping, dating; or a catalogue service); did you mean 'facebook'?",
    )


def test_unknown_service_in_a_schedule() -> None:
    p = the_error("""\
        web_filter:
          groups:
            staff:
              clients: [lan]
              schedules:
                - when: [{days: weekend, time: "00:00-24:00"}]
                  unblock: {services: [yotube]}
        """)
    assert_problem(
        p,
        at(7, 32),
        "web_filter.groups.staff.schedules[0].unblock.services[0]",
        "unknown service 'yotube'",
    )
    assert p.message.endswith("; did you mean 'youtube'?")


def test_service_groups_and_single_services_are_accepted() -> None:
    wf = web_filter("""\
        web_filter:
          groups:
            kids: {clients: [guest], services: [social, games, chatgpt]}
        """)
    catalogue = default_catalogue()
    expected = [s.name for s in catalogue.expand_services(["social", "games", "chatgpt"])]
    kids = wf.group("kids")
    assert list(kids.blocks.services) == expected
    assert {"facebook", "tiktok", "roblox", "steam", "chatgpt"} <= set(kids.blocks.services)
    # every used service is carried with its domains, for the resolver
    assert [name for name, _ in wf.services] == expected
    assert dict(wf.services)["roblox"] == catalogue.services["roblox"].domains


def test_unknown_service_in_a_rule() -> None:
    p = the_error("""\
        rules:
          - name: no-social
            from: lan
            to: {zone: wan, web_services: [social, socail]}
            action: reject
        """)
    assert_problem(
        p,
        at(4, 44),
        "rules[0].to.web_services[1]",
        "unknown service 'socail'; did you mean 'social'?",
    )


def test_only_unknown_services_in_a_rule_is_one_error() -> None:
    """Not also "no destination names given": that follows from the unknown name."""
    p = the_error("""\
        rules:
          - name: no-social
            from: lan
            to: {zone: wan, web_services: socail}
            action: reject
        """)
    assert_problem(p, at(4, 35), "rules[0].to.web_services", "unknown service 'socail'")


def test_web_services_in_a_rule_without_web_filter_use_the_catalogue() -> None:
    loaded = load("""\
        rules:
          - name: no-social
            from: lan
            to: {zone: wan, web_services: [social]}
            action: reject
        """)
    (rule,) = loaded.policy.rules
    assert loaded.policy.web_filter is None
    assert rule.dst.domains is not None
    assert rule.dst.domains.name == "dom_no-social"
    assert "facebook.com" in rule.dst.domains.patterns


def test_the_catalogue_is_only_read_when_a_policy_uses_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken() -> NoReturn:
        raise CatalogueError("web_services.yaml: broken on purpose")

    monkeypatch.setattr(loader, "default_catalogue", broken)
    load("rules: [{name: out, from: lan, to: wan, action: accept}]\n")  # no catalogue needed
    p = the_error("""\
        web_filter:
          groups: {kids: {clients: [guest]}}
        """)
    assert_problem(
        p, at(2, 3), "web_filter", "the bundled web catalogue is broken: web_services.yaml: broken"
    )


# -- client groups named by rules -------------------------------------------------------


def test_unknown_client_group_in_a_rule() -> None:
    p = the_error(
        """\
        rules:
          - name: kids-out
            from: {group: kidz}
            to: wan
            action: accept
        """,
        groups=True,
    )
    assert_problem(
        p,
        at(3, 19),
        "rules[0].from.group",
        "unknown client group 'kidz' (web_filter.groups: kids, staff, default); "
        "did you mean 'kids'?",
    )


def test_client_group_in_a_rule_without_web_filter() -> None:
    p = the_error("""\
        rules:
          - {name: kids-out, from: {group: kids}, to: wan, action: accept}
        """)
    assert_problem(
        p, at(2, 36), "rules[0].from.group", "unknown client group 'kids' (web_filter.groups: none"
    )


def test_bare_client_group_typo_in_a_rule_suggests_the_group() -> None:
    p = the_error(
        """\
        rules:
          - {name: kids-out, from: kidz, to: wan, action: accept}
        """,
        groups=True,
    )
    assert_problem(
        p,
        at(2, 28),
        "rules[0].from",
        "unknown zone 'kidz' (zones: lan, guest, wan; client groups: kids, staff, default); "
        "did you mean 'kids'?",
    )


def test_default_group_must_exist() -> None:
    p = the_error("""\
        web_filter:
          default_group: staf
          groups:
            staff: {clients: [lan]}
        """)
    assert_problem(
        p,
        at(2, 18),
        "web_filter.default_group",
        "unknown group 'staf' (groups: staff); did you mean 'staff'?",
    )


def test_rule_naming_the_implicit_default_group_matches_nothing() -> None:
    p = the_error(
        """\
        rules:
          - {name: rest-out, from: default, to: wan, action: accept}
        """,
        groups=True,
    )
    assert_problem(
        p,
        at(2, 28),
        "rules[0].from",
        "client group 'default' has no addresses, MACs or zones to match",
    )


def test_rule_to_a_group_of_macs_only_matches_nothing() -> None:
    p = the_error("""\
        rules:
          - {name: no-tablets, from: wan, to: {group: tablets}, action: drop}
          - {name: tablets-out, from: tablets, to: wan, action: accept}
        web_filter:
          groups:
            tablets: {clients: ["02:00:00:00:00:70"]}
        """)
    assert_problem(
        p,
        at(2, 47),
        "rules[0].to.group",
        "client group 'tablets' has only MAC addresses, and a MAC only matches a sender",
    )


# -- members: MACs, clients, zones ------------------------------------------------------


@pytest.mark.parametrize("mac", ["02:00:00:00:00:zz", "02:00:00:00:00", "02:00:00:00:00:00:01"])
def test_malformed_mac_in_a_group(mac: str) -> None:
    p = the_error(f"""\
        web_filter:
          groups:
            kids: {{clients: [guest, "{mac}"]}}
        """)
    assert_problem(
        p,
        at(3, 29),
        "web_filter.groups.kids.clients[1]",
        f"malformed MAC address '{mac}' (expected e.g. 02:00:00:00:00:21)",
    )


@pytest.mark.parametrize("mac", ["02:00:00:00:00:zz", "02:00:00:00:00", "02-00-00-00-00-0G"])
def test_malformed_mac_of_a_client(mac: str) -> None:
    p = the_error(f"""\
        clients:
          tablet: {{mac: "{mac}"}}
        web_filter:
          groups:
            kids: {{clients: [tablet]}}
        """)
    assert_problem(
        p,
        at(2, 17),
        "clients.tablet.mac",
        f"malformed MAC address '{mac}' (expected e.g. 02:00:00:00:00:21)",
    )


def test_client_needs_a_mac_or_an_address() -> None:
    p = the_error("""\
        clients:
          tablet: {description: no way to recognise it}
        """)
    assert_problem(p, at(2, 11), "clients.tablet", "a client needs 'mac' or 'ip'")
    p = the_error("""\
        clients:
          tablet: {}
        """)
    assert_problem(p, at(2, 11), "clients.tablet", "a client needs 'mac' or 'ip'")


def test_client_with_a_bad_address() -> None:
    p = the_error("""\
        clients:
          printer: {ip: 192.0.2.300}
        """)
    assert_problem(p, at(2, 17), "clients.printer.ip", "'192.0.2.300' is not an IPv4 or IPv6")


def test_client_named_like_a_zone() -> None:
    p = the_error("""\
        clients:
          guest: {mac: "02:00:00:00:00:70"}
        """)
    assert_problem(
        p, at(2, 3), "clients.guest", "'guest' is also a zone; client and zone names must differ"
    )


def test_unknown_client_or_zone_in_a_group() -> None:
    p = the_error("""\
        clients:
          tablet: {mac: "02:00:00:00:00:70"}
        web_filter:
          groups:
            kids: {clients: [tablett]}
        """)
    assert_problem(
        p,
        at(5, 22),
        "web_filter.groups.kids.clients[0]",
        "unknown client or zone 'tablett' (clients: tablet; zones: lan, guest, wan); "
        "did you mean 'tablet'?",
    )


def test_bad_address_in_a_group() -> None:
    p = the_error("""\
        web_filter:
          groups:
            kids: {clients: [192.0.2.70/33]}
        """)
    assert_problem(
        p, at(3, 22), "web_filter.groups.kids.clients[0]", "prefix length 33 is out of range"
    )


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        ("guest", "guest", "'guest' is already in group 'kids'"),
        ("tablet", "tablet", "'tablet' is already in group 'kids'"),
        ("192.0.2.70", "192.0.2.70", "'192.0.2.70' is already in group 'kids'"),
        ("02:00:00:00:00:70", "02-00-00-00-00-70", "'02-00-00-00-00-70' is already in group"),
        # one device, named by its client and by its MAC
        ("tablet", "02:00:00:00:00:70", "'02:00:00:00:00:70' is already in group 'kids'"),
        ("02:00:00:00:00:70", "tablet", "'tablet' is already in group 'kids' (as MAC 02:00:00:"),
    ],
)
def test_the_same_member_in_two_groups(first: str, second: str, message: str) -> None:
    p = the_error(f"""\
        clients:
          tablet: {{mac: "02:00:00:00:00:70"}}
        web_filter:
          groups:
            kids: {{clients: ["{first}"]}}
            staff: {{clients: [lan, "{second}"]}}
        """)
    assert_problem(p, at(6, 28), "web_filter.groups.staff.clients[1]", message)


def test_group_named_like_a_zone() -> None:
    p = the_error("""\
        web_filter:
          groups:
            guest: {clients: [guest]}
        """)
    assert_problem(
        p, at(3, 5), "web_filter.groups.guest", "'guest' is also a zone; names must differ"
    )


def test_group_named_like_a_client() -> None:
    p = the_error("""\
        clients:
          tablet: {mac: "02:00:00:00:00:70"}
        web_filter:
          groups:
            tablet: {clients: [tablet]}
        """)
    assert_problem(
        p, at(5, 5), "web_filter.groups.tablet", "'tablet' is also a client; names must differ"
    )


# -- safe search, block mode ------------------------------------------------------------


def test_unknown_safe_search_provider() -> None:
    p = the_error("""\
        web_filter:
          groups:
            kids:
              clients: [guest]
              safe_search: {googel: strict}
        """)
    assert_problem(
        p,
        at(5, 21),
        "web_filter.groups.kids.safe_search.googel",
        "unknown safe-search provider 'googel' (allowed: google, youtube, bing, duckduckgo); "
        "did you mean 'google'?",
    )


def test_unknown_safe_search_mode() -> None:
    p = the_error("""\
        web_filter:
          groups:
            kids:
              clients: [guest]
              safe_search: {youtube: moderate, google: moderate}
        """)
    assert_problem(
        p,
        at(5, 48),
        "web_filter.groups.kids.safe_search.google",
        "unknown mode 'moderate' for google (allowed: strict)",
    )


def test_safe_search_of_the_wrong_type() -> None:
    p = the_error("""\
        web_filter:
          groups:
            kids: {clients: [guest], safe_search: [google]}
        """)
    assert_problem(
        p,
        at(3, 43),
        "web_filter.groups.kids.safe_search",
        "expected true, false or provider -> mode",
    )


def test_unknown_block_mode() -> None:
    p = the_error("""\
        web_filter:
          groups:
            kids: {clients: [guest], block_mode: nxdomian}
        """)
    assert_problem(
        p,
        at(3, 42),
        "web_filter.groups.kids.block_mode",
        "unknown block mode 'nxdomian' (allowed: nxdomain, null, ip, refused); "
        "did you mean 'nxdomain'?",
    )


def test_block_mode_ip_needs_a_block_page() -> None:
    p = the_error("""\
        web_filter:
          groups:
            kids: {clients: [guest], block_mode: ip}
        """)
    assert_problem(
        p,
        at(3, 42),
        "web_filter.groups.kids.block_mode",
        "block_mode 'ip' needs dns.block_page.ipv4 and/or ipv6",
    )
    wf = web_filter(
        """\
        dns:
          block_page: {ipv4: 192.0.2.1}
        web_filter:
          groups:
            kids: {clients: [guest], block_mode: ip}
        """,
        dns=False,
    )
    assert wf.group("kids").block_mode == "ip"


# -- the dns section --------------------------------------------------------------------


def test_web_filter_needs_a_dns_section() -> None:
    p = the_error(
        """\
        web_filter:
          groups: {kids: {clients: [guest]}}
        """,
        dns=False,
    )
    assert_problem(
        p,
        at(2, 3),
        "web_filter",
        "web filtering needs a 'dns' section (the resolver it filters)",
    )


def test_explicit_listen_must_cover_every_redirect() -> None:
    found = problems(
        """\
        dns:
          listen: ["192.0.2.1:53"]
        web_filter:
          groups: {kids: {clients: [guest]}}
        """,
        dns=False,
    )
    assert len(found) == 2, "\n".join(map(str, found))
    lan6, guest4 = found
    assert_problem(
        lan6,
        at(2, 11),
        "dns.listen",
        "web filtering redirects DNS from zone 'lan' to [2001:db8:0:10::1]:53, but the "
        'resolver does not listen there; add "[2001:db8:0:10::1]:53"',
    )
    assert_problem(
        guest4,
        at(2, 11),
        "dns.listen",
        "web filtering redirects DNS from zone 'guest' to 192.0.2.65:53, but the resolver "
        'does not listen there; add "192.0.2.65:53"',
    )


@pytest.mark.parametrize(
    "listen",
    [
        '["0.0.0.0:53", "[::]:53"]',
        '["udp://192.0.2.1:53", "192.0.2.65:53", "[2001:db8:0:10::1]:53"]',
        # the same addresses, written differently
        '["192.0.2.1:53", "192.0.2.65:53", "[2001:DB8:0:10:0:0:0:1]:53"]',
    ],
)
def test_listen_covering_every_redirect(listen: str) -> None:
    wf = web_filter(
        f"""\
        dns:
          listen: {listen}
        web_filter: {{}}
        """,
        dns=False,
    )
    assert wf.zones == ("lan", "guest")


def test_redirects_only_to_zones_the_resolver_could_listen_on() -> None:
    """Listening on the IPv4 wildcard does not cover an IPv6 redirect."""
    p = the_error(
        """\
        dns:
          listen: ["0.0.0.0:53"]
        web_filter: {}
        """,
        dns=False,
    )
    assert_problem(p, at(2, 11), "dns.listen", "web filtering redirects DNS from zone 'lan' to [")


# -- rule endpoints with names ----------------------------------------------------------


def test_domains_only_name_destinations() -> None:
    p = the_error("""\
        rules:
          - name: from-names
            from: {domains: [example.com]}
            to: wan
            action: accept
        """)
    assert_problem(
        p,
        at(3, 11),
        "rules[0].from",
        "domains and web_services name destinations: use them in 'to'",
    )


@pytest.mark.parametrize(
    "endpoint",
    [
        "{zone: wan, address: 198.51.100.7, domains: [example.com]}",
        "{zone: wan, address: 198.51.100.7, web_services: [social]}",
    ],
)
def test_one_kind_of_destination_per_side(endpoint: str) -> None:
    p = the_error(f"""\
        rules:
          - name: both
            from: lan
            to: {endpoint}
            action: accept
        """)
    assert_problem(
        p, at(4, 9), "rules[0].to", "use one of address, group, or domains/web_services per side"
    )


def test_group_and_domains_on_one_side() -> None:
    p = the_error(
        """\
        rules:
          - {name: both, from: lan, to: {group: kids, domains: [example.com]}, action: accept}
        """,
        groups=True,
    )
    assert_problem(
        p, at(2, 33), "rules[0].to", "use one of address, group, or domains/web_services per side"
    )


def test_empty_domains() -> None:
    p = the_error("""\
        rules:
          - name: nothing
            from: lan
            to: {zone: wan, domains: []}
            action: accept
        """)
    assert_problem(p, at(4, 9), "rules[0].to", "no destination names given")


def test_bad_domain_in_a_rule_is_one_error() -> None:
    p = the_error("""\
        rules:
          - name: bad-name
            from: lan
            to: {zone: wan, domains: ["exa mple.com"]}
            action: accept
        """)
    assert_problem(
        p, at(4, 31), "rules[0].to.domains[0]", "expected a domain name, got 'exa mple.com'"
    )


# -- names the groups refer to ----------------------------------------------------------


def test_unknown_dns_block_list() -> None:
    p = the_error("""\
        web_filter:
          groups:
            kids: {clients: [guest], blocklists: [ads, malwar]}
        """)
    assert_problem(
        p,
        at(3, 48),
        "web_filter.groups.kids.blocklists[1]",
        "unknown DNS block list 'malwar' (dns.blocklists: ads, malware); did you mean 'malware'?",
    )


def test_unknown_schedule() -> None:
    p = the_error("""\
        schedules:
          lunch: [{days: weekdays, time: "12:00-13:00"}]
        web_filter:
          groups:
            staff:
              clients: [lan]
              schedules:
                - when: lnch
                  unblock: {services: [social]}
        """)
    assert_problem(
        p,
        at(8, 17),
        "web_filter.groups.staff.schedules[0].when",
        "unknown schedule 'lnch' (schedules: lunch); did you mean 'lunch'?",
    )


def test_schedule_needs_when() -> None:
    p = the_error("""\
        web_filter:
          groups:
            staff:
              clients: [lan]
              schedules:
                - unblock: {services: [social]}
        """)
    assert_problem(
        p, at(6, 11), "web_filter.groups.staff.schedules[0]", "missing required key 'when'"
    )


def test_unknown_key_in_a_group() -> None:
    p = the_error("""\
        web_filter:
          groups:
            kids: {clients: [guest], categores: [adult]}
        """)
    assert_problem(
        p, at(3, 30), "web_filter.groups.kids.categores", "unknown key 'categores' (allowed: "
    )
    assert p.message.endswith("did you mean 'categories'?")


# -- every problem at once --------------------------------------------------------------


def test_every_problem_is_reported_in_order() -> None:
    found = problems("""\
        rules:
          - {name: kids-out, from: {group: kidz}, to: wan, action: accept}
        clients:
          tablet: {mac: "02:00:00:00:00"}
        web_filter:
          default_group: nobody
          groups:
            kids:
              clients: [guest, tablet, gest]
              categories: [adutl]
              services: [socail]
              block_mode: blackhole
              safe_search: {bingo: strict}
        """)
    assert [(p.location.line, p.location.column) for p in found if p.location] == sorted(
        (p.location.line, p.location.column) for p in found if p.location
    )
    got = [(p.location.line if p.location else 0, p.field, p.message.split(" (")[0]) for p in found]
    assert got == [
        (at(2, 0)[0], "rules[0].from.group", "unknown client group 'kidz'"),
        (at(4, 0)[0], "clients.tablet.mac", "malformed MAC address '02:00:00:00:00'"),
        (at(6, 0)[0], "web_filter.default_group", "unknown group 'nobody'"),
        (at(9, 0)[0], "web_filter.groups.kids.clients[2]", "unknown client or zone 'gest'"),
        (at(10, 0)[0], "web_filter.groups.kids.categories[0]", "unknown category 'adutl'"),
        (at(11, 0)[0], "web_filter.groups.kids.services[0]", "unknown service 'socail'"),
        (at(12, 0)[0], "web_filter.groups.kids.block_mode", "unknown block mode 'blackhole'"),
        (
            at(13, 0)[0],
            "web_filter.groups.kids.safe_search.bingo",
            "unknown safe-search provider 'bingo'",
        ),
    ]
    assert all(p.severity == "error" for p in found)


# -- what a valid policy means ----------------------------------------------------------


def test_the_example_loads_without_warnings() -> None:
    loaded = load_policy(EXAMPLE)
    assert loaded.warnings == ()
    wf = loaded.policy.web_filter
    assert wf is not None
    assert [g.name for g in wf.groups] == ["staff", "kids", "cameras", "admins"]
    assert wf.default_group == "staff"
    assert wf.zones == ("lan", "guest", "iot")  # mgmt belongs to the unfiltered admins
    assert wf.catalogue_version == default_catalogue().version


def test_group_without_blocklists_gets_every_dns_list() -> None:
    wf = web_filter("""\
        web_filter:
          groups:
            kids: {clients: [guest]}
            staff: {clients: [lan], blocklists: [malware]}
            guests: {clients: [192.0.2.70], blocklists: []}
        """)
    assert wf.group("kids").blocks.blocklists == ("ads", "malware")
    assert wf.group("staff").blocks.blocklists == ("malware",)
    assert wf.group("guests").blocks.blocklists == ()


def test_unfiltered_groups_zones_are_not_enforced() -> None:
    wf = web_filter("""\
        clients:
          boss: {ip: 192.0.2.11}
        web_filter:
          groups:
            kids: {clients: [guest]}
            admins: {clients: [lan, boss], filter: false}
        """)
    assert wf.zones == ("guest",)
    assert [(r.zone, r.family, r.address) for r in wf.redirects] == [("guest", 4, "192.0.2.65")]
    assert [g.name for g in wf.exempt] == ["admins"]


def test_explicit_zones_minus_unfiltered_ones() -> None:
    wf = web_filter("""\
        web_filter:
          zones: [lan, guest]
          groups:
            admins: {clients: [guest], filter: false}
        """)
    assert wf.zones == ("lan",)
    assert {r.zone for r in wf.redirects} == {"lan"}


def test_implicit_default_group() -> None:
    wf = web_filter("""\
        web_filter:
          groups:
            kids: {clients: [guest]}
        """)
    assert [g.name for g in wf.groups] == ["kids", "default"]
    assert wf.default_group == "default"
    default = wf.group("default")
    assert default.filtered
    assert default.members.empty()
    assert default.blocks.blocklists == ("ads", "malware")  # like before web filtering


def test_no_implicit_default_when_one_is_named_or_chosen() -> None:
    named = web_filter("""\
        web_filter:
          groups:
            default: {blocklists: [ads]}
        """)
    assert [g.name for g in named.groups] == ["default"]
    assert named.group("default").blocks.blocklists == ("ads",)
    chosen = web_filter("""\
        web_filter:
          default_group: staff
          groups:
            staff: {clients: [lan]}
        """)
    assert [g.name for g in chosen.groups] == ["staff"]
    assert chosen.default_group == "staff"


def test_safe_search_true_is_every_providers_default_mode() -> None:
    wf = web_filter("""\
        web_filter:
          groups:
            kids: {clients: [guest], safe_search: true}
            teens: {clients: [lan], safe_search: {youtube: moderate, google: true, bing: false}}
        """)
    providers = default_catalogue().safe_search
    assert wf.group("kids").safe_search == tuple(
        (p.name, p.default_mode) for p in providers.values()
    )
    assert set(dict(wf.group("kids").safe_search)) == {"google", "youtube", "bing", "duckduckgo"}
    assert wf.group("teens").safe_search == (("youtube", "moderate"), ("google", "strict"))


def test_macs_are_normalised() -> None:
    wf = web_filter("""\
        clients:
          tablet: {mac: "02-00-00-00-00-AB"}
          phone: {mac: ["02:00:00:00:00:Cd"], ip: "2001:db8:0:10::50"}
        web_filter:
          groups:
            kids: {clients: [tablet, phone, "02-00-00-00-00-EF", " 02:00:00:00:00:12 "]}
        """)
    members = wf.group("kids").members
    assert members.macs == (
        "02:00:00:00:00:ab",
        "02:00:00:00:00:cd",
        "02:00:00:00:00:ef",
        "02:00:00:00:00:12",
    )
    assert members.addresses.name == "cg_kids"
    assert members.addresses.families() == (6,)


def test_group_members_split_into_addresses_macs_and_zones() -> None:
    wf = web_filter("""\
        clients:
          boss: {ip: [192.0.2.11, "2001:db8:0:10::11"], mac: "02:00:00:00:00:11"}
        web_filter:
          groups:
            staff: {clients: [lan, boss, 192.0.2.20/30, "2001:db8:0:10::/120"]}
        """)
    m = wf.group("staff").members
    assert m.zones == ("lan",)
    assert m.macs == ("02:00:00:00:00:11",)
    assert m.addresses.families() == (4, 6)
    assert len(m.addresses.v4) == 2 and len(m.addresses.v6) == 1  # ::11 is inside ::/120

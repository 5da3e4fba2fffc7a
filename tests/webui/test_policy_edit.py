"""The forms' YAML edits: the admin's file stays as written except for the one change."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from policies.loader import parse_policy
from webui import policy_edit as pe

EXAMPLES = Path(__file__).resolve().parents[2] / "policies" / "examples"
WEB = (EXAMPLES / "web-filter.yaml").read_text(encoding="utf-8")
SMALL = (EXAMPLES / "small-office.yaml").read_text(encoding="utf-8")


def changes(old: str, new: str) -> tuple[list[str], list[str]]:
    """(removed lines, added lines)."""
    diff = list(difflib.ndiff(old.splitlines(), new.splitlines()))
    return [d[2:] for d in diff if d.startswith("- ")], [d[2:] for d in diff if d.startswith("+ ")]


def valid(text: str) -> None:
    parse_policy(text, "edited.yaml", base_dir=EXAMPLES)


def test_block_and_allow_a_domain_for_a_group() -> None:
    blocked = pe.set_domain(WEB, "kids", "Games.Example.", "block")
    assert changes(WEB, blocked) == ([], ["      block: [games.example]"])
    valid(blocked)
    more = pe.set_domain(blocked, "kids", "*.chat.example", "block")
    assert changes(blocked, more) == (
        ["      block: [games.example]"],
        ["      block: [games.example, '*.chat.example']"],
    )
    allowed = pe.set_domain(more, "kids", "games.example", "allow")  # moves to the other list
    removed, added = changes(more, allowed)
    assert removed == ["      block: [games.example, '*.chat.example']"]
    assert added == ["      block: ['*.chat.example']", "      allow: [games.example]"]
    valid(allowed)


def test_a_new_key_goes_above_the_blank_line_that_ends_the_block() -> None:
    text = pe.set_domain(WEB, "staff", "news.example", "allow")
    lines = text.splitlines()
    i = lines.index("      allow: [news.example]")
    assert lines[i - 1].strip() == "unblock: {services: [social]}"
    assert lines[i + 1] == "    kids:"


@pytest.mark.parametrize(
    ("domain", "error"),
    [("not a domain", "is not a domain name"), ("localhost", "is not a domain name")],
)
def test_bad_domains_are_refused(domain: str, error: str) -> None:
    with pytest.raises(pe.PolicyEditError, match=error):
        pe.set_domain(WEB, "kids", domain, "block")


def test_unknown_group_and_repeats_say_what_is_there() -> None:
    with pytest.raises(pe.PolicyEditError, match=r"no web_filter group 'teens' \(groups: staff"):
        pe.set_domain(WEB, "teens", "x.example", "block")
    with pytest.raises(pe.PolicyEditError, match="no web_filter groups"):
        pe.set_domain(SMALL, "kids", "x.example", "block")
    twice = pe.set_domain(WEB, "kids", "x.example", "block")
    with pytest.raises(pe.PolicyEditError, match="already on the block list"):
        pe.set_domain(twice, "kids", "x.example", "block")


def test_add_a_client_by_mac_address_name_or_zone() -> None:
    text = pe.add_client(WEB, "kids", "02-00-00-00-00-7A")
    assert changes(WEB, text)[1] == ['      clients: [guest, kids-tablet, "02:00:00:00:00:7a"]']
    text = pe.add_client(text, "cameras", "192.0.2.140/30")
    text = pe.add_client(text, "cameras", "2001:db8:0:30::9")
    assert '      clients: [iot, 192.0.2.140/30, "2001:db8:0:30::9"]' in text
    valid(text)
    moved = pe.add_client(text, "staff", "boss-laptop")  # one group per member: it moves
    assert changes(text, moved) == (
        ["      clients: [lan]", "      clients: [boss-laptop, mgmt]"],
        ["      clients: [lan, boss-laptop]", "      clients: [mgmt]"],
    )
    valid(moved)
    with pytest.raises(pe.PolicyEditError, match="no client or zone of this policy"):
        pe.add_client(WEB, "kids", "printer")
    with pytest.raises(pe.PolicyEditError, match="not a MAC address"):
        pe.add_client(WEB, "kids", "02:00:00:00:00:zz")
    with pytest.raises(pe.PolicyEditError, match="already in group kids"):
        pe.add_client(WEB, "kids", "guest")


def test_add_a_rule_at_the_end_or_before_another() -> None:
    rule = pe.RuleSpec("lan-ssh", ["lan"], ["wan"], "drop", ["ssh", "web"], "lunch", "no: ssh")
    text = pe.add_rule(WEB, rule)
    removed, added = changes(WEB, text)
    assert removed == []
    assert added == [
        "  - name: lan-ssh",
        "    from: lan",
        "    to: wan",
        "    service: [ssh, web]",
        "    action: drop",
        "    schedule: lunch",
        '    comment: "no: ssh"',
    ]
    lines = text.splitlines()  # above the blank line before defaults:, not glued to it
    assert lines[lines.index('    comment: "no: ssh"') + 1 : lines.index("defaults:")] == [""]
    valid(text)
    first = pe.add_rule(WEB, pe.RuleSpec("guard", ["guest", "iot"], ["lan"], "reject"),
                        before="iot-cloud")  # fmt: skip
    lines = first.splitlines()
    assert lines[lines.index("rules:") + 1 : lines.index("rules:") + 6] == [
        "  - name: guard", "    from: [guest, iot]", "    to: lan", "    action: reject",
        "  - name: iot-cloud",
    ]  # fmt: skip
    valid(first)


def test_rule_mistakes_are_refused_before_the_loader() -> None:
    ok = pe.RuleSpec("x", ["lan"], ["wan"], "accept")
    for rule, error in [
        (pe.RuleSpec("lan-out", ["lan"], ["wan"], "accept"), "already a rule named lan-out"),
        (pe.RuleSpec("Bad Name", ["lan"], ["wan"], "accept"), "rule name 'Bad Name'"),
        (pe.RuleSpec("x", ["lan"], ["wan"], "allow"), "action must be one of"),
        (pe.RuleSpec("x", [], ["wan"], "accept"), "needs from and to"),
        (pe.RuleSpec("x", ["lan"], ["wan"], "accept", schedule="night"), "no schedule named"),
    ]:
        with pytest.raises(pe.PolicyEditError, match=error):
            pe.add_rule(WEB, rule)
    with pytest.raises(pe.PolicyEditError, match="no rule named 'nope'"):
        pe.add_rule(WEB, ok, before="nope")


def test_add_a_port_forward_creates_the_list_or_extends_it() -> None:
    spec = pe.PortForwardSpec("nas", "8443", "192.0.2.20", "443", "tcp", ["203.0.113.0/24"])
    text = pe.add_port_forward(WEB, spec)
    assert changes(WEB, text) == (
        [],
        ["  port_forwards:", "    - name: nas", "      port: 8443", "      to: 192.0.2.20",
         "      to_port: 443", "      from: 203.0.113.0/24"],
    )  # fmt: skip
    valid(text)
    spec = pe.PortForwardSpec("games", "27000-27010", "2001:db8:0:40::5", protocol="udp")
    text = pe.add_port_forward(SMALL, spec)
    assert changes(SMALL, text)[1] == [
        "    - name: games", "      protocol: udp", "      port: 27000-27010",
        '      to: "2001:db8:0:40::5"',
    ]  # fmt: skip
    assert "      comment: NAS photo sharing\n    - name: games" in text
    valid(text)
    for bad, error in [
        (pe.PortForwardSpec("nas-https", "1", "192.0.2.9"), "already a port forward"),
        (pe.PortForwardSpec("x", "70000", "192.0.2.9"), "port: '70000' is not a port"),
        (pe.PortForwardSpec("x", "80", "nas"), "not an inside address"),
        (pe.PortForwardSpec("x", "80", "192.0.2.9", "1-2"), "to_port: '1-2' is not a port"),
        (pe.PortForwardSpec("x", "80", "192.0.2.9", protocol="sctp"), "protocol must be"),
    ]:
        with pytest.raises(pe.PolicyEditError, match=error):
            pe.add_port_forward(SMALL, bad)


def test_add_a_schedule_or_a_window_to_one() -> None:
    text = pe.add_schedule(WEB, "evening", "Mon, tue", "18:00 - 22:00")
    assert changes(WEB, text)[1] == ["  evening:", '    - {days: [mon, tue], time: "18:00-22:00"}']
    lines = text.splitlines()
    assert lines[lines.index("clients:") - 1] == ""  # the blank line stays before clients:
    text = pe.add_schedule(text, "lunch", "weekend", "12:00-14:00")
    assert '    - {days: weekdays, time: "12:00-13:30"}\n    - {days: weekend' in text
    valid(text)
    with pytest.raises(pe.PolicyEditError, match="unknown day 'someday'"):
        pe.add_schedule(WEB, "x", "someday", "10:00-11:00")
    with pytest.raises(pe.PolicyEditError, match="HH:MM-HH:MM"):
        pe.add_schedule(WEB, "x", "daily", "10-11")


def test_a_missing_section_is_created_in_the_usual_place() -> None:
    text = pe.add_schedule(SMALL, "evening", "daily", "18:00-22:00")
    removed, added = changes(SMALL, text)
    assert removed == [] and added == [
        "", "schedules:", "  evening:", '    - {days: daily, time: "18:00-22:00"}',
    ]  # fmt: skip
    assert "  nas-web: {tcp: [443, 5001]}\n\nschedules:\n" in text
    assert '18:00-22:00"}\n\nrules:\n' in text
    valid(text)


def test_the_files_own_indentation_is_kept() -> None:
    text = (
        "version: 1\nsite:\n    name: x\nzones:\n    lan:\n        interfaces: [lan0]\n"
        "    wan:\n        interfaces: [wan0]\nrules:\n-   name: a  # first\n"
        "    from: lan\n    to: wan\n    action: accept\n"
    )
    new = pe.add_rule(text, pe.RuleSpec("b", ["wan"], ["lan"], "drop"))
    assert new.startswith(text)  # nothing above changed, the comment included
    assert new[len(text) :] == "-   name: b\n    from: wan\n    to: lan\n    action: drop\n"
    valid(new)


def test_values_yaml_1_1_would_misread_are_quoted() -> None:
    rule = pe.RuleSpec("x", ["lan"], ["wan"], "accept", comment="yes")
    text = pe.add_rule(WEB, rule)
    assert '    comment: "yes"' in text  # PyYAML (YAML 1.1) would read plain yes as true
    valid(text)
    text = pe.add_schedule(WEB, "on", "daily", "10:00-11:00")  # a name, and a key, too
    text = pe.add_rule(text, pe.RuleSpec("no", ["lan"], ["wan"], "accept", schedule="on"))
    assert '  "on":\n    - {days: daily' in text
    assert '  - name: "no"\n' in text and '    schedule: "on"\n' in text
    valid(text)


def test_text_that_is_not_yaml_is_refused_with_its_line() -> None:
    with pytest.raises(
        pe.PolicyEditError, match=r"not valid YAML at line \d; fix it in the editor"
    ):
        pe.add_client("version: 1\nsite: [x\n", "kids", "lan")
    with pytest.raises(pe.PolicyEditError, match="empty or not a mapping"):
        pe.add_client("", "kids", "lan")


def test_facts_name_what_the_forms_offer() -> None:
    facts = pe.facts(WEB)
    assert facts.groups == ["staff", "kids", "cameras", "admins"]
    assert facts.clients == ["boss-laptop", "kids-tablet"]
    assert facts.rules[0] == "iot-cloud" and facts.schedules == ["lunch"]
    assert "mgmt" in facts.zones
    assert pe.facts("not: [yaml") == pe.PolicyFacts()
    assert pe.split_list(" a, b  c,") == ["a", "b", "c"]

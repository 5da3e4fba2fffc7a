"""Every kind of policy mistake is reported where it is, under its field, in plain words.

Each test feeds a small policy with one mistake and checks the whole finding: file, line
and column (1-based), the dotted field path and the key part of the message. Most tests
also check that the mistake yields exactly one error, so a typo does not drown in errors
that follow from it.

Snippets are appended to ``BASE`` (zones lan, guest and wan), so a snippet's first line is
line ``BASE_LINES + 1`` of the policy; ``at(2, 9)`` reads "snippet line 2, column 9".
"""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from policies.errors import PolicyLoadError, PolicyValidationError, Problem
from policies.feeds import FeedData, parse_feed
from policies.loader import LoadedPolicy, load_policy, parse_policy
from policies.model import TimeWindow

FILE = "policy.yaml"
BAD = Path(__file__).parent / "bad"

BASE = """\
version: 1
site: {name: office}
zones:
  lan: {interfaces: [lan0]}
  guest: {interfaces: [guest0]}
  wan: {interfaces: [wan0]}
"""
BASE_LINES = BASE.count("\n")


def at(line: int, column: int) -> tuple[int, int]:
    """A position inside a snippet appended to BASE, as a position in the policy."""
    return BASE_LINES + line, column


def feeds(files: dict[str, str]) -> Callable[[Path], FeedData]:
    """A read_feed that serves these texts by file name and has no other files."""

    def read(path: Path) -> FeedData:
        if path.name not in files:
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return parse_feed(files[path.name])

    return read


NO_FEEDS = feeds({})


def load(text: str, *, read_feed: Callable[[Path], FeedData] = NO_FEEDS) -> LoadedPolicy:
    return parse_policy(textwrap.dedent(text), FILE, read_feed=read_feed)


def problems(text: str, *, read_feed: Callable[[Path], FeedData] = NO_FEEDS) -> list[Problem]:
    with pytest.raises(PolicyValidationError) as info:
        load(text, read_feed=read_feed)
    return info.value.problems


def errors(text: str, **kwargs: Callable[[Path], FeedData]) -> list[Problem]:
    return [p for p in problems(text, **kwargs) if p.severity == "error"]


def the_error(text: str, **kwargs: Callable[[Path], FeedData]) -> Problem:
    """The only error in ``text`` (fails listing all of them if there are more)."""
    found = errors(text, **kwargs)
    assert len(found) == 1, "\n".join(map(str, found))
    return found[0]


def snippet_error(snippet: str) -> Problem:
    return the_error(BASE + textwrap.dedent(snippet))


def assert_problem(
    p: Problem, position: tuple[int, int], field: str, message: str, *, file: str = FILE
) -> None:
    assert p.location is not None, p
    assert (p.location.file, p.location.line, p.location.column) == (file, *position), str(p)
    assert p.field == field, str(p)
    assert message in p.message, str(p)


# -- the document ------------------------------------------------------------------------


def test_yaml_syntax_error_names_file_line_and_column() -> None:
    text = "version: 1\nsite:\n  name: office\n\tzones: {}\n"
    with pytest.raises(PolicyLoadError) as info:
        parse_policy(text, FILE)
    assert str(info.value).startswith("policy.yaml:4:1: not valid YAML: ")
    assert "tab character" in str(info.value)


def test_yaml_syntax_error_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("version: 1\nsite: {name: office\nzones: {}\n", encoding="utf-8")
    with pytest.raises(PolicyLoadError, match=r"^.*policy\.yaml:\d+:\d+: not valid YAML: ") as info:
        load_policy(path)
    assert str(info.value).startswith(f"{path}:")


def test_unreadable_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    with pytest.raises(PolicyLoadError) as info:
        load_policy(path)
    assert str(info.value) == f"{path}: cannot read policy: No such file or directory"


def test_policy_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"version: 1\nsite: {name: caf\xe9}\n")
    with pytest.raises(PolicyLoadError, match=r"policy is not UTF-8 text .* at byte 27"):
        load_policy(path)


@pytest.mark.parametrize("text", ["", "\n\n", "# nothing here yet\n"])
def test_empty_document(text: str) -> None:
    (p,) = problems(text)
    assert_problem(p, (1, 1), "", "the policy is empty (it needs version, site and zones)")
    assert str(p).startswith("policy.yaml:1:1: the policy is empty")


def test_empty_document_after_a_document_marker() -> None:
    (p,) = problems("---\n")
    assert_problem(p, (2, 1), "", "the policy is empty")


@pytest.mark.parametrize(
    ("text", "kind"), [("- version: 1\n", "a list"), ("just words\n", "text"), ("42\n", "int")]
)
def test_top_level_must_be_a_mapping(text: str, kind: str) -> None:
    p = the_error(text)
    assert_problem(p, (1, 1), "", f"expected a mapping, got {kind}")


def test_missing_version_site_and_zones_are_each_reported() -> None:
    found = errors("options: {counters: true}\n")
    assert [(p.location and p.location.line, p.field, p.message) for p in found] == [
        (1, "", "missing required key 'version'"),
        (1, "", "missing required key 'site'"),
        (1, "", "missing required key 'zones'"),
    ]


@pytest.mark.parametrize(("value", "shown"), [("2", "2"), ('"1"', "'1'"), ("true", "True")])
def test_unsupported_version(value: str, shown: str) -> None:
    p = the_error(BASE.replace("version: 1", f"version: {value}"))
    assert_problem(p, (1, 10), "version", f"unsupported policy version {shown} ")
    assert p.message.endswith("(this EdgeGuard reads version 1)")


def test_unknown_top_level_key_suggests_the_right_one() -> None:
    text = """\
        version: 1
        site: {name: office}
        zone:
          lan: {interfaces: [lan0]}
    """
    first, second = errors(text)
    # Sorted by position: the missing key is reported at the top of the document.
    assert_problem(first, (1, 1), "", "missing required key 'zones'")
    assert_problem(second, (3, 1), "zone", "unknown key 'zone' (allowed: version, site, zones,")
    assert second.message.endswith("; did you mean 'zones'?")


def test_unknown_key_in_a_rule() -> None:
    p = snippet_error(
        """\
        rules:
          - name: web
            from: lan
            to: wan
            action: accept
            sevice: web
        """
    )
    assert_problem(p, at(6, 5), "rules[0].sevice", "unknown key 'sevice' (allowed: name, from,")
    assert p.message.endswith("; did you mean 'service'?")


def test_unknown_key_without_a_close_match_has_no_suggestion() -> None:
    p = snippet_error("rules:\n  - {from: lan, to: wan, action: accept, priority: 5}\n")
    assert_problem(p, at(2, 42), "rules[0].priority", "unknown key 'priority'")
    assert "did you mean" not in p.message


def test_duplicate_key_points_at_the_second_and_names_the_first() -> None:
    p = snippet_error(
        """\
        rules:
          - name: web
            from: lan
            to: wan
            action: accept
            action: drop
        """
    )
    line, _ = at(5, 5)
    assert_problem(p, at(6, 5), "rules[0].action", f"duplicate key (first defined at line {line})")


def test_duplicate_top_level_section() -> None:
    p = the_error(BASE + "zones:\n  dmz: {interfaces: [dmz0]}\n")
    assert_problem(p, at(1, 1), "zones", "duplicate key (first defined at line 3)")


# -- site ----------------------------------------------------------------------------------


def test_bad_site_name() -> None:
    p = the_error(BASE.replace("site: {name: office}", "site:\n  name: Head Office"))
    assert_problem(p, (3, 9), "site.name", "invalid site name 'Head Office' (must match ^[a-z]")


def test_unknown_timezone() -> None:
    text = BASE.replace("site: {name: office}", "site:\n  name: office\n  timezone: Europe/Berln")
    p = the_error(text)
    assert_problem(
        p,
        (4, 13),
        "site.timezone",
        "unknown time zone 'Europe/Berln' (IANA name, e.g. Europe/Berlin)",
    )


# -- zones -------------------------------------------------------------------------------

ZONES = "version: 1\nsite: {name: office}\nzones:\n  lan: {interfaces: [lan0]}\n"  # 4 lines


def test_bad_zone_name() -> None:
    p = the_error(ZONES + "  Guest-WiFi: {interfaces: [wlan0]}\n")
    assert_problem(p, (5, 3), "zones.Guest-WiFi", "invalid zone name 'Guest-WiFi' (must match")


def test_reserved_zone_name() -> None:
    p = the_error(ZONES + "  any: {interfaces: [eth9]}\n")
    assert_problem(p, (5, 3), "zones.any", "'any' is a reserved word, not a zone name")


def test_interface_in_two_zones() -> None:
    text = ZONES + "  guest:\n    interfaces:\n      - guest0\n      - lan0\n"
    p = the_error(text)
    assert_problem(
        p, (8, 9), "zones.guest.interfaces[1]", "interface 'lan0' already belongs to zone 'lan'"
    )


def test_bad_interface_name() -> None:
    p = the_error(ZONES + "  guest:\n    interfaces: [eth0:1]\n")
    assert_problem(p, (6, 18), "zones.guest.interfaces[0]", "invalid interface name 'eth0:1'")


def test_zone_with_an_empty_interface_list() -> None:
    p = the_error(ZONES + "  guest:\n    interfaces: []\n")
    assert_problem(p, (6, 17), "zones.guest.interfaces", "a zone needs at least one interface")


def test_zone_without_interfaces_key() -> None:
    p = the_error(ZONES + "  guest:\n    description: visitors\n")
    assert_problem(p, (6, 5), "zones.guest", "missing required key 'interfaces'")


@pytest.mark.parametrize("zones", ["zones: {}", "zones:"])
def test_no_zones_at_all(zones: str) -> None:
    # One error, not one plus an anti-lockout complaint about the zones that are missing.
    p = the_error(f"version: 1\nsite: {{name: office}}\n{zones}\n")
    assert p.field == "zones"
    assert p.location is not None and p.location.line == 3
    assert p.message == "define at least one zone"


def test_bad_zone_address() -> None:
    p = the_error(ZONES + "  guest:\n    interfaces: [guest0]\n    addresses: [192.0.2.1/33]\n")
    assert_problem(
        p, (7, 17), "zones.guest.addresses[0]", "'192.0.2.1/33' is not an address with prefix"
    )


# -- address groups ----------------------------------------------------------------------


def test_group_member_that_is_a_bad_address() -> None:
    p = snippet_error("address_groups:\n  printers: [192.0.2.50, 192.0.2.256]\n")
    assert_problem(p, at(2, 26), "address_groups.printers[1]", "'192.0.2.256'")


def test_unknown_group_member_suggests_a_group() -> None:
    p = snippet_error(
        """\
        address_groups:
          printers: [192.0.2.50]
          office:
            - 192.0.2.0/26
            - printrs
        """
    )
    assert_problem(p, at(5, 7), "address_groups.office[1]", "unknown group 'printrs'")
    assert p.message.endswith("; did you mean 'printers'?")


def test_group_cycle_is_reported_once() -> None:
    p = snippet_error("address_groups:\n  a: [192.0.2.1, b]\n  b: [a]\n")
    assert_problem(
        p, at(3, 7), "address_groups.b[0]", "groups include each other in a cycle: a -> b -> a"
    )


def test_group_name_equal_to_a_zone_name() -> None:
    p = snippet_error("address_groups:\n  guest: [192.0.2.70]\n")
    assert_problem(
        p,
        at(2, 3),
        "address_groups.guest",
        "'guest' is also a zone; zone and address names must differ",
    )


# -- block lists -------------------------------------------------------------------------

BLOCKLIST = """\
nat: {masquerade: wan}
blocklists:
  drop:
    files:
      - good.txt
      - junk.txt
"""


def test_block_list_file_missing_points_at_its_files_entry() -> None:
    p = the_error(BASE + BLOCKLIST, read_feed=feeds({"good.txt": "192.0.2.0/24\n"}))
    assert_problem(
        p, at(6, 9), "blocklists.drop.files[1]", "cannot read feed file junk.txt: No such file"
    )


def test_block_list_file_missing_on_disk(tmp_path: Path) -> None:
    (tmp_path / "good.txt").write_text("192.0.2.0/24\n", encoding="utf-8")
    path = tmp_path / "policy.yaml"
    path.write_text(BASE + BLOCKLIST, encoding="utf-8")
    with pytest.raises(PolicyValidationError) as info:
        load_policy(path)
    (p,) = info.value.problems
    assert_problem(
        p,
        at(6, 9),
        "blocklists.drop.files[1]",
        f"cannot read feed file {tmp_path / 'junk.txt'}: No such file or directory",
        file=str(path),
    )


def test_feed_with_junk_lines_is_a_warning_with_the_count() -> None:
    junk = "192.0.2.0/24\nnot an address\n198.51.100.7\n<html>\n; comment\n"
    loaded = load(
        BASE + BLOCKLIST, read_feed=feeds({"good.txt": "192.0.2.0/24\n", "junk.txt": junk})
    )
    (w,) = loaded.warnings
    assert w.severity == "warning"
    assert_problem(
        w, at(6, 9), "blocklists.drop.files[1]", "2 line(s) of junk.txt skipped (line 2: "
    )
    assert str(w).startswith(f"policy.yaml:{at(6, 9)[0]}:9: warning: blocklists.drop.files[1]: ")
    (bl,) = loaded.policy.blocklists
    assert bl.skipped == 2 and bl.entries == 3


def test_block_list_without_files_or_entries() -> None:
    p = snippet_error("nat: {masquerade: wan}\nblocklists:\n  drop: {block: inbound}\n")
    assert_problem(p, at(3, 9), "blocklists.drop", "a block list needs 'files' or 'entries'")


def test_block_list_without_zones_or_masquerade() -> None:
    p = snippet_error("blocklists:\n  drop: {entries: [192.0.2.1]}\n")
    assert_problem(p, at(2, 9), "blocklists.drop", "no zones given and no masquerade (WAN) zone")


# -- services ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("port", "message"),
    [
        ("0", "port 0 is out of range (1-65535)"),
        ("70000", "port 70000 is out of range (1-65535)"),
        ('"90-80"', "port range '90-80' starts after it ends"),
        ("http", "expected a port (1-65535) or range 'a-b', got 'http'"),
        ("true", "expected a port (1-65535) or range 'a-b', got True"),
    ],
)
def test_service_bad_port(port: str, message: str) -> None:
    p = snippet_error(f"services:\n  app: {{tcp: [8080, {port}]}}\n")
    assert_problem(p, at(2, 21), "services.app.tcp[1]", message)


def test_unknown_icmp_type() -> None:
    p = snippet_error("services:\n  pinger:\n    icmp: [echo-requst]\n")
    assert_problem(p, at(3, 12), "services.pinger.icmp[0]", "unknown icmp type 'echo-requst'")
    assert p.message.endswith("; did you mean 'echo-request'?")


def test_service_include_cycle() -> None:
    p = snippet_error("services:\n  a: {tcp: [81], include: [b]}\n  b: {include: [a]}\n")
    assert_problem(
        p, at(3, 17), "services.b.include[0]", "services include each other in a cycle: a -> b -> a"
    )


def test_service_with_nothing_in_it() -> None:
    p = snippet_error("services:\n  empty: {description: nothing}\n")
    assert_problem(
        p, at(2, 10), "services.empty", "a service needs tcp, udp, icmp, icmpv6 or include"
    )


def test_empty_service_is_reported_even_after_unrelated_errors() -> None:
    text = BASE.replace("office", "Office") + "services:\n  empty: {description: nothing}\n"
    found = errors(text)
    assert [p.field for p in found] == ["site.name", "services.empty"]
    assert found[1].message == "a service needs tcp, udp, icmp, icmpv6 or include"


# -- rules -------------------------------------------------------------------------------


def test_unknown_service_in_a_rule_suggests_one() -> None:
    p = snippet_error(
        """\
        rules:
          - from: lan
            to: wan
            service: [dns, htps]
            action: accept
        """
    )
    assert_problem(p, at(4, 20), "rules[0].service[1]", "unknown service 'htps'")
    assert p.message.endswith("; did you mean 'https'?")


def test_unknown_zone_in_a_rule_the_issue_example(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(BAD / "unknown-zone.yaml", tmp_path / "policy.yaml")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PolicyValidationError) as info:
        load_policy("policy.yaml")
    (p,) = info.value.problems
    assert str(p).startswith(
        "policy.yaml:14:9: rules[2].to: unknown zone 'guests' (zones: lan, guest, wan)"
    )
    assert p.message.endswith("; did you mean 'guest'?")


def test_unknown_zone_lists_groups_too() -> None:
    p = snippet_error(
        "address_groups: {printers: [192.0.2.50]}\n"
        "rules:\n"
        "  - {from: lan, to: guests, action: drop}\n"
    )
    assert_problem(
        p,
        at(3, 21),
        "rules[0].to",
        "unknown zone 'guests' (zones: lan, guest, wan; groups: printers)",
    )


def test_mixing_zones_and_addresses_in_one_list() -> None:
    p = snippet_error(
        """\
        address_groups: {printers: [192.0.2.50]}
        rules:
          - from: [lan, printers]
            to: wan
            action: drop
        """
    )
    assert_problem(p, at(3, 11), "rules[0].from", "mixes zones and addresses; write {zone: [...]")


@pytest.mark.parametrize("word", ["any", "self"])
def test_any_or_self_inside_a_list(word: str) -> None:
    p = snippet_error(f"rules:\n  - from: [lan, {word}]\n    to: wan\n    action: accept\n")
    assert_problem(p, at(2, 11), "rules[0].from", "'any' and 'self' stand alone, not in a list")


def test_rule_from_self_to_self() -> None:
    p = snippet_error("rules:\n  - {from: self, to: self, action: accept}\n")
    assert_problem(p, at(2, 22), "rules[0].to", "a rule cannot go from self to self")


def test_unknown_action() -> None:
    p = snippet_error("rules:\n  - from: lan\n    to: wan\n    action: allow\n")
    assert_problem(
        p, at(4, 13), "rules[0].action", "unknown action 'allow' (allowed: accept, drop, reject)"
    )


def test_rule_without_action() -> None:
    p = snippet_error("rules:\n  - from: lan\n    to: wan\n")
    assert_problem(p, at(2, 5), "rules[0]", "missing required key 'action'")


def test_duplicate_rule_names() -> None:
    p = snippet_error(
        """\
        rules:
          - {name: out, from: lan, to: wan, action: accept}
          - {name: out, from: guest, to: wan, action: accept}
        """
    )
    assert_problem(p, at(3, 12), "rules[1].name", "rule name 'out' is used twice")


def test_bad_rule_name_does_not_hide_the_rules_other_mistakes() -> None:
    found = errors(BASE + "rules:\n  - {name: Lan Out, from: lan, to: wna, action: accept}\n")
    assert [p.field for p in found] == ["rules[0].name", "rules[0].to"]
    assert "invalid rule name 'Lan Out'" in found[0].message
    assert "unknown zone 'wna'" in found[1].message


@pytest.mark.parametrize(
    ("limit", "column", "field", "message"),
    [
        ("10/sec", 50, "rules[0].limit.rate", "expected a rate like 10/second, got '10/sec'"),
        ("{rate: 0/second}", 57, "rules[0].limit.rate", "got '0/second'"),
        ("{rate: 5/minute, burst: 0}", 74, "rules[0].limit.burst", "whole number of packets >= 1"),
        ("{burst: 5}", 50, "rules[0].limit", "missing required key 'rate'"),
    ],
)
def test_bad_limit(limit: str, column: int, field: str, message: str) -> None:
    p = snippet_error(f"rules:\n  - {{from: wan, to: self, action: accept, limit: {limit}}}\n")
    assert_problem(p, at(2, column), field, message)


def test_log_rate_cannot_be_combined_with_limit() -> None:
    p = snippet_error(
        """\
        rules:
          - from: wan
            to: self
            service: ping
            action: accept
            limit: 10/second
            log: {prefix: ping, rate: 5/minute}
        """
    )
    assert_problem(p, at(7, 31), "rules[0].log.rate", "log.rate cannot be combined with limit")


@pytest.mark.parametrize("prefix", ["'it\"s'", '"it\'s"', '"a\\\\b"', '""', "x" * 65])
def test_bad_log_prefix(prefix: str) -> None:
    p = snippet_error(
        f"rules:\n  - from: lan\n    to: wan\n    action: drop\n    log: {{prefix: {prefix}}}\n"
    )
    assert_problem(
        p,
        at(5, 19),
        "rules[0].log.prefix",
        "log prefix: 1-64 letters, digits, spaces or _:.,=/@#+-",
    )


def test_unknown_log_level() -> None:
    p = snippet_error("rules:\n  - {from: lan, to: wan, action: drop, log: {level: warning}}\n")
    assert_problem(
        p, at(2, 53), "rules[0].log.level", "unknown log level 'warning' (allowed: emerg"
    )


@pytest.mark.parametrize(
    "comment", ["'say \"hi\" to nft'", "'C:\\temp'", '"tab\\there"', '"bell\\a"']
)
def test_comment_that_could_break_out_of_an_nft_string(comment: str) -> None:
    p = snippet_error(
        f"rules:\n  - from: lan\n    to: wan\n    action: accept\n    comment: {comment}\n"
    )
    assert_problem(
        p,
        at(5, 14),
        "rules[0].comment",
        "must not contain quotes, backslashes or control characters",
    )


def test_comment_too_long() -> None:
    p = snippet_error(f"rules:\n  - {{from: lan, to: wan, action: accept, comment: {'x' * 97}}}\n")
    assert_problem(p, at(2, 51), "rules[0].comment", "too long (97 characters, at most 96)")


def test_unknown_schedule_name() -> None:
    p = snippet_error(
        """\
        schedules:
          office-hours: [{days: weekdays, time: "08:00-18:00"}]
        rules:
          - from: guest
            to: wan
            action: accept
            schedule: ofice-hours
        """
    )
    assert_problem(
        p,
        at(7, 15),
        "rules[0].schedule",
        "unknown schedule 'ofice-hours' (schedules: office-hours)",
    )
    assert p.message.endswith("; did you mean 'office-hours'?")


@pytest.mark.parametrize(
    ("window", "column", "field", "message"),
    [
        (
            "{days: weekdays, time: 25:00-26:00}",
            30,
            "time",
            "'25:00-26:00' is not a valid time of day",
        ),
        ("{days: weekdays, time: 08:00-08:00}", 30, "time", "'08:00-08:00' is an empty window"),
        (
            "{days: [mon, funday], time: 08:00-09:00}",
            20,
            "days[1]",
            "unknown day 'funday' (allowed: mon",
        ),
        ("{days: mon, time: 8-17}", 25, "time", "expected HH:MM-HH:MM, got '8-17'"),
    ],
)
def test_bad_schedule_window(window: str, column: int, field: str, message: str) -> None:
    p = snippet_error(f"schedules:\n  work:\n    - {window}\n")
    assert_problem(p, at(3, column), f"schedules.work[0].{field}", message)


def test_schedule_without_windows() -> None:
    p = snippet_error("schedules:\n  never: []\n")
    assert_problem(p, at(2, 10), "schedules.never", "a schedule needs at least one window")


def test_sexagesimal_time_range_is_read_as_text() -> None:
    loaded = load(BASE + "schedules:\n  evening:\n    - {days: mon, time: 18:00-19:00}\n")
    (schedule,) = loaded.policy.schedules
    assert schedule.windows == (TimeWindow(18 * 60, 19 * 60),)


def test_sexagesimal_single_time_stays_text_not_1080() -> None:
    p = snippet_error("schedules:\n  evening:\n    - {days: mon, time: 18:00}\n")
    assert_problem(p, at(3, 25), "schedules.evening[0].time", "expected HH:MM-HH:MM, got '18:00'")
    loaded = load(BASE + "rules:\n  - {from: lan, to: wan, action: accept, comment: 18:00}\n")
    assert loaded.policy.rules[0].comment == "18:00"


# -- defaults ----------------------------------------------------------------------------


def test_default_for_an_unknown_zone() -> None:
    p = snippet_error("defaults:\n  - {from: lan, to: dmz, action: drop}\n")
    assert_problem(p, at(2, 21), "defaults[0].to", "unknown zone 'dmz' (zones: lan, guest, wan")


def test_duplicate_default_pair() -> None:
    p = snippet_error(
        "defaults:\n"
        "  - {from: lan, to: wan, action: accept}\n"
        "  - {from: lan, to: wan, action: drop}\n"
    )
    assert_problem(
        p, at(3, 5), "defaults[1]", "a default for lan -> wan is already set (defaults[0])"
    )


def test_default_from_self_to_self() -> None:
    p = snippet_error("defaults:\n  - {from: self, to: self, action: drop}\n")
    assert_problem(p, at(2, 5), "defaults[0]", "a default cannot go from self to self")


def test_default_with_a_list_of_zones_is_refused_not_dropped() -> None:
    p = snippet_error("defaults:\n  - {from: [lan, guest], to: wan, action: drop}\n")
    assert_problem(
        p, at(2, 12), "defaults[0].from", "expected one zone name, 'any' or 'self', got a list"
    )


# -- NAT ---------------------------------------------------------------------------------


def test_masquerade_unknown_zone() -> None:
    p = snippet_error("nat:\n  masquerade: [wan0]\n")
    assert_problem(
        p, at(2, 16), "nat.masquerade[0]", "unknown zone 'wan0' (zones: lan, guest, wan)"
    )
    assert p.message.endswith("; did you mean 'wan'?")


def test_port_forward_without_zone_or_masquerade() -> None:
    p = snippet_error("nat:\n  port_forwards:\n    - {port: 443, to: 192.0.2.10}\n")
    assert_problem(
        p, at(3, 7), "nat.port_forwards[0]", "no zone given and no masquerade zone to default to"
    )


PORT_FORWARD = (
    "nat:\n  masquerade: wan\n  port_forwards:\n    - {{port: {port}, to: {to}{extra}}}\n"
)


@pytest.mark.parametrize(
    ("port", "extra", "column", "message"),
    [
        ("8000-8010", ", to_port: 80", 50, "to_port cannot be combined with a port range"),
        ("8000", ", to_port: 80-90", 45, "to_port is one port, got the range '80-90'"),
    ],
)
def test_to_port_and_port_ranges(port: str, extra: str, column: int, message: str) -> None:
    p = snippet_error(PORT_FORWARD.format(port=port, to="192.0.2.10", extra=extra))
    assert_problem(p, at(4, column), "nat.port_forwards[0].to_port", message)


@pytest.mark.parametrize(
    ("target", "shown"),
    [("nas", "'nas'"), ("192.0.2.0/24", "'192.0.2.0/24'"), ("[192.0.2.1]", "[")],
)
def test_bad_port_forward_target(target: str, shown: str) -> None:
    p = snippet_error(PORT_FORWARD.format(port=443, to=target, extra=""))
    assert_problem(
        p, at(4, 23), "nat.port_forwards[0].to", f"expected one inside address, got {shown}"
    )


def test_hairpin_with_unknown_zone() -> None:
    p = snippet_error(PORT_FORWARD.format(port=443, to="192.0.2.10", extra=", hairpin: [lna]"))
    assert_problem(
        p,
        at(4, 45),
        "nat.port_forwards[0].hairpin[0]",
        "unknown zone 'lna' (zones: lan, guest, wan)",
    )


def test_duplicate_port_forward_names() -> None:
    p = snippet_error(
        """\
        nat:
          masquerade: wan
          port_forwards:
            - {name: web, port: 80, to: 192.0.2.10}
            - {name: web, port: 443, to: 192.0.2.10}
        """
    )
    assert_problem(
        p, at(5, 14), "nat.port_forwards[1].name", "port forward name 'web' is used twice"
    )


# -- management --------------------------------------------------------------------------

NO_LAN = "version: 1\nsite: {name: office}\nzones:\n  inside: {interfaces: [eth1]}\n"


def test_management_zones_absent_is_an_error() -> None:
    p = the_error(NO_LAN)
    assert_problem(p, (1, 1), "management", "anti-lockout needs management zones: no zone is named")
    assert "set management.zones (or anti_lockout: false to go without)" in p.message


def test_anti_lockout_false_needs_no_management_zones() -> None:
    loaded = load(NO_LAN + "management: {anti_lockout: false}\n")
    assert loaded.policy.management.anti_lockout is False
    assert loaded.policy.management.zones == ()


def test_management_zones_given_explicitly() -> None:
    loaded = load(NO_LAN + "management: {zones: [inside]}\n")
    assert loaded.policy.management.zones == ("inside",)
    assert loaded.policy.management.tcp_ports == ((22, 22), (443, 443))


def test_management_service_without_tcp_ports() -> None:
    p = snippet_error("management:\n  services: [ssh, ntp]\n")
    assert_problem(
        p,
        at(2, 19),
        "management.services[1]",
        "service 'ntp' has no TCP ports (management access is TCP)",
    )


def test_management_zone_unknown() -> None:
    p = snippet_error("management:\n  zones: mgmt\n")
    assert_problem(p, at(2, 10), "management.zones", "unknown zone 'mgmt' (zones: lan, guest, wan)")


# -- all at once ---------------------------------------------------------------------------


def test_all_errors_are_reported_at_once_in_file_order() -> None:
    path = BAD / "five-mistakes.yaml"
    with pytest.raises(PolicyValidationError) as info:
        load_policy(path)
    found = info.value.problems
    assert [(p.location and (p.location.line, p.location.column), p.field) for p in found] == [
        ((4, 9), "site.name"),
        ((9, 17), "zones.wan.interfaces"),
        ((11, 27), "services.admin-web.tcp[1]"),
        ((16, 14), "rules[0].service"),
        ((21, 13), "rules[1].action"),
    ]
    assert all(p.severity == "error" and p.location and p.location.file == str(path) for p in found)
    assert str(info.value).startswith("5 error(s) in policy:\n  ")
    assert f"{path}:21:13: rules[1].action: unknown action 'permit'" in str(info.value)


def test_valid_policy_with_a_warning_still_loads() -> None:
    loaded = load(
        BASE + "blocklists:\n  bad:\n    files: [bad.txt]\n    zones: [wan]\n",
        read_feed=feeds({"bad.txt": "192.0.2.0/24\njunk line\n"}),
    )
    (w,) = loaded.warnings
    assert w.severity == "warning"
    assert_problem(w, at(3, 13), "blocklists.bad.files[0]", "1 line(s) of bad.txt skipped")
    assert loaded.policy.blocklists[0].entries == 1


EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "policies" / "examples").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_examples_load_without_problems(example: Path) -> None:
    assert len(EXAMPLES) == 4
    loaded = load_policy(example)
    assert loaded.warnings == ()
    assert loaded.policy.rules

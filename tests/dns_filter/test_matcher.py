"""Matcher semantics: subdomains, wildcards, regexes, allow beats block, attribution."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dns_filter.errors import DnsFilterError
from dns_filter.matcher import Match, Matcher, MatcherError


def test_subdomains_of_a_listed_name_are_blocked() -> None:
    m = Matcher()
    m.add_list("ads", ["example.com", "0.0.0.0 tracker.net"])
    assert m.match("example.com") == Match("block", "ads", "example.com")
    assert m.match("a.b.example.com") == Match("block", "ads", "example.com")
    assert m.match("x.tracker.net") == Match("block", "ads", "tracker.net")
    assert m.match("notexample.com") is None
    assert m.match("example.com.evil.org") is None
    assert m.match("com") is None


def test_query_case_and_trailing_dot_are_normalised() -> None:
    m = Matcher()
    m.add_list("ads", ["||Ads.Example.COM^"])
    assert m.match("ADS.example.com.") == Match("block", "ads", "ads.example.com")
    assert m.is_blocked("x.aDs.example.com")
    assert not m.is_blocked("example.com")


def test_wildcard_blocks_subdomains_only() -> None:
    m = Matcher()
    m.add_list("wild", ["*.example.com"])
    assert m.match("example.com") is None
    assert m.match("x.example.com") == Match("block", "wild", "*.example.com")
    assert m.match("a.b.example.com") == Match("block", "wild", "*.example.com")


def test_long_query_names_only_look_up_listable_parents() -> None:
    m = Matcher()
    short = m.add_list("short", ["ip6.arpa", "*.in-addr.arpa"])
    deep = m.add_list("deep", ["a.b.c.d.e.f.example"])
    assert (short.max_labels, deep.max_labels) == (2, 7)
    ptr6 = ".".join("0123456789abcdef0123456789abcdef") + ".ip6.arpa"
    assert m.match(ptr6) == Match("block", "short", "ip6.arpa")
    assert m.match("4.3.2.1.in-addr.arpa") == Match("block", "short", "*.in-addr.arpa")
    assert m.match("x.y.a.b.c.d.e.f.example") == Match("block", "deep", "a.b.c.d.e.f.example")
    assert m.match("b.c.d.e.f.example") is None


def test_longest_listed_name_is_reported() -> None:
    m = Matcher()
    m.add_list("l", ["example.com", "ads.example.com"])
    assert m.match("x.ads.example.com") == Match("block", "l", "ads.example.com")


def test_allow_beats_block_across_lists_and_order() -> None:
    m = Matcher()
    m.add_list("block", ["example.com", "ads.example.net"])
    m.add_list("allow", ["good.example.com", "example.net"], kind="allow")
    assert m.match("good.example.com") == Match("allow", "allow", "good.example.com")
    assert m.match("x.good.example.com") == Match("allow", "allow", "good.example.com")
    assert m.match("bad.example.com") == Match("block", "block", "example.com")
    # An allowed parent wins over a blocked child, as in AdGuard's @@||example.net^.
    assert m.match("ads.example.net") == Match("allow", "allow", "example.net")
    assert m.match("elsewhere.org") is None


def test_exception_rules_inside_a_block_list() -> None:
    m = Matcher()
    m.add_list("adguard", ["||example.com^", "@@||cdn.example.com^", "@@*.static.example.com"])
    assert m.is_blocked("www.example.com")
    assert m.match("img.cdn.example.com") == Match("allow", "adguard", "cdn.example.com")
    assert m.match("static.example.com") == Match("block", "adguard", "example.com")
    assert m.match("a.static.example.com") == Match("allow", "adguard", "*.static.example.com")


def test_allow_list_turns_every_rule_into_an_allow() -> None:
    m = Matcher()
    m.add_list("b", ["||example.org^", "/^ads/"])
    m.add_list("a", ["||x.example.org^", "*.y.example.org", "/^ads\\.keep/"], kind="allow")
    assert m.match("x.example.org").verdict == "allow"  # type: ignore[union-attr]
    assert m.match("z.y.example.org").verdict == "allow"  # type: ignore[union-attr]
    assert m.match("ads.keep.org") == Match("allow", "a", "/^ads\\.keep/")
    assert m.match("ads.other.org") == Match("block", "b", "/^ads/")


def test_regex_rules_and_attribution() -> None:
    m = Matcher()
    m.add_list("first", ["/ads[0-9]+\\./", "/^(tr)\\1ack\\./"])  # the backref is kept apart
    m.add_list("second", ["/ads/", "plain.example"])
    assert m.match("ads42.example.com") == Match("block", "first", "/ads[0-9]+\\./")
    assert m.match("trtrack.example.com") == Match("block", "first", "/^(tr)\\1ack\\./")
    assert m.match("myads.example.com") == Match("block", "second", "/ads/")
    assert m.match("plain.example") == Match("block", "second", "plain.example")
    assert m.match("clean.example.com") is None


def test_index_rules_are_tried_before_regexes() -> None:
    m = Matcher()
    m.add_list("l", ["/example/", "example.com"])
    assert m.match("www.example.com") == Match("block", "l", "example.com")


def test_first_list_wins_among_equal_verdicts() -> None:
    m = Matcher()
    m.add_list("one", ["a.example"])
    m.add_list("two", ["a.example", "b.example"])
    assert m.match("a.example") == Match("block", "one", "a.example")
    assert m.match("b.example") == Match("block", "two", "b.example")


def test_lists_property_summaries_in_order() -> None:
    m = Matcher()
    s1 = m.add_list("one", ["a.example", "bad..name"])
    s2 = m.add_list("two", ["b.example"], kind="allow")
    assert list(m.lists) == ["one", "two"]
    assert m.lists["one"] is s1
    assert m.lists["two"] is s2
    assert (s1.entries, s1.skipped) == (1, 1)
    with pytest.raises(TypeError):
        m.lists["three"] = s1  # type: ignore[index]
    assert m.nbytes > 0


def test_errors() -> None:
    m = Matcher()
    m.add_list("one", ["a.example"])
    with pytest.raises(MatcherError, match="already loaded"):
        m.add_list("one", ["b.example"])
    with pytest.raises(MatcherError, match="kind must be"):
        m.add_list("two", ["b.example"], kind="deny")  # type: ignore[arg-type]
    with pytest.raises(DnsFilterError, match="cannot read list"):
        m.add_list("three", "/nonexistent/list.txt")
    assert list(m.lists) == ["one"]


def test_build_from_files_is_independent_of_an_old_matcher(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text("0.0.0.0 ads.example.com\n")
    old = Matcher.build([("hosts", path, "block")])
    path.write_text("0.0.0.0 other.example.com\n")
    new = Matcher.build([("hosts", str(path), "block")])
    assert old.is_blocked("ads.example.com")
    assert not new.is_blocked("ads.example.com")
    assert new.is_blocked("other.example.com")


def test_empty_matcher_and_odd_queries() -> None:
    m = Matcher()
    assert m.match("example.com") is None
    regex_only = Matcher()
    regex_only.add_list("re", ["/^ads\\./"])
    assert regex_only.match("ads.example.com") == Match("block", "re", "/^ads\\./")
    assert regex_only.match("example.com") is None
    m.add_list("l", ["example.com"])
    for odd in ("", ".", "..", "example..com", "a" * 300, "ünïcode.example.org"):
        assert m.match(odd) is None


def _reference(
    blocked: set[str], wild: set[str], allowed: set[str], qname: str
) -> tuple[str, str] | None:
    """The semantics spelled out with sets, for a single list with exceptions."""
    labels = qname.split(".")
    suffixes = [".".join(labels[i:]) for i in range(len(labels) - 1)]
    for s in suffixes:
        if s in allowed:
            return ("allow", s)
    for s in suffixes:
        if s in blocked:
            return ("block", s)
    for s in suffixes[1:]:
        if s in wild:
            return ("block", "*." + s)
    return None


_label = st.sampled_from(["a", "b", "c", "ads", "x-y"])
_name = st.lists(_label, min_size=2, max_size=5).map(".".join)


@settings(max_examples=300, deadline=None)
@given(
    blocked=st.sets(_name, max_size=12),
    wild=st.sets(_name, max_size=6),
    allowed=st.sets(_name, max_size=6),
    separate_allow_list=st.booleans(),
    queries=st.lists(st.lists(_label, min_size=1, max_size=7).map(".".join), max_size=30),
)
def test_matcher_agrees_with_set_reference(
    blocked: set[str],
    wild: set[str],
    allowed: set[str],
    separate_allow_list: bool,
    queries: list[str],
) -> None:
    m = Matcher()
    lines = [*sorted(blocked), *(f"*.{w}" for w in sorted(wild))]
    if separate_allow_list:
        m.add_list("l", lines)
        m.add_list("ok", sorted(allowed), kind="allow")
    else:
        m.add_list("l", [*lines, *(f"@@||{a}^" for a in allowed)])
    for q in queries:
        found = m.match(q)
        got = None if found is None else (found.verdict, found.rule)
        assert got == _reference(blocked, wild, allowed, q), q


LISTS = [  # (name, kind, lines): big and small lists of both kinds, overlapping on purpose
    ("big-block", "block", ["shared.example", "big.example", "*.wild.example", "deep.a.example"]),
    ("small-block", "block", ["shared.example", "small.example", "a.example", "*.sw.example"]),
    ("small-allow", "allow", ["ok.small.example", "*.wild.example"]),
    ("big-allow", "allow", ["ok.big.example", "fine.shared.example", "*.ok.example"]),
    ("tiny", "block", ["big.example", "x.deep.a.example", "*.ok.example"]),
]
PROBES = [
    "shared.example", "x.shared.example", "fine.shared.example", "big.example", "a.big.example",
    "small.example", "ok.small.example", "ok.big.example", "q.wild.example", "wild.example",
    "deep.a.example", "x.deep.a.example", "y.x.deep.a.example", "z.a.example", "q.sw.example",
    "sw.example", "v.ok.example", "ok.example", "nothing.example", "example", "",
]  # fmt: skip


@pytest.mark.parametrize(
    "enabled",
    [None, {"small-block", "big-allow"}, {"big-block", "tiny"}, {"tiny", "small-allow"}, set()],
)
def test_small_list_shortcut_gives_the_same_answers(
    monkeypatch: pytest.MonkeyPatch, enabled: set[str] | None
) -> None:
    """Small lists share a key set that lets a name skip them all; whatever the split into
    small and big lists, every answer (list order, allow beats block, longest name) is the
    one of looking up every list in turn."""
    import dns_filter.matcher as matcher_module

    def build(small: int) -> Matcher:
        monkeypatch.setattr(matcher_module, "SMALL_LIST", small)
        m = Matcher()
        for name, kind, lines in LISTS:
            # "big" lists get filler names so that a threshold of 10 keeps them big
            filler = [f"f{i}.{name}.filler" for i in range(20)] if name.startswith("big") else []
            m.add_list(name, [*lines, *filler], kind)
        return m

    every_list_looked_up = build(0)  # nothing is small: the plain loop over all lists
    for threshold in (10, 1_000_000):  # big and small lists; every list small
        shortcut = build(threshold)
        for probe in PROBES:
            assert shortcut.match(probe, enabled) == every_list_looked_up.match(probe, enabled), (
                probe,
                threshold,
            )

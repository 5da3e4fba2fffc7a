"""List parsing: every subscribed format, junk accounting, and the fast path agreeing with the
per-line path."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dns_filter.lists import (
    MAX_ERRORS,
    SKIP_COSMETIC,
    SKIP_ENCODING,
    SKIP_IDN,
    SKIP_INVALID,
    SKIP_LINE,
    SKIP_OPTION,
    SKIP_REGEX,
    SKIP_REGEX_LONG,
    SKIP_SINGLE,
    SKIP_URL,
    ListCollector,
    ListError,
    ListSummary,
    normalise_name,
    parse_list,
)

STEVENBLACK_HEAD = """\
# Title: StevenBlack/hosts
#
# This hosts file is a merged collection of hosts from reputable sources,
# with a dash of crowd sourcing via GitHub
#
# Date: 25 November 2026 18:42:50 (UTC)
# Number of unique domains: 3
# ===============================================================

127.0.0.1 localhost
127.0.0.1 localhost.localdomain
127.0.0.1 local
255.255.255.255 broadcasthost
::1 localhost
::1 ip6-localhost
::1 ip6-loopback
fe80::1%lo0 localhost
ff00::0 ip6-localnet
ff00::0 ip6-mcastprefix
ff02::1 ip6-allnodes
ff02::2 ip6-allrouters
ff02::3 ip6-allhosts
0.0.0.0 0.0.0.0

# Custom host records are listed here.

# End of custom host records.
# Start StevenBlack

#=====================================
# Title: Hosts contributed by Steven Black
# http://stevenblack.com

0.0.0.0 ck.getcookiestxt.com
0.0.0.0 eu1.clevertap-prod.com
0.0.0.0 wizhumpgyros.com
"""

ADGUARD_DNS = """\
! Title: AdGuard DNS filter
! Description: Filter composed of several other filters (AdGuard Base filter, Social media
! Homepage: https://github.com/AdguardTeam/AdGuardSDNSFilter
! Last modified: 2026-11-25T10:08:48.482Z
!
! Compiled by @adguard/hostlist-compiler v1.0.39
!
||0.r.msn.com^
||0024ad98dd.com^
@@||app.adjust.com^|
@@||dl.google.com^$important
||adservice.google.*^
||samsungads.com^$third-party
/^ad([sxv]?[0-9]*|system)[_.-]([^.[:space:]]+\\.){1,}|[_.-]ad([sxv]?[0-9]*|system)[_.-]/
"""

EASYLIST = """\
[Adblock Plus 2.0]
! Version: 202611251234
! Title: EasyList
&ad_box_
-ad-banner.
.com/ads/
|https://ads.example.net/
||adnxs.com^$third-party
||pagead2.googlesyndication.com^$script,third-party
||doubleclick.net^$important
##.ad-banner
example.com##.sponsored
example.org#@#.ad
example.net#?#div:has(> .ad)
example.com$$script[data-src="ads"]
@@||cdn.example.org^$document
"""

OISD = """\
# Title: oisd small
# Description: Block. Don't break.
# Version: 202611250101
# Syntax: Domains (including possible subdomains)
# License: https://github.com/sjhgvr/oisd/blob/main/LICENSE
# Contact: contact@oisd.nl
0-02.net
000free.us
00cd0f4aa5.com
"""


def parse(text: str) -> tuple[ListSummary, ListCollector]:
    sink = ListCollector()
    summary = parse_list(text.splitlines(), sink)
    return summary, sink


def test_stevenblack_hosts_header_is_ignored_and_entries_kept() -> None:
    summary, sink = parse(STEVENBLACK_HEAD)
    assert sink.blocked == ["ck.getcookiestxt.com", "eu1.clevertap-prod.com", "wizhumpgyros.com"]
    assert summary.format == "hosts"
    assert summary.entries == 3
    assert summary.skipped == 0
    assert summary.errors == []
    assert summary.lines == len(STEVENBLACK_HEAD.splitlines())


def test_hosts_variants() -> None:
    summary, sink = parse(
        "127.0.0.1 a.com b.com\t c.com\n"
        "0.0.0.0 ads.example.com # ad server\n"
        "0.0.0.0 Tracker.Example.COM.\n"
        "::1 v6.example.com\n"
        "0.0.0.0 bad..name good.example.org\n"
        "0.0.0.0\n"
    )
    assert sink.blocked == [
        "a.com",
        "b.com",
        "c.com",
        "ads.example.com",
        "tracker.example.com",
        "v6.example.com",
        "good.example.org",
        # A lone "0.0.0.0" is a plain line, and like any IPv4 literal a harmless "name" (the
        # fast path accepts it too; nothing ever asks for it).
        "0.0.0.0",
    ]
    assert summary.skipped == 1
    assert summary.errors == [(5, f"{SKIP_INVALID}: bad..name")]
    assert summary.format == "mixed"


def test_plain_domain_list_oisd_style() -> None:
    summary, sink = parse(OISD + "example.com # trailing comment\n\nsingle\n")
    assert sink.blocked == ["0-02.net", "000free.us", "00cd0f4aa5.com", "example.com"]
    assert summary.format == "domains"
    assert summary.errors == [(12, f"{SKIP_SINGLE}: single")]


def test_adguard_dns_filter() -> None:
    summary, sink = parse(ADGUARD_DNS)
    assert sink.blocked == ["0.r.msn.com", "0024ad98dd.com", "samsungads.com"]
    assert sink.allowed == ["app.adjust.com", "dl.google.com"]
    # RE2's [:space:] is spelled out: Python would silently read it as another set.
    assert sink.block_regexes == [
        r"^ad([sxv]?[0-9]*|system)[_.-]([^.\s]+\.){1,}|[_.-]ad([sxv]?[0-9]*|system)[_.-]"
    ]
    assert summary.format == "adblock"
    assert summary.reasons == {SKIP_URL: 1}
    assert summary.errors == [(12, f"{SKIP_URL}: ||adservice.google.*^")]


def test_regex_with_required_separator_is_not_a_nested_quantifier() -> None:
    summary, sink = parse("/^ad([sxv]?[0-9]*|system)[_.-]([^.]+\\.){1,}/\n/(\\w+\\s?)+$/\n")
    assert sink.block_regexes == [r"^ad([sxv]?[0-9]*|system)[_.-]([^.]+\.){1,}"]
    assert summary.reasons == {SKIP_REGEX: 1}


def test_easylist_network_and_cosmetic_rules() -> None:
    summary, sink = parse(EASYLIST)
    assert sink.blocked == ["adnxs.com", "doubleclick.net"]
    assert sink.allowed == ["cdn.example.org"]
    assert summary.reasons == {
        SKIP_URL: 3,  # &ad_box_, .com/ads/, |https://...
        SKIP_SINGLE: 1,  # -ad-banner. (a URL substring rule)
        SKIP_OPTION: 1,  # $script
        SKIP_COSMETIC: 5,
    }
    assert summary.skipped == 10
    lines = [line for line, _ in summary.errors]
    assert lines == [4, 5, 6, 7, 9, 11, 12, 13, 14, 15]
    assert all(reason for _, reason in summary.errors)


def test_summary_str_is_one_line() -> None:
    summary, _ = parse("a.example\ncom\nx..y\n")
    assert str(summary) == (
        f"domains, 3 lines, 1 entries, 2 skipped (1 {SKIP_SINGLE}, 1 {SKIP_INVALID})"
    )


def test_generic_cosmetic_line_is_a_comment_outside_adblock_lists() -> None:
    summary, _ = parse("##.banner\nexample.com\n")
    assert summary.skipped == 0
    summary, _ = parse("! adblock comment\n##.banner\n")
    assert summary.reasons == {SKIP_COSMETIC: 1}


def test_wildcards() -> None:
    summary, sink = parse("*.example.com\n||*.cdn.example.net^\n*.com\n*.*.x.org\n@@*.ok.org\n")
    assert sink.blocked_suffixes == ["example.com", "cdn.example.net"]
    assert sink.allowed_suffixes == ["ok.org"]
    assert sink.blocked == []
    assert summary.reasons == {SKIP_SINGLE: 1, SKIP_URL: 1}


def test_regex_rules() -> None:
    long = "/" + "a" * 513 + "/"
    text = "\n".join(
        [
            r"/ads[0-9]+\./",
            r"@@/^safe\./",
            r"/^track\./$important",
            r"/[/",
            r"/((a+)+)+$/",
            long,
            r"/x/$script",
            "/ads/banner.js",
        ]
    )
    summary, sink = parse(text)
    assert sink.block_regexes == [r"ads[0-9]+\.", r"^track\."]
    assert sink.allow_regexes == [r"^safe\."]
    assert summary.reasons == {SKIP_REGEX: 2, SKIP_REGEX_LONG: 1, SKIP_OPTION: 1, SKIP_URL: 1}
    assert summary.errors[0][0] == 4
    assert "unterminated character set" in summary.errors[0][1]
    assert "nested quantifier" in summary.errors[1][1]


def test_regex_warnings_are_refused_not_raised() -> None:
    # "[[" gives a FutureWarning (possible nested set); pytest turns warnings into errors.
    summary, sink = parse("/[[a]/\n")
    assert sink.block_regexes == []
    assert summary.reasons == {SKIP_REGEX: 1}


def test_idn_names_become_punycode() -> None:
    summary, sink = parse("bücher.example\n0.0.0.0 пример.рф\n||münchen.de^\nxn--80ak6aa92e.com\n")
    assert sink.blocked == [
        "xn--bcher-kva.example",
        "xn--e1afmkfd.xn--p1ai",
        "xn--mnchen-3ya.de",
        "xn--80ak6aa92e.com",
    ]
    assert summary.skipped == 0


def test_bad_idn_and_bad_names_are_counted() -> None:
    summary, _ = parse("a" * 64 + ".com\nbü" + "x" * 70 + ".de\n" + ("a." * 127) + "com\nx_y.com\n")
    assert summary.entries == 1  # x_y.com: underscores occur in real lists
    assert summary.reasons == {SKIP_INVALID: 2, SKIP_IDN: 1}


def test_unrecognised_lines_and_headers() -> None:
    summary, _ = parse("[Adblock Plus 2.0]\n[random section]\nfoo bar baz\n\n   \n! c\n# c\n")
    assert summary.reasons == {SKIP_LINE: 2}
    assert summary.lines == 7


def test_errors_are_capped_but_counted() -> None:
    summary, _ = parse("\n".join(["bad..name"] * (MAX_ERRORS + 50)))
    assert summary.skipped == MAX_ERRORS + 50
    assert len(summary.errors) == MAX_ERRORS
    assert summary.errors[-1][0] == MAX_ERRORS


def test_bytes_lines_and_invalid_utf8() -> None:
    sink = ListCollector()
    summary = parse_list([b"ads.example.com\n", b"\xff\xfe.com\n", b"\xef\xbb\xbfx.org"], sink)
    assert sink.blocked == ["ads.example.com", "x.org"]
    assert summary.errors == [(2, SKIP_ENCODING)]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Example.COM.", ("example.com", "")),
        ("a.b", ("a.b", "")),
        ("com", ("", SKIP_SINGLE)),
        ("", ("", SKIP_INVALID)),
        (".", ("", SKIP_INVALID)),
        ("a..b", ("", SKIP_INVALID)),
        ("a b.com", ("", SKIP_INVALID)),
        ("_dmarc.example.com", ("_dmarc.example.com", "")),
        ("ÄÖ.de", ("xn--4ca0b.de", "")),
        ("x" * 63 + ".com", ("x" * 63 + ".com", "")),
        ("x" * 64 + ".com", ("", SKIP_INVALID)),
    ],
)
def test_normalise_name(raw: str, expected: tuple[str, str]) -> None:
    assert normalise_name(raw) == expected


def test_missing_file_raises_list_error(tmp_path: Path) -> None:
    with pytest.raises(ListError, match="cannot read list"):
        parse_list(tmp_path / "nope.txt", ListCollector())


def test_file_fast_path_and_edge_layouts(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    names = [f"host{i}.example{i % 13}.com" for i in range(100_000)]
    path.write_bytes(("\r\n".join(names)).encode())  # CRLF, no final newline
    sink = ListCollector()
    summary = parse_list(path, sink)
    assert sink.blocked == names
    assert (summary.entries, summary.lines, summary.skipped) == (100_000, 100_000, 0)
    assert summary.format == "domains"

    hosts = tmp_path / "hosts"
    hosts.write_bytes(
        b"\xef\xbb\xbf"
        + STEVENBLACK_HEAD.encode()
        + b"".join(b"0.0.0.0 " + n.encode() + b"\n" for n in names)
    )
    sink = ListCollector()
    summary = parse_list(str(hosts), sink)
    assert sink.blocked[3:] == names
    assert summary.format == "hosts"
    assert summary.skipped == 0


def test_fast_path_block_with_one_bad_line_reports_its_line_number(tmp_path: Path) -> None:
    names = [f"n{i}.example.com" for i in range(200_000)]
    names[150_000] = "Bad..Name"
    path = tmp_path / "list.txt"
    path.write_text("\n".join(names) + "\n")
    summary = parse_list(path, ListCollector())
    assert summary.errors == [(150_001, f"{SKIP_INVALID}: Bad..Name")]
    assert summary.entries == 199_999


def test_huge_line_without_newline(tmp_path: Path) -> None:
    path = tmp_path / "junk"
    path.write_bytes(b"a" * (3 << 20))
    summary = parse_list(path, ListCollector())
    assert summary.entries == 0
    assert summary.skipped >= 1


# tmp_path is shared by the examples of one test; each example overwrites its own file.
_TMP_PATH_OK = [HealthCheck.function_scoped_fixture]

# Lines built from the characters that matter to the parser, so that hypothesis reaches the
# interesting branches (hosts, adblock, comments, dots, case, IDN) rather than random junk.
_line = st.text(alphabet="ab.-_|^$@/#*!0 \t:Aé[]", max_size=24) | st.sampled_from(
    [
        "0.0.0.0 ads.example.com",
        "127.0.0.1 localhost",
        "||x.org^",
        "@@||y.org^$important",
        "*.w.net",
        "/a+b/",
        "a.b.",
        "ip6-x.y",
        "0.0.0.0 0.0.0.0",
        "0.0.0.0 localhost.localdomain",
    ]
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lines=st.lists(_line, max_size=40),
    prefix=st.sampled_from(["", "0.0.0.0 ", "127.0.0.1 ", "0.0.0.0\t", "||"]),
    newline=st.sampled_from(["\n", "\r\n"]),
)
def test_fast_path_agrees_with_line_path(
    tmp_path: Path, lines: list[str], prefix: str, newline: str
) -> None:
    suffix = "^" if prefix == "||" else ""
    lines = [prefix + line + suffix for line in lines]
    path = tmp_path / "l.txt"
    path.write_bytes("".join(line + newline for line in lines).encode())
    via_file, via_lines = ListCollector(), ListCollector()
    file_summary = parse_list(path, via_file)
    line_summary = parse_list(lines, via_lines)
    assert via_file == via_lines
    assert file_summary == line_summary


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300))
def test_parse_list_never_raises_on_text(text: str) -> None:
    summary = parse_list(text.splitlines(), ListCollector())
    assert summary.entries + summary.skipped >= 0
    assert len(summary.errors) <= MAX_ERRORS


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=400))
def test_parse_list_never_raises_on_bytes(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "b.txt"
    path.write_bytes(data)
    summary = parse_list(path, ListCollector())
    assert summary.lines >= 0

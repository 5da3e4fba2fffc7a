"""Tests for policies.feeds with small samples of the real feed formats."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.feeds import MAX_SKIPPED_REASONS, FeedData, load_feed, parse_feed
from policies.intervals import Interval, format_elements, merge


def cidrs(data: FeedData) -> tuple[list[str], list[str]]:
    """The feed as nft element text, the easiest form to eyeball in assertions."""
    return format_elements(4, data.v4), format_elements(6, data.v6)


def iv(text: str) -> Interval:
    net = ipaddress.ip_network(text)
    return int(net.network_address), int(net.broadcast_address)


FIREHOL_NETSET = """\
#
# firehol_level1
#
# ipv4 hash:net ipset
#
# A firewall blacklist composed from IP lists, providing
# maximum protection with minimum false positives.
#
# Source URL: http://iplists.firehol.org/?ipset=firehol_level1
#
# This File Date      : 26 Nov 2024 14:00:00 UTC
# Entries             : 5 subnets, 65792 unique IPs
#
0.0.0.0/8
1.10.16.0/20
1.19.0.0/16
1.10.32.0/20   # adjacent to 1.10.16.0/20 -> merges
5.188.10.0/23
223.254.0.0/16
"""


def test_firehol_netset() -> None:
    data = parse_feed(FIREHOL_NETSET)
    assert cidrs(data) == (
        ["0.0.0.0/8", "1.10.16.0-1.10.47.255", "1.19.0.0/16", "5.188.10.0/23", "223.254.0.0/16"],
        [],
    )
    assert data.entries == 6
    assert data.skipped == []
    assert data.skipped_count == 0


SPAMHAUS_DROP = """\
; Spamhaus DROP List 2024/11/26 - (c) 2024 The Spamhaus Project SLU
; https://www.spamhaus.org/drop/drop.txt
; Last-Modified: Tue, 26 Nov 2024 10:00:00 GMT
; Expires: Tue, 26 Nov 2024 11:00:00 GMT
1.10.16.0/20 ; SBL256894
1.19.0.0/16 ; SBL434604
2.57.122.0/24 ; SBL636050
5.42.92.0/24 ; SBL659251
"""

SPAMHAUS_DROPV6 = """\
; Spamhaus DROPv6 List 2024/11/26 - (c) 2024 The Spamhaus Project SLU
2001:67c:21ec::/48 ; SBL593522
2a06:5280::/29 ; SBL532346
2a06:5280::/30 ; SBL532346 (contained, merges away)
"""


def test_spamhaus_drop_text() -> None:
    data = parse_feed(SPAMHAUS_DROP + SPAMHAUS_DROPV6)
    assert cidrs(data) == (
        ["1.10.16.0/20", "1.19.0.0/16", "2.57.122.0/24", "5.42.92.0/24"],
        ["2001:67c:21ec::/48", "2a06:5280::/29"],
    )
    assert data.entries == 7
    assert data.skipped_count == 0


SPAMHAUS_JSON = """\
{"cidr":"1.10.16.0/20","sblid":"SBL256894","rir":"apnic"}
{"cidr":"1.19.0.0/16","sblid":"SBL434604","rir":"apnic"}
{"cidr":"2.57.122.0/24","sblid":"SBL636050","rir":"ripencc"}
{"cidr":"2a06:5280::/29","sblid":"SBL532346","rir":"ripencc"}
{"type":"metadata","timestamp":1732615200,"size":4,"records":4,"copyright":"(c) Spamhaus; #1"}
"""


def test_spamhaus_json_lines_with_metadata() -> None:
    data = parse_feed(SPAMHAUS_JSON)
    assert cidrs(data) == (
        ["1.10.16.0/20", "1.19.0.0/16", "2.57.122.0/24"],
        ["2a06:5280::/29"],
    )
    assert data.entries == 4  # the metadata line is not an entry ...
    assert data.skipped_count == 0  # ... and not an error


def test_json_lines_bad_records_are_skipped() -> None:
    text = "\n".join(
        [
            '{"cidr":"1.10.16.0/20"}',
            '{"cidr": 42}',
            '{"cidr":"999.0.0.0/8","sblid":"SBL1"}',
            '{"cidr":"1.2.3.0/24"',  # truncated download
            "{}",  # no cidr key: metadata-like, ignored
            '{"cidr":"2.2.2.0/24 ; x"}',  # JSON values are not comment-stripped
        ]
    )
    data = parse_feed(text)
    assert data.entries == 1
    assert data.skipped == [
        (2, "JSON 'cidr' value is not a string"),
        (3, "'999.0.0.0' is not an IPv4 or IPv6 address"),
        (4, "line starts with '{' but is not valid JSON"),
        (6, "prefix length '24 ; x' is not a decimal number"),
    ]


def test_ranges_hosts_and_mixed_formats() -> None:
    text = (
        "# mixed hand-made list\n"
        "192.0.2.10-192.0.2.20\n"
        "192.0.2.21\n"
        "198.51.100.1 - 198.51.100.3 ; comment\n"
        "  203.0.113.7\t# trailing comment, leading whitespace\n"
        "2001:db8::1\n"
        "2001:db8::2-2001:db8::3\n"
        '{"cidr":"10.0.0.0/8","sblid":"SBL1"}\n'
    )
    data = parse_feed(text)
    assert cidrs(data) == (
        ["10.0.0.0/8", "192.0.2.10-192.0.2.21", "198.51.100.1-198.51.100.3", "203.0.113.7"],
        ["2001:db8::1-2001:db8::3"],
    )
    assert data.entries == 7


def test_crlf_and_bom() -> None:
    text = "\ufeff# header\r\n1.10.16.0/20 ; SBL256894\r\n\r\n2001:db8::/32\r\n192.0.2.1\r\n"
    data = parse_feed(text)
    assert cidrs(data) == (["1.10.16.0/20", "192.0.2.1"], ["2001:db8::/32"])
    assert data.entries == 3
    assert data.skipped == []


def test_bom_before_first_address() -> None:
    data = parse_feed("\ufeff192.0.2.1\n")
    assert data.entries == 1
    assert data.skipped == []


def test_junk_lines_are_counted_with_line_numbers() -> None:
    text = (
        "# header\n"  # 1
        "1.10.16.0/20\n"  # 2
        "<html><body>502 Bad Gateway</body></html>\n"  # 3
        "\n"  # 4
        "300.1.2.3\n"  # 5
        "192.0.2.0/33 # typo\n"  # 6
        "192.0.2.9-192.0.2.1\n"  # 7
        "1.2\n"  # 8
        "5.188.10.0/23\r\n"  # 9
        "[1, 2]\n"  # 10
        '{"cidr": "2001:db8::/32"}\n'  # 11
        "[1, 2]"  # 12, no final newline
    )
    data = parse_feed(text)
    assert cidrs(data) == (["1.10.16.0/20", "5.188.10.0/23"], ["2001:db8::/32"])
    assert data.entries == 3
    assert data.skipped == [
        # Text before the first '/' is taken as the address of a CIDR.
        (3, "'<html><body>502 Bad Gateway<' is not an IPv4 or IPv6 address"),
        (5, "'300.1.2.3' is not an IPv4 or IPv6 address"),
        (6, "prefix length 33 is out of range for IPv4"),
        (7, "range start 192.0.2.9 is after end 192.0.2.1"),
        (8, "'1.2' is not an IPv4 or IPv6 address"),
        (10, "'[1, 2]' is not an IPv4 or IPv6 address"),
        (12, "'[1, 2]' is not an IPv4 or IPv6 address"),
    ]
    assert data.skipped_count == 7


def test_skipped_reasons_are_bounded_but_all_counted() -> None:
    text = "\n".join(["192.0.2.1"] + [f"junk{i}" for i in range(250)] + ["192.0.2.2"])
    data = parse_feed(text)
    assert data.entries == 2
    assert data.skipped_count == 250
    assert len(data.skipped) == MAX_SKIPPED_REASONS
    assert data.skipped[0] == (2, "'junk0' is not an IPv4 or IPv6 address")
    assert data.skipped[-1][0] == MAX_SKIPPED_REASONS + 1
    assert data.v4 == [(iv("192.0.2.1")[0], iv("192.0.2.2")[0])]


def test_deeply_nested_json_does_not_crash() -> None:
    data = parse_feed('{"a":' + "[" * 100_000 + "\n192.0.2.1\n")
    assert data.entries == 1
    assert data.skipped == [(1, "line starts with '{' but is not valid JSON")]


def test_empty_and_comment_only_feeds() -> None:
    for text in ("", "\n\n", "# nothing\n; still nothing\n", "\ufeff"):
        assert parse_feed(text) == FeedData(v4=[], v6=[], entries=0, skipped=[], skipped_count=0)


def test_feed_data_is_frozen() -> None:
    data = parse_feed("192.0.2.1\n")
    with pytest.raises(AttributeError):
        data.entries = 5  # type: ignore[misc]


def test_load_feed_reads_utf8_and_replaces_bad_bytes(tmp_path: Path) -> None:
    path = tmp_path / "drop.txt"
    path.write_bytes(b"\xef\xbb\xbf; header \xff\r\n1.10.16.0/20 ; SBL256894\r\n\xfe\xfe\r\n")
    data = load_feed(path)
    assert cidrs(data) == (["1.10.16.0/20"], [])
    assert data.skipped == [(3, "'\ufffd\ufffd' is not an IPv4 or IPv6 address")]


@given(st.text())
def test_parse_feed_never_raises(text: str) -> None:
    data = parse_feed(text)
    assert data.entries + data.skipped_count <= len(text.splitlines())
    assert len(data.skipped) == min(data.skipped_count, MAX_SKIPPED_REASONS)
    assert merge(data.v4) == data.v4
    assert merge(data.v6) == data.v6


LINE_FORMATS = st.sampled_from(
    [
        "{}",
        "{}/{}",
        "  {}/{}  # comment",
        "{}/{} ; SBL1",
        '{{"cidr":"{}/{}","sblid":"SBL1","rir":"ripencc"}}',
    ]
)


@given(
    st.lists(
        st.tuples(
            st.integers(0, (1 << 32) - 1) | st.integers(0, (1 << 128) - 1),
            st.integers(0, 128),
            LINE_FORMATS,
        ),
        max_size=30,
    ),
    st.sampled_from(["\n", "\r\n"]),
    st.booleans(),
)
def test_generated_feeds_match_ipaddress(
    lines: list[tuple[int, int, str]], newline: str, bom: bool
) -> None:
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    rendered = ["# generated feed", '{"type":"metadata","size":0}']
    for value, prefix, fmt in lines:
        addr = ipaddress.ip_address(value)
        prefix = min(prefix, addr.max_prefixlen)
        nets.append(ipaddress.ip_network((addr, prefix), strict=False))
        if fmt == "{}":  # bare host line
            nets[-1] = ipaddress.ip_network(addr)
        rendered.append(fmt.format(addr, prefix))
    text = ("\ufeff" if bom else "") + newline.join(rendered)
    data = parse_feed(text)
    assert data.entries == len(lines)
    assert data.skipped_count == 0
    v4 = [n for n in nets if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in nets if isinstance(n, ipaddress.IPv6Network)]
    assert data.v4 == merge(iv(str(n)) for n in ipaddress.collapse_addresses(v4))
    assert data.v6 == merge(iv(str(n)) for n in ipaddress.collapse_addresses(v6))

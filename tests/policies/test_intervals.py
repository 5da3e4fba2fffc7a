"""Tests for policies.intervals, cross-checked against the stdlib ipaddress module."""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.intervals import (
    Interval,
    contains,
    format_elements,
    format_interval,
    merge,
    parse_address,
)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

BITS = {4: 32, 6: 128}


def v(text: str) -> int:
    """Integer value of one address, via the stdlib (the test oracle)."""
    return int(ipaddress.ip_address(text))


CROWDED_BASE = {4: v("192.0.2.0"), 6: v("2001:db8::")}


def networks(family: int) -> st.SearchStrategy[IPNetwork]:
    """Networks of one family that often overlap or touch.

    Half are 1-8 address blocks within 64 addresses of a base that is away from
    0.0.0.0 (hypothesis favours small integers, so "anywhere" networks like
    0.0.0.0/3 would otherwise swallow the crowded corner). That makes pairs such as
    .1/32 + .2/32 (adjacent, not one CIDR) common, which is what catches merge bugs;
    measured, ~17% of lists have adjacent blocks vs ~2% for uniform networks.
    """
    bits = BITS[family]
    address = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    crowded = st.tuples(
        st.integers(0, 63).map(lambda offset: CROWDED_BASE[family] + offset),
        st.integers(0, 3).map(lambda k: bits - k),
    )
    anywhere = st.tuples(st.integers(0, (1 << bits) - 1), st.integers(0, bits))
    return st.one_of(crowded, anywhere).map(
        lambda ap: ipaddress.ip_network((address(ap[0]), ap[1]), strict=False)
    )


def oracle_intervals(nets: Iterable[IPNetwork]) -> list[Interval]:
    """Collapse with ipaddress, then join the adjacent blocks it leaves separate."""
    nets = list(nets)
    v4 = [n for n in nets if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in nets if isinstance(n, ipaddress.IPv6Network)]
    collapsed: list[IPNetwork] = [
        *ipaddress.collapse_addresses(v4),
        *ipaddress.collapse_addresses(v6),
    ]
    blocks = sorted((int(n.network_address), int(n.broadcast_address)) for n in collapsed)
    joined: list[Interval] = []
    for start, end in blocks:
        if joined and start <= joined[-1][1] + 1:
            joined[-1] = (joined[-1][0], max(end, joined[-1][1]))
        else:
            joined.append((start, end))
    return joined


# --- parse_address ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "family", "start", "end"),
    [
        ("192.0.2.1", 4, "192.0.2.1", "192.0.2.1"),
        ("2001:db8::1", 6, "2001:db8::1", "2001:db8::1"),
        ("192.0.2.0/24", 4, "192.0.2.0", "192.0.2.255"),
        ("2001:db8::/32", 6, "2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("192.0.2.77/24", 4, "192.0.2.0", "192.0.2.255"),  # host bits normalised
        ("2001:db8::1/64", 6, "2001:db8::", "2001:db8::ffff:ffff:ffff:ffff"),
        ("0.0.0.0/0", 4, "0.0.0.0", "255.255.255.255"),
        ("::/0", 6, "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("10.0.0.5/32", 4, "10.0.0.5", "10.0.0.5"),
        ("10.0.0.0/024", 4, "10.0.0.0", "10.0.0.255"),  # leading zero is still decimal
        ("192.0.2.1-192.0.2.9", 4, "192.0.2.1", "192.0.2.9"),
        ("192.0.2.1 - 192.0.2.9", 4, "192.0.2.1", "192.0.2.9"),
        ("192.0.2.1-192.0.2.1", 4, "192.0.2.1", "192.0.2.1"),
        ("2001:db8::1-2001:db8::ff", 6, "2001:db8::1", "2001:db8::ff"),
        ("  \t198.51.100.0/22 \r\n", 4, "198.51.100.0", "198.51.103.255"),
        ("::ffff:192.0.2.1", 6, "::ffff:192.0.2.1", "::ffff:192.0.2.1"),
    ],
)
def test_parse_address_valid(text: str, family: int, start: str, end: str) -> None:
    assert parse_address(text) == (family, (v(start), v(end)))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("300.1.2.3", "'300.1.2.3' is not an IPv4 or IPv6 address"),
        ("1.2", "'1.2' is not an IPv4 or IPv6 address"),  # inet_aton would accept
        ("1.2.3", "'1.2.3' is not an IPv4 or IPv6 address"),
        ("010.0.0.1", "'010.0.0.1' is not an IPv4 or IPv6 address"),  # octal-looking
        ("0x7f.0.0.1", "'0x7f.0.0.1' is not an IPv4 or IPv6 address"),
        ("2001:db8:::1", "'2001:db8:::1' is not an IPv4 or IPv6 address"),
        ("fe80::1%eth0", "'fe80::1%eth0' is not an IPv4 or IPv6 address"),
        ("example.com", "'example.com' is not an IPv4 or IPv6 address"),
        ("1.2.3.4\x00", "'1.2.3.4\\x00' is not an IPv4 or IPv6 address"),
        ("\ud800", "'\\ud800' is not an IPv4 or IPv6 address"),
        ("300.0.0.0/8", "'300.0.0.0' is not an IPv4 or IPv6 address"),
        ("192.0.2.0/33", "prefix length 33 is out of range for IPv4"),
        ("2001:db8::/129", "prefix length 129 is out of range for IPv6"),
        ("192.0.2.0/" + "9" * 5000, "prefix length 9999999... is out of range for IPv4"),
        ("192.0.2.0/", "missing prefix length after '/' in '192.0.2.0/'"),
        ("192.0.2.0/+24", "prefix length '+24' is not a decimal number"),
        ("192.0.2.0/-1", "prefix length '-1' is not a decimal number"),
        ("192.0.2.0/2_4", "prefix length '2_4' is not a decimal number"),
        ("192.0.2.0/\u0662\u0664", "prefix length '٢٤' is not a decimal number"),
        ("192.0.2.0/²", "prefix length '²' is not a decimal number"),
        ("192.0.2.0/255.255.255.0", "prefix length '255.255.255.0' is not a decimal number"),
        ("192.0.2.0/24/8", "prefix length '24/8' is not a decimal number"),
        ("192.0.2.9-192.0.2.1", "range start 192.0.2.9 is after end 192.0.2.1"),
        ("192.0.2.2-192.0.2.1", "range start 192.0.2.2 is after end 192.0.2.1"),
        ("2001:db8::9-2001:db8::1", "range start 2001:db8::9 is after end 2001:db8::1"),
        ("192.0.2.1-2001:db8::1", "range mixes IPv4 and IPv6"),
        ("2001:db8::1-192.0.2.1", "range mixes IPv4 and IPv6"),
        ("192.0.2.1-", "range '192.0.2.1-' needs an address on both sides of '-'"),
        ("-192.0.2.1", "range '-192.0.2.1' needs an address on both sides of '-'"),
        ("192.0.2.1-192.0.2.x", "'192.0.2.x' is not an IPv4 or IPv6 address"),
        ("1.2.3.4-1.2.3.5-1.2.3.6", "'1.2.3.5-1.2.3.6' is not an IPv4 or IPv6 address"),
        (
            "192.0.2.0/24-192.0.3.0",
            "range '192.0.2.0/24-192.0.3.0' must join two addresses, not networks",
        ),
        ("", "empty address"),
        ("   \t", "empty address"),
    ],
)
def test_parse_address_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_address(text)
    assert str(info.value) == message


def test_parse_address_error_quotes_are_bounded() -> None:
    with pytest.raises(ValueError, match="is not an IPv4 or IPv6 address") as info:
        parse_address("x" * 10_000)
    assert len(str(info.value)) < 100


@given(st.sampled_from([4, 6]).flatmap(networks), st.integers(0, (1 << 128) - 1))
def test_parse_address_cidr_matches_ipaddress(net: IPNetwork, noise: int) -> None:
    # Write the network with random host bits set, as sloppy feeds do.
    sloppy = type(net.network_address)(int(net.network_address) | noise & int(net.hostmask))
    text = f"{sloppy}/{net.prefixlen}"
    assert parse_address(text) == (
        net.version,
        (int(net.network_address), int(net.broadcast_address)),
    )


@given(st.integers(0, (1 << 32) - 1) | st.integers(0, (1 << 128) - 1))
def test_parse_address_host_matches_ipaddress(value: int) -> None:
    addr = ipaddress.IPv4Address(value) if value < 1 << 32 else ipaddress.IPv6Address(value)
    for text in {str(addr), addr.exploded}:
        assert parse_address(text) == (addr.version, (value, value))


@given(st.text(max_size=60))
def test_parse_address_only_raises_value_error(text: str) -> None:
    try:
        family, (start, end) = parse_address(text)
    except ValueError:
        return
    assert family in (4, 6)
    assert 0 <= start <= end < 1 << BITS[family]


# --- merge ----------------------------------------------------------------------


def test_merge_examples() -> None:
    assert merge([]) == []
    assert merge([(5, 9)]) == [(5, 9)]
    assert merge([(10, 20), (0, 3)]) == [(0, 3), (10, 20)]  # sorted
    assert merge([(0, 5), (3, 9)]) == [(0, 9)]  # overlapping
    assert merge([(0, 4), (5, 9)]) == [(0, 9)]  # adjacent
    assert merge([(0, 4), (6, 9)]) == [(0, 4), (6, 9)]  # gap of one address
    assert merge([(0, 100), (10, 20), (30, 40)]) == [(0, 100)]  # contained
    assert merge([(7, 7), (7, 7), (7, 9), (7, 8)]) == [(7, 9)]  # equal starts
    assert merge(iter([(3, 3), (1, 2)])) == [(1, 3)]  # any iterable


@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 20))))
def test_merge_covers_same_points_canonically(raw: list[tuple[int, int]]) -> None:
    ivs = [(s, s + n) for s, n in raw]
    merged = merge(ivs)
    covered = {p for s, e in ivs for p in range(s, e + 1)}
    assert {p for s, e in merged for p in range(s, e + 1)} == covered
    for (_, prev_end), (next_start, _) in itertools.pairwise(merged):
        assert next_start > prev_end + 1  # sorted, disjoint and not adjacent
    assert merge(merged) == merged


def _merge_by_loop(ivs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The obvious one-interval-at-a-time merge, as an oracle for the vectorised one."""
    result: list[tuple[int, int]] = []
    for start, end in sorted(ivs):
        if result and start <= result[-1][1] + 1:
            result[-1] = (result[-1][0], max(result[-1][1], end))
        else:
            result.append((start, end))
    return result


@given(st.lists(st.tuples(st.integers(0, 2**128), st.integers(0, 2**20)), max_size=300))
def test_merge_matches_the_plain_loop(raw: list[tuple[int, int]]) -> None:
    ivs = [(s, s + n) for s, n in raw]
    assert merge(ivs) == _merge_by_loop(ivs)


@pytest.mark.parametrize("family", [4, 6])
@given(data=st.data())
def test_merge_and_format_match_collapse_addresses(family: int, data: st.DataObject) -> None:
    nets = data.draw(st.lists(networks(family), max_size=40))
    merged = merge(parse_address(str(n))[1] for n in nets)
    # Round-trip through the nft text so format_interval is checked too.
    elements = format_elements(family, merged)
    reparsed = [parse_address(e) for e in elements]
    assert all(f == family for f, _ in reparsed)
    assert merge(iv for _, iv in reparsed) == oracle_intervals(nets)
    assert [iv for _, iv in reparsed] == merged


# --- format_interval ------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "start", "end", "text"),
    [
        (4, "192.0.2.1", "192.0.2.1", "192.0.2.1"),
        (4, "192.0.2.0", "192.0.2.255", "192.0.2.0/24"),
        (4, "192.0.2.0", "192.0.2.1", "192.0.2.0/31"),
        (4, "0.0.0.0", "255.255.255.255", "0.0.0.0/0"),
        (4, "192.0.2.1", "192.0.2.2", "192.0.2.1-192.0.2.2"),  # unaligned pair
        (4, "192.0.2.0", "192.0.2.2", "192.0.2.0-192.0.2.2"),  # not a power of two
        (4, "192.0.2.128", "192.0.3.127", "192.0.2.128-192.0.3.127"),
        (6, "2001:db8::1", "2001:db8::1", "2001:db8::1"),
        (6, "2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db8::/32"),
        (6, "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::/0"),
        (6, "2001:0db8:0000::0010", "2001:db8::20", "2001:db8::10-2001:db8::20"),
        (6, "::ffff:192.0.2.0", "::ffff:192.0.2.255", "::ffff:192.0.2.0/120"),
    ],
)
def test_format_interval(family: int, start: str, end: str, text: str) -> None:
    assert format_interval(family, (v(start), v(end))) == text


@pytest.mark.parametrize("family", [4, 6])
@given(data=st.data())
def test_format_interval_round_trips(family: int, data: st.DataObject) -> None:
    top = (1 << BITS[family]) - 1
    start = data.draw(st.integers(0, top) | st.integers(0, 64), label="start")
    # Power-of-two sizes (aligned or not) are where the CIDR-or-range choice matters.
    size = data.draw(
        st.integers(0, BITS[family]).map(lambda k: 1 << k) | st.integers(1, 1000), label="size"
    )
    end = min(start + size - 1, top)
    text = format_interval(family, (start, end))
    assert parse_address(text) == (family, (start, end))
    if "/" in text:
        net = ipaddress.ip_network(text)  # strict: raises if host bits were set
        assert (int(net.network_address), int(net.broadcast_address)) == (start, end)


@pytest.mark.parametrize(
    ("family", "iv"),
    [(5, (0, 0)), (4, (2, 1)), (4, (-1, 3)), (4, (0, 1 << 32)), (6, (0, 1 << 128))],
)
def test_format_interval_rejects_bad_input(family: int, iv: Interval) -> None:
    with pytest.raises(ValueError):
        format_interval(family, iv)


def test_format_elements() -> None:
    ivs = [(v("10.0.0.0"), v("10.255.255.255")), (v("192.0.2.7"), v("192.0.2.7"))]
    assert format_elements(4, ivs) == ["10.0.0.0/8", "192.0.2.7"]
    assert format_elements(6, []) == []


# --- contains -------------------------------------------------------------------


def test_contains_examples() -> None:
    merged = [(10, 20), (30, 30), (40, 50)]
    inside = [10, 15, 20, 30, 40, 50]
    outside = [0, 9, 21, 29, 31, 39, 51, 1 << 40]
    assert all(contains(merged, x) for x in inside)
    assert not any(contains(merged, x) for x in outside)
    assert not contains([], 0)


def test_contains_admin_address_in_block_list() -> None:
    blocked = merge([parse_address("198.51.100.0/24")[1], parse_address("203.0.113.5")[1]])
    assert contains(blocked, parse_address("198.51.100.42")[1][0])
    assert contains(blocked, parse_address("203.0.113.5")[1][0])
    assert not contains(blocked, parse_address("203.0.113.6")[1][0])


@given(
    st.lists(st.tuples(st.integers(0, 300), st.integers(0, 15))),
    st.integers(-5, 330),
)
def test_contains_matches_linear_scan(raw: list[tuple[int, int]], value: int) -> None:
    ivs = [(s, s + n) for s, n in raw]
    assert contains(merge(ivs), value) == any(s <= value <= e for s, e in ivs)

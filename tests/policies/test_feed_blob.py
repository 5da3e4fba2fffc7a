"""The parsed-feed blob: a round trip equals the parse, and damaged blobs are refused."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.feed_blob import MAGIC, decode_feed, encode_feed
from policies.feeds import FeedData, parse_feed

V4_LINE = st.builds(
    lambda a, n: f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}/{n}",
    st.integers(0, 2**32 - 1),
    st.integers(0, 32),
)
V6_LINE = st.builds(lambda a: f"2001:db8::{a:x}/128", st.integers(0, 0xFFFF))
JUNK = st.sampled_from(["# comment", "", "not-an-address", "10.0.0.1/33", "; drop header"])


@given(st.lists(st.one_of(V4_LINE, V6_LINE, JUNK), max_size=80))
def test_round_trip_equals_the_parse(lines: list[str]) -> None:
    parsed = parse_feed("\n".join(lines))
    assert decode_feed(encode_feed(parsed)) == parsed


def test_a_real_feed_round_trips_with_its_skipped_lines() -> None:
    feed = parse_feed("192.0.2.0/24 ; SBL1\n2001:db8::/32\nbogus\n198.51.100.7\n")
    assert feed.skipped_count == 1
    assert decode_feed(encode_feed(feed)) == feed


def _blob(header: dict[str, object], body: bytes) -> bytes:
    return MAGIC + json.dumps(header).encode() + b"\n" + body


def _header(v4: int = 0, v6: int = 0) -> dict[str, object]:
    return {"v4": v4, "v6": v6, "entries": v4 + v6, "skipped_count": 0, "skipped": []}


def _v4(*pairs: tuple[int, int]) -> bytes:
    return b"".join(struct.pack(">II", s, e) for s, e in pairs)


@pytest.mark.parametrize(
    ("blob", "why"),
    [
        (b"EGFEED2\n{}\n", "bad magic"),
        (MAGIC + b"{", "not terminated"),
        (MAGIC + b"{nope\n", "not JSON"),
        (_blob({"v4": 0}, b""), "header fields"),
        (_blob({**_header(), "v4": -1}, b""), "counts"),
        (_blob({**_header(), "skipped": [["1", "x"]]}, b""), "skipped entries"),
        (_blob(_header(v4=2), _v4((10, 20))), "data bytes"),
        (_blob(_header(v4=2), _v4((30, 40), (10, 20))), "not sorted"),
        (_blob(_header(v4=2), _v4((10, 20), (15, 40))), "not sorted"),  # overlapping
        (_blob(_header(v4=2), _v4((10, 20), (21, 40))), "not sorted"),  # adjacent
        (_blob(_header(v4=1), _v4((20, 10))), "ends before"),
    ],
)
def test_damaged_blobs_are_refused_with_a_reason(blob: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        decode_feed(blob)


def test_an_empty_feed_round_trips() -> None:
    empty = FeedData(v4=[], v6=[], entries=0, skipped=[], skipped_count=0)
    assert decode_feed(encode_feed(empty)) == empty

"""A parsed block-list feed as compact bytes, so it can be parsed once and shipped.

Parsing a 100,000-line feed costs about 150 ms of Python on this hardware class, more
on a Pi; doing it on every appliance after every MSP sync is wasted work and blew the
sync agent's 200 ms verify-and-validate budget (issue #8). The MSP's ``msp sign``
parses each feed anyway (it validates the policy before signing), so it publishes the
result next to the text, and the appliance loads these bytes in a few milliseconds.
The signed bundle names the blob by SHA-256 like any other file, so the appliance
trusts it exactly as far as it trusts the feed text.

Layout (big-endian throughout)::

    b"EGFEED1\\n"
    one JSON line: {"v4": n4, "v6": n6, "entries": int, "skipped_count": int,
                    "skipped": [[line, reason], ...]}
    n4 pairs of uint32 (start, end), then n6 pairs of uint128 (start, end)

``decode_feed`` checks the shape and that the intervals are what ``merge`` produces
(sorted, disjoint, not adjacent, in range): a blob that would make nft refuse the set,
or that covers addresses the text does not, is refused here with a reason instead.
"""

from __future__ import annotations

import json
import sys
from array import array
from itertools import pairwise

from policies.feeds import MAX_SKIPPED_REASONS, FeedData
from policies.intervals import Interval

__all__ = ["MAGIC", "decode_feed", "encode_feed"]

MAGIC = b"EGFEED1\n"
_MAX4 = (1 << 32) - 1
_MAX6 = (1 << 128) - 1


def encode_feed(data: FeedData) -> bytes:
    """The bytes ``decode_feed`` turns back into an equal ``FeedData``."""
    header = {
        "v4": len(data.v4),
        "v6": len(data.v6),
        "entries": data.entries,
        "skipped_count": data.skipped_count,
        "skipped": [[line, reason] for line, reason in data.skipped],
    }
    v4 = array("I", [bound for interval in data.v4 for bound in interval])
    if sys.byteorder == "little":
        v4.byteswap()
    v6 = b"".join(bound.to_bytes(16, "big") for interval in data.v6 for bound in interval)
    line = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return MAGIC + line + b"\n" + v4.tobytes() + v6


def decode_feed(blob: bytes) -> FeedData:
    """Parse ``encode_feed`` output; raises ValueError saying what is wrong."""
    if not blob.startswith(MAGIC):
        raise ValueError("not a parsed feed (bad magic)")
    end = blob.find(b"\n", len(MAGIC))
    if end < 0:
        raise ValueError("parsed feed: header line is not terminated")
    try:
        header = json.loads(blob[len(MAGIC) : end])
    except ValueError:
        raise ValueError("parsed feed: header is not JSON") from None
    n4, n6, entries, skipped_count, skipped = _header_fields(header)
    body = memoryview(blob)[end + 1 :]
    if len(body) != n4 * 8 + n6 * 32:
        raise ValueError(f"parsed feed: {len(body)} data bytes, header says {n4 * 8 + n6 * 32}")
    v4_bounds = array("I")
    if v4_bounds.itemsize != 4:  # pragma: no cover - 4 on every platform we ship on
        raise ValueError("parsed feed: this platform has no 32-bit array type")
    v4_bounds.frombytes(body[: n4 * 8])
    if sys.byteorder == "little":
        v4_bounds.byteswap()
    bounds4 = iter(v4_bounds.tolist())
    v4 = list(zip(bounds4, bounds4, strict=True))
    raw6 = body[n4 * 8 :]
    bounds6 = iter([int.from_bytes(raw6[i : i + 16], "big") for i in range(0, len(raw6), 16)])
    v6 = list(zip(bounds6, bounds6, strict=True))
    _check_canonical(v4, _MAX4, "IPv4")
    _check_canonical(v6, _MAX6, "IPv6")
    return FeedData(v4=v4, v6=v6, entries=entries, skipped=skipped, skipped_count=skipped_count)


def _header_fields(header: object) -> tuple[int, int, int, int, list[tuple[int, str]]]:
    if not isinstance(header, dict) or set(header) != {
        "v4", "v6", "entries", "skipped_count", "skipped",
    }:  # fmt: skip
        raise ValueError("parsed feed: header fields are not v4, v6, entries, skipped*")
    counts = [header[k] for k in ("v4", "v6", "entries", "skipped_count")]
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
        raise ValueError("parsed feed: counts must be integers >= 0")
    raw_skipped = header["skipped"]
    if not isinstance(raw_skipped, list) or len(raw_skipped) > MAX_SKIPPED_REASONS:
        raise ValueError(f"parsed feed: skipped must be a list of at most {MAX_SKIPPED_REASONS}")
    skipped: list[tuple[int, str]] = []
    for item in raw_skipped:
        if not (
            isinstance(item, list)
            and len(item) == 2
            and isinstance(item[0], int)
            and isinstance(item[1], str)
        ):
            raise ValueError("parsed feed: skipped entries must be [line, reason]")
        skipped.append((item[0], item[1]))
    return counts[0], counts[1], counts[2], counts[3], skipped


def _check_canonical(intervals: list[Interval], maximum: int, family: str) -> None:
    """Sorted, disjoint, non-adjacent, each start <= end <= maximum: ``merge``'s output.

    One plain loop: on CPython 3.11 it beats map/accumulate tricks over 100k pairs.
    """
    if not intervals:
        return
    if intervals[-1][1] > maximum:
        raise ValueError(f"parsed feed: {family} interval beyond the address space")
    for (start, end), (next_start, _) in pairwise(intervals):
        if start > end or next_start <= end + 1:
            raise ValueError(f"parsed feed: {family} intervals are not sorted and merged")
    if intervals[-1][0] > intervals[-1][1]:
        raise ValueError(f"parsed feed: {family} interval ends before it starts")

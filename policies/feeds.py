"""Parse IP block-list feeds into merged nftables intervals.

People subscribe to whatever list they trust, so the format is detected line by line
instead of per file; one parser copes with concatenated or hand-edited lists:

* FireHOL netsets and plain lists: one host, CIDR or ``a-b`` range per line, ``#``
  comment lines and trailing ``# comment``.
* Spamhaus DROP/EDROP text: ``1.10.16.0/20 ; SBL256894`` with ``;`` comment lines.
* Spamhaus JSON-lines DROP: ``{"cidr": "1.10.16.0/20", "sblid": ..., "rir": ...}``;
  objects without a ``cidr`` key (the trailing ``{"type": "metadata", ...}``) are
  metadata and neither entries nor errors.

A bad line never aborts the parse: a feed update with one corrupt line should still
block the other 99,999 networks. Bad lines are reported in ``skipped`` (bounded, so
a feed that turns out to be an HTML error page cannot balloon memory) and counted in
``skipped_count``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from policies.intervals import Interval, merge, parse_address

__all__ = ["MAX_SKIPPED_REASONS", "FeedData", "load_feed", "parse_feed"]

MAX_SKIPPED_REASONS = 100
"""How many ``(line, reason)`` pairs :class:`FeedData` keeps; all are counted."""

_BOM = "\ufeff"


@dataclass(frozen=True, slots=True)
class FeedData:
    """A parsed feed: merged intervals per family plus what could not be read."""

    v4: list[Interval]
    """Merged IPv4 intervals, ready for :func:`policies.intervals.format_elements`."""
    v6: list[Interval]
    """Merged IPv6 intervals."""
    entries: int
    """Valid address lines read (before merging)."""
    skipped: list[tuple[int, str]]
    """``(1-based line number, reason)`` for the first bad lines only."""
    skipped_count: int
    """Total number of bad lines, including those not kept in ``skipped``."""


def _json_cidr(line: str) -> str | None:
    """Return the ``cidr`` of a JSON-lines DROP record, or None for metadata.

    Raises ValueError with a short reason for lines that are not usable JSON.
    """
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        # RecursionError: absurdly nested input must not crash the parser.
        raise ValueError("line starts with '{' but is not valid JSON") from None
    if not isinstance(record, dict):
        raise ValueError("JSON line is not an object")
    if "cidr" not in record:
        return None
    cidr = record["cidr"]
    if not isinstance(cidr, str):
        raise ValueError("JSON 'cidr' value is not a string")
    return cidr


def parse_feed(text: str) -> FeedData:
    """Parse a block-list feed; never raises on bad content.

    Written as one flat loop with the common case (a bare CIDR line) checked with
    cheap string tests first, because this runs over 100k-line feeds on a Pi.
    """
    if text.startswith(_BOM):
        text = text[1:]
    v4: list[Interval] = []
    v6: list[Interval] = []
    skipped: list[tuple[int, str]] = []
    skipped_count = 0
    entries = 0
    # splitlines() copes with LF, CRLF and bare CR alike.
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        first = line[0]
        if first == "#" or first == ";":
            continue
        try:
            if first == "{":
                # Checked before comment stripping: JSON strings may contain '#'/';'.
                value = _json_cidr(line)
                if value is None:
                    continue
            else:
                value = line
                if "#" in value:
                    value = value.partition("#")[0]
                if ";" in value:
                    value = value.partition(";")[0]
            family, iv = parse_address(value)
        except ValueError as exc:
            skipped_count += 1
            if len(skipped) < MAX_SKIPPED_REASONS:
                skipped.append((lineno, str(exc)))
            continue
        entries += 1
        if family == 4:
            v4.append(iv)
        else:
            v6.append(iv)
    return FeedData(
        v4=merge(v4),
        v6=merge(v6),
        entries=entries,
        skipped=skipped,
        skipped_count=skipped_count,
    )


def load_feed(path: Path) -> FeedData:
    """Read and parse a feed file.

    Decoding uses ``errors="replace"`` so a stray non-UTF-8 byte costs one skipped
    line rather than the whole feed.
    """
    return parse_feed(path.read_text(encoding="utf-8", errors="replace"))

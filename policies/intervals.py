"""IPv4/IPv6 address intervals for nftables interval sets.

Block lists can hold 100,000+ CIDRs and the appliance is a Raspberry Pi, so this
module deliberately avoids :mod:`ipaddress` objects on the hot path: building one
``IPv4Network`` per line costs several microseconds and a lot of garbage. Instead
addresses are parsed with :func:`socket.inet_pton` (strict: unlike ``inet_aton`` it
rejects shorthand such as ``"1.2"`` and octal-looking ``"010.0.0.1"``) and handled
as plain ints; an interval is a ``(start, end)`` tuple, both ends inclusive, so
hosts, CIDRs and ``a-b`` ranges all share one representation that sorts and merges
cheaply.

The address family travels next to the interval (4 or 6) rather than inside it
because nft keeps IPv4 and IPv6 elements in separate sets anyway.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from operator import itemgetter
from socket import AF_INET, AF_INET6, inet_ntop, inet_pton

__all__ = [
    "Interval",
    "contains",
    "format_elements",
    "format_interval",
    "merge",
    "parse_address",
]

Interval = tuple[int, int]
"""Inclusive ``(start, end)`` pair of integer addresses."""

_MAX4 = (1 << 32) - 1
_MAX6 = (1 << 128) - 1

# Host masks indexed by prefix length: a table lookup is cheaper than shifting on
# every one of 100k lines.
_HOSTMASK4: tuple[int, ...] = tuple((1 << (32 - n)) - 1 for n in range(33))
_HOSTMASK6: tuple[int, ...] = tuple((1 << (128 - n)) - 1 for n in range(129))

# Error messages quote the offending text; junk lines in feeds can be huge, so keep
# the quote short enough for a log line or a web UI table cell.
_QUOTE_MAX = 60

_start_key = itemgetter(0)


def _show(text: str) -> str:
    """Quote *text* for an error message, shortened so junk cannot flood logs."""
    if len(text) > _QUOTE_MAX:
        text = text[: _QUOTE_MAX - 3] + "..."
    return repr(text)


def _parse_host(text: str) -> tuple[int, int]:
    """Parse one bare address into ``(family, value)``.

    The family is chosen by the presence of ``:`` so only one ``inet_pton`` call is
    made per address, which matters at feed scale.
    """
    try:
        if ":" in text:
            return 6, int.from_bytes(inet_pton(AF_INET6, text), "big")
        return 4, int.from_bytes(inet_pton(AF_INET, text), "big")
    except (OSError, ValueError):
        # OSError: not an address; ValueError: embedded NUL or unencodable text.
        raise ValueError(f"{_show(text)} is not an IPv4 or IPv6 address") from None


def _parse_range(text: str) -> tuple[int, Interval]:
    """Parse ``a-b`` (whitespace around the dash tolerated) into one interval."""
    first, _, last = text.partition("-")
    first = first.strip()
    last = last.strip()
    if not first or not last:
        raise ValueError(f"range {_show(text)} needs an address on both sides of '-'")
    if first.endswith("/"):  # "a/-1" is a negative prefix, not a range
        raise ValueError(f"prefix length {_show('-' + last)} is not a decimal number")
    if "/" in first or "/" in last:
        raise ValueError(f"range {_show(text)} must join two addresses, not networks")
    family, start = _parse_host(first)
    last_family, end = _parse_host(last)
    if family != last_family:
        raise ValueError("range mixes IPv4 and IPv6")
    if start > end:
        raise ValueError(f"range start {first} is after end {last}")
    return family, (start, end)


def parse_address(text: str) -> tuple[int, Interval]:
    """Parse a host, CIDR or ``a-b`` range into ``(family, interval)``.

    ``family`` is 4 or 6. A CIDR with host bits set (``192.0.2.1/24``) is accepted
    and normalised to its network because published feeds contain such entries and
    rejecting them would silently drop blocks. Everything else that is not a valid
    address raises :class:`ValueError` with a short message meant for humans (the
    web UI shows it next to the offending feed line).
    """
    text = text.strip()
    # IPv6 never contains '-', so a dash always means a range.
    if "-" in text:
        return _parse_range(text)
    if not text:
        raise ValueError("empty address")
    # Hosts and CIDRs are what 100k-line feeds consist of, so their path is inlined
    # here instead of calling _parse_host: a Python call per line is measurable.
    addr, slash, prefix = text.partition("/")
    try:
        if ":" in addr:
            family = 6
            value = int.from_bytes(inet_pton(AF_INET6, addr), "big")
        else:
            family = 4
            value = int.from_bytes(inet_pton(AF_INET, addr), "big")
    except (OSError, ValueError):
        # OSError: not an address; ValueError: embedded NUL or unencodable text.
        raise ValueError(f"{_show(addr)} is not an IPv4 or IPv6 address") from None
    if not slash:
        return family, (value, value)
    if not prefix:
        raise ValueError(f"missing prefix length after '/' in {_show(text)}")
    # isdigit() alone accepts e.g. superscripts and Arabic-Indic digits; int() would
    # accept "+24", " 24" and "2_4". Only plain ASCII decimal digits are a prefix.
    if not (prefix.isascii() and prefix.isdigit()):
        raise ValueError(f"prefix length {_show(prefix)} is not a decimal number")
    masks = _HOSTMASK4 if family == 4 else _HOSTMASK6
    # Length check first: int() refuses digit strings beyond ~4300 characters.
    length = int(prefix) if len(prefix) <= 3 else len(masks)
    if length >= len(masks):
        shown = prefix if len(prefix) <= 10 else prefix[:7] + "..."
        raise ValueError(f"prefix length {shown} is out of range for IPv{family}")
    host = masks[length]
    # Host bits are cleared rather than rejected: feeds publish e.g. 192.0.2.1/24.
    start = value & ~host
    return family, (start, start | host)


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Return *intervals* sorted, with overlapping and adjacent ones merged.

    nft rejects overlapping elements in an interval set without ``auto-merge``, and
    a merged set is smaller and loads roughly twice as fast. Adjacent intervals
    (``end + 1 == next start``) are joined too, so the result is canonical: two
    inputs covering the same addresses merge to the same list.
    """
    # Sorting on the start alone is ~2x faster than comparing tuples; the order of
    # equal starts does not matter because the larger end wins below.
    ordered = sorted(intervals, key=_start_key)
    if not ordered:
        return []
    result: list[Interval] = []
    append = result.append
    cur_start, cur_end = ordered[0]
    for start, end in ordered:
        if start > cur_end + 1:
            append((cur_start, cur_end))
            cur_start = start
            cur_end = end
        elif end > cur_end:
            cur_end = end
    append((cur_start, cur_end))
    return result


def _family_params(family: int) -> tuple[int, int, int]:
    """Return ``(socket family, address bits, max value)`` for 4 or 6."""
    if family == 4:
        return AF_INET, 32, _MAX4
    if family == 6:
        return AF_INET6, 128, _MAX6
    raise ValueError(f"address family must be 4 or 6, not {family!r}")


def format_interval(family: int, iv: Interval) -> str:
    """Format one interval as an nft set element.

    A single address is written bare, an interval that is exactly one CIDR block as
    ``addr/len`` and anything else as ``first-last``; this is the most compact form
    nft accepts and reads back identically in ``nft list set``. Addresses use the
    canonical compressed text from :func:`socket.inet_ntop`.
    """
    af, bits, top = _family_params(family)
    start, end = iv
    if not 0 <= start <= end <= top:
        raise ValueError(f"interval {iv!r} is not a valid IPv{family} interval")
    nbytes = bits // 8
    first = inet_ntop(af, start.to_bytes(nbytes, "big"))
    if start == end:
        return first
    size = end - start + 1
    # One CIDR block: size is a power of two and start is aligned to it.
    if size & (size - 1) == 0 and start & (size - 1) == 0:
        return f"{first}/{bits - size.bit_length() + 1}"
    return f"{first}-{inet_ntop(af, end.to_bytes(nbytes, 'big'))}"


def format_elements(family: int, intervals: Iterable[Interval]) -> list[str]:
    """Format many intervals as nft set elements (input is not merged here)."""
    return [format_interval(family, iv) for iv in intervals]


def contains(merged: Sequence[Interval], value: int) -> bool:
    """Tell whether *value* lies in *merged* (sorted, non-overlapping) in O(log n).

    Used for safety checks such as "would this block list lock out the admin?".
    """
    i = bisect_right(merged, value, key=_start_key)
    return i > 0 and merged[i - 1][1] >= value

"""Turn weekly local-time windows into nftables ``meta day`` / ``meta hour`` matches in UTC.

nft converts ``meta hour`` strings with the *loading process's* time zone, and the kernel
compares against UTC. We therefore convert the site's local windows to UTC ourselves (the
applier loads with TZ=UTC) and split them at UTC midnight, so a window that crosses midnight
or shifts into the previous day is exact. The UTC offset changes with daylight saving time;
``offset_until`` tells the appliance when to recompile.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterable

from policies.model import TimeWindow

DAY = 1440
WEEK = 7 * DAY
# nft's day names; index 0 is Monday here, matching policies.model.DAYS.
NFT_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def utc_offset_minutes(timezone: str, at: dt.datetime) -> int:
    off = at.astimezone(zoneinfo.ZoneInfo(timezone)).utcoffset()
    return int(off.total_seconds() // 60) if off is not None else 0


def offset_until(timezone: str, at: dt.datetime) -> dt.datetime | None:
    """The first instant after ``at`` at which the site's UTC offset changes (None: never)."""
    start = utc_offset_minutes(timezone, at)
    step = dt.timedelta(days=1)
    probe = at
    for _ in range(400):
        nxt = probe + step
        if utc_offset_minutes(timezone, nxt) != start:
            lo, hi = probe, nxt
            while hi - lo > dt.timedelta(minutes=1):
                mid = lo + (hi - lo) / 2
                if utc_offset_minutes(timezone, mid) == start:
                    lo = mid
                else:
                    hi = mid
            return hi.replace(second=0, microsecond=0)
        probe = nxt
    return None


def _utc_pieces(windows: Iterable[TimeWindow], offset: int) -> list[tuple[int, int]]:
    """Windows as [start, end) minutes of the UTC week, split at UTC midnight, merged."""
    spans: list[tuple[int, int]] = []
    for w in windows:
        start = (w.start - offset) % WEEK
        length = w.end - w.start
        end = start + length
        if end > WEEK:
            spans += [(start, WEEK), (0, end - WEEK)]
        else:
            spans.append((start, end))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for s, e in spans:
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    pieces: list[tuple[int, int]] = []
    for s, e in merged:
        while s < e:
            day_end = (s // DAY + 1) * DAY
            pieces.append((s, min(e, day_end)))
            s = min(e, day_end)
    return pieces


def _clock(minutes: int, *, end: bool) -> str:
    if end:  # nft ranges include both ends: the window's last second
        seconds = minutes * 60 - 1
        return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def schedule_matches(windows: Iterable[TimeWindow], offset: int) -> list[str]:
    """nft match fragments, one per rule copy; [""] means always, [] means never."""
    by_hours: dict[tuple[int, int], list[int]] = {}
    for s, e in _utc_pieces(windows, offset):
        day = s // DAY
        by_hours.setdefault((s - day * DAY, e - day * DAY), []).append(day)
    out: list[str] = []
    for (start, end), days in sorted(by_hours.items(), key=lambda kv: (min(kv[1]), kv[0])):
        parts = []
        if len(days) < 7:
            names = ", ".join(f'"{NFT_DAYS[d]}"' for d in sorted(days))
            parts.append(f"meta day {{ {names} }}" if len(days) > 1 else f"meta day {names}")
        if (start, end) != (0, DAY):
            parts.append(f'meta hour "{_clock(start, end=False)}"-"{_clock(end, end=True)}"')
        out.append(" ".join(parts))
    return out

"""Read-only access to the query log for the web UI: dashboard numbers and the filtered log.

The resolver's writer owns ``querylog.db``; the UI opens it per request with ``mode=ro`` and
a short busy timeout, so the UI can neither change the log nor make the writer wait, and a
page never hangs on it.

The dashboard reads only the writer's aggregate tables (``stats_minute``, ``top_hour``; see
``dns_filter.querylog``), never the millions of rows. The log page pages by keyset
(``id < before ORDER BY id DESC LIMIT 51``) on single-column indexes, which SQLite reads as
``(column, rowid)``. Whatever the filters, a search walks the id range in windows that grow
while they are cheap and stops at a time budget: a page that needed to scan too much comes
back short, with a cursor that continues the search, instead of taking seconds.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from dns_filter.querylog import TOP_KINDS, reversed_name

PAGE_SIZE = 50
BUSY_TIMEOUT_S = 0.25
SEARCH_BUDGET_S = 0.1  # then return what was found, with a cursor to continue
HARD_STOP_S = 0.3  # a single window query that runs away is interrupted here
MAX_IN_NAMES = 500  # more names matching a pattern: GLOB on each row, scanned by id
TS_SLACK_IDS = 1_000  # ts is only nearly monotonic in id (threads); the ts filter stays exact
_COLUMNS = (
    "id, ts, client, qname, qtype, verdict, rule, list, upstream, latency_ms, rcode, client_group"
)


class LogUnavailable(Exception):
    """No query log to read (the resolver has not written one, or it is unreadable)."""


@dataclass(frozen=True)
class Filters:
    client: str | None = None
    name: str | None = None  # "a.example" exact, "*.example" subdomains, "*ads*" contains
    verdict: str | None = None
    since: float | None = None  # unix seconds, inclusive
    until: float | None = None  # unix seconds, exclusive


@dataclass(frozen=True)
class Row:
    id: int
    ts: float
    client: str
    qname: str
    qtype: int
    verdict: str
    rule: str | None
    list: str | None
    upstream: str | None
    latency_ms: float
    rcode: int
    client_group: str | None


@dataclass(frozen=True)
class Page:
    rows: list[Row]  # newest first
    older: int | None = None  # before= cursor for the next (older) page
    newer: int | None = None  # after= cursor for the previous (newer) page
    complete: bool = True  # False: the time budget ran out before the page was full
    note: str | None = None


@dataclass(frozen=True)
class Stats:
    minutes: list[tuple[int, int, int]]  # (unix minute, total, blocked), oldest first
    window_hours: int
    total: int  # answers in the last window_hours
    blocked: int
    cached: int
    failed: int
    mean_latency_ms: float | None
    top: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # kind -> leaders
    backfill_rows: int = 0  # rows of an older log still being counted by the writer


def connect(path: Path) -> sqlite3.Connection:
    """A read-only connection; ``LogUnavailable`` when there is no log (yet)."""
    if not path.exists():
        raise LogUnavailable("no query log yet")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
        conn.execute("SELECT 1 FROM queries LIMIT 1").fetchall()
    except sqlite3.Error as exc:
        raise LogUnavailable(f"the query log cannot be read: {exc}") from exc
    return conn


def has_aggregates(conn: sqlite3.Connection) -> bool:
    """False for a log whose writer predates the aggregates (until the resolver restarts)."""
    found = conn.execute(
        "SELECT count(*) FROM sqlite_schema WHERE name IN ('stats_minute', 'top_hour', 'names')"
    ).fetchone()
    return bool(found[0] == 3)


# -- dashboard ------------------------------------------------------------------------------


def stats(
    conn: sqlite3.Connection, now: float, *, minutes: int = 60, hours: int = 24, top: int = 10
) -> Stats:
    """Per-minute series, totals over ``hours`` and the leaders of each kind; from the
    aggregates only. The top lists cover whole hours: the current one and ``hours - 1``
    before it."""
    this_minute = int(now) // 60
    series = dict.fromkeys(range(this_minute - minutes + 1, this_minute + 1), (0, 0))
    for minute, total, blocked in conn.execute(
        "SELECT minute, total, blocked FROM stats_minute WHERE minute > ? AND minute <= ?",
        (this_minute - minutes, this_minute),
    ):
        series[minute] = (total, blocked)
    row = conn.execute(
        "SELECT sum(total), sum(blocked), sum(cached), sum(failed), sum(latency_ms)"
        " FROM stats_minute WHERE minute > ?",
        (this_minute - hours * 60,),
    ).fetchone()
    total, blocked, cached, failed, latency = (v or 0 for v in row)
    this_hour = int(now) // 3600
    leaders = {
        kind: top_keys(conn, kind, this_hour - hours + 1, this_hour, top) for kind in TOP_KINDS
    }
    meta = dict(conn.execute("SELECT key, value FROM querylog_meta").fetchall())
    backlog = 0
    if "backfill_low" in meta and "backfill_high" in meta:
        backlog = max(0, int(meta["backfill_high"]) - int(meta["backfill_low"]) + 1)
    return Stats(
        minutes=[(m, t, b) for m, (t, b) in series.items()],
        window_hours=hours,
        total=int(total),
        blocked=int(blocked),
        cached=int(cached),
        failed=int(failed),
        mean_latency_ms=float(latency) / total if total else None,
        top=leaders,
        backfill_rows=backlog,
    )


def top_keys(
    conn: sqlite3.Connection, kind: str, first_hour: int, last_hour: int, n: int
) -> list[tuple[str, int]]:
    """The ``n`` keys with the highest counts over the hours, exactly, reading little.

    Fagin's threshold idea: read each hour's ``k`` leaders from the (kind, hour, count)
    index, sum the candidates exactly, and stop when the n-th total reaches the sum of
    each hour's k-th count (no key outside the candidates can have more); else read deeper.
    """
    k = max(2 * n, 20)
    while k <= 5_000:
        candidates: set[str] = set()
        bound = 0
        for hour in range(first_hour, last_hour + 1):
            leaders = conn.execute(
                "SELECT key, count FROM top_hour WHERE kind = ? AND hour = ?"
                " ORDER BY count DESC LIMIT ?",
                (kind, hour, k),
            ).fetchall()
            candidates.update(key for key, _ in leaders)
            if len(leaders) == k:  # keys not read have at most the k-th count this hour
                bound += leaders[-1][1]
        totals = _sums(conn, kind, sorted(candidates), first_hour, last_hour)
        ranked = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
        if bound == 0 or (len(ranked) == n and ranked[-1][1] >= bound):
            return ranked
        k *= 4
    rows = conn.execute(  # a flat distribution over many keys: count them all
        "SELECT key, sum(count) AS c FROM top_hour WHERE kind = ? AND hour BETWEEN ? AND ?"
        " GROUP BY key ORDER BY c DESC, key LIMIT ?",
        (kind, first_hour, last_hour, n),
    ).fetchall()
    return [(str(key), int(c)) for key, c in rows]


def _sums(
    conn: sqlite3.Connection, kind: str, keys: list[str], first_hour: int, last_hour: int
) -> dict[str, int]:
    """Exact totals of some keys: point lookups of (kind, hour, key), hour by hour."""
    totals = dict.fromkeys(keys, 0)
    for i in range(0, len(keys), 500):
        chunk = keys[i : i + 500]
        sql = (
            "SELECT key, count FROM top_hour WHERE kind = ? AND hour = ?"
            f" AND key IN ({', '.join('?' * len(chunk))})"
        )
        for hour in range(first_hour, last_hour + 1):
            for key, count in conn.execute(sql, (kind, hour, *chunk)):
                totals[key] += int(count)
    return totals


# -- the log --------------------------------------------------------------------------------


def _glob_literal(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


@dataclass(frozen=True)
class NameMatch:
    sql: str
    params: list[object]
    indexed: bool  # the qname index finds the rows (else each row is tested)


def name_condition(conn: sqlite3.Connection, pattern: str) -> NameMatch | None:
    """SQL for a name filter; None when the pattern matches no name in the log.

    ``a.example``: that name. ``*.a.example`` or ``*a.example``: names ending so;
    ``*text*``: names containing the text. A pattern is first looked up in ``names`` (every
    name seen, reversed: a suffix is a key range): up to ``MAX_IN_NAMES`` names become
    ``qname IN (...)`` on the qname index; more mean a broad pattern, whose rows are
    frequent, so the rows are tested one by one (``GLOB``) as the search walks the ids.
    """
    p = pattern.strip().lower().rstrip(".")
    if not p.startswith("*"):
        return NameMatch("qname = ?", [p], True)
    if p.endswith("*") and len(p) > 2:
        text = p.strip("*")
        glob = f"*{_glob_literal(text)}*"
        found = conn.execute(
            "SELECT rname FROM names WHERE instr(rname, ?) > 0 LIMIT ?",
            (reversed_name(text), MAX_IN_NAMES + 1),
        ).fetchall()
    else:
        low = reversed_name(p[1:])
        if not low:
            return NameMatch("1", [], False)
        glob = f"*{_glob_literal(p[1:])}"
        found = conn.execute(
            "SELECT rname FROM names WHERE rname >= ? AND rname < ? LIMIT ?",
            (low, low[:-1] + chr(ord(low[-1]) + 1), MAX_IN_NAMES + 1),
        ).fetchall()
    if not found:
        return None
    if len(found) > MAX_IN_NAMES:
        return NameMatch("+qname GLOB ?", [glob], False)
    names = [reversed_name(r) for (r,) in found]
    return NameMatch(f"qname IN ({', '.join('?' * len(names))})", list(names), True)


def _id_range(conn: sqlite3.Connection, f: Filters) -> tuple[int, int] | None:
    """The ids that can hold rows of the filter's time range, from the ts index."""
    # min() and max() in separate statements: each reads one edge of the b-tree (together,
    # in one SELECT, SQLite scans the table).
    first_id = conn.execute("SELECT min(id) FROM queries").fetchone()[0]
    if first_id is None:
        return None
    low, high = int(first_id), int(conn.execute("SELECT max(id) FROM queries").fetchone()[0])
    if f.since is not None:
        first = conn.execute(
            "SELECT id FROM queries WHERE ts >= ? ORDER BY ts LIMIT 1", (f.since,)
        ).fetchone()
        if first is None:
            return None
        low = max(low, int(first[0]) - TS_SLACK_IDS)
    if f.until is not None:
        last = conn.execute(
            "SELECT id FROM queries WHERE ts < ? ORDER BY ts DESC LIMIT 1", (f.until,)
        ).fetchone()
        if last is None:
            return None
        high = min(high, int(last[0]) + TS_SLACK_IDS)
    return (low, high) if low <= high else None


def _conditions(conn: sqlite3.Connection, f: Filters) -> tuple[list[str], list[object]] | None:
    """WHERE terms and their parameters; None when the name pattern matches nothing.

    The plan is chosen here, not left to SQLite (which has no statistics on this log): a
    unary ``+`` keeps a column's index out of it. The time range is already an id range,
    so ``ts`` only trims the edges; the verdict index (eight values, 15 % of the log
    blocked) only serves when no client or name narrows the search better. The client and
    name indexes carry the id (so rows come in id order) and the verdict (so a verdict
    filter costs no table lookups)."""
    conds: list[str] = []
    params: list[object] = []
    narrowed = False  # by an index better than the verdict's
    if f.client:
        conds.append("client = ?")
        params.append(f.client)
        narrowed = True
    if f.name:
        named = name_condition(conn, f.name)
        if named is None:
            return None
        conds.append(named.sql)
        params.extend(named.params)
        narrowed = narrowed or named.indexed
    if f.verdict:
        conds.append("+verdict = ?" if narrowed else "verdict = ?")
        params.append(f.verdict)
    if f.since is not None:
        conds.append("+ts >= ?")
        params.append(f.since)
    if f.until is not None:
        conds.append("+ts < ?")
        params.append(f.until)
    return conds, params


def search(
    conn: sqlite3.Connection,
    f: Filters,
    *,
    before: int | None = None,
    after: int | None = None,
    limit: int = PAGE_SIZE,
    budget: float = SEARCH_BUDGET_S,
) -> Page:
    """One page of matching rows: older than ``before`` (default: the newest), or the page
    just newer than ``after``."""
    started = time.monotonic()
    where_params = _conditions(conn, f)
    if where_params is None:
        return Page([], note="no name in the log matches this pattern")
    conds, params = where_params
    span = _id_range(conn, f)
    if span is None:
        return Page([])
    low, high = span
    if before is not None:
        high = min(high, before - 1)
    if after is not None:
        low = max(low, after + 1)
    where = " AND ".join([*conds, "id BETWEEN ? AND ?"])
    descending = after is None
    sql = (
        f"SELECT {_COLUMNS} FROM queries WHERE {where}"
        f" ORDER BY id {'DESC' if descending else 'ASC'} LIMIT ?"
    )
    hard_stop = started + max(budget * 3, HARD_STOP_S)
    conn.set_progress_handler(lambda: int(time.monotonic() > hard_stop), 20_000)
    found: list[Row] = []
    size, scanned, done = 4_096, 0, True
    edge = high if descending else low  # the next id to search from
    try:
        while low <= edge <= high and len(found) <= limit:
            a, b = (
                (max(low, edge - size + 1), edge)
                if descending
                else (edge, min(high, edge + size - 1))
            )
            try:
                got = conn.execute(sql, (*params, a, b, limit + 1 - len(found))).fetchall()
            except sqlite3.OperationalError as exc:
                if "interrupt" not in str(exc):
                    raise
                done = False
                break
            found.extend(Row(*r) for r in got)
            edge = a - 1 if descending else b + 1
            scanned += b - a + 1
            elapsed = time.monotonic() - started
            if len(found) > limit or not low <= edge <= high:
                break
            if elapsed > budget:
                done = False
                break
            rate = scanned / max(elapsed, 1e-4)  # ids a second, to fit the rest of the budget
            size = max(4_096, min(size * 4, int(rate * (budget - elapsed))))
    finally:
        conn.set_progress_handler(None, 0)
    return _page(found, limit, descending, done, edge, before, after)


def _page(
    found: list[Row],
    limit: int,
    descending: bool,
    done: bool,
    edge: int,
    before: int | None,
    after: int | None,
) -> Page:
    more = len(found) > limit
    rows = found[:limit]
    if descending:
        older = rows[-1].id if more else (None if done else edge + 1)
        newer = None
        if before is not None:
            newer = rows[0].id if rows else before - 1
        return Page(rows, older, newer, done or more)
    assert after is not None
    newer = rows[-1].id if more else (None if done else edge - 1)
    older = rows[0].id if rows else after + 1
    return Page(list(reversed(rows)), older, newer, done or more)

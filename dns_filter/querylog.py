"""The query log: every answer recorded in SQLite, in batches, off the answer path.

The answer path only appends a tuple to a deque (a few hundred nanoseconds, thread-safe);
a writer thread drains it ten times a second, in small transactions: one big batch a second
took the CPU from the answer loop in one burst, which showed as multi-millisecond p99
latency under load. SQLite in WAL mode lets the
web UI read while we write. Old rows are deleted by retention, once an hour.

The web UI's dashboard must not scan millions of rows, so the writer also keeps small
aggregate tables, updated in the same transaction as each batch: SQLite counts the rows
just inserted (``INSERT ... SELECT ... GROUP BY ... ON CONFLICT DO UPDATE``), in C with the
GIL released, so the counting never holds the interpreter from the answer loop:

* ``stats_minute``: per minute, how many answers, blocked, cached, failed, and the latency sum;
* ``top_hour``: per hour and kind (``domain``: names not blocked, ``blocked``, ``client``),
  each key's count; keyed by hour first, so a batch only touches the current hour's pages,
  and the ``(kind, hour, count)`` index lets a reader take each hour's leaders without
  reading the hour;
* ``names``: every name seen, reversed (``moc.elpmaxe.www``): a suffix search
  (``*.example.com``) is then a range of that primary key, not a scan of the log.

A log written before these tables existed gets them filled once, newest rows first, by the
writer thread in small chunks (``querylog_meta`` remembers how far it got, across restarts);
the extra indexes for the UI's filters are built by that thread too, so a big old log never
delays the resolver's start.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections import deque
from pathlib import Path
from typing import NamedTuple

from dns_filter.wire import dotted_name

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queries (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    client TEXT NOT NULL,
    qname TEXT NOT NULL,
    qtype INTEGER NOT NULL,
    verdict TEXT NOT NULL,
    rule TEXT,
    list TEXT,
    upstream TEXT,
    latency_ms REAL NOT NULL,
    rcode INTEGER NOT NULL,
    client_group TEXT
);
CREATE INDEX IF NOT EXISTS queries_ts ON queries (ts);
CREATE TABLE IF NOT EXISTS stats_minute (
    minute INTEGER PRIMARY KEY,
    total INTEGER NOT NULL,
    blocked INTEGER NOT NULL,
    cached INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    latency_ms REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS top_hour (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    hour INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (kind, hour, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS top_hour_rank ON top_hour (kind, hour, count);
CREATE TABLE IF NOT EXISTS names (
    rname TEXT PRIMARY KEY,
    last_hour INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS querylog_meta (key TEXT PRIMARY KEY, value INTEGER) WITHOUT ROWID;
"""

# The web UI's filters page by keyset: ``client = ? AND id < ? ORDER BY id DESC LIMIT 51``
# reads 51 entries of (client, id, ...). The verdict rides along in the client and name
# indexes so "this client, blocked" needs no table lookups, and the client in the name
# index so "this name, this client" does not either. The verdict index alone is sorted by
# (verdict, rowid). The old (client, ts) index served no query and cost every insert.
_UI_INDEXES = """
CREATE INDEX IF NOT EXISTS queries_client_id ON queries (client, id, verdict);
CREATE INDEX IF NOT EXISTS queries_qname_id ON queries (qname, id, verdict, client);
CREATE INDEX IF NOT EXISTS queries_verdict ON queries (verdict);
DROP INDEX IF EXISTS queries_client_ts;
"""

TOP_KINDS = ("domain", "blocked", "client")
VERDICTS = ("allowed", "blocked", "cached", "local", "refused", "servfail", "stale", "formerr")
BACKFILL_CHUNK = 20_000

# The aggregates of the rows with ids in (?, ?]. (An UPSERT from a SELECT needs a WHERE
# clause before ON CONFLICT: SQLite's parsing rule.)
_AGGREGATE = (
    "INSERT INTO stats_minute (minute, total, blocked, cached, failed, latency_ms)"
    " SELECT CAST(ts AS INTEGER) / 60, count(*), sum(verdict = 'blocked'),"
    " sum(verdict = 'cached'), sum(verdict IN ('servfail', 'refused', 'formerr')),"
    " sum(latency_ms) FROM queries WHERE id > ? AND id <= ? GROUP BY 1"
    " ON CONFLICT (minute) DO UPDATE SET"
    " total = total + excluded.total, blocked = blocked + excluded.blocked,"
    " cached = cached + excluded.cached, failed = failed + excluded.failed,"
    " latency_ms = latency_ms + excluded.latency_ms",
    "INSERT INTO top_hour (kind, key, hour, count)"
    " SELECT CASE verdict WHEN 'blocked' THEN 'blocked' ELSE 'domain' END, qname,"
    " CAST(ts AS INTEGER) / 3600, count(*) FROM queries WHERE id > ? AND id <= ? GROUP BY 1, 2, 3"
    " ON CONFLICT (kind, hour, key) DO UPDATE SET count = count + excluded.count",
    "INSERT INTO top_hour (kind, key, hour, count)"
    " SELECT 'client', client, CAST(ts AS INTEGER) / 3600, count(*)"
    " FROM queries WHERE id > ? AND id <= ? GROUP BY 2, 3"
    " ON CONFLICT (kind, hour, key) DO UPDATE SET count = count + excluded.count",
    "INSERT INTO names (rname, last_hour)"
    " SELECT querylog_reverse(qname), max(CAST(ts AS INTEGER) / 3600)"
    " FROM queries WHERE id > ? AND id <= ? GROUP BY qname"
    " ON CONFLICT (rname) DO UPDATE SET last_hour = excluded.last_hour"
    " WHERE excluded.last_hour > last_hour",
)


class LogEntry(NamedTuple):
    ts: float
    client: str
    qname: str
    qtype: int
    verdict: str  # allowed, blocked, cached, local, refused, servfail, stale, formerr
    rule: str | None
    list: str | None
    upstream: str | None
    latency_ms: float
    rcode: int
    client_group: str | None = None  # the web filter's group for the client


def reversed_name(name: str) -> str:
    """The key of ``names``: a name ends with a suffix iff this starts with the suffix's."""
    return name[::-1]


def _aggregate(db: sqlite3.Connection, after: int, upto: int) -> None:
    """Add the rows with ids in (after, upto] to the aggregates (inside the caller's
    transaction: the rows and their counts commit together or not at all)."""
    for statement in _AGGREGATE:
        db.execute(statement, (after, upto))


def _spelled(entry: LogEntry | tuple[object, ...]) -> tuple[object, ...]:
    """``entry`` with a name passed as its wire key decoded, and a rule "" (the listed
    name is the query's own) spelled out as that name."""
    name, rule = entry[2], entry[5]
    if not isinstance(name, bytes) and rule != "":
        return entry  # as the answer path wrote it: nothing to spell out
    if isinstance(name, bytes):
        name = dotted_name(name)
    return (*entry[:2], name, *entry[3:5], name if rule == "" else rule, *entry[6:])


MAX_PENDING = 10_000
"""Entries waiting for the writer, at most; beyond that they are counted as dropped (and
exported: ``edgeguard_dns_querylog_entries_total{outcome="dropped"}``). An entry waiting
costs ~320 bytes, so this bounds the backlog at ~3 MB of the resolver's 60 MB budget with a
1M-name list: 50 s of a busy office's 200 queries/s while the SD card stalls, and the writer
keeps up at 70 % of the resolver's full load. It falls that far behind only when the core is
saturated (it runs at the lowest CPU priority, after the answers): with a cap of 100,000 the
resolver reached 102 MB resident under dnsperf, 64 MB with 25,000, 59.5 MB with this."""


class QueryLog:
    def __init__(
        self,
        path: Path,
        *,
        retention_days: float = 7.0,
        interval: float = 0.1,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.retention_s = retention_days * 86_400
        self.interval = interval
        self.max_pending = max_pending
        self.dropped = 0
        self.written = 0
        self._pending: deque[LogEntry | tuple[object, ...]] = deque()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # flush() runs in the writer thread and from recent()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # a lost last second of log is acceptable
        # Checkpoint every 16 MB of WAL instead of 4 MB: the UI's indexes and the aggregates
        # dirty the same pages batch after batch, and each checkpoint copies a page once.
        self._db.execute("PRAGMA wal_autocheckpoint=4000")
        self._db.executescript(_SCHEMA)
        self._db.create_function("querylog_reverse", 1, reversed_name, deterministic=True)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(queries)")}
        if "client_group" not in columns:  # a log written before web filtering existed
            self._db.execute("ALTER TABLE queries ADD COLUMN client_group TEXT")
        self._backfill = self._backfill_range()
        self._last_prune = 0.0
        self._thread = threading.Thread(target=self._run, name="querylog", daemon=True)
        self._thread.start()

    def _backfill_range(self) -> tuple[int, int] | None:
        """Rows (ids low..high) the aggregates do not count yet: those of a log written
        before the aggregates existed. Recorded once; every later batch counts itself."""
        db = self._db
        meta = dict(db.execute("SELECT key, value FROM querylog_meta").fetchall())
        if "aggregates" not in meta:
            db.execute("BEGIN IMMEDIATE")
            # Two statements: SQLite reads min() or max() alone from the b-tree's edge, but
            # scans the whole table for both in one SELECT.
            low = db.execute("SELECT min(id) FROM queries").fetchone()[0]
            high = db.execute("SELECT max(id) FROM queries").fetchone()[0]
            db.execute("INSERT OR REPLACE INTO querylog_meta VALUES ('aggregates', 1)")
            if low is not None:
                db.executemany(
                    "INSERT OR REPLACE INTO querylog_meta VALUES (?, ?)",
                    [("backfill_low", low), ("backfill_high", high)],
                )
            db.execute("COMMIT")
            meta = {"backfill_low": low, "backfill_high": high}
        low, high = meta.get("backfill_low"), meta.get("backfill_high")
        return (low, high) if low is not None and high is not None else None

    def log(self, entry: LogEntry | tuple[object, ...]) -> None:
        """Called on the answer path: never blocks, never touches the disk.

        ``entry`` is a ``LogEntry`` or a plain tuple in its order. The resolver may pass the
        name as its wire key (``wire.Query.key``, bytes) and the rule as "" for "the name
        itself": decoding a name is 0.4 µs the answer path need not pay, and under a flood
        most entries are dropped (``max_pending``) before anyone would read them. The writer
        spells both out as it inserts (``_spelled``)."""
        if len(self._pending) >= self.max_pending:
            self.dropped += 1  # the writer fell behind (disk stall): keep answering
            return
        self._pending.append(entry)

    def _run(self) -> None:
        self._lower_priority()
        with self._lock:  # one-off on an old log: answers queue up (or drop) meanwhile
            self._db.executescript(_UI_INDEXES)
        while not self._stop.wait(0.01 if self._backfill else self.interval):
            self.flush()
            if self._backfill:
                self._backfill_step()
        self.flush()

    @staticmethod
    def _lower_priority() -> None:
        """Run this thread only when the answer loop has nothing to do.

        SCHED_IDLE: a waking answer loop preempts the writer at once. Nice 19 alone (what
        this was before) lets the kernel's EEVDF scheduler finish the writer's time slice
        first. With both on one core at 65,000 queries/s (dnsperf -Q, see
        docs/benchmarks.md) the p99.9 latency was 3.8-4.4 ms with nice 19 and 1.2-2.9 ms
        with SCHED_IDLE; p99 0.91-1.44 ms against 0.81-0.94. Nice 19 stays the fallback.
        """
        tid = threading.get_native_id()
        try:
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        except OSError:
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, tid, 19)

    def flush(self) -> None:
        """Write everything pending, 5,000 rows a transaction, yielding between them.

        When it returns, everything logged before the call is written (a batch another
        thread took is committed first: the lock covers taking and writing)."""
        pending = self._pending
        while pending:
            with self._lock:
                batch: list[LogEntry | tuple[object, ...]] = []
                while pending and len(batch) < 5_000:
                    batch.append(pending.popleft())
                if not batch:
                    break
                db = self._db
                db.execute("BEGIN")
                last = db.execute("SELECT coalesce(max(id), 0) FROM queries").fetchone()[0]
                db.executemany(
                    "INSERT INTO queries (ts, client, qname, qtype, verdict, rule, list, upstream,"
                    " latency_ms, rcode, client_group) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    map(_spelled, batch),  # row by row: SQLite releases the GIL between them
                )
                _aggregate(db, last, last + len(batch))
                db.execute("COMMIT")
                self.written += len(batch)
            time.sleep(0)  # let the answer loop have the interpreter between transactions
        now = time.time()
        if now - self._last_prune > 3600:
            self._last_prune = now
            self._prune(now - self.retention_s)

    def _prune(self, cutoff: float) -> None:
        """Retention: old rows, and the aggregates of minutes and hours wholly before them."""
        minute, hour = int(cutoff) // 60, int(cutoff) // 3600
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM queries WHERE ts < ?", (cutoff,))
            self._db.execute("DELETE FROM stats_minute WHERE minute < ?", (minute,))
            for kind in TOP_KINDS:  # per kind: a range of the primary key (kind, hour, key)
                self._db.execute("DELETE FROM top_hour WHERE kind = ? AND hour < ?", (kind, hour))
            self._db.execute("DELETE FROM names WHERE last_hour < ?", (hour,))
            self._db.execute("COMMIT")

    def _backfill_step(self) -> None:
        """Count one chunk of the rows written before the aggregates existed, newest first
        (the dashboard's recent minutes fill first); the progress commits with the counts."""
        assert self._backfill is not None
        low, high = self._backfill
        start = max(low, high - BACKFILL_CHUNK + 1)
        with self._lock:
            self._db.execute("BEGIN")
            _aggregate(self._db, start - 1, high)
            if start > low:
                self._db.execute(
                    "UPDATE querylog_meta SET value = ? WHERE key = 'backfill_high'", (start - 1,)
                )
            else:
                self._db.execute(
                    "DELETE FROM querylog_meta WHERE key IN ('backfill_low', 'backfill_high')"
                )
            self._db.execute("COMMIT")
        self._backfill = (low, start - 1) if start > low else None

    @property
    def backfilling(self) -> bool:
        """Whether rows of an older log are still being counted into the aggregates."""
        return self._backfill is not None

    def recent(self, limit: int = 100) -> list[LogEntry]:
        """Newest first (for the CLI and tests; the web UI queries the table itself)."""
        self.flush()
        with self._lock:
            rows = self._db.execute(
                "SELECT ts, client, qname, qtype, verdict, rule, list, upstream, latency_ms, rcode,"
                " client_group FROM queries ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [LogEntry(*r) for r in rows]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        with self._lock:  # not while the writer is still building indexes on an old log
            self._db.close()

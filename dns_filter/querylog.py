"""The query log: every answer recorded in SQLite, in batches, off the answer path.

The answer path only appends a tuple to a deque (a few hundred nanoseconds, thread-safe);
a writer thread drains it ten times a second, in small transactions: one big batch a second
took the CPU from the answer loop in one burst, which showed as multi-millisecond p99
latency under load. SQLite in WAL mode lets the
web UI read while we write. Old rows are deleted by retention, once an hour.
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
CREATE INDEX IF NOT EXISTS queries_client_ts ON queries (client, ts);
"""


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


class QueryLog:
    def __init__(
        self,
        path: Path,
        *,
        retention_days: float = 7.0,
        interval: float = 0.1,
        max_pending: int = 100_000,
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
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(queries)")}
        if "client_group" not in columns:  # a log written before web filtering existed
            self._db.execute("ALTER TABLE queries ADD COLUMN client_group TEXT")
        self._last_prune = 0.0
        self._thread = threading.Thread(target=self._run, name="querylog", daemon=True)
        self._thread.start()

    def log(self, entry: LogEntry | tuple[object, ...]) -> None:
        """Called on the answer path: never blocks, never touches the disk."""
        if len(self._pending) >= self.max_pending:
            self.dropped += 1  # the writer fell behind (disk stall): keep answering
            return
        self._pending.append(entry)

    def _run(self) -> None:
        # Lowest CPU priority for this thread: on a busy (or pinned) core the scheduler then
        # runs the answer loop first instead of slicing milliseconds between the two.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        while not self._stop.wait(self.interval):
            self.flush()
        self.flush()

    def flush(self) -> None:
        """Write everything pending, 5,000 rows a transaction, yielding between them."""
        pending = self._pending
        while pending:
            batch: list[LogEntry | tuple[object, ...]] = []
            while pending and len(batch) < 5_000:
                batch.append(pending.popleft())
            with self._lock:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT INTO queries (ts, client, qname, qtype, verdict, rule, list, upstream,"
                    " latency_ms, rcode, client_group) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    batch,
                )
                self._db.execute("COMMIT")
            self.written += len(batch)
            time.sleep(0)  # let the answer loop have the interpreter between transactions
        now = time.time()
        if now - self._last_prune > 3600:
            self._last_prune = now
            with self._lock:
                self._db.execute("DELETE FROM queries WHERE ts < ?", (now - self.retention_s,))

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
        self._db.close()

"""DNS records for live scoring: the resolver's query log, read as it grows.

The resolver already writes every query to ``<state>/querylog.db`` off its answer path; the
scorer reads the new rows by id (the primary key, so each read is one b-tree range) instead
of being a second sink inside the resolver: scoring stays in its own process and can never
slow an answer down. The log holds no answer addresses, so live DNS records have none
(flows are then reported by address; a capture has both).
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from appliance.anomaly.records import DnsRecord

BATCH = 20_000


@dataclass
class QueryLogTail:
    """Yields the rows written since the last read; starts at the end of the log unless
    ``from_start`` (history is not rescored after a restart: its alerts are in the store)."""

    path: Path
    from_start: bool = False
    _last_id: int | None = None

    def read(self, limit: int = BATCH) -> list[DnsRecord]:
        if not self.path.exists():
            return []
        try:
            uri = self.path.resolve().as_uri() + "?mode=ro"
            with closing(sqlite3.connect(uri, uri=True, timeout=2.0)) as db:
                if self._last_id is None:
                    start = 0 if self.from_start else db.execute("SELECT max(id) FROM queries")
                    self._last_id = start if isinstance(start, int) else start.fetchone()[0] or 0
                rows = db.execute(
                    "SELECT id, ts, client, qname, qtype, rcode, verdict FROM queries"
                    " WHERE id > ? ORDER BY id LIMIT ?",
                    (self._last_id, limit),
                ).fetchall()
        except sqlite3.Error:
            return []  # the resolver is creating or migrating it: next time
        if rows:
            self._last_id = rows[-1][0]
        # A name the filter blocked was answered by us (NXDOMAIN, a null or block-page
        # address): it says nothing about whether the name exists, so DGA and tunnel
        # detectors must not count it. The query itself is still evidence of intent, but
        # the block already stopped it.
        return [
            DnsRecord(ts, client, qname.rstrip(".").lower(), qtype, rcode)
            for _id, ts, client, qname, qtype, rcode, verdict in rows
            if verdict != "blocked"
        ]

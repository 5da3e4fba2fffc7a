"""Where alerts, host scores and quarantines live: SQLite ``<state>/anomalies.db`` (WAL).

One file, three tables, several processes: the controller writes alerts and scores (one
transaction per evaluation, so a Pi's SD card sees one fsync a few minutes, not one per
alert); the CLI and the web UI, which run in other processes, write the ``quarantine``
table and alert statuses, and read the rest. WAL lets the UI read while the controller
writes, and every connection waits (``busy_timeout``) instead of failing on a lock.

``anomalies``: one row per (host, kind, peer). The scorer keeps one alert open per key and
updates it as evidence grows, so an updated alert updates its row (``ts`` = when it was
raised or last updated) instead of adding noise. Statuses:

* ``open``: new, nobody acted on it;
* ``dismissed``: an admin said it is fine. It stays dismissed while the alert keeps coming
  at the same severity, and opens again only if the severity rises above the one it had
  when it was dismissed (``mark_severity``, set by a trigger whoever writes the status);
* ``quarantined``: the host was quarantined because of it;
* ``lifted``: its quarantine was lifted. The same alert does not quarantine the host again
  unless its severity rises above the one at the lift (``actions`` checks ``mark_severity``).

``quarantine``: the source of truth for the firewall's quarantine sets; one active row
(``lifted IS NULL``) per address. ``host_scores``: the latest 0-100 score per host.
Rows untouched for ``retention_days`` (90) are deleted, except active quarantines.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.anomaly.records import SEVERITIES, Alert
from appliance.errors import AnomalyError

DB_NAME = "anomalies.db"
RETENTION_DAYS = 90.0
STATUSES = ("open", "dismissed", "quarantined", "lifted")
_PRUNE_EVERY = 3600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS anomalies (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    host TEXT NOT NULL,
    kind TEXT NOT NULL,
    peer TEXT NOT NULL DEFAULT '',
    score INTEGER NOT NULL,
    severity TEXT NOT NULL,
    first REAL NOT NULL,
    last REAL NOT NULL,
    explanation TEXT NOT NULL,
    subscores TEXT NOT NULL DEFAULT '{}',
    modifiers TEXT NOT NULL DEFAULT '{}',
    evidence TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'open'
        CHECK (status IN ('open', 'dismissed', 'quarantined', 'lifted')),
    mark_severity TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS anomalies_key ON anomalies (host, kind, peer);
CREATE INDEX IF NOT EXISTS anomalies_ts ON anomalies (ts);
CREATE TRIGGER IF NOT EXISTS anomalies_mark AFTER UPDATE OF status ON anomalies
    WHEN NEW.status IN ('dismissed', 'lifted') AND OLD.status != NEW.status
BEGIN
    UPDATE anomalies SET mark_severity = NEW.severity WHERE id = NEW.id;
END;
CREATE TABLE IF NOT EXISTS host_scores (
    host TEXT PRIMARY KEY,
    score INTEGER NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY,
    address TEXT NOT NULL,
    reason TEXT NOT NULL,
    alert_id INTEGER,
    since REAL NOT NULL,
    by TEXT NOT NULL,
    lifted REAL,
    lifted_by TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS quarantine_active ON quarantine (address)
    WHERE lifted IS NULL;
"""


def severity_rank(severity: str | None) -> int:
    """0 (info) .. 4 (critical); -1 for None or anything unknown."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else -1


@dataclass(frozen=True)
class StoredAlert:
    """An ``anomalies`` row; ``previous_severity`` is None when this write inserted it."""

    id: int
    status: str
    alert: Alert
    ts: float
    mark_severity: str | None = None
    previous_severity: str | None = None

    @property
    def is_new(self) -> bool:
        return self.previous_severity is None


@dataclass(frozen=True)
class QuarantineEntry:
    id: int
    address: str
    reason: str
    alert_id: int | None
    since: float
    by: str
    lifted: float | None = None
    lifted_by: str | None = None


def _alert_of(row: sqlite3.Row) -> Alert:
    return Alert(
        host=row["host"],
        kind=row["kind"],
        peer=row["peer"],
        score=int(row["score"]),
        severity=row["severity"],
        first=float(row["first"]),
        last=float(row["last"]),
        explanation=row["explanation"],
        subscores=json.loads(row["subscores"]),
        modifiers=json.loads(row["modifiers"]),
        evidence=json.loads(row["evidence"]),
    )


def _stored(row: sqlite3.Row, previous: str | None = None) -> StoredAlert:
    return StoredAlert(
        int(row["id"]), row["status"], _alert_of(row), float(row["ts"]),
        row["mark_severity"], previous,
    )  # fmt: skip


def _entry(row: sqlite3.Row) -> QuarantineEntry:
    return QuarantineEntry(**{k: row[k] for k in row.keys()})  # noqa: SIM118 - sqlite3.Row


class AnomalyStore:
    """The database; safe to share between threads (one connection behind a lock)."""

    def __init__(self, path: Path, *, retention_days: float = RETENTION_DAYS) -> None:
        self.path = Path(path)
        self.retention = retention_days * 86400.0
        self._lock = threading.Lock()
        self._last_prune = float("-inf")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise AnomalyError(f"cannot open the anomaly store {self.path}: {exc}") from exc

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> AnomalyStore:
        return cls(Path(state_dir) / DB_NAME)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- alerts and scores ----------------------------------------------------------------
    def record(
        self, alerts: Sequence[Alert], now: float, scores: Mapping[str, int] | None = None
    ) -> list[StoredAlert]:
        """Insert or update each alert's row and the host scores, in one transaction."""
        out: list[StoredAlert] = []
        with self._lock, self._db:
            for alert in alerts:
                out.append(self._upsert(alert, now))
            if scores:
                self._db.executemany(
                    "INSERT INTO host_scores (host, score, updated) VALUES (?, ?, ?) "
                    "ON CONFLICT (host) DO UPDATE SET score = excluded.score, "
                    "updated = excluded.updated",
                    [(h, int(s), now) for h, s in scores.items()],
                )
            if now - self._last_prune >= _PRUNE_EVERY:
                self._last_prune = now
                self._prune(now)
        return out

    def _upsert(self, a: Alert, now: float) -> StoredAlert:
        key = (a.host, a.kind, a.peer)
        row = self._db.execute(
            "SELECT * FROM anomalies WHERE host = ? AND kind = ? AND peer = ?", key
        ).fetchone()
        data = (
            now, a.score, a.severity, a.first, a.last, a.explanation,
            json.dumps(a.subscores), json.dumps(a.modifiers), json.dumps(a.evidence, default=str),
        )  # fmt: skip
        if row is None:
            cur = self._db.execute(
                "INSERT INTO anomalies (ts, score, severity, first, last, explanation, "
                "subscores, modifiers, evidence, host, kind, peer) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*data, *key),
            )
            return StoredAlert(int(cur.lastrowid or 0), "open", a, now)
        status = row["status"]
        if status == "dismissed" and severity_rank(a.severity) > severity_rank(
            row["mark_severity"]
        ):
            status = "open"  # worse than what the admin dismissed: show it again
        self._db.execute(
            "UPDATE anomalies SET ts = ?, score = ?, severity = ?, first = ?, last = ?, "
            "explanation = ?, subscores = ?, modifiers = ?, evidence = ?, status = ? "
            "WHERE id = ?",
            (*data, status, row["id"]),
        )
        return StoredAlert(int(row["id"]), status, a, now, row["mark_severity"], row["severity"])

    def set_status(self, alert_id: int, status: str) -> bool:
        if status not in STATUSES:
            raise AnomalyError(f"unknown alert status {status!r} (allowed: {', '.join(STATUSES)})")
        with self._lock, self._db:
            cur = self._db.execute(
                "UPDATE anomalies SET status = ? WHERE id = ? AND status != ?",
                (status, alert_id, status),
            )
        return cur.rowcount == 1

    def alert(self, alert_id: int) -> StoredAlert | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM anomalies WHERE id = ?", (alert_id,)).fetchone()
        return _stored(row) if row else None

    def alerts(self, statuses: Iterable[str] = STATUSES, limit: int = 500) -> list[StoredAlert]:
        """Newest first."""
        wanted = list(statuses)
        marks = ",".join("?" * len(wanted))
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM anomalies WHERE status IN ({marks}) ORDER BY ts DESC, id DESC "
                "LIMIT ?",
                (*wanted, limit),
            ).fetchall()
        return [_stored(r) for r in rows]

    def host_scores(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT host, score FROM host_scores ORDER BY score DESC")
            return {r["host"]: int(r["score"]) for r in rows}

    def _prune(self, now: float) -> None:
        cutoff = now - self.retention
        self._db.execute(
            "DELETE FROM anomalies WHERE ts < ? AND status != 'quarantined'", (cutoff,)
        )
        self._db.execute("DELETE FROM host_scores WHERE updated < ?", (cutoff,))
        self._db.execute(
            "DELETE FROM quarantine WHERE lifted IS NOT NULL AND lifted < ?", (cutoff,)
        )

    def prune(self, now: float) -> None:
        """Delete what is older than the retention (``record`` does this hourly)."""
        with self._lock, self._db:
            self._last_prune = now
            self._prune(now)

    # -- quarantine -----------------------------------------------------------------------
    def add_quarantine(
        self, address: str, reason: str, by: str, now: float, alert_id: int | None = None
    ) -> QuarantineEntry | None:
        """Record an active quarantine; None if the address already has one.

        ``address`` must already be canonical (``quarantine.canonical_address``).
        """
        with self._lock, self._db:
            try:
                cur = self._db.execute(
                    "INSERT INTO quarantine (address, reason, alert_id, since, by) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (address, reason, alert_id, now, by),
                )
            except sqlite3.IntegrityError:
                return None
            if alert_id is not None:
                self._db.execute(
                    "UPDATE anomalies SET status = 'quarantined' WHERE id = ?", (alert_id,)
                )
        return QuarantineEntry(int(cur.lastrowid or 0), address, reason, alert_id, now, by)

    def lift_quarantine(self, address: str, by: str, now: float) -> QuarantineEntry | None:
        """End the address's active quarantine (its alert becomes ``lifted``); None if none."""
        with self._lock, self._db:
            row = self._db.execute(
                "SELECT * FROM quarantine WHERE address = ? AND lifted IS NULL", (address,)
            ).fetchone()
            if row is None:
                return None
            self._db.execute(
                "UPDATE quarantine SET lifted = ?, lifted_by = ? WHERE id = ?", (now, by, row["id"])
            )
            if row["alert_id"] is not None:
                self._db.execute(
                    "UPDATE anomalies SET status = 'lifted' "
                    "WHERE id = ? AND status = 'quarantined'",
                    (row["alert_id"],),
                )
        return QuarantineEntry(**{**_entry(row).__dict__, "lifted": now, "lifted_by": by})

    def quarantined(self) -> list[QuarantineEntry]:
        """Active quarantines, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM quarantine WHERE lifted IS NULL ORDER BY since, id"
            ).fetchall()
        return [_entry(r) for r in rows]

    def quarantine_history(self, limit: int = 200) -> list[QuarantineEntry]:
        """Every quarantine, newest first, lifted ones included."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM quarantine ORDER BY since DESC, id DESC LIMIT ?", (limit,)
            ).fetchall()
        return [_entry(r) for r in rows]


def read_only(path: Path) -> sqlite3.Connection | None:
    """A read-only connection for the web UI (None when scoring has not made the file)."""
    if not Path(path).exists():
        return None
    conn = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True, timeout=5.0)
    conn.row_factory = sqlite3.Row
    return conn


def row_dict(row: sqlite3.Row) -> dict[str, Any]:
    """A row as JSON-ready data (the JSON text columns decoded)."""
    out = dict(row)
    for key in ("subscores", "modifiers", "evidence"):
        if isinstance(out.get(key), str):
            with contextlib.suppress(ValueError):
                out[key] = json.loads(out[key])
    return out


__all__ = [
    "DB_NAME",
    "STATUSES",
    "AnomalyStore",
    "QuarantineEntry",
    "StoredAlert",
    "read_only",
    "row_dict",
    "severity_rank",
]

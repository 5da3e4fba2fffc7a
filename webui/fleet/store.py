"""The fleet server's state in SQLite (``<state>/fleet.db``, WAL): credentials, the latest
check-in of every appliance, a check-in history for reports, alerts, and the bundles seen.

Only a SHA-256 of each appliance credential is kept: the token is high-entropy (256 bits),
so a plain hash is enough and a stolen database does not let anyone check in. The history
keeps the few fields reports need, not the whole body, so a year of a 1,000-box fleet
checking in every 5 minutes stays in the low gigabytes; older rows are pruned.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS credentials (
    id INTEGER PRIMARY KEY,
    site TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS appliances (
    credential_id INTEGER PRIMARY KEY REFERENCES credentials(id),
    site TEXT NOT NULL,
    appliance_id TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    address TEXT NOT NULL,
    report TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkins (
    id INTEGER PRIMARY KEY,
    credential_id INTEGER NOT NULL,
    site TEXT NOT NULL,
    at REAL NOT NULL,
    bundle_version INTEGER,
    live_version INTEGER,
    sync_result TEXT,
    apply_ok INTEGER,
    apply_error TEXT,
    max_score INTEGER,
    open_high INTEGER,
    uptime_s INTEGER,
    counters TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS checkins_site_at ON checkins (site, at);
CREATE INDEX IF NOT EXISTS checkins_at ON checkins (at);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    credential_id INTEGER NOT NULL,
    site TEXT NOT NULL,
    appliance_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    opened REAL NOT NULL,
    closed REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_open ON alerts (credential_id, kind) WHERE closed IS NULL;
CREATE INDEX IF NOT EXISTS alerts_site ON alerts (site, opened);
CREATE TABLE IF NOT EXISTS auth_failures (
    address TEXT NOT NULL,
    ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS auth_failures_address ON auth_failures (address, ts);
CREATE TABLE IF NOT EXISTS bundles (
    site TEXT NOT NULL,
    version INTEGER NOT NULL,
    created TEXT NOT NULL,
    message TEXT NOT NULL,
    seen REAL NOT NULL,
    PRIMARY KEY (site, version)
);
"""


@dataclass(frozen=True)
class Credential:
    id: int
    site: str
    appliance_id: str | None  # bound at the first check-in


@dataclass(frozen=True)
class CheckIn:
    """A validated check-in body (see views.parse_checkin); ``body`` is what is kept as the
    appliance's latest report and shown on the fleet page."""

    site: str
    appliance_id: str
    bundle_version: int | None
    live_version: int | None
    sync_result: str | None
    apply_ok: bool | None
    apply_error: str | None
    max_score: int | None
    open_high: int | None
    uptime_s: int | None
    counters: dict[str, Any]
    body: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class Appliance:
    credential_id: int
    site: str
    created: float
    appliance_id: str | None  # None: the credential was issued but never used
    first_seen: float | None
    last_seen: float | None
    report: dict[str, Any] | None


@dataclass(frozen=True)
class Alert:
    id: int
    site: str
    appliance_id: str
    kind: str
    detail: str
    opened: float
    closed: float | None


@dataclass(frozen=True)
class HistoryRow:
    credential_id: int
    at: float
    bundle_version: int | None
    live_version: int | None
    sync_result: str | None
    apply_ok: bool | None
    apply_error: str | None
    max_score: int | None
    open_high: int | None
    uptime_s: int | None
    counters: dict[str, Any]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class FleetStore:
    """One connection behind a lock: the server runs one process with a few threads and every
    transaction is a handful of indexed statements, so serialising them costs less than the
    bookkeeping of a connection per thread."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(credentials)")}
        if "revoked" not in columns:  # fleet.db files made before revocation existed
            self._db.execute("ALTER TABLE credentials ADD COLUMN revoked REAL")
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _q(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- credentials -------------------------------------------------------------------------
    def add_credential(self, site: str, now: float) -> str:
        """A new appliance credential for ``site``; only its hash is stored."""
        token = "egc_" + secrets.token_urlsafe(32)
        self._q(
            "INSERT INTO credentials (site, token_sha256, created) VALUES (?, ?, ?)",
            (site, token_hash(token), now),
        )
        return token

    def credential(self, token: str) -> Credential | None:
        rows = self._q(
            "SELECT c.id, c.site, a.appliance_id FROM credentials c "
            "LEFT JOIN appliances a ON a.credential_id = c.id "
            "WHERE c.token_sha256 = ? AND c.revoked IS NULL",
            (token_hash(token),),
        )
        if not rows:
            return None
        cid, site, appliance_id = rows[0]
        return Credential(int(cid), str(site), appliance_id)

    def revoke_credentials(
        self, site: str, now: float, *, appliance_id: str | None = None, token: str | None = None
    ) -> int:
        """Revoke the credential of one appliance (by the id it checked in with) or one
        issued token; returns how many were revoked (0: nothing matched).

        Its check-ins are refused from now on and it leaves the fleet page, the stale sweep
        and the alerts (open ones are closed); its history stays for the site's reports.
        """
        if (appliance_id is None) == (token is None):
            raise ValueError("name exactly one of appliance_id and token")
        if token is not None:
            match, args = "c.token_sha256 = ?", (token_hash(token),)
        else:
            match, args = "a.appliance_id = ?", (appliance_id or "",)
        with self._lock, self._db:
            ids = [
                int(row[0])
                for row in self._db.execute(
                    "SELECT c.id FROM credentials c LEFT JOIN appliances a ON a.credential_id ="
                    f" c.id WHERE c.site = ? AND c.revoked IS NULL AND {match}",
                    (site, *args),
                )
            ]
            for cid in ids:
                self._db.execute("UPDATE credentials SET revoked = ? WHERE id = ?", (now, cid))
                self._db.execute(
                    "UPDATE alerts SET closed = ? WHERE credential_id = ? AND closed IS NULL",
                    (now, cid),
                )
        return len(ids)

    # -- operator sign-in failures -----------------------------------------------------------
    def record_auth_failure(self, address: str, now: float) -> None:
        """Count one wrong operator password from ``address``; a day of them is kept."""
        with self._lock, self._db:
            self._db.execute("DELETE FROM auth_failures WHERE ts < ?", (now - 86400,))
            self._db.execute(
                "INSERT INTO auth_failures (address, ts) VALUES (?, ?)", (address, now)
            )

    def auth_failures(self, address: str, since: float) -> int:
        rows = self._q(
            "SELECT COUNT(*) FROM auth_failures WHERE address = ? AND ts >= ?", (address, since)
        )
        return int(rows[0][0])

    # -- check-ins ---------------------------------------------------------------------------
    def record_checkin(
        self, cred: Credential, report: CheckIn, now: float, address: str, high_score: int
    ) -> None:
        """Latest state, one history row, and the alerts the report opens or closes, in one
        transaction (a crash never leaves an alert without the check-in that raised it)."""
        body = json.dumps(report.body, separators=(",", ":"))
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    "INSERT INTO appliances (credential_id, site, appliance_id, first_seen,"
                    " last_seen, address, report) VALUES (?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT(credential_id) DO UPDATE SET last_seen = excluded.last_seen,"
                    " address = excluded.address, report = excluded.report",
                    (cred.id, cred.site, report.appliance_id, now, now, address, body),
                )
                db.execute(
                    "INSERT INTO checkins (credential_id, site, at, bundle_version, live_version,"
                    " sync_result, apply_ok, apply_error, max_score, open_high, uptime_s,"
                    " counters) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        cred.id, cred.site, now, report.bundle_version, report.live_version,
                        report.sync_result, report.apply_ok, report.apply_error,
                        report.max_score, report.open_high, report.uptime_s,
                        json.dumps(report.counters, separators=(",", ":")),
                    ),
                )  # fmt: skip
                raised = {
                    "stale": None,
                    "anomaly": (
                        f"host anomaly score {report.max_score}"
                        + (f", {report.open_high} open high alert(s)" if report.open_high else "")
                        if report.max_score is not None and report.max_score >= high_score
                        else None
                    ),
                    "sync": (
                        f"sync {report.sync_result}: {report.body['last_sync'].get('reason')}"
                        if report.sync_result in ("refused", "failed")
                        else None
                    ),
                    "apply": (
                        f"apply failed: {report.apply_error or 'no error given'}"
                        if report.apply_ok is False
                        else None
                    ),
                }
                for kind, detail in raised.items():
                    self._set_alert(cred, report.appliance_id, kind, detail, now)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def _set_alert(
        self, cred: Credential, appliance_id: str, kind: str, detail: str | None, now: float
    ) -> None:
        if detail is None:
            self._db.execute(
                "UPDATE alerts SET closed = ? WHERE credential_id = ? AND kind = ?"
                " AND closed IS NULL",
                (now, cred.id, kind),
            )
            return
        self._db.execute(
            "INSERT INTO alerts (credential_id, site, appliance_id, kind, detail, opened)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (credential_id, kind) WHERE closed IS NULL"
            " DO UPDATE SET detail = excluded.detail",
            (cred.id, cred.site, appliance_id, kind, detail[:500], now),
        )

    def sweep_stale(self, now: float, stale_after: float) -> int:
        """Open a "stale" alert for every appliance silent for longer than ``stale_after``
        seconds; the next check-in closes it. Returns how many were opened."""
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO alerts (credential_id, site, appliance_id, kind, detail, opened)"
                " SELECT a.credential_id, a.site, a.appliance_id, 'stale',"
                " 'no check-in since ' || strftime('%Y-%m-%d %H:%M:%SZ', a.last_seen, 'unixepoch'),"
                " ? FROM appliances a JOIN credentials c ON c.id = a.credential_id"
                " WHERE c.revoked IS NULL AND a.last_seen < ? AND NOT EXISTS (SELECT 1 FROM alerts"
                " x WHERE x.credential_id = a.credential_id AND x.kind = 'stale'"
                " AND x.closed IS NULL)",
                (now, now - stale_after),
            )
            return cur.rowcount

    def prune(self, before: float) -> None:
        """Forget check-ins and closed alerts older than ``before`` (the retention)."""
        with self._lock:
            self._db.execute("DELETE FROM checkins WHERE at < ?", (before,))
            self._db.execute(
                "DELETE FROM alerts WHERE closed IS NOT NULL AND closed < ?", (before,)
            )

    # -- reading -----------------------------------------------------------------------------
    def appliances(self, site: str | None = None) -> list[Appliance]:
        where, args = ("AND c.site = ?", (site,)) if site is not None else ("", ())
        rows = self._q(
            "SELECT c.id, c.site, c.created, a.appliance_id, a.first_seen, a.last_seen, a.report"
            " FROM credentials c LEFT JOIN appliances a ON a.credential_id = c.id"
            f" WHERE c.revoked IS NULL {where}"
            " ORDER BY c.site, a.appliance_id",
            args,
        )
        return [
            Appliance(
                int(r[0]),
                str(r[1]),
                float(r[2]),
                r[3],
                r[4],
                r[5],
                json.loads(r[6]) if r[6] else None,
            )
            for r in rows
        ]

    def alerts(self, *, site: str | None = None, open_only: bool = True, since: float = 0.0,
               until: float = float("inf")) -> list[Alert]:  # fmt: skip
        sql = "SELECT id, site, appliance_id, kind, detail, opened, closed FROM alerts WHERE 1"
        args: list[Any] = []
        if open_only:
            sql += " AND closed IS NULL"
        if site is not None:
            sql += " AND site = ?"
            args.append(site)
        sql += " AND opened < ? AND (closed IS NULL OR closed >= ?) ORDER BY opened DESC"
        args += [until, since]
        return [Alert(*row) for row in self._q(sql, tuple(args))]

    def history(self, site: str, since: float, until: float) -> list[HistoryRow]:
        rows = self._q(
            "SELECT credential_id, at, bundle_version, live_version, sync_result, apply_ok,"
            " apply_error, max_score, open_high, uptime_s, counters FROM checkins"
            " WHERE site = ? AND at >= ? AND at < ? ORDER BY credential_id, at",
            (site, since, until),
        )
        return [
            HistoryRow(
                int(r[0]),
                float(r[1]),
                r[2],
                r[3],
                r[4],
                None if r[5] is None else bool(r[5]),
                r[6],
                r[7],
                r[8],
                r[9],
                json.loads(r[10]),
            )
            for r in rows
        ]

    def record_bundle(
        self, site: str, version: int, created: str, message: str, now: float
    ) -> None:
        self._q(
            "INSERT OR IGNORE INTO bundles (site, version, created, message, seen)"
            " VALUES (?, ?, ?, ?, ?)",
            (site, version, created, message, now),
        )

    def bundle_messages(self, site: str) -> dict[int, tuple[str, str]]:
        """``{version: (created, message)}`` of every bundle of ``site`` this server has seen."""
        rows = self._q("SELECT version, created, message FROM bundles WHERE site = ?", (site,))
        return {int(v): (str(c), str(m)) for v, c, m in rows}

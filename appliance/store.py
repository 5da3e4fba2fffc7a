"""The config store: every applied policy version, its ruleset, and the confirm timer.

SQLite (WAL, synchronous=FULL) holds the history, so each state change is one durable
transaction that a kill -9 either completed or never started. The current policy is also
kept as a plain file (written atomically) so an admin can read it without tools.

Version statuses:
  pending      recorded, nft transaction not done yet (a crash here leaves it pending)
  failed       nft refused it; the previous ruleset stayed in force
  unconfirmed  live, waiting for ``edgeguard confirm`` before the deadline
  good         live and confirmed (or applied without a confirm window)
  rolled-back  was live, reverted (deadline passed, or an explicit rollback)
  superseded   was good, replaced by a newer version
  interrupted  found pending after a crash; never known to be live
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from appliance.atomic import write_atomic
from appliance.errors import ApplianceError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    id INTEGER PRIMARY KEY,
    created TEXT NOT NULL,
    author TEXT NOT NULL,
    message TEXT NOT NULL,
    policy_sha256 TEXT NOT NULL,
    policy_text TEXT NOT NULL,
    ruleset_text TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    rolled_back_to INTEGER
);
CREATE TABLE IF NOT EXISTS confirm (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL,
    deadline REAL NOT NULL,
    fallback INTEGER
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""


class StoreError(ApplianceError):
    """The state directory is unusable (permissions, corruption)."""


@dataclass(frozen=True)
class Version:
    id: int
    created: str
    author: str
    message: str
    policy_sha256: str
    status: str
    error: str | None
    rolled_back_to: int | None


@dataclass(frozen=True)
class PendingConfirm:
    version: int
    deadline: float  # wall-clock seconds since the epoch: survives restarts and reboots
    fallback: int | None  # the version to return to; None: remove our table


def _utcnow() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class ConfigStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.root / "state.db", isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open state in {self.root}: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic change: BEGIN IMMEDIATE takes the write lock up front."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- versions ---------------------------------------------------------------------------
    def record(self, policy_text: str, ruleset_text: str, *, author: str, message: str) -> int:
        sha = hashlib.sha256(policy_text.encode("utf-8")).hexdigest()
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO versions (created, author, message, policy_sha256, policy_text,"
                " ruleset_text, status) VALUES (?, ?, ?, ?, ?, ?, 'pending')",
                (_utcnow(), author, message, sha, policy_text, ruleset_text),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

    def set_status(self, version: int, status: str, *, error: str | None = None) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE versions SET status = ?, error = ? WHERE id = ?", (status, error, version)
            )

    def _row(self, where: str, args: tuple[object, ...]) -> Version | None:
        row = self._db.execute(
            "SELECT id, created, author, message, policy_sha256, status, error, rolled_back_to"
            f" FROM versions WHERE {where}",
            args,
        ).fetchone()
        return Version(*row) if row else None

    def version(self, version: int) -> Version:
        found = self._row("id = ?", (version,))
        if found is None:
            raise StoreError(f"no version {version} in the history (see `edgeguard history`)")
        return found

    def texts(self, version: int) -> tuple[str, str]:
        """(policy text, compiled ruleset text) of a version."""
        row = self._db.execute(
            "SELECT policy_text, ruleset_text FROM versions WHERE id = ?", (version,)
        ).fetchone()
        if row is None:
            raise StoreError(f"no version {version} in the history")
        return row[0], row[1]

    def history(self, limit: int = 50) -> list[Version]:
        rows = self._db.execute(
            "SELECT id, created, author, message, policy_sha256, status, error, rolled_back_to"
            " FROM versions ORDER BY id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [Version(*r) for r in rows]

    def live(self) -> Version | None:
        """The version the store believes is enforced (good or unconfirmed)."""
        return self._row("status IN ('good', 'unconfirmed') ORDER BY id DESC LIMIT 1", ())

    def last_good(self) -> Version | None:
        return self._row("status = 'good' ORDER BY id DESC LIMIT 1", ())

    def recover_interrupted(self) -> list[int]:
        """Versions left pending by a crash: they were never known to be live."""
        with self.transaction() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM versions WHERE status = 'pending'")]
            db.execute("UPDATE versions SET status = 'interrupted' WHERE status = 'pending'")
        return ids

    def make_live(self, version: int, *, confirmed: bool, pending: PendingConfirm | None) -> None:
        """After a successful transaction: one DB transaction moves every status at once."""
        with self.transaction() as db:
            db.execute(
                "UPDATE versions SET status = 'superseded'"
                " WHERE status IN ('good', 'unconfirmed') AND id != ?",
                (version,),
            )
            db.execute(
                "UPDATE versions SET status = ?, error = NULL WHERE id = ?",
                ("good" if confirmed else "unconfirmed", version),
            )
            db.execute("DELETE FROM confirm")
            if pending is not None:
                db.execute(
                    "INSERT INTO confirm (id, version, deadline, fallback) VALUES (1, ?, ?, ?)",
                    (pending.version, pending.deadline, pending.fallback),
                )
        policy_text, _ = self.texts(version)
        write_atomic(self.root / "policy.yaml", policy_text)

    def revert(self, from_version: int, to_version: int | None) -> None:
        """After a rollback transaction: mark the reverted version and revive the target."""
        with self.transaction() as db:
            db.execute(
                "UPDATE versions SET status = 'rolled-back', rolled_back_to = ? WHERE id = ?",
                (to_version, from_version),
            )
            if to_version is not None:
                db.execute(
                    "UPDATE versions SET status = 'superseded'"
                    " WHERE status IN ('good', 'unconfirmed') AND id != ?",
                    (to_version,),
                )
                db.execute("UPDATE versions SET status = 'good' WHERE id = ?", (to_version,))
            db.execute("DELETE FROM confirm")
        if to_version is not None:
            write_atomic(self.root / "policy.yaml", self.texts(to_version)[0])

    def restore_policy_file(self, version: int) -> bool:
        """Make ``policy.yaml`` hold ``version``'s policy; True if it had to be rewritten.

        Why: ``make_live`` and ``revert`` commit the statuses first and write the file after,
        so a crash in between (kill -9, power cut) leaves the database naming the new live
        version and the file holding the old one. Boot calls this to close that gap."""
        policy_text, _ = self.texts(version)
        path = self.root / "policy.yaml"
        try:
            if path.read_text(encoding="utf-8") == policy_text:
                return False
        except (OSError, UnicodeDecodeError):
            pass  # missing or damaged: rewritten below
        write_atomic(path, policy_text)
        return True

    # -- confirm timer ----------------------------------------------------------------------
    def pending_confirm(self) -> PendingConfirm | None:
        row = self._db.execute("SELECT version, deadline, fallback FROM confirm").fetchone()
        return PendingConfirm(*row) if row else None

    def confirm(self, version: int) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM confirm WHERE version = ?", (version,))
            db.execute("UPDATE versions SET status = 'good' WHERE id = ?", (version,))

    # -- events -----------------------------------------------------------------------------
    def event(self, kind: str, detail: str) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO events (at, kind, detail) VALUES (?, ?, ?)", (_utcnow(), kind, detail)
            )

    def events(self, limit: int = 20) -> list[tuple[str, str, str]]:
        rows = self._db.execute(
            "SELECT at, kind, detail FROM events ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]

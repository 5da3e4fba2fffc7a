"""The UI's own state in SQLite: users, API tokens, the setup token, and the audit log.

Separate from the appliance's config store (policy history) on purpose: the UI can be
reset (users lost) without touching what the firewall enforces, and the audit log is
append-only from the UI's side.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from webui.passwords import hash_password, verify_password

Role = Literal["admin", "viewer", "msp"]
ROLES: tuple[Role, ...] = ("admin", "viewer", "msp")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    pw_hash TEXT NOT NULL,
    totp_secret TEXT,
    totp_last_step INTEGER NOT NULL DEFAULT -1,
    recovery TEXT NOT NULL DEFAULT '[]',
    created REAL NOT NULL,
    session_epoch INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tokens (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    last_used REAL
);
CREATE TABLE IF NOT EXISTS login_failures (
    key TEXT NOT NULL,
    ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS login_failures_key ON login_failures (key, ts);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    user TEXT NOT NULL,
    address TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: Role
    totp_enabled: bool
    session_epoch: int


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class UiStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def _q(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- settings ----------------------------------------------------------------------------
    def setting(self, key: str, default: str | None = None) -> str | None:
        rows = self._q("SELECT value FROM settings WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else default

    def set_setting(self, key: str, value: str) -> None:
        self._q(
            "INSERT INTO settings (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # -- first start -------------------------------------------------------------------------
    def needs_setup(self) -> bool:
        return not self._q("SELECT 1 FROM users LIMIT 1")

    def new_setup_token(self) -> str:
        """A one-time token for the setup page, printed on the console (only its hash kept)."""
        token = secrets.token_urlsafe(18)
        self.set_setting("setup_token", _token_hash(token))
        return token

    def check_setup_token(self, token: str) -> bool:
        stored = self.setting("setup_token")
        return bool(stored) and secrets.compare_digest(stored or "", _token_hash(token))

    # -- users -------------------------------------------------------------------------------
    def _user(self, row: tuple[Any, ...]) -> User:
        return User(int(row[0]), str(row[1]), row[2], bool(row[3]), int(row[4]))

    _COLS = "id, name, role, totp_secret IS NOT NULL, session_epoch"

    def add_user(self, name: str, password: str, role: Role) -> User:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO users (name, role, pw_hash, created) VALUES (?, ?, ?, ?)",
                (name, role, hash_password(password), time.time()),
            )
            self._db.execute("DELETE FROM settings WHERE key = 'setup_token'")
        user = self.user_by_id(int(cur.lastrowid or 0))
        assert user is not None
        return user

    def user_by_id(self, user_id: int) -> User | None:
        rows = self._q(f"SELECT {self._COLS} FROM users WHERE id = ?", (user_id,))
        return self._user(rows[0]) if rows else None

    def user_by_name(self, name: str) -> User | None:
        rows = self._q(f"SELECT {self._COLS} FROM users WHERE name = ?", (name,))
        return self._user(rows[0]) if rows else None

    def users(self) -> list[User]:
        return [self._user(r) for r in self._q(f"SELECT {self._COLS} FROM users ORDER BY name")]

    def check_password(self, name: str, password: str) -> User | None:
        rows = self._q("SELECT id, pw_hash FROM users WHERE name = ?", (name,))
        if not rows:
            verify_password(password, hash_password("timing-equaliser"))
            return None
        if not verify_password(password, str(rows[0][1])):
            return None
        return self.user_by_id(int(rows[0][0]))

    def set_password(self, user_id: int, password: str) -> None:
        self._q(
            "UPDATE users SET pw_hash = ?, session_epoch = session_epoch + 1 WHERE id = ?",
            (hash_password(password), user_id),
        )

    def set_role(self, user_id: int, role: Role) -> None:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        self._q(
            "UPDATE users SET role = ?, session_epoch = session_epoch + 1 WHERE id = ?",
            (role, user_id),
        )

    def delete_user(self, user_id: int) -> None:
        self._q("DELETE FROM users WHERE id = ?", (user_id,))

    # -- two factors -------------------------------------------------------------------------
    def totp(self, user_id: int) -> tuple[str | None, int]:
        rows = self._q("SELECT totp_secret, totp_last_step FROM users WHERE id = ?", (user_id,))
        return (rows[0][0], int(rows[0][1])) if rows else (None, -1)

    def enable_totp(self, user_id: int, secret: str, step: int, recovery: list[str]) -> None:
        self._q(
            "UPDATE users SET totp_secret = ?, totp_last_step = ?, recovery = ? WHERE id = ?",
            (secret, step, json.dumps(recovery), user_id),
        )

    def disable_totp(self, user_id: int) -> None:
        self._q(
            "UPDATE users SET totp_secret = NULL, totp_last_step = -1, recovery = '[]' "
            "WHERE id = ?",
            (user_id,),
        )

    def used_totp_step(self, user_id: int, step: int) -> None:
        self._q("UPDATE users SET totp_last_step = ? WHERE id = ?", (step, user_id))

    def use_recovery_code(self, user_id: int, code_hash: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT recovery FROM users WHERE id = ?", (user_id,)).fetchone()
            codes = json.loads(row[0]) if row else []
            if code_hash not in codes:
                return False
            codes.remove(code_hash)
            self._db.execute(
                "UPDATE users SET recovery = ? WHERE id = ?", (json.dumps(codes), user_id)
            )
            return True

    # -- API tokens ----------------------------------------------------------------------------
    def new_token(self, user_id: int, name: str) -> str:
        token = "egt_" + secrets.token_urlsafe(32)
        self._q(
            "INSERT INTO tokens (user_id, name, token_hash, created) VALUES (?, ?, ?, ?)",
            (user_id, name, _token_hash(token), time.time()),
        )
        return token

    def user_for_token(self, token: str) -> User | None:
        rows = self._q("SELECT id, user_id FROM tokens WHERE token_hash = ?", (_token_hash(token),))
        if not rows:
            return None
        self._q("UPDATE tokens SET last_used = ? WHERE id = ?", (time.time(), rows[0][0]))
        return self.user_by_id(int(rows[0][1]))

    def tokens(self, user_id: int) -> list[dict[str, Any]]:
        rows = self._q(
            "SELECT id, name, created, last_used FROM tokens WHERE user_id = ? ORDER BY id",
            (user_id,),
        )
        return [{"id": r[0], "name": r[1], "created": r[2], "last_used": r[3]} for r in rows]

    def revoke_token(self, user_id: int, token_id: int) -> None:
        self._q("DELETE FROM tokens WHERE id = ? AND user_id = ?", (token_id, user_id))

    # -- brute force -------------------------------------------------------------------------
    def failures(self, key: str, since: float) -> int:
        return int(
            self._q("SELECT COUNT(*) FROM login_failures WHERE key = ? AND ts >= ?", (key, since))[
                0
            ][0]
        )

    def record_failure(self, key: str, now: float) -> None:
        self._q("INSERT INTO login_failures (key, ts) VALUES (?, ?)", (key, now))
        self._q("DELETE FROM login_failures WHERE ts < ?", (now - 86_400,))

    def clear_failures(self, key: str) -> None:
        self._q("DELETE FROM login_failures WHERE key = ?", (key,))

    # -- audit ---------------------------------------------------------------------------------
    def audit(self, user: str, address: str, action: str, detail: str = "") -> None:
        self._q(
            "INSERT INTO audit (ts, user, address, action, detail) VALUES (?, ?, ?, ?, ?)",
            (time.time(), user, address, action, detail[:2000]),
        )

    def audit_log(self, limit: int = 200) -> list[dict[str, Any]]:
        rows = self._q(
            "SELECT ts, user, address, action, detail FROM audit ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [
            {"ts": r[0], "user": r[1], "address": r[2], "action": r[3], "detail": r[4]}
            for r in rows
        ]

    def close(self) -> None:
        self._db.close()

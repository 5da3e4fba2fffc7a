"""The check-in: what the appliance tells its MSP after every sync cycle (the UniFi "inform").

Why it reads so little and tolerates so much: a check-in must go out even when parts of the
appliance are broken, because that is exactly when the MSP needs to hear from it. Every
reader here returns an empty or neutral value for a missing or unreadable file instead of
failing the check-in.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.sync.transport import Transport, TransportError

CHECKIN_PATH = "/api/v1/checkin"
HIGH_SCORE = 85  # the fleet page's "high anomaly score" line


def read_counters(state_dir: Path) -> dict[str, Any]:
    """``<state>/counters.json`` as the controller wrote it, or {} when absent."""
    try:
        data = json.loads((state_dir / "counters.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_blocked(state_dir: Path, limit: int = 200) -> dict[str, int]:
    """DNS blocks per list (category) in the query log: the MSP report's "blocked threats by
    category". Counts over the log's retention, so they drop when old rows are pruned; the
    fleet server reads a drop as a counter restart. Reads only blocked rows (an index)."""
    path = state_dir / "querylog.db"
    if not path.is_file():
        return {}
    try:
        with closing(sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)) as db:
            rows = db.execute(
                "SELECT COALESCE(list, rule, 'blocked'), count(*) FROM queries"
                " WHERE verdict = 'blocked' GROUP BY 1 ORDER BY 2 DESC LIMIT ?",
                (limit,),
            ).fetchall()
    except sqlite3.Error:
        return {}
    return {str(name): int(count) for name, count in rows}


def read_anomalies(state_dir: Path) -> dict[str, int]:
    """The highest host score and the number of open high alerts in ``anomalies.db``."""
    path = state_dir / "anomalies.db"
    summary = {"max_host_score": 0, "open_high": 0}
    if not path.is_file():
        return summary
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return summary
    try:
        row = db.execute("SELECT MAX(score) FROM host_scores").fetchone()
        summary["max_host_score"] = int(row[0] or 0)
        row = db.execute(
            "SELECT COUNT(*) FROM anomalies WHERE status = 'open' AND score >= ?", (HIGH_SCORE,)
        ).fetchone()
        summary["open_high"] = int(row[0] or 0)
    except sqlite3.Error:  # a table not created yet, a locked or damaged file
        pass
    finally:
        db.close()
    return summary


def disk_free_mb(path: Path) -> int:
    try:
        return int(shutil.disk_usage(path).free // 1_000_000)
    except OSError:
        return 0


def system_uptime(proc: Path = Path("/proc")) -> int:
    try:
        return int(float((proc / "uptime").read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        return 0


@dataclass(frozen=True)
class HealthProbe:
    """Where health comes from; tests pass their own callables."""

    ruleset_loaded: Callable[[], bool]
    resolver_up: Callable[[], bool]
    uptime_s: Callable[[], int] = system_uptime

    def read(self, state_dir: Path) -> dict[str, Any]:
        def safe(probe: Callable[[], bool]) -> bool:
            try:
                return bool(probe())
            except Exception:  # a probe that breaks reports "not healthy", never no check-in
                return False

        return {
            "resolver": safe(self.resolver_up),
            "ruleset_loaded": safe(self.ruleset_loaded),
            "disk_free_mb": disk_free_mb(state_dir),
            "uptime_s": self.uptime_s(),
        }


def build_checkin(
    *,
    site: str,
    appliance_id: str,
    software: str,
    bundle_version: int | None,
    live_policy_text: str | None,
    live_version: int | None,
    last_apply: dict[str, Any] | None,
    last_sync: dict[str, Any],
    conflicts: list[str],
    health: dict[str, Any],
    state_dir: Path,
    now: dt.datetime,
) -> dict[str, Any]:
    """The check-in document of the contract (one JSON object)."""
    sha = (
        hashlib.sha256(live_policy_text.encode("utf-8")).hexdigest()
        if live_policy_text is not None
        else None
    )
    return {
        "site": site,
        "appliance_id": appliance_id,
        "software": software,
        "bundle_version": bundle_version,
        "policy_sha256": sha,
        "live_version": live_version,
        "last_apply": last_apply or {"ok": True, "error": None, "at": None},
        "last_sync": last_sync,
        "conflicts": conflicts,
        "health": health,
        "counters": {**read_counters(state_dir), "blocked": read_blocked(state_dir)},
        "anomalies": read_anomalies(state_dir),
        "time": now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def send_checkin(
    transport: Transport, checkin_base: str, payload: dict[str, Any], credential: str
) -> None:
    """POST the check-in; TransportError when the collector cannot be reached or says no."""
    answer = transport.post_json(checkin_base.rstrip("/") + CHECKIN_PATH, payload, token=credential)
    if answer.get("ok") is not True:
        raise TransportError(f"the check-in was not accepted: {answer}")

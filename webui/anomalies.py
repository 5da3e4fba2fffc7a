"""Anomalies: what the scoring found, why, and what to do about it.

The scoring itself is a later issue. Until it lands this page says so and shows nothing:
no sample rows, because an admin who sees a made-up anomaly on a security appliance learns
to ignore the page. The page reads the table ``anomalies`` in ``<state>/anomalies.db`` as
soon as it exists, with whatever columns it has (the scoring issue decides them; ``id``,
``ts``, ``host``, ``score``, ``explanation`` and ``status`` are shown best). "Dismiss" sets
``status`` when the table has that column. "Quarantine host" needs a firewall rule, so it
will go through the policy editor like every other change; it is not offered yet.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, url_for
from werkzeug.wrappers import Response

from webui.api import api_doc
from webui.bridge import appliance
from webui.security import audit, roles_required
from webui.users import json_error

bp = Blueprint("anomalies", __name__)
api_bp = Blueprint("anomalies_api", __name__, url_prefix="/api/v1")
ANOMALY_DB = "anomalies.db"
LIMIT = 500


def _db() -> Path:
    return appliance().config.state_dir / ANOMALY_DB


def _columns(conn: sqlite3.Connection) -> list[str]:
    return [str(r[1]) for r in conn.execute("PRAGMA table_info(anomalies)")]


def read_anomalies(db: Path, limit: int = LIMIT) -> tuple[list[str], list[dict[str, Any]]] | None:
    """(columns, rows newest first), or None when scoring has not made its table yet."""
    if not db.exists():
        return None
    try:
        with closing(sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)) as conn:
            columns = _columns(conn)
            if not columns:
                return None
            order = "ts DESC" if "ts" in columns else "rowid DESC"
            conn.row_factory = sqlite3.Row
            rows = conn.execute(f"SELECT * FROM anomalies ORDER BY {order} LIMIT ?", (limit,))
            return columns, [dict(r) for r in rows]
    except sqlite3.Error:
        return None


def dismiss(db: Path, anomaly_id: int) -> bool:
    """Mark one anomaly dismissed; False when there is no such open one (or no status)."""
    if not db.exists():
        return False
    with closing(sqlite3.connect(db, timeout=5.0)) as conn:
        if not {"id", "status"} <= set(_columns(conn)):
            return False
        with conn:
            cur = conn.execute(
                "UPDATE anomalies SET status = 'dismissed' WHERE id = ? AND "
                "COALESCE(status, '') != 'dismissed'",
                (anomaly_id,),
            )
        return cur.rowcount == 1


def _when(value: Any) -> str:
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)


@bp.route("/anomalies")
def index() -> Any:
    found = read_anomalies(_db())
    return render_template(
        "anomalies.html",
        installed=found is not None,
        columns=found[0] if found else [],
        rows=found[1] if found else [],
        when=_when,
    )


@bp.route("/anomalies/<int:anomaly_id>/dismiss", methods=["POST"])
@roles_required("admin", "msp")
def dismiss_page(anomaly_id: int) -> Response:
    if not dismiss(_db(), anomaly_id):
        abort(404, "no such anomaly to dismiss")
    audit("anomaly-dismissed", f"#{anomaly_id}")
    flash(f"Anomaly #{anomaly_id} dismissed.", "ok")
    return redirect(url_for("anomalies.index"))


@api_bp.route("/anomalies")
@api_doc("Anomalies the scoring found, newest first (installed: false until scoring exists)")
def api_anomalies() -> Response:
    found = read_anomalies(_db())
    return jsonify(installed=found is not None, anomalies=found[1] if found else [])


@api_bp.route("/anomalies/<int:anomaly_id>/dismiss", methods=["POST"])
@api_doc("Dismiss an anomaly", roles=("admin", "msp"))
@roles_required("admin", "msp")
def api_dismiss(anomaly_id: int) -> Response:
    if not dismiss(_db(), anomaly_id):
        return json_error(404, "no such anomaly to dismiss")
    audit("anomaly-dismissed", f"#{anomaly_id}")
    return jsonify(id=anomaly_id, status="dismissed")

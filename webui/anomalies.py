"""Anomalies: what the scoring found and why, per-host scores, and quarantine.

The controller's scoring writes ``<state>/anomalies.db`` (``appliance.anomaly.store``);
this page reads it read-only, so a busy UI never holds a write lock the scorer waits for.
Until the file exists (the live policy has no ``anomaly:`` section, or scoring has not run
yet) the page says so and shows nothing: no sample rows, because an admin who sees a
made-up anomaly on a security appliance learns to ignore the page.

Changes are the admin's or MSP's (viewers only look), carry the CSRF token like every
form, and are audited:

* Dismiss sets the alert's status (it opens again only if its severity rises);
* Quarantine host / Lift quarantine write the ``quarantine`` table, the same one
  ``edgeguard quarantine`` writes; the controller puts the address into (or takes it out
  of) the firewall's quarantine sets within seconds. The UI never talks to nft for this.

An older ``anomalies`` table with other columns (before scoring landed) is still shown
and can still be dismissed when it has ``id`` and ``status``.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from flask import Blueprint, abort, flash, g, jsonify, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from appliance.anomaly.quarantine import QuarantineManager
from appliance.anomaly.store import AnomalyStore, read_only, row_dict
from appliance.errors import AnomalyError
from webui.api import api_doc
from webui.bridge import appliance
from webui.security import audit, roles_required
from webui.store import Role
from webui.users import body, json_error

bp = Blueprint("anomalies", __name__)
api_bp = Blueprint("anomalies_api", __name__, url_prefix="/api/v1")
ANOMALY_DB = "anomalies.db"
LIMIT = 500
CHANGERS: tuple[Role, ...] = ("admin", "msp")


def _db() -> Path:
    return appliance().config.state_dir / ANOMALY_DB


def _columns(conn: sqlite3.Connection, table: str = "anomalies") -> list[str]:
    return [str(r[1]) for r in conn.execute(f"PRAGMA table_info({table})")]


def read_anomalies(db: Path, limit: int = LIMIT) -> tuple[list[str], list[dict[str, Any]]] | None:
    """(columns, rows newest first), or None when scoring has not made its table yet."""
    try:
        conn = read_only(db)
        if conn is None:
            return None
        with closing(conn):
            columns = _columns(conn)
            if not columns:
                return None
            order = "ts DESC, rowid DESC" if "ts" in columns else "rowid DESC"
            rows = conn.execute(f"SELECT * FROM anomalies ORDER BY {order} LIMIT ?", (limit,))
            return columns, [row_dict(r) for r in rows]
    except sqlite3.Error:
        return None


def _read_table(db: Path, table: str, query: str) -> list[dict[str, Any]]:
    """Rows of another table of the file ([] when it or the file does not exist yet)."""
    try:
        conn = read_only(db)
        if conn is None:
            return []
        with closing(conn):
            if not _columns(conn, table):
                return []
            return [dict(r) for r in conn.execute(query)]
    except sqlite3.Error:
        return []


def read_host_scores(db: Path) -> list[dict[str, Any]]:
    return _read_table(
        db, "host_scores", "SELECT host, score, updated FROM host_scores ORDER BY score DESC, host"
    )


def read_quarantine(db: Path, *, active_only: bool = True) -> list[dict[str, Any]]:
    where = "WHERE lifted IS NULL " if active_only else ""
    return _read_table(
        db, "quarantine", f"SELECT * FROM quarantine {where}ORDER BY since DESC, id DESC LIMIT 200"
    )


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


def _manager() -> QuarantineManager:
    return QuarantineManager(AnomalyStore(_db()))


def quarantine_host(address: str, reason: str, alert_id: int | None = None) -> str:
    """Quarantine by the logged-in user; the canonical address. AnomalyError if refused."""
    if not reason.strip():
        raise AnomalyError("say why (the reason is kept with the quarantine and in the audit log)")
    manager = _manager()
    try:
        entry = manager.add(address, reason=reason, by=g.user.name, alert_id=alert_id)
    finally:
        manager.store.close()
    audit("host-quarantined", f"{entry.address}: {entry.reason}")
    return entry.address


def lift_host(address: str) -> str:
    manager = _manager()
    try:
        entry = manager.lift(address, by=g.user.name)
    finally:
        manager.store.close()
    audit("quarantine-lifted", entry.address)
    return entry.address


def _when(value: Any) -> str:
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value) if value is not None else ""


def _alert_id(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


# -- pages ---------------------------------------------------------------------------------
@bp.route("/anomalies")
def index() -> Any:
    db = _db()
    found = read_anomalies(db)
    quarantined = read_quarantine(db)
    return render_template(
        "anomalies.html",
        installed=found is not None,
        columns=found[0] if found else [],
        rows=found[1] if found else [],
        scored="severity" in (found[0] if found else []),
        hosts=read_host_scores(db),
        quarantined=quarantined,
        quarantined_hosts={q["address"] for q in quarantined},
        can_change=g.user.role in CHANGERS,
        when=_when,
    )


@bp.route("/anomalies/<int:anomaly_id>/dismiss", methods=["POST"])
@roles_required(*CHANGERS)
def dismiss_page(anomaly_id: int) -> Response:
    if not dismiss(_db(), anomaly_id):
        abort(404, "no such anomaly to dismiss")
    audit("anomaly-dismissed", f"#{anomaly_id}")
    flash(f"Anomaly #{anomaly_id} dismissed.", "ok")
    return redirect(url_for("anomalies.index"))


@bp.route("/anomalies/quarantine", methods=["POST"])
@roles_required(*CHANGERS)
def quarantine_page() -> Response:
    form = request.form
    try:
        address = quarantine_host(
            form.get("address", ""), form.get("reason", ""), _alert_id(form.get("alert_id"))
        )
    except AnomalyError as exc:
        flash(f"Not quarantined: {exc}", "error")
    else:
        flash(
            f"{address} is quarantined: within seconds it reaches only the appliance "
            "(DNS, DHCP, ping, the block page).",
            "ok",
        )
    return redirect(url_for("anomalies.index"))


@bp.route("/anomalies/quarantine/lift", methods=["POST"])
@roles_required(*CHANGERS)
def lift_page() -> Response:
    try:
        address = lift_host(request.form.get("address", ""))
    except AnomalyError as exc:
        flash(f"Not lifted: {exc}", "error")
    else:
        flash(f"Quarantine of {address} lifted: it reaches the network again within seconds.", "ok")
    return redirect(url_for("anomalies.index"))


# -- JSON API ------------------------------------------------------------------------------
@api_bp.route("/anomalies")
@api_doc("Anomalies the scoring found, newest first (installed: false until scoring exists)")
def api_anomalies() -> Response:
    found = read_anomalies(_db())
    return jsonify(installed=found is not None, anomalies=found[1] if found else [])


@api_bp.route("/anomalies/<int:anomaly_id>/dismiss", methods=["POST"])
@api_doc("Dismiss an anomaly", roles=CHANGERS)
@roles_required(*CHANGERS)
def api_dismiss(anomaly_id: int) -> Response:
    if not dismiss(_db(), anomaly_id):
        return json_error(404, "no such anomaly to dismiss")
    audit("anomaly-dismissed", f"#{anomaly_id}")
    return jsonify(id=anomaly_id, status="dismissed")


@api_bp.route("/anomalies/hosts")
@api_doc("Per-host anomaly scores (0-100), highest first")
def api_hosts() -> Response:
    return jsonify(hosts=read_host_scores(_db()))


@api_bp.route("/quarantine")
@api_doc("Quarantined hosts (all=1: lifted ones too), newest first", params={"all": "0 or 1"})
def api_quarantine() -> Response:
    active_only = request.args.get("all", "0") != "1"
    return jsonify(quarantine=read_quarantine(_db(), active_only=active_only))


@api_bp.route("/quarantine", methods=["POST"])
@api_doc("Quarantine a host", body="{address, reason, alert_id?}", roles=CHANGERS)
@roles_required(*CHANGERS)
def api_quarantine_add() -> Response:
    data = body()
    try:
        address = quarantine_host(
            str(data.get("address", "")),
            str(data.get("reason", "")),
            _alert_id(data.get("alert_id")),
        )
    except AnomalyError as exc:
        return json_error(400, str(exc))
    return jsonify(address=address, status="quarantined")


@api_bp.route("/quarantine/lift", methods=["POST"])
@api_doc("Lift a host's quarantine", body="{address}", roles=CHANGERS)
@roles_required(*CHANGERS)
def api_quarantine_lift() -> Response:
    try:
        address = lift_host(str(body().get("address", "")))
    except AnomalyError as exc:
        return json_error(400, str(exc))
    return jsonify(address=address, status="lifted")

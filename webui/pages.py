"""The dashboard: what the box did lately and what it enforces, on one page and as JSON.

DNS figures come from the query log's aggregate tables (``webui.querylog_data``), so the
page costs the same with 5 million rows as with 5. Where the appliance does not collect
something yet (firewall counters, anomaly scores, MSP sync) the page says so instead of
showing made-up numbers.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from typing import Any

import yaml
from flask import Blueprint, current_app, jsonify, render_template, request, url_for
from werkzeug.wrappers import Response

from appliance.anomaly.store import DB_NAME as ANOMALY_DB
from appliance.anomaly.store import read_only
from appliance.errors import ApplianceError
from webui import charts, querylog_data
from webui.api import PREFIX, api_doc
from webui.bridge import appliance

bp = Blueprint("pages", __name__)
api_bp = Blueprint("dashboard_api", __name__, url_prefix=PREFIX)

COUNTERS_NOTE = "counters: not collected yet (the controller, edgeguard run, saves them)"
ANOMALIES_NOTE = "no anomaly scoring yet: the policy has no anomaly: section, or nothing scored"
ANOMALY_SEVERITIES = ("medium", "high", "critical")  # what the dashboard calls worth a look
SYNC_STATUS = "not configured"
_rule_counts: dict[str, tuple[int, int]] = {}  # policy sha256 -> (rules, rules with counter)


def _rows(items: list[tuple[str, int]], key: str) -> list[dict[str, Any]]:
    return [{key: name, "count": count} for name, count in items]


def dns_summary(now: float, *, minutes: int = 60, hours: int = 24, top: int = 10) -> dict[str, Any]:
    """The query log's numbers, or why there are none."""
    try:
        conn = querylog_data.connect(appliance().querylog_db)
    except querylog_data.LogUnavailable as exc:
        return {"available": False, "note": str(exc)}
    try:
        if not querylog_data.has_aggregates(conn):
            return {
                "available": False,
                "note": "the query log has no statistics yet: they appear once the DNS filter"
                " runs this version",
            }
        s = querylog_data.stats(conn, now, minutes=minutes, hours=hours, top=top)
    except sqlite3.Error as exc:  # busy past the timeout: the page still shows the rest
        return {"available": False, "note": f"the query log cannot be read right now: {exc}"}
    finally:
        conn.close()
    recent = s.minutes
    return {
        "available": True,
        "window_hours": s.window_hours,
        "total": s.total,
        "blocked": s.blocked,
        "share_blocked": s.blocked / s.total if s.total else None,
        "cached": s.cached,
        "failed": s.failed,
        "mean_latency_ms": s.mean_latency_ms,
        "queries_per_minute": [{"minute": m * 60, "total": t, "blocked": b} for m, t, b in recent],
        "mean_per_minute": sum(t for _, t, _ in recent) / len(recent) if recent else 0.0,
        "top_domains": _rows(s.top["domain"], "name"),
        "top_blocked": _rows(s.top["blocked"], "name"),
        "top_clients": _rows(s.top["client"], "client"),
        "backfill_rows": s.backfill_rows,
    }


def _count_rules(sha: str, policy_text: str) -> tuple[int, int]:
    """How many rules the policy has, and how many ask for a counter (cached by hash)."""
    if sha not in _rule_counts:
        try:
            data = yaml.load(policy_text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except yaml.YAMLError:
            data = None
        rules = data.get("rules") if isinstance(data, dict) else None
        rules = rules if isinstance(rules, list) else []
        counted = sum(1 for r in rules if isinstance(r, dict) and r.get("counter") is True)
        if len(_rule_counts) > 16:
            _rule_counts.clear()
        _rule_counts[sha] = (len(rules), counted)
    return _rule_counts[sha]


def policy_summary() -> dict[str, Any]:
    """The applied version and a pending commit-confirm, from the config store."""
    try:
        store = appliance().engine().store
        live = store.live()
        pending = store.pending_confirm()
        counts = _count_rules(live.policy_sha256, store.texts(live.id)[0]) if live else None
    except ApplianceError as exc:
        return {"live": None, "pending_confirm": None, "error": str(exc), "rules": None}
    return {
        "live": None
        if live is None
        else {
            "version": live.id,
            "created": live.created,
            "author": live.author,
            "message": live.message,
            "status": live.status,
        },
        "pending_confirm": None
        if pending is None
        else {
            "version": pending.version,
            "deadline": pending.deadline,
            "fallback": pending.fallback,
        },
        "error": None,
        "rules": None if counts is None else {"total": counts[0], "with_counter": counts[1]},
    }


def firewall_counters(now: float, top: int = 8) -> dict[str, Any]:
    """The counters ``edgeguard run`` saves every 10 s (``<state>/counters.json``): the
    busiest rules by packets, and how old the reading is."""
    path = appliance().config.state_dir / "counters.json"
    try:
        data = json.loads(path.read_text())
        rows = [c for c in data["counters"] if isinstance(c, dict)]
        age = max(0.0, now - float(data["ts"]))
    except (OSError, ValueError, KeyError, TypeError):
        return {"counters": None, "note": COUNTERS_NOTE}
    rows.sort(key=lambda c: -int(c.get("packets", 0)))
    return {
        "counters": rows[:top],
        "total": len(rows),
        "age_s": round(age),
        "note": f"read {round(age)} s ago from the live ruleset"
        + ("; the controller seems stopped" if age > 60 else ""),
    }


def dashboard_data(
    now: float, *, minutes: int = 60, hours: int = 24, top: int = 10
) -> dict[str, Any]:
    policy = policy_summary()
    return {
        "generated": now,
        "dns": dns_summary(now, minutes=minutes, hours=hours, top=top),
        "policy": policy,
        "firewall": {"rules": policy["rules"], **firewall_counters(now)},
        "anomalies": anomaly_summary(),
        "sync": sync_summary(),
    }


def sync_summary() -> dict[str, Any]:
    """MSP sync as the agent left it: when the MSP last answered, the last cycle's result
    and the sections where the office admin's change was kept over the MSP's (conflicts)."""
    sync_dir = appliance().config.state_dir / "sync"
    if not (sync_dir / "enrolment.json").exists():
        return {"status": SYNC_STATUS, "conflicts": []}
    try:
        enrolment = json.loads((sync_dir / "enrolment.json").read_text(encoding="utf-8"))
        state = json.loads((sync_dir / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"status": "enrolled; no sync state yet", "conflicts": []}
    last = state.get("last_sync") or {}
    result = str(last.get("result") or "never")
    why = last.get("reason") or last.get("error")
    version = state.get("bundle_version")
    status = (
        f"site {enrolment.get('site', '?')}: last synced {state.get('last_contact') or 'never'}"
        f", last cycle {result}{f' ({why})' if why else ''}"
        f"{f', bundle v{version}' if version is not None else ''}"
    )
    conflicts = [str(c.get("section")) for c in state.get("conflicts") or [] if c.get("section")]
    return {"status": status, "conflicts": conflicts, "result": result}


def anomaly_summary(top: int = 5) -> dict[str, Any]:
    """Open alerts of medium severity or more (highest score first) and quarantined hosts."""
    conn = read_only(appliance().config.state_dir / ANOMALY_DB)
    if conn is None:
        return {"open": [], "quarantined": [], "note": ANOMALIES_NOTE}
    marks = ",".join("?" * len(ANOMALY_SEVERITIES))
    try:
        with closing(conn):
            rows = conn.execute(
                "SELECT id, host, kind, peer, score, severity, last FROM anomalies"
                f" WHERE status = 'open' AND severity IN ({marks})"
                " ORDER BY score DESC, last DESC LIMIT ?",
                (*ANOMALY_SEVERITIES, top),
            ).fetchall()
            quarantined = [
                str(r[0])
                for r in conn.execute("SELECT address FROM quarantine WHERE lifted IS NULL")
            ]
    except sqlite3.Error:
        return {"open": [], "quarantined": [], "note": ANOMALIES_NOTE}
    alerts = [dict(r) for r in rows]
    note = "" if alerts else "no open alerts of medium severity or more"
    return {"open": alerts, "quarantined": quarantined, "note": note}


def _log_link(**args: Any) -> str:
    if "querylog.index" not in current_app.view_functions:
        return ""
    return url_for("querylog.index", **args)


@bp.route("/")
def dashboard() -> Any:
    data = dashboard_data(time.time())
    dns = data["dns"]
    svg: dict[str, Any] = {}
    if dns["available"]:
        linked = "querylog.index" in current_app.view_functions
        svg = {
            "minutes": charts.minute_bars(
                [(q["minute"] // 60, q["total"], q["blocked"]) for q in dns["queries_per_minute"]],
                label="Queries per minute, last 60 minutes (blocked in red)",
            ),
            "domains": charts.bar_list(
                [(r["name"], r["count"]) for r in dns["top_domains"]],
                label="Top domains (not blocked)",
                link=(lambda n: _log_link(name=n)) if linked else None,
            ),
            "blocked": charts.bar_list(
                [(r["name"], r["count"]) for r in dns["top_blocked"]],
                label="Top blocked domains",
                blocked=True,
                link=(lambda n: _log_link(name=n, verdict="blocked")) if linked else None,
            ),
            "clients": charts.bar_list(
                [(r["client"], r["count"]) for r in dns["top_clients"]],
                label="Top clients",
                link=(lambda n: _log_link(client=n)) if linked else None,
            ),
        }
    return render_template(
        "dashboard.html",
        d=data,
        svg=svg,
        policy_page="policy.index" in current_app.view_functions,
        anomalies_page="anomalies.index" in current_app.view_functions,
    )


def _bounded(name: str, default: int, low: int, high: int) -> int | None:
    raw = request.args.get(name, "")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if low <= value <= high else None


@api_bp.route("/stats")
@api_doc(
    "Dashboard numbers: DNS answers per minute, totals and top lists, the applied policy"
    " version, pending commit-confirm, firewall, anomalies and sync status",
    params={
        "minutes": "per-minute series length, 1-1440 (default 60)",
        "hours": "window of totals and top lists in hours, 1-168 (default 24)",
        "top": "entries per top list, 1-100 (default 10)",
    },
)
def stats() -> Response:
    minutes = _bounded("minutes", 60, 1, 1440)
    hours = _bounded("hours", 24, 1, 168)
    top = _bounded("top", 10, 1, 100)
    if minutes is None or hours is None or top is None:
        resp = jsonify(error="minutes: 1-1440, hours: 1-168, top: 1-100")
        resp.status_code = 400
        return resp
    return jsonify(dashboard_data(time.time(), minutes=minutes, hours=hours, top=top))

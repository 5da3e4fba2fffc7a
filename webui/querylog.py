"""The query log page and ``GET /api/v1/querylog``: every DNS answer, filtered and paged.

Filters: client (exact), name (exact, ``*.suffix`` or ``*text*``), verdict, time range
(UTC). Pages go by id cursor (``before=``/``after=``), never by OFFSET, so page 1,000 costs
what page 1 does. Names in the log are whatever the network asked for, so they are
attacker-controlled: the template only ever prints them through Jinja's autoescape.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, jsonify, render_template, request, url_for
from werkzeug.wrappers import Response

from dns_filter.querylog import VERDICTS
from webui import querylog_data
from webui.api import PREFIX, api_doc
from webui.bridge import appliance
from webui.querylog_data import Filters, Page

bp = Blueprint("querylog", __name__)
api_bp = Blueprint("querylog_api", __name__, url_prefix=PREFIX)

FILTER_ARGS = ("client", "name", "verdict", "from", "to")
QTYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA",
          33: "SRV", 64: "SVCB", 65: "HTTPS", 255: "ANY"}  # fmt: skip
MAX_TEXT = 255


@bp.app_template_filter("utc_time")
def utc_time(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def qtype_name(qtype: int) -> str:
    return QTYPES.get(qtype, f"TYPE{qtype}")


def parse_time(raw: str) -> float:
    """Unix seconds, or an ISO 8601 date and time (UTC unless it names an offset)."""
    try:
        return float(raw)
    except ValueError:
        pass
    when = dt.datetime.fromisoformat(raw)  # ValueError for the caller
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def _cursor(args: Mapping[str, str], name: str, errors: list[str]) -> int | None:
    raw = args.get(name, "")
    if not raw:
        return None
    if raw.isdigit() and 0 < int(raw) < 2**63:
        return int(raw)
    errors.append(f"{name}: expected a row id")
    return None


def parse_filters(args: Mapping[str, str]) -> tuple[Filters, int | None, int | None, list[str]]:
    """Filters and cursors from the query string, and what was wrong with it."""
    errors: list[str] = []
    text = {k: args.get(k, "").strip()[:MAX_TEXT] for k in ("client", "name", "verdict")}
    if text["verdict"] and text["verdict"] not in VERDICTS:
        errors.append(f"verdict: one of {', '.join(VERDICTS)}")
        text["verdict"] = ""
    times: dict[str, float | None] = {}
    for key in ("from", "to"):
        raw = args.get(key, "").strip()
        times[key] = None
        if raw:
            try:
                times[key] = parse_time(raw)
            except (ValueError, OverflowError):
                errors.append(f"{key}: expected YYYY-MM-DDTHH:MM (UTC) or unix seconds")
    filters = Filters(
        client=text["client"] or None,
        name=text["name"] or None,
        verdict=text["verdict"] or None,
        since=times["from"],
        until=times["to"],
    )
    before, after = _cursor(args, "before", errors), _cursor(args, "after", errors)
    if before is not None and after is not None:
        errors.append("give before or after, not both")
        after = None
    return filters, before, after, errors


def _search(filters: Filters, before: int | None, after: int | None, limit: int) -> Page:
    try:
        conn = querylog_data.connect(appliance().querylog_db)
    except querylog_data.LogUnavailable as exc:
        return Page([], note=str(exc))
    try:
        return querylog_data.search(conn, filters, before=before, after=after, limit=limit)
    except sqlite3.Error as exc:  # busy past the timeout, or a log being rewritten
        return Page([], complete=False, note=f"the query log cannot be read right now: {exc}")
    finally:
        conn.close()


def _form_time(ts: float | None) -> str:
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M")


def _link_maker(base: str) -> Callable[..., str]:
    """``link(client=...)``: what ``url_for`` builds, for a hundred links a page, cheaply."""

    def link(**args: str) -> str:
        return f"{base}?{urlencode(args)}"

    return link


@bp.route("/querylog")
def index() -> Any:
    filters, before, after, errors = parse_filters(request.args)
    page = _search(filters, before, after, querylog_data.PAGE_SIZE)
    active = {k: request.args[k] for k in FILTER_ARGS if request.args.get(k, "").strip()}
    return render_template(
        "querylog.html",
        page=page,
        filters=filters,
        form={
            "client": filters.client or "",
            "name": filters.name or "",
            "verdict": filters.verdict or "",
            "from": _form_time(filters.since),
            "to": _form_time(filters.until),
        },
        active=active,
        errors=errors,
        verdicts=VERDICTS,
        qtype_name=qtype_name,
        link=_link_maker(url_for("querylog.index")),
        paged=before is not None or after is not None,
    )


def row_json(row: querylog_data.Row) -> dict[str, Any]:
    out = asdict(row)
    out["time"] = dt.datetime.fromtimestamp(row.ts, dt.UTC).isoformat()
    out["name"] = out.pop("qname")
    out["group"] = out.pop("client_group")
    out["qtype_name"] = qtype_name(row.qtype)
    return out


@api_bp.route("/querylog")
@api_doc(
    "Query log rows, newest first; `next` is the `before` cursor of the next (older) page,"
    " `prev` the `after` cursor of the newer one; `complete` is false when the search hit"
    " its time budget before filling the page (continue with `next`)",
    params={
        "client": "client address (exact)",
        "name": "name: exact, *.suffix (subdomains), *suffix, or *text* (contains)",
        "verdict": "one of " + ", ".join(VERDICTS),
        "from": "start (inclusive): unix seconds or ISO 8601, UTC unless an offset is given",
        "to": "end (exclusive): unix seconds or ISO 8601",
        "before": "cursor: rows with a smaller id",
        "after": "cursor: rows with a larger id (the page just newer)",
        "limit": "rows per page, 1-500 (default 50)",
    },
)
def api_querylog() -> Response:
    filters, before, after, errors = parse_filters(request.args)
    raw_limit = request.args.get("limit", "")
    limit = int(raw_limit) if raw_limit.isdigit() else querylog_data.PAGE_SIZE
    if raw_limit and not (raw_limit.isdigit() and 1 <= limit <= 500):
        errors.append("limit: 1-500")
    if errors:
        resp = jsonify(error="; ".join(errors))
        resp.status_code = 400
        return resp
    page = _search(filters, before, after, limit)
    return jsonify(
        rows=[row_json(r) for r in page.rows],
        next=page.older,
        prev=page.newer,
        complete=page.complete,
        note=page.note,
    )

"""Check-in API, the fleet page and its JSON twin.

A check-in is validated field by field (types, sizes, enumerations) before anything is
stored; a bad one gets a 400 naming the field, so an agent bug shows up in its own log
rather than as a strange row on the fleet page. Unknown top-level keys are ignored: a newer
agent may report more than this server knows.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, abort, jsonify, render_template, request
from werkzeug.exceptions import RequestEntityTooLarge

from webui.fleet.app import MAX_CHECKIN_BYTES, fleet_settings, fleet_store, now
from webui.fleet.store import Alert, Appliance, CheckIn, FleetStore

bp = Blueprint("fleet", __name__)

SITE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
APPLIANCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
SYNC_RESULTS = ("applied", "unchanged", "refused", "failed", "never")  # never: agent default
MAX_TEXT = 2000
KEPT_RULE_COUNTERS = 50  # busiest firewall rules kept per check-in (for reports)
KEPT_CATEGORIES = 200


class CheckInError(ValueError):
    """A check-in body this server will not store; the message names the field."""


def _field(obj: dict[str, Any], key: str, kinds: tuple[type, ...], where: str) -> Any:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) and bool not in kinds:  # bool is an int subclass
        raise CheckInError(f"{where}{key}: expected {kinds[0].__name__}, got a boolean")
    if not isinstance(value, kinds):
        raise CheckInError(
            f"{where}{key}: expected {kinds[0].__name__}, got {type(value).__name__}"
        )
    if isinstance(value, str) and len(value) > MAX_TEXT:
        raise CheckInError(f"{where}{key}: longer than {MAX_TEXT} characters")
    if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value < 2**53:
        raise CheckInError(f"{where}{key}: out of range ({value})")
    return value


def _section(body: dict[str, Any], key: str) -> dict[str, Any]:
    value = _field(body, key, (dict,), "")
    return value if value is not None else {}


def parse_checkin(body: Any) -> CheckIn:
    """The check-in JSON of the contract, validated; raises CheckInError."""
    if not isinstance(body, dict):
        raise CheckInError("the body must be a JSON object")
    site = _field(body, "site", (str,), "")
    if not site or not SITE_RE.match(site):
        raise CheckInError("site: required; letters, digits, '.', '_' and '-' (max 64)")
    appliance_id = _field(body, "appliance_id", (str,), "")
    if not appliance_id or not APPLIANCE_RE.match(appliance_id):
        raise CheckInError("appliance_id: required; letters, digits, '.', '_', ':', '-'")
    for key in ("software", "time"):
        _field(body, key, (str,), "")
    for key in ("bundle_version", "live_version"):
        _field(body, key, (int,), "")
    digest = _field(body, "policy_sha256", (str,), "")
    if digest is not None and not SHA256_RE.match(digest):
        raise CheckInError("policy_sha256: expected 64 lowercase hex digits")
    last_apply = _section(body, "last_apply")
    _field(last_apply, "ok", (bool,), "last_apply.")
    _field(last_apply, "error", (str,), "last_apply.")
    _field(last_apply, "at", (str,), "last_apply.")
    last_sync = _section(body, "last_sync")
    _field(last_sync, "at", (str,), "last_sync.")
    _field(last_sync, "reason", (str,), "last_sync.")
    result = _field(last_sync, "result", (str,), "last_sync.")
    if result is not None and result not in SYNC_RESULTS:
        raise CheckInError(f"last_sync.result: one of {', '.join(SYNC_RESULTS)}; got {result!r}")
    conflicts = _field(body, "conflicts", (list,), "") or []
    if len(conflicts) > 100 or not all(isinstance(c, str) and len(c) <= 100 for c in conflicts):
        raise CheckInError("conflicts: a list of at most 100 section names")
    health = _section(body, "health")
    for key in ("resolver", "ruleset_loaded"):
        _field(health, key, (bool,), "health.")
    for key in ("disk_free_mb", "uptime_s"):
        _field(health, key, (int,), "health.")
    counters = _section(body, "counters")
    anomalies = _section(body, "anomalies")
    for key in ("max_host_score", "open_high"):
        _field(anomalies, key, (int,), "anomalies.")
    known = [
        "site",
        "appliance_id",
        "software",
        "time",
        "bundle_version",
        "live_version",
        "policy_sha256",
        "last_apply",
        "last_sync",
        "conflicts",
        "health",
        "counters",
        "anomalies",
    ]
    return CheckIn(
        site=site,
        appliance_id=appliance_id,
        bundle_version=body.get("bundle_version"),
        live_version=body.get("live_version"),
        sync_result=result,
        apply_ok=last_apply.get("ok"),
        apply_error=last_apply.get("error"),
        max_score=anomalies.get("max_host_score"),
        open_high=anomalies.get("open_high"),
        uptime_s=health.get("uptime_s"),
        counters=compact_counters(counters),
        body={key: body.get(key) for key in known if key != "counters"},
    )


def compact_counters(counters: dict[str, Any]) -> dict[str, Any]:
    """What reports need from the counters an appliance sends: blocks by category and the
    busiest firewall rules. An appliance sends ``counters.json`` whole, one entry per rule
    (a 1,000-rule policy makes ~80 KB); keeping all of it every 5 minutes for every box
    would grow the history by gigabytes a day."""
    kept: dict[str, Any] = {}
    blocked = counters.get("blocked")
    if isinstance(blocked, dict):
        items = [(str(k)[:100], v) for k, v in blocked.items() if type(v) is int and v >= 0]
        kept["blocked"] = dict(sorted(items, key=lambda kv: -kv[1])[:KEPT_CATEGORIES])
    rules = counters.get("counters")
    if isinstance(rules, list):
        valid = [
            {
                "comment": str(r.get("comment") or r.get("chain") or "?")[:200],
                "packets": r["packets"],
            }
            for r in rules
            if isinstance(r, dict) and type(r.get("packets")) is int and r["packets"] >= 0
        ]
        valid.sort(key=lambda r: -int(r["packets"]))
        kept["counters"] = valid[:KEPT_RULE_COUNTERS]
    return kept


def _error(status: int, message: str) -> Response:
    resp = jsonify(error=message)
    resp.status_code = status
    return resp


@bp.post("/api/v1/checkin")
def checkin() -> Response:
    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Bearer "):
        return _error(401, "missing credential: send Authorization: Bearer <credential>")
    store = fleet_store()
    cred = store.credential(auth[7:].strip())
    if cred is None:
        return _error(401, "unknown credential: issue one with `edgeguard msp add-appliance`")
    if request.content_length is not None and request.content_length > MAX_CHECKIN_BYTES:
        return _error(413, f"check-in larger than {MAX_CHECKIN_BYTES} bytes")
    try:
        raw = request.get_data(cache=False)
    except RequestEntityTooLarge:
        return _error(413, f"check-in larger than {MAX_CHECKIN_BYTES} bytes")
    try:
        report = parse_checkin(json.loads(raw))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and CheckInError both
        return _error(400, f"bad check-in: {exc}")
    if report.site != cred.site:
        return _error(401, f"this credential is not valid for site {report.site!r}")
    if cred.appliance_id is not None and cred.appliance_id != report.appliance_id:
        return _error(
            403,
            f"this credential belongs to appliance {cred.appliance_id!r}; a re-installed "
            "appliance needs a new credential (edgeguard msp add-appliance)",
        )
    settings = fleet_settings()
    store.record_checkin(cred, report, now(), request.remote_addr or "?", settings.high_score)
    published_bundles().version(cred.site)  # remember the bundle's message for reports
    return jsonify(ok=True)


# -- published bundles ---------------------------------------------------------------------


class PublishedBundles:
    """The version each site's published ``bundle.json`` carries, re-read when the file
    changes. Only ``signed.version``/``created``/``message`` are read: this is the MSP's own
    publish directory, shown for comparison, not trusted input the server acts on."""

    def __init__(self, base: Path, store: FleetStore) -> None:
        self.base, self.store = base, store
        self._cache: dict[str, tuple[tuple[int, int], int | None]] = {}

    def version(self, site: str) -> int | None:
        path = self.base / "sites" / site / "bundle.json"
        try:
            st = path.stat()
        except OSError:
            return None
        key = (st.st_mtime_ns, st.st_size)
        cached = self._cache.get(site)
        if cached and cached[0] == key:
            return cached[1]
        version: int | None = None
        try:
            signed = json.loads(path.read_bytes())["signed"]
            if isinstance(signed["version"], int):
                version = signed["version"]
                self.store.record_bundle(
                    site, version, str(signed.get("created", "")),
                    str(signed.get("message", "")), now(),
                )  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError):
            version = None
        self._cache[site] = (key, version)
        return version


def published_bundles() -> PublishedBundles:
    from flask import current_app

    found: PublishedBundles = current_app.extensions["fleet_published"]
    return found


# -- the fleet -----------------------------------------------------------------------------

# Why an appliance needs attention, most urgent first; the page sorts by the first it has.
PROBLEMS = ("stale", "sync refused", "sync failed", "apply error", "high anomaly score")


@dataclass(frozen=True)
class FleetEntry:
    site: str
    appliance_id: str | None
    last_seen: float | None
    age_s: float | None
    published: int | None
    applied: int | None
    problems: tuple[str, ...]
    notes: tuple[str, ...]  # worth knowing, not failures: behind published, conflicts
    report: dict[str, Any]

    @property
    def rank(self) -> int:
        """Sort order: by the most urgent problem; then notes (behind, conflicts); then the
        healthy; credentials never used last."""
        if self.problems:
            return PROBLEMS.index(self.problems[0])
        if self.appliance_id is None:
            return len(PROBLEMS) + 2
        return len(PROBLEMS) + (0 if self.notes else 1)

    def as_json(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "appliance_id": self.appliance_id,
            "last_checkin": iso(self.last_seen),
            "age_s": None if self.age_s is None else round(self.age_s),
            "published_version": self.published,
            "applied_version": self.applied,
            "problems": list(self.problems),
            "notes": list(self.notes),
            "report": self.report,
        }


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fleet_entry(
    app: Appliance, published: int | None, at: float, stale_after: float, high_score: int
) -> FleetEntry:
    """What the page shows for one appliance, and why it needs attention if it does."""
    report = app.report or {}
    sync = report.get("last_sync") or {}
    apply = report.get("last_apply") or {}
    score = (report.get("anomalies") or {}).get("max_host_score")
    age = None if app.last_seen is None else max(0.0, at - app.last_seen)
    problems: list[str] = []
    if age is not None and age > stale_after:
        problems.append("stale")
    if sync.get("result") in ("refused", "failed"):
        problems.append(f"sync {sync['result']}")
    if apply.get("ok") is False:
        problems.append("apply error")
    if isinstance(score, int) and score >= high_score:
        problems.append("high anomaly score")
    applied = report.get("bundle_version")
    notes: list[str] = []
    if app.appliance_id is None:
        notes.append("never checked in")
    elif published is not None and applied != published:
        notes.append(f"behind: v{applied if applied is not None else '-'} of v{published}")
    if report.get("conflicts"):
        notes.append("conflicts: " + ", ".join(report["conflicts"]))
    return FleetEntry(
        app.site, app.appliance_id, app.last_seen, age, published, applied,
        tuple(problems), tuple(notes), report,
    )  # fmt: skip


def fleet_entries(site: str | None = None) -> list[FleetEntry]:
    settings = fleet_settings()
    bundles = published_bundles()
    at = now()
    entries = [
        fleet_entry(a, bundles.version(a.site), at, settings.stale_after, settings.high_score)
        for a in fleet_store().appliances(site)
    ]
    entries.sort(key=lambda e: (e.rank, e.site, e.appliance_id or ""))
    return entries


def age_text(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    s = int(seconds)
    if s < 120:
        return f"{s} s ago"
    if s < 7200:
        return f"{s // 60} min ago"
    if s < 2 * 86400:
        return f"{s // 3600} h ago"
    return f"{s // 86400} days ago"


@bp.get("/")
def fleet_page() -> str:
    entries = fleet_entries()
    return render_template(
        "fleet/fleet.html",
        entries=entries,
        alerts=fleet_store().alerts(),
        failing=sum(1 for e in entries if e.problems),
        age_text=age_text,
        iso=iso,
        generated=iso(now()),
        settings=fleet_settings(),
    )


@bp.get("/api/v1/fleet")
def fleet_api() -> Response:
    entries = fleet_entries()
    return jsonify(
        generated=iso(now()),
        appliances=[e.as_json() for e in entries],
        alerts=[_alert_json(a) for a in fleet_store().alerts()],
    )


@bp.get("/api/v1/sites/<site>")
def site_api(site: str) -> Response:
    if not SITE_RE.match(site):
        abort(404)
    entries = fleet_entries(site)
    if not entries:
        return _error(404, f"no appliance is registered for site {site!r}")
    return jsonify(
        site=site,
        published_version=published_bundles().version(site),
        appliances=[e.as_json() for e in entries],
        alerts=[_alert_json(a) for a in fleet_store().alerts(site=site)],
    )


def _alert_json(alert: Alert) -> dict[str, Any]:
    return {
        "site": alert.site,
        "appliance_id": alert.appliance_id,
        "kind": alert.kind,
        "detail": alert.detail,
        "opened": iso(alert.opened),
        "closed": iso(alert.closed),
    }

"""The fleet server's Flask app: check-in API for appliances, fleet page and reports for the
MSP operator.

Two kinds of caller, two kinds of credential, nothing shared with the admin UI:

* appliances send ``Authorization: Bearer <credential>`` to ``POST /api/v1/checkin`` (one
  credential per appliance, issued by ``edgeguard msp add-appliance``);
* the operator uses HTTP Basic auth with the password in ``--password-file`` (any user
  name). Basic auth needs no cookies, sessions, CSRF tokens or JavaScript, works from a
  browser and from ``curl``/``edgeguard msp list`` alike, and is safe over the HTTPS this
  server uses by default. With no password configured the operator pages are closed.
  Ten wrong passwords from one address within 15 minutes lock that address out for the
  rest of the window (HTTP 429), so the password cannot be guessed at network speed.

Responses carry the admin UI's security headers (CSP without inline script, no-store).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.wrappers import Response as BaseResponse

from webui import security
from webui.fleet.store import FleetStore

OPERATOR_MAX_FAILURES = 10  # wrong passwords per client address ...
OPERATOR_LOCKOUT_S = 900.0  # ... within this window lock that address out for the window
MAX_CHECKIN_BYTES = 1024 * 1024  # counters.json of a 1,000-rule policy is ~80 KB
STATIC_DIR = Path(__file__).resolve().parent.parent / "static" / "fleet"
APPLIANCE_ENDPOINTS = frozenset({"fleet.checkin"})  # authenticated by their own credential


@dataclass(frozen=True)
class FleetSettings:
    """What the operator can tune; the defaults match the agent's 5-minute sync interval."""

    checkin_interval: float = 300.0  # the agent's interval; stale after 3 of them
    high_score: int = 85  # anomaly scores at or above this raise an alert
    retention_days: float = 400.0  # a year of reports, plus a margin
    sweep_every: float = 30.0  # seconds between stale sweeps (at most)

    @property
    def stale_after(self) -> float:
        return 3 * self.checkin_interval


class Housekeeping:
    """Stale sweeps and pruning, run from requests at most every ``sweep_every`` seconds (no
    background thread: the server does nothing while nobody calls it, and a stale appliance
    is found by the next check-in of any other appliance, or the next page view)."""

    def __init__(self, store: FleetStore, settings: FleetSettings) -> None:
        self.store, self.settings = store, settings
        self._next_sweep = 0.0
        self._next_prune = 0.0

    def run(self, now: float) -> None:
        if now >= self._next_sweep:
            self._next_sweep = now + self.settings.sweep_every
            self.store.sweep_stale(now, self.settings.stale_after)
        if now >= self._next_prune:
            self._next_prune = now + 3600
            self.store.prune(now - self.settings.retention_days * 86400)


def fleet_store() -> FleetStore:
    found: FleetStore = current_app.extensions["fleet_store"]
    return found


def fleet_settings() -> FleetSettings:
    found: FleetSettings = current_app.extensions["fleet_settings"]
    return found


def publish_dir() -> Path:
    found: Path = current_app.extensions["fleet_publish_dir"]
    return found


def now() -> float:
    clock: Callable[[], float] = current_app.extensions["fleet_clock"]
    return clock()


def _password_ok(header: str, expected_sha256: bytes) -> bool:
    if not header.startswith("Basic "):
        return False
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return False
    _, _, password = decoded.partition(":")
    return secrets.compare_digest(hashlib.sha256(password.encode()).digest(), expected_sha256)


def _before() -> BaseResponse | None:
    current_app.extensions["fleet_housekeeping"].run(now())
    if request.endpoint in APPLIANCE_ENDPOINTS or request.endpoint == "static":
        return None
    expected: bytes | None = current_app.extensions["fleet_password_sha256"]
    if expected is None:
        resp = jsonify(error="no operator password is set: start the server with --password-file")
        resp.status_code = 503
        return resp
    store, at = fleet_store(), now()
    address = request.remote_addr or "?"
    if store.auth_failures(address, at - OPERATOR_LOCKOUT_S) >= OPERATOR_MAX_FAILURES:
        # Checked before the password, so guessing goes no faster with a right one mixed in.
        resp = jsonify(error="too many wrong operator passwords from this address: wait 15 min")
        resp.status_code = 429
        resp.headers["Retry-After"] = str(int(OPERATOR_LOCKOUT_S))
        return resp
    header = request.headers.get("Authorization", "")
    if _password_ok(header, expected):
        return None
    if header:  # a browser's first request carries none: that is a prompt, not a guess
        store.record_auth_failure(address, at)
    resp = jsonify(error="operator password required (HTTP Basic auth, any user name)")
    resp.status_code = 401
    resp.headers["WWW-Authenticate"] = 'Basic realm="EdgeGuard fleet", charset="UTF-8"'
    return resp


def create_fleet_app(
    state_dir: Path,
    publish: Path,
    *,
    operator_password: str | None = None,
    settings: FleetSettings | None = None,
    clock: Callable[[], float] = time.time,
) -> Flask:
    """The app on ``<state_dir>/fleet.db``, reading published bundles under ``publish``."""
    from webui.fleet import views
    from webui.fleet.report import bp as report_bp

    app = Flask(__name__, static_folder=str(STATIC_DIR), static_url_path="/static")
    store = FleetStore(Path(state_dir) / "fleet.db")
    chosen = settings or FleetSettings()
    app.config.update(MAX_CONTENT_LENGTH=MAX_CHECKIN_BYTES)
    app.extensions.update(
        fleet_store=store,
        fleet_settings=chosen,
        fleet_publish_dir=Path(publish),
        fleet_clock=clock,
        fleet_housekeeping=Housekeeping(store, chosen),
        fleet_password_sha256=(
            hashlib.sha256(operator_password.encode()).digest() if operator_password else None
        ),
    )
    app.extensions["fleet_published"] = views.PublishedBundles(Path(publish), store)
    app.before_request(_before)
    app.after_request(_headers)
    app.register_blueprint(views.bp)
    app.register_blueprint(report_bp)
    return app


def _headers(resp: Response) -> Response:
    """The admin UI's headers (CSP without inline script, nosniff, no-store, ...)."""
    return security._headers(resp)

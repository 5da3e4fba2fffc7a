"""The Flask application: blueprints, security, and the handles on the appliance."""

from __future__ import annotations

import datetime as dt
import importlib
import secrets
from pathlib import Path

from flask import Flask, Request, Response, jsonify, render_template, request

from appliance.nft import NftBackend
from webui import security
from webui.bridge import Appliance
from webui.config import UiConfig
from webui.store import UiStore

NAV = (
    ("pages.dashboard", "Dashboard"),
    ("querylog.index", "Query log"),
    ("policy.index", "Policy"),
    ("anomalies.index", "Anomalies"),
    ("sync.index", "MSP sync"),
    ("settings.index", "Settings"),
    ("health.index", "Health"),
)
# Each module has a blueprint ``bp`` (pages) and may have ``api_bp`` (its /api/v1 routes).
BLUEPRINT_MODULES = (
    "webui.auth",
    "webui.pages",
    "webui.api",
    "webui.querylog",
    "webui.policy_views",
    "webui.users",
    "webui.backup",
    "webui.settings",
    "webui.msp_lock",
    "webui.health",
    "webui.anomalies",
    "webui.sync_views",
)


class UploadLimitRequest(Request):
    """Flask's request whose upload limit can be raised for one request (the backup restore
    does, before its form is read).

    Flask 3.1 has this setter itself; Debian bookworm's Flask 2.2, which the appliance image
    runs on, only reads the app-wide ``MAX_CONTENT_LENGTH``. The same rule on both: the limit
    set on this request wins, else the app's."""

    _own_limit: int | None = None

    @property
    def max_content_length(self) -> int | None:
        if self._own_limit is not None:
            return self._own_limit
        return super().max_content_length

    @max_content_length.setter
    def max_content_length(self, value: int | None) -> None:
        self._own_limit = value


def _secret_key(path: Path) -> bytes:
    """A per-box key for signing session cookies, made once, readable by root only."""
    key_file = path / "secret.key"
    if not key_file.exists():
        path.mkdir(parents=True, exist_ok=True)
        key_file.touch(mode=0o600)
        key_file.write_bytes(secrets.token_bytes(32))
    return key_file.read_bytes()


def create_app(config: UiConfig, *, nft: NftBackend | None = None) -> Flask:
    app = Flask(__name__)
    app.request_class = UploadLimitRequest
    ui = config.ui_path
    ui_store = UiStore(ui / "ui.db")
    app.extensions["edgeguard_store"] = ui_store
    app.extensions["edgeguard_config"] = config
    app.config.update(
        SECRET_KEY=_secret_key(ui),
        SESSION_COOKIE_NAME="edgeguard_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=config.secure_cookies,
        PERMANENT_SESSION_LIFETIME=dt.timedelta(hours=12),
        MAX_CONTENT_LENGTH=2 * 1024 * 1024,
        EDGEGUARD_SESSION_MINUTES=config.session_minutes,
        EDGEGUARD_REQUIRE_2FA=lambda: ui_store.setting("require_2fa") == "1",
    )
    security.install(app)

    app.extensions["edgeguard_appliance"] = Appliance(config, nft=nft)
    for module in BLUEPRINT_MODULES:
        try:
            blueprints = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue  # a page still to come
        for name in ("bp", "api_bp"):
            if hasattr(blueprints, name):
                app.register_blueprint(getattr(blueprints, name))

    @app.context_processor
    def navigation() -> dict[str, object]:
        items = [(e, label) for e, label in NAV if e in app.view_functions]
        return {"nav_items": items}

    @app.errorhandler(400)
    @app.errorhandler(403)
    @app.errorhandler(404)
    @app.errorhandler(405)
    @app.errorhandler(413)
    @app.errorhandler(429)
    def error(exc: Exception) -> tuple[str | Response, int]:
        code = int(getattr(exc, "code", 500) or 500)
        text = str(getattr(exc, "description", "")) or "error"
        if request.path.startswith("/api/"):
            return jsonify(error=text), code
        return render_template("error.html", code=code, text=text), code

    return app

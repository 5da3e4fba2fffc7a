"""Login required everywhere, CSRF on every change, strict headers, roles, brute-force limits.

Appliance admin UIs are a classic target (Pi-hole and pfSense have had XSS, CSRF and
command-injection CVEs), so the safe choice is the default one:

* every endpoint needs a logged-in user unless its view is marked ``@public`` (login, setup,
  static); a test walks the URL map to prove it;
* every state-changing request (POST/PUT/PATCH/DELETE) made with a session cookie must carry
  the session's CSRF token (form field ``csrf_token`` or header ``X-CSRF-Token``); API
  requests with a bearer token carry no cookie and so need none;
* viewers may not change anything (one check for every route), except their own account
  (views marked ``@self_service``);
* sessions end after ``session_minutes`` idle and after 12 hours in any case, and when the
  user's password or role changes;
* responses carry a CSP without inline script, ``frame-ancestors 'none'``, ``nosniff``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Flask, Response, abort, current_app, g, jsonify, redirect, request, session
from flask import url_for as flask_url_for
from werkzeug.wrappers import Response as BaseResponse

from webui.store import Role, UiStore, User

F = TypeVar("F", bound=Callable[..., Any])
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_SESSION = 12 * 3600
LOGIN_WINDOW = 15 * 60
LOGIN_MAX_FAILURES = 5
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)


def public(view: F) -> F:
    """Reachable without logging in (login, setup, static files, health probe)."""
    view._public = True  # type: ignore[attr-defined]
    return view


def self_service(view: F) -> F:
    """A viewer may use it: it changes only the user's own account."""
    view._self_service = True  # type: ignore[attr-defined]
    return view


def roles_required(*roles: Role) -> Callable[[F], F]:
    def wrap(view: F) -> F:
        @wraps(view)
        def inner(*args: Any, **kwargs: Any) -> Any:
            if g.get("user") is None or g.user.role not in roles:
                abort(403)
            return view(*args, **kwargs)

        return inner  # type: ignore[return-value]

    return wrap


def store() -> UiStore:
    found: UiStore = current_app.extensions["edgeguard_store"]
    return found


def client_address() -> str:
    return request.remote_addr or "?"


def audit(action: str, detail: str = "") -> None:
    """Record a change: who, when, what, from where."""
    user = g.get("user")
    store().audit(user.name if user else "-", client_address(), action, detail)


def csrf_token() -> str:
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(24)
        session["csrf"] = token
    return token


def login(user: User) -> None:
    """Start a fresh session (a new CSRF token too: no fixation)."""
    session.clear()
    now = time.time()
    session.update(uid=user.id, epoch=user.session_epoch, created=now, seen=now)
    session.permanent = True
    csrf_token()


def login_blocked(name: str) -> bool:
    since = time.time() - LOGIN_WINDOW
    s = store()
    return (
        s.failures(f"user:{name}", since) >= LOGIN_MAX_FAILURES
        or s.failures(f"addr:{client_address()}", since) >= LOGIN_MAX_FAILURES * 4
    )


def login_failed(name: str) -> None:
    now = time.time()
    store().record_failure(f"user:{name}", now)
    store().record_failure(f"addr:{client_address()}", now)


def _view_flag(flag: str) -> bool:
    view = current_app.view_functions.get(request.endpoint or "")
    return bool(getattr(view, flag, False))


def _wants_json() -> bool:
    return request.path.startswith("/api/")


def _deny(status: int, message: str) -> BaseResponse:
    if _wants_json():
        resp = jsonify(error=message)
        resp.status_code = status
        return resp
    abort(status)


def _session_user() -> User | None:
    uid = session.get("uid")
    if not isinstance(uid, int):
        return None
    now = time.time()
    minutes = current_app.config["EDGEGUARD_SESSION_MINUTES"]
    if (
        now - float(session.get("seen", 0)) > minutes * 60
        or now - float(session.get("created", 0)) > MAX_SESSION
    ):
        session.clear()
        return None
    user = store().user_by_id(uid)
    if user is None or user.session_epoch != session.get("epoch"):
        session.clear()
        return None
    session["seen"] = now
    return user


def _before() -> BaseResponse | None:
    g.user = None
    g.api_token = False
    if request.endpoint is None:
        return None  # 404 follows
    if request.endpoint == "static":
        return None
    s = store()
    if s.needs_setup() and not _view_flag("_public"):
        return (
            _deny(503, "setup required") if _wants_json() else redirect(flask_url_for("auth.setup"))
        )
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer ") and _wants_json():
        g.user = s.user_for_token(auth[7:].strip())
        g.api_token = g.user is not None
        if g.user is None:
            return _deny(401, "invalid token")
    else:
        g.user = _session_user()
    public = _view_flag("_public")
    if g.user is None and not public:
        if _wants_json():
            return _deny(401, "login required")
        return redirect(flask_url_for("auth.login", next=request.full_path))
    if request.method in UNSAFE and not g.api_token:  # login and setup forms too
        sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token") or ""
        expected = session.get("csrf")
        if not isinstance(expected, str) or not secrets.compare_digest(sent, expected):
            return _deny(400, "missing or wrong CSRF token; reload the page and try again")
    if public or g.user is None:
        return None
    if (
        current_app.config["EDGEGUARD_REQUIRE_2FA"]()
        and not g.user.totp_enabled
        and not g.api_token
        and not _view_flag("_self_service")
    ):
        return redirect(flask_url_for("auth.two_factor"))
    if request.method in UNSAFE and g.user.role == "viewer" and not _view_flag("_self_service"):
        return _deny(403, "viewers cannot change anything")
    return None


def _headers(resp: Response) -> Response:
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    resp.headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
    if request.is_secure:
        resp.headers["Strict-Transport-Security"] = "max-age=31536000"
    if request.endpoint != "static":
        resp.headers["Cache-Control"] = "no-store"
    return resp


def install(app: Flask) -> None:
    app.before_request(_before)
    app.after_request(_headers)
    app.jinja_env.globals["csrf_token"] = csrf_token

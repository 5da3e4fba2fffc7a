"""First-start setup, login with optional TOTP, logout, and the user's own account."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, abort, g, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from webui import totp, users
from webui.passwords import password_problem
from webui.security import (
    audit,
    login,
    login_blocked,
    login_failed,
    public,
    self_service,
    store,
)

bp = Blueprint("auth", __name__)
bp.add_app_template_filter(users.utc_time, "utc_time")  # account, audit and settings pages
PENDING_SECONDS = 300


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never an open redirect."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("pages.dashboard")


@bp.route("/setup", methods=["GET", "POST"])
@public
def setup() -> Any:
    s = store()
    if not s.needs_setup():
        return redirect(url_for("auth.login"))
    error = None
    if request.method == "POST":
        token = request.form.get("token", "")
        name = request.form.get("username", "").strip()
        password = request.form.get("password", "")
        if login_blocked("setup"):
            abort(429, "too many wrong setup tokens; wait 15 minutes")
        if not s.check_setup_token(token):
            login_failed("setup")
            error = "wrong setup token (it is printed in the appliance's log)"
        elif not name or not name.isascii() or not name.replace("-", "").replace("_", "").isalnum():
            error = "user name: letters, digits, - and _"
        elif password != request.form.get("password2", ""):
            error = "the two passwords differ"
        elif problem := password_problem(password, name):
            error = problem
        else:
            user = s.add_user(name, password, "admin")
            login(user)
            g.user = user
            audit("setup", f"first admin {name} created")
            return redirect(url_for("auth.two_factor"))
    return render_template("setup.html", error=error), 400 if error else 200


@bp.route("/login", methods=["GET", "POST"], endpoint="login")
@public
def login_page() -> Any:
    error = None
    if request.method == "POST":
        name = request.form.get("username", "").strip()[:64]
        password = request.form.get("password", "")
        if login_blocked(name):
            store().audit(name or "-", request.remote_addr or "?", "login-locked", "")
            return render_template(
                "login.html", error="too many failed logins: wait 15 minutes"
            ), 429
        user = store().check_password(name, password)
        if user is None:
            login_failed(name)
            store().audit(name or "-", request.remote_addr or "?", "login-failed", "")
            error = "wrong user name or password"
        elif user.totp_enabled:
            csrf = session.get("csrf")
            session.clear()
            session.update(
                pending=user.id, pending_at=time.time(), next=request.args.get("next"), csrf=csrf
            )
            return redirect(url_for("auth.login_second_factor"))
        else:
            login(user)
            g.user = user
            audit("login")
            return redirect(_safe_next(request.args.get("next")))
    return render_template("login.html", error=error), 401 if error else 200


@bp.route("/login/code", methods=["GET", "POST"])
@public
def login_second_factor() -> Any:
    uid = session.get("pending")
    if not isinstance(uid, int) or time.time() - float(session.get("pending_at", 0)) > 300:
        session.clear()
        return redirect(url_for("auth.login"))
    s = store()
    user = s.user_by_id(uid)
    if user is None:
        return redirect(url_for("auth.login"))
    error = None
    if request.method == "POST":
        if login_blocked(user.name):
            return render_template("totp_login.html", error="too many wrong codes; wait"), 429
        code = request.form.get("code", "")
        secret, last = s.totp(uid)
        step = totp.verify(secret, code, last_step=last) if secret else None
        if step is not None:
            s.used_totp_step(uid, step)
        elif not s.use_recovery_code(uid, totp.hash_recovery(code)):
            login_failed(user.name)
            s.audit(user.name, request.remote_addr or "?", "login-failed", "second factor")
            error = "wrong code"
        if error is None:
            target = session.get("next")
            login(user)
            g.user = user
            audit("login", "with second factor")
            return redirect(_safe_next(target if isinstance(target, str) else None))
    return render_template("totp_login.html", error=error), 401 if error else 200


@bp.route("/logout", methods=["POST"])
@self_service
def logout() -> Response:
    audit("logout")
    session.clear()
    return redirect(url_for("auth.login"))


def _account(**extra: Any) -> str:
    return render_template("account.html", tokens=store().tokens(g.user.id), **extra)


@bp.route("/account", methods=["GET"])
@self_service
def account() -> Any:
    return _account()


@bp.route("/account/tokens", methods=["POST"])
@self_service
def create_token() -> Any:
    """The token is in this one response only (the store keeps its hash)."""
    try:
        token = users.create_token(request.form.get("name", ""))
    except users.UserError as exc:
        return _account(error=str(exc)), 400
    return _account(new_token=token)


@bp.route("/account/tokens/<int:token_id>/revoke", methods=["POST"])
@self_service
def revoke_token(token_id: int) -> Response:
    if not users.revoke_token(token_id):
        abort(404, "no such token of yours")
    return redirect(url_for("auth.account"))


@bp.route("/account/password", methods=["POST"])
@self_service
def change_password() -> Any:
    s = store()
    current, new = request.form.get("current", ""), request.form.get("password", "")
    if s.check_password(g.user.name, current) is None:
        return _account(error="current password wrong"), 400
    if problem := password_problem(new, g.user.name):
        return _account(error=problem), 400
    s.set_password(g.user.id, new)
    audit("password-changed")
    session.clear()
    return redirect(url_for("auth.login"))


@bp.route("/account/2fa", methods=["GET", "POST"])
@self_service
def two_factor() -> Any:
    s = store()
    user = g.user
    if request.method == "POST" and request.form.get("action") == "disable":
        if s.setting("require_2fa") == "1":
            abort(403, "two-factor login is required on this appliance")
        s.disable_totp(user.id)
        audit("2fa-disabled")
        return redirect(url_for("auth.account"))
    if user.totp_enabled:
        return render_template("totp_setup.html", enabled=True)
    secret = session.get("totp_candidate")
    if not isinstance(secret, str):
        secret = totp.new_secret()
        session["totp_candidate"] = secret
    error = None
    if request.method == "POST":
        step = totp.verify(secret, request.form.get("code", ""))
        if step is None:
            error = "that code does not match; check the phone's clock"
        else:
            codes = totp.recovery_codes()
            s.enable_totp(user.id, secret, step, [totp.hash_recovery(c) for c in codes])
            session.pop("totp_candidate", None)
            audit("2fa-enabled")
            return render_template("totp_setup.html", enabled=True, recovery=codes)
    uri = totp.provisioning_uri(secret, user.name)
    return render_template(
        "totp_setup.html", enabled=False, secret=secret, uri=uri, error=error,
        required=s.setting("require_2fa") == "1",
    )  # fmt: skip

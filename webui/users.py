"""Users (add, role, password reset, two-factor reset, delete), the audit log, and API tokens.

Only admins manage users: an MSP account that could create admins would be an admin. The
appliance must never lose its last admin, so deleting or demoting the last one is refused
here (the store itself allows anything). Every change is audited; the user's session epoch
moves on role and password changes (the store does that), so the change takes effect at once.

API tokens are the user's own (``@self_service``): a viewer's token is read-only like the
viewer. When the MSP requires two-factor login, a user without it may not make a token,
since a token would let scripts in without the second factor.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import Any

from flask import Blueprint, abort, flash, g, jsonify, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from webui.api import api_doc
from webui.passwords import password_problem
from webui.security import audit, roles_required, self_service, store
from webui.store import ROLES, Role, User

bp = Blueprint("users", __name__)
api_bp = Blueprint("users_api", __name__, url_prefix="/api/v1")
MAX_AUDIT = 1000


class UserError(ValueError):
    """A change that is refused; the message is for the admin."""


# -- helpers shared with the other settings modules ----------------------------------------
def body() -> dict[str, Any]:
    """The API's arguments: a JSON object, or form fields (anything else reads as none)."""
    if request.is_json:
        data = request.get_json(silent=True)
        return data if isinstance(data, dict) else {}
    return request.form.to_dict()


def json_error(status: int, message: str) -> Response:
    resp = jsonify(error=message)
    resp.status_code = status
    return resp


# -- the changes ---------------------------------------------------------------------------
def _role(value: object) -> Role:
    for role in ROLES:
        if value == role:
            return role
    raise UserError(f"role must be one of {', '.join(ROLES)}")


def _admins() -> int:
    return sum(1 for u in store().users() if u.role == "admin")


def _target(user_id: int) -> User:
    """The user a page acts on; a 404 page when there is none."""
    user = store().user_by_id(user_id)
    if user is None:
        abort(404, "no such user")
    return user


def add_user(name: str, password: str, role: object) -> User:
    name = name.strip()
    if not name or len(name) > 64 or not name.isascii():
        raise UserError("user name: 1 to 64 letters, digits, - and _")
    if not name.replace("-", "").replace("_", "").isalnum():
        raise UserError("user name: letters, digits, - and _")
    if problem := password_problem(password, name):
        raise UserError(problem)
    checked = _role(role)
    try:
        user = store().add_user(name, password, checked)
    except sqlite3.IntegrityError as exc:
        raise UserError(f"there is already a user {name!r}") from exc
    audit("user-added", f"{name} as {checked}")
    return user


def change_role(user: User, role: object) -> None:
    checked = _role(role)
    if checked == user.role:
        return  # a new session epoch would log the user out for nothing
    if user.role == "admin" and checked != "admin" and _admins() <= 1:
        raise UserError(f"{user.name} is the last admin; make another admin first")
    store().set_role(user.id, checked)
    audit("user-role", f"{user.name}: {user.role} -> {checked}")


def reset_password(user: User, password: str) -> None:
    if problem := password_problem(password, user.name):
        raise UserError(problem)
    store().set_password(user.id, password)
    audit("user-password-reset", user.name)


def reset_two_factor(user: User) -> None:
    """For a user who lost the phone and the recovery codes."""
    store().disable_totp(user.id)
    audit("user-2fa-reset", user.name)


def delete_user(user: User) -> None:
    if user.id == g.user.id:
        raise UserError("you cannot delete your own account; ask another admin")
    if user.role == "admin" and _admins() <= 1:
        raise UserError(f"{user.name} is the last admin")
    store().delete_user(user.id)
    audit("user-deleted", f"{user.name} ({user.role})")


def create_token(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 64 or not name.isprintable():
        raise UserError("token name: 1 to 64 printable characters (what the token is for)")
    if store().setting("require_2fa") == "1" and not g.user.totp_enabled:
        raise UserError("two-factor login is required: set it up before making API tokens")
    token = store().new_token(g.user.id, name)
    audit("token-created", name)
    return token


def revoke_token(token_id: int) -> bool:
    mine = {t["id"]: t["name"] for t in store().tokens(g.user.id)}
    if token_id not in mine:
        return False
    store().revoke_token(g.user.id, token_id)
    audit("token-revoked", str(mine[token_id]))
    return True


def _apply(user: User, action: str, form: dict[str, Any]) -> str:
    """One change from the users page or the API; the sentence to show."""
    if action == "role":
        change_role(user, form.get("role"))
        return f"{user.name} is now {form.get('role')}."
    if action == "password":
        reset_password(user, str(form.get("password", "")))
        return f"Password of {user.name} changed; their sessions ended."
    if action == "reset-2fa":
        reset_two_factor(user)
        return f"Two-factor login of {user.name} turned off."
    if action == "delete":
        delete_user(user)
        return f"{user.name} deleted."
    raise UserError("unknown action")


def utc_time(ts: float | None) -> str:
    """Template filter: a Unix time as UTC, to the second."""
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(float(ts), dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _json(user: User) -> dict[str, Any]:
    return {"id": user.id, "name": user.name, "role": user.role, "two_factor": user.totp_enabled}


def _limit() -> int:
    return max(1, min(request.args.get("limit", 200, type=int) or 200, MAX_AUDIT))


# -- pages ---------------------------------------------------------------------------------
@bp.route("/settings/users", methods=["GET", "POST"])
@roles_required("admin")
def index() -> Any:
    if request.method == "POST":
        try:
            user = add_user(
                request.form.get("username", ""),
                request.form.get("password", ""),
                request.form.get("role", ""),
            )
        except UserError as exc:
            flash(str(exc), "error")
        else:
            flash(f"{user.name} added as {user.role}.", "ok")
        return redirect(url_for("users.index"))
    return render_template("users.html", users=store().users(), roles=ROLES)


@bp.route("/settings/users/<int:user_id>", methods=["POST"])
@roles_required("admin")
def change(user_id: int) -> Response:
    user = _target(user_id)
    try:
        flash(_apply(user, request.form.get("action", ""), request.form.to_dict()), "ok")
    except UserError as exc:
        flash(str(exc), "error")
    return redirect(url_for("users.index"))


@bp.route("/settings/audit")
@roles_required("admin", "msp")
def audit_page() -> Any:
    return render_template("audit.html", entries=store().audit_log(_limit()), limit=_limit())


# -- API -----------------------------------------------------------------------------------
@api_bp.route("/users")
@api_doc("Every user: name, role, whether two-factor login is on", roles=("admin",))
@roles_required("admin")
def api_users() -> Response:
    return jsonify(users=[_json(u) for u in store().users()])


@api_bp.route("/users", methods=["POST"])
@api_doc("Add a user", body="{name, password, role: admin|viewer|msp}", roles=("admin",))
@roles_required("admin")
def api_add_user() -> Response:
    args = body()
    try:
        user = add_user(str(args.get("name", "")), str(args.get("password", "")), args.get("role"))
    except UserError as exc:
        return json_error(400, str(exc))
    resp = jsonify(_json(user))
    resp.status_code = 201
    return resp


@api_bp.route("/users/<int:user_id>", methods=["PATCH"])
@api_doc(
    "Change a user: a new role, a new password, or two-factor login turned off",
    body="{role?, password?, reset_2fa?: true}",
    roles=("admin",),
)
@roles_required("admin")
def api_change_user(user_id: int) -> Response:
    user, args = store().user_by_id(user_id), body()
    if user is None:
        return json_error(404, "no such user")
    try:
        if "role" in args:
            _apply(user, "role", args)
        if "password" in args:
            _apply(user, "password", args)
        if args.get("reset_2fa") is True:
            _apply(user, "reset-2fa", args)
    except UserError as exc:
        return json_error(400, str(exc))
    changed = store().user_by_id(user_id)
    return jsonify(_json(changed)) if changed else json_error(404, "no such user")


@api_bp.route("/users/<int:user_id>", methods=["DELETE"])
@api_doc("Delete a user (never the last admin, never yourself)", roles=("admin",))
@roles_required("admin")
def api_delete_user(user_id: int) -> Response:
    user = store().user_by_id(user_id)
    if user is None:
        return json_error(404, "no such user")
    try:
        delete_user(user)
    except UserError as exc:
        return json_error(400, str(exc))
    return jsonify(deleted=user_id)


@api_bp.route("/audit")
@api_doc("The audit log, newest first: who, when, what, from where",
         params={"limit": "entries (1-1000, default 200)"}, roles=("admin", "msp"))  # fmt: skip
@roles_required("admin", "msp")
def api_audit() -> Response:
    return jsonify(entries=store().audit_log(_limit()))


@api_bp.route("/account/tokens")
@api_doc("Your API tokens (names and dates; a token itself is shown only when made)")
@self_service
def api_tokens() -> Response:
    return jsonify(tokens=store().tokens(g.user.id))


@api_bp.route("/account/tokens", methods=["POST"])
@api_doc("Make an API token with your role; the answer is the only time it is shown",
         body="{name}")  # fmt: skip
@self_service
def api_create_token() -> Response:
    try:
        token = create_token(str(body().get("name", "")))
    except UserError as exc:
        return json_error(400, str(exc))
    resp = jsonify(token=token)
    resp.status_code = 201
    return resp


@api_bp.route("/account/tokens/<int:token_id>", methods=["DELETE"])
@api_doc("Revoke one of your API tokens")
@self_service
def api_revoke_token(token_id: int) -> Response:
    if not revoke_token(token_id):
        return json_error(404, "no such token of yours")
    return jsonify(revoked=token_id)

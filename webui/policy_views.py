"""Policy pages and API: edit, preview the plan, apply with commit-confirm, history, rollback.

Every change takes the same road as ``edgeguard apply``: the text is planned by the engine
(validation with line:column, the ruleset diff, the safety checks) and shown before it can
be applied, and the apply form carries the exact text that was previewed, which is planned
again on submit. Nothing reaches nft without the engine's record, lock and confirm timer.
The forms only write YAML (``policy_edit``) and then take that road too.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Blueprint, current_app, flash, g, jsonify, redirect, render_template, request
from flask import url_for as flask_url_for
from werkzeug.wrappers import Response

from appliance.engine import AdminAccess, Engine, Plan
from appliance.errors import ApplianceError, ApplyError
from appliance.state_dir import start_watchdog
from appliance.store import PendingConfirm, StoreError, Version
from policies.errors import PolicyError, PolicyValidationError
from webui import msp_lock
from webui import policy_edit as edit
from webui.api import PREFIX, api_doc
from webui.bridge import appliance
from webui.security import audit

bp = Blueprint("policy", __name__, url_prefix="/policy")
api_bp = Blueprint("policy_api", __name__, url_prefix=PREFIX)

SOURCE = "policy.yaml"  # how the editor's text is named in messages and diffs
WATCHDOG = "edgeguard_policy_watchdog"  # app.extensions: callable(state_dir) (tests inject)
DEFAULT_CONFIRM = 120
MAX_CONFIRM = 3600
CHANGERS = ("admin", "msp")
_WHERE = re.compile(rf"^{re.escape(SOURCE)}:(\d+):(\d+): (.*)$", re.S)


@dataclass(frozen=True)
class Finding:
    """A validation problem as the editor shows it: at its line, or above the text."""

    line: int | None
    column: int | None
    text: str
    severity: str = "error"


class StalePlan(ApplianceError):
    """The live version changed between the preview and the apply."""


class LockedSection(ApplianceError):
    """The edit changes a section the MSP locked, and the user is not the MSP."""


def findings(exc: PolicyError) -> list[Finding]:
    if isinstance(exc, PolicyValidationError):
        return [
            Finding(
                p.location.line if p.location else None,
                p.location.column if p.location else None,
                f"{p.field}: {p.message}" if p.field else p.message,
                p.severity,
            )
            for p in exc.problems
        ]
    m = _WHERE.match(str(exc))  # not YAML at all: the loader names the place in its message
    if m:
        return [Finding(int(m[1]), int(m[2]), m[3])]
    return [Finding(None, None, str(exc))]


def engine() -> Engine:
    return appliance().engine()


def live_text() -> tuple[Version | None, str]:
    live = engine().store.live()
    return live, engine().store.texts(live.id)[0] if live else ""


def as_json(found: Version | PendingConfirm | Finding | None) -> dict[str, Any] | None:
    return dataclasses.asdict(found) if found else None


def _admin_access() -> AdminAccess | None:
    """The admin's own connection, for the lockout check (not when on the box itself)."""
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
        port = int(request.environ.get("SERVER_PORT", "443"))
    except ValueError:
        return None
    return None if address.is_loopback else AdminAccess(str(address), port)


def make_plan(text: str) -> Plan:
    """Plan the text as the engine would (raises PolicyError with every problem)."""
    return engine().plan_text(text, SOURCE, appliance().policy_base, admin=_admin_access())


def apply_text(
    text: str, message: str, confirm_within: float | None, force: bool, base: int | bool | None
) -> tuple[Plan, Version]:
    """Plan again and apply. ``base`` is the live version the admin's preview was against
    (None: nothing was live); ``True`` when there was no preview to compare with."""
    plan = make_plan(text)
    now = plan.current.id if plan.current else None
    if base is not True and base != now:
        raise StalePlan(f"the live policy changed since the preview (now version {now})")
    live = engine().store.texts(plan.current.id)[0] if plan.current else ""
    if (why := msp_lock.refusal(live, text)) is not None:
        raise LockedSection(why)
    if plan.unsafe and not force:
        raise ApplyError("unsafe plan: " + "; ".join(plan.unsafe))
    version = engine().apply(
        plan,
        author=g.user.name,
        message=message or "edited in the web UI",
        confirm_within=confirm_within,
        force=force,
    )
    audit(
        "policy-apply",
        f"version {version.id}: {message}"
        + (f" (confirm within {confirm_within:g} s)" if confirm_within else "")
        + (" (forced: " + "; ".join(plan.unsafe) + ")" if plan.unsafe else ""),
    )
    if confirm_within:
        _start_watchdog()
    return plan, version


def _start_watchdog() -> None:
    """Roll back at the deadline even if nobody opens a page and no controller runs.

    The watchdog process uses libnftables in its own network namespace, so it is started
    only when the UI does too; with ``netns`` (the lab) or an injected backend it would act
    on the wrong ruleset, and the controller (``edgeguard run``) and ``expire()`` on page
    views keep the deadline instead.
    """
    starter: Callable[[Path], None] | None = current_app.extensions.get(WATCHDOG)
    app = appliance()
    if starter is None and app.nft is None and not app.config.netns:
        starter = start_watchdog
    if starter is not None:
        starter(app.config.state_dir)


def expire_now() -> bool:
    """Notice a passed confirm deadline ourselves, whoever else should have."""
    pending = engine().store.pending_confirm()
    if pending is None or not engine().expire():
        return False
    audit("policy-expired", f"version {pending.version} not confirmed in time: rolled back")
    return True


def confirm_pending() -> Version:
    """Keep the version on probation; a confirm after the deadline rolls back (and says so)."""
    pending = engine().store.pending_confirm()
    try:
        version = engine().confirm()
    except ApplianceError:
        if pending and engine().store.version(pending.version).status == "rolled-back":
            audit("policy-expired", f"version {pending.version} confirmed too late: rolled back")
        raise
    audit("policy-confirm", f"version {version.id}")
    return version


def last_rollback() -> tuple[Version, str] | None:
    """The newest version, when it was rolled back, and why (from the event log)."""
    newest = engine().store.history(1)
    if not newest or newest[0].status != "rolled-back":
        return None
    prefix = f"version {newest[0].id} -> "
    events = engine().store.events(50)
    why = [d for _, kind, d in events if kind == "rollback" and d.startswith(prefix)]
    return newest[0], why[0] if why else ""


def predecessor(vid: int) -> Version | None:
    """The version before ``vid`` that was ever live (failed ones never were)."""
    older = [v for v in engine().store.history(10_000) if v.id < vid]
    return next((v for v in older if v.status not in ("failed", "interrupted", "pending")), None)


def unified(old: str, new: str, old_name: str, new_name: str) -> str:
    lines = difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), old_name, new_name
    )
    return "".join(lines)


def diff_rows(diff: str) -> list[tuple[str, str]]:
    """(css class, line) for a unified diff: added, removed, context, or file and hunk heads."""
    lines = diff.splitlines()
    heads = 2 if len(lines) > 2 else 0  # "--- a", "+++ b" (not a removed "--" line)
    return [("muted", line) for line in lines[:heads]] + [
        ("muted" if line.startswith("@@") else {"+": "add", "-": "del"}.get(line[:1], ""), line)
        for line in lines[heads:]
    ]


def _confirm_within(value: Any) -> float | None:
    try:
        seconds = float(value if value not in (None, "") else DEFAULT_CONFIRM)
    except (TypeError, ValueError):
        raise ApplyError("confirm within: a number of seconds (0: no confirmation)") from None
    if seconds == 0:
        return None
    if not 10 <= seconds <= MAX_CONFIRM:
        raise ApplyError(f"confirm within: 10 to {MAX_CONFIRM} seconds, or 0")
    return seconds


def _text(value: Any) -> str:
    return str(value or "").replace("\r\n", "\n")


# -- pages -------------------------------------------------------------------------------------
@bp.app_context_processor
def policy_banner() -> dict[str, Any]:
    """The pending confirmation, for the banner on every page (a passed deadline is acted on)."""
    if g.get("user") is None:
        return {}
    try:
        pending = engine().store.pending_confirm()
        if pending is not None and engine().clock.time() >= pending.deadline:
            if expire_now():
                flash(f"Version {pending.version} was not confirmed in time: rolled back.", "warn")
            pending = engine().store.pending_confirm()
    except (ApplianceError, OSError):
        return {}
    left = max(0, round(pending.deadline - engine().clock.time())) if pending else 0
    return {
        "policy_pending": pending,
        "policy_left": left,
        "policy_can_change": g.user.role in CHANGERS,
    }


def _editor(text: str, *, problems: list[Finding] | None = None, form_error: str = "",
            message: str = "", status: int = 200) -> tuple[str, int]:  # fmt: skip
    """The policy page: the editor (with the problems at their lines), status and forms."""
    live, live_policy = live_text()
    bad = {f.line for f in problems or []}
    listing = [(n, line, n in bad) for n, line in enumerate(text.splitlines(), 1)]
    locked = msp_lock.locked_sections()
    return render_template(
        "policy.html",
        live=live,
        text=text,
        message=message,
        problems=problems or [],
        listing=listing if problems else [],
        form_error=form_error,
        facts=edit.facts(live_policy),
        rolled_back=last_rollback(),
        can_change=g.user.role in CHANGERS,
        locked=locked,
        locked_by=msp_lock.owner() if locked else "",
        locked_texts=msp_lock.section_texts(text, locked),
        form_locked={
            kind: section
            for kind, section in msp_lock.FORM_SECTIONS.items()
            if section in locked and g.user.role != "msp"
        },
        actions=edit.ACTIONS,
        protocols=edit.PROTOCOLS,
    ), status


def plan_page(text: str, message: str, *, error: str = "", status: int = 200) -> Any:
    """The plan page, or the editor with every problem when the text does not validate."""
    try:
        plan = make_plan(text)
    except PolicyError as exc:
        return _editor(text, problems=findings(exc), message=message, status=422)
    old = engine().store.texts(plan.current.id)[0] if plan.current else ""
    if not error and (why := msp_lock.refusal(old, text)) is not None:
        error, status = why, 403
    return render_template(
        "policy_plan.html",
        plan=plan,
        text=text,
        rows=diff_rows(plan.diff),
        policy_rows=diff_rows(unified(old, text, "live", SOURCE)),
        warnings=[str(w) for w in plan.loaded.warnings],
        message=message,
        error=error,
        default_confirm=DEFAULT_CONFIRM,
    ), status


@bp.route("")
def index() -> Any:
    if expire_now():
        flash("The last apply was not confirmed in time and was rolled back.", "warn")
    return _editor(live_text()[1])


@bp.route("/plan", methods=["POST"])
def preview() -> Any:
    """The way to the plan for the editor and for other pages' prepared edits (``text``)."""
    return plan_page(_text(request.form.get("text")), request.form.get("message", ""))


def _form_edit(kind: str, text: str, f: Any) -> tuple[str, str]:
    """One form's edit of ``text``: (new text, the history message it suggests)."""
    name = f.get("name", "").strip()
    if kind == "domain":
        domain, group, verdict = f.get("domain", "").strip(), f.get("group", ""), f.get("verdict")
        return edit.set_domain(text, group, domain, verdict), f"{verdict} {domain} for {group}"
    if kind == "client":
        member, group = f.get("member", "").strip(), f.get("group", "")
        return edit.add_client(text, group, member), f"add {member} to group {group}"
    if kind == "port-forward":
        spec = edit.PortForwardSpec(
            name,
            f.get("port", ""),
            f.get("to", ""),
            f.get("to_port", ""),
            f.get("protocol", "tcp"),
            edit.split_list(f.get("from", "")),
            f.get("comment", ""),
        )
        return edit.add_port_forward(text, spec), f"port forward {name}"
    if kind == "rule":
        rule = edit.RuleSpec(
            name,
            edit.split_list(f.get("from", "")),
            edit.split_list(f.get("to", "")),
            f.get("action", ""),
            edit.split_list(f.get("service", "")),
            f.get("schedule", ""),
            f.get("comment", ""),
        )
        return edit.add_rule(text, rule, before=f.get("before", "")), f"rule {name}"
    if kind == "schedule":
        return edit.add_schedule(text, name, f.get("days", ""), f.get("time", "")), (
            f"schedule {name}"
        )
    raise edit.PolicyEditError(f"no form {kind!r}")


@bp.route("/edit/<kind>", methods=["POST"])
def form_edit(kind: str) -> Any:
    live, text = live_text()
    if live is None:
        return _editor("", form_error="nothing is live yet: write a policy first", status=409)
    try:
        new_text, message = _form_edit(kind, text, request.form)
    except edit.PolicyEditError as exc:
        return _editor(text, form_error=str(exc), status=400)
    return plan_page(new_text, message)


@bp.route("/apply", methods=["POST"])
def apply() -> Any:
    form = request.form
    text, message = _text(form.get("text")), form.get("message", "").strip()[:500]
    base = int(form["base"]) if form.get("base", "").isdigit() else None
    try:
        within = _confirm_within(form.get("confirm_within"))
        _, version = apply_text(text, message, within, form.get("force") == "1", base)
    except PolicyError as exc:
        return _editor(text, problems=findings(exc), message=message, status=422)
    except (ApplianceError, OSError) as exc:
        return plan_page(text, message, error=str(exc), status=409)
    flash(f"Version {version.id} applied.", "ok")
    return redirect(flask_url_for("policy.index"))


@bp.route("/confirm", methods=["POST"])
def confirm() -> Response:
    try:
        version = confirm_pending()
    except ApplianceError as exc:
        flash(str(exc), "error")
    else:
        flash(f"Version {version.id} confirmed.", "ok")
    return redirect(flask_url_for("policy.index"))


def rollback_to(target: int | None) -> Version | None:
    live = engine().store.live()
    if target is not None and live is not None and live.id == target:
        raise ApplyError(f"version {target} is already live")
    result = engine().rollback(target)
    came_from = f"version {live.id}" if live else "nothing live"
    audit("policy-rollback", f"{came_from} -> {f'version {result.id}' if result else 'no table'}")
    return result


@bp.route("/rollback", methods=["POST"])
def rollback() -> Response:
    raw = request.form.get("version", "")
    try:
        result = rollback_to(int(raw) if raw.isdigit() else None)
    except ApplianceError as exc:
        flash(str(exc), "error")
    else:
        flash(f"Rolled back to version {result.id}." if result else "Rolled back.", "ok")
    return redirect(flask_url_for("policy.index"))


@bp.route("/history")
def history() -> str:
    store = engine().store
    return render_template(
        "policy_history.html",
        versions=store.history(200),
        live=store.live(),
        events=store.events(20),
        can_change=g.user.role in CHANGERS,
    )


def version_diffs(vid: int) -> dict[str, Any]:
    store = engine().store
    version = store.version(vid)
    before = predecessor(vid)
    old = store.texts(before.id) if before else ("", "")
    new = store.texts(vid)
    old_name = f"version {before.id}" if before else "nothing"
    return {
        "version": version,
        "previous": before,
        "policy_text": new[0],
        "policy_diff": unified(old[0], new[0], old_name, f"version {vid}"),
        "ruleset_diff": unified(old[1], new[1], old_name, f"version {vid}"),
    }


@bp.route("/history/<int:vid>")
def version_page(vid: int) -> Any:
    try:
        found = version_diffs(vid)
    except StoreError:
        return render_template("error.html", code=404, text=f"no version {vid}"), 404
    live = engine().store.live()
    return render_template(
        "policy_version.html",
        **found,
        policy_rows=diff_rows(found["policy_diff"]),
        ruleset_rows=diff_rows(found["ruleset_diff"]),
        live=live,
        can_change=g.user.role in CHANGERS,
    )


# -- API ---------------------------------------------------------------------------------------
def _json_error(status: int, message: str, **extra: Any) -> tuple[Response, int]:
    return jsonify(error=message, **extra), status


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else {}


def _problems(exc: PolicyError) -> tuple[Response, int]:
    problems = [as_json(f) for f in findings(exc)]
    return _json_error(422, "the policy has problems; nothing was applied", problems=problems)


@api_bp.route("/policy")
@api_doc("The live policy text, its version and any pending confirmation")
def api_policy() -> Response:
    expire_now()
    live, text = live_text()
    pending = engine().store.pending_confirm()
    return jsonify(live=as_json(live), text=text, pending=as_json(pending))


@api_bp.route("/policy/plan", methods=["POST"])
@api_doc(
    "Validate a policy text and show what applying it would change", body="{text}", roles=CHANGERS
)
def api_plan() -> Any:
    try:
        plan = make_plan(_text(_body().get("text")))
    except PolicyError as exc:
        return _problems(exc)
    return jsonify(
        live=as_json(plan.current),
        diff=plan.diff,
        unsafe=plan.unsafe,
        notes=plan.notes,
        warnings=[str(w) for w in plan.loaded.warnings],
        render=plan.render(),
    )


@api_bp.route("/policy/apply", methods=["POST"])
@api_doc(
    "Apply a policy text (plan again, then one nft transaction)",
    body="{text, message, confirm_within (s; 0/absent: none), force, base (live id)}",
    roles=CHANGERS,
)
def api_apply() -> Any:
    body = _body()
    base = body.get("base", True)  # a script need not have planned first
    if base is not True and base is not None and not isinstance(base, int):
        return _json_error(400, "base: the live version number the plan was made against")
    try:
        _, version = apply_text(
            _text(body.get("text")),
            str(body.get("message") or "")[:500],
            _confirm_within(body.get("confirm_within") or 0),
            body.get("force") is True,
            base,
        )
    except PolicyError as exc:
        return _problems(exc)
    except (ApplianceError, OSError) as exc:
        return _json_error(409, str(exc))
    pending = engine().store.pending_confirm()
    return jsonify(version=as_json(version), pending=as_json(pending))


@api_bp.route("/policy/confirm", methods=["POST"])
@api_doc("Keep the version waiting for confirmation", roles=CHANGERS)
def api_confirm() -> Any:
    try:
        version = confirm_pending()
    except ApplianceError as exc:
        return _json_error(409, str(exc))
    return jsonify(version=as_json(version))


@api_bp.route("/policy/rollback", methods=["POST"])
@api_doc(
    "Return to a version (default: the one before the live one)", body="{version}", roles=CHANGERS
)
def api_rollback() -> Any:
    target = _body().get("version")
    if target is not None and not isinstance(target, int):
        return _json_error(400, "version: a version number")
    try:
        result = rollback_to(target)
    except StoreError as exc:
        return _json_error(404, str(exc))
    except ApplianceError as exc:
        return _json_error(409, str(exc))
    return jsonify(version=as_json(result))


@api_bp.route("/policy/history")
@api_doc("Applied versions, newest first", params={"limit": "how many (default 50)"})
def api_history() -> Response:
    limit = request.args.get("limit", "50")
    store = engine().store
    return jsonify(
        versions=[as_json(v) for v in store.history(int(limit) if limit.isdigit() else 50)],
        pending=as_json(store.pending_confirm()),
    )


@api_bp.route("/policy/history/<int:vid>")
@api_doc("One version: its policy text and the diffs to the version before it")
def api_version(vid: int) -> Any:
    try:
        found = version_diffs(vid)
    except StoreError as exc:
        return _json_error(404, str(exc))
    found["version"] = as_json(found["version"])
    found["previous"] = as_json(found["previous"])
    return jsonify(found)

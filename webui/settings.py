"""Settings: the resolver's upstreams and lists, unblock requests, two-factor requirement and
the UI's certificate; users, audit log and backups live in their own modules (registered
with this blueprint, see ``_register_companions``).

Upstreams and lists belong to the policy's ``dns:`` section, so this page never changes
them itself: it shows what the *live* version says, and adding a list produces a policy
edit that goes to the policy editor's preview and is applied there with the usual plan,
safety checks and history. Only the cached downloads of URL lists are refreshed here
("update now"), in a thread, because a download can take a while and must not hold a
request open; the page polls a small JSON status.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.wrappers import Response

from appliance.blockpage import open_requests
from webui import msp_lock
from webui.api import api_doc
from webui.bridge import appliance
from webui.security import audit, roles_required, store
from webui.settings_edit import (
    PREVIEW_ENDPOINT,
    PREVIEW_FIELD,
    CertInfo,
    EditError,
    ListJob,
    LivePolicy,
    add_dns_list,
    certificate_info,
    install_certificate,
    list_rows,
    set_upstreams,
    url_sources,
)
from webui.settings_edit import live_policy as _live_policy
from webui.users import body, json_error

bp = Blueprint("settings", __name__)
api_bp = Blueprint("settings_api", __name__, url_prefix="/api/v1")
REQUEST_ACTIONS = {"allow": "allowed", "dismiss": "dismissed"}


def _job(app: Flask) -> ListJob:
    job: ListJob = app.extensions.setdefault("edgeguard_list_job", ListJob())
    return job


def _tls_dir() -> Path:
    return appliance().config.ui_path / "tls"


def live_policy() -> LivePolicy:
    return _live_policy(appliance())


def _dns_state() -> dict[str, Any]:
    live = live_policy()
    rows, error = list_rows(live, appliance().config.state_dir, current_app.extensions)
    dns = live.policy.dns if live.policy is not None else None
    return {
        "version": live.version.id if live.version else None,
        "problems": live.problems,
        "upstreams": list(dns.upstreams) if dns else [],
        "block_mode": dns.block_mode if dns else None,
        "lists": rows,
        "lists_error": error,
        "download": _job(current_app).snapshot(),
    }


def _start_update() -> str | None:
    """Start downloading the live policy's URL lists; why not, or None when started."""
    live = live_policy()
    if live.policy is None:
        return "there is no valid live policy"
    urls = url_sources(live.policy)
    if not urls:
        return "the live policy has no lists from addresses (files are re-read by themselves)"
    if not _job(current_app).start(appliance().config.state_dir / "lists", urls):
        return "a download is already running"
    return None


# -- pages ---------------------------------------------------------------------------------
@bp.route("/settings")
def index() -> Any:
    return render_template("settings.html", dns=_dns_state())


@bp.route("/settings/lists/update", methods=["POST"])
@roles_required("admin", "msp")
def update_lists() -> Response:
    why_not = _start_update()
    if why_not is None:
        audit("lists-update", "downloading the URL lists now")
        flash("Downloading the lists now; progress below.", "ok")
    else:
        flash(f"Nothing started: {why_not}.", "warn")
    return redirect(url_for("settings.index") + "#lists")


@bp.route("/settings/lists/add", methods=["POST"])
@roles_required("admin", "msp")
def add_list() -> Any:
    live = live_policy()
    name = request.form.get("name", "").strip()
    url = request.form.get("url", "").strip()
    kind = request.form.get("kind", "block")
    if live.text is None:
        flash("There is no live policy to add a list to.", "error")
        return redirect(url_for("settings.index"))
    try:
        text = add_dns_list(live.text, name, url, kind)
    except EditError as exc:
        flash(str(exc), "error")
        return redirect(url_for("settings.index") + "#add-list")
    preview = url_for(PREVIEW_ENDPOINT) if PREVIEW_ENDPOINT in current_app.view_functions else None
    return render_template(
        "settings_list_added.html", text=text, name=name, url=url, preview=preview,
        field=PREVIEW_FIELD,
    )  # fmt: skip


@bp.route("/settings/upstreams", methods=["POST"])
@roles_required("admin", "msp")
def change_upstreams() -> Any:
    live = live_policy()
    wanted = request.form.get("upstreams", "").replace(",", "\n").splitlines()
    if live.text is None:
        flash("There is no live policy to change.", "error")
        return redirect(url_for("settings.index"))
    try:
        text = set_upstreams(live.text, wanted)
    except EditError as exc:
        flash(str(exc), "error")
        return redirect(url_for("settings.index"))
    preview = url_for(PREVIEW_ENDPOINT) if PREVIEW_ENDPOINT in current_app.view_functions else None
    return render_template(
        "settings_list_added.html", text=text, name="upstreams", url=", ".join(wanted),
        preview=preview, field=PREVIEW_FIELD, what="upstreams",
    )  # fmt: skip


@bp.route("/settings/requests")
def requests_page() -> Any:
    return render_template("settings_requests.html", requests=open_requests(appliance().unblock_db))


@bp.route("/settings/requests/<int:request_id>", methods=["POST"])
@roles_required("admin", "msp")
def close_request(request_id: int) -> Response:
    action = request.form.get("action", "")
    if action not in REQUEST_ACTIONS:
        abort(400, "action must be allow or dismiss")
    found = _close_request(request_id, REQUEST_ACTIONS[action])
    if found is None:
        abort(404, "no such open request")
    if action == "allow":
        flash(
            f"Marked as allowed. To unblock {found['host']}, add it to the group's allow "
            "list in the policy.",
            "ok",
        )
    return redirect(url_for("settings.requests_page"))


@bp.route("/settings/security")
def security_page() -> Any:
    everyone = store().users()
    return render_template(
        "settings_security.html",
        require_2fa=store().setting("require_2fa") == "1",
        without_2fa=[u.name for u in everyone if not u.totp_enabled],
        cert=certificate_info(_tls_dir() / "cert.pem"),
        locked=msp_lock.locked_sections(),
        sections=msp_lock.SECTIONS,
    )


@bp.route("/settings/security/2fa", methods=["POST"])
@roles_required("admin", "msp")
def require_two_factor() -> Response:
    required = request.form.get("require") == "1"
    _set_require_2fa(required)
    if required and not g.user.totp_enabled:
        flash("Two-factor login is now required: set it up for your own account.", "warn")
    return redirect(url_for("settings.security_page"))


@bp.route("/settings/security/certificate", methods=["POST"])
@roles_required("admin", "msp")
def upload_certificate() -> Any:
    cert, key = request.files.get("cert"), request.files.get("key")
    if cert is None or key is None:
        flash("Choose both the certificate file and its private key file.", "error")
        return redirect(url_for("settings.security_page"))
    try:
        info = _install(cert.read(), key.read())
    except EditError as exc:
        flash(str(exc), "error")
        return redirect(url_for("settings.security_page"))
    flash(f"Certificate for {info.subject} installed; it is used from the UI's next start.", "ok")
    return redirect(url_for("settings.security_page"))


# -- shared by pages and API ---------------------------------------------------------------
def _close_request(request_id: int, status: str) -> dict[str, Any] | None:
    """Mark an open unblock request done (the block page counts only open ones against a
    client's hourly limit); the request as it was, or None when there is no such one."""
    db = appliance().unblock_db
    if not db.exists():
        return None
    conn = sqlite3.connect(db, timeout=5.0, isolation_level=None)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute(
            "SELECT * FROM unblock_requests WHERE id = ? AND status = 'open'", (request_id,)
        ).fetchone()
        if row is not None:
            conn.execute(
                "UPDATE unblock_requests SET status = ? WHERE id = ?", (status, request_id)
            )
        conn.execute("COMMIT")
    except sqlite3.OperationalError:
        return None  # no table yet: the block page never stored a request
    finally:
        conn.close()
    if row is None:
        return None
    found = dict(row)
    audit(f"unblock-request-{status}", f"#{request_id} {found['host']} for {found['client']}")
    return found


def _set_require_2fa(required: bool) -> None:
    store().set_setting("require_2fa", "1" if required else "0")
    audit("require-2fa", "on" if required else "off")


def _install(cert: bytes, key: bytes) -> CertInfo:
    info = install_certificate(_tls_dir(), cert, key)
    audit("certificate-installed", f"{info.subject}, valid until {info.not_after:%Y-%m-%d}")
    return info


# -- API -----------------------------------------------------------------------------------
@api_bp.route("/settings/dns")
@api_doc("The live policy's upstreams and lists, with each list's parse summary")
def api_dns() -> Response:
    return jsonify(_dns_state())


@api_bp.route("/settings/dns/lists", methods=["POST"])
@api_doc(
    "Prepare a policy that adds a list by URL (not applied: plan and apply it via the policy API)",
    body="{name, url, kind: block|allow}",
    roles=("admin", "msp"),
)
@roles_required("admin", "msp")
def api_add_list() -> Response:
    live = live_policy()
    args = body()
    if live.text is None:
        return json_error(409, "there is no live policy")
    try:
        text = add_dns_list(
            live.text,
            str(args.get("name", "")),
            str(args.get("url", "")),
            str(args.get("kind", "block")),
        )
    except EditError as exc:
        return json_error(400, str(exc))
    return jsonify(policy=text, based_on=live.version.id if live.version else None)


@api_bp.route("/settings/dns/update", methods=["GET"])
@api_doc("Progress of the last list download started with POST")
def api_update_status() -> Response:
    return jsonify(_job(current_app).snapshot())


@api_bp.route("/settings/dns/update", methods=["POST"])
@api_doc("Download every URL list of the live policy now", roles=("admin", "msp"))
@roles_required("admin", "msp")
def api_update_start() -> Response:
    why_not = _start_update()
    if why_not is None:
        audit("lists-update", "downloading the URL lists now (API)")
    resp = jsonify(started=why_not is None, reason=why_not, **_job(current_app).snapshot())
    resp.status_code = 202 if why_not is None else 409
    return resp


@api_bp.route("/unblock-requests")
@api_doc("Open requests to unblock a name, from the block page")
def api_requests() -> Response:
    return jsonify(requests=open_requests(appliance().unblock_db))


@api_bp.route("/unblock-requests/<int:request_id>", methods=["POST"])
@api_doc("Close an unblock request", body="{action: allow|dismiss}", roles=("admin", "msp"))
@roles_required("admin", "msp")
def api_close_request(request_id: int) -> Response:
    action = str(body().get("action", ""))
    if action not in REQUEST_ACTIONS:
        return json_error(400, "action must be allow or dismiss")
    found = _close_request(request_id, REQUEST_ACTIONS[action])
    if found is None:
        return json_error(404, "no such open request")
    return jsonify(id=request_id, status=REQUEST_ACTIONS[action])


@api_bp.route("/settings/security")
@api_doc("Whether two-factor login is required, and who has not set it up")
def api_security() -> Response:
    everyone = store().users()
    return jsonify(
        require_2fa=store().setting("require_2fa") == "1",
        without_2fa=[u.name for u in everyone if not u.totp_enabled],
    )


@api_bp.route("/settings/security", methods=["PUT"])
@api_doc("Require two-factor login for every account", body="{require_2fa: bool}",
         roles=("admin", "msp"))  # fmt: skip
@roles_required("admin", "msp")
def api_set_security() -> Response:
    value = body().get("require_2fa")
    if not isinstance(value, bool) and value not in ("0", "1"):
        return json_error(400, "require_2fa must be true or false")
    _set_require_2fa(value in (True, "1"))
    return api_security()


@api_bp.route("/settings/certificate")
@api_doc("The UI's TLS certificate (never its key)")
def api_certificate() -> Response:
    info = certificate_info(_tls_dir() / "cert.pem")
    return jsonify(certificate=info.as_json() if info else None)


@api_bp.route("/settings/certificate", methods=["PUT"])
@api_doc("Install a certificate and its private key", body="{cert: PEM text, key: PEM text}",
         roles=("admin", "msp"))  # fmt: skip
@roles_required("admin", "msp")
def api_set_certificate() -> Response:
    args = body()
    cert, key = args.get("cert"), args.get("key")
    if not isinstance(cert, str) or not isinstance(key, str):
        return json_error(400, "cert and key must be PEM text")
    try:
        info = _install(cert.encode(), key.encode())
    except EditError as exc:
        return json_error(400, str(exc))
    return jsonify(certificate=info.as_json())

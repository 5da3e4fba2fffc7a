"""MSP sync: enrol with the MSP from a form, see the last sync, and settle conflicts.

Enrolment does what ``edgeguard sync enrol`` does (``appliance.sync.sync_cmd.enrol_with``):
it writes ``<state>/sync/enrolment.json`` and the trusted root; the controller notices the
file within a second and starts the sync agent, so no reboot and no shell is needed.

A conflict is a section the office admin and the MSP both changed since the last bundle: the
agent kept the admin's version and reported it (never overwriting silently). This page shows
each one as a diff, the MSP's version against the one kept, and offers "Use the MSP's
version", which prepares the live policy with that section replaced and goes to the plan
page like every other change: nothing is applied before the admin presses Apply there.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import yaml
from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for

from appliance.errors import ApplianceError
from appliance.sync.merge import split_sections
from appliance.sync.state import SyncPaths, SyncState
from appliance.sync.sync_cmd import enrol_with, status_lines
from webui.bridge import appliance
from webui.policy_views import CHANGERS, diff_rows, live_text, plan_page, unified
from webui.security import audit, roles_required

bp = Blueprint("sync", __name__)
MAX_ROOT_BYTES = 64 * 1024  # a root.json with a handful of keys is ~2 KB


def _paths() -> SyncPaths:
    return SyncPaths(appliance().config.state_dir)


def _show(value: Any) -> str:
    """A section's data as YAML text for the diff (absent on one side: empty)."""
    if value is None:
        return ""
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True, default_flow_style=False)


def _conflicts(paths: SyncPaths) -> list[dict[str, Any]]:
    try:
        state = SyncState.load(paths.state)
    except (OSError, ValueError, ApplianceError):
        return []
    shown = []
    for conflict in state.conflicts:
        section = str(conflict.get("section", ""))
        if not section:
            continue
        diff = unified(
            _show(conflict.get("remote")),
            _show(conflict.get("local")),
            f"{section}: the MSP's version (bundle)",
            f"{section}: yours (kept)",
        )
        shown.append({"section": section, "rows": diff_rows(diff)})
    return shown


@bp.route("/sync")
def index() -> Any:
    paths = _paths()
    enrolled = paths.enrolment.exists()
    lines: list[str] = []
    if enrolled:
        try:
            lines = status_lines(paths.state_dir, dt.datetime.now(dt.UTC))
        except (OSError, ValueError, KeyError, ApplianceError) as exc:
            lines = [f"enrolled; no sync state yet ({exc})"]
    return render_template(
        "sync.html",
        enrolled=enrolled,
        lines=lines,
        conflicts=_conflicts(paths) if enrolled else [],
        can_change=g.user.role in CHANGERS,
        form=request.args,
    )


@bp.route("/sync/enrol", methods=["POST"])
@roles_required("admin", "msp")
def enrol() -> Any:
    f = request.form
    root_text = (f.get("root") or "").strip()
    upload = request.files.get("root_file")
    if upload is not None and upload.filename:
        root_text = upload.read(MAX_ROOT_BYTES + 1).decode("utf-8", "replace").strip()
    try:
        if len(root_text) > MAX_ROOT_BYTES:
            raise ValueError(f"the root file is over {MAX_ROOT_BYTES // 1024} KB")
        root_envelope = json.loads(root_text) if root_text else None
        if root_envelope is not None and not isinstance(root_envelope, dict):
            raise ValueError("the root file is not a JSON object")
        enrolment, root = enrol_with(
            _paths().state_dir,
            server=f.get("server", "").strip(),
            checkin=f.get("checkin", "").strip(),
            site=f.get("site", "").strip(),
            credential=f.get("credential", ""),
            root_envelope=root_envelope,
            root_keyid=f.get("root_keyid", "").strip() or None,
        )
    except (OSError, ValueError, ApplianceError) as exc:
        return render_template(
            "sync.html", enrolled=False, lines=[], conflicts=[], can_change=True,
            form=f, error=f"enrolment failed: {exc}",
        ), 400  # fmt: skip
    keys = ", ".join(k[:16] for k in sorted(root.root_keys))
    audit("sync-enrol", f"site {enrolment.site} at {enrolment.server}; root keys {keys}")
    flash(
        f"Enrolled as {enrolment.appliance_id} of site {enrolment.site}, trusting the MSP's "
        f"root v{root.version} (key {keys}). Sync starts within seconds.",
        "ok",
    )
    return redirect(url_for("sync.index"))


@bp.route("/sync/conflicts/<section>/take", methods=["POST"])
@roles_required("admin", "msp")
def take_msp_version(section: str) -> Any:
    """The live policy with ``section`` as the MSP's bundle has it, on the plan page."""
    paths = _paths()
    if section not in {c["section"] for c in _conflicts(paths)}:
        abort(404, f"no conflict in section {section!r}")
    base = paths.base if paths.base.is_file() else paths.base_pending
    if not base.is_file():
        abort(409, "the MSP's bundle text is not on this appliance yet")
    _, bundle_sections = split_sections(base.read_text(encoding="utf-8"))
    header, live_sections = split_sections(live_text()[1])
    if section in bundle_sections:
        live_sections[section] = bundle_sections[section]
    else:
        live_sections.pop(section, None)  # the MSP removed it
    text = header + "".join(live_sections.values())
    return plan_page(text, f"take the MSP's version of {section}")

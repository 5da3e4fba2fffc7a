"""MSP-locked policy sections: parts of the policy only the MSP may change.

The MSP manages many offices and answers for the parts that keep them safe (zones, NAT,
management access, say); the office admin runs the everyday parts (web filter groups,
block lists). Locked top-level sections are a UI setting only an ``msp`` account or the
MSP's sync agent (from the bundle's ``locked`` list) may change; an ``admin`` whose edit
changes a locked section is refused at the plan and at the apply, with the sections named.
The policy page shows locked sections read-only, with who locked them.
"""

from __future__ import annotations

from typing import Any

import yaml
from flask import Blueprint, flash, g, jsonify, redirect, request, url_for
from werkzeug.wrappers import Response

from appliance.sync.merge import split_sections
from webui.api import PREFIX, api_doc
from webui.security import audit, roles_required, store

SETTING = "msp_locked_sections"
OWNER_SETTING = "msp_locked_by"  # who set the locks, shown next to them
SECTIONS = (
    "site", "zones", "address_groups", "blocklists", "services", "schedules", "rules",
    "defaults", "nat", "management", "options", "dns", "clients", "web_filter",
)  # fmt: skip


def locked_sections() -> list[str]:
    raw = store().setting(SETTING, "") or ""
    return [s for s in raw.split(",") if s in SECTIONS]


def owner() -> str:
    """Who locked the sections: the MSP's sync agent (with the bundle) or an MSP account."""
    return store().setting(OWNER_SETTING, "") or "your MSP"


def set_locked_sections(sections: list[str], by: str) -> list[str]:
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown policy section(s): {', '.join(unknown)}")
    chosen = [s for s in SECTIONS if s in sections]
    store().set_setting(SETTING, ",".join(chosen))
    store().set_setting(OWNER_SETTING, by)
    return chosen


# What each everyday form on the policy page edits (webui.policy_edit), so a form whose
# section is locked is replaced by a note instead of ending in a refused plan.
FORM_SECTIONS = {
    "domain": "web_filter", "client": "web_filter", "rule": "rules", "port-forward": "nat",
    "schedule": "schedules",
}  # fmt: skip


def section_texts(text: str, sections: list[str]) -> dict[str, str]:
    """The original lines of each named top-level section of ``text`` (the sync merge's
    ``split_sections``), without the comment lines above its key: the admin sees the section
    exactly as it is written in the policy."""
    _, chunks = split_sections(text)
    shown: dict[str, str] = {}
    for section in sections:
        if section in chunks:
            lines = chunks[section].splitlines()
            while lines and lines[0].startswith("#"):
                lines.pop(0)
            shown[section] = "\n".join(lines).rstrip()
    return shown


def _sections(text: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError:
        return {}  # the loader reports it at its line; nothing gets applied anyway
    return data if isinstance(data, dict) else {}


def changed_locked(old_text: str, new_text: str, locked: list[str]) -> list[str]:
    """The locked sections whose content differs between the two policies (pure)."""
    old, new = _sections(old_text), _sections(new_text)
    return [s for s in locked if old.get(s) != new.get(s)]


def refusal(old_text: str, new_text: str) -> str | None:
    """Why the current user may not make this change, or None."""
    if g.get("user") is None or g.user.role == "msp":
        return None
    changed = changed_locked(old_text, new_text, locked_sections())
    if not changed:
        return None
    return (
        f"locked by your MSP: {', '.join(changed)}; ask them to make this change "
        "(or change only the other sections)"
    )


bp = Blueprint("msp_lock", __name__)
api_bp = Blueprint("msp_lock_api", __name__, url_prefix=PREFIX)


@bp.route("/settings/msp-lock", methods=["POST"])
@roles_required("msp")
def save() -> Response:
    chosen = set_locked_sections(request.form.getlist("section"), f"MSP account {g.user.name}")
    audit("msp-lock", ", ".join(chosen) or "nothing locked")
    flash("Locked sections saved.", "ok")
    return redirect(url_for("settings.security_page"))


@api_bp.route("/settings/msp-lock", methods=["GET"])
@api_doc("Policy sections only the MSP may change")
def api_get() -> Response:
    return jsonify(locked=locked_sections(), locked_by=owner(), sections=list(SECTIONS))


@api_bp.route("/settings/msp-lock", methods=["PUT"])
@api_doc("Set the MSP-locked sections (msp role)", body="{locked: [section, ...]}",
         roles=("msp",))  # fmt: skip
@roles_required("msp")
def api_put() -> Any:
    data = request.get_json(silent=True)
    wanted = data.get("locked") if isinstance(data, dict) else None
    if not isinstance(wanted, list) or not all(isinstance(s, str) for s in wanted):
        return jsonify(error="locked must be a list of section names"), 400
    try:
        chosen = set_locked_sections(wanted, f"MSP account {g.user.name}")
    except ValueError as exc:
        return jsonify(error=str(exc)), 400
    audit("msp-lock", ", ".join(chosen) or "nothing locked")
    return jsonify(locked=chosen)

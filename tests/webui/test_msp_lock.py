"""MSP-locked sections: the office admin runs the everyday parts, the MSP the rest."""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from tests.webui.conftest import logged_in, token_of, ui_store
from tests.webui.test_policy_views import WEB_FILTER, engine_of, make_app
from webui.msp_lock import changed_locked, section_texts


def test_changed_locked_compares_sections_not_text() -> None:
    old = "nat:\n  masquerade: [wan]\nrules: []\n"
    assert changed_locked(old, "# a comment\nnat: {masquerade: [wan]}\nrules: []\n", ["nat"]) == []
    assert changed_locked(old, "nat:\n  masquerade: []\nrules: []\n", ["nat", "rules"]) == ["nat"]


def _lock(app: Flask, sections: list[str]) -> None:
    msp = logged_in(app, "msp-tech", "msp")
    resp = msp.post("/settings/msp-lock", data={"section": sections, "csrf_token": token_of(msp)})
    assert resp.status_code == 302


def test_admin_cannot_change_a_locked_section_but_the_msp_can(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    try:
        _lock(app, ["nat", "management"])
        admin = logged_in(app, "alice", "admin")
        assert admin.post("/settings/msp-lock", data={"section": [], "csrf_token":
                          token_of(admin)}).status_code == 403  # fmt: skip
        live = WEB_FILTER.read_text()
        no_nat = live.replace("nat:\n  masquerade: [wan]\n", "nat:\n  masquerade: []\n")
        assert no_nat != live
        plan = admin.post("/policy/plan", data={"text": no_nat, "csrf_token": token_of(admin)})
        assert plan.status_code == 403
        assert "locked by your MSP: nat" in plan.get_data(as_text=True)
        before = len(engine_of(app).store.history(100))
        applied = admin.post(
            "/policy/apply",
            data={"text": no_nat, "base": "1", "confirm_within": "0",
                  "csrf_token": token_of(admin)},
        )  # fmt: skip
        assert "locked by your MSP" in applied.get_data(as_text=True)
        assert len(engine_of(app).store.history(100)) == before  # nothing applied
        # an everyday change outside the locked sections is fine
        domain = admin.post(
            "/policy/edit/domain",
            data={"domain": "games.example", "group": "kids", "verdict": "block",
                  "csrf_token": token_of(admin)},
        )  # fmt: skip
        assert domain.status_code == 200 and "locked by your MSP" not in domain.get_data(
            as_text=True
        )
        msp = logged_in(app, "msp-tech", "msp")
        done = msp.post(
            "/policy/apply",
            data={"text": no_nat, "base": "1", "confirm_within": "0",
                  "csrf_token": token_of(msp)},
        )  # fmt: skip
        assert done.status_code == 302
        assert len(engine_of(app).store.history(100)) == before + 1
        actions = [a["action"] for a in ui_store(app).audit_log()]
        assert "msp-lock" in actions
    finally:
        ui_store(app).close()


def test_section_texts_are_the_policys_own_lines() -> None:
    text = (
        "# head\nsite:\n  name: acme\n\n# the firewall\nnat:\n  masquerade: [wan]  # out\n"
        "rules: []\n"
    )
    assert section_texts(text, ["nat", "rules", "dns"]) == {
        "nat": "nat:\n  masquerade: [wan]  # out",
        "rules": "rules: []",
    }


def test_the_policy_page_shows_locked_sections_read_only_with_their_owner(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    try:
        _lock(app, ["nat", "rules"])
        admin = logged_in(app, "alice", "admin")
        page = admin.get("/policy").get_data(as_text=True)
        assert 'id="msp-locked"' in page and "Locked by MSP account msp-tech" in page
        assert '<pre class="diff" data-locked-section="nat">nat:\n  masquerade: [wan]' in page
        assert "Locked by your MSP (section rules)" in page  # the rule form is a note
        assert "kind=rule" not in page and "/policy/edit/rule" not in page
        assert "/policy/edit/domain" in page  # web_filter is not locked: its form stays
        msp_page = logged_in(app, "msp-tech", "msp").get("/policy").get_data(as_text=True)
        assert "/policy/edit/rule" in msp_page and "You can change them" in msp_page
    finally:
        ui_store(app).close()

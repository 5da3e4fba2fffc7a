"""Users admin, the audit log and API tokens: roles, the last admin, sessions ending."""

from __future__ import annotations

import re

from flask import Flask
from flask.testing import FlaskClient

from tests.webui.conftest import PASSWORD, csrf_of, logged_in, token_of, ui_store

NEW_PASSWORD = "another long secret"


def _post(client: FlaskClient, path: str, **form: str) -> int:
    return client.post(path, data={**form, "csrf_token": token_of(client, "/account")}).status_code


def _flash(client: FlaskClient) -> str:
    return client.get("/settings/users").get_data(as_text=True)


def test_an_admin_adds_users_with_roles(app: Flask) -> None:
    admin = logged_in(app)
    assert _post(admin, "/settings/users", username="mary", password=PASSWORD, role="msp") == 302
    mary = ui_store(app).user_by_name("mary")
    assert mary is not None and mary.role == "msp"
    assert _post(admin, "/settings/users", username="mary", password=PASSWORD, role="viewer") == 302
    assert "already a user" in _flash(admin)
    _post(admin, "/settings/users", username="weak", password="short", role="viewer")
    assert "at least 10" in _flash(admin) and ui_store(app).user_by_name("weak") is None
    _post(admin, "/settings/users", username="x y", password=PASSWORD, role="viewer")
    _post(admin, "/settings/users", username="bob", password=PASSWORD, role="root")
    assert {u.name for u in ui_store(app).users()} == {"alice", "mary"}
    entry = ui_store(app).audit_log()[0]
    assert entry["action"] == "user-added" and entry["user"] == "alice"
    assert entry["detail"] == "mary as msp" and entry["address"] == "127.0.0.1"


def test_only_admins_manage_users(app: Flask) -> None:
    logged_in(app)
    msp = logged_in(app, "mary", "msp")
    assert msp.get("/settings/users").status_code == 403
    assert _post(msp, "/settings/users", username="evil", password=PASSWORD, role="admin") == 403
    assert msp.get("/settings/audit").status_code == 200  # but the MSP reads the audit log
    viewer = logged_in(app, "vic", "viewer")
    assert viewer.get("/settings/audit").status_code == 403
    assert 'href="/settings/users"' not in viewer.get("/settings").get_data(as_text=True)


def test_the_last_admin_stays(app: Flask) -> None:
    admin = logged_in(app)
    alice = ui_store(app).user_by_name("alice")
    assert alice is not None
    _post(admin, f"/settings/users/{alice.id}", action="role", role="viewer")
    assert "last admin" in _flash(admin)
    assert ui_store(app).user_by_name("alice").role == "admin"  # type: ignore[union-attr]
    _post(admin, f"/settings/users/{alice.id}", action="delete")
    assert "your own account" in _flash(admin)
    bob = ui_store(app).add_user("bob", PASSWORD, "admin")
    resp = admin.patch(f"/api/v1/users/{bob.id}", json={"role": "viewer"},
                       headers={"X-CSRF-Token": token_of(admin)})  # fmt: skip
    assert resp.status_code == 200 and resp.get_json()["role"] == "viewer"
    bobs = logged_in(app, "bob")
    resp = bobs.delete(f"/api/v1/users/{alice.id}", headers={"X-CSRF-Token": token_of(bobs)})
    assert resp.status_code == 403  # bob is a viewer now
    # with bob demoted alice is the last admin again: not even the API may delete her
    ui_store(app).set_role(bob.id, "admin")
    bobs = logged_in(app, "bob")
    assert (
        bobs.delete(
            f"/api/v1/users/{alice.id}", headers={"X-CSRF-Token": token_of(bobs)}
        ).status_code
        == 200
    )
    resp = bobs.delete(f"/api/v1/users/{bob.id}", headers={"X-CSRF-Token": token_of(bobs)})
    assert resp.status_code == 400 and "own account" in resp.get_json()["error"]
    assert [u.name for u in ui_store(app).users()] == ["bob"]


def test_a_password_reset_ends_the_users_sessions(app: Flask) -> None:
    admin = logged_in(app)
    victor = logged_in(app, "victor", "viewer")
    user = ui_store(app).user_by_name("victor")
    assert user is not None
    assert (
        _post(admin, f"/settings/users/{user.id}", action="password", password=NEW_PASSWORD) == 302
    )
    assert victor.get("/").status_code == 302  # logged out
    assert ui_store(app).check_password("victor", NEW_PASSWORD) is not None
    ui_store(app).enable_totp(user.id, "JBSWY3DPEHPK3PXP", 0, [])
    _post(admin, f"/settings/users/{user.id}", action="reset-2fa")
    assert not ui_store(app).user_by_id(user.id).totp_enabled  # type: ignore[union-attr]
    actions = [e["action"] for e in ui_store(app).audit_log()]
    assert actions[:2] == ["user-2fa-reset", "user-password-reset"]
    page = admin.get("/settings/audit").get_data(as_text=True)
    assert "user-password-reset" in page and "victor" in page


def test_api_tokens_are_shown_once_work_without_csrf_and_can_be_revoked(app: Flask) -> None:
    viewer = logged_in(app, "victor", "viewer")
    page = viewer.post(
        "/account/tokens", data={"name": "monitoring", "csrf_token": token_of(viewer, "/account")}
    ).get_data(as_text=True)
    token = re.search(r'id="new-token">(egt_[^<]+)<', page)
    assert token
    account = viewer.get("/account").get_data(as_text=True)
    assert "monitoring" in account and token.group(1) not in account
    client = app.test_client()
    auth = {"Authorization": f"Bearer {token.group(1)}"}
    assert client.get("/api/v1/status", headers=auth).get_json()["user"] == "victor"
    assert client.get("/api/v1/account/tokens", headers=auth).get_json()["tokens"][0]["name"] == (
        "monitoring"
    )
    # a viewer's token reads only
    assert client.put("/api/v1/settings/security", json={"require_2fa": True},
                      headers=auth).status_code == 403  # fmt: skip
    made = client.post("/api/v1/account/tokens", json={"name": "second"}, headers=auth)
    assert made.status_code == 201 and made.get_json()["token"].startswith("egt_")
    token_id = ui_store(app).tokens(ui_store(app).user_by_name("victor").id)[0]["id"]  # type: ignore[union-attr]
    resp = viewer.post(f"/account/tokens/{token_id}/revoke",
                       data={"csrf_token": csrf_of(account)})  # fmt: skip
    assert resp.status_code == 302
    assert client.get("/api/v1/status", headers=auth).status_code == 401
    actions = [e["action"] for e in ui_store(app).audit_log()]
    assert actions[:3] == ["token-revoked", "token-created", "token-created"]


def test_no_token_without_a_second_factor_when_it_is_required(app: Flask) -> None:
    viewer = logged_in(app, "victor", "viewer")
    ui_store(app).set_setting("require_2fa", "1")
    resp = viewer.post(
        "/account/tokens", data={"name": "sneaky", "csrf_token": token_of(viewer, "/account")}
    )
    assert resp.status_code == 400 and "two-factor login is required" in resp.get_data(as_text=True)
    assert ui_store(app).tokens(ui_store(app).user_by_name("victor").id) == []  # type: ignore[union-attr]


def test_users_api(app: Flask) -> None:
    admin = logged_in(app)
    headers = {"X-CSRF-Token": token_of(admin)}
    made = admin.post("/api/v1/users", json={"name": "mary", "password": PASSWORD, "role": "msp"},
                      headers=headers)  # fmt: skip
    assert made.status_code == 201 and made.get_json()["role"] == "msp"
    listed = admin.get("/api/v1/users").get_json()["users"]
    assert [(u["name"], u["role"], u["two_factor"]) for u in listed] == [
        ("alice", "admin", False),
        ("mary", "msp", False),
    ]
    assert admin.get("/api/v1/audit?limit=1").get_json()["entries"][0]["action"] == "user-added"
    assert admin.patch("/api/v1/users/99", json={"role": "msp"}, headers=headers).status_code == 404
    bad = admin.patch(f"/api/v1/users/{made.get_json()['id']}", json={"role": "root"},
                      headers=headers)  # fmt: skip
    assert bad.status_code == 400 and "role must be" in bad.get_json()["error"]

"""The UI is safe by default: setup without default password, login everywhere, CSRF, roles."""

from __future__ import annotations

import re
import time

import pytest
from flask import Flask

from tests.webui.conftest import PASSWORD, csrf_of, logged_in, token_of, ui_store
from webui import totp

UNSAFE = ("POST", "PUT", "PATCH", "DELETE")


def _concrete(rule: str) -> str:
    return re.sub(r"<(?:[a-z]+:)?[a-z_]+>", "1", rule)


def test_first_start_needs_the_setup_token(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/").headers["Location"].endswith("/setup")
    token = ui_store(app).new_setup_token()
    page = client.get("/setup").get_data(as_text=True)
    form = {"username": "alice", "password": PASSWORD, "password2": PASSWORD}
    bad = client.post("/setup", data={**form, "token": "guess", "csrf_token": csrf_of(page)})
    assert bad.status_code == 400 and "wrong setup token" in bad.get_data(as_text=True)
    weak = client.post(
        "/setup",
        data={**form, "password": "short", "password2": "short", "token": token,
              "csrf_token": csrf_of(page)},
    )  # fmt: skip
    assert weak.status_code == 400 and ui_store(app).needs_setup()
    ok = client.post("/setup", data={**form, "token": token, "csrf_token": csrf_of(page)})
    assert ok.status_code == 302 and not ui_store(app).needs_setup()
    assert client.get("/").status_code == 200  # logged in as the new admin
    assert client.get("/setup").status_code == 302  # setup is over, the token gone
    assert ui_store(app).setting("setup_token") is None


def test_every_route_needs_a_login_except_the_public_ones(app: Flask) -> None:
    ui_store(app).add_user("alice", PASSWORD, "admin")
    client = app.test_client()
    public = {"/login", "/login/code", "/setup", "/static/<path:filename>"}
    checked = 0
    for rule in app.url_map.iter_rules():
        if rule.rule in public:
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            resp = client.open(_concrete(rule.rule), method=method)
            if rule.rule.startswith("/api/"):
                assert resp.status_code == 401, (method, rule.rule, resp.status_code)
            else:
                assert resp.status_code == 302, (method, rule.rule, resp.status_code)
                assert "/login" in resp.headers["Location"]
            checked += 1
    assert checked >= 4


def test_state_changes_need_the_csrf_token(app: Flask) -> None:
    client = logged_in(app)
    resp = client.post("/logout")
    assert resp.status_code == 400
    assert client.get("/").status_code == 200  # still logged in
    resp = client.post("/logout", data={"csrf_token": "forged"})
    assert resp.status_code == 400
    assert client.post("/logout", data={"csrf_token": token_of(client)}).status_code == 302


def test_viewers_cannot_change_anything(app: Flask) -> None:
    viewer = logged_in(app, "victor", "viewer")
    token = token_of(viewer)
    for rule in app.url_map.iter_rules():
        methods = set(rule.methods or ()) & set(UNSAFE)
        view = app.view_functions[rule.endpoint]
        if not methods or getattr(view, "_public", False) or getattr(view, "_self_service", False):
            continue
        for method in methods:
            resp = viewer.open(_concrete(rule.rule), method=method, data={"csrf_token": token})
            assert resp.status_code == 403, (method, rule.rule)


def test_login_and_setup_forms_need_the_csrf_token_too(app: Flask) -> None:
    ui_store(app).add_user("alice", PASSWORD, "admin")
    client = app.test_client()
    resp = client.post("/login", data={"username": "alice", "password": PASSWORD})
    assert resp.status_code == 400  # a page elsewhere cannot log the browser in as someone
    assert client.get("/").status_code == 302


def test_security_headers(app: Flask) -> None:
    resp = logged_in(app).get("/")
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert "frame-ancestors 'none'" in csp
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Cache-Control"] == "no-store"
    assert "<script>" not in resp.get_data(as_text=True)  # no inline script anywhere


def test_login_brute_force_hits_the_limit(app: Flask) -> None:
    ui_store(app).add_user("alice", PASSWORD, "admin")
    client = app.test_client()
    token = csrf_of(client.get("/login").get_data(as_text=True))
    for _ in range(5):
        resp = client.post("/login", data={"username": "alice", "password": "nope",
                                           "csrf_token": token})  # fmt: skip
        assert resp.status_code == 401
    locked = client.post(
        "/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token}
    )
    assert locked.status_code == 429  # even the right password: locked for a while
    actions = [a["action"] for a in ui_store(app).audit_log()]
    assert actions.count("login-failed") == 5 and "login-locked" in actions


def test_sessions_expire_when_idle(app: Flask) -> None:
    client = logged_in(app)
    with client.session_transaction() as sess:
        sess["seen"] = time.time() - 31 * 60
    resp = client.get("/")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]


def test_a_password_change_ends_other_sessions(app: Flask) -> None:
    first = logged_in(app)
    second = logged_in(app)
    resp = first.post(
        "/account/password",
        data={
            "current": PASSWORD,
            "password": "another long secret",
            "csrf_token": token_of(first),
        },
    )
    assert resp.status_code == 302
    assert second.get("/").status_code == 302


def test_two_factor_login_with_code_and_recovery_code(app: Flask) -> None:
    client = logged_in(app)
    page = client.get("/account/2fa").get_data(as_text=True)
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page)
    assert secret
    code = totp.code_at(secret.group(1), int(time.time() // 30))
    done = client.post("/account/2fa", data={"code": code, "csrf_token": csrf_of(page)})
    recovery = re.findall(r"<li><code>([a-z0-9-]+)</code></li>", done.get_data(as_text=True))
    assert len(recovery) == 8
    fresh = app.test_client()
    token = csrf_of(fresh.get("/login").get_data(as_text=True))
    resp = fresh.post("/login", data={"username": "alice", "password": PASSWORD,
                                      "csrf_token": token})  # fmt: skip
    assert resp.headers["Location"].endswith("/login/code")
    assert fresh.get("/").status_code == 302  # the password alone is not a login
    wrong = fresh.post("/login/code", data={"code": "000000", "csrf_token": token})
    assert wrong.status_code == 401
    ok = fresh.post("/login/code", data={"code": recovery[0], "csrf_token": token})
    assert ok.status_code == 302 and fresh.get("/").status_code == 200
    again = app.test_client()
    token = csrf_of(again.get("/login").get_data(as_text=True))
    again.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token})
    reused = again.post("/login/code", data={"code": recovery[0], "csrf_token": token})
    assert reused.status_code == 401  # a recovery code works once


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil"])
def test_no_open_redirect_after_login(app: Flask, target: str) -> None:
    ui_store(app).add_user("alice", PASSWORD, "admin")
    client = app.test_client()
    token = csrf_of(client.get("/login").get_data(as_text=True))
    resp = client.post(
        f"/login?next={target}",
        data={"username": "alice", "password": PASSWORD, "csrf_token": token},
    )
    assert resp.headers["Location"] == "/"

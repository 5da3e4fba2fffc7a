"""The JSON API: every /api/v1 route documented in the OpenAPI document, bearer tokens for
scripts (no CSRF: no cookie), and the CSRF header for changes made with the browser session."""

from __future__ import annotations

from flask import Flask

from tests.webui.conftest import logged_in, token_of, ui_store
from webui.api import PREFIX


def _openapi_path(rule: str) -> str:
    path = rule[len(PREFIX) :]
    for converter in ("<int:", "<path:", "<"):
        path = path.replace(converter, "{")
    return path.replace(">", "}")


def test_every_api_route_is_documented_in_the_openapi_document(app: Flask) -> None:
    document = logged_in(app).get("/api/v1/openapi.json").get_json()
    assert document["openapi"].startswith("3.") and document["servers"] == [{"url": PREFIX}]
    seen = 0
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(PREFIX + "/"):
            continue
        view = app.view_functions[rule.endpoint]
        assert getattr(view, "_api_doc", None) is not None, f"{rule.rule} has no @api_doc"
        operations = document["paths"].get(_openapi_path(rule.rule))
        assert operations is not None, f"{rule.rule} is missing from openapi.json"
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            op = operations.get(method.lower())
            assert op is not None, f"{method} {rule.rule} is missing from openapi.json"
            assert op["summary"] and op["x-roles"]
            assert {p["name"] for p in op["parameters"] if p["in"] == "path"} == set(rule.arguments)
            seen += 1
    assert seen >= 20  # settings, users, tokens, backup, health, anomalies and the rest


def test_a_token_changes_things_without_csrf_and_a_session_needs_the_header(app: Flask) -> None:
    admin = logged_in(app)
    alice = ui_store(app).user_by_name("alice")
    assert alice is not None
    token = ui_store(app).new_token(alice.id, "script")
    script = app.test_client()
    auth = {"Authorization": f"Bearer {token}"}
    resp = script.put("/api/v1/settings/security", json={"require_2fa": False}, headers=auth)
    assert resp.status_code == 200 and resp.get_json()["require_2fa"] is False
    assert ui_store(app).audit_log()[0]["action"] == "require-2fa"

    resp = admin.put("/api/v1/settings/security", json={"require_2fa": False})
    assert resp.status_code == 400 and "CSRF" in resp.get_json()["error"]
    resp = admin.put(
        "/api/v1/settings/security",
        json={"require_2fa": False},
        headers={"X-CSRF-Token": token_of(admin)},
    )
    assert resp.status_code == 200


def test_bad_tokens_and_read_only_tokens(app: Flask) -> None:
    logged_in(app)
    client = app.test_client()
    resp = client.get("/api/v1/settings/dns", headers={"Authorization": "Bearer egt_forged"})
    assert resp.status_code == 401 and resp.get_json() == {"error": "invalid token"}
    assert client.get("/api/v1/users").status_code == 401
    viewer = ui_store(app).add_user("vic", "correct horse battery", "viewer")
    auth = {"Authorization": f"Bearer {ui_store(app).new_token(viewer.id, 'dash')}"}
    assert client.get("/api/v1/health", headers=auth).status_code == 200
    assert client.get("/api/v1/settings/dns", headers=auth).status_code == 200
    resp = client.post("/api/v1/settings/dns/update", headers=auth)
    assert resp.status_code == 403 and "viewers" in resp.get_json()["error"]
    assert client.get("/api/v1/users", headers=auth).status_code == 403  # admins only

"""Policy pages and API: preview before apply, errors at their line, commit-confirm, rollback."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask, url_for
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from appliance.engine import Engine
from appliance.nft import MemoryNft
from tests.webui.conftest import logged_in, token_of, ui_store
from webui.app import create_app
from webui.config import UiConfig
from webui.policy_views import WATCHDOG
from webui.store import Role

EXAMPLES = Path(__file__).resolve().parents[2] / "policies" / "examples"
WEB_FILTER = EXAMPLES / "web-filter.yaml"


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now


def make_app(tmp_path: Path, *, live: bool = True) -> Flask:
    config = UiConfig(state_dir=tmp_path / "state", secure_cookies=False, policy_base=EXAMPLES)
    app = create_app(config, nft=MemoryNft())
    app.config["TESTING"] = True
    app.extensions[WATCHDOG] = app.extensions.setdefault("test_watchdogs", []).append
    eng = engine_of(app)
    eng.clock = FakeClock()
    if live:
        eng.apply(eng.plan(WEB_FILTER), author="setup", message="first version")
    return app


def engine_of(app: Flask) -> Engine:
    found: Engine = app.extensions["edgeguard_appliance"].engine()
    return found


def clock_of(app: Flask) -> FakeClock:
    clock = engine_of(app).clock
    assert isinstance(clock, FakeClock)
    return clock


def nft_of(app: Flask) -> MemoryNft:
    nft = engine_of(app).nft
    assert isinstance(nft, MemoryNft)
    return nft


@pytest.fixture
def papp(tmp_path: Path) -> Iterator[Flask]:
    app = make_app(tmp_path)
    yield app
    ui_store(app).close()
    engine_of(app).store.close()


@pytest.fixture
def admin(papp: Flask) -> FlaskClient:
    return logged_in(papp, "alice", "admin")


def page(resp: TestResponse) -> str:
    return resp.get_data(as_text=True)


def hidden_text(body: str) -> str:
    m = re.search(r'name="text" value="([^"]*)"', body)
    assert m, "no apply form on the page"
    return html.unescape(m.group(1))


def live_id(app: Flask) -> int | None:
    live = engine_of(app).store.live()
    return live.id if live else None


def live_text(app: Flask) -> str:
    eng = engine_of(app)
    live = eng.store.live()
    assert live is not None
    return eng.store.texts(live.id)[0]


def post(client: FlaskClient, path: str, **data: object) -> TestResponse:
    return client.post(path, data={"csrf_token": token_of(client, "/policy"), **data})


def good_text(app: Flask) -> str:
    return live_text(app).replace(
        "  - name: lan-out\n",
        "  - name: lan-ssh\n    from: lan\n    to: wan\n    service: ssh\n    action: drop\n"
        "  - name: lan-out\n",
    )


def apply(client: FlaskClient, text: str, confirm: int = 0, **extra: object) -> TestResponse:
    plan = page(post(client, "/policy/plan", text=text))
    base = re.search(r'name="base" value="(\d*)"', plan)
    assert base
    return post(
        client,
        "/policy/apply",
        text=text,
        base=base.group(1),
        message="test",
        confirm_within=confirm,
        **extra,
    )


# -- editor and plan ---------------------------------------------------------------------------
def test_the_editor_shows_the_live_policy(papp: Flask, admin: FlaskClient) -> None:
    body = page(admin.get("/policy"))
    assert "Live: version 1 (good)" in body
    assert html.escape("kids-no-social") in body and "# An office with a waiting room" in body
    assert "<option>kids</option>" in body  # the forms offer the policy's groups


def test_with_nothing_live_the_editor_is_empty_with_a_hint(tmp_path: Path) -> None:
    app = make_app(tmp_path, live=False)
    body = page(logged_in(app).get("/policy"))
    assert 'id="empty-hint"' in body and "No policy has been applied yet" in body
    assert "Add a firewall rule" not in body  # the forms edit the live policy: none yet
    client = logged_in(app)
    first = apply(client, WEB_FILTER.read_text(encoding="utf-8"))
    assert first.status_code == 302 and live_id(app) == 1
    ui_store(app).close()
    engine_of(app).store.close()


def test_a_bad_edit_shows_the_error_at_its_line_and_applies_nothing(
    papp: Flask, admin: FlaskClient
) -> None:
    text = live_text(papp).replace("from: guest\n    to: wan", "from: guest\n    to: guests")
    line = text.splitlines().index("    to: guests") + 1
    before = nft_of(papp).transactions
    resp = post(admin, "/policy/plan", text=text)
    body = page(resp)
    assert resp.status_code == 422
    assert "nothing was applied" in body
    assert f'<a href="#L{line}">line {line}:9</a>' in body
    assert "unknown zone &#39;guests&#39;" in body and "did you mean &#39;guest&#39;" in body
    assert f'<span id="L{line}" class="del">' in body  # the bad line is marked in the listing
    assert html.escape("to: guests") in body  # the text is kept in the editor
    resp = post(admin, "/policy/apply", text=text, base="1", confirm_within=0)
    assert resp.status_code == 422  # apply plans again
    assert [v.id for v in engine_of(papp).store.history()] == [1]
    assert nft_of(papp).transactions == before


def test_text_that_is_not_yaml_is_reported_at_its_line(admin: FlaskClient) -> None:
    resp = post(admin, "/policy/plan", text="version: 1\nsite: {name: x\nzones: {}\n")
    body = page(resp)
    assert resp.status_code == 422
    assert re.search(r'<a href="#L(\d)">line \1:\d+</a>: not valid YAML', body)


def test_a_good_edit_shows_the_ruleset_diff_and_an_apply_form(
    papp: Flask, admin: FlaskClient
) -> None:
    text = good_text(papp)
    body = page(post(admin, "/policy/plan", text=text, message="no ssh out"))
    assert re.search(r'<span class="add">\+.*lan-ssh', body)
    assert "Compared with the live version 1" in body
    assert hidden_text(body) == text  # exactly the previewed text goes to apply
    assert 'name="confirm_within" type="number" min="0" max="3600" value="120"' in body
    assert 'value="no ssh out"' in body
    assert [v.id for v in engine_of(papp).store.history()] == [1]


def test_apply_makes_a_version_and_loads_its_ruleset(papp: Flask, admin: FlaskClient) -> None:
    resp = apply(admin, good_text(papp))
    assert resp.status_code == 302
    store = engine_of(papp).store
    live = store.live()
    assert live is not None and (live.id, live.status, live.author) == (2, "good", "alice")
    assert nft_of(papp).table == store.texts(2)[1] and "lan-ssh" in store.texts(2)[1]
    assert "Version 2 applied." in page(admin.get("/policy"))
    assert papp.extensions["test_watchdogs"] == []  # no confirm window, no watchdog
    assert any(a["action"] == "policy-apply" for a in ui_store(papp).audit_log())


def test_an_apply_against_an_old_preview_is_refused(papp: Flask, admin: FlaskClient) -> None:
    resp = post(admin, "/policy/apply", text=good_text(papp), base="", confirm_within=0)
    assert resp.status_code == 409
    assert "changed since the preview" in page(resp)
    assert [v.id for v in engine_of(papp).store.history()] == [1]


def test_an_unsafe_plan_needs_force(papp: Flask, admin: FlaskClient) -> None:
    outside = {"REMOTE_ADDR": "203.0.113.50"}  # the admin on the WAN: the policy cuts them off
    token = token_of(admin, "/policy")
    text = good_text(papp)
    body = page(
        admin.post("/policy/plan", data={"text": text, "csrf_token": token}, environ_base=outside)
    )
    assert "cuts your own management access (203.0.113.50" in body and 'name="force"' in body
    form = {"text": text, "base": "1", "confirm_within": "0", "csrf_token": token}
    refused = admin.post("/policy/apply", data=form, environ_base=outside)
    assert refused.status_code == 409 and "unsafe plan" in page(refused)
    assert live_id(papp) == 1
    forced = admin.post("/policy/apply", data={**form, "force": "1"}, environ_base=outside)
    assert forced.status_code == 302
    assert live_id(papp) == 2
    assert "forced" in ui_store(papp).audit_log()[0]["detail"]


# -- commit-confirm ----------------------------------------------------------------------------
def test_an_unconfirmed_apply_is_rolled_back_and_the_ui_says_so(
    papp: Flask, admin: FlaskClient
) -> None:
    first_ruleset = nft_of(papp).table
    assert apply(admin, good_text(papp), confirm=60).status_code == 302
    assert papp.extensions["test_watchdogs"] == [papp.extensions["edgeguard_config"].state_dir]
    body = page(admin.get("/policy"))
    assert "Version 2 is on probation" in body
    pending = engine_of(papp).store.pending_confirm()
    assert pending is not None
    deadline = pending.deadline
    assert f'data-deadline="{deadline:.0f}"' in body and ">60 s<" in body
    clock_of(papp).now += 61
    body = page(admin.get("/policy"))
    assert "was not confirmed in time and was rolled back" in body
    assert "Version 2 was rolled back: version 2 -&gt; version 1: not confirmed in time" in body
    assert "on probation" not in body
    store = engine_of(papp).store
    assert live_id(papp) == 1 and store.version(2).status == "rolled-back"
    assert nft_of(papp).table == first_ruleset
    assert "policy-expired" in [a["action"] for a in ui_store(papp).audit_log()]


def test_confirm_keeps_the_new_version(papp: Flask, admin: FlaskClient) -> None:
    apply(admin, good_text(papp), confirm=60)
    resp = post(admin, "/policy/confirm")
    assert resp.status_code == 302
    store = engine_of(papp).store
    assert store.pending_confirm() is None and store.version(2).status == "good"
    clock_of(papp).now += 120
    body = page(admin.get("/policy"))
    assert "Version 2 confirmed." in body and "on probation" not in body
    assert live_id(papp) == 2
    assert "policy-confirm" in [a["action"] for a in ui_store(papp).audit_log()]


def test_a_confirm_after_the_deadline_rolls_back_and_says_so(
    papp: Flask, admin: FlaskClient
) -> None:
    apply(admin, good_text(papp), confirm=60)
    token = token_of(admin, "/policy")
    clock_of(papp).now += 61  # nobody looked in the meantime
    resp = admin.post("/policy/confirm", data={"csrf_token": token})
    assert resp.status_code == 302
    body = page(admin.get("/policy"))
    assert "too late: the deadline passed; version 2 was rolled back" in body
    assert live_id(papp) == 1
    assert "policy-expired" in [a["action"] for a in ui_store(papp).audit_log()]


def test_roll_back_now_from_the_banner(papp: Flask, admin: FlaskClient) -> None:
    apply(admin, good_text(papp), confirm=60)
    assert post(admin, "/policy/rollback").status_code == 302
    store = engine_of(papp).store
    assert live_id(papp) == 1 and store.pending_confirm() is None
    assert nft_of(papp).table == store.texts(1)[1]


# -- history -----------------------------------------------------------------------------------
def test_history_shows_diffs_and_rolls_back_in_one_click(papp: Flask, admin: FlaskClient) -> None:
    apply(admin, good_text(papp))
    body = page(admin.get("/policy/history"))
    assert 'id="v2"' in body and "alice" in body and "test" in body
    assert 'name="version" value="1"' in body and 'data-confirm="Return to version 1?"' in body
    detail = page(admin.get("/policy/history/2"))
    assert "Policy changes since version 1" in detail
    assert re.search(r'<span class="add">\+  - name: lan-ssh</span>', detail)
    assert re.search(r'<span class="add">\+.*lan-ssh', detail.split("Ruleset changes")[1])
    assert admin.get("/policy/history/99").status_code == 404
    assert post(admin, "/policy/rollback", version="1").status_code == 302
    store = engine_of(papp).store
    assert live_id(papp) == 1 and store.version(2).status == "rolled-back"
    assert nft_of(papp).table == store.texts(1)[1]
    assert "Rolled back to version 1." in page(admin.get("/policy"))
    post(admin, "/policy/rollback", version="1")
    assert "version 1 is already live" in page(admin.get("/policy"))


# -- forms -------------------------------------------------------------------------------------
FORMS = [
    ("domain", {"group": "kids", "domain": "games.example", "verdict": "block"},
     "      block: [games.example]\n"),
    ("client", {"group": "kids", "member": "02-00-00-00-00-71"},
     'clients: [guest, kids-tablet, "02:00:00:00:00:71"]'),
    ("port-forward", {"name": "nas", "port": "8443", "to": "192.0.2.20", "to_port": "443",
                      "protocol": "tcp"},
     "  port_forwards:\n    - name: nas\n      port: 8443\n      to: 192.0.2.20\n"
     "      to_port: 443\n"),
    ("rule", {"name": "lan-ssh", "from": "lan", "to": "wan", "service": "ssh", "action": "drop",
              "before": "lan-out"},
     "  - name: lan-ssh\n    from: lan\n    to: wan\n    service: ssh\n    action: drop\n"
     "  - name: lan-out\n"),
    ("schedule", {"name": "evening", "days": "mon, tue", "time": "18:00-22:00"},
     '  evening:\n    - {days: [mon, tue], time: "18:00-22:00"}\n'),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "form", "expected"), FORMS, ids=[f[0] for f in FORMS])
def test_each_form_edits_the_yaml_and_shows_the_plan(
    papp: Flask, admin: FlaskClient, kind: str, form: dict[str, str], expected: str
) -> None:
    resp = post(admin, f"/policy/edit/{kind}", **form)
    body = page(resp)
    assert resp.status_code == 200, body
    text = hidden_text(body)
    assert expected in text
    assert text.startswith("# An office with a waiting room")  # comments survive
    assert "# known DNS-over-HTTPS endpoint does not get around it." in text
    assert [v.id for v in engine_of(papp).store.history()] == [1]  # a preview, not an apply
    resp = post(admin, "/policy/apply", text=text, base="1", message="form", confirm_within=0)
    assert resp.status_code == 302
    assert live_text(papp) == text


def test_a_form_error_is_shown_and_nothing_changes(papp: Flask, admin: FlaskClient) -> None:
    resp = post(admin, "/policy/edit/domain", group="teens", domain="x.example", verdict="block")
    assert resp.status_code == 400
    assert "no web_filter group &#39;teens&#39; (groups: staff, kids, cameras, admin" in page(resp)
    resp = post(admin, "/policy/edit/domain", group="kids", domain="not a domain", verdict="block")
    assert "is not a domain name" in page(resp)
    assert post(admin, "/policy/edit/nope").status_code == 400
    assert [v.id for v in engine_of(papp).store.history()] == [1]


def test_a_form_result_the_loader_refuses_is_shown_at_its_line(admin: FlaskClient) -> None:
    resp = post(
        admin, "/policy/edit/rule", name="x", **{"from": "lan", "to": "guests"}, action="accept"
    )
    body = page(resp)
    assert resp.status_code == 422
    assert "unknown zone &#39;guests&#39;" in body and 'class="del"' in body


# -- roles and CSRF ----------------------------------------------------------------------------
POSTS = [
    "/policy/plan",
    "/policy/apply",
    "/policy/confirm",
    "/policy/rollback",
    "/policy/edit/domain",
    "/api/v1/policy/plan",
    "/api/v1/policy/apply",
    "/api/v1/policy/confirm",
    "/api/v1/policy/rollback",
]


def test_viewers_read_but_cannot_change(papp: Flask) -> None:
    viewer = logged_in(papp, "victor", "viewer")
    body = page(viewer.get("/policy"))
    assert "kids-no-social" in body and "Preview the plan" not in body
    assert viewer.get("/policy/history").status_code == 200
    token = token_of(viewer, "/policy")
    for path in POSTS:
        resp = viewer.post(path, data={"csrf_token": token, "text": live_text(papp)})
        assert resp.status_code == 403, path
    assert [v.id for v in engine_of(papp).store.history()] == [1]


def test_changes_need_the_csrf_token(papp: Flask, admin: FlaskClient) -> None:
    for path in POSTS[:5]:
        resp = admin.post(path, data={"text": good_text(papp), "base": "1"})
        assert resp.status_code == 400, path
    assert [v.id for v in engine_of(papp).store.history()] == [1]


# -- API ---------------------------------------------------------------------------------------
def bearer(app: Flask, name: str = "alice", role: Role = "admin") -> dict[str, str]:
    store = ui_store(app)
    logged_in(app, name, role)
    user = store.user_by_name(name)
    assert user is not None
    return {"Authorization": f"Bearer {store.new_token(user.id, 'ci')}"}


def test_the_api_plans_applies_confirms_and_rolls_back(papp: Flask) -> None:
    client, auth = papp.test_client(), bearer(papp)
    got = client.get("/api/v1/policy", headers=auth).get_json()
    assert got["live"]["id"] == 1 and got["text"] == live_text(papp) and got["pending"] is None
    bad = client.post(
        "/api/v1/policy/plan",
        headers=auth,
        json={"text": got["text"].replace("to: self", "to: selff", 1)},
    )
    assert bad.status_code == 422
    problem = bad.get_json()["problems"][0]
    assert problem["line"] > 1 and "selff" in problem["text"]
    text = good_text(papp)
    plan = client.post("/api/v1/policy/plan", headers=auth, json={"text": text}).get_json()
    assert "+" in plan["diff"] and "lan-ssh" in plan["diff"] and plan["unsafe"] == []
    body = {"text": text, "message": "api", "confirm_within": 30, "base": 1}
    done = client.post("/api/v1/policy/apply", headers=auth, json=body)
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["version"]["status"] == "unconfirmed"
    assert done.get_json()["pending"]["version"] == 2
    assert client.post("/api/v1/policy/confirm", headers=auth).get_json()["version"]["id"] == 2
    assert client.post("/api/v1/policy/confirm", headers=auth).status_code == 409
    back = client.post("/api/v1/policy/rollback", headers=auth, json={"version": 1})
    assert back.get_json()["version"]["id"] == 1
    assert nft_of(papp).table == engine_of(papp).store.texts(1)[1]
    unknown = client.post("/api/v1/policy/rollback", headers=auth, json={"version": 9})
    assert unknown.status_code == 404
    history = client.get("/api/v1/policy/history", headers=auth).get_json()
    assert [(v["id"], v["status"]) for v in history["versions"]] == [
        (2, "rolled-back"),
        (1, "good"),
    ]
    detail = client.get("/api/v1/policy/history/2", headers=auth).get_json()
    assert detail["previous"]["id"] == 1 and "+  - name: lan-ssh" in detail["policy_diff"]


def test_the_api_apply_refuses_stale_and_unsafe_plans(papp: Flask) -> None:
    client, auth = papp.test_client(), bearer(papp)
    stale = client.post(
        "/api/v1/policy/apply", headers=auth, json={"text": good_text(papp), "base": None}
    )
    assert stale.status_code == 409 and "changed since the preview" in stale.get_json()["error"]
    open_all = "version: 1\nsite: {name: x}\nzones: {lan: {interfaces: [lan0]}}\n"
    unsafe = client.post("/api/v1/policy/apply", headers=auth, json={"text": open_all})
    assert unsafe.status_code == 409 and "unsafe plan: it removes" in unsafe.get_json()["error"]
    assert [v.id for v in engine_of(papp).store.history()] == [1]


def test_the_api_is_documented_and_other_pages_can_send_text_to_the_preview(
    papp: Flask,
) -> None:
    client, auth = papp.test_client(), bearer(papp)
    paths = client.get("/api/v1/openapi.json", headers=auth).get_json()["paths"]
    assert {"/policy", "/policy/plan", "/policy/apply", "/policy/confirm", "/policy/rollback",
            "/policy/history", "/policy/history/{vid}"} <= set(paths)  # fmt: skip
    assert paths["/policy/apply"]["post"]["x-roles"] == ["admin", "msp"]
    with papp.test_request_context():
        assert url_for("policy.preview") == "/policy/plan"  # settings' prepared edits land here


def test_api_changes_are_for_admins(papp: Flask) -> None:
    client, auth = papp.test_client(), bearer(papp, "victor", "viewer")
    assert client.get("/api/v1/policy/history", headers=auth).status_code == 200
    for path in POSTS[5:]:
        assert client.post(path, headers=auth, json={}).status_code == 403, path

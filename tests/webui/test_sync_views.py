"""The MSP sync page: enrolment from a form, status, and conflicts settled through the plan."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import yaml
from flask import Flask

from appliance.sync.keys import generate_key
from appliance.sync.metadata import make_root
from appliance.sync.publish import publish_root
from appliance.sync.state import Enrolment, SyncPaths, SyncState
from tests.appliance.sync.test_transport import StaticHost
from tests.webui.conftest import logged_in, token_of, ui_store
from tests.webui.test_policy_views import WEB_FILTER, make_app

NOW = dt.datetime.now(dt.UTC)


def _root() -> dict[str, object]:
    root_key, bundle_key = generate_key(), generate_key()
    return make_root(1, [root_key, bundle_key], [root_key], [bundle_key], [],
                     NOW + dt.timedelta(days=365), [root_key])  # fmt: skip


def _form(app: Flask, **fields: str) -> dict[str, str]:
    base = {
        "server": "https://msp.example/edgeguard",
        "checkin": "https://msp.example:8600",
        "site": "acme-hq",
        "credential": "egc_secret",
    }
    return {**base, **fields}


def test_enrolment_from_the_form_writes_what_sync_enrol_writes(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    try:
        admin = logged_in(app)
        page = admin.get("/sync").get_data(as_text=True)
        assert 'id="enrol"' in page and 'name="credential"' in page
        root = _root()
        resp = admin.post("/sync/enrol", data={**_form(app), "root": json.dumps(root),
                                               "csrf_token": token_of(admin)})  # fmt: skip
        assert resp.status_code == 302
        paths = SyncPaths(tmp_path / "state")
        enrolment = Enrolment.load(paths.enrolment)
        assert (enrolment.site, enrolment.credential) == ("acme-hq", "egc_secret")
        assert json.loads(paths.root.read_text()) == root
        status = admin.get("/sync").get_data(as_text=True)
        assert "Enrolled as" in status and 'id="sync-status"' in status
        assert "site acme-hq" in status and 'id="enrol"' not in status
        assert "sync-enrol" in [a["action"] for a in ui_store(app).audit_log()]
    finally:
        ui_store(app).close()


def test_bad_enrolment_input_is_refused_with_the_reason_and_nothing_written(
    tmp_path: Path,
) -> None:
    app = make_app(tmp_path)
    try:
        admin = logged_in(app)
        root = _root()
        tampered = json.loads(json.dumps(root))
        tampered["signed"]["version"] = 2
        cases = [
            ({"site": "../etc"}, "site id"),
            ({"root": "{not json"}, "enrolment failed"),
            ({"root": json.dumps(tampered)}, "enrolment failed"),
            ({"credential": " ", "root": json.dumps(root)}, "credential is empty"),
            ({"server": "ftp://msp.example", "root": json.dumps(root)}, "https://"),
        ]
        for fields, why in cases:
            resp = admin.post("/sync/enrol", data={**_form(app, **fields),
                                                   "csrf_token": token_of(admin)})  # fmt: skip
            assert resp.status_code == 400, fields
            assert why in resp.get_data(as_text=True), fields
        assert not SyncPaths(tmp_path / "state").enrolment.exists()
        viewer = logged_in(app, "vic", "viewer")
        assert "An admin can enrol it here" in viewer.get("/sync").get_data(as_text=True)
        assert viewer.post("/sync/enrol", data={**_form(app), "root": json.dumps(root),
                           "csrf_token": token_of(viewer)}).status_code == 403  # fmt: skip
    finally:
        ui_store(app).close()


def test_a_fetched_root_must_carry_the_pinned_key(tmp_path: Path) -> None:
    publish = tmp_path / "publish"
    publish.mkdir()
    root = _root()
    publish_root(publish, root)
    host = StaticHost(publish)
    app = make_app(tmp_path)
    try:
        admin = logged_in(app)
        form = _form(app, server=host.url, root_keyid="0" * 64)
        resp = admin.post("/sync/enrol", data={**form, "csrf_token": token_of(admin)})
        assert resp.status_code == 400 and "pinned" in resp.get_data(as_text=True)
        keyid = next(iter(root["signed"]["root_keys"]))  # type: ignore[index]
        form = _form(app, server=host.url, root_keyid=keyid)
        assert (
            admin.post("/sync/enrol", data={**form, "csrf_token": token_of(admin)}).status_code
            == 302
        )
    finally:
        host.close()
        ui_store(app).close()


def test_a_conflict_is_shown_as_a_diff_and_the_msp_version_goes_to_the_plan(
    tmp_path: Path,
) -> None:
    app = make_app(tmp_path)
    try:
        paths = SyncPaths(tmp_path / "state")
        paths.dir.mkdir(parents=True, exist_ok=True)
        Enrolment("https://msp.example", "https://msp.example", "acme-hq", "c", "box-1").save(
            paths.enrolment
        )
        paths.root.write_text(json.dumps(_root()))
        live = WEB_FILTER.read_text()
        msp_text = live.replace("masquerade: [wan]", "masquerade: [wan]  # MSP: keep NAT on wan")
        msp_text = msp_text.replace("name: web-filter", "name: web-filter-msp")
        paths.base.write_text(msp_text)
        data = yaml.safe_load(live)
        state = SyncState(bundle_version=3, conflicts=[{
            "section": "site", "base": data["site"], "local": data["site"],
            "remote": {**data["site"], "name": "web-filter-msp"},
        }])  # fmt: skip
        state.save(paths.state)
        admin = logged_in(app)
        page = admin.get("/sync").get_data(as_text=True)
        assert 'data-section="site"' in page
        assert '<span class="del">-name: web-filter-msp</span>' in page
        assert '<span class="add">+name: web-filter</span>' in page
        plan = admin.post("/sync/conflicts/site/take", data={"csrf_token": token_of(admin)})
        body = plan.get_data(as_text=True)
        assert plan.status_code == 200 and "name: web-filter-msp" in body
        assert "MSP: keep NAT" not in body  # only the conflicting section was taken
        missing = admin.post("/sync/conflicts/nat/take", data={"csrf_token": token_of(admin)})
        assert missing.status_code == 404
    finally:
        ui_store(app).close()

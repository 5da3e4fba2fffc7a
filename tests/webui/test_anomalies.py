"""The anomalies page on the scoring's real store: alerts with their evidence, host scores,
and quarantine / lift / dismiss for admins (CSRF, audited), read-only for viewers."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from appliance.anomaly.quarantine import MemoryQuarantineSets, QuarantineManager
from appliance.anomaly.records import Alert
from appliance.anomaly.store import AnomalyStore
from tests.webui.conftest import logged_in, token_of, ui_store

T0 = 1_760_000_000.0


def state(app: Flask) -> Path:
    found: Path = app.extensions["edgeguard_config"].state_dir
    return found


@pytest.fixture
def scored(app: Flask) -> AnomalyStore:
    store = AnomalyStore.in_state_dir(state(app))
    store.record(
        [
            Alert(
                host="192.0.2.23",
                kind="beacon",
                peer="198.51.100.7",
                score=96,
                severity="critical",
                first=T0 - 3600,
                last=T0,
                explanation="every 60 s to 198.51.100.7 <b>",
                subscores={"timing": 0.93},
                modifiers={"first_seen": 1.3},
                evidence={"connections": 61, "interval": 60.0},
            ),
            Alert("192.0.2.24", "scan", "", 41, "medium", T0 - 60, T0, "42 ports in 10 s"),
        ],
        T0,
        {"192.0.2.23": 96, "192.0.2.24": 41},
    )
    return store


def test_alerts_scores_and_evidence_are_shown(app: Flask, scored: AnomalyStore) -> None:
    del scored
    page = logged_in(app).get("/anomalies").get_data(as_text=True)
    assert "not installed" not in page
    assert "critical" in page and "<code>192.0.2.23</code>" in page and "beacon" in page
    assert "every 60 s to 198.51.100.7 &lt;b&gt;" in page  # escaped
    assert "timing 0.93" in page and "first_seen 1.30" in page
    assert "&#34;connections&#34;: 61" in page or '"connections": 61' in page
    assert "2025-10-09 07:53:20 UTC" in page  # first seen
    scores = page[page.index('id="host-scores"') :]
    assert scores.index("192.0.2.23") < scores.index("192.0.2.24")  # highest score first
    assert "No host is quarantined." in page and "Quarantine host" in page


def test_quarantine_and_lift_from_the_page(app: Flask, scored: AnomalyStore) -> None:
    admin = logged_in(app)
    [row] = [r for r in scored.alerts() if r.alert.host == "192.0.2.23"]
    resp = admin.post(
        "/anomalies/quarantine",
        data={
            "csrf_token": token_of(admin, "/anomalies"),
            "address": "192.0.2.23",
            "reason": "beacon alert",
            "alert_id": str(row.id),
        },
    )
    assert resp.status_code == 302
    page = admin.get("/anomalies").get_data(as_text=True)
    assert "192.0.2.23 is quarantined" in page and "Lift quarantine" in page
    [entry] = QuarantineManager(scored).active()
    assert (entry.address, entry.by, entry.alert_id) == ("192.0.2.23", "alice", row.id)
    assert scored.alert(row.id).status == "quarantined"  # type: ignore[union-attr]
    # the controller's sync puts exactly the table's addresses into the sets
    feed = MemoryQuarantineSets()
    QuarantineManager(scored).sync(feed)
    assert feed.sets["quarantine4"] == {"192.0.2.23"}

    resp = admin.post(
        "/anomalies/quarantine/lift",
        data={"csrf_token": token_of(admin, "/anomalies"), "address": "192.0.2.23"},
    )
    assert resp.status_code == 302 and QuarantineManager(scored).active() == []
    assert scored.alert(row.id).status == "lifted"  # type: ignore[union-attr]
    actions = [a["action"] for a in ui_store(app).audit_log()]
    assert actions[:2] == ["quarantine-lifted", "host-quarantined"]


def test_bad_quarantine_requests_are_refused_with_a_reason(app: Flask) -> None:
    admin = logged_in(app)
    for data, message in (
        ({"address": "lan", "reason": "x"}, "not an IP address"),
        ({"address": "127.0.0.1", "reason": "x"}, "cannot be quarantined"),
        ({"address": "192.0.2.9", "reason": " "}, "say why"),
    ):
        data["csrf_token"] = token_of(admin, "/anomalies")
        admin.post("/anomalies/quarantine", data=data)
        assert message in admin.get("/anomalies").get_data(as_text=True)
    no_csrf = admin.post("/anomalies/quarantine", data={"address": "192.0.2.9", "reason": "x"})
    assert no_csrf.status_code == 400
    assert QuarantineManager(AnomalyStore.in_state_dir(state(app))).active() == []


def test_viewers_see_but_cannot_change(
    app: Flask, viewer: FlaskClient, scored: AnomalyStore
) -> None:
    page = viewer.get("/anomalies").get_data(as_text=True)
    assert "192.0.2.23" in page and "Quarantine host" not in page and "Dismiss" not in page
    token = token_of(viewer, "/anomalies")
    for url in ("/anomalies/quarantine", "/anomalies/quarantine/lift"):
        resp = viewer.post(url, data={"csrf_token": token, "address": "192.0.2.23", "reason": "x"})
        assert resp.status_code == 403
    assert QuarantineManager(scored).active() == []


def test_json_api(app: Flask, scored: AnomalyStore) -> None:
    admin = logged_in(app)
    data = admin.get("/api/v1/anomalies").get_json()
    assert data["installed"] is True and [a["kind"] for a in data["anomalies"]] == [
        "scan",
        "beacon",
    ]
    assert data["anomalies"][1]["evidence"]["connections"] == 61
    assert admin.get("/api/v1/anomalies/hosts").get_json()["hosts"][0] == {
        "host": "192.0.2.23", "score": 96, "updated": T0
    }  # fmt: skip
    headers = {"X-CSRF-Token": token_of(admin)}
    resp = admin.post(
        "/api/v1/quarantine",
        json={"address": "2001:DB8:0:10::23", "reason": "scan"},
        headers=headers,
    )
    assert resp.get_json() == {"address": "2001:db8:0:10::23", "status": "quarantined"}
    again = admin.post(
        "/api/v1/quarantine", json={"address": "2001:db8:0:10::23", "reason": "x"}, headers=headers
    )
    assert again.status_code == 400 and "already quarantined" in again.get_json()["error"]
    [q] = admin.get("/api/v1/quarantine").get_json()["quarantine"]
    assert q["address"] == "2001:db8:0:10::23" and q["by"] == "alice"
    lift = admin.post(
        "/api/v1/quarantine/lift", json={"address": "2001:db8:0:10::23"}, headers=headers
    )
    assert lift.get_json()["status"] == "lifted"
    assert admin.get("/api/v1/quarantine").get_json()["quarantine"] == []
    assert len(admin.get("/api/v1/quarantine?all=1").get_json()["quarantine"]) == 1
    [scan] = [r for r in scored.alerts() if r.alert.kind == "scan"]
    resp = admin.post(f"/api/v1/anomalies/{scan.id}/dismiss", headers=headers)
    assert resp.get_json() == {"id": scan.id, "status": "dismissed"}
    assert scored.alert(scan.id).mark_severity == "medium"  # type: ignore[union-attr]
    paths = admin.get("/api/v1/openapi.json").get_json()["paths"]
    assert {"/anomalies/hosts", "/quarantine", "/quarantine/lift"} <= set(paths)

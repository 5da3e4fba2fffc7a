"""The fleet page and its JSON: failures first, alerts, published vs applied versions."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.webui.fleet import Fleet, checkin_body, publish_bundle, running_fleet
from webui.fleet.app import FleetSettings

SETTINGS = FleetSettings(checkin_interval=60.0, high_score=85, sweep_every=0.0)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with running_fleet(tmp_path, SETTINGS) as running:
        yield running


def _check_in(fleet: Fleet, site: str, appliance: str, **changes: object) -> str:
    token = fleet.credential(site)
    resp = fleet.checkin(token, checkin_body(site, appliance, **changes))
    assert resp.status == 200, resp.text
    return token


def test_failures_come_first_in_order_of_urgency(fleet: Fleet) -> None:
    _check_in(fleet, "e-site", "silent")
    fleet.clock.now += 3 * 60 + 1  # "silent" is now past 3 intervals; the others check in now
    _check_in(fleet, "a-site", "healthy")
    _check_in(fleet, "b-site", "hot", anomalies={"max_host_score": 91, "open_high": 2})
    _check_in(fleet, "c-site", "apply-broke", last_apply={"ok": False, "error": "nft: boom"})
    _check_in(fleet, "d-site", "refusing", last_sync={"result": "refused", "reason": "rollback"})
    fleet.credential("0-site")  # issued, never used
    data = fleet.get("/api/v1/fleet").json()
    order = [(a["appliance_id"], a["problems"]) for a in data["appliances"]]
    assert order == [
        ("silent", ["stale"]),
        ("refusing", ["sync refused"]),
        ("apply-broke", ["apply error"]),
        ("hot", ["high anomaly score"]),
        ("healthy", []),
        (None, []),
    ]
    html = fleet.get("/").text
    rows = re.findall(r'data-appliance="([^"]*)"', html)
    assert rows == ["silent", "refusing", "apply-broke", "hot", "healthy", ""]
    assert "failed: nft: boom" in html and "refused: rollback" in html


def test_a_silent_appliance_raises_a_stale_alert_closed_by_its_next_checkin(fleet: Fleet) -> None:
    token = _check_in(fleet, "acme-hq", "box-1")
    fleet.clock.now += 3 * 60 - 1
    assert fleet.get("/api/v1/fleet").json()["alerts"] == []  # 3 intervals: not yet
    fleet.clock.now += 2
    [alert] = fleet.get("/api/v1/fleet").json()["alerts"]
    assert (alert["kind"], alert["appliance_id"]) == ("stale", "box-1")
    assert "no check-in since" in alert["detail"]
    assert "no check-in since" in fleet.get("/").text
    assert fleet.checkin(token, checkin_body("acme-hq", "box-1")).status == 200
    assert fleet.get("/api/v1/fleet").json()["alerts"] == []
    [closed] = fleet.store.alerts(open_only=False)
    assert closed.closed == fleet.clock.now


def test_a_high_anomaly_score_raises_an_alert_until_it_drops(fleet: Fleet) -> None:
    token = _check_in(fleet, "acme-hq", "box-1", anomalies={"max_host_score": 84, "open_high": 0})
    assert fleet.store.alerts() == []
    high = checkin_body("acme-hq", "box-1", anomalies={"max_host_score": 85, "open_high": 1})
    assert fleet.checkin(token, high).status == 200
    [alert] = fleet.store.alerts()
    assert alert.kind == "anomaly" and "score 85, 1 open high alert" in alert.detail
    assert fleet.checkin(token, high).status == 200
    assert len(fleet.store.alerts()) == 1  # still the one alert, not a second
    assert fleet.checkin(token, checkin_body("acme-hq", "box-1")).status == 200
    assert fleet.store.alerts() == []


def test_published_and_applied_versions_side_by_side(fleet: Fleet) -> None:
    publish_bundle(fleet.publish, "acme-hq", 7, "block social media")
    _check_in(fleet, "acme-hq", "behind", bundle_version=6)
    _check_in(fleet, "acme-hq", "current", bundle_version=7)
    _check_in(fleet, "nobundle", "box", bundle_version=None)
    site = fleet.get("/api/v1/sites/acme-hq").json()
    assert site["published_version"] == 7
    by_id = {a["appliance_id"]: a for a in site["appliances"]}
    assert by_id["behind"]["applied_version"] == 6
    assert by_id["behind"]["notes"] == ["behind: v6 of v7"]
    assert by_id["current"]["notes"] == []
    assert [a["appliance_id"] for a in site["appliances"]] == ["behind", "current"]
    html = fleet.get("/").text
    assert "v6 / v7" in html and "v7 / v7" in html and "v- / v-" in html
    publish_bundle(fleet.publish, "acme-hq", 10, "a longer message so the file changes size")
    assert fleet.get("/api/v1/sites/acme-hq").json()["published_version"] == 10
    assert fleet.store.bundle_messages("acme-hq")[7][1] == "block social media"


def test_an_unknown_site_is_404(fleet: Fleet) -> None:
    resp = fleet.get("/api/v1/sites/nowhere")
    assert resp.status == 404 and "no appliance" in resp.json()["error"]


def test_the_page_has_the_strict_headers_and_escapes_what_appliances_send(fleet: Fleet) -> None:
    _check_in(fleet, "acme-hq", "box-1", software="<script>alert(1)</script>")
    resp = fleet.get("/")
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert "<script>alert(1)" not in resp.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in resp.text
    assert "<script" not in resp.text  # no script at all: the page needs none

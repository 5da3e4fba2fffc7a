"""POST /api/v1/checkin over real HTTP: who may check in, and what a bad body gets back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.webui.fleet import Fleet, checkin_body, running_fleet
from webui.fleet.app import MAX_CHECKIN_BYTES, OPERATOR_LOCKOUT_S, OPERATOR_MAX_FAILURES


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with running_fleet(tmp_path) as running:
        yield running


def test_a_valid_checkin_is_stored_as_the_appliances_latest_state(fleet: Fleet) -> None:
    token = fleet.credential("acme-hq")
    resp = fleet.checkin(token, checkin_body("acme-hq", "box-1", bundle_version=5))
    assert resp.status == 200, resp.text
    assert resp.json() == {"ok": True}
    [appliance] = fleet.store.appliances()
    assert (appliance.site, appliance.appliance_id) == ("acme-hq", "box-1")
    assert appliance.last_seen == fleet.clock.now
    assert appliance.report is not None and appliance.report["bundle_version"] == 5
    [row] = fleet.store.history("acme-hq", 0, fleet.clock.now + 1)
    assert row.bundle_version == 5 and row.uptime_s == 600


def test_the_credential_is_stored_hashed_only(fleet: Fleet) -> None:
    token = fleet.credential("acme-hq")
    assert token.encode() not in fleet.store.path.read_bytes()


def test_an_unknown_or_missing_credential_is_refused_with_401(fleet: Fleet) -> None:
    fleet.credential("acme-hq")
    resp = fleet.checkin("egc_not-a-real-one", checkin_body("acme-hq", "box-1"))
    assert resp.status == 401
    assert "unknown credential" in resp.json()["error"]
    resp = fleet.request(
        "POST", "/api/v1/checkin", json.dumps(checkin_body("acme-hq", "b")).encode()
    )
    assert resp.status == 401 and "Bearer" in resp.json()["error"]
    assert fleet.store.appliances()[0].appliance_id is None  # nothing recorded


def test_a_credential_of_another_site_is_refused(fleet: Fleet) -> None:
    token = fleet.credential("acme-hq")
    fleet.credential("other-site")
    resp = fleet.checkin(token, checkin_body("other-site", "box-1"))
    assert resp.status == 401
    assert "not valid for site 'other-site'" in resp.json()["error"]
    assert fleet.store.history("other-site", 0, fleet.clock.now + 1) == []


def test_a_credential_is_bound_to_the_first_appliance_that_uses_it(fleet: Fleet) -> None:
    token = fleet.credential("acme-hq")
    assert fleet.checkin(token, checkin_body("acme-hq", "box-1")).status == 200
    resp = fleet.checkin(token, checkin_body("acme-hq", "clone-2"))
    assert resp.status == 403
    assert "belongs to appliance 'box-1'" in resp.json()["error"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "bad check-in: Expecting property name"),
        (b"[1, 2]", "the body must be a JSON object"),
        (json.dumps(checkin_body("acme-hq", "")).encode(), "appliance_id: required"),
        (json.dumps(checkin_body("acme-hq", "box-1", bundle_version="7")).encode(),
         "bundle_version: expected int, got str"),
        (json.dumps(checkin_body("acme-hq", "box-1", bundle_version=True)).encode(),
         "bundle_version: expected int, got a boolean"),
        (json.dumps(checkin_body("acme-hq", "box-1", policy_sha256="XYZ")).encode(),
         "policy_sha256: expected 64 lowercase hex digits"),
        (json.dumps(checkin_body("acme-hq", "box-1", last_sync={"result": "great"})).encode(),
         "last_sync.result: one of applied, unchanged, refused, failed"),
        (json.dumps(checkin_body("acme-hq", "box-1", health={"uptime_s": -5})).encode(),
         "health.uptime_s: out of range"),
        (json.dumps(checkin_body("acme-hq", "box-1", conflicts=[1])).encode(),
         "conflicts: a list of at most 100 section names"),
    ],
)  # fmt: skip
def test_a_malformed_checkin_gets_400_naming_the_problem(
    fleet: Fleet, body: bytes, message: str
) -> None:
    token = fleet.credential("acme-hq")
    resp = fleet.checkin(token, body)
    assert resp.status == 400, resp.text
    assert message in resp.json()["error"]
    assert fleet.store.history("acme-hq", 0, fleet.clock.now + 1) == []


def test_an_oversize_checkin_gets_413(fleet: Fleet) -> None:
    token = fleet.credential("acme-hq")
    body = checkin_body("acme-hq", "box-1", counters={"pad": "x" * MAX_CHECKIN_BYTES})
    resp = fleet.checkin(token, body)
    assert resp.status == 413
    assert f"larger than {MAX_CHECKIN_BYTES} bytes" in resp.json()["error"]
    assert fleet.store.history("acme-hq", 0, fleet.clock.now + 1) == []


def test_unknown_fields_are_ignored_not_stored(fleet: Fleet) -> None:
    token = fleet.credential("acme-hq")
    assert fleet.checkin(token, checkin_body("acme-hq", "box-1", future_field=[1])).status == 200
    report = fleet.store.appliances()[0].report
    assert report is not None and "future_field" not in report


def test_operator_pages_need_the_password_but_checkins_do_not(fleet: Fleet) -> None:
    assert fleet.get("/api/v1/fleet", password="wrong password").status == 401
    resp = fleet.request("GET", "/")
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Basic ")
    assert fleet.get("/api/v1/fleet").status == 200


def test_wrong_operator_passwords_lock_the_address_out_for_a_while(fleet: Fleet) -> None:
    for _ in range(OPERATOR_MAX_FAILURES):
        assert fleet.request("GET", "/").status == 401  # a prompt, not a guess: not counted
        assert fleet.get("/api/v1/fleet", password="guess").status == 401
    locked = fleet.get("/api/v1/fleet")  # even the right password, while locked
    assert locked.status == 429 and locked.headers["Retry-After"] == str(int(OPERATOR_LOCKOUT_S))
    token = fleet.credential("acme-hq")  # appliances are not operators: not locked out
    assert fleet.checkin(token, checkin_body("acme-hq", "box-1")).status == 200
    fleet.clock.now += OPERATOR_LOCKOUT_S + 1
    assert fleet.get("/api/v1/fleet").status == 200


def test_a_revoked_credential_is_refused_and_leaves_the_fleet(fleet: Fleet) -> None:
    token = fleet.credential("acme-hq")
    kept = fleet.credential("acme-hq")
    assert fleet.checkin(token, checkin_body("acme-hq", "stolen-box")).status == 200
    assert fleet.checkin(kept, checkin_body("acme-hq", "box-2")).status == 200
    assert fleet.store.revoke_credentials("acme-hq", fleet.clock(), appliance_id="nope") == 0
    assert fleet.store.revoke_credentials("other", fleet.clock(), appliance_id="stolen-box") == 0
    assert fleet.store.revoke_credentials("acme-hq", fleet.clock(), appliance_id="stolen-box") == 1
    assert fleet.checkin(token, checkin_body("acme-hq", "stolen-box")).status == 401
    assert fleet.checkin(kept, checkin_body("acme-hq", "box-2")).status == 200
    listed = [a["appliance_id"] for a in fleet.get("/api/v1/fleet").json()["appliances"]]
    assert listed == ["box-2"]
    unused = fleet.credential("acme-hq")
    assert fleet.store.revoke_credentials("acme-hq", fleet.clock(), token=unused) == 1
    assert fleet.checkin(unused, checkin_body("acme-hq", "box-3")).status == 401


def test_the_counters_of_a_big_ruleset_are_accepted_and_kept_compact(fleet: Fleet) -> None:
    token = fleet.credential("acme-hq")
    rules = [
        {"chain": "fwd_lan-wan", "comment": f"rule {n}", "packets": n, "bytes": 60 * n}
        for n in range(1000)
    ]
    counters = {"ts": 1.5, "counters": rules, "blocked": {"category:malware": 4, "x": "y"}}
    body = checkin_body("acme-hq", "box-1", counters=counters)
    assert len(json.dumps(body)) > 64 * 1024  # counters.json of a 1,000-rule policy
    assert fleet.checkin(token, body).status == 200
    [row] = fleet.store.history("acme-hq", 0, fleet.clock.now + 1)
    kept = row.counters["counters"]
    assert [r["comment"] for r in kept[:2]] == ["rule 999", "rule 998"] and len(kept) == 50
    assert row.counters["blocked"] == {"category:malware": 4}
    report = fleet.store.appliances()[0].report
    assert report is not None and "counters" not in report  # the fleet page does not need them

"""The sync agent end to end: a real static file server on loopback, real signatures, a real
config store; only nftables is the in-memory double and the clock is injected."""

from __future__ import annotations

import json
import sqlite3

from appliance.sync.agent import (
    CONFIRM_WITHIN,
    MAX_ROLLBACKS,
    SyncOutcome,
    next_delay,
)
from appliance.sync.keys import generate_key
from appliance.sync.metadata import make_root
from appliance.sync.publish import publish, publish_root
from tests.appliance.sync.conftest import (
    OFFICE,
    SITE,
    Appliance,
    Msp,
    assert_refused,
    edit,
)


def test_a_bundle_is_applied_confirmed_after_check_in_and_locks_set(msp: Msp, box: Appliance):
    msp.publish(1, edit(OFFICE, "Ten desks", "Ten desks (MSP)"), locked=("rules", "site", "zones"))
    outcome = box.sync()
    assert outcome == SyncOutcome("applied", None, None, 1)
    live = box.engine.store.live()
    assert live is not None and live.status == "good" and live.author == "msp-sync"
    assert live.message == "MSP bundle v1: v1"
    assert "Ten desks (MSP)" in box.live_text()
    state = box.state_json()
    assert state["bundle_version"] == 1 and state["pending"] is None
    checkin = msp.checkins()[-1]
    assert checkin["bundle_version"] == 1 and checkin["live_version"] == live.id
    assert checkin["policy_sha256"] == live.policy_sha256
    assert checkin["last_sync"] == {"at": checkin["time"], "result": "applied", "reason": None}
    assert checkin["health"]["ruleset_loaded"] is True and checkin["health"]["uptime_s"] == 42
    assert msp.host.posts[-1][1] == "Bearer cred-1"
    ui = sqlite3.connect(box.state / "ui" / "ui.db")
    assert ui.execute(
        "SELECT value FROM settings WHERE key = 'msp_locked_sections'"
    ).fetchone() == ("rules,site,zones",)
    assert ui.execute("SELECT value FROM settings WHERE key = 'msp_locked_by'").fetchone() == (
        "your MSP (127.0.0.1), bundle v1 for acme-hq",
    )
    ui.close()
    assert (box.state / "sync" / "site" / "lists" / "malware.hosts").is_file()


def test_nothing_new_is_a_304_and_no_new_version(msp: Msp, box: Appliance) -> None:
    msp.publish(1)
    box.sync()
    versions = len(box.engine.store.history())
    msp.host.log.clear()
    assert box.sync().result == "unchanged"
    assert f"GET /sites/{SITE}/bundle.json 304" in msp.host.log
    assert not any("/blobs/" in line for line in msp.host.log)
    assert len(box.engine.store.history()) == versions
    assert msp.checkins()[-1]["last_sync"]["result"] == "unchanged"


def test_a_tampered_bundle_is_refused(msp: Msp, box: Appliance) -> None:
    msp.publish(1)
    box.sync()
    envelope, blobs = msp.sign(2, edit(OFFICE, "Ten desks", "Nine desks"))
    envelope["signed"]["message"] = "changed in transit"
    publish(msp.publish_dir, envelope, blobs)
    assert_refused(msp, box, "signature", OFFICE)


def test_a_bundle_signed_by_an_unknown_key_is_refused(msp: Msp, box: Appliance) -> None:
    msp.publish(1, edit(OFFICE, "Ten desks", "Nine desks"), signer=generate_key())
    assert_refused(msp, box, "unknown-key", OFFICE)


def test_an_older_bundle_is_refused_as_a_rollback(msp: Msp, box: Appliance) -> None:
    old = msp.sign(1, edit(OFFICE, "Ten desks", "Old desks"))
    msp.publish(2, edit(OFFICE, "Ten desks", "New desks"))
    assert box.sync().result == "applied"
    publish(msp.publish_dir, *old)
    assert_refused(msp, box, "rollback", box.live_text())
    assert "New desks" in box.live_text()


def test_an_expired_bundle_is_refused(msp: Msp, box: Appliance) -> None:
    msp.publish(1, edit(OFFICE, "Ten desks", "Nine desks"), expires_days=2)
    msp.clock.now += 3 * 86400  # a frozen host keeps serving it
    assert_refused(msp, box, "expired", OFFICE)


def test_a_list_whose_hash_does_not_match_is_refused(msp: Msp, box: Appliance) -> None:
    envelope = msp.publish(1, edit(OFFICE, "Ten desks", "Nine desks"))
    digest = envelope["signed"]["files"]["lists/malware.hosts"]["sha256"]
    (msp.publish_dir / "blobs" / digest).write_text("0.0.0.0 attacker-allowed.example\n")
    assert_refused(msp, box, "hash-mismatch", OFFICE)


def test_an_invalid_policy_in_a_validly_signed_bundle_is_refused(msp: Msp, box: Appliance):
    msp.publish(1, edit(OFFICE, "from: printers", "from: nowhere"), locked=("rules",))
    assert_refused(msp, box, "invalid-policy", OFFICE)
    assert "nowhere" in box.state_json()["last_sync"]["error"]


def test_msp_unreachable_for_days_keeps_enforcing_and_backs_off(msp: Msp, box: Appliance):
    msp.publish(1)
    box.sync()
    last_contact = box.state_json()["last_contact"]
    table = box.nft.table
    msp.host.close()
    delays = []
    for _ in range(6):
        msp.clock.now += 86400
        outcome = box.sync()
        assert (outcome.result, outcome.reason) == ("failed", "unreachable")
        delays.append(next_delay(box.state_json()["failures"], 0.5))
    assert box.nft.table == table and box.engine.store.live() is not None
    state = box.state_json()
    assert state["failures"] == 6 and state["last_contact"] == last_contact  # "last synced"
    assert delays == sorted(delays) and delays[0] == 600 and delays[-1] == 3600
    assert 240 <= next_delay(0, 0.0) <= next_delay(0, 0.999) <= 360  # +-20 % jitter


def test_an_apply_the_firewall_refuses_keeps_the_old_rules_and_reports_the_error(
    msp: Msp, box: Appliance
) -> None:
    table = box.nft.table
    box.nft.fail_on = "no-printer-cloud-msp"
    msp.publish(
        1, edit(OFFICE, "name: no-printer-cloud", "name: no-printer-cloud-msp"), locked=("rules",)
    )
    outcome = box.sync()
    assert (outcome.result, outcome.reason) == ("failed", "apply-failed")
    assert box.nft.table == table and box.live_text() == OFFICE
    assert box.engine.store.history()[0].status == "failed"
    report = msp.checkins()[-1]["last_apply"]
    assert report["ok"] is False and "nft refused" in report["error"]
    box.nft.fail_on = None
    assert box.sync().result == "applied"  # tried again: not remembered as done


def test_key_rotation_accepts_the_new_key_and_refuses_the_revoked_one(msp: Msp, box: Appliance):
    new_root, new_bundle = generate_key(), generate_key()
    root2 = make_root(
        2, [new_root, new_bundle, msp.bundle_key], [new_root], [new_bundle], [msp.bundle_key],
        msp.clock.at(365), [msp.root_key, new_root],
    )  # fmt: skip
    publish_root(msp.publish_dir, root2)
    msp.publish(1, edit(OFFICE, "Ten desks", "Rotated desks"), signer=new_bundle)
    assert box.sync().result == "applied"
    trusted = json.loads((box.state / "sync" / "root.json").read_text())
    assert trusted["signed"]["version"] == 2
    msp.publish(2, edit(OFFICE, "Ten desks", "Old key desks"), signer=msp.bundle_key)
    assert_refused(msp, box, "revoked-key", box.live_text())
    assert "Rotated desks" in box.live_text()


def test_a_root_not_signed_by_the_trusted_root_key_is_refused(msp: Msp, box: Appliance):
    intruder = generate_key()
    forged = make_root(2, [intruder], [intruder], [intruder], [], msp.clock.at(365), [intruder])
    publish_root(msp.publish_dir, forged)
    msp.publish(1, edit(OFFICE, "Ten desks", "Nine desks"), signer=intruder)
    assert_refused(msp, box, "unknown-key", OFFICE)
    assert json.loads((box.state / "sync" / "root.json").read_text())["signed"]["version"] == 1


def _local_apply(box: Appliance, text: str) -> None:
    site = box.state / "sync" / "site"
    plan = box.engine.plan_text(text, "admin edit", site)
    box.engine.apply(plan, author="admin", message="local edit", force=True)


def test_local_changes_survive_in_unlocked_sections_and_locked_ones_are_overwritten(
    msp: Msp, box: Appliance
) -> None:
    msp.publish(1, locked=("site", "zones"))
    box.sync()
    local = edit(box.live_text(), "admins: [192.0.2.10,", "admins: [192.0.2.11,")
    local = edit(local, "interfaces: [dmz0]", "interfaces: [dmz9]")  # a locked section
    _local_apply(box, local)
    msp.publish(2, edit(OFFICE, "Ten desks", "Twelve desks"), locked=("site", "zones"))
    assert box.sync().result == "applied"
    live = box.live_text()
    assert "admins: [192.0.2.11," in live and "Twelve desks" in live
    assert "dmz9" not in live and "interfaces: [dmz0]" in live
    assert box.state_json()["conflicts"] == []


def test_a_conflict_keeps_the_local_section_and_is_reported(msp: Msp, box: Appliance) -> None:
    msp.publish(1)
    box.sync()
    _local_apply(box, edit(box.live_text(), "rate: 10/second", "rate: 5/second"))
    msp.publish(2, edit(OFFICE, "rate: 10/second", "rate: 50/second"))
    assert box.sync().result == "applied"
    assert "rate: 5/second" in box.live_text()
    conflicts = box.state_json()["conflicts"]
    assert [c["section"] for c in conflicts] == ["rules"]
    assert msp.checkins()[-1]["conflicts"] == ["rules"]


def test_a_failed_check_in_leaves_the_apply_unconfirmed_and_the_deadline_rolls_it_back(
    msp: Msp, box: Appliance
) -> None:
    msp.publish(1)
    box.sync()
    good = box.engine.store.live()
    assert good is not None
    msp.host.post_answer = (503, {"error": "collector down"})
    msp.publish(2, edit(OFFICE, "Ten desks", "Cut-off desks"))
    assert box.sync().result == "applied"
    applied = box.engine.store.live()
    assert applied is not None and applied.status == "unconfirmed"
    assert box.state_json()["bundle_version"] == 1  # not moved forward before the confirm
    msp.clock.now += CONFIRM_WITHIN + 1
    assert box.engine.expire() is True
    live = box.engine.store.live()
    assert live is not None and live.id == good.id and "Cut-off" not in box.live_text()
    msp.host.post_answer = (200, {"ok": True})
    outcome = box.sync()  # the MSP is back: the rollback is reported ...
    assert (outcome.result, outcome.reason) == ("failed", "rolled-back")
    report = msp.checkins()[-1]
    assert report["last_apply"]["ok"] is False and "rolled-back" in report["last_apply"]["error"]
    assert report["bundle_version"] == 1 and report["live_version"] == good.id
    assert box.sync().result == "applied"  # ... and the bundle is tried again
    assert "Cut-off desks" in box.live_text()
    assert box.engine.store.live().status == "good"  # type: ignore[union-attr]
    assert box.state_json()["bundle_version"] == 2


def test_a_first_bundle_keeps_differing_local_sections_as_conflicts(msp: Msp, box: Appliance):
    msp.publish(1, edit(OFFICE, "rate: 10/second", "rate: 50/second"))
    assert box.sync().result == "applied"
    assert "rate: 10/second" in box.live_text()  # the pre-enrolment local policy is kept
    assert msp.checkins()[-1]["conflicts"] == ["rules"]


def test_a_successful_check_in_confirms_within_the_deadline(msp: Msp, box: Appliance) -> None:
    msp.publish(1)
    box.sync()
    assert box.engine.store.pending_confirm() is None
    msp.clock.now += CONFIRM_WITHIN + 1
    assert box.engine.expire() is False  # nothing left to roll back


def test_a_bundle_rolled_back_again_and_again_is_no_longer_applied_until_a_new_one(
    msp: Msp, box: Appliance
) -> None:
    """A bundle that cuts the box off from its MSP must not loop apply, wait, roll back."""
    msp.publish(1)
    box.sync()
    good = box.engine.store.live()
    assert good is not None
    msp.host.post_answer = (503, {"error": "the bundle cut us off"})
    msp.publish(2, edit(OFFICE, "Ten desks", "Cut-off desks"))
    for _ in range(MAX_ROLLBACKS):
        assert box.sync().result == "applied"
        msp.clock.now += CONFIRM_WITHIN + 1
        assert box.engine.expire() is True
        assert box.sync().reason == "rolled-back"  # reported (the check-in still fails)
    outcome = box.sync()
    assert (outcome.result, outcome.reason) == ("refused", "rolled-back")
    assert "Cut-off" not in box.live_text() and box.engine.store.pending_confirm() is None
    msp.host.post_answer = (200, {"ok": True})
    msp.publish(3, edit(OFFICE, "Ten desks", "Fixed desks"))  # the MSP fixes it
    assert box.sync().result == "applied"
    assert "Fixed desks" in box.live_text()

"""The apply engine's logic with a real store and an in-memory nft (no root needed).

The same flows run against real nftables in namespaces in test_apply_netns.py.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from appliance.engine import AdminAccess, Engine
from appliance.errors import ApplyError
from appliance.nft import MemoryNft
from appliance.store import ConfigStore
from tests.appliance.helpers import variant

EXAMPLES = Path(__file__).parents[2] / "policies" / "examples"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def time(self) -> float:
        return self.now


@pytest.fixture
def env(tmp_path: Path) -> tuple[Engine, MemoryNft, FakeClock]:
    nft, clock = MemoryNft(), FakeClock()
    return Engine(ConfigStore(tmp_path / "state"), nft, clock), nft, clock


def test_apply_records_a_good_version_and_loads_the_table(env, policies) -> None:
    engine, nft, _ = env
    plan = engine.plan(policies / "small-office.yaml")
    assert plan.current is None and plan.unsafe == [] and "+table inet edgeguard {" in plan.diff
    version = engine.apply(plan, author="ann", message="first")
    assert version.status == "good" and version.author == "ann" and version.message == "first"
    assert nft.table == plan.ruleset.text
    assert (engine.store.root / "policy.yaml").read_text() == plan.policy_text
    assert engine.plan(policies / "small-office.yaml").diff == ""  # nothing left to change


def test_a_refused_ruleset_leaves_the_old_one_enforced(env, policies) -> None:
    engine, nft, _ = env
    first = engine.apply(engine.plan(policies / "small-office.yaml"), author="a", message="m")
    before = nft.table
    nft.fail_on = "office-guest-iot"
    with pytest.raises(ApplyError, match="previous ruleset is still enforced"):
        engine.apply(
            engine.plan(policies / "office-guest-iot.yaml"), author="a", message="m", force=True
        )
    assert nft.table == before
    assert engine.store.live() == engine.store.version(first.id)
    assert engine.store.history()[0].status == "failed"


def test_unconfirmed_apply_rolls_back_at_the_deadline(env, policies) -> None:
    engine, nft, clock = env
    engine.apply(engine.plan(policies / "small-office.yaml"), author="a", message="m")
    good_table = nft.table
    second = engine.apply(
        engine.plan(policies / "office-guest-iot.yaml"),
        author="a",
        message="m",
        confirm_within=60,
        force=True,  # a different example: "too much change" by design
    )
    assert second.status == "unconfirmed" and nft.table != good_table
    clock.now += 59
    assert engine.expire() is False and nft.table != good_table
    clock.now += 2
    assert engine.expire() is True
    assert nft.table == good_table
    assert engine.store.version(second.id).status == "rolled-back"
    assert engine.store.live() is not None and engine.store.live().id == 1
    assert engine.store.pending_confirm() is None


def test_confirmed_apply_stays(env, policies) -> None:
    engine, nft, clock = env
    engine.apply(engine.plan(policies / "small-office.yaml"), author="a", message="m")
    second = engine.apply(
        engine.plan(policies / "office-guest-iot.yaml"),
        author="a",
        message="m",
        confirm_within=60,
        force=True,  # a different example: "too much change" by design
    )
    clock.now += 30
    assert engine.confirm().status == "good"
    clock.now += 600
    assert engine.expire() is False
    assert engine.store.live().id == second.id and "office-guest-iot" in (nft.table or "")
    with pytest.raises(ApplyError, match="nothing to confirm"):
        engine.confirm()


def test_a_late_confirm_is_refused_and_rolls_back(env, policies) -> None:
    engine, nft, clock = env
    engine.apply(
        engine.plan(policies / "small-office.yaml"), author="a", message="m", confirm_within=10
    )
    clock.now += 11
    with pytest.raises(ApplyError, match="too late"):
        engine.confirm()
    assert nft.table is None  # first apply: rolled back to "no EdgeGuard table"


def test_rollback_to_previous_and_to_a_named_version(env, policies) -> None:
    engine, nft, _ = env
    v1 = engine.apply(engine.plan(policies / "small-office.yaml"), author="a", message="1")
    t1 = nft.table
    engine.apply(
        engine.plan(policies / "office-guest-iot.yaml"), author="a", message="2", force=True
    )
    v3 = engine.apply(
        engine.plan(policies / "strict-lockdown.yaml"), author="a", message="3", force=True
    )
    t3 = nft.table
    target = engine.rollback()
    assert target is not None and target.id == 2 and "office-guest-iot" in (nft.table or "")
    assert engine.store.version(v3.id).status == "rolled-back"
    assert engine.rollback(v1.id).id == v1.id and nft.table == t1
    assert engine.rollback(v3.id).id == v3.id and nft.table == t3
    with pytest.raises(Exception, match="no version 99"):
        engine.rollback(99)


def test_plan_refuses_to_cut_the_admins_own_access(env, policies) -> None:
    engine, _, _ = env
    locked_out = variant(
        policies,
        "no-ssh",
        "management:\n  zones: [lan]\n  services: [ssh, https]\n",
        "management:\n  anti_lockout: false\n",
    )
    admin = AdminAccess("192.0.2.10", 22)
    plan = engine.plan(locked_out, admin=admin)
    assert any("cuts your own management access (192.0.2.10 -> tcp/22)" in u for u in plan.unsafe)
    with pytest.raises(ApplyError, match="refusing an unsafe plan"):
        engine.apply(plan, author="a", message="m")
    assert engine.store.history() == []  # nothing recorded, nothing applied
    engine.apply(plan, author="a", message="m", force=True)
    # With anti-lockout (the example's default) the same admin is safe.
    assert engine.plan(policies / "small-office.yaml", admin=admin).unsafe == []


def test_plan_flags_an_open_firewall_and_too_much_change(env, policies) -> None:
    engine, _, _ = env
    engine.apply(engine.plan(policies / "strict-lockdown.yaml"), author="a", message="m")
    open_policy = policies / "open.yaml"
    open_policy.write_text(
        textwrap.dedent(
            """\
            version: 1
            site: {name: open}
            zones:
              lan: {interfaces: [lan0], addresses: [192.0.2.1/26]}
              wan: {interfaces: [wan0]}
            defaults:
              - {from: any, to: any, action: accept}
              - {from: any, to: self, action: accept}
            """
        )
    )
    unsafe = engine.plan(open_policy).unsafe
    assert any("accepts all traffic" in u for u in unsafe)
    assert any(u.startswith("it removes ") for u in unsafe)


def test_boot_applies_last_good_then_recovers_interrupted(env, policies) -> None:
    engine, nft, _ = env
    assert engine.boot(policies / "small-office.yaml").startswith("applied ")
    good = nft.table
    # A crash between "recorded" and "live" leaves a pending version behind.
    engine.store.record("x", "y", author="a", message="crashed")
    nft.table = None  # and a reboot empties the kernel
    assert engine.boot() == "applied last known good version 1"
    assert nft.table == good
    assert engine.store.history()[0].status == "interrupted"


def test_boot_rewrites_a_policy_file_left_behind_by_a_crash(env, policies) -> None:
    """kill -9 between make_live's commit and its file write: the database names the new
    version, policy.yaml still holds the old one. Boot makes the file match again."""
    engine, nft, _ = env
    old = engine.apply(engine.plan(policies / "small-office.yaml"), author="a", message="m")
    new = engine.apply(
        engine.plan(policies / "office-guest-iot.yaml"), author="a", message="m", force=True
    )
    policy_file = engine.store.root / "policy.yaml"
    policy_file.write_text(engine.store.texts(old.id)[0])  # the file the crash left
    assert engine.boot() == f"applied last known good version {new.id}"
    assert policy_file.read_text() == engine.store.texts(new.id)[0]
    assert nft.table == engine.store.texts(new.id)[1]
    assert engine.boot() == f"applied last known good version {new.id}"  # nothing to fix now


def test_boot_resumes_or_finishes_a_confirm_window(env, policies) -> None:
    engine, nft, clock = env
    engine.apply(engine.plan(policies / "small-office.yaml"), author="a", message="m")
    engine.apply(
        engine.plan(policies / "office-guest-iot.yaml"),
        author="a",
        message="m",
        confirm_within=60,
        force=True,  # a different example: "too much change" by design
    )
    assert "awaits confirmation" in engine.boot()  # controller restart: the timer goes on
    clock.now += 61
    assert "rolled back" in engine.boot()
    assert engine.store.live().id == 1
    assert nft.table is not None and "small-office" in nft.table


def test_boot_with_nothing_applicable_enters_safe_mode(env, policies, tmp_path) -> None:
    engine, nft, _ = env
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: 1\nsite: {name: x}\nzones: {}\n")
    result = engine.boot(broken)
    assert result.startswith("SAFE MODE")
    assert nft.table is not None and "SAFE MODE" in nft.table and "policy drop" in nft.table
    assert engine.store.events()[0][1] == "safe-mode"


def test_flowtable_offload_is_used_only_where_the_kernel_has_it(tmp_path, policies) -> None:
    with_ft = Engine(ConfigStore(tmp_path / "a"), MemoryNft(flowtable=True), FakeClock())
    without = Engine(ConfigStore(tmp_path / "b"), MemoryNft(flowtable=False), FakeClock())
    text = with_ft.plan(policies / "small-office.yaml").ruleset.text  # offload: auto (default)
    assert "flowtable ft {" in text and "flow add @ft" in text
    assert "flowtable" not in without.plan(policies / "small-office.yaml").ruleset.text

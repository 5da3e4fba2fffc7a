"""The apply engine against real nftables, in the lab's router namespace, with real packets.

The controller CLI runs inside the router namespace (``ip netns exec``), exactly as on the
box; probes come from the lab's client namespaces.
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from appliance import netns
from appliance.lab import Lab
from appliance.labprobe import Probe
from tests.appliance.helpers import variant

pytestmark = pytest.mark.netns

ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "policies" / "examples"
WEB = Probe("tcp", "198.51.100.10", 80, timeout=0.5)
BLOCKED = Probe("tcp", "198.51.100.66", 80, timeout=0.5)  # on the small-office block list


def edgeguard(
    lab: Lab, state: Path, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "appliance.cli", *args, "--state-dir", str(state)]
    return netns.run(lab.ns("router"), argv, check=False, timeout=timeout)


def edgeguard_popen(lab: Lab, state: Path, *args: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "appliance.cli", *args, "--state-dir", str(state)]
    return netns.popen(lab.ns("router"), argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def normalise(listing: str) -> str:
    """Counters change with every packet; compare everything else."""
    return re.sub(r"counter packets \d+ bytes \d+", "counter", listing)


def rule_count(lab: Lab) -> int | None:
    """Rules in our live table (None: no table), from nft's JSON listing."""
    res = netns.nft(lab.ns("router"), ["-j", "list", "table", "inet", "edgeguard"], check=False)
    if res.returncode != 0:
        return None
    return sum(1 for item in json.loads(res.stdout)["nftables"] if "rule" in item)


def history(state: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(state / "state.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return list(db.execute("SELECT id, status FROM versions ORDER BY id"))


@pytest.fixture
def state(tmp_path: Path, clean_lab: Lab) -> Path:
    del clean_lab  # an empty router ruleset before and after
    return tmp_path / "state"


LAN_OUT = "  - name: lan-out\n    from: lan\n    to: wan\n    action: accept\n"
LAN_OUT_REJECT = "  - name: lan-out\n    from: lan\n    to: wan\n    action: reject\n"


def test_apply_enforces_the_policy_and_records_it(lab: Lab, state: Path, policies: Path) -> None:
    res = edgeguard(lab, state, "apply", str(policies / "small-office.yaml"), "-m", "first")
    assert res.returncode == 0, res.stderr
    assert "applied version 1" in res.stdout
    web, blocked = lab.probe("lan", [WEB, BLOCKED])
    assert web.outcome == "open" and web.seen_as == "203.0.113.2"
    assert blocked.outcome == "timeout"
    plan = edgeguard(lab, state, "plan", str(policies / "small-office.yaml"))
    assert plan.returncode == 0 and "no changes to table inet edgeguard" in plan.stdout
    assert history(state) == [(1, "good")]
    listing = edgeguard(lab, state, "history")
    assert "good" in listing.stdout and "first" in listing.stdout


_BROKEN_APPLY = r"""
import sys, time
from appliance.errors import ApplyError
from appliance.nft import LibNftables
text = open(sys.argv[1]).read()
nft = LibNftables()
broken = [
    text.replace("\tchain input {", "\tchain input {\n\t\ttcp dport 22 acceptX", 1),  # syntax
    text.replace("\tchain input {", "\tchain input {\n\t\tjump no_such_chain", 1),  # kernel refusal
    text + "\ntable inet edgeguard { set s { type ipv4_addr; elements = { 300.0.0.1 } ; } }\n",
]
attempts, end = 0, time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:  # keep trying while the probes run
    for bad in broken:
        attempts += 1
        try:
            nft.replace(bad)
        except ApplyError:
            continue
        sys.exit("nft accepted a broken ruleset")
print(f"all {attempts} refused")
"""


def test_a_refused_ruleset_leaves_the_old_one_enforced_under_traffic(
    lab: Lab, state: Path, policies: Path, tmp_path: Path
) -> None:
    assert edgeguard(lab, state, "apply", str(policies / "small-office.yaml")).returncode == 0
    before = netns.nft(lab.ns("router"), ["list", "table", "inet", "edgeguard"]).stdout
    compiled = tmp_path / "ruleset.nft"
    compiled.write_text(
        netns.run(lab.ns("router"), [sys.executable, "-m", "appliance.cli", "compile",
                                     str(policies / "small-office.yaml")]).stdout
    )  # fmt: skip
    outcomes: list[tuple[str, str]] = []
    stop = threading.Event()

    def probe_loop() -> None:
        while not stop.is_set():
            web, blocked = lab.probe("lan", [WEB, BLOCKED])
            outcomes.append((web.outcome, blocked.outcome))

    prober = threading.Thread(target=probe_loop)
    prober.start()
    try:
        res = netns.run(
            lab.ns("router"),
            [sys.executable, "-c", _BROKEN_APPLY, str(compiled), "3"],
            check=False,
            timeout=120,
        )
    finally:
        stop.set()
        prober.join()
    assert res.returncode == 0 and " refused" in res.stdout, res.stdout + res.stderr
    assert len(outcomes) >= 3
    assert set(outcomes) == {("open", "timeout")}, outcomes
    after = netns.nft(lab.ns("router"), ["list", "table", "inet", "edgeguard"]).stdout
    assert normalise(after) == normalise(before)
    # The block-list counter kept counting through every refused attempt: never reset.
    counted = re.search(
        r"oifname \"wan0\" ip daddr @bl_spamhaus-drop_v4 counter packets (\d+)", after
    )
    assert counted and int(counted.group(1)) >= len(outcomes)


def test_unconfirmed_apply_reverts_in_time(lab: Lab, state: Path, policies: Path) -> None:
    assert edgeguard(lab, state, "apply", str(policies / "small-office.yaml")).returncode == 0
    closed = variant(policies, "closed", LAN_OUT, LAN_OUT_REJECT)
    res = edgeguard(lab, state, "apply", str(closed), "--confirm-within", "2")
    assert res.returncode == 0, res.stderr
    applied_at = time.monotonic()
    assert lab.probe("lan", [WEB])[0].outcome == "refused"  # the new policy is live
    while lab.probe("lan", [WEB])[0].outcome != "open":
        assert time.monotonic() - applied_at < 5, "not rolled back within deadline + 3 s"
        time.sleep(0.2)
    assert time.monotonic() - applied_at >= 1.5  # and not before the deadline
    assert history(state) == [(1, "good"), (2, "rolled-back")]


def test_confirmed_apply_stays(lab: Lab, state: Path, policies: Path) -> None:
    assert edgeguard(lab, state, "apply", str(policies / "small-office.yaml")).returncode == 0
    closed = variant(policies, "closed", LAN_OUT, LAN_OUT_REJECT)
    assert edgeguard(lab, state, "apply", str(closed), "--confirm-within", "2").returncode == 0
    res = edgeguard(lab, state, "confirm")
    assert res.returncode == 0 and "confirmed version 2" in res.stdout
    time.sleep(3)
    assert lab.probe("lan", [WEB])[0].outcome == "refused"
    assert history(state) == [(1, "superseded"), (2, "good")]
    assert edgeguard(lab, state, "rollback").returncode == 0
    assert lab.probe("lan", [WEB])[0].outcome == "open"


def _big_policy(directory: Path) -> Path:
    spec = importlib.util.spec_from_file_location(
        "compile_bench", ROOT / "bench" / "compile_bench.py"
    )
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    path: Path = bench.write_policy(directory, 300, 50_000)
    return path


def test_kill_9_during_apply_never_leaves_a_half_state(
    lab: Lab, state: Path, policies: Path, tmp_path: Path
) -> None:
    small = policies / "small-office.yaml"
    big_dir = tmp_path / "big"
    big_dir.mkdir()
    big = _big_policy(big_dir)
    assert edgeguard(lab, state, "apply", str(big), "--force").returncode == 0
    big_rules = rule_count(lab)
    assert edgeguard(lab, state, "apply", str(small), "--force").returncode == 0
    small_rules = rule_count(lab)
    assert big_rules and small_rules and big_rules != small_rules
    rng = random.Random(3)
    for i in range(6):
        target = big if i % 2 == 0 else small
        proc = edgeguard_popen(lab, state, "apply", str(target), "--force")
        time.sleep(rng.uniform(0.05, 1.2))
        proc.kill()
        proc.wait()
        assert rule_count(lab) in (big_rules, small_rules)  # old or new, never in between
        boot = edgeguard(lab, state, "run", "--once")
        assert boot.returncode == 0, boot.stderr
        statuses = dict(history(state))
        assert list(statuses.values()).count("good") == 1
        assert "pending" not in statuses.values()
        live = next(v for v, s in statuses.items() if s == "good")
        policy_text = (state / "policy.yaml").read_text()
        assert policy_text in (big.read_text(), small.read_text())
        expected = big_rules if policy_text == big.read_text() else small_rules
        assert rule_count(lab) == expected, f"round {i}: live table is not version {live}"


def test_kill_9_during_store_writes_keeps_the_store_consistent(
    lab: Lab, state: Path, policies: Path
) -> None:
    a = policies / "small-office.yaml"
    b = variant(policies, "closed", LAN_OUT, LAN_OUT_REJECT)
    texts = {a.read_text(), b.read_text()}
    assert edgeguard(lab, state, "apply", str(a)).returncode == 0
    rng = random.Random(11)
    for i in range(12):
        proc = edgeguard_popen(lab, state, "apply", str(b if i % 2 else a), "--force")
        time.sleep(rng.uniform(0.0, 0.35))
        proc.kill()
        proc.wait()
        history(state)  # integrity_check passes after every kill
        assert (state / "policy.yaml").read_text() in texts  # never a torn file
    boot = edgeguard(lab, state, "run", "--once")
    assert boot.returncode == 0 and "applied last known good version" in boot.stdout
    statuses = history(state)
    assert [s for _, s in statuses].count("good") == 1
    good_text = (state / "policy.yaml").read_text()
    expect = "open" if good_text == a.read_text() else "refused"
    assert lab.probe("lan", [WEB])[0].outcome == expect


def test_counters_are_read_from_the_live_table(lab: Lab, state: Path, policies: Path) -> None:
    """What `edgeguard run` saves for the dashboard: real counters, by rule comment."""
    res = edgeguard(lab, state, "apply", str(policies / "small-office.yaml"))
    assert res.returncode == 0, res.stderr
    lab.probe("lan", [BLOCKED, BLOCKED])  # dropped and counted by the block list
    script = (
        "import json; from appliance.nft import LibNftables; "
        "print(json.dumps(LibNftables().counters()))"
    )
    out = netns.run(lab.ns("router"), [sys.executable, "-c", script]).stdout
    counters = json.loads(out)
    by_rule = {(c["chain"], c["comment"]): c for c in counters}
    assert by_rule[("forward", "blocklist spamhaus-drop outbound")]["packets"] >= 2
    assert all(c["packets"] >= 0 and c["bytes"] >= 0 for c in counters)

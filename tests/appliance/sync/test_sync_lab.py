"""MSP sync end to end, every part real: the MSP signs with `edgeguard msp`, a plain static
file server publishes, `edgeguard msp serve` collects check-ins, and the appliance is
`edgeguard run` in the lab's router namespace, enrolled with `edgeguard sync enrol`.

The servers run inside the router namespace on its loopback, so the agent's plain-HTTP
allowance for 127.0.0.1 (the documented static-file test mode) applies and nothing listens
outside namespaces the lab made.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance import netns
from appliance.lab import Lab
from appliance.labprobe import Probe
from appliance.store import ConfigStore
from tests.appliance.helpers import Controller, wait_until

pytestmark = pytest.mark.netns

EXAMPLES = Path(__file__).parents[3] / "policies" / "examples"
SITE = "acme-hq"
SRV = "198.51.100.10"
PUBLISH_PORT, FLEET_PORT = 8701, 8601


def edgeguard(*args: str, ns: str | None = None) -> str:
    argv = [sys.executable, "-m", "webui.cli", *args]
    if ns is None:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout
    return netns.run(ns, argv, timeout=60).stdout


@dataclass
class Msp:
    keys: Path
    publish: Path
    fleet: Path
    policies: Path

    def sign(self, policy: Path, message: str) -> None:
        edgeguard("msp", "sign", "--keys", str(self.keys), "--publish", str(self.publish),
                  "--site", SITE, "--policy", str(policy), "--lock", "rules",
                  "-m", message)  # fmt: skip

    def checkins(self) -> list[tuple[int | None, str | None]]:
        db = self.fleet / "fleet.db"
        if not db.exists():
            return []
        with closing(sqlite3.connect(db)) as conn:
            rows = conn.execute("SELECT bundle_version, sync_result FROM checkins ORDER BY id")
            return [(r[0], r[1]) for r in rows]


@pytest.fixture(scope="module")
def msp(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Msp, Controller]]:
    tmp = tmp_path_factory.mktemp("sync")
    m = Msp(tmp / "keys", tmp / "publish", tmp / "fleet", tmp / "policies")
    shutil.copytree(EXAMPLES, m.policies)
    edgeguard("msp", "init", "--keys", str(m.keys), "--publish", str(m.publish))
    m.sign(m.policies / "small-office.yaml", "first bundle")
    token = edgeguard("msp", "add-appliance", "--state-dir", str(m.fleet), "--site", SITE)
    router = lab.ns("router")
    netns.ip(["link", "set", "lo", "up"], ns=router)
    lab.load_ruleset(None)
    files = netns.popen(router, [sys.executable, "-m", "http.server", str(PUBLISH_PORT),
                                 "--bind", "127.0.0.1", "--directory", str(m.publish)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    fleet = netns.popen(router, [sys.executable, "-m", "webui.cli", "msp", "serve",
                                 "--state-dir", str(m.fleet), "--publish", str(m.publish),
                                 "--listen", f"127.0.0.1:{FLEET_PORT}",
                                 "--plain-http"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    state = tmp / "appliance"
    edgeguard("sync", "enrol", "--state-dir", str(state), "--site", SITE,
              "--server", f"http://127.0.0.1:{PUBLISH_PORT}",
              "--checkin", f"http://127.0.0.1:{FLEET_PORT}",
              "--root", str(m.publish / "root" / "1.json"),
              "--credential", token.strip())  # fmt: skip
    box = Controller(lab, state, EXAMPLES / "small-office.yaml", "--sync-interval", "2")
    try:
        yield m, box
    finally:
        box.stop()
        for proc in (files, fleet):
            proc.terminate()
            proc.wait(10)
        lab.load_ruleset(None)


def _live_message(state: Path) -> str | None:
    live = ConfigStore(state).live()
    return live.message if live is not None else None


def test_a_signed_bundle_is_applied_confirmed_and_reported(
    lab: Lab, msp: tuple[Msp, Controller]
) -> None:
    m, box = msp
    assert wait_until(lambda: "MSP bundle v1" in (_live_message(box.state) or "")), box.seen
    assert wait_until(lambda: (1, "applied") in m.checkins()), m.checkins()
    store = ConfigStore(box.state)
    # the fleet server records the check-in before it answers; the agent confirms on the answer
    confirmed = wait_until(lambda: store.pending_confirm() is None, 30)
    assert confirmed, "a successful check-in confirms the apply"
    [r] = lab.probe("lan", [Probe("tcp", SRV, 443, timeout=2.0)])
    assert r.outcome == "open", "the bundle's small-office policy is enforced"


def test_a_tampered_bundle_is_refused_reported_and_the_policy_stays(
    lab: Lab, msp: tuple[Msp, Controller]
) -> None:
    m, box = msp
    before = ConfigStore(box.state).live()
    bundle = m.publish / "sites" / SITE / "bundle.json"
    envelope = json.loads(bundle.read_text())
    envelope["signed"]["version"] = 99  # a newer version the MSP never signed
    bundle.write_text(json.dumps(envelope))
    assert wait_until(lambda: any(r == "refused" for _v, r in m.checkins())), m.checkins()
    after = ConfigStore(box.state).live()
    assert before is not None and after is not None and after.id == before.id
    [r] = lab.probe("lan", [Probe("tcp", SRV, 443, timeout=2.0)])
    assert r.outcome == "open"

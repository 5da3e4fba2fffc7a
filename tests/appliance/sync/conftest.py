"""Shared by the sync agent tests: the MSP side (keys, a real static HTTP host on
loopback) and an enrolled appliance (real config store, in-memory nftables double)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from appliance.engine import Engine
from appliance.nft import MemoryNft
from appliance.store import ConfigStore
from appliance.sync.agent import SyncAgent, SyncOutcome
from appliance.sync.checkin import HealthProbe
from appliance.sync.keys import SigningKey, generate_key
from appliance.sync.metadata import make_bundle, make_root
from appliance.sync.publish import publish, publish_root
from appliance.sync.state import Enrolment, enrol
from appliance.sync.transport import HttpTransport
from tests.appliance.sync.test_transport import StaticHost

EXAMPLES = Path(__file__).parents[3] / "policies" / "examples"
OFFICE = (EXAMPLES / "small-office.yaml").read_text()
FILES = ["feeds/spamhaus-drop.txt", "lists/ads-trackers.txt", "lists/malware.hosts",
         "lists/allow.txt"]  # fmt: skip
SITE = "acme-hq"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def time(self) -> float:
        return self.now

    def at(self, days: float = 0) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.now, dt.UTC) + dt.timedelta(days=days)


def edit(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new)


@dataclass
class Msp:
    """The MSP's side: keys and a published static directory on a real HTTP server."""

    publish_dir: Path
    host: StaticHost
    root_key: SigningKey
    bundle_key: SigningKey
    clock: FakeClock

    def sign(
        self,
        version: int,
        policy: str = OFFICE,
        *,
        locked: tuple[str, ...] = ("site",),
        signer: SigningKey | None = None,
        expires_days: float = 30,
        message: str = "",
    ) -> tuple[dict[str, Any], dict[str, bytes]]:
        files = {name: (EXAMPLES / name).read_bytes() for name in FILES}
        return make_bundle(
            SITE, version, policy, files, locked, self.clock.at(expires_days),
            signer or self.bundle_key, message=message or f"v{version}",
            created=self.clock.at(-1),
        )  # fmt: skip

    def publish(self, version: int, policy: str = OFFICE, **kwargs: Any) -> dict[str, Any]:
        envelope, blobs = self.sign(version, policy, **kwargs)
        publish(self.publish_dir, envelope, blobs)
        return envelope

    def checkins(self) -> list[dict[str, Any]]:
        return [body for _, _, body in self.host.posts]


@dataclass
class Appliance:
    state: Path
    engine: Engine
    nft: MemoryNft
    agent: SyncAgent

    def live_text(self) -> str:
        live = self.engine.store.live()
        assert live is not None
        return self.engine.store.texts(live.id)[0]

    def state_json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.state / "sync" / "state.json").read_text())
        return data

    def sync(self) -> SyncOutcome:
        return self.agent.run_once()


@pytest.fixture
def msp(tmp_path: Path) -> Iterator[Msp]:
    publish_dir = tmp_path / "publish"
    publish_dir.mkdir()
    clock = FakeClock()
    root_key, bundle_key = generate_key(), generate_key()
    root = make_root(1, [root_key, bundle_key], [root_key], [bundle_key], [], clock.at(365),
                     [root_key])  # fmt: skip
    publish_root(publish_dir, root)
    host = StaticHost(publish_dir)
    yield Msp(publish_dir, host, root_key, bundle_key, clock)
    host.close()


@pytest.fixture
def box(tmp_path: Path, msp: Msp) -> Appliance:
    """An appliance enforcing the small-office policy, applied locally, then enrolled."""
    local = tmp_path / "local"
    shutil.copytree(EXAMPLES, local)
    nft = MemoryNft()
    engine = Engine(ConfigStore(tmp_path / "state"), nft, msp.clock)
    engine.apply(engine.plan(local / "small-office.yaml"), author="admin", message="install")
    root = json.loads((msp.publish_dir / "root" / "1.json").read_text())
    enrolment = Enrolment(msp.host.url, msp.host.url, SITE, "cred-1", "box-1")
    enrol(tmp_path / "state", enrolment, root)
    health = HealthProbe(ruleset_loaded=nft.exists, resolver_up=lambda: True, uptime_s=lambda: 42)
    agent = SyncAgent(tmp_path / "state", engine, HttpTransport(timeout=5), health)
    return Appliance(tmp_path / "state", engine, nft, agent)


def assert_refused(msp: Msp, box: Appliance, reason: str, live_before: str) -> None:
    table = box.nft.table
    outcome = box.sync()
    assert (outcome.result, outcome.reason) == ("refused", reason)
    assert box.live_text() == live_before and box.nft.table == table  # last good stays
    state = box.state_json()
    assert state["last_sync"]["result"] == "refused" and state["last_sync"]["reason"] == reason
    assert any(kind == "sync-refused" for _, kind, _ in box.engine.store.events())
    assert msp.checkins()[-1]["last_sync"]["reason"] == reason  # reported

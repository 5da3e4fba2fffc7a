"""``edgeguard msp`` end to end in temporary directories; the published files are checked the
way an appliance checks them (load_root / verify_root_update / verify_bundle / check_blob)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from appliance.cli import main
from appliance.sync.canonical import canonical_bytes
from appliance.sync.errors import BundleRefused
from appliance.sync.keys import signature_valid
from appliance.sync.metadata import (
    BundleMeta,
    Root,
    check_blob,
    load_root,
    verify_bundle,
    verify_root_update,
)
from policies.loader import parse_policy

EXAMPLES = Path(__file__).resolve().parents[3] / "policies" / "examples"


@dataclass
class Msp:
    keys: Path
    publish: Path

    def run(self, *argv: str) -> int:
        return main(["msp", argv[0], "--keys", str(self.keys), "--publish", str(self.publish),
                     *argv[1:]])  # fmt: skip

    def root(self, version: int) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.publish / "root" / f"{version}.json").read_text())
        return data

    def bundle(self, site: str = "acme-hq") -> dict[str, Any]:
        path = self.publish / "sites" / site / "bundle.json"
        data: dict[str, Any] = json.loads(path.read_text())
        return data


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _appliance_check(msp: Msp, root: Root, tmp_path: Path, last: int | None = None) -> BundleMeta:
    """What the agent does: verify, fetch blobs by hash, check them, validate the policy."""
    meta = verify_bundle(root, msp.bundle(), site="acme-hq", last_version=last, now=_now())
    blobs = msp.publish / "blobs"
    text = (blobs / meta.policy_sha256).read_bytes()
    check_blob(meta.policy_sha256, meta.policy_length, text, "policy")
    site = tmp_path / f"appliance-v{meta.version}"
    for rel, (digest, length) in meta.files.items():
        data = (blobs / digest).read_bytes()
        check_blob(digest, length, data, rel)
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(data)
    parse_policy(text.decode(), "bundle", base_dir=site)
    return meta


@pytest.fixture
def msp(tmp_path: Path) -> Msp:
    m = Msp(tmp_path / "keys", tmp_path / "publish")
    assert m.run("init") == 0
    return m


def test_init_makes_private_keys_and_a_self_signed_root(msp: Msp) -> None:
    pems = sorted(msp.keys.glob("*.pem"))
    assert [p.name.split("-")[0] for p in pems] == ["bundle", "root"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in pems)
    env = msp.root(1)
    root = load_root(env)
    (root_id,) = root.root_keys
    assert pems[1].name == f"root-{root_id}.pem"
    (sig,) = env["signatures"]
    assert sig["keyid"] == root_id
    assert signature_valid(root.keys[root_id], canonical_bytes(env["signed"]), sig["sig"])
    assert root.expires > _now() + dt.timedelta(days=360)


def test_init_refuses_to_overwrite_keys(msp: Msp, capsys: pytest.CaptureFixture[str]) -> None:
    before = sorted(p.name for p in msp.keys.iterdir())
    assert msp.run("init") == 2
    assert "refusing to replace" in capsys.readouterr().err
    assert sorted(p.name for p in msp.keys.iterdir()) == before


def test_signed_bundle_passes_the_appliance_checks(msp: Msp, tmp_path: Path) -> None:
    policy = EXAMPLES / "small-office.yaml"
    assert msp.run("sign", "--site", "acme-hq", "--policy", str(policy),
                   "--lock", "rules", "dns", "-m", "first bundle") == 0  # fmt: skip
    meta = _appliance_check(msp, load_root(msp.root(1)), tmp_path)
    assert (meta.version, meta.locked, meta.message) == (1, ("dns", "rules"), "first bundle")
    assert set(meta.files) == {
        "feeds/spamhaus-drop.txt", "lists/ads-trackers.txt", "lists/malware.hosts",
        "lists/allow.txt",
    }  # fmt: skip
    assert meta.expires - meta.created == dt.timedelta(days=30)
    # The next sign goes to v2 by default; an explicit older version is refused.
    assert msp.run("sign", "--site", "acme-hq", "--policy", str(policy), "-m", "again") == 0
    assert msp.bundle()["signed"]["version"] == 2
    assert msp.run("sign", "--site", "acme-hq", "--policy", str(policy),
                   "--version", "2", "-m", "x") == 2  # fmt: skip
    assert msp.run("sign", "--site", "acme-hq", "--policy", str(policy),
                   "--version", "10", "-m", "x") == 0  # fmt: skip
    assert _appliance_check(msp, load_root(msp.root(1)), tmp_path, last=2).version == 10


def test_invalid_policy_is_refused_with_its_location_before_signing(
    msp: Msp, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(EXAMPLES / "lists", tmp_path / "lists")
    policy = tmp_path / "bad.yaml"
    text = (EXAMPLES / "web-filter.yaml").read_text()
    policy.write_text(text.replace("    action: reject\n", "    action: rejekt\n", 1))
    line = policy.read_text().splitlines().index("    action: rejekt") + 1
    assert msp.run("sign", "--site", "acme-hq", "--policy", str(policy), "-m", "x") == 1
    err = capsys.readouterr().err
    assert f"{policy}:{line}:13:" in err and "rejekt" in err
    assert "nothing was signed" in err
    assert not (msp.publish / "sites").exists() and not (msp.publish / "blobs").exists()


def test_baseline_is_layered_under_the_site_policy(msp: Msp, tmp_path: Path) -> None:
    base_dir = tmp_path / "baseline"
    shutil.copytree(EXAMPLES / "feeds", base_dir / "feeds")
    shutil.copytree(EXAMPLES / "lists", base_dir / "lists")
    shutil.copy(EXAMPLES / "small-office.yaml", base_dir / "msp-baseline-3.yaml")
    site = tmp_path / "acme.yaml"
    rules = "rules:\n  - {name: lan-out, from: lan, to: wan, action: accept}\n"
    site.write_text("site:\n  name: acme-hq\n  timezone: Europe/Berlin\n" + rules)
    assert msp.run("sign", "--site", "acme-hq", "--policy", str(site), "--baseline",
                   str(base_dir / "msp-baseline-3.yaml"), "-m", "layered") == 0  # fmt: skip
    meta = _appliance_check(msp, load_root(msp.root(1)), tmp_path)
    assert meta.baseline == "msp-baseline-3"
    text = (msp.publish / "blobs" / meta.policy_sha256).read_text()
    policy = parse_policy(text, "b", base_dir=tmp_path / "appliance-v1").policy
    assert [r.name for r in policy.rules] == ["lan-out"] and policy.site.name == "acme-hq"
    assert [z.name for z in policy.zones] == ["wan", "lan", "dmz"]  # from the baseline


def test_bundle_key_rotation_with_revocation(
    msp: Msp, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = str(EXAMPLES / "small-office.yaml")
    assert msp.run("sign", "--site", "acme-hq", "--policy", policy, "-m", "v1") == 0
    root1 = load_root(msp.root(1))
    (old_bundle_key,) = root1.bundle_keys
    capsys.readouterr()
    assert msp.run("rotate-key", "--revoke", old_bundle_key) == 0
    out = capsys.readouterr().out
    assert "site acme-hq: the published bundle is signed by the revoked key" in out
    # The appliance walks to root v2: signed by the (unchanged) root key, so accepted.
    root2 = verify_root_update(root1, msp.root(2), _now())
    assert old_bundle_key in root2.revoked and old_bundle_key not in root2.bundle_keys
    with pytest.raises(BundleRefused) as info:
        _appliance_check(msp, root2, tmp_path)
    assert info.value.reason == "revoked-key"
    assert msp.run("sign", "--site", "acme-hq", "--policy", policy, "-m", "v2") == 0
    assert _appliance_check(msp, root2, tmp_path, last=1).keyid in root2.bundle_keys


def test_root_key_rotation_chains_from_the_old_key(msp: Msp, tmp_path: Path) -> None:
    root1 = load_root(msp.root(1))
    assert msp.run("rotate-key", "--role", "root") == 0
    root2 = verify_root_update(root1, msp.root(2), _now())
    assert root2.root_keys.isdisjoint(root1.root_keys)
    assert msp.run("rotate-key") == 0  # signed by the new root key only
    root3 = verify_root_update(root2, msp.root(3), _now())
    with pytest.raises(BundleRefused):  # v1 cannot skip to v3
        verify_root_update(root1, msp.root(3), _now())
    assert len(root3.bundle_keys) == 2  # the old bundle key still signs until revoked
    assert msp.run("sign", "--site", "acme-hq", "--policy",
                   str(EXAMPLES / "small-office.yaml"), "-m", "x") == 0  # fmt: skip
    meta = _appliance_check(msp, root3, tmp_path)
    current = json.loads((msp.keys / "current.json").read_text())
    assert meta.keyid == current["bundle"] and meta.keyid not in root1.bundle_keys


def test_usage_errors_name_the_problem(msp: Msp, capsys: pytest.CaptureFixture[str]) -> None:
    policy = str(EXAMPLES / "small-office.yaml")
    assert msp.run("sign", "--site", "../x", "--policy", policy, "-m", "x") == 2
    assert msp.run("sign", "--site", "a", "--policy", policy, "--lock", "Rules!", "-m", "x") == 2
    assert msp.run("rotate-key", "--revoke", "ab" * 32) == 2
    err = capsys.readouterr().err
    assert "--site '../x'" in err and "--lock ['Rules!']" in err and "not a key of root" in err
    empty = Msp(msp.keys.parent / "k2", msp.publish.parent / "p2")
    assert empty.run("sign", "--site", "a", "--policy", policy, "-m", "x") == 2
    assert "no root published" in capsys.readouterr().err

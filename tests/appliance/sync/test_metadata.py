"""Root and bundle metadata: every refusal reason of the contract, with real signatures."""

from __future__ import annotations

import copy
import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from appliance.sync.canonical import sha256_hex
from appliance.sync.errors import BundleRefused
from appliance.sync.keys import SigningKey, generate_key
from appliance.sync.metadata import (
    Root,
    check_blob,
    load_enrolment_root,
    load_root,
    make_bundle,
    make_root,
    verify_bundle,
    verify_root_update,
)

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
YEAR = dt.timedelta(days=365)
POLICY = "version: 1\nsite: {name: acme}\n"
LIST = b"ads.example\ntracker.example\n"


@dataclass
class Msp:
    """An MSP's keys and its trusted root v1, as an appliance has it after enrolment."""

    root_key: SigningKey = field(default_factory=generate_key)
    bundle_key: SigningKey = field(default_factory=generate_key)

    def root_v1(self) -> Root:
        env = make_root(
            1,
            [self.root_key, self.bundle_key],
            [self.root_key],
            [self.bundle_key],
            [],
            NOW + YEAR,
            [self.root_key],
        )
        return load_root(env)

    def bundle(
        self, version: int = 1, signer: SigningKey | None = None, **kw: Any
    ) -> dict[str, Any]:
        env, _ = make_bundle(
            kw.pop("site", "acme-hq"),
            version,
            POLICY,
            {"lists/ads.txt": LIST},
            ["rules"],
            kw.pop("expires", NOW + dt.timedelta(days=30)),
            signer or self.bundle_key,
            created=NOW,
            **kw,
        )
        return env


def refused(root: Root, env: dict[str, Any], **kw: Any) -> str:
    with pytest.raises(BundleRefused) as info:
        verify_bundle(
            root,
            env,
            site=kw.get("site", "acme-hq"),
            last_version=kw.get("last_version"),
            now=kw.get("now", NOW),
        )
    return info.value.reason


@pytest.fixture
def msp() -> Msp:
    return Msp()


def test_valid_bundle_is_accepted_with_its_content(msp: Msp) -> None:
    env, blobs = make_bundle(
        "acme-hq", 7, POLICY, {"lists/ads.txt": LIST}, ["web_filter", "rules"],
        NOW + YEAR, msp.bundle_key, baseline="msp-baseline-3", message="block ads", created=NOW,
    )  # fmt: skip
    meta = verify_bundle(msp.root_v1(), env, site="acme-hq", last_version=6, now=NOW)
    assert meta.version == 7 and meta.site == "acme-hq"
    assert meta.policy_sha256 == sha256_hex(POLICY.encode())
    assert meta.policy_length == len(POLICY.encode())
    assert meta.files == {"lists/ads.txt": (sha256_hex(LIST), len(LIST))}
    assert meta.locked == ("rules", "web_filter")
    assert (meta.baseline, meta.message) == ("msp-baseline-3", "block ads")
    assert meta.keyid == msp.bundle_key.keyid
    assert blobs == {sha256_hex(POLICY.encode()): POLICY.encode(), sha256_hex(LIST): LIST}


def test_parsed_forms_of_files_are_signed_and_returned(msp: Msp) -> None:
    parsed = b"EGFEED1\n..."
    env, blobs = make_bundle(
        "acme-hq", 7, POLICY, {"lists/ads.txt": LIST}, ["rules"], NOW + YEAR,
        msp.bundle_key, parsed={"lists/ads.txt": parsed}, created=NOW,
    )  # fmt: skip
    meta = verify_bundle(msp.root_v1(), env, site="acme-hq", last_version=None, now=NOW)
    assert meta.files == {"lists/ads.txt": (sha256_hex(LIST), len(LIST))}
    assert meta.parsed == {"lists/ads.txt": (sha256_hex(parsed), len(parsed))}
    assert blobs[sha256_hex(parsed)] == parsed
    with pytest.raises(ValueError, match="does not carry"):
        make_bundle("acme-hq", 7, POLICY, {}, [], NOW + YEAR, msp.bundle_key,
                    parsed={"lists/ads.txt": parsed})  # fmt: skip


def test_tampered_signed_part_is_refused(msp: Msp) -> None:
    env = msp.bundle()
    env["signed"]["locked"] = []  # e.g. someone unlocks the rules on the way
    assert refused(msp.root_v1(), env) == "signature"


def test_tampered_signature_is_refused(msp: Msp) -> None:
    env = msp.bundle()
    sig = env["signatures"][0]["sig"]
    env["signatures"][0]["sig"] = ("B" if sig[0] == "A" else "A") + sig[1:]
    assert refused(msp.root_v1(), env) == "signature"


def test_signature_copied_from_another_bundle_is_refused(msp: Msp) -> None:
    env, other = msp.bundle(version=2), msp.bundle(version=3)
    env["signatures"] = other["signatures"]
    assert refused(msp.root_v1(), env) == "signature"


def test_wrong_key_is_refused_as_unknown(msp: Msp) -> None:
    assert refused(msp.root_v1(), msp.bundle(signer=generate_key())) == "unknown-key"


def test_root_key_may_not_sign_bundles(msp: Msp) -> None:
    assert refused(msp.root_v1(), msp.bundle(signer=msp.root_key)) == "unknown-key"


def test_revoked_key_is_refused(msp: Msp) -> None:
    new_bundle_key = generate_key()
    env = make_root(
        2, [msp.root_key, new_bundle_key], [msp.root_key], [new_bundle_key],
        [msp.bundle_key], NOW + YEAR, [msp.root_key],
    )  # fmt: skip
    root2 = verify_root_update(msp.root_v1(), env, NOW)
    assert refused(root2, msp.bundle(signer=msp.bundle_key)) == "revoked-key"
    assert (
        verify_bundle(
            root2, msp.bundle(signer=new_bundle_key), site="acme-hq", last_version=None, now=NOW
        ).keyid
        == new_bundle_key.keyid
    )
    # Before the update the same bundle was fine: the revocation is what refuses it.
    verify_bundle(msp.root_v1(), msp.bundle(), site="acme-hq", last_version=None, now=NOW)


@pytest.mark.parametrize("last", [5, 6])
def test_older_or_equal_version_is_rollback(msp: Msp, last: int) -> None:
    assert refused(msp.root_v1(), msp.bundle(version=5), last_version=last) == "rollback"


def test_expired_bundle_is_refused(msp: Msp) -> None:
    env = msp.bundle(expires=NOW + dt.timedelta(hours=1))
    verify_bundle(msp.root_v1(), env, site="acme-hq", last_version=None, now=NOW)
    assert refused(msp.root_v1(), env, now=NOW + dt.timedelta(hours=1)) == "expired"


def test_bundle_under_an_expired_root_is_refused(msp: Msp) -> None:
    env = msp.bundle(expires=NOW + 2 * YEAR)
    assert refused(msp.root_v1(), env, now=NOW + YEAR + dt.timedelta(days=1)) == "expired"


def test_bundle_for_another_site_is_refused(msp: Msp) -> None:
    assert refused(msp.root_v1(), msp.bundle(site="other-site")) == "wrong-site"


def _mutations() -> list[tuple[str, Any]]:
    def drop(key: str) -> Any:
        return lambda e: e["signed"].pop(key)

    def put(key: str, value: Any) -> Any:
        return lambda e: e["signed"].__setitem__(key, value)

    return [
        ("not-a-dict", lambda e: e.clear()),
        ("no-signatures", lambda e: e.__setitem__("signatures", [])),
        ("signature-shape", lambda e: e.__setitem__("signatures", [{"keyid": 1}])),
        ("extra-top", lambda e: e.__setitem__("extra", 1)),
        ("missing-field", drop("expires")),
        ("unknown-field", put("owner", "x")),
        ("wrong-type", put("type", "edgeguard-root")),
        ("spec", put("spec", 2)),
        ("version-str", put("version", "7")),
        ("version-bool", put("version", True)),
        ("expires-format", put("expires", "next year")),
        ("policy-shape", put("policy", {"sha256": "abc", "length": 1})),
        ("files-shape", put("files", ["lists/ads.txt"])),
        ("file-escapes", put("files", {"../etc/passwd": {"sha256": "a" * 64, "length": 1}})),
        ("file-absolute", put("files", {"/etc/passwd": {"sha256": "a" * 64, "length": 1}})),
        ("length-negative", put("files", {"a.txt": {"sha256": "a" * 64, "length": -1}})),
        (
            "parsed-shape",
            put("files", {"a.txt": {"sha256": "a" * 64, "length": 1, "parsed": "a" * 64}}),
        ),
        (
            "file-extra-key",
            put("files", {"a.txt": {"sha256": "a" * 64, "length": 1, "owner": "x"}}),
        ),
        ("locked-shape", put("locked", "rules")),
        ("baseline-type", put("baseline", 3)),
        ("message-type", put("message", None)),
    ]


@pytest.mark.parametrize(("name", "mutate"), _mutations(), ids=[m[0] for m in _mutations()])
def test_malformed_shapes_are_refused(msp: Msp, name: str, mutate: Any) -> None:
    """Re-signed after the change, so only the shape check can refuse it."""
    env = msp.bundle()
    mutate(env)
    if isinstance(env.get("signed"), dict) and name not in {"no-signatures", "signature-shape"}:
        from appliance.sync.canonical import canonical_bytes

        data = canonical_bytes(env["signed"])
        env["signatures"] = [{"keyid": msp.bundle_key.keyid, "sig": msp.bundle_key.sign(data)}]
    assert refused(msp.root_v1(), env) == "malformed"


def test_non_dict_envelope_is_malformed(msp: Msp) -> None:
    assert refused(msp.root_v1(), []) == "malformed"  # type: ignore[arg-type]


def test_blob_hash_or_length_mismatch_is_refused() -> None:
    check_blob(sha256_hex(LIST), len(LIST), LIST, "lists/ads.txt")
    with pytest.raises(BundleRefused) as info:
        check_blob(sha256_hex(LIST), len(LIST), LIST.replace(b"ads", b"add"), "lists/ads.txt")
    assert info.value.reason == "hash-mismatch" and "lists/ads.txt" in str(info.value)
    with pytest.raises(BundleRefused) as info:
        check_blob(sha256_hex(LIST), len(LIST), LIST + b"x", "lists/ads.txt")
    assert info.value.reason == "hash-mismatch" and "bytes" in str(info.value)


# --- root rotation -------------------------------------------------------------------------


def test_root_rotation_signed_by_the_old_root_key_is_accepted(msp: Msp) -> None:
    new_root = generate_key()
    env = make_root(
        2, [new_root, msp.bundle_key], [new_root], [msp.bundle_key], [msp.root_key],
        NOW + YEAR, [msp.root_key, new_root],
    )  # fmt: skip
    root2 = verify_root_update(msp.root_v1(), env, NOW)
    assert root2.version == 2 and root2.root_keys == {new_root.keyid}
    assert root2.raw is env
    # v3 must now come from the new root key; the old one is revoked.
    newer = generate_key()
    by_new = make_root(3, [newer, msp.bundle_key], [newer], [msp.bundle_key], [],
                       NOW + YEAR, [new_root, newer])  # fmt: skip
    assert verify_root_update(root2, by_new, NOW).root_keys == {newer.keyid}
    by_old = make_root(3, [newer, msp.bundle_key], [newer], [msp.bundle_key], [],
                       NOW + YEAR, [msp.root_key, newer])  # fmt: skip
    with pytest.raises(BundleRefused) as info:
        verify_root_update(root2, by_old, NOW)
    assert info.value.reason == "revoked-key"


def test_root_not_signed_by_the_old_root_key_is_refused(msp: Msp) -> None:
    thief = generate_key()
    env = make_root(2, [thief], [thief], [thief], [], NOW + YEAR, [thief])
    with pytest.raises(BundleRefused) as info:
        verify_root_update(msp.root_v1(), env, NOW)
    assert info.value.reason == "unknown-key"
    # A bundle key is not a root key either.
    env = make_root(2, [thief], [thief], [thief], [], NOW + YEAR, [msp.bundle_key, thief])
    with pytest.raises(BundleRefused) as info:
        verify_root_update(msp.root_v1(), env, NOW)
    assert info.value.reason == "unknown-key"


def test_root_without_its_own_root_key_signature_is_refused(msp: Msp) -> None:
    new_root = generate_key()
    env = make_root(2, [new_root], [new_root], [new_root], [], NOW + YEAR, [msp.root_key])
    with pytest.raises(BundleRefused) as info:
        verify_root_update(msp.root_v1(), env, NOW)
    assert info.value.reason == "unknown-key" and "own root keys" in str(info.value)


def test_tampered_root_is_refused(msp: Msp) -> None:
    env = make_root(2, [msp.root_key, msp.bundle_key], [msp.root_key], [msp.bundle_key], [],
                    NOW + YEAR, [msp.root_key])  # fmt: skip
    tampered = copy.deepcopy(env)
    tampered["signed"]["bundle_keys"] = [msp.root_key.keyid]
    with pytest.raises(BundleRefused) as info:
        verify_root_update(msp.root_v1(), tampered, NOW)
    assert info.value.reason == "signature"
    assert verify_root_update(msp.root_v1(), env, NOW).version == 2


@pytest.mark.parametrize(("version", "reason"), [(1, "rollback"), (3, "malformed")])
def test_root_versions_go_up_one_at_a_time(msp: Msp, version: int, reason: str) -> None:
    env = make_root(version, [msp.root_key, msp.bundle_key], [msp.root_key], [msp.bundle_key],
                    [], NOW + YEAR, [msp.root_key])  # fmt: skip
    with pytest.raises(BundleRefused) as info:
        verify_root_update(msp.root_v1(), env, NOW)
    assert info.value.reason == reason


def test_root_whose_key_id_lies_is_malformed(msp: Msp) -> None:
    env = make_root(1, [msp.root_key], [msp.root_key], [], [], NOW + YEAR, [msp.root_key])
    keys = env["signed"]["keys"]
    keys["f" * 64] = keys.pop(msp.root_key.keyid)
    with pytest.raises(BundleRefused) as info:
        load_root(env)
    assert info.value.reason == "malformed"


def test_make_root_refuses_a_root_appliances_would_refuse(msp: Msp) -> None:
    with pytest.raises(ValueError, match="both in use and revoked"):
        make_root(1, [msp.root_key], [msp.root_key], [], [msp.root_key], NOW + YEAR,
                  [msp.root_key])  # fmt: skip
    with pytest.raises(ValueError, match="not listed in keys"):
        make_root(1, [msp.root_key], [msp.root_key], [msp.bundle_key], [], NOW + YEAR,
                  [msp.root_key])  # fmt: skip


def test_the_enrolment_root_must_be_v1_and_signed_by_its_own_root_key(msp: Msp) -> None:
    keys = ([msp.root_key, msp.bundle_key], [msp.root_key], [msp.bundle_key], [], NOW + YEAR)
    good = make_root(1, *keys, [msp.root_key])
    assert load_enrolment_root(good).version == 1
    with pytest.raises(BundleRefused) as later:
        load_enrolment_root(make_root(2, *keys, [msp.root_key]))
    assert "enrol with the MSP's root v1" in str(later.value)
    edited = json.loads(json.dumps(good))
    edited["signed"]["bundle_keys"] = []  # e.g. pasted and edited on the way
    with pytest.raises(BundleRefused) as info:
        load_enrolment_root(edited)
    assert info.value.reason == "signature"
    with pytest.raises(BundleRefused) as info:
        load_enrolment_root(make_root(1, *keys, [msp.bundle_key]))  # not a root key
    assert info.value.reason == "unknown-key"

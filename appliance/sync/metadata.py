"""Signed metadata: the root of trust (keys and their roles) and per-site bundles.

Modelled on The Update Framework, cut down to what one MSP needs:

* ``root.json`` lists the keys, which of them may sign roots and which may sign bundles,
  and which are revoked. Version 1 is trusted at enrolment; each later version must be
  signed by a root key of the version before it *and* by its own root key, so a key is
  rotated by publishing a root the old key vouches for, and a stolen bundle key is retired
  by listing it in ``revoked``.
* a bundle names the site, a version that only goes up (against replaying an old policy),
  an expiry (against an attacker freezing a site on a stale policy) and the SHA-256 and
  length of every file, so the files themselves can come from any untrusted static host.

Everything here is pure: envelopes are plain dicts (as loaded from JSON), times are passed in.
Every failure raises ``BundleRefused`` with one of the contract's reasons.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from appliance.sync.canonical import (
    canonical_bytes,
    format_time,
    is_sha256_hex,
    parse_time,
    sha256_hex,
)
from appliance.sync.errors import BundleRefused, RefusalReason
from appliance.sync.keys import SigningKey, decode_public_key, keyid_for, signature_valid

SPEC = 1
ROOT_TYPE = "edgeguard-root"
BUNDLE_TYPE = "edgeguard-bundle"
SITE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SECTION_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")
_ROOT_FIELDS = {"type", "spec", "version", "expires", "keys", "root_keys", "bundle_keys", "revoked"}
_BUNDLE_FIELDS = {
    "type", "spec", "site", "version", "created", "expires", "policy", "files", "locked",
    "baseline", "message",
}  # fmt: skip


@dataclass(frozen=True)
class Root:
    """A root of trust the appliance has accepted (or is about to)."""

    version: int
    expires: dt.datetime
    keys: dict[str, bytes]  # key id -> raw Ed25519 public key
    root_keys: frozenset[str]
    bundle_keys: frozenset[str]
    revoked: frozenset[str]
    raw: dict[str, Any]  # the envelope as loaded, to store or publish unchanged


@dataclass(frozen=True)
class BundleMeta:
    """What a verified bundle says; its blobs still need ``check_blob`` when fetched."""

    site: str
    version: int
    created: dt.datetime
    expires: dt.datetime
    policy_sha256: str
    policy_length: int
    files: dict[str, tuple[str, int]]  # relative path in the policy -> (sha256, length)
    locked: tuple[str, ...]
    baseline: str | None
    message: str
    keyid: str = ""  # the bundle key that signed it
    # relative path of an IP feed -> (sha256, length) of its parsed form
    # (policies.feed_blob), published by `msp sign` so appliances need not parse it
    parsed: dict[str, tuple[str, int]] = field(default_factory=dict)


def valid_site(site: object) -> bool:
    """A site id is also a URL path segment and a directory name: keep it boring."""
    return isinstance(site, str) and SITE_PATTERN.fullmatch(site) is not None


def safe_relative_path(path: object) -> bool:
    """Whether ``path`` stays inside the directory it is materialised under on the appliance."""
    if not isinstance(path, str) or not path or len(path) > 255 or path.startswith("/"):
        return False
    if "\\" in path or any(ord(c) < 32 or ord(c) == 127 for c in path):
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


# --- shape checks -----------------------------------------------------------------------


def _malformed(what: str) -> BundleRefused:
    return BundleRefused("malformed", what)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _envelope(envelope: object, kind: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    if not isinstance(envelope, dict) or set(envelope) != {"signed", "signatures"}:
        raise _malformed(f"{kind}: expected an object with exactly 'signed' and 'signatures'")
    signed, signatures = envelope["signed"], envelope["signatures"]
    if not isinstance(signed, dict):
        raise _malformed(f"{kind}: 'signed' must be an object")
    if not isinstance(signatures, list) or not signatures:
        raise _malformed(f"{kind}: 'signatures' must be a non-empty list")
    for sig in signatures:
        if (
            not isinstance(sig, dict)
            or set(sig) != {"keyid", "sig"}
            or not isinstance(sig["keyid"], str)
            or not isinstance(sig["sig"], str)
        ):
            raise _malformed(f"{kind}: each signature must be {{'keyid': str, 'sig': str}}")
    return signed, signatures


def _header(signed: dict[str, Any], kind: str, type_: str, fields: set[str]) -> None:
    if set(signed) != fields:
        missing, extra = sorted(fields - set(signed)), sorted(set(signed) - fields)
        raise _malformed(f"{kind}: missing fields {missing}, unknown fields {extra}")
    if signed["type"] != type_:
        raise _malformed(f"{kind}: type is {signed['type']!r}, expected {type_!r}")
    if signed["spec"] != SPEC or not _is_int(signed["spec"]):
        raise _malformed(f"{kind}: spec {signed['spec']!r} is not supported (this agent reads 1)")
    if not _is_int(signed["version"]) or signed["version"] < 1:
        raise _malformed(f"{kind}: version must be a positive integer")


def _time(value: object, kind: str, field: str) -> dt.datetime:
    try:
        return parse_time(value)
    except ValueError as exc:
        raise _malformed(f"{kind}: {field}: {exc}") from exc


def _keyids(value: object, kind: str, field: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(is_sha256_hex(k) for k in value):
        raise _malformed(f"{kind}: {field} must be a list of key ids (64 hex digits)")
    return frozenset(value)


def _signer(
    signed: dict[str, Any],
    signatures: list[dict[str, Any]],
    allowed: Mapping[str, bytes],
    revoked: frozenset[str],
    what: str,
) -> str:
    """The key id of a valid signature by an ``allowed`` key, or the most telling refusal."""
    data = canonical_bytes(signed)
    forged = []
    for sig in signatures:
        public = allowed.get(sig["keyid"])
        if public is None:
            continue
        if signature_valid(public, data, sig["sig"]):
            return str(sig["keyid"])
        forged.append(sig["keyid"])
    if forged:
        raise BundleRefused(
            "signature",
            f"{what}: the signature by key {forged[0][:16]}... does not match the content "
            "(tampered in transit or at the host)",
        )
    ids = [s["keyid"] for s in signatures]
    gone = [k for k in ids if k in revoked]
    reason: RefusalReason = "revoked-key" if gone else "unknown-key"
    raise BundleRefused(
        reason,
        f"{what}: signed by revoked key {gone[0][:16]}..."
        if gone
        else f"{what}: signed by {', '.join(k[:16] + '...' for k in ids)}, "
        "none of which the trusted root allows for this",
    )


# --- root ---------------------------------------------------------------------------------


def load_root(envelope: dict[str, Any]) -> Root:
    """Read a root envelope, checking its shape only: version 1 is trusted on enrolment."""
    signed, _ = _envelope(envelope, "root")
    kind = "root"
    _header(signed, kind, ROOT_TYPE, _ROOT_FIELDS)
    kind = f"root v{signed['version']}"
    keys_field = signed["keys"]
    if not isinstance(keys_field, dict):
        raise _malformed(f"{kind}: keys must be an object keyid -> {{'ed25519': base64}}")
    keys: dict[str, bytes] = {}
    for keyid, spec in keys_field.items():
        raw = decode_public_key(spec.get("ed25519")) if isinstance(spec, dict) else None
        if raw is None or not isinstance(spec, dict) or set(spec) != {"ed25519"}:
            raise _malformed(f"{kind}: key {keyid[:16]}... is not {{'ed25519': 32 bytes base64}}")
        if keyid_for(raw) != keyid:
            raise _malformed(f"{kind}: key id {keyid[:16]}... is not the SHA-256 of its key")
        keys[keyid] = raw
    root_keys = _keyids(signed["root_keys"], kind, "root_keys")
    bundle_keys = _keyids(signed["bundle_keys"], kind, "bundle_keys")
    revoked = _keyids(signed["revoked"], kind, "revoked")
    if not root_keys:
        raise _malformed(f"{kind}: root_keys is empty; nobody could sign the next root")
    if missing := (root_keys | bundle_keys) - set(keys):
        raise _malformed(f"{kind}: key ids {sorted(missing)} are used but not listed in keys")
    if both := (root_keys | bundle_keys) & revoked:
        raise _malformed(f"{kind}: key ids {sorted(both)} are both in use and revoked")
    return Root(
        version=signed["version"],
        expires=_time(signed["expires"], kind, "expires"),
        keys=keys,
        root_keys=root_keys,
        bundle_keys=bundle_keys,
        revoked=revoked,
        raw=envelope,
    )


def load_enrolment_root(envelope: dict[str, Any]) -> Root:
    """The root an appliance is enrolled with: version 1, signed by one of its own root keys.

    Nothing older vouches for it (it is the trust anchor the technician brings), but a root
    whose own signature does not match was damaged or edited on the way, and a later version
    given as the anchor would skip the MSP's chain of rotations: both are refused.
    """
    root = load_root(envelope)
    if root.version != 1:
        raise _malformed(
            f"root v{root.version}: enrol with the MSP's root v1 (root/1.json); later "
            "versions are fetched and checked against it"
        )
    _signer(
        envelope["signed"],
        envelope["signatures"],
        {k: root.keys[k] for k in root.root_keys},
        root.revoked,
        "root v1 (needs one of its own root keys)",
    )
    return root


def verify_root_update(trusted: Root, envelope: dict[str, Any], now: dt.datetime) -> Root:
    """Accept root version ``trusted.version + 1`` if the trusted root vouches for it.

    Expiry is not checked here: while walking several versions, an intermediate root may
    have expired long ago and that is fine; ``verify_bundle`` refuses bundles under an
    expired root, which is where a frozen root would do harm. ``now`` is kept so callers do
    not change if per-step checks are added.
    """
    del now
    new = load_root(envelope)
    if new.version <= trusted.version:
        raise BundleRefused(
            "rollback", f"root v{new.version} is not newer than trusted v{trusted.version}"
        )
    if new.version != trusted.version + 1:
        raise _malformed(
            f"root v{new.version} skips versions after trusted v{trusted.version}; "
            "roots are accepted one version at a time"
        )
    signed, signatures = envelope["signed"], envelope["signatures"]
    _signer(
        signed,
        signatures,
        {k: trusted.keys[k] for k in trusted.root_keys},
        trusted.revoked,
        f"root v{new.version} (needs a root key of trusted v{trusted.version})",
    )
    _signer(
        signed,
        signatures,
        {k: new.keys[k] for k in new.root_keys},
        new.revoked,
        f"root v{new.version} (needs one of its own root keys)",
    )
    return new


def _keyid_of(key: str | SigningKey) -> str:
    return key.keyid if isinstance(key, SigningKey) else key


def make_root(
    version: int,
    keys: Mapping[str, bytes | str] | Iterable[SigningKey],
    root_keys: Iterable[str | SigningKey],
    bundle_keys: Iterable[str | SigningKey],
    revoked: Iterable[str | SigningKey],
    expires: dt.datetime,
    signers: list[SigningKey],
) -> dict[str, Any]:
    """A signed root envelope. ``keys`` maps key id -> raw (or base64) public key, or is a
    list of SigningKeys whose public halves are listed. The result is checked like a
    received root, so the MSP cannot publish what appliances would refuse."""
    listed: dict[str, str] = {}
    if isinstance(keys, Mapping):
        for keyid, public in keys.items():
            raw = public if isinstance(public, bytes) else decode_public_key(public)
            if raw is None:
                raise ValueError(f"key {keyid}: not a raw or base64 Ed25519 public key")
            listed[keyid] = base64.b64encode(raw).decode("ascii")
    else:
        listed = {k.keyid: k.public_b64 for k in keys}
    signed = {
        "type": ROOT_TYPE,
        "spec": SPEC,
        "version": version,
        "expires": format_time(expires),
        "keys": {k: {"ed25519": v} for k, v in sorted(listed.items())},
        "root_keys": sorted({_keyid_of(k) for k in root_keys}),
        "bundle_keys": sorted({_keyid_of(k) for k in bundle_keys}),
        "revoked": sorted({_keyid_of(k) for k in revoked}),
    }
    envelope = _sign(signed, signers)
    try:
        load_root(envelope)
    except BundleRefused as exc:
        raise ValueError(f"refusing to make an invalid root: {exc.detail}") from exc
    return envelope


def _sign(signed: dict[str, Any], signers: Iterable[SigningKey]) -> dict[str, Any]:
    data = canonical_bytes(signed)
    signatures = [{"keyid": k.keyid, "sig": k.sign(data)} for k in signers]
    if not signatures:
        raise ValueError("at least one signing key is needed")
    return {"signed": signed, "signatures": signatures}


# --- bundles ------------------------------------------------------------------------------


def make_bundle(
    site: str,
    version: int,
    policy_text: str,
    files: Mapping[str, bytes],
    locked: Iterable[str],
    expires: dt.datetime,
    signer: SigningKey,
    *,
    parsed: Mapping[str, bytes] | None = None,
    baseline: str | None = None,
    message: str = "",
    created: dt.datetime | None = None,
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A signed bundle envelope and its blobs keyed by SHA-256 (what ``publish`` writes).

    ``parsed`` maps some of ``files`` (IP feeds) to their parsed form; each is signed
    as the file entry's ``parsed`` reference. ``created`` defaults to now: it is
    informational only (no check depends on it).
    """
    if not valid_site(site):
        raise ValueError(f"site id {site!r}: use letters, digits, '.', '_' and '-' (max 64)")
    if not _is_int(version) or version < 1:
        raise ValueError(f"bundle version must be a positive integer, got {version!r}")
    bad = [p for p in files if not safe_relative_path(p)]
    if bad:
        raise ValueError(f"file paths must be relative and stay inside the policy dir: {bad}")
    parsed = parsed or {}
    if stray := sorted(set(parsed) - set(files)):
        raise ValueError(f"parsed forms of files the bundle does not carry: {stray}")
    locked_sections = sorted(set(locked))
    if bad := [s for s in locked_sections if not SECTION_PATTERN.fullmatch(s)]:
        raise ValueError(f"locked sections must be top-level policy section names: {bad}")
    policy_bytes = policy_text.encode("utf-8")
    blobs = {sha256_hex(policy_bytes): policy_bytes}
    entries: dict[str, dict[str, Any]] = {}
    for path, data in sorted(files.items()):
        digest = sha256_hex(data)
        blobs[digest] = data
        entries[path] = {"sha256": digest, "length": len(data)}
        if path in parsed:
            form = parsed[path]
            blobs[sha256_hex(form)] = form
            entries[path]["parsed"] = {"sha256": sha256_hex(form), "length": len(form)}
    signed = {
        "type": BUNDLE_TYPE,
        "spec": SPEC,
        "site": site,
        "version": version,
        "created": format_time(created or dt.datetime.now(dt.UTC)),
        "expires": format_time(expires),
        "policy": {"sha256": sha256_hex(policy_bytes), "length": len(policy_bytes)},
        "files": entries,
        "locked": locked_sections,
        "baseline": baseline,
        "message": message,
    }
    return _sign(signed, [signer]), blobs


def _blob_ref(value: object, kind: str, name: str) -> tuple[str, int]:
    if (
        not isinstance(value, dict)
        or set(value) != {"sha256", "length"}
        or not is_sha256_hex(value["sha256"])
        or not _is_int(value["length"])
        or value["length"] < 0
    ):
        raise _malformed(f"{kind}: {name} must be {{'sha256': 64 hex, 'length': int >= 0}}")
    return value["sha256"], value["length"]


def verify_bundle(
    root: Root,
    envelope: dict[str, Any],
    *,
    site: str,
    last_version: int | None,
    now: dt.datetime,
) -> BundleMeta:
    """Check a bundle envelope against the trusted root; the bundle's content is only read
    once its signature is known good. Raises BundleRefused with the first failed check."""
    signed, signatures = _envelope(envelope, "bundle")
    _header(signed, "bundle", BUNDLE_TYPE, _BUNDLE_FIELDS)
    kind = f"bundle v{signed['version']}"
    if root.expires <= now:
        raise BundleRefused(
            "expired",
            f"the trusted root v{root.version} expired at {format_time(root.expires)}; "
            "the MSP must publish a newer root",
        )
    allowed = {k: root.keys[k] for k in root.bundle_keys - root.revoked}
    signer = _signer(signed, signatures, allowed, root.revoked, kind)
    if signed["site"] != site:
        raise BundleRefused(
            "wrong-site", f"{kind} is for site {signed['site']!r}, this appliance is {site!r}"
        )
    created = _time(signed["created"], kind, "created")
    expires = _time(signed["expires"], kind, "expires")
    policy = _blob_ref(signed["policy"], kind, "policy")
    files_field = signed["files"]
    if not isinstance(files_field, dict):
        raise _malformed(f"{kind}: files must be an object path -> {{sha256, length}}")
    files: dict[str, tuple[str, int]] = {}
    parsed: dict[str, tuple[str, int]] = {}
    for path, ref in files_field.items():
        if not safe_relative_path(path):
            raise _malformed(f"{kind}: file path {path!r} is not a plain relative path")
        if isinstance(ref, dict) and "parsed" in ref:
            ref = dict(ref)
            parsed[path] = _blob_ref(ref.pop("parsed"), kind, f"files[{path!r}].parsed")
        files[path] = _blob_ref(ref, kind, f"files[{path!r}]")
    locked = signed["locked"]
    if not isinstance(locked, list) or not all(
        isinstance(s, str) and SECTION_PATTERN.fullmatch(s) for s in locked
    ):
        raise _malformed(f"{kind}: locked must be a list of top-level section names")
    if signed["baseline"] is not None and not isinstance(signed["baseline"], str):
        raise _malformed(f"{kind}: baseline must be a string or null")
    if not isinstance(signed["message"], str):
        raise _malformed(f"{kind}: message must be a string")
    if last_version is not None and signed["version"] <= last_version:
        raise BundleRefused(
            "rollback",
            f"{kind} is not newer than the applied v{last_version} (replayed or re-signed old)",
        )
    if expires <= now:
        raise BundleRefused(
            "expired", f"{kind} expired at {format_time(expires)}; the MSP must re-sign it"
        )
    return BundleMeta(
        site=site,
        version=signed["version"],
        created=created,
        expires=expires,
        policy_sha256=policy[0],
        policy_length=policy[1],
        files=files,
        locked=tuple(locked),
        baseline=signed["baseline"],
        message=signed["message"],
        keyid=signer,
        parsed=parsed,
    )


def check_blob(expected_sha256: str, expected_length: int, data: bytes, name: str) -> None:
    """Refuse a fetched file whose length or SHA-256 differs from what the bundle signed."""
    if len(data) != expected_length:
        raise BundleRefused(
            "hash-mismatch", f"{name}: {len(data)} bytes, the bundle says {expected_length}"
        )
    if (actual := sha256_hex(data)) != expected_sha256:
        raise BundleRefused(
            "hash-mismatch",
            f"{name}: SHA-256 {actual[:16]}... differs from the signed {expected_sha256[:16]}...",
        )

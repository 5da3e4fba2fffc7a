"""Keys: ids derived from the public key, PEM files of mode 0600, signatures that fail."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from appliance.sync.canonical import canonical_bytes, format_time, parse_time
from appliance.sync.errors import SyncError
from appliance.sync.keys import SigningKey, decode_public_key, generate_key, signature_valid


def test_keyid_is_sha256_of_the_raw_public_key() -> None:
    key = generate_key()
    raw = decode_public_key(key.public_b64)
    assert raw is not None and len(raw) == 32
    assert key.keyid == hashlib.sha256(raw).hexdigest()
    assert generate_key().keyid != key.keyid


def test_save_and_load_round_trip_with_owner_only_mode(tmp_path: Path) -> None:
    key = generate_key()
    path = tmp_path / "keys" / "bundle.pem"
    key.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    loaded = SigningKey.load(path)
    assert loaded.keyid == key.keyid
    assert signature_valid(key.public_raw, b"data", loaded.sign(b"data"))


def test_load_refuses_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(SyncError, match="cannot read signing key"):
        SigningKey.load(tmp_path / "none.pem")
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(SyncError, match="not an unencrypted PKCS8 PEM"):
        SigningKey.load(tmp_path / "junk.pem")


def test_signature_fails_for_other_data_key_or_garbage() -> None:
    key, other = generate_key(), generate_key()
    sig = key.sign(b"payload")
    assert signature_valid(key.public_raw, b"payload", sig)
    assert not signature_valid(key.public_raw, b"payload!", sig)
    assert not signature_valid(other.public_raw, b"payload", sig)
    assert not signature_valid(key.public_raw, b"payload", "%%% not base64")
    assert not signature_valid(key.public_raw, b"payload", sig[:-8] + "AAAAAAA=")
    assert not signature_valid(key.public_raw, b"payload", None)


def test_repr_shows_no_key_material() -> None:
    key = generate_key()
    assert key.public_b64 not in repr(key) and key.keyid[:16] in repr(key)


def test_canonical_bytes_are_sorted_compact_utf8() -> None:
    assert canonical_bytes({"b": 1, "a": ["é", {"d": 2, "c": 3}]}) == (
        '{"a":["é",{"c":3,"d":2}],"b":1}'.encode()
    )


def test_times_have_one_spelling() -> None:
    at = parse_time("2027-11-27T00:00:00Z")
    assert format_time(at) == "2027-11-27T00:00:00Z"
    for bad in ("2027-11-27T00:00:00+00:00", "2027-11-27", 5, "2027-13-01T00:00:00Z"):
        with pytest.raises(ValueError):
            parse_time(bad)

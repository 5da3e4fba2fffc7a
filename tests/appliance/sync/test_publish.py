"""The static layout: content-addressed blobs, one bundle per site, roots never rewritten."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest

from appliance.sync.canonical import sha256_hex
from appliance.sync.errors import SyncError
from appliance.sync.keys import generate_key
from appliance.sync.metadata import make_bundle, make_root
from appliance.sync.publish import (
    latest_root,
    publish,
    publish_root,
    published_bundle,
)

NOW = dt.datetime(2026, 11, 27, tzinfo=dt.UTC)


def test_bundle_and_blobs_land_in_the_static_layout(tmp_path: Path) -> None:
    key = generate_key()
    env, blobs = make_bundle(
        "acme-hq", 3, "version: 1\n", {"lists/a.txt": b"a.example\n"}, [], NOW, key, created=NOW
    )
    publish(tmp_path, env, blobs)
    assert published_bundle(tmp_path, "acme-hq") == env
    bundle = tmp_path / "sites" / "acme-hq" / "bundle.json"
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o644
    for digest, data in blobs.items():
        assert (tmp_path / "blobs" / digest).read_bytes() == data
    assert (tmp_path / "blobs" / sha256_hex(b"a.example\n")).exists()
    assert published_bundle(tmp_path, "other-site") is None


def test_blob_whose_content_does_not_match_its_name_is_refused(tmp_path: Path) -> None:
    env, _ = make_bundle("acme-hq", 1, "x: 1\n", {}, [], NOW, generate_key(), created=NOW)
    with pytest.raises(SyncError, match="does not match its hash"):
        publish(tmp_path, env, {"0" * 64: b"something else"})
    assert not (tmp_path / "sites").exists()  # the bundle is written only after its blobs


def test_corrupt_blob_on_disk_is_rewritten(tmp_path: Path) -> None:
    env, blobs = make_bundle("acme-hq", 1, "x: 1\n", {}, [], NOW, generate_key(), created=NOW)
    digest = next(iter(blobs))
    (tmp_path / "blobs").mkdir()
    (tmp_path / "blobs" / digest).write_bytes(b"truncat")
    publish(tmp_path, env, blobs)
    assert (tmp_path / "blobs" / digest).read_bytes() == blobs[digest]


def test_roots_are_published_once_and_the_latest_is_found_by_number(tmp_path: Path) -> None:
    key = generate_key()
    assert latest_root(tmp_path) is None
    roots = {v: make_root(v, [key], [key], [key], [], NOW, [key]) for v in (1, 2, 9, 10)}
    for env in roots.values():
        publish_root(tmp_path, env)
    publish_root(tmp_path, roots[2])  # the same content again: nothing to do
    assert latest_root(tmp_path) == roots[10]
    assert json.loads((tmp_path / "root" / "9.json").read_text()) == roots[9]
    other = make_root(2, [key], [key], [key], [], NOW + dt.timedelta(days=1), [key])
    with pytest.raises(SyncError, match="never rewritten"):
        publish_root(tmp_path, other)


def test_unreadable_published_metadata_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "sites" / "acme-hq").mkdir(parents=True)
    (tmp_path / "sites" / "acme-hq" / "bundle.json").write_text("{not json")
    with pytest.raises(SyncError, match="cannot read published metadata"):
        published_bundle(tmp_path, "acme-hq")

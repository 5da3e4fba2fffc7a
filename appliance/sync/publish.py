"""Write signed metadata and blobs into the static layout any file server can host.

    <base>/root/<N>.json             every root version, never rewritten
    <base>/sites/<site>/bundle.json  the site's current bundle envelope
    <base>/blobs/<sha256>            content-addressed files

Every file is written atomically, and blobs go first: an agent that fetches ``bundle.json``
at any moment finds every blob it names already in place. Published files are world
readable (0644): they are signed, not secret, and the web server must read them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from appliance.atomic import write_atomic
from appliance.sync.canonical import sha256_hex
from appliance.sync.errors import SyncError
from appliance.sync.metadata import safe_relative_path, valid_site

PUBLIC = 0o644


def _json(envelope: dict[str, Any]) -> str:
    return json.dumps(envelope, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def bundle_path(base: Path, site: str) -> Path:
    return Path(base) / "sites" / site / "bundle.json"


def root_path(base: Path, version: int) -> Path:
    return Path(base) / "root" / f"{version}.json"


def publish(base: Path, envelope: dict[str, Any], blobs: dict[str, bytes]) -> None:
    """Publish a bundle envelope and its blobs (blobs already present are kept)."""
    site = envelope["signed"]["site"]
    if not valid_site(site):
        raise SyncError(f"bundle names an unusable site id {site!r}")
    for digest, data in blobs.items():
        if sha256_hex(data) != digest or not safe_relative_path(digest):
            raise SyncError(f"blob {digest[:16]}...: content does not match its hash")
        target = Path(base) / "blobs" / digest
        if not target.is_file() or sha256_hex(target.read_bytes()) != digest:
            write_atomic(target, data, mode=PUBLIC)
    write_atomic(bundle_path(base, site), _json(envelope), mode=PUBLIC)


def publish_root(base: Path, envelope: dict[str, Any]) -> None:
    """Publish a root version; an existing different file of that version is refused,
    because appliances that already trust it would never see the replacement."""
    version = envelope["signed"]["version"]
    target = root_path(base, version)
    text = _json(envelope)
    if target.exists():
        if target.read_text(encoding="utf-8") == text:
            return
        raise SyncError(f"{target} already exists with other content; roots are never rewritten")
    write_atomic(target, text, mode=PUBLIC)


def published_bundle(base: Path, site: str) -> dict[str, Any] | None:
    """The site's current envelope, or None if nothing was published for it yet."""
    return _read(bundle_path(base, site))


def latest_root(base: Path) -> dict[str, Any] | None:
    """The highest published root version, or None if ``msp init`` has not run."""
    versions = sorted(int(p.stem) for p in (Path(base) / "root").glob("*.json") if p.stem.isdigit())
    return _read(root_path(base, versions[-1])) if versions else None


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise SyncError(f"{path}: cannot read published metadata: {exc}") from exc
    if not isinstance(data, dict):
        raise SyncError(f"{path}: not a JSON object")
    return data

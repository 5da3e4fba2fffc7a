"""What the sync agent keeps on disk under ``<state>/sync/`` and tells the local UI.

Split from the agent so the CLI (``sync enrol|status``) and the web UI's sync page read and
write enrolment and state without the pull/apply machinery: ``Enrolment`` (who this box is
to its MSP), ``SyncState`` (what the agent remembers between cycles), ``SyncPaths`` (every
file), ``enrol`` (trust the MSP's root v1 and save both) and ``UiSettingsDb`` (the locked
sections the web UI shows read-only).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from appliance.atomic import write_atomic
from appliance.sync.errors import SyncError
from appliance.sync.metadata import Root, load_enrolment_root


class LockedSectionsSink(Protocol):
    def set_locked(self, sections: list[str], owner: str) -> None:
        """Tell the local UI which policy sections only the MSP may change, and who that is."""


class UiSettingsDb:
    """Writes the web UI's ``msp_locked_sections`` setting into its SQLite store directly
    (the appliance package does not import the UI); same table and key as webui/msp_lock."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def set_locked(self, sections: list[str], owner: str) -> None:
        import sqlite3

        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        try:
            db.execute(
                "CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            for key, value in (("msp_locked_sections", ",".join(sections)),
                               ("msp_locked_by", owner)):  # fmt: skip
                db.execute(
                    "INSERT INTO settings (key, value) VALUES (?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )
        finally:
            db.close()


@dataclass
class Enrolment:
    server: str  # base URL of the static layout
    checkin: str  # base URL of the check-in collector
    site: str
    credential: str
    appliance_id: str
    ca: str | None = None

    @classmethod
    def load(cls, path: Path) -> Enrolment:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**data)
        except FileNotFoundError as exc:
            raise SyncError(
                f"{path}: this appliance is not enrolled; run `edgeguard sync enrol`"
            ) from exc
        except (OSError, ValueError, TypeError) as exc:
            raise SyncError(f"{path}: unreadable enrolment ({exc}); enrol again") from exc

    def save(self, path: Path) -> None:
        write_atomic(path, json.dumps(asdict(self), indent=2) + "\n", mode=0o600)


@dataclass
class SyncState:
    """What the agent remembers between cycles (``<state>/sync/state.json``)."""

    etags: dict[str, str] = field(default_factory=dict)
    bundle_version: int | None = None  # the last confirmed bundle
    envelope_sha256: str | None = None
    pending: dict[str, Any] | None = None  # applied, waiting for check-in + confirm
    last_sync: dict[str, Any] = field(
        default_factory=lambda: {"at": None, "result": "never", "reason": None, "error": None}
    )
    last_contact: str | None = None  # the last time the MSP answered
    last_apply: dict[str, Any] | None = None
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    failures: int = 0  # consecutive cycles that could not reach the MSP
    rolled_back: dict[str, int] = field(default_factory=dict)  # envelope sha256 -> rollbacks

    @classmethod
    def load(cls, path: Path) -> SyncState:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError, TypeError) as exc:
            raise SyncError(
                f"{path}: unreadable sync state ({exc}); remove it to start over"
            ) from exc

    def save(self, path: Path) -> None:
        write_atomic(path, json.dumps(asdict(self), indent=2, sort_keys=True) + "\n", mode=0o600)


class SyncPaths:
    """Every file the agent keeps under ``<state>/sync/``."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.dir = self.state_dir / "sync"
        self.enrolment = self.dir / "enrolment.json"
        self.root = self.dir / "root.json"
        self.state = self.dir / "state.json"
        self.base = self.dir / "base.yaml"  # the policy of the last confirmed bundle
        self.base_pending = self.dir / "base.pending.yaml"  # ... of the applied, unconfirmed one
        self.blobs = self.dir / "blobs"  # fetched blobs by SHA-256
        self.site = self.dir / "site"  # where the policy's list paths resolve
        self.staging = self.dir / "site.new"


def enrol(state_dir: Path, enrolment: Enrolment, root_envelope: dict[str, Any]) -> Root:
    """Trust ``root_envelope`` (root v1, self-signed: the trust anchor) and save both."""
    root = load_enrolment_root(root_envelope)
    paths = SyncPaths(state_dir)
    paths.dir.mkdir(parents=True, exist_ok=True)
    paths.dir.chmod(0o700)
    write_atomic(paths.root, json.dumps(root_envelope, indent=2) + "\n", mode=0o600)
    enrolment.save(paths.enrolment)
    SyncState().save(paths.state)
    return root

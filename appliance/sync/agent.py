"""The appliance's sync agent: pull, verify, merge, apply with commit-confirm, check in.

One cycle (``SyncAgent.run_once``) walks the MSP's static layout with plain GETs, so it works
behind NAT with no inbound port and from any static host or CDN. Nothing the MSP sends is
used before its signature, version, expiry and hashes are checked (the signing library does
the checks), and the merged policy goes through the same plan/apply path as a local change.

Why apply with commit-confirm and confirm only after a successful check-in: if the new
policy cuts the appliance off from its MSP, nobody could fix it remotely; so the agent
confirms only once it has reached the MSP again, and otherwise the engine's deadline rolls
the apply back. The sync state (bundle version, ETag, merge base) moves forward only on
that confirm, so a rolled-back bundle is fetched and tried again later.

Every refusal or failure is recorded in ``<state>/sync/state.json`` and the store's event
log, and reported at the next check-in; the live policy stays enforced throughout.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.atomic import write_atomic
from appliance.engine import Clock, Engine
from appliance.errors import ApplyError
from appliance.sync.canonical import format_time
from appliance.sync.checkin import HealthProbe, build_checkin, send_checkin
from appliance.sync.errors import BundleRefused, SyncError
from appliance.sync.merge import merge_policy
from appliance.sync.metadata import BundleMeta, Root, check_blob, load_root, verify_bundle
from appliance.sync.metadata import verify_root_update as verify_root_step
from appliance.sync.state import (
    Enrolment,
    LockedSectionsSink,
    SyncPaths,
    SyncState,
    UiSettingsDb,
)
from appliance.sync.transport import BLOB_LIMIT, ENVELOPE_LIMIT, Transport, TransportError
from policies.errors import PolicyError
from policies.feed_blob import decode_feed
from policies.feeds import FeedData, load_feed

CONFIRM_WITHIN = 900.0  # seconds the MSP has to be reached again after an apply
SOFTWARE = "edgeguard 0.1.0"
AUTHOR = "msp-sync"
INTERVAL = 300.0  # seconds between cycles
MAX_BACKOFF = 3600.0  # seconds: the longest wait after repeated failures
JITTER = 0.2  # +-20 %: a fleet restarted together does not poll in lockstep
MAX_ROOT_STEPS = 50  # root versions accepted in one cycle (a sane bound, not a limit in practice)
MAX_ROLLBACKS = 3  # rollbacks of one bundle after which it is not applied again
ROLLED_BACK_KEPT = 8  # bundles whose rollbacks are remembered


def next_delay(failures: int, unit_random: float, *, interval: float = INTERVAL) -> float:
    """Seconds to the next cycle: the interval, doubled per consecutive failure up to an
    hour, with +-20 % jitter (``unit_random`` in [0, 1) comes from the caller's RNG)."""
    base = min(MAX_BACKOFF, interval * 2.0 ** min(failures, 16))
    return base * (1 - JITTER + 2 * JITTER * unit_random)


@dataclass(frozen=True)
class SyncOutcome:
    result: str  # applied | unchanged | refused | failed
    reason: str | None = None
    error: str | None = None
    bundle_version: int | None = None


class SyncAgent:
    def __init__(
        self,
        state_dir: Path,
        engine: Engine,
        transport: Transport,
        health: HealthProbe,
        *,
        clock: Clock | None = None,
        locks: LockedSectionsSink | None = None,
        confirm_within: float = CONFIRM_WITHIN,
    ) -> None:
        self.paths = SyncPaths(state_dir)
        self.engine = engine
        self.transport = transport
        self.health = health
        self.clock = clock or engine.clock
        self.locks = locks or UiSettingsDb(state_dir / "ui" / "ui.db")
        self.confirm_within = confirm_within
        self.enrolment = Enrolment.load(self.paths.enrolment)

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock.time(), dt.UTC)

    def load_state(self) -> SyncState:
        return SyncState.load(self.paths.state)

    # -- one cycle ---------------------------------------------------------------------------
    def run_once(self) -> SyncOutcome:
        state = self.load_state()
        rolled_back = self._settle_pending(state)
        try:
            if rolled_back:  # report it first; the bundle is tried again next cycle
                outcome = SyncOutcome("failed", "rolled-back", rolled_back, state.bundle_version)
            else:
                outcome = self._pull(state)
        except BundleRefused as exc:
            state.last_contact = format_time(self.now())
            outcome = SyncOutcome("refused", exc.reason, str(exc))
        except TransportError as exc:
            outcome = SyncOutcome("failed", "unreachable", str(exc))
        except SyncError as exc:
            outcome = SyncOutcome("failed", "sync-error", str(exc))
        self._record(state, outcome)
        reached = self._checkin(state)
        if outcome.reason != "unreachable" and reached:
            state.failures = 0
            state.last_contact = format_time(self.now())
            self._commit(state)
        else:
            state.failures += 1
        state.save(self.paths.state)
        return outcome

    def _record(self, state: SyncState, outcome: SyncOutcome) -> None:
        state.last_sync = {
            "at": format_time(self.now()),
            "result": outcome.result,
            "reason": outcome.reason,
            "error": outcome.error,
        }
        if outcome.result in ("refused", "failed"):
            self.engine.store.event(f"sync-{outcome.result}", outcome.error or "")
        elif outcome.result == "applied":
            self.engine.store.event("sync-applied", f"MSP bundle v{outcome.bundle_version}")
        state.save(self.paths.state)  # recorded even if the check-in below hangs or dies

    # -- roots and bundles -------------------------------------------------------------------
    def _trusted_root(self) -> Root:
        try:
            return load_root(json.loads(self.paths.root.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise SyncError(f"{self.paths.root}: no trusted root ({exc}); enrol again") from exc

    def update_root(self) -> Root:
        """Walk root versions N+1, N+2, ... until 404; each must be vouched for by the last."""
        root = self._trusted_root()
        for _ in range(MAX_ROOT_STEPS):
            url = f"{self.enrolment.server.rstrip('/')}/root/{root.version + 1}.json"
            fetched = self.transport.get(url, limit=ENVELOPE_LIMIT)
            if fetched.status != 200:
                break
            root = verify_root_step(root, _json_object(fetched.body, url), self.now())
            write_atomic(self.paths.root, json.dumps(root.raw, indent=2) + "\n", mode=0o600)
            self.engine.store.event("sync-root", f"trusted root is now version {root.version}")
        return root

    def _pull(self, state: SyncState) -> SyncOutcome:
        root = self.update_root()
        url = f"{self.enrolment.server.rstrip('/')}/sites/{self.enrolment.site}/bundle.json"
        fetched = self.transport.get(url, limit=ENVELOPE_LIMIT, etag=state.etags.get(url))
        if fetched.status == 404:
            return SyncOutcome("unchanged", "nothing-published", None, state.bundle_version)
        if fetched.status == 304:
            return SyncOutcome("unchanged", None, None, state.bundle_version)
        digest = hashlib.sha256(fetched.body).hexdigest()
        pending = state.pending or {}
        if digest in (state.envelope_sha256, pending.get("envelope_sha256")):
            if digest == state.envelope_sha256 and fetched.etag:
                state.etags[url] = fetched.etag
            return SyncOutcome("unchanged", None, None, state.bundle_version)
        tries = state.rolled_back.get(digest, 0)
        if tries >= MAX_ROLLBACKS:
            # Applying it cut this box off from its MSP every time: stop the apply, wait,
            # roll back loop (each round trip is CONFIRM_WITHIN without the MSP).
            return SyncOutcome(
                "refused",
                "rolled-back",
                f"bundle {digest[:12]} was rolled back {tries} times: the appliance lost its "
                "MSP after each apply; it is not applied again until a new version is published",
                state.bundle_version,
            )
        meta = verify_bundle(
            root,
            _json_object(fetched.body, url),
            site=self.enrolment.site,
            last_version=state.bundle_version,
            now=self.now(),
        )
        outcome = self._apply_bundle(state, meta)
        if outcome.result == "applied":
            state.pending = {
                **(state.pending or {}),
                "envelope_sha256": digest,
                "etag": fetched.etag,
                "url": url,
            }
        return outcome

    def _blob(self, sha256: str, length: int, name: str) -> bytes:
        cached = self.paths.blobs / sha256
        if cached.is_file():
            data = cached.read_bytes()
            if len(data) == length and hashlib.sha256(data).hexdigest() == sha256:
                return data
        url = f"{self.enrolment.server.rstrip('/')}/blobs/{sha256}"
        fetched = self.transport.get(url, limit=min(BLOB_LIMIT, max(length, 1)))
        if fetched.status != 200:
            raise SyncError(f"{url}: {name} is missing on the server (HTTP {fetched.status})")
        check_blob(sha256, length, fetched.body, name)
        write_atomic(cached, fetched.body, mode=0o600)
        return fetched.body

    def _live_text(self) -> tuple[int | None, str | None]:
        live = self.engine.store.live()
        return (live.id, self.engine.store.texts(live.id)[0]) if live else (None, None)

    def _apply_bundle(self, state: SyncState, meta: BundleMeta) -> SyncOutcome:
        raw = self._blob(meta.policy_sha256, meta.policy_length, "the policy")
        files = {p: self._blob(sha, n, p) for p, (sha, n) in meta.files.items()}
        feeds = self._parsed_feeds(meta)
        try:
            remote = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BundleRefused("invalid-policy", f"bundle v{meta.version}: not UTF-8") from exc
        base = self.paths.base.read_text(encoding="utf-8") if self.paths.base.is_file() else None
        _, local = self._live_text()
        source = f"MSP bundle v{meta.version}"
        try:
            merged = merge_policy(base, local, remote, meta.locked)
            staging = self._materialise(files)

            def read_feed(path: Path) -> FeedData:
                # The MSP's parse of a bundle feed; anything else (a local admin's feed
                # in an unlocked section) is parsed here as always.
                relative = _relative_to(path, staging)
                found = feeds.get(relative) if relative is not None else None
                return found if found is not None else load_feed(path)

            plan = self.engine.plan_text(merged.text, source, staging, read_feed=read_feed)
        except PolicyError as exc:
            raise BundleRefused("invalid-policy", f"{source}: {exc}") from exc
        if plan.unsafe:
            raise BundleRefused(
                "invalid-policy", f"{source}: the merged policy is unsafe: {'; '.join(plan.unsafe)}"
            )
        try:
            version = self.engine.apply(
                plan,
                author=AUTHOR,
                message=f"MSP bundle v{meta.version}: {meta.message}",
                confirm_within=self.confirm_within,
            )
        except ApplyError as exc:
            state.last_apply = {"ok": False, "error": str(exc), "at": format_time(self.now())}
            return SyncOutcome("failed", "apply-failed", str(exc), meta.version)
        if self.paths.site.exists():
            shutil.rmtree(self.paths.site)
        staging.rename(self.paths.site)
        write_atomic(self.paths.base_pending, remote, mode=0o600)
        host = urllib.parse.urlsplit(self.enrolment.server).hostname or self.enrolment.server
        self.locks.set_locked(
            list(meta.locked), f"your MSP ({host}), bundle v{meta.version} for {meta.site}"
        )
        state.conflicts = [c.as_json() for c in merged.conflicts]
        state.last_apply = {"ok": True, "error": None, "at": format_time(self.now())}
        state.pending = {"bundle_version": meta.version, "store_version": version.id}
        return SyncOutcome("applied", None, None, meta.version)

    def _parsed_feeds(self, meta: BundleMeta) -> dict[str, FeedData]:
        """The bundle's pre-parsed IP feeds by relative path, checked like every blob.

        A parsed form that does not decode is refused like an invalid policy: it is
        signed, so it is the MSP's bug, and applying the text instead would enforce
        something the MSP did not check.
        """
        feeds: dict[str, FeedData] = {}
        for path, (sha, length) in meta.parsed.items():
            blob = self._blob(sha, length, f"{path} (parsed)")
            try:
                feeds[path] = decode_feed(blob)
            except ValueError as exc:
                raise BundleRefused(
                    "invalid-policy", f"bundle v{meta.version}: {path}: {exc}"
                ) from exc
        return feeds

    def _materialise(self, files: dict[str, bytes]) -> Path:
        """The bundle's files under their policy paths, in a fresh staging directory."""
        staging = self.paths.staging
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        for relative, data in files.items():
            target = staging / relative  # paths were checked to be plain relative paths
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return staging

    # -- commit-confirm ----------------------------------------------------------------------
    def _settle_pending(self, state: SyncState) -> str | None:
        """Whether the last apply was rolled back (deadline passed): then why, else None."""
        self.engine.expire()
        if state.pending is None:
            return None
        version = self.engine.store.version(state.pending["store_version"])
        if version.status in ("unconfirmed", "good"):
            return None
        error = (
            f"MSP bundle v{state.pending['bundle_version']} (version {version.id}) was "
            f"{version.status}: the MSP could not be reached to confirm it in time"
        )
        state.last_apply = {"ok": False, "error": error, "at": format_time(self.now())}
        digest = state.pending.get("envelope_sha256")
        if digest:
            state.rolled_back[digest] = state.rolled_back.get(digest, 0) + 1
            for old in list(state.rolled_back)[:-ROLLED_BACK_KEPT]:
                del state.rolled_back[old]
        state.pending = None
        self.paths.base_pending.unlink(missing_ok=True)
        return error

    def _commit(self, state: SyncState) -> None:
        """The MSP heard from us after the apply: keep it and move the sync state forward."""
        pending = state.pending
        if pending is None or "envelope_sha256" not in pending:
            return
        waiting = self.engine.store.pending_confirm()
        if waiting is not None and waiting.version == pending["store_version"]:
            try:
                self.engine.confirm()
            except ApplyError as exc:  # too late: the engine rolled it back
                state.last_apply = {"ok": False, "error": str(exc), "at": format_time(self.now())}
                state.pending = None
                return
        state.bundle_version = pending["bundle_version"]
        state.envelope_sha256 = pending["envelope_sha256"]
        if pending.get("etag"):
            state.etags[pending["url"]] = pending["etag"]
        if self.paths.base_pending.exists():
            self.paths.base_pending.replace(self.paths.base)
        state.pending = None

    # -- check-in ----------------------------------------------------------------------------
    def _checkin(self, state: SyncState) -> bool:
        live_id, live_text = self._live_text()
        payload = build_checkin(
            site=self.enrolment.site,
            appliance_id=self.enrolment.appliance_id,
            software=SOFTWARE,
            bundle_version=(state.pending or {}).get("bundle_version", state.bundle_version),
            live_policy_text=live_text,
            live_version=live_id,
            last_apply=state.last_apply,
            last_sync={k: state.last_sync.get(k) for k in ("at", "result", "reason")},
            conflicts=[c["section"] for c in state.conflicts],
            health=self.health.read(self.paths.state_dir),
            state_dir=self.paths.state_dir,
            now=self.now(),
        )
        try:
            send_checkin(self.transport, self.enrolment.checkin, payload, self.enrolment.credential)
        except TransportError as exc:
            self.engine.store.event("sync-checkin-failed", str(exc))
            return False
        return True


def _relative_to(path: Path, base: Path) -> str | None:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return None


def _json_object(body: bytes, url: str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise BundleRefused("malformed", f"{url}: not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise BundleRefused("malformed", f"{url}: not a JSON object")
    return data

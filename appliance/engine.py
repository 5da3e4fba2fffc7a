"""Plan, apply, confirm, roll back: the apply engine (octodns' plan/apply + commit-confirm).

The engine never changes the ruleset without a record: each apply is recorded before the
nft transaction and marked live after it, in the store's own transactions, so after a
crash the store says either "pending" (never known live: the boot path re-applies the last
good version) or the truth. Side effects come in through two small interfaces, the nft
backend and the clock, so this logic is tested without root and for real in namespaces.
"""

from __future__ import annotations

import datetime as dt
import difflib
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from appliance.errors import ApplyError
from appliance.nft import NftBackend
from appliance.store import ConfigStore, PendingConfirm, Version
from policies.compiler import Ruleset, Target, compile_policy
from policies.compiler.safe import safe_ruleset
from policies.evaluate import access_to_box, allows_everything
from policies.feeds import load_feed
from policies.loader import LoadedPolicy, parse_policy
from policies.objects import FeedReader

TOO_MUCH_CHANGE = 0.5  # refuse (without --force) a plan that removes more than half the rules
TOO_MUCH_MIN_RULES = 20


class Clock(Protocol):
    def time(self) -> float: ...


class SystemClock:
    def time(self) -> float:
        return time.time()


@dataclass(frozen=True)
class AdminAccess:
    """The connection the admin is using right now (from SSH_CLIENT or the web UI)."""

    address: str
    port: int
    proto: str = "tcp"

    @classmethod
    def from_ssh_env(cls) -> AdminAccess | None:
        parts = os.environ.get("SSH_CLIENT", "").split()
        if len(parts) == 3 and parts[2].isdigit():
            return cls(parts[0], int(parts[2]))
        return None


@dataclass
class Plan:
    policy_text: str
    policy_file: str
    loaded: LoadedPolicy
    ruleset: Ruleset
    current: Version | None
    diff: str
    unsafe: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        head = (
            f"live: version {self.current.id} ({self.current.status}, {self.current.created})"
            if self.current
            else "live: no EdgeGuard ruleset recorded"
        )
        out = [head]
        out += [f"note: {n}" for n in self.notes]
        out.append(self.diff if self.diff else "no changes to table inet edgeguard")
        out += [f"UNSAFE: {u}" for u in self.unsafe]
        return "\n".join(out)


def _rule_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("\t\t") and not ln.startswith("\t\t\t")]


class Engine:
    def __init__(self, store: ConfigStore, nft: NftBackend, clock: Clock | None = None) -> None:
        self.store = store
        self.nft = nft
        self.clock = clock or SystemClock()
        self._target: Target | None = None

    @contextmanager
    def locked(self) -> Iterator[None]:
        """One mutating operation at a time across processes (CLI, controller, watchdog)."""
        with open(self.store.root / "lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def target(self) -> Target:
        """What this kernel can do, probed once per engine."""
        if self._target is None:
            self._target = Target(flowtable=self.nft.supports_flowtable())
        return self._target

    # -- plan -------------------------------------------------------------------------------
    def plan(self, policy_path: Path, *, admin: AdminAccess | None = None) -> Plan:
        """Validate and compile ``policy_path`` and compare it with what is live."""
        text = Path(policy_path).read_text(encoding="utf-8")
        return self.plan_text(text, str(policy_path), Path(policy_path).parent, admin=admin)

    def plan_text(
        self,
        text: str,
        source: str,
        base_dir: Path,
        *,
        admin: AdminAccess | None = None,
        read_feed: FeedReader = load_feed,
    ) -> Plan:
        """``plan`` for a policy that is not a file (the web UI's editor): ``source`` names it
        in messages, relative list and feed files resolve against ``base_dir``. The sync
        agent passes ``read_feed`` to use the MSP's already-parsed feeds."""
        policy_path = source
        loaded = parse_policy(text, source, base_dir=base_dir, read_feed=read_feed)
        now = dt.datetime.fromtimestamp(self.clock.time(), dt.UTC)
        ruleset = compile_policy(loaded.policy, at=now, target=self.target())
        current = self.store.live()
        old = self.store.texts(current.id)[1] if current else ""
        diff = "".join(
            difflib.unified_diff(
                old.splitlines(keepends=True),
                ruleset.text.splitlines(keepends=True),
                f"live (version {current.id})" if current else "live (none)",
                str(policy_path),
            )
        )
        plan = Plan(text, str(policy_path), loaded, ruleset, current, diff)
        self._check_live(plan)
        self._check_safety(plan, old, admin)
        return plan

    def _check_live(self, plan: Plan) -> None:
        loaded = self.nft.exists()
        if plan.current is None and loaded:
            plan.notes.append("a table inet edgeguard is loaded that EdgeGuard has no record of")
        elif plan.current is not None and not loaded:
            plan.notes.append(
                f"version {plan.current.id} should be live but no table is loaded "
                "(rebooted or flushed by hand?)"
            )

    def _check_safety(self, plan: Plan, old_text: str, admin: AdminAccess | None) -> None:
        policy = plan.loaded.policy
        if admin is not None:
            verdict = access_to_box(policy, admin.address, admin.proto, admin.port)
            if not verdict.allowed:
                plan.unsafe.append(
                    f"it cuts your own management access ({admin.address} -> "
                    f"{admin.proto}/{admin.port}): {verdict.reason}"
                )
        if allows_everything(policy):
            plan.unsafe.append("it accepts all traffic: no rule or default drops anything")
        old_rules, new_rules = set(_rule_lines(old_text)), set(_rule_lines(plan.ruleset.text))
        if len(old_rules) >= TOO_MUCH_MIN_RULES:
            removed = len(old_rules - new_rules)
            if removed > TOO_MUCH_CHANGE * len(old_rules):
                plan.unsafe.append(f"it removes {removed} of {len(old_rules)} firewall rules")

    # -- apply ------------------------------------------------------------------------------
    def apply(
        self,
        plan: Plan,
        *,
        author: str,
        message: str,
        confirm_within: float | None = None,
        force: bool = False,
    ) -> Version:
        if plan.unsafe and not force:
            raise ApplyError(
                "refusing an unsafe plan (use --force if you mean it):\n"
                + "\n".join(f"  - {u}" for u in plan.unsafe)
            )
        with self.locked():
            previous = self.store.live()
            vid = self.store.record(
                plan.policy_text, plan.ruleset.text, author=author, message=message
            )
            try:
                self.nft.replace(plan.ruleset.text)
            except ApplyError as exc:
                self.store.set_status(vid, "failed", error=str(exc))
                raise
            pending = None
            if confirm_within is not None:
                deadline = self.clock.time() + confirm_within
                pending = PendingConfirm(vid, deadline, previous.id if previous else None)
            self.store.make_live(vid, confirmed=pending is None, pending=pending)
            return self.store.version(vid)

    def confirm(self) -> Version:
        with self.locked():
            pending = self.store.pending_confirm()
            if pending is None:
                raise ApplyError("nothing to confirm: no apply is waiting for confirmation")
            if self.clock.time() > pending.deadline:
                self._revert(pending.version, pending.fallback, "confirm came after the deadline")
                raise ApplyError(
                    f"too late: the deadline passed; version {pending.version} was rolled back"
                )
            self.store.confirm(pending.version)
            return self.store.version(pending.version)

    def expire(self) -> bool:
        """Roll back an unconfirmed apply whose deadline has passed; True if it did."""
        with self.locked():
            pending = self.store.pending_confirm()
            if pending is None or self.clock.time() < pending.deadline:
                return False
            self._revert(pending.version, pending.fallback, "not confirmed in time")
            return True

    def rollback(self, version: int | None = None) -> Version | None:
        """Return to ``version`` (default: the version before the live one)."""
        with self.locked():
            live = self.store.live()
            if version is None:
                pending = self.store.pending_confirm()
                if pending is not None:
                    target = pending.fallback
                else:
                    older = [v for v in self.store.history(1000) if v.status == "superseded"]
                    if not older:
                        raise ApplyError(
                            "no earlier version to roll back to (see `edgeguard history`)"
                        )
                    target = older[0].id
            else:
                self.store.version(version)  # raises when unknown
                target = version
            if live is None:
                if target is None:
                    raise ApplyError("nothing is live and no version was named")
                self.nft.replace(self.store.texts(target)[1])
                self.store.make_live(target, confirmed=True, pending=None)
            else:
                self._revert(live.id, target, "rollback requested")
            return self.store.version(target) if target is not None else None

    def _revert(self, from_version: int, to_version: int | None, why: str) -> None:
        if to_version is None:
            self.nft.remove()
        else:
            self.nft.replace(self.store.texts(to_version)[1])
        self.store.revert(from_version, to_version)
        target = f"version {to_version}" if to_version is not None else "no EdgeGuard table"
        self.store.event("rollback", f"version {from_version} -> {target}: {why}")

    # -- boot -------------------------------------------------------------------------------
    def boot(self, first_policy: Path | None = None) -> str:
        """Enforce the last known good policy before any service answers.

        Returns a line saying what happened. If nothing can be applied, a minimal safe
        ruleset (management access, everything else dropped) is loaded and the error kept.
        """
        with self.locked():
            for vid in self.store.recover_interrupted():
                self.store.event("recovered", f"version {vid} was interrupted before it went live")
            pending = self.store.pending_confirm()
            live_table = self.nft.exists()
            if pending is not None and live_table:
                if self.clock.time() < pending.deadline:
                    left = pending.deadline - self.clock.time()
                    return f"version {pending.version} awaits confirmation ({left:.0f} s left)"
                self._revert(pending.version, pending.fallback, "not confirmed in time")
                return f"version {pending.version} was not confirmed in time and was rolled back"
            if pending is not None:  # restarted without our table: the unconfirmed one is gone
                self._revert(pending.version, pending.fallback, "restarted before confirmation")
            good = self.store.last_good()
            if good is not None:
                try:
                    self.nft.replace(self.store.texts(good.id)[1])
                except ApplyError as exc:
                    return self._safe_mode(f"last good version {good.id} failed to apply: {exc}")
                if self.store.restore_policy_file(good.id):
                    self.store.event("recovered", f"policy.yaml rewritten from version {good.id}")
                return f"applied last known good version {good.id}"
        if first_policy is None:
            return self._safe_mode("no policy has ever been applied and none was given")
        try:
            plan = self.plan(first_policy)
            version = self.apply(
                plan, author="boot", message=f"first boot with {first_policy}", force=True
            )
        except Exception as exc:  # invalid policy, nft refusal, unreadable file: never boot open
            return self._safe_mode(f"first policy {first_policy} failed: {exc}")
        return f"applied {first_policy} as version {version.id}"

    def _safe_mode(self, why: str) -> str:
        good = self.store.last_good()
        ifaces: list[str] | None = None
        if good is not None:
            try:
                policy = parse_policy(self.store.texts(good.id)[0], "last-good").policy
                ifaces = [i for z in policy.management.zones for i in policy.zone(z).interfaces]
            except Exception:  # the last good policy itself may no longer parse
                ifaces = None
        self.nft.replace(safe_ruleset(ifaces))
        self.store.event("safe-mode", why)
        return f"SAFE MODE (management access only): {why}"

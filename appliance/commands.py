"""The apply-engine subcommands: plan, apply, confirm, rollback, history, watchdog, run."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from appliance.atomic import write_atomic
from appliance.engine import AdminAccess, Engine
from appliance.errors import ApplianceError
from appliance.runtime import DnsRuntime
from appliance.state_dir import DEFAULT_STATE_DIR, engine_for, live_policy_base, start_watchdog
from appliance.store import ConfigStore
from dns_filter.errors import DnsFilterError
from policies.errors import PolicyError, PolicyValidationError
from policies.loader import parse_policy
from policies.model import Policy


def _admin(args: argparse.Namespace) -> AdminAccess | None:
    if args.admin_address:
        return AdminAccess(args.admin_address, args.admin_port)
    return AdminAccess.from_ssh_env()


def _report_policy_error(exc: PolicyError) -> None:
    if isinstance(exc, PolicyValidationError):
        for problem in exc.problems:
            print(problem, file=sys.stderr)
    else:
        print(exc, file=sys.stderr)
    print("nothing was applied", file=sys.stderr)


def cmd_plan(args: argparse.Namespace) -> int:
    try:
        plan = engine_for(args).plan(args.policy, admin=_admin(args))
    except PolicyError as exc:
        _report_policy_error(exc)
        return 1
    print(plan.render())
    return 1 if plan.unsafe else 0


def cmd_apply(args: argparse.Namespace) -> int:
    engine = engine_for(args)
    try:
        plan = engine.plan(args.policy, admin=_admin(args))
        print(plan.render())
        version = engine.apply(
            plan,
            author=args.author,
            message=args.message or f"apply {args.policy}",
            confirm_within=args.confirm_within,
            force=args.force,
        )
    except PolicyError as exc:
        _report_policy_error(exc)
        return 1
    except ApplianceError as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.confirm_within is not None:
        start_watchdog(args.state_dir)
        print(
            f"applied version {version.id}; run `edgeguard confirm` within "
            f"{args.confirm_within:g} s or it is rolled back"
        )
    else:
        print(f"applied version {version.id}")
    return 0


def cmd_watchdog(args: argparse.Namespace) -> int:
    engine = engine_for(args)
    while True:
        pending = engine.store.pending_confirm()
        if pending is None:
            return 0
        wait = pending.deadline - engine.clock.time()
        if wait <= 0:
            if engine.expire():
                print(f"version {pending.version} not confirmed in time: rolled back", flush=True)
            return 0
        time.sleep(min(wait, 0.5))


def cmd_confirm(args: argparse.Namespace) -> int:
    try:
        version = engine_for(args).confirm()
    except ApplianceError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"confirmed version {version.id}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    try:
        target = engine_for(args).rollback(args.version)
    except ApplianceError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"rolled back to version {target.id}" if target else "rolled back: no EdgeGuard table")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    store = ConfigStore(args.state_dir)
    pending = store.pending_confirm()
    for v in store.history(args.limit):
        flag = ""
        if pending and pending.version == v.id:
            flag = f"  (confirm within {pending.deadline - time.time():.0f} s)"
        extra = f"  error: {v.error.splitlines()[0]}" if v.error else ""
        print(f"{v.id:>4}  {v.created}  {v.status:<12} {v.author:<10} {v.message}{flag}{extra}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Boot: enforce the last known good policy, then serve DNS and keep the confirm timer."""
    engine = engine_for(args)
    print(f"EdgeGuard controller: state in {args.state_dir}", flush=True)
    print(engine.boot(args.policy), flush=True)
    if args.once:
        return 0
    sync = SyncThread(args.state_dir, args.sync_interval)
    try:
        while True:
            code = _run_services(engine, args, sync)
            if code != RESTART_ENROLLED:
                return code
            print("MSP enrolment or first bundle: restarting the services", flush=True)
    finally:
        sync.stop()


RESTART_ENROLLED = -1  # _serve's answer when enrolment or the MSP's first bundle changed things


def _services_setup(args: argparse.Namespace) -> tuple[bool, Path]:
    """(enrolled, where the live policy's relative list paths resolve).

    An MSP-managed box that has applied a bundle: where the agent keeps the bundle's files;
    otherwise (not enrolled, or enrolled but no bundle yet, so the local policy is still
    live) next to the policy given on first boot.
    """
    enrolled = (args.state_dir / "sync" / "enrolment.json").exists()
    local = args.policy.parent if args.policy else args.state_dir
    return enrolled, live_policy_base(args.state_dir, local)


def _run_services(engine: Engine, args: argparse.Namespace, sync: SyncThread) -> int:
    setup = _services_setup(args)
    enrolled, base = setup
    children = [_start_child(["anomaly", "serve", "--state-dir", str(args.state_dir), "--base",
                              str(base), "--every", str(args.anomaly_every)])]  # fmt: skip
    if enrolled:
        sync.ensure_running()
    try:
        return asyncio.run(
            _serve(engine, base, args.state_dir, lambda: _services_setup(args) != setup)
        )
    finally:
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)


class SyncThread:
    """The MSP sync agent as a thread of the controller, not a process: it sleeps minutes
    between cycles and its work is mostly waiting on the network, so a process of its own
    (~15 MB resident) is not worth it on a box whose services share 150 MB. It makes its own
    store connection and nftables context, and follows the live version through the store
    like the resolver. Started once the box is enrolled and kept across the services'
    restarts (it does not depend on where list files resolve), so there is never a second
    agent while a cycle of the first is still in flight."""

    def __init__(self, state_dir: Path, interval: float) -> None:
        self.state_dir = state_dir
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def ensure_running(self) -> None:
        """Start the loop, or start it again if it ended (an unreadable enrolment)."""
        if self.running:
            return
        from appliance.sync.sync_cmd import serve_loop

        self._thread = threading.Thread(
            target=serve_loop,
            args=(self.state_dir, self.interval, self._stop),
            name="msp-sync",
            daemon=True,
        )
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        """Let a cycle in flight finish its step (an apply is one transaction), then end."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


def _start_child(args: list[str]) -> subprocess.Popen[bytes]:
    """A part of the appliance in its own process, in this namespace: anomaly scoring (CPU
    work kept away from the resolver's GIL; conntrack is per namespace). It follows the
    store's live version itself."""
    return subprocess.Popen(  # noqa: S603 - fixed argv: our own interpreter and module
        [sys.executable, "-m", "appliance.child", *args]
    )


COUNTERS_INTERVAL = 10.0


def _save_counters(engine: Engine, state_dir: Path) -> None:
    """Firewall counters for the web UI's dashboard, as ``<state>/counters.json``."""
    read = getattr(engine.nft, "counters", None)
    if read is None:
        return
    try:
        counters = read()
    except (ApplianceError, ValueError):
        return  # no table (safe mode, nothing applied): the UI shows the file's age
    write_atomic(state_dir / "counters.json", json.dumps({"ts": time.time(), "counters": counters}))


def _live_policy(engine: Engine, base: Path) -> tuple[int | None, Policy | None]:
    live = engine.store.live()
    if live is None:
        return None, None
    try:
        text = engine.store.texts(live.id)[0]
        return live.id, parse_policy(text, "live-policy", base_dir=base).policy
    except PolicyError as exc:
        print(f"live policy does not parse any more ({exc}); not serving DNS", flush=True)
        return live.id, None


async def _serve(
    engine: Engine, base: Path, state_dir: Path, changed: Callable[[], bool] = lambda: False
) -> int:
    """Serve DNS and follow the live version until SIGTERM; returns RESTART_ENROLLED when
    ``changed()`` (the box was enrolled from the web UI, or its first bundle arrived), so the
    services restart with sync and the bundle's files without a reboot."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runtime = DnsRuntime(state_dir)
    version, policy = _live_policy(engine, base)

    async def follow(policy: Policy | None, first: bool) -> None:
        try:
            if policy is None or policy.dns is None:
                await runtime.stop()
                return
            lines = await (runtime.start(policy) if first else runtime.follow(policy))
            for line in lines:
                print(line, flush=True)
        except (OSError, ValueError, DnsFilterError) as exc:
            print(f"DNS not started: {exc}", flush=True)
            engine.store.event("dns-error", str(exc))

    await follow(policy, True)
    next_counters = 0.0
    while not stop.is_set():
        if time.monotonic() >= next_counters:
            next_counters = time.monotonic() + COUNTERS_INTERVAL
            _save_counters(engine, state_dir)
        if changed():  # two stat() calls
            await runtime.stop()
            return RESTART_ENROLLED
        if engine.expire():  # a lock and one SELECT: fine on the loop
            print("an unconfirmed apply passed its deadline: rolled back", flush=True)
        live = engine.store.live()
        if live is not None and live.id != version:
            new_version, new_policy = _live_policy(engine, base)
            print(f"version {new_version} is live now", flush=True)
            if new_policy is not None and new_policy == policy:
                runtime.table_replaced()
            else:
                await follow(new_policy, runtime.resolver is None)
            version, policy = new_version, new_policy
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    await runtime.stop()
    return 0


def add_engine_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def with_state(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--state-dir",
            type=Path,
            default=DEFAULT_STATE_DIR,
            help=f"where history and state live (default {DEFAULT_STATE_DIR}, or $EDGEGUARD_STATE)",
        )
        return p

    def with_admin(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--admin-address",
            help="your address, to check you keep access (default: from SSH_CLIENT)",
        )
        p.add_argument(
            "--admin-port", type=int, default=443, help="the box's port you use (default 443)"
        )

    p = with_state(sub.add_parser("plan", help="show what applying a policy would change"))
    p.add_argument("policy", type=Path)
    with_admin(p)
    p.set_defaults(func=cmd_plan)

    p = with_state(sub.add_parser("apply", help="apply a policy in one nft transaction"))
    p.add_argument("policy", type=Path)
    p.add_argument(
        "--confirm-within", type=float, metavar="SECONDS", help="roll back unless confirmed in time"
    )
    p.add_argument("--force", action="store_true", help="apply even an unsafe plan")
    p.add_argument("-m", "--message", default="", help="why (kept in the history)")
    p.add_argument("--author", default=os.environ.get("SUDO_USER") or getpass.getuser())
    with_admin(p)
    p.set_defaults(func=cmd_apply)

    with_state(sub.add_parser("confirm", help="keep the last apply")).set_defaults(func=cmd_confirm)
    p = with_state(sub.add_parser("rollback", help="return to an earlier version"))
    p.add_argument(
        "version", type=int, nargs="?", help="version number (default: the previous one)"
    )
    p.set_defaults(func=cmd_rollback)
    p = with_state(sub.add_parser("history", help="list applied versions"))
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_history)
    with_state(sub.add_parser("watchdog", help=argparse.SUPPRESS)).set_defaults(func=cmd_watchdog)

    p = with_state(
        sub.add_parser("run", help="run the appliance: enforce the last good policy first")
    )
    p.add_argument("--policy", type=Path, help="policy to apply on first boot (empty history)")
    p.add_argument("--once", action="store_true", help="boot, then exit")
    p.add_argument(
        "--anomaly-every",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="seconds between anomaly evaluations (default 60)",
    )
    p.add_argument(
        "--sync-interval",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="seconds between MSP sync cycles when enrolled (default 300, jittered)",
    )
    p.set_defaults(func=cmd_run)

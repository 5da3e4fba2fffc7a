"""``edgeguard sync``: enrol with an MSP, run one cycle, show the status, or keep syncing."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import random
import secrets
import signal
import socket
import struct
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.engine import Engine
from appliance.errors import ApplianceError
from appliance.state_dir import DEFAULT_STATE_DIR, engine_for, start_watchdog
from appliance.sync.agent import SyncAgent, next_delay
from appliance.sync.checkin import HealthProbe
from appliance.sync.errors import SyncError
from appliance.sync.metadata import Root, load_enrolment_root, valid_site
from appliance.sync.state import Enrolment, SyncPaths, SyncState, enrol
from appliance.sync.transport import ENVELOPE_LIMIT, HttpTransport
from policies.errors import PolicyError
from policies.loader import parse_policy

PENDING_RETRY = 60.0  # seconds between check-in attempts while an apply awaits its confirm


def resolver_answers(engine: Engine, timeout: float = 1.0) -> bool:
    """Does the live policy's first DNS listen address answer a query? (False: no dns.)"""
    live = engine.store.live()
    if live is None:
        return False
    try:
        policy = parse_policy(engine.store.texts(live.id)[0], "live", base_dir=Path("/")).policy
    except PolicyError:
        return False
    if policy.dns is None or not policy.dns.listen:
        return False
    host, _, port = policy.dns.listen[0].rpartition(":")
    host = host.strip("[]")
    query = (
        struct.pack("!HHHHHH", 0x4547, 0x0100, 1, 0, 0, 0) + b"\x09localhost\x00\x00\x01\x00\x01"
    )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(query, (host, int(port)))
            return s.recv(512)[:2] == query[:2]
        except (OSError, ValueError):
            return False


def agent_for(state_dir: Path) -> SyncAgent:
    """The agent of the appliance whose state is in ``state_dir``: real nftables, HTTPS."""
    enrolment = Enrolment.load(SyncPaths(state_dir).enrolment)  # first: not enrolled, no nft
    engine = engine_for(argparse.Namespace(state_dir=state_dir))
    transport = HttpTransport(ca_file=Path(enrolment.ca) if enrolment.ca else None)
    health = HealthProbe(engine.nft.exists, lambda: resolver_answers(engine))
    return SyncAgent(state_dir, engine, transport, health)


def enrol_with(
    state_dir: Path,
    *,
    server: str,
    checkin: str,
    site: str,
    credential: str,
    root_envelope: dict[str, Any] | None = None,
    root_keyid: str | None = None,
    ca: Path | None = None,
) -> tuple[Enrolment, Root]:
    """Enrol this appliance (the CLI's ``sync enrol`` and the web UI's form).

    Without ``root_envelope`` the MSP's root v1 is fetched from ``server`` (HTTPS with
    certificate checks); ``root_keyid`` pins it. Re-enrolling keeps the appliance id, so the
    MSP's fleet page shows the same box. Raises SyncError/ValueError/OSError with a reason.
    """
    if not valid_site(site):
        raise SyncError(f"site id {site!r}: letters, digits, '.', '_' and '-' (max 64)")
    for name, url in (("server", server), ("check-in", checkin)):
        if not url.startswith(("https://", "http://")):
            raise SyncError(f"{name} URL {url!r}: give an https:// URL")
    if not credential.strip():
        raise SyncError("the credential is empty: ask your MSP for one (msp add-appliance)")
    if root_envelope is None:
        url = f"{server.rstrip('/')}/root/1.json"
        fetched = HttpTransport(ca_file=ca).get(url, limit=ENVELOPE_LIMIT)
        if fetched.status != 200:
            raise SyncError(f"{url}: HTTP {fetched.status}; give the MSP's root.json instead")
        root_envelope = json.loads(fetched.body)
    root = load_enrolment_root(root_envelope)
    if root_keyid and root_keyid not in root.root_keys:
        raise SyncError(
            f"the root's key ids {sorted(root.root_keys)} do not include the pinned "
            f"{root_keyid}; check the key id with your MSP"
        )
    paths = SyncPaths(state_dir)
    previous = Enrolment.load(paths.enrolment) if paths.enrolment.exists() else None
    enrolment = Enrolment(
        server=server,
        checkin=checkin,
        site=site,
        credential=credential.strip(),
        appliance_id=previous.appliance_id if previous else secrets.token_hex(8),
        ca=str(ca.resolve()) if ca else None,
    )
    enrol(state_dir, enrolment, root_envelope)
    return enrolment, root


def cmd_enrol(args: argparse.Namespace) -> int:
    try:
        root_envelope = (
            json.loads(args.root.read_text(encoding="utf-8")) if args.root is not None else None
        )
        enrolment, root = enrol_with(
            args.state_dir, server=args.server, checkin=args.checkin, site=args.site,
            credential=args.credential, root_envelope=root_envelope,
            root_keyid=args.root_keyid, ca=args.ca,
        )  # fmt: skip
    except (OSError, ValueError, ApplianceError) as exc:
        print(f"enrolment failed: {exc}", file=sys.stderr)
        return 2
    print(
        f"enrolled as {enrolment.appliance_id} of site {args.site}; trusting root v{root.version}"
    )
    return 0


def cmd_now(args: argparse.Namespace) -> int:
    try:
        agent = agent_for(args.state_dir)
        outcome = agent.run_once()
    except ApplianceError as exc:
        print(exc, file=sys.stderr)
        return 2
    if agent.engine.store.pending_confirm() is not None:
        start_watchdog(args.state_dir)  # rolls back if the MSP is not reached in time
    line = outcome.result + (f" ({outcome.reason})" if outcome.reason else "")
    if outcome.bundle_version is not None:
        line += f": bundle v{outcome.bundle_version}"
    print(line)
    if outcome.error:
        print(outcome.error, file=sys.stderr)
    return 0 if outcome.result in ("applied", "unchanged") else 1


def _age(iso: str | None, now: dt.datetime) -> str:
    if not iso:
        return "never"
    seconds = (now - dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{iso} ({seconds / size:.0f} {unit} ago)"
    return f"{iso} ({seconds:.0f} s ago)"


def status_lines(state_dir: Path, now: dt.datetime) -> list[str]:
    paths = SyncPaths(state_dir)
    enrolment = Enrolment.load(paths.enrolment)
    state = SyncState.load(paths.state)
    root: dict[str, Any] = json.loads(paths.root.read_text(encoding="utf-8"))
    last = state.last_sync
    lines = [
        f"site {enrolment.site}, appliance {enrolment.appliance_id}, MSP {enrolment.server}",
        f"last synced: {_age(state.last_contact, now)}",
        f"last result: {last.get('result')}"
        + (f" ({last.get('reason')})" if last.get("reason") else "")
        + f" at {last.get('at') or 'never'}",
        f"trusted root: version {root['signed']['version']}",
        f"bundle: version {state.bundle_version if state.bundle_version else 'none yet'}"
        + (f", v{state.pending['bundle_version']} awaiting confirm" if state.pending else ""),
    ]
    if last.get("error"):
        lines.append(f"error: {last['error']}")
    if state.last_apply and not state.last_apply.get("ok"):
        lines.append(f"last apply failed: {state.last_apply.get('error')}")
    if state.failures:
        lines.append(f"{state.failures} cycle(s) in a row could not reach the MSP")
    for conflict in state.conflicts:
        lines.append(f"conflict: section {conflict['section']} changed here and by the MSP; "
                     "the local version is kept")  # fmt: skip
    return lines


def cmd_status(args: argparse.Namespace) -> int:
    try:
        lines = status_lines(args.state_dir, dt.datetime.now(dt.UTC))
    except (OSError, ValueError, KeyError, ApplianceError) as exc:
        print(exc, file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """``sync serve``: the loop in this process, until SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return serve_loop(args.state_dir, args.interval, stop)


def serve_loop(
    state_dir: Path,
    interval: float,
    stop: threading.Event,
    make_agent: Callable[[Path], SyncAgent] = agent_for,
) -> int:
    """A cycle, then a jittered wait (longer after failures), until ``stop`` is set.

    ``edgeguard run`` runs this in a thread of the controller rather than a process of its
    own (it waits minutes between cycles; a process would cost the appliance ~15 MB of its
    150 MB), so a cycle that fails in an unforeseen way is reported and retried, never
    allowed to end the loop."""
    try:
        agent = make_agent(state_dir)
    except ApplianceError as exc:
        print(exc, file=sys.stderr, flush=True)
        return 2
    rng = random.SystemRandom()
    while not stop.is_set():
        try:
            outcome = agent.run_once()
            print(f"sync: {outcome.result} {outcome.reason or ''} {outcome.error or ''}".rstrip(),
                  flush=True)  # fmt: skip
        except ApplianceError as exc:  # keep enforcing whatever is live; try again later
            print(f"sync cycle failed: {exc}", flush=True)
        except Exception as exc:
            print(f"sync cycle failed unexpectedly: {exc!r}", flush=True)
        failures, pending = 1, False
        with contextlib.suppress(ApplianceError, OSError, ValueError):
            state = agent.load_state()
            failures, pending = state.failures, state.pending is not None
        delay = next_delay(failures, rng.random(), interval=interval)
        if pending:
            delay = min(delay, PENDING_RETRY)
        stop.wait(delay)
    return 0


def add_sync_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sync = sub.add_parser(
        "sync", help="remote policy sync with the MSP (enrol, now, status, serve)"
    )
    actions = sync.add_subparsers(dest="sync_command", required=True, metavar="ACTION")

    def action(name: str, help_: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help_, description=help_)
        p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                       help=f"appliance state (default {DEFAULT_STATE_DIR})")  # fmt: skip
        return p

    p = action("enrol", "enrol this appliance with its MSP")
    p.add_argument("--server", required=True, help="base URL of the MSP's published files")
    p.add_argument("--checkin", required=True, help="base URL of the check-in collector")
    p.add_argument("--site", required=True, help="this appliance's site id")
    p.add_argument("--root", type=Path, help="the MSP's root.json (version 1)")
    p.add_argument("--root-keyid", help="pin the root key id (fetches root v1 if --root is absent)")
    p.add_argument(
        "--credential", required=True, help="the token `edgeguard msp add-appliance` printed"
    )
    p.add_argument("--ca", type=Path, help="CA certificate file for the MSP's private CA")
    p.set_defaults(func=cmd_enrol)
    action("now", "run one sync cycle now").set_defaults(func=cmd_now)
    action("status", "show the last sync and what is applied").set_defaults(func=cmd_status)
    p = action("serve", "keep syncing (interval with jitter, backoff on failures)")
    p.add_argument("--interval", type=float, default=300.0, help="seconds between cycles (300)")
    p.set_defaults(func=cmd_serve)

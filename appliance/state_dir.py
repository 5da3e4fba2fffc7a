"""Where the appliance keeps its state, and the engine over it: the few things every
command needs, in a module light enough for the controller's child processes (which import
neither the resolver nor the other commands)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from appliance.engine import Engine
from appliance.nft import LibNftables
from appliance.store import ConfigStore

DEFAULT_STATE_DIR = Path(os.environ.get("EDGEGUARD_STATE", "/var/lib/edgeguard"))


def live_policy_base(state_dir: Path, local: Path) -> Path:
    """Where the live policy's relative list and feed files resolve: on a box enrolled with
    an MSP that has applied a bundle, the bundle's files (``<state>/sync/site``, kept by the
    sync agent); otherwise ``local``, next to the locally installed policy. The controller
    and the web UI both ask here, so a policy edited in the UI finds the same files."""
    sync_dir = state_dir / "sync"
    if (sync_dir / "enrolment.json").exists() and (sync_dir / "site").is_dir():
        return sync_dir / "site"
    return local


def engine_for(args: argparse.Namespace) -> Engine:
    return Engine(ConfigStore(args.state_dir), LibNftables())


def start_watchdog(state_dir: Path) -> None:
    """A detached process that rolls back at the deadline even if this shell goes away."""
    log = open(Path(state_dir) / "watchdog.log", "a")  # noqa: SIM115 - handed to the child
    subprocess.Popen(  # noqa: S603 - fixed argv: our own interpreter and module
        [sys.executable, "-m", "appliance.cli", "watchdog", "--state-dir", str(state_dir)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
        close_fds=True,
    )
    log.close()

"""``edgeguard``: the appliance's commands plus ``edgeguard ui``.

The console script lives here, at the top of the import chain, so the UI can add its own
subcommand without anything below it importing the UI.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from appliance.cli import DEFAULT_POLICY, CommandGroup, SubCommands
from appliance.cli import main as appliance_main


def cmd_demo(args: argparse.Namespace) -> int:
    """``make run``: the lab demo with the web UI on the host's loopback."""
    from appliance.demo import run_demo
    from appliance.lab import Lab

    def start_ui(lab: Lab) -> list[subprocess.Popen[str]]:
        argv = [
            sys.executable, "-m", "webui.cli", "ui", "serve",
            "--state-dir", str(args.state_dir), "--listen", args.ui,
            "--netns", lab.ns("router"), "--policy-base", str(args.policy.resolve().parent),
        ]  # fmt: skip
        return [subprocess.Popen(argv, text=True)]  # noqa: S603 - our own module, fixed argv

    return run_demo(
        args.policy, args.state_dir, args.prefix, args.duration, args.interval,
        start_extra=start_ui,
    )  # fmt: skip


def add_ui_commands(sub: SubCommands) -> None:
    from webui.ui_main import add_ui_serve

    add_ui_serve(sub)

    p = sub.add_parser("demo", help="the lab demo with the web UI (what `make run` runs)")
    p.add_argument("--policy", type=Path, default=DEFAULT_POLICY)
    p.add_argument("--prefix", default="eglab", help="namespace name prefix")
    p.add_argument("--state-dir", type=Path, default=Path("var/lab"))
    p.add_argument("--ui", default="127.0.0.1:8443", help="where the web UI listens")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between traffic rounds")
    p.set_defaults(func=cmd_demo)


def main(argv: Sequence[str] | None = None) -> int:
    return appliance_main(argv, extra=UI_GROUPS)


UI_GROUPS = (
    CommandGroup(("ui", "demo"), "webui.cli:add_ui_commands"),
    CommandGroup(("msp",), "webui.fleet.serve_cmd:add_fleet_commands"),
)


if __name__ == "__main__":
    raise SystemExit(main())

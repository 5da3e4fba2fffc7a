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

from appliance.cli import DEFAULT_POLICY, SubCommands
from appliance.cli import main as appliance_main
from appliance.state_dir import DEFAULT_STATE_DIR
from webui.config import UiConfig
from webui.fleet.serve_cmd import add_fleet_commands


def cmd_ui_serve(args: argparse.Namespace) -> int:
    from webui.server import serve

    config = UiConfig(
        state_dir=args.state_dir,
        netns=args.netns,
        policy_base=args.policy_base,
        secure_cookies=not args.plain_http,
    )
    host, _, port = args.listen.rpartition(":")
    return serve(
        config,
        host.strip("[]") or "127.0.0.1",
        int(port),
        cert=args.cert,
        key=args.key,
        plain_http=args.plain_http,
    )


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
    ui = sub.add_parser("ui", help="the admin web UI")
    usub = ui.add_subparsers(dest="ui_command", required=True, metavar="COMMAND")
    p = usub.add_parser("serve", help="serve the web UI (HTTPS, self-signed on first start)")
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    p.add_argument("--listen", default="127.0.0.1:8443", help="address:port")
    p.add_argument("--netns", help="apply rulesets in this network namespace (the lab's router)")
    p.add_argument("--policy-base", type=Path, help="folder relative list files resolve in")
    p.add_argument("--cert", type=Path, help="PEM certificate (default: self-signed)")
    p.add_argument("--key", type=Path, help="PEM private key for --cert")
    p.add_argument("--plain-http", action="store_true", help="no TLS (tests and benchmarks)")
    p.set_defaults(func=cmd_ui_serve)

    p = sub.add_parser("demo", help="the lab demo with the web UI (what `make run` runs)")
    p.add_argument("--policy", type=Path, default=DEFAULT_POLICY)
    p.add_argument("--prefix", default="eglab", help="namespace name prefix")
    p.add_argument("--state-dir", type=Path, default=Path("var/lab"))
    p.add_argument("--ui", default="127.0.0.1:8443", help="where the web UI listens")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between traffic rounds")
    p.set_defaults(func=cmd_demo)


def main(argv: Sequence[str] | None = None) -> int:
    return appliance_main(argv, extra=[add_ui_commands, add_fleet_commands])


if __name__ == "__main__":
    raise SystemExit(main())

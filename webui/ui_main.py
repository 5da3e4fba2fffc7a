"""Entry point of the web UI service: ``python -m webui.ui_main ui serve ...``.

It takes ``edgeguard ui serve``'s arguments, but builds a parser with that one command, so
it does not import every appliance command (the resolver, the lab, scoring...) the way the
``edgeguard`` console script does: about 4 MB less in each of gunicorn's two processes,
which counts against the appliance image's 150 MB budget for all services (issue #9).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from appliance.state_dir import DEFAULT_STATE_DIR


def add_ui_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``ui serve``: shared with ``webui.cli``, so both take the same arguments."""
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


def cmd_ui_serve(args: argparse.Namespace) -> int:
    from webui.config import UiConfig
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgeguard")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_ui_serve(sub)
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())

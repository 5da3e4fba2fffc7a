"""Entry point of the controller's child processes (``edgeguard run`` starts them).

``python -m appliance.child anomaly serve ...`` takes the same arguments as ``edgeguard
anomaly ...`` but imports only that command, not every subcommand of the CLI (the resolver,
the lab, the web filter...): about 7 MB less resident memory, which counts against the
appliance image's 150 MB budget (issue #9). (The MSP sync agent runs as a thread of the
controller: ``appliance.commands.SyncThread``.)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="edgeguard")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    group = args_in[0] if args_in else ""
    if group == "anomaly":
        from appliance.anomaly.serve_cmd import add_anomaly_commands

        add_anomaly_commands(sub)
    else:
        parser.error(f"a child runs 'anomaly ...', not {group!r}")
    args = parser.parse_args(args_in)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())

"""``edgeguard quarantine list|add|lift``: quarantine by hand, from a shell on the box.

These only write the ``quarantine`` table in ``<state>/anomalies.db``; the running
controller (``edgeguard run``) puts the addresses into the firewall's quarantine sets
within a few seconds, and keeps them there across applies and restarts. The sets exist
when the live policy has an ``anomaly:`` section; without one the quarantine is recorded
but not enforced, and ``add`` says so.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from appliance.anomaly.quarantine import QuarantineManager, describe
from appliance.anomaly.store import AnomalyStore
from appliance.errors import ApplianceError
from appliance.state_dir import DEFAULT_STATE_DIR

EXIT_OK, EXIT_FAILED = 0, 1


def _manager(args: argparse.Namespace) -> QuarantineManager:
    return QuarantineManager(AnomalyStore.in_state_dir(args.state_dir))


def cmd_quarantine(args: argparse.Namespace) -> int:
    try:
        manager = _manager(args)
        if args.action == "list":
            entries = manager.store.quarantine_history() if args.all else manager.active()
            if not entries:
                print("no host is quarantined" if not args.all else "no quarantine recorded")
            for line in describe(entries):
                print(line)
            return EXIT_OK
        if args.action == "add":
            entry = manager.add(args.address, reason=args.reason, by=args.by)
            print(
                f"{entry.address} quarantined: it reaches only the appliance (DNS, DHCP, ping) "
                "once the controller syncs (a few seconds; the live policy needs an anomaly: "
                "section)"
            )
            return EXIT_OK
        entry = manager.lift(args.address, by=args.by)
        print(f"{entry.address}: quarantine lifted; it reaches the network again once synced")
        return EXIT_OK
    except ApplianceError as exc:
        print(f"edgeguard quarantine: {exc}", file=sys.stderr)
        return EXIT_FAILED


def add_quarantine_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "quarantine",
        help="list, add or lift quarantined hosts",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    p.add_argument("action", choices=["list", "add", "lift"])
    p.add_argument("address", nargs="?", help="the host's IPv4 or IPv6 address (add, lift)")
    p.add_argument("--reason", default="", help="why (kept with the quarantine; add)")
    p.add_argument("--all", action="store_true", help="list lifted quarantines too")
    p.add_argument(
        "--by",
        default=os.environ.get("SUDO_USER") or getpass.getuser(),
        help="who does it (default: you)",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help=f"where the appliance's state lives (default {DEFAULT_STATE_DIR})",
    )

    def run(args: argparse.Namespace) -> int:
        if args.action in ("add", "lift") and not args.address:
            p.error(f"quarantine {args.action} needs an ADDRESS")
        if args.action == "add" and not args.reason.strip():
            p.error("quarantine add needs --reason TEXT")
        return cmd_quarantine(args)

    p.set_defaults(func=run)


__all__ = ["add_quarantine_commands", "cmd_quarantine"]

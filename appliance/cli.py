"""``edgeguard``: the one command-line entry point, with a subcommand per job.

Exit codes: 0 success, 1 the policy (or plan) is refused, 2 usage or environment error.
Output meant for people goes to stdout; errors go to stderr, one per line, each with
file:line:column so editors can jump to them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from policies.compiler import Ruleset
    from policies.loader import LoadedPolicy

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2
DEFAULT_POLICY = (
    Path(__file__).resolve().parent.parent / "policies" / "examples" / "web-filter.yaml"
)


def _parse_at(value: str | None) -> dt.datetime:
    if value is None:
        return dt.datetime.now(dt.UTC)
    try:
        at = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--at: not an ISO 8601 time: {value!r}") from exc
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


def _load(path: Path, err: TextIO) -> LoadedPolicy | None:
    from policies.errors import PolicyLoadError, PolicyValidationError
    from policies.loader import load_policy

    try:
        loaded = load_policy(path)
    except PolicyValidationError as exc:
        for problem in exc.problems:
            print(problem, file=err)
        errors = sum(1 for p in exc.problems if p.severity == "error")
        print(f"{path}: {errors} error(s); nothing was compiled or applied", file=err)
        return None
    except PolicyLoadError as exc:
        print(exc, file=err)
        print(f"{path}: nothing was compiled or applied", file=err)
        return None
    for warning in loaded.warnings:
        print(warning, file=err)
    return loaded


def _compile(loaded: LoadedPolicy, at: dt.datetime, err: TextIO) -> Ruleset | None:
    from policies.compiler import Target, compile_policy
    from policies.errors import PolicyError

    try:
        return compile_policy(loaded.policy, at=at, target=Target())
    except PolicyError as exc:
        print(f"cannot compile: {exc}", file=err)
        return None


def cmd_check(args: argparse.Namespace) -> int:
    loaded = _load(args.policy, sys.stderr)
    if loaded is None:
        return EXIT_REFUSED
    ruleset = _compile(loaded, args.at, sys.stderr)
    if ruleset is None:
        return EXIT_REFUSED
    p = loaded.policy
    stats = ruleset.stats
    print(
        f"{args.policy}: OK — {len(p.zones)} zones, {len(p.rules)} rules, "
        f"{stats['chains']} chains, {stats['rules']} nft rules, "
        f"{stats['set_elements']} set elements"
        + (f", {len(loaded.warnings)} warning(s)" if loaded.warnings else "")
    )
    return EXIT_OK


def cmd_compile(args: argparse.Namespace) -> int:
    loaded = _load(args.policy, sys.stderr)
    ruleset = _compile(loaded, args.at, sys.stderr) if loaded else None
    if ruleset is None:
        return EXIT_REFUSED
    if args.output:
        args.output.write_text(ruleset.text, encoding="utf-8")
    else:
        sys.stdout.write(ruleset.text)
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from policies.schema import json_schema_text

    del args
    sys.stdout.write(json_schema_text())
    return EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    """What a policy does in plain words, and what it compiles to."""
    from policies.summary import describe

    loaded = _load(args.policy, sys.stderr)
    ruleset = _compile(loaded, args.at, sys.stderr) if loaded else None
    if loaded is None or ruleset is None:
        return EXIT_REFUSED
    print(f"What {args.policy} does:")
    for line in describe(loaded.policy):
        print(f"  {line}")
    s = ruleset.stats
    until = ruleset.valid_until.isoformat() if ruleset.valid_until else "no DST change ahead"
    print(
        f"Compiles to {s['chains']} chains, {s['rules']} rules, {s['sets']} sets with "
        f"{s['set_elements']} elements, loaded in one nft transaction "
        f"(schedules valid until {until})."
    )
    return EXIT_OK


def cmd_lab(args: argparse.Namespace) -> int:
    from appliance.demo import run_demo
    from appliance.lab import Lab, lab_down

    if args.action == "up":
        lab = Lab.up(args.prefix)
        print(f"lab up: {', '.join(lab.namespaces)}; remove with `edgeguard lab down`")
        return EXIT_OK
    if args.action == "down":
        removed = lab_down(args.prefix)
        print(f"removed {len(removed)} namespaces" if removed else "no lab namespaces found")
        return EXIT_OK
    return run_demo(args.policy, args.state_dir, args.prefix, args.duration, args.interval)


if TYPE_CHECKING:
    SubCommands = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    SubCommands = argparse._SubParsersAction


@dataclass(frozen=True)
class CommandGroup:
    """Top-level commands added by one function, named as ``module:function`` so the module
    is imported only when one of ``names`` is run (or the whole list is shown): a long-running
    ``edgeguard run`` or ``dns serve`` then does not carry the MSP signing code, the scorer's
    offline tools and the rest (about 8 MB of a 150 MB appliance budget)."""

    names: tuple[str, ...]
    register: str

    def add_to(self, sub: SubCommands) -> None:
        module, _, function = self.register.partition(":")
        getattr(importlib.import_module(module), function)(sub)


COMMAND_GROUPS = (
    CommandGroup(("plan", "apply", "confirm", "rollback", "history", "watchdog", "run"),
                 "appliance.commands:add_engine_commands"),
    CommandGroup(("dns",), "appliance.dns_cmd:add_dns_commands"),
    CommandGroup(("msp",), "appliance.sync.msp_cmd:add_msp_commands"),
    CommandGroup(("score",), "appliance.anomaly.score_cmd:add_score_commands"),
    CommandGroup(("quarantine",), "appliance.anomaly.quarantine_cmd:add_quarantine_commands"),
    CommandGroup(("anomaly",), "appliance.anomaly.serve_cmd:add_anomaly_commands"),
    CommandGroup(("sync",), "appliance.sync.sync_cmd:add_sync_commands"),
)  # fmt: skip


def requested_command(argv: Sequence[str]) -> str | None:
    """The command word of ``argv`` (its first argument not starting with ``-``), if any."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(
    extra: Sequence[CommandGroup] = (), command: str | None = None
) -> argparse.ArgumentParser:
    """The ``edgeguard`` parser; ``extra`` adds command groups of packages above this one
    (the web UI registers ``edgeguard ui`` this way, so nothing here imports it). With
    ``command`` naming one of the groups' commands, only that group is imported and added;
    otherwise all of them, so help and "invalid choice" list every command."""
    parser = argparse.ArgumentParser(prog="edgeguard", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups = [*extra, *COMMAND_GROUPS]
    if any(command in group.names for group in groups):
        groups = [group for group in groups if command in group.names]
    for group in extra:
        if group in groups:
            group.add_to(sub)

    def policy_cmd(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("policy", type=Path, help="policy YAML file")
        p.add_argument(
            "--at",
            type=_parse_at,
            default=_parse_at(None),
            help="compile as of this time (ISO 8601; default now)",
        )
        return p

    policy_cmd("check", "validate a policy and report every problem").set_defaults(func=cmd_check)
    p = policy_cmd("compile", "print the nftables ruleset a policy compiles to")
    p.add_argument("-o", "--output", type=Path, help="write the ruleset here instead of stdout")
    p.set_defaults(func=cmd_compile)
    policy_cmd("explain", "say in plain words what a policy does").set_defaults(func=cmd_explain)
    for group in COMMAND_GROUPS:
        if group in groups:
            group.add_to(sub)
    p = sub.add_parser("lab", help="the network-namespace lab (demo, up, down)")
    p.add_argument("action", choices=["demo", "up", "down"])
    p.add_argument("--prefix", default="eglab", help="namespace name prefix")
    p.add_argument("--policy", type=Path, default=DEFAULT_POLICY, help="policy for the demo")
    p.add_argument("--state-dir", type=Path, default=Path("var/lab"), help="demo state")
    p.add_argument("--duration", type=float, help="stop the demo after this many seconds")
    p.add_argument("--interval", type=float, default=3.0, help="seconds between traffic rounds")
    p.set_defaults(func=cmd_lab)
    sub.add_parser("schema", help="print the policy JSON Schema").set_defaults(func=cmd_schema)
    return parser


SEEDED_COMMANDS = ("run", "dns")
"""Commands that build block lists: they run with the box's hash seed (``appliance.hashseed``),
so their compiled lists are reused across restarts."""


def main(argv: Sequence[str] | None = None, extra: Sequence[CommandGroup] = ()) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    command = requested_command(args_in)
    if argv is None and command in SEEDED_COMMANDS:  # a real command line, not a test's call
        from appliance.hashseed import pin_hash_seed

        pin_hash_seed()  # may re-execute this command line; before the heavy imports below
    parser = build_parser(extra, command)
    args = parser.parse_args(args_in)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

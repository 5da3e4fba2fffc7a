"""``edgeguard``: the one command-line entry point, with a subcommand per job.

Exit codes: 0 success, 1 the policy (or plan) is refused, 2 usage or environment error.
Output meant for people goes to stdout; errors go to stderr, one per line, each with
file:line:column so editors can jump to them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from appliance.anomaly.quarantine_cmd import add_quarantine_commands
from appliance.anomaly.score_cmd import add_score_commands
from appliance.anomaly.serve_cmd import add_anomaly_commands
from appliance.commands import add_engine_commands
from appliance.dns_cmd import add_dns_commands
from appliance.sync.msp_cmd import add_msp_commands
from appliance.sync.sync_cmd import add_sync_commands
from policies.compiler import Ruleset, Target, compile_policy
from policies.errors import PolicyError, PolicyLoadError, PolicyValidationError
from policies.loader import LoadedPolicy, load_policy
from policies.schema import json_schema_text
from policies.summary import describe

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
    del args
    sys.stdout.write(json_schema_text())
    return EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    """What a policy does in plain words, and what it compiles to."""
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


def build_parser(
    extra: Sequence[Callable[[SubCommands], None]] = (),
) -> argparse.ArgumentParser:
    """The ``edgeguard`` parser; ``extra`` adds subcommands of packages above this one (the
    web UI registers ``edgeguard ui`` this way, so nothing here imports it)."""
    parser = argparse.ArgumentParser(prog="edgeguard", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in extra:
        register(sub)

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
    add_engine_commands(sub)
    add_dns_commands(sub)
    add_msp_commands(sub)
    add_score_commands(sub)
    add_quarantine_commands(sub)
    add_anomaly_commands(sub)
    add_sync_commands(sub)
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


def main(
    argv: Sequence[str] | None = None, extra: Sequence[Callable[[SubCommands], None]] = ()
) -> int:
    parser = build_parser(extra)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

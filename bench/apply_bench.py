"""Benchmark: apply (compile + one nft transaction) of 1,000 rules with 100,000 CIDRs.

Issue target: under 2 s on this machine, as a ratio to a plain ``nft -f`` of the same
ruleset. Everything runs inside a scratch network namespace (never the machine's own):

* ``nft -f``: the compiled text loaded by the nft CLI into an empty namespace (the floor);
* engine apply: the in-process path ``edgeguard apply`` takes (plan: parse, validate,
  compile, safety checks; then record + libnftables transaction + store update), timed
  inside the process, first into an empty table and then replacing a loaded one;
* ``edgeguard apply`` end to end: the CLI as an admin runs it, Python start-up included.

    .venv/bin/python bench/apply_bench.py [--rules 1000] [--cidrs 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compile_bench import write_policy

from appliance.netns import scratch_namespace

ENGINE = r"""
import json, sys, time
t0 = time.perf_counter()
from appliance.engine import Engine
from appliance.nft import LibNftables
from appliance.store import ConfigStore
engine = Engine(ConfigStore(sys.argv[2]), LibNftables())
t1 = time.perf_counter()
plan = engine.plan(sys.argv[1])
t2 = time.perf_counter()
engine.apply(plan, author="bench", message="bench", force=True)
t3 = time.perf_counter()
open(sys.argv[3], "w").write(plan.ruleset.text)
print(json.dumps({"import": t1 - t0, "plan": t2 - t1, "apply": t3 - t2}))
"""


def in_ns(ns: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "TZ": "UTC"},
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", type=int, default=1000)
    ap.add_argument("--cidrs", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (creates a scratch network namespace)", file=sys.stderr)
        return 2
    rows: dict[str, list[float]] = {"nft": [], "first": [], "replace": [], "cli": []}
    plan_s: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        policy = write_policy(Path(tmp), args.rules, args.cidrs)
        ruleset = Path(tmp) / "ruleset.nft"
        for run in range(args.runs):
            with scratch_namespace("egapply") as ns:
                state = Path(tmp) / f"state-{run}"
                first = json.loads(
                    in_ns(
                        ns, [sys.executable, "-c", ENGINE, str(policy), str(state), str(ruleset)]
                    ).stdout
                )
                rows["first"].append(first["plan"] + first["apply"])
                plan_s.append(first["plan"])
                again = json.loads(
                    in_ns(
                        ns, [sys.executable, "-c", ENGINE, str(policy), str(state), str(ruleset)]
                    ).stdout
                )
                rows["replace"].append(again["plan"] + again["apply"])
                start = time.perf_counter()
                in_ns(
                    ns,
                    [
                        sys.executable,
                        "-m",
                        "appliance.cli",
                        "apply",
                        str(policy),
                        "--force",
                        "--state-dir",
                        str(state),
                    ],
                )
                rows["cli"].append(time.perf_counter() - start)
            with scratch_namespace("egnftf") as ns:
                start = time.perf_counter()
                in_ns(ns, ["nft", "-f", str(ruleset)])
                rows["nft"].append(time.perf_counter() - start)
    best = {k: min(v) for k, v in rows.items()}
    print(f"policy: {args.rules} rules, {args.cidrs} block-list CIDRs; best of {args.runs}")
    floor = best["nft"]
    print(f"{'nft -f of the compiled ruleset (floor)':<46} {floor:.3f} s")
    print(f"{'  plan alone (parse, validate, compile)':<46} {min(plan_s):.3f} s")
    for key, label in (
        ("first", "engine apply into an empty namespace"),
        ("replace", "engine apply replacing the loaded table"),
        ("cli", "`edgeguard apply` end to end (CLI, start-up)"),
    ):
        print(f"{label:<46} {best[key]:.3f} s  ratio {best[key] / floor:.2f}")
    print("target: under 2 s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

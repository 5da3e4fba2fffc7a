"""Benchmark: load + compile a 1,000-rule policy with 100,000 block-list CIDRs.

Issue target: under 1 s and under 100 MB peak RSS; reported next to the time ``nft -f``
needs to load the result (the floor: nothing we do can make the kernel load faster).
The measured work runs in a fresh child process so its peak RSS is its own.

    .venv/bin/python bench/compile_bench.py [--rules 1000] [--cidrs 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ZONES = {
    "wan": ("wan0", "203.0.113.2/24"),
    "lan": ("lan0", "192.0.2.1/26"),
    "guest": ("guest0", "192.0.2.65/26"),
    "iot": ("iot0", "192.0.2.129/27"),
    "dmz": ("dmz0", "192.0.2.161/27"),
    "mgmt": ("mgmt0", "192.0.2.193/27"),
}


def _random_cidrs(rng: random.Random, n: int) -> list[str]:
    out = []
    for _ in range(n):
        prefix = rng.choice((16, 20, 22, 24, 24, 24, 28, 32, 32))
        addr = rng.getrandbits(32) & (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF
        out.append(f"{addr >> 24}.{addr >> 16 & 255}.{addr >> 8 & 255}.{addr & 255}/{prefix}")
    return out


def write_policy(
    directory: Path, rules: int, cidrs: int, *, address_only: bool = False, seed: int = 7
) -> Path:
    rng = random.Random(seed)
    feeds = directory / "feeds"
    feeds.mkdir()
    # Two feeds that overlap, as FireHOL level1 and Spamhaus DROP do in real life.
    first = _random_cidrs(rng, cidrs * 6 // 10)
    second = rng.sample(first, cidrs // 10) + _random_cidrs(
        rng, cidrs - cidrs * 6 // 10 - cidrs // 10
    )
    (feeds / "level1.netset").write_text("# bench feed\n" + "\n".join(first) + "\n")
    (feeds / "drop.txt").write_text("".join(f"{c} ; SBL{i}\n" for i, c in enumerate(second)))
    groups = {
        f"hosts-{i}": [f"192.0.2.{rng.randrange(2, 60)}", f"198.51.100.{rng.randrange(1, 250)}"]
        for i in range(50)
    }
    zone_names = list(ZONES)
    services = ["ssh", "web", "dns", "ntp", "smb", "rdp", "ping", "imap"]
    rule_list = []
    for i in range(rules):
        # Like rules written in a GUI: mostly zone to zone, some narrowed to a group inside
        # a zone, a few address-only (those are copied into every zone pair they can match).
        kind = rng.random()
        src: object = rng.choice(zone_names)
        dst: object = rng.choice([*zone_names, "self"])
        if kind > 0.8:
            src = {"zone": src, "address": rng.choice(list(groups))}
        if kind > 0.97 or address_only:
            src, dst = rng.choice(list(groups)), rng.choice([*groups, "self"])
        rule = {
            "name": f"rule-{i}",
            "from": src,
            "to": dst,
            "service": rng.sample(services, 2),
            "action": rng.choice(["accept", "drop", "reject"]),
        }
        if i % 10 == 0:
            rule["counter"] = True
        rule_list.append(rule)
    policy = {
        "version": 1,
        "site": {"name": "bench", "timezone": "Europe/Berlin"},
        "zones": {z: {"interfaces": [i], "addresses": [a]} for z, (i, a) in ZONES.items()},
        "address_groups": groups,
        "blocklists": {
            "level1": {"files": ["feeds/level1.netset"]},
            "drop": {"files": ["feeds/drop.txt"]},
        },
        "rules": rule_list,
        "defaults": [
            {"from": "lan", "to": "wan", "action": "accept"},
            {"from": "any", "to": "any", "action": "drop"},
        ],
        "nat": {"masquerade": ["wan"]},
    }
    path = directory / "bench.yaml"
    path.write_text(json.dumps(policy))  # JSON is YAML; quicker to write
    return path


CHILD = r"""
import datetime as dt, json, resource, sys, time
t0 = time.perf_counter()
from policies.loader import load_policy
from policies.compiler import compile_policy
t1 = time.perf_counter()
loaded = load_policy(sys.argv[1])
t2 = time.perf_counter()
ruleset = compile_policy(loaded.policy, at=dt.datetime(2026, 1, 15, tzinfo=dt.timezone.utc))
t3 = time.perf_counter()
open(sys.argv[2], "w").write(ruleset.text)
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "compile_s": t3 - t2,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "stats": ruleset.stats, "bytes": len(ruleset.text)}))
"""


def nft_load_seconds(ruleset: Path) -> float:
    """Time `nft -f` of the ruleset inside a scratch namespace (never the root namespace)."""
    from appliance.netns import scratch_namespace

    with scratch_namespace("egbench") as ns:
        start = time.perf_counter()
        subprocess.run(
            ["ip", "netns", "exec", ns, "nft", "-f", str(ruleset)],
            check=True,
            env={**os.environ, "TZ": "UTC"},
        )
        return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", type=int, default=1000)
    ap.add_argument("--cidrs", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--address-only",
        action="store_true",
        help="worst case: every rule names groups, no zones (copied into every zone pair)",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        policy = write_policy(Path(tmp), args.rules, args.cidrs, address_only=args.address_only)
        out = Path(tmp) / "ruleset.nft"
        runs = []
        for _ in range(args.runs):
            res = subprocess.run(
                [sys.executable, "-c", CHILD, str(policy), str(out)],
                check=True,
                capture_output=True,
                text=True,
            )
            runs.append(json.loads(res.stdout))
        best = min(runs, key=lambda r: r["load_s"] + r["compile_s"])
        nft_s = (
            min(nft_load_seconds(out) for _ in range(args.runs))
            if os.geteuid() == 0
            else float("nan")
        )
    total = best["load_s"] + best["compile_s"]
    shape = "address-only rules (worst case)" if args.address_only else "zone-scoped rules"
    print(f"policy: {args.rules} {shape}, {args.cidrs} block-list CIDRs (two overlapping feeds)")
    print(f"ruleset: {best['stats']}, {best['bytes'] / 1e6:.1f} MB of text")
    print(f"load+validate (feeds parsed, merged): {best['load_s']:.3f} s")
    print(f"compile:                              {best['compile_s']:.3f} s")
    print(f"total (best of {args.runs}):                  {total:.3f} s   (target < 1 s)")
    print(f"peak RSS of the compiling process:    {best['peak_rss_mb']:.0f} MB (target < 100 MB)")
    print(f"nft -f of the result (the floor):     {nft_s:.3f} s")
    print(f"ratio ours / nft -f:                  {total / nft_s:.2f}")
    print(f"python import time (not counted):     {best['import_s']:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

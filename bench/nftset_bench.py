"""Benchmark: the resolver's nft set feeder (appliance.nftset) against a real kernel.

Everything runs in a scratch network namespace (never the machine's own), in one Python
process inside it (libnftables acts on the namespace of its process):

* fill: ``add()`` N distinct addresses into one timeout set as fast as possible, then wait
  until the feeder has sent them all (``flush``); the time from the first ``add`` to the
  last element committed, checked against the kernel's listing afterwards;
* refresh: the same N elements re-sent (they exist, so each goes add/delete/add);
* replace + resync: the table replaced (its sets empty) and ``resync()`` restoring them;
* add() cost: amortised over a tight loop, and timed call by call;
* answer path: add() called at a steady rate (default 1,000/s for 10 s, a new address each
  time) while the feeder sends in the background, with a 50,000-element resync landing in
  the middle; the max and p99 of each call show whether add() ever waits for the sender.

    .venv/bin/python bench/nftset_bench.py [--count 50000] [--rate 1000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance.netns import scratch_namespace  # noqa: E402

TABLE = """table inet edgeguard {
\tset dom_bench_v6 { type ipv6_addr; size 65535; flags timeout; }
\tset dom_live_v6 { type ipv6_addr; size 65535; flags timeout; }
}
"""

WORKER = r"""
import ipaddress, json, sys, threading, time
import nftables
from appliance.nftset import NftSetFeeder

count, rate, seconds, table = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
nft = nftables.Nftables()
base = ipaddress.IPv6Address("2001:db8::")
addrs = [str(base + ((i << 20) | i)) for i in range(1, count + 1)]  # vary host bits

def in_kernel(name):
    rc, out, err = nft.json_cmd({"nftables": [{"list": {"set": {
        "family": "inet", "table": "edgeguard", "name": name}}}]})
    assert rc == 0, err
    return sum(len(i["set"].get("elem", [])) for i in out["nftables"] if "set" in i)

def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]

report = {}
feeder = NftSetFeeder()
feeder.start()

# fill
t0 = time.perf_counter()
for a in addrs:
    feeder.add("dom_bench_v6", 6, a, 3600)
t_added = time.perf_counter()
assert feeder.flush(120)
t_sent = time.perf_counter()
report["fill"] = {"count": count, "add_loop_s": t_added - t0, "until_in_kernel_s": t_sent - t0,
                  "in_kernel": in_kernel("dom_bench_v6"), "stats": feeder.stats()}

# refresh: forget the dedupe memory so every element is sent again (each exists)
feeder.forget_sets(set())
t0 = time.perf_counter()
for a in addrs:
    feeder.add("dom_bench_v6", 6, a, 3600)
assert feeder.flush(120)
report["refresh_s"] = time.perf_counter() - t0

# replace the table, then resync
rc, _, err = nft.cmd("table inet edgeguard\ndelete table inet edgeguard\n" + table)
assert rc == 0, err
emptied = in_kernel("dom_bench_v6")
t0 = time.perf_counter()
restored = feeder.resync()
assert feeder.flush(120)
report["resync"] = {"elements": restored, "seconds": time.perf_counter() - t0,
                    "before": emptied, "after": in_kernel("dom_bench_v6")}
feeder.stop()

# add() cost on the caller, with the sender stopped (nothing competes for the GIL)
quiet = NftSetFeeder(max_queue=count + 1)
t0 = time.perf_counter_ns()
for a in addrs:
    quiet.add("dom_bench_v6", 6, a, 3600)
amortised = (time.perf_counter_ns() - t0) / count
quiet = NftSetFeeder(max_queue=count + 1)
calls = []
for a in addrs:
    s = time.perf_counter_ns()
    quiet.add("dom_bench_v6", 6, a, 3600)
    calls.append(time.perf_counter_ns() - s)
report["add_ns"] = {"amortised": amortised, "p50": pct(calls, 0.5), "p99": pct(calls, 0.99),
                    "max": max(calls)}

# the answer path: `rate` calls a second for `seconds`, a resync of `count` halfway through
feeder = NftSetFeeder()
feeder.start()
for a in addrs:
    feeder.add("dom_bench_v6", 6, a, 3600)
assert feeder.flush(120)
nft.cmd("flush set inet edgeguard dom_bench_v6")
timer = threading.Timer(seconds / 2, feeder.resync)
n = int(rate * seconds)
live = [str(ipaddress.IPv6Address("2001:db8:1::") + i) for i in range(n)]
durations = []
start = time.perf_counter()
timer.start()
for i, a in enumerate(live):
    s = time.perf_counter_ns()
    feeder.add("dom_live_v6", 6, a, 600)
    durations.append(time.perf_counter_ns() - s)
    delay = start + (i + 1) / rate - time.perf_counter()
    if delay > 0:
        time.sleep(delay)
elapsed = time.perf_counter() - start
timer.join()
assert feeder.flush(120)
stats = feeder.stats()
feeder.stop()
report["answer_path"] = {
    "calls": n, "elapsed_s": elapsed, "p50_ns": pct(durations, 0.5),
    "p99_ns": pct(durations, 0.99), "p999_ns": pct(durations, 0.999), "max_ns": max(durations),
    "over_100us": sum(d > 100_000 for d in durations), "in_kernel": in_kernel("dom_live_v6"),
    "resynced": in_kernel("dom_bench_v6"), "stats": stats,
}
print(json.dumps(report))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--count", type=int, default=50_000, help="distinct addresses (<= 65535)")
    ap.add_argument("--rate", type=int, default=1000, help="answer-path add() calls a second")
    ap.add_argument("--seconds", type=float, default=10.0, help="answer-path duration")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (creates a scratch network namespace)", file=sys.stderr)
        return 2
    with scratch_namespace("egnftset") as ns:
        env = {**os.environ, "TZ": "UTC", "PYTHONPATH": str(ROOT)}

        def in_ns(argv: list[str], stdin: str | None = None) -> str:
            return subprocess.run(
                ["ip", "netns", "exec", ns, *argv],
                input=stdin,
                check=True,
                capture_output=True,
                text=True,
                env=env,
            ).stdout

        in_ns(["nft", "-f", "-"], TABLE)
        argv = [sys.executable, "-c", WORKER, str(args.count), str(args.rate)]
        r = json.loads(in_ns([*argv, str(args.seconds), TABLE]))
    fill, resync, add, live = r["fill"], r["resync"], r["add_ns"], r["answer_path"]
    fs = fill["stats"]
    print(f"nft set feeder, {args.count:,} distinct IPv6 addresses, one timeout set")
    print(
        f"  fill:     {fill['until_in_kernel_s']:.3f} s until all in the kernel "
        f"({args.count / fill['until_in_kernel_s']:,.0f} addresses/s; "
        f"{fill['in_kernel']:,} listed), {fs['batches']} transactions, "
        f"slowest {fs['max_batch_seconds'] * 1000:.1f} ms"
    )
    print(f"  refresh:  {r['refresh_s']:.3f} s ({args.count / r['refresh_s']:,.0f} addresses/s)")
    print(
        f"  resync after a table replace: {resync['elements']:,} elements in "
        f"{resync['seconds']:.3f} s ({resync['before']} -> {resync['after']:,} listed)"
    )
    print(
        f"  add() on the caller: {add['amortised']:.0f} ns amortised; timed per call "
        f"p50 {add['p50']} ns, p99 {add['p99']} ns, max {add['max'] / 1000:.1f} µs"
    )
    print(
        f"  answer path, {args.rate:,}/s for {args.seconds:g} s "
        f"(resync of {args.count:,} halfway): add() p50 {live['p50_ns']} ns, "
        f"p99 {live['p99_ns']} ns, p99.9 {live['p999_ns'] / 1000:.1f} µs, "
        f"max {live['max_ns'] / 1000:.1f} µs, {live['over_100us']} calls over 100 µs; "
        f"{live['in_kernel']:,}/{live['calls']:,} in the kernel, "
        f"{live['resynced']:,} resynced"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

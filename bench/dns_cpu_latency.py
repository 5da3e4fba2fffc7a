"""CPU per query and latency percentiles of `edgeguard dns serve`, for A/B of two checkouts.

The shared harness (`../shared/bench/dns-peers/run_peers.sh`) compares us with dnsmasq in one
run, but one run's ratio moves by +-20 % on a shared VM. This measures what a code change
does to our own server, alternating two checkouts run after run so drifts hit both alike:

* saturation (no ``--rate``): QPS, and user and system CPU microseconds per query read from
  ``/proc/<pid>/stat`` (the answer loop's own cost, which is what a change moves);
* fixed rate (``--rate``): p50/p99/p99.9/max latency from ``dnsperf -v`` per-query times,
  written to a file (a pipe stalls dnsperf and shows as 60-100 ms outliers).

The data and the upstream are the harness's: run it once first (it writes
``/tmp/dnsbench-data``), and start its upstream unbound on 127.0.0.1:5399 yourself:
``taskset -c 1 unbound -d -c ../shared/bench/dns-peers/conf/upstream-unbound.conf``.

    python bench/dns_cpu_latency.py --tree /tmp/old --tree . --mix blocked --runs 4
    python bench/dns_cpu_latency.py --tree . --mix blocked --rate 65000 --querylog
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path("/tmp/dnsbench-data")
PORT = 5313
TICK = os.sysconf("SC_CLK_TCK")


def start(tree: Path, querylog: Path | None, output: Path) -> subprocess.Popen[bytes]:
    python = Path(sys.executable)
    log_args = ["--querylog", str(querylog)] if querylog else ["--no-querylog"]
    cmd = ["taskset", "-c", "0", str(python), "-m", "webui.cli", "dns", "serve",
           "--listen", f"127.0.0.1:{PORT}", "--blocklist", str(DATA / "blocklist.txt"),
           "--upstream", "127.0.0.1:5399", *log_args]  # fmt: skip
    with output.open("wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, cwd=tree, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if b"resolver answering" in output.read_bytes():
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"server in {tree} did not start:\n{output.read_text(errors='replace')}")


def dnsperf(mix: str, *extra: str, output: Path | None = None) -> str:
    cmd = ["taskset", "-c", "1", "dnsperf", "-s", "127.0.0.1", "-p", str(PORT),
           "-d", str(DATA / f"q_{mix}.txt"), *extra]  # fmt: skip
    if output is None:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    with output.open("w") as f:
        subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=True)
    return ""


def cpu_ticks(pid: int) -> tuple[int, int]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])  # utime, stime


def percentile(values: list[float], p: float) -> float:
    k = min(len(values) - 1, max(0, round(p / 100 * len(values) + 0.5) - 1))  # nearest rank
    return values[k]


def one_run(tree: Path, args: argparse.Namespace) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        querylog = Path(tmp) / "q.db" if args.querylog else None
        proc = start(tree, querylog, Path(tmp) / "serve.out")
        try:
            dnsperf("allowed", "-n", "2")  # fill the cache, as the harness does
            dnsperf(args.mix, "-n", "1")  # and the verdict memo
            if args.rate:
                raw = Path(tmp) / "v.txt"
                dnsperf(args.mix, "-c", "4", "-l", str(args.duration), "-Q", str(args.rate),
                        "-v", output=raw)  # fmt: skip
                lat = sorted(
                    float(line.rsplit(None, 1)[1]) * 1000
                    for line in raw.open()
                    if line.startswith("> ")
                )
                return (f"n {len(lat)} p50 {percentile(lat, 50):.3f} p99 {percentile(lat, 99):.3f}"
                        f" p99.9 {percentile(lat, 99.9):.3f} max {lat[-1]:.2f} ms")  # fmt: skip
            user0, sys0 = cpu_ticks(proc.pid)
            text = dnsperf(args.mix, "-c", "4", "-l", str(args.duration))
            user1, sys1 = cpu_ticks(proc.pid)
        finally:
            proc.terminate()
            proc.wait(10)
    done = int(text.split("Queries completed:")[1].split()[0])
    qps = float(text.split("Queries per second:")[1].split()[0])
    us = 1e6 / TICK / done
    return f"qps {qps:,.0f} user {(user1 - user0) * us:.2f} us sys {(sys1 - sys0) * us:.2f} us"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--tree", action="append", type=Path, help="checkout to run (repeatable)")
    p.add_argument("--mix", choices=["blocked", "allowed", "mix"], default="blocked")
    p.add_argument("--rate", type=int, help="fixed QPS: measure latency instead of CPU")
    p.add_argument("--querylog", action="store_true", help="default configuration (log on)")
    p.add_argument("--duration", type=int, default=15)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    trees = [t.resolve() for t in args.tree or [Path(".")]]
    for run in range(1, args.runs + 1):
        for tree in trees:
            print(f"run {run} {tree}: {one_run(tree, args)}", flush=True)


if __name__ == "__main__":
    main()

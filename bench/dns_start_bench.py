"""Start-up of ``edgeguard dns serve`` with a big block list: cold (list parsed) and warm
(compiled list read back from the cache, ``dns_filter.listcache``).

Each run spawns the real command (interpreter start, the hash-seed re-exec and imports
included), sends the last name of the list every 10 ms over UDP and stops the clock at the
first NXDOMAIN, like the shared dns-peers harness does; then reads the server's VmRSS and
stops it. Cold runs empty the cache first; warm runs follow a start that filled it. The seed
and cache live in a temporary directory (``EDGEGUARD_HASH_SEED_FILE``), never in ``~``.
Optionally (``--dnsmasq``) Debian's dnsmasq is timed the same way with the hosts version of
the list, in the same run, as the peer the issue names.

Usage: .venv/bin/python bench/dns_start_bench.py [--list PATH] [--runs N] [--dnsmasq HOSTS]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED_LIST = Path("/tmp/dnsbench-data/blocklist.txt")
PORT = 5313


def query(name: str) -> bytes:
    labels = b"".join(bytes([len(label)]) + label.encode() for label in name.split("."))
    header = struct.pack("!6H", 0x4567, 0x0100, 1, 0, 0, 0)
    return header + labels + b"\0" + struct.pack("!HH", 1, 1)


def time_to_block(cmd: list[str], name: str, env: dict[str, str]) -> tuple[float, float]:
    """Seconds from spawning ``cmd`` to the first blocked answer (NXDOMAIN or 0.0.0.0) for
    ``name``, and the server's RSS in MB then."""
    packet = query(name)
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.01)
    try:
        while time.monotonic() - started < 60:
            if proc.poll() is not None:
                raise SystemExit(f"{cmd[0]} exited with {proc.returncode}")
            sock.sendto(packet, ("127.0.0.1", PORT))
            try:
                answer = sock.recv(512)
            except OSError:
                continue
            nxdomain = answer[3] & 0x0F == 3
            null_ip = answer[6:8] != b"\0\0" and answer[-4:] == b"\0\0\0\0"  # dnsmasq: 0.0.0.0
            if answer[:2] == packet[:2] and (nxdomain or null_ip):
                elapsed = time.monotonic() - started
                with open(f"/proc/{proc.pid}/status") as status:
                    rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))
                return elapsed, rss / 1024
        raise SystemExit(f"no blocked answer within 60 s from {cmd}")
    finally:
        sock.close()
        proc.terminate()
        proc.wait(10)


def last_name(path: Path) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - 512))
        return f.read().split()[-1].decode()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--list", type=Path, default=SHARED_LIST, help="plain domain list")
    ap.add_argument("--runs", type=int, default=5, help="starts of each kind")
    ap.add_argument("--dnsmasq", type=Path, help="hosts-format list: also time dnsmasq with it")
    args = ap.parse_args()
    if not args.list.exists():
        raise SystemExit(f"{args.list}: missing (python3 ../shared/bench/dns-peers/gen_lists.py)")
    name = last_name(args.list)
    work = Path(tempfile.mkdtemp(prefix="edgeguard-start-bench-"))
    env = {**os.environ, "EDGEGUARD_HASH_SEED_FILE": str(work / "hashseed")}
    env.pop("PYTHONHASHSEED", None)
    cmd = [sys.executable, "-m", "webui.cli", "dns", "serve", "--listen", f"127.0.0.1:{PORT}",
           "--blocklist", str(args.list), "--upstream", "127.0.0.1:9", "--no-querylog"]  # fmt: skip
    results: dict[str, list[tuple[float, float]]] = {"cold": [], "warm": [], "dnsmasq": []}
    try:
        for _ in range(args.runs):
            shutil.rmtree(work / "index", ignore_errors=True)
            results["cold"].append(time_to_block(cmd, name, env))
            results["warm"].append(time_to_block(cmd, name, env))
            if args.dnsmasq:
                peer = ["dnsmasq", "-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                        f"--addn-hosts={args.dnsmasq}", "--listen-address=127.0.0.1",
                        "--bind-interfaces", f"--port={PORT}", "--server=127.0.0.1#9",
                        "--user=root", "--pid-file="]  # fmt: skip
                results["dnsmasq"].append(time_to_block(peer, name, env))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"list {args.list} ({name} probed), {args.runs} starts each, median (min-max):")
    for kind, runs in results.items():
        if not runs:
            continue
        times = [t for t, _ in runs]
        rss = [r for _, r in runs]
        spread = f"{min(times):.3f}-{max(times):.3f}"
        print(f"  {kind:8} first blocked answer {statistics.median(times):.3f} s ({spread}), "
              f"RSS then {statistics.median(rss):.1f} MB")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

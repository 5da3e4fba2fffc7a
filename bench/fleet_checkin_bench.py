"""Benchmark: the MSP fleet server under 1,000 appliances checking in every 60 s (issue #8).

Target: p99 check-in latency under 100 ms, bounded load from loopback.

1. Issues ``--appliances`` credentials (site ``site-<n % 100>``) in a fresh state dir.
2. Starts the real server process (``python -m webui.cli msp serve --plain-http``:
   gunicorn, one gthread worker) on 127.0.0.1.
3. Steady mode: every appliance checks in once per ``--interval`` seconds, the appliances
   spread evenly over the interval (1,000 / 60 s = 16.7 requests/s), for ``--duration`` s.
   Burst mode: ``--burst-rate`` requests/s (default 100) for ``--burst-duration`` s.
   Open loop: a dispatcher releases each request at its scheduled time to a pool of client
   threads with keep-alive connections (an appliance's agent holds one connection per
   check-in; keep-alive here measures the server, not the TCP handshake). Latency is timed
   from the send; "late" is how far behind schedule the client started (client saturation).

    .venv/bin/python bench/fleet_checkin_bench.py [--appliances 1000] [--interval 60]
        [--duration 120] [--burst-rate 100] [--burst-duration 120] [--tls]
"""

from __future__ import annotations

import argparse
import http.client
import json
import queue
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from webui.fleet.store import FleetStore  # noqa: E402


def body(site: str, appliance: str, n: int) -> bytes:
    return json.dumps(
        {
            "site": site, "appliance_id": appliance, "software": "0.1.0", "bundle_version": 3,
            "policy_sha256": "ab" * 32, "live_version": 12,
            "last_apply": {"ok": True, "error": None, "at": "2026-05-28T20:00:00Z"},
            "last_sync": {"at": "2026-05-28T20:00:00Z", "result": "unchanged", "reason": None},
            "conflicts": [],
            "health": {"resolver": True, "ruleset_loaded": True, "disk_free_mb": 900,
                       "uptime_s": 600 + n},
            "counters": {"blocked": {"category:malware": n, "category:ads": 3 * n}},
            "anomalies": {"max_host_score": n % 90, "open_high": 0},
            "time": "2026-05-28T20:26:40Z",
        }
    ).encode()  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_load(
    port: int, tokens: list[tuple[str, str, str]], rate: float, duration: float, clients: int,
    tls: bool,
) -> dict[str, Any]:  # fmt: skip
    jobs: queue.Queue[tuple[float, int] | None] = queue.Queue()
    latencies: list[float] = []
    lateness: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    context = ssl._create_unverified_context() if tls else None  # loopback, self-signed

    def connect() -> http.client.HTTPConnection:
        if context is not None:
            return http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
        return http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def worker() -> None:
        conn = connect()
        while (job := jobs.get()) is not None:
            due, n = job
            site, appliance, token = tokens[n % len(tokens)]
            data = body(site, appliance, n)
            start = time.perf_counter()
            late = start - due
            try:
                conn.request(
                    "POST", "/api/v1/checkin", data,
                    {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                )  # fmt: skip
                resp = conn.getresponse()
                resp.read()
                took = time.perf_counter() - start
                with lock:
                    if resp.status != 200:
                        errors.append(f"HTTP {resp.status}")
                    latencies.append(took)
                    lateness.append(late)
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    errors.append(repr(exc))
                conn.close()
                conn = connect()
        conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    total = int(rate * duration)
    begin = time.perf_counter() + 0.5
    for n in range(total):
        due = begin + n / rate
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        jobs.put((due, n))
    for _ in threads:
        jobs.put(None)
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - begin
    q = (
        statistics.quantiles(latencies, n=1000, method="inclusive")
        if len(latencies) > 1
        else [0.0] * 999
    )
    return {
        "requests": total,
        "ok": len(latencies) - sum(1 for e in errors if e.startswith("HTTP")),
        "errors": len(errors),
        "error_kinds": sorted(set(errors))[:5],
        "achieved_rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(q[499] * 1000, 2),
        "p95_ms": round(q[949] * 1000, 2),
        "p99_ms": round(q[989] * 1000, 2),
        "max_ms": round(max(latencies, default=0.0) * 1000, 2),
        "client_late_p99_ms": round(sorted(lateness)[int(len(lateness) * 0.99)] * 1000, 2)
        if lateness
        else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--appliances", type=int, default=1000)
    ap.add_argument("--interval", type=float, default=60.0)
    ap.add_argument("--duration", type=float, default=120.0)
    ap.add_argument("--burst-rate", type=float, default=100.0)
    ap.add_argument("--burst-duration", type=float, default=120.0)
    ap.add_argument("--clients", type=int, default=32, help="client threads (connections)")
    ap.add_argument("--tls", action="store_true", help="HTTPS (self-signed) instead of HTTP")
    args = ap.parse_args()

    state = Path(tempfile.mkdtemp(prefix="eg-fleet-bench-"))
    store = FleetStore(state / "fleet.db")
    tokens = []
    for n in range(args.appliances):
        site = f"site-{n % 100:03d}"
        tokens.append((site, f"box-{n:04d}", store.add_credential(site, time.time())))
    store.close()
    pw = state / "pw"
    pw.write_text("bench operator password\n")
    port = free_port()
    argv = [
        sys.executable, "-m", "webui.cli", "msp", "serve", "--state-dir", str(state),
        "--publish", str(state / "publish"), "--listen", f"127.0.0.1:{port}",
        "--password-file", str(pw), "--interval", str(args.interval),
    ] + ([] if args.tls else ["--plain-http"])  # fmt: skip
    server = subprocess.Popen(argv, cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("server did not start") from None
                time.sleep(0.1)
        steady_rate = args.appliances / args.interval
        print(f"steady: {args.appliances} appliances every {args.interval:g} s "
              f"= {steady_rate:.1f} req/s for {args.duration:g} s", flush=True)  # fmt: skip
        steady = run_load(port, tokens, steady_rate, args.duration, args.clients, args.tls)
        print(json.dumps(steady), flush=True)
        print(f"burst: {args.burst_rate:g} req/s for {args.burst_duration:g} s", flush=True)
        burst = run_load(port, tokens, args.burst_rate, args.burst_duration, args.clients, args.tls)
        print(json.dumps(burst), flush=True)
        size = sum(p.stat().st_size for p in state.glob("fleet.db*"))
        print(f"fleet.db with WAL: {size / 1e6:.1f} MB after "
              f"{steady['requests'] + burst['requests']} check-ins", flush=True)  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

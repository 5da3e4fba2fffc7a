"""Benchmark: the web UI's dashboard and query log on a 5,000,000-row query log (issue #6).

Targets: the dashboard and filtered query-log pages served in under 200 ms (p95), the UI
process under 80 MB resident.

1. Generates a query log the way an older resolver wrote it (``queries`` and its ts index
   only, no aggregates): 5,000,000 rows over 7 days ending now, ~200 clients and 50,000
   names, both with Zipf popularity, about 15 % blocked (a fixed set of block-listed names),
   the rest mostly allowed or cached, a few servfail/refused/local.
2. Opens it with ``dns_filter.querylog.QueryLog``, exactly as the resolver does after an
   upgrade: its writer thread builds the UI's indexes and counts the old rows into the
   aggregate tables (the one-off backfill); both are timed.
3. Records a live policy version in the config store (no nftables involved), makes a user,
   and starts the real UI server process (``python -m webui.cli ui serve --plain-http``:
   gunicorn, one gthread worker with 4 threads, as on the box) on 127.0.0.1.
4. Logs in through urllib with a cookie jar (CSRF token from the login page) and times
   ``--requests`` requests of each page kind, one at a time, with filter values drawn at
   random (a different client, name, domain or hour each request); then reads the
   worker's and the master's VmRSS and VmHWM from /proc.

    .venv/bin/python bench/webui_bench.py [--rows 5000000] [--requests 200]
        [--state /tmp/eg-webui-bench] [--reuse]

``--reuse`` keeps a log generated and migrated by an earlier run (generation and the
migration take a few minutes).
"""

from __future__ import annotations

import argparse
import http.cookiejar
import os
import random
import re
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance.store import ConfigStore  # noqa: E402
from dns_filter.querylog import QueryLog  # noqa: E402
from webui.store import UiStore  # noqa: E402

PASSWORD = "bench password 123"
PORT = 18_443
DAYS = 7
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS queries (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, client TEXT NOT NULL, qname TEXT NOT NULL,
    qtype INTEGER NOT NULL, verdict TEXT NOT NULL, rule TEXT, list TEXT, upstream TEXT,
    latency_ms REAL NOT NULL, rcode INTEGER NOT NULL, client_group TEXT
);
CREATE INDEX IF NOT EXISTS queries_ts ON queries (ts);
"""
SUBS = ["www", "api", "cdn", "static", "img", "m", "login", "assets", "edge", "mail", "ads",
        "track", "telemetry", "metrics", "s3", "video", "push", "auth", "dl", "update"]  # fmt: skip
TLDS = ["com", "net", "org", "de", "io", "co.uk", "fr", "example"]


class Workload:
    """Names, clients and their popularity: shared by the generator and the requests."""

    def __init__(self, seed: int = 7) -> None:
        rnd = random.Random(seed)
        words = ["".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(4, 9)))
                 for _ in range(9_000)]  # fmt: skip
        self.domains = sorted({f"{w}{rnd.randint(0, 99)}.{rnd.choice(TLDS)}" for w in words})
        names: set[str] = set(self.domains)
        while len(names) < 50_000:
            names.add(f"{rnd.choice(SUBS)}{rnd.choice(['', '', '1', '2', '-eu'])}."
                      f"{rnd.choice(self.domains)}")  # fmt: skip
        self.names = sorted(names)
        rnd.shuffle(self.names)  # popularity rank independent of the name
        self.name_cum = _cumulative([1 / (i + 1) for i in range(len(self.names))])
        self.clients = [f"192.168.{1 + i // 100}.{10 + i % 100}" for i in range(190)]
        self.clients += [f"2001:db8:10::{i:x}" for i in range(1, 11)]
        rnd.shuffle(self.clients)
        self.client_cum = _cumulative([1 / (i + 1) ** 0.9 for i in range(len(self.clients))])
        self.blocked: set[str] = set()
        mass, total = 0.0, self.name_cum[-1]
        for i in rnd.sample(range(len(self.names)), len(self.names)):  # block-listed names
            if mass >= 0.15 * total:
                break
            if i < 5:
                continue  # the very top names are not ads: keep the share near 15 %
            self.blocked.add(self.names[i])
            mass += 1 / (i + 1)


def _cumulative(weights: list[float]) -> list[float]:
    out, acc = [], 0.0
    for w in weights:
        acc += w
        out.append(acc)
    return out


def generate(path: Path, rows: int, wl: Workload) -> float:
    started = time.perf_counter()
    rnd = random.Random(11)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-200000")
    db.executescript(OLD_SCHEMA)
    end = time.time() - 60
    start = end - DAYS * 86_400
    step = (end - start) / rows
    chunk = 250_000
    for first in range(0, rows, chunk):
        n = min(chunk, rows - first)
        names = rnd.choices(wl.names, cum_weights=wl.name_cum, k=n)
        clients = rnd.choices(wl.clients, cum_weights=wl.client_cum, k=n)
        batch: list[tuple[object, ...]] = []
        for j in range(n):
            name, r = names[j], rnd.random()
            row: tuple[object, ...]
            qtype = 1 if r < 0.6 else 28 if r < 0.95 else 65
            ts = start + (first + j) * step
            if name in wl.blocked:
                row = (ts, clients[j], name, qtype, "blocked", name, "ads", None, 0.05, 3, "staff")
            elif r < 0.30:
                row = (ts, clients[j], name, qtype, "cached", None, None, None, 0.1, 0, "staff")
            elif r < 0.99:
                latency = rnd.expovariate(1 / 20)
                row = (ts, clients[j], name, qtype, "allowed", None, None, "198.51.100.53:53",
                       latency, 0, "staff")  # fmt: skip
            else:
                verdict = ("servfail", "refused", "local")[int(r * 1000) % 3]
                row = (ts, clients[j], name, qtype, verdict, None, None, None, 1.0, 2, None)
            batch.append(row)
        db.execute("BEGIN")
        db.executemany("INSERT INTO queries (ts, client, qname, qtype, verdict, rule, list,"
                       " upstream, latency_ms, rcode, client_group) VALUES"
                       " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", batch)  # fmt: skip
        db.execute("COMMIT")
    db.close()
    return time.perf_counter() - started


def migrate(path: Path) -> tuple[float, float]:
    """Open the old log like the upgraded resolver: (index build s, backfill s)."""
    started = time.perf_counter()
    log = QueryLog(path, retention_days=DAYS + 1)
    probe = sqlite3.connect(path)
    try:
        while not probe.execute(
            "SELECT 1 FROM sqlite_schema WHERE name = 'queries_verdict'"
        ).fetchone():
            time.sleep(0.2)
        indexed = time.perf_counter()
        while log.backfilling:
            time.sleep(0.2)
        done = time.perf_counter()
    finally:
        probe.close()
        log.close()
    return indexed - started, done - indexed


def prepare_state(state: Path) -> None:
    store = ConfigStore(state)
    try:
        if store.live() is None:
            policy = (ROOT / "policies" / "examples" / "web-filter.yaml").read_text()
            vid = store.record(policy, "table inet edgeguard {}\n", author="bench",
                               message="bench version")  # fmt: skip
            store.make_live(vid, confirmed=True, pending=None)
    finally:
        store.close()
    ui = UiStore(state / "ui" / "ui.db")
    try:
        if ui.user_by_name("bench") is None:
            ui.add_user("bench", PASSWORD, "admin")
    finally:
        ui.close()


def start_server(state: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "webui.cli", "ui", "serve", "--state-dir", str(state),
            "--listen", f"127.0.0.1:{PORT}", "--plain-http"]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", PORT), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the UI server did not start")


class Browser:
    def __init__(self) -> None:
        self.base = f"http://127.0.0.1:{PORT}"
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, path: str) -> tuple[float, str]:
        started = time.perf_counter()
        with self.opener.open(self.base + path, timeout=30) as resp:
            body = resp.read().decode()
            assert resp.status == 200, (path, resp.status)
        return time.perf_counter() - started, body

    def login(self) -> None:
        _, page = self.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token
        form = urllib.parse.urlencode(
            {"username": "bench", "password": PASSWORD, "csrf_token": token.group(1)}
        ).encode()
        with self.opener.open(self.base + "/login", data=form, timeout=30) as resp:
            assert "Dashboard" in resp.read().decode(), "login failed"


def workloads(wl: Workload, b: Browser, rnd: random.Random) -> dict[str, Callable[[], str]]:
    now = time.time()

    def hour_window() -> str:
        start = int(now - rnd.uniform(3_600, DAYS * 86_400 - 3_600))
        return f"from={start}&to={start + 3_600}"

    def client() -> str:
        return urllib.parse.quote(rnd.choice(wl.clients))

    def page2() -> str:
        _, body = b.get(f"/querylog?client={client()}")
        older = re.search(r'<a href="([^"]+)" rel="next">', body)
        assert older, "no second page"
        return older.group(1).replace("&amp;", "&")

    return {
        "dashboard `/`": lambda: "/",
        "query log, no filter": lambda: "/querylog",
        "query log, client": lambda: f"/querylog?client={client()}",
        "query log, exact name": lambda: f"/querylog?name={rnd.choice(wl.names)}",
        "query log, `*.domain` suffix": lambda: f"/querylog?name=*.{rnd.choice(wl.domains)}",
        "query log, blocked + 1 h range": lambda: f"/querylog?verdict=blocked&{hour_window()}",
        "query log, servfail + 1 h range": lambda: f"/querylog?verdict=servfail&{hour_window()}",
        "query log, client + blocked": lambda: f"/querylog?client={client()}&verdict=blocked",
        "query log, page 2 (cursor)": page2,
        "query log, `*text*` substring": lambda: f"/querylog?name=*{rnd.choice(wl.names)[2:6]}*",
        "API `/api/v1/stats`": lambda: "/api/v1/stats",
    }


def proc_status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) // 1024
    return out


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--state", type=Path, default=Path("/tmp/eg-webui-bench"))
    ap.add_argument("--reuse", action="store_true", help="keep an earlier run's query log")
    args = ap.parse_args()
    wl = Workload()
    state: Path = args.state
    db = state / "querylog.db"
    if not (args.reuse and db.exists()):
        if state.exists():
            subprocess.run(["rm", "-rf", "--", str(state)], check=True)
        state.mkdir(parents=True)
        gen = generate(db, args.rows, wl)
        print(f"generated {args.rows:,} rows in {gen:.1f} s", flush=True)
        indexed, backfilled = migrate(db)
        print(f"migration: indexes {indexed:.1f} s, aggregates backfill {backfilled:.1f} s",
              flush=True)  # fmt: skip
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        count = conn.execute("SELECT count(*) FROM queries").fetchone()[0]
        share = conn.execute("SELECT sum(blocked) * 1.0 / sum(total) FROM stats_minute").fetchone()
    print(f"{count:,} rows, {share[0]:.1%} blocked, {db.stat().st_size / 1e9:.2f} GB", flush=True)
    prepare_state(state)
    server = start_server(state)
    try:
        b = Browser()
        b.login()
        rnd = random.Random(5)
        results: dict[str, tuple[list[float], int]] = {}
        for name, make in workloads(wl, b, rnd).items():
            times, partial = [], 0
            for _ in range(3):
                b.get(make())  # warm-up, not timed
            for _ in range(args.requests):
                elapsed, body = b.get(make())
                times.append(elapsed)
                partial += "stopped early" in body
            results[name] = (times, partial)
            print(f"  {name}: p95 {percentile(times, 0.95) * 1000:.1f} ms", flush=True)
        children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
        worker = proc_status(int(children[0]))
        master = proc_status(server.pid)
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    print(f"\n{count:,} rows; {args.requests} requests per page, one at a time.\n")
    print("| page | p50 | p95 | max | pages cut short by the search budget |")
    print("| --- | --- | --- | --- | --- |")
    for name, (times, partial) in results.items():
        p50, p95 = statistics.median(times) * 1000, percentile(times, 0.95) * 1000
        print(f"| {name} | {p50:.1f} ms | **{p95:.1f} ms** | {max(times) * 1000:.1f} ms |"
              f" {partial} |")  # fmt: skip
    print(
        f"\nUI worker process: VmRSS **{worker['VmRSS']} MB** after the run "
        f"(peak VmHWM {worker['VmHWM']} MB); gunicorn master: VmRSS {master['VmRSS']} MB."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

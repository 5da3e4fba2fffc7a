"""``edgeguard dns serve``: the resolver on its own (benchmarks, debugging, other tools).

Two ways to configure it:

* flags: ``--blocklist``/``--allowlist`` files, one policy for every client;
* ``--policy FILE``: the policy's ``dns:`` and ``web_filter:`` sections, built exactly as
  ``edgeguard run`` builds them (``dns_service.resolver_for``), so per-client groups apply.
  ``--listen``, ``--upstream``, ``--no-querylog`` and ``--querylog`` override the policy;
  list caches and the query log go to ``--state-dir`` (default: a new temporary folder).
  Nothing else of the policy is touched: no ruleset, no nft sets, no block page.
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

from appliance.dns_service import cache_line, index_cache, resolver_for
from appliance.neighbors import NeighborTable
from appliance.webfilter import uses_macs
from dns_filter.errors import DnsFilterError
from dns_filter.matcher import Matcher
from dns_filter.querylog import QueryLog
from dns_filter.resolver import DEFAULT_CLIENT_NETWORKS, Resolver, ResolverConfig
from dns_filter.server import DnsServer, ListenAddress
from dns_filter.updater import ListSource, ListUpdater
from policies.errors import PolicyLoadError, PolicyValidationError
from policies.loader import load_policy
from policies.model import Policy


def list_sources(args: argparse.Namespace) -> list[ListSource]:
    """One source per list file, format detected per file."""
    return [ListSource(str(p), "block", files=(p,)) for p in args.blocklist or []] + [
        ListSource(str(p), "allow", files=(p,)) for p in args.allowlist or []
    ]


LIST_CACHE = Path(tempfile.gettempdir()) / "edgeguard-lists"
DEFAULT_QUERYLOG = Path("var/dns/querylog.db")
# Flags that configure what the policy configures: refused together with --policy.
POLICY_CONFLICTS = (
    ("blocklist", "--blocklist"),
    ("allowlist", "--allowlist"),
    ("block_mode", "--block-mode"),
    ("allow_client", "--allow-client"),
)


def _metrics_server(resolver: Resolver, address: ListenAddress) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/metrics":
                self.send_error(404)
                return
            log = resolver.log
            body = resolver.metrics.render(
                cache=resolver.cache.stats(),
                upstreams=resolver.pool.stats(),
                querylog=None if log is None else {"written": log.written, "dropped": log.dropped},
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            del format, args

    server = http.server.ThreadingHTTPServer((address.host, address.port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


async def serve(resolver: Resolver, listen: list[ListenAddress], *, reuse_port: bool) -> None:
    server = DnsServer(resolver, listen, reuse_port=reuse_port)
    await server.start()
    print(f"resolver answering on {', '.join(f'{h}:{p}' for h, p in server.bound)}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()
    await resolver.close()


def cmd_dns_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    started = time.monotonic()
    if args.policy is not None:
        return _serve_policy(args, started)
    try:
        listen = [ListenAddress.parse(a) for a in args.listen or ["127.0.0.1:5353"]]
        cache = index_cache()
        matcher = ListUpdater(
            list_sources(args), LIST_CACHE, lambda _: None, index_cache=cache
        ).build()
    except (OSError, ValueError, DnsFilterError) as exc:
        print(f"edgeguard dns serve: {exc}", file=sys.stderr)
        return 2
    for name, summary in matcher.lists.items():
        print(f"list {name}: {summary}", flush=True)
    print(cache_line(cache), flush=True)
    config = ResolverConfig(
        upstreams=tuple(args.upstream or ["127.0.0.1:5399"]),
        block_mode=args.block_mode or "nxdomain",
        client_networks=tuple(args.allow_client or DEFAULT_CLIENT_NETWORKS),
    )
    for worker in range(1, args.workers):
        if os.fork() == 0:  # children share the built lists copy-on-write
            return _run(config, matcher, listen, args, worker, started)
    return _run(config, matcher, listen, args, 0, started)


def _querylog_path(path: Path, worker: int) -> Path:
    return path.with_suffix(f".{worker}.db") if worker else path


def _run(config: ResolverConfig, matcher: Matcher, listen: list[ListenAddress],
         args: argparse.Namespace, worker: int, started: float) -> int:  # fmt: skip
    querylog = None
    if not args.no_querylog:
        querylog = QueryLog(_querylog_path(args.querylog or DEFAULT_QUERYLOG, worker))
    resolver = Resolver(config, matcher, log=querylog)

    def swap(new: Matcher) -> None:
        resolver.matcher = new  # lists edited on disk: swapped in whole

    updater = ListUpdater(list_sources(args), LIST_CACHE, swap, index_cache=index_cache())
    return _serve_worker(resolver, updater, listen, args, worker, started)


def policy_for_serve(policy: Policy, args: argparse.Namespace) -> Policy:
    """The policy with the command line's overrides applied to its ``dns`` section.

    The query log is always off here: each worker opens its own after the fork."""
    dns = policy.dns
    if dns is None:
        raise ValueError("the policy has no dns section")
    if args.listen:
        dns = replace(dns, listen=tuple(args.listen))
    elif not dns.listen:
        dns = replace(dns, listen=("127.0.0.1:5353",))  # not the zones' addresses, port 53
    if args.upstream:
        dns = replace(dns, upstreams=tuple(args.upstream))
    return replace(policy, dns=replace(dns, query_log=False))


def _serve_policy(args: argparse.Namespace, started: float) -> int:
    conflicts = [flag for attr, flag in POLICY_CONFLICTS if getattr(args, attr)]
    if conflicts:
        print(
            f"edgeguard dns serve: {', '.join(conflicts)}: set by the policy, not with --policy",
            file=sys.stderr,
        )
        return 2
    try:
        loaded = load_policy(args.policy)
    except PolicyValidationError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"edgeguard dns serve: {args.policy}: not a valid policy", file=sys.stderr)
        return 2
    except PolicyLoadError as exc:
        print(f"edgeguard dns serve: {exc}", file=sys.stderr)
        return 2
    for warning in loaded.warnings:
        print(warning, file=sys.stderr)
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="edgeguard-dns-"))
    # Started in each worker (threads do not survive a fork); read-only: `ip -j neigh show`.
    neighbors = NeighborTable() if uses_macs(loaded.policy) else None
    try:
        policy = policy_for_serve(loaded.policy, args)
        state_dir.mkdir(parents=True, exist_ok=True)
        resolver, listen, lines, updater = resolver_for(policy, state_dir, neighbors=neighbors)
    except (OSError, ValueError, DnsFilterError) as exc:
        print(f"edgeguard dns serve: {exc}", file=sys.stderr)
        return 2
    for line in lines:
        print(line, flush=True)
    if resolver.clients is not None:
        print(f"client groups: {', '.join(resolver.clients.group_names())}", flush=True)
    dns = loaded.policy.dns
    assert dns is not None
    log_path = args.querylog or state_dir / "querylog.db"
    want_log = dns.query_log and not args.no_querylog
    worker = 0
    for child in range(1, args.workers):
        if os.fork() == 0:  # children share the built lists copy-on-write
            worker = child
            break
    if want_log:
        path = _querylog_path(log_path, worker)
        resolver.log = QueryLog(path, retention_days=dns.log_retention_days)
    if neighbors is not None:
        neighbors.start(interval=2.0)
    try:
        return _serve_worker(resolver, updater, listen, args, worker, started)
    finally:
        if neighbors is not None:
            neighbors.stop()


def _serve_worker(
    resolver: Resolver,
    updater: ListUpdater,
    listen: list[ListenAddress],
    args: argparse.Namespace,
    worker: int,
    started: float,
) -> int:
    updater.start(file_poll=5.0)
    metrics = None
    if args.metrics and worker == 0:
        where = ListenAddress.parse(args.metrics)
        metrics = _metrics_server(resolver, where)
        print(f"metrics on http://{where.host}:{metrics.server_port}/metrics", flush=True)
    if worker == 0:
        print(f"ready in {time.monotonic() - started:.2f} s", flush=True)
    try:
        asyncio.run(serve(resolver, listen, reuse_port=args.workers > 1))
    finally:
        updater.stop()
        if resolver.log is not None:
            resolver.log.close()
        if metrics is not None:
            metrics.shutdown()
    return 0


def add_dns_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dns = sub.add_parser("dns", help="the DNS filtering resolver")
    dsub = dns.add_subparsers(dest="dns_command", required=True, metavar="COMMAND")
    p = dsub.add_parser("serve", help="run the resolver alone")
    p.add_argument(
        "--policy",
        type=Path,
        help="build the resolver from this policy's dns and web_filter sections "
        "(per-client groups); the list flags then come from the policy",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        help="with --policy: list caches and query log (default: a new temporary folder)",
    )
    p.add_argument(
        "--listen",
        action="append",
        help="address:port (repeatable; default 127.0.0.1:5353, or the policy's dns.listen)",
    )
    p.add_argument("--blocklist", action="append", type=Path, help="block list file (repeatable)")
    p.add_argument("--allowlist", action="append", type=Path, help="allow list file (repeatable)")
    p.add_argument(
        "--upstream",
        action="append",
        help="upstream host:port, tcp://, tls://host:853#name (replaces the policy's)",
    )
    p.add_argument(
        "--block-mode", choices=["nxdomain", "null", "ip", "refused"], help="default: nxdomain"
    )
    p.add_argument(
        "--allow-client", action="append", help="client network CIDR (default: loopback + private)"
    )
    p.add_argument(
        "--querylog",
        type=Path,
        help=f"query log (SQLite; default {DEFAULT_QUERYLOG}, with --policy STATE_DIR/querylog.db)",
    )
    p.add_argument("--no-querylog", action="store_true", help="lean mode: no query log")
    p.add_argument(
        "--workers", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)"
    )
    p.add_argument(
        "--metrics", help="serve Prometheus metrics on address:port (e.g. 127.0.0.1:9153)"
    )
    p.set_defaults(func=cmd_dns_serve)

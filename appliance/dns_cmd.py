"""``edgeguard dns serve``: the resolver on its own (benchmarks, debugging, other tools)."""

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
from pathlib import Path

from dns_filter.errors import DnsFilterError
from dns_filter.matcher import Matcher
from dns_filter.querylog import QueryLog
from dns_filter.resolver import DEFAULT_CLIENT_NETWORKS, Resolver, ResolverConfig
from dns_filter.server import DnsServer, ListenAddress
from dns_filter.updater import ListSource, ListUpdater


def list_sources(args: argparse.Namespace) -> list[ListSource]:
    """One source per list file, format detected per file."""
    return [ListSource(str(p), "block", files=(p,)) for p in args.blocklist or []] + [
        ListSource(str(p), "allow", files=(p,)) for p in args.allowlist or []
    ]


LIST_CACHE = Path(tempfile.gettempdir()) / "edgeguard-lists"


def _metrics_server(resolver: Resolver, address: ListenAddress) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/metrics":
                self.send_error(404)
                return
            body = resolver.metrics.render(
                cache=resolver.cache.stats(), upstreams=resolver.pool.stats()
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
    try:
        listen = [ListenAddress.parse(a) for a in args.listen or ["127.0.0.1:5353"]]
        matcher = ListUpdater(list_sources(args), LIST_CACHE, lambda _: None).build()
    except (OSError, ValueError, DnsFilterError) as exc:
        print(f"edgeguard dns serve: {exc}", file=sys.stderr)
        return 2
    for name, summary in matcher.lists.items():
        print(f"list {name}: {summary}", flush=True)
    config = ResolverConfig(
        upstreams=tuple(args.upstream or ["127.0.0.1:5399"]),
        block_mode=args.block_mode,
        client_networks=tuple(args.allow_client or DEFAULT_CLIENT_NETWORKS),
    )
    for worker in range(1, args.workers):
        if os.fork() == 0:  # children share the built lists copy-on-write
            return _run(config, matcher, listen, args, worker, started)
    return _run(config, matcher, listen, args, 0, started)


def _run(config: ResolverConfig, matcher: Matcher, listen: list[ListenAddress],
         args: argparse.Namespace, worker: int, started: float) -> int:  # fmt: skip
    querylog = None
    if not args.no_querylog:
        path = args.querylog.with_suffix(f".{worker}.db") if worker else args.querylog
        querylog = QueryLog(path)
    resolver = Resolver(config, matcher, log=querylog)

    def swap(new: Matcher) -> None:
        resolver.matcher = new  # lists edited on disk: swapped in whole

    updater = ListUpdater(list_sources(args), LIST_CACHE, swap)
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
        if querylog is not None:
            querylog.close()
        if metrics is not None:
            metrics.shutdown()
    return 0


def add_dns_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dns = sub.add_parser("dns", help="the DNS filtering resolver")
    dsub = dns.add_subparsers(dest="dns_command", required=True, metavar="COMMAND")
    p = dsub.add_parser("serve", help="run the resolver alone")
    p.add_argument(
        "--listen", action="append", help="address:port (repeatable; default 127.0.0.1:5353)"
    )
    p.add_argument("--blocklist", action="append", type=Path, help="block list file (repeatable)")
    p.add_argument("--allowlist", action="append", type=Path, help="allow list file (repeatable)")
    p.add_argument(
        "--upstream", action="append", help="upstream host:port, tcp://, tls://host:853#name"
    )
    p.add_argument(
        "--block-mode", choices=["nxdomain", "null", "ip", "refused"], default="nxdomain"
    )
    p.add_argument(
        "--allow-client", action="append", help="client network CIDR (default: loopback + private)"
    )
    p.add_argument(
        "--querylog", type=Path, default=Path("var/dns/querylog.db"), help="query log (SQLite)"
    )
    p.add_argument("--no-querylog", action="store_true", help="lean mode: no query log")
    p.add_argument(
        "--workers", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)"
    )
    p.add_argument(
        "--metrics", help="serve Prometheus metrics on address:port (e.g. 127.0.0.1:9153)"
    )
    p.set_defaults(func=cmd_dns_serve)

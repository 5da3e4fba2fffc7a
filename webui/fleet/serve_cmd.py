"""``edgeguard msp serve|add-appliance|revoke-appliance|list|site``: run the MSP's fleet
server, issue and revoke appliance credentials, and read the fleet from the command line.

They join the signing commands (``msp init|sign|rotate-key``, in ``appliance.sync``) in one
``msp`` group, but never share state with them: signing writes the publish directory, the
fleet server only reads it.
"""

from __future__ import annotations

import argparse
import base64
import json
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from appliance.cli import SubCommands

DEFAULT_FLEET_STATE = Path("/var/lib/edgeguard-msp")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def read_password(path: Path) -> str:
    """The operator password: the file's first line. Refused if empty."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SystemExit(f"--password-file {path}: cannot read it ({exc.strerror})") from exc
    password = text.splitlines()[0].strip() if text.strip() else ""
    if len(password) < 12:
        raise SystemExit(f"--password-file {path}: put a password of 12 characters or more in it")
    return password


def cmd_serve(args: argparse.Namespace) -> int:
    from webui.fleet.app import FleetSettings, create_fleet_app
    from webui.server import _Gunicorn, ensure_certificate

    password = read_password(args.password_file) if args.password_file else None
    host, _, port = args.listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    options: dict[str, Any] = {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": 1,  # one process: SQLite writes are serialised anyway
        "worker_class": "gthread",
        "threads": args.threads,
        "timeout": 60,
        "keepalive": 75,  # agents and load balancers reuse connections
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
    }
    scheme = "http"
    if not args.plain_http:
        cert, key = args.cert, args.key
        if cert is None or key is None:
            cert, key = ensure_certificate(args.state_dir / "tls", ["localhost", "127.0.0.1", host])
        options.update(certfile=str(cert), keyfile=str(key))
        scheme = "https"
    app = create_fleet_app(
        args.state_dir, args.publish, operator_password=password,
        settings=FleetSettings(checkin_interval=args.interval),
    )  # fmt: skip
    shown = f"[{host}]" if ":" in host else host
    print(f"EdgeGuard fleet server on {scheme}://{shown}:{port} (publish dir {args.publish})")
    if password is None:
        print("no --password-file: the fleet page is closed; check-ins are accepted")
    sys.stdout.flush()
    _Gunicorn(app, options).run()
    return EXIT_OK


def cmd_add_appliance(args: argparse.Namespace) -> int:
    import time

    from webui.fleet.store import FleetStore
    from webui.fleet.views import SITE_RE

    if not SITE_RE.match(args.site):
        print(f"--site {args.site!r}: letters, digits, '.', '_' and '-' (max 64)", file=sys.stderr)
        return EXIT_USAGE
    store = FleetStore(args.state_dir / "fleet.db")
    try:
        token = store.add_credential(args.site, time.time())
    finally:
        store.close()
    print(token)
    print(
        f"give it to the appliance of site {args.site}: edgeguard sync enrol --site {args.site}"
        " --credential <the line above> --server URL --checkin URL --root root.json",
        file=sys.stderr,
    )
    return EXIT_OK


def cmd_revoke_appliance(args: argparse.Namespace) -> int:
    import time

    from webui.fleet.store import FleetStore

    store = FleetStore(args.state_dir / "fleet.db")
    try:
        count = store.revoke_credentials(
            args.site, time.time(), appliance_id=args.appliance, token=args.credential
        )
    finally:
        store.close()
    what = f"appliance {args.appliance}" if args.appliance else "that credential"
    if count == 0:
        print(f"site {args.site}: {what} has no credential that is not revoked", file=sys.stderr)
        return EXIT_FAILED
    print(f"site {args.site}: {what} revoked; its check-ins are refused from now on")
    return EXIT_OK


def fetch_json(server: str, path: str, password_file: Path | None, ca: Path | None) -> Any:
    """GET one of the server's JSON APIs with the operator password (HTTP Basic)."""
    request = urllib.request.Request(server.rstrip("/") + path)
    if password_file is not None:
        secret = base64.b64encode(f"msp:{read_password(password_file)}".encode()).decode()
        request.add_header("Authorization", f"Basic {secret}")
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    with urllib.request.urlopen(request, timeout=15, context=context) as resp:
        return json.loads(resp.read())


def _print_appliances(rows: list[dict[str, Any]]) -> None:
    print(f"{'STATUS':<24} {'SITE':<16} {'APPLIANCE':<24} {'AGE':>8} {'APPLIED/PUB':>12}")
    for row in rows:
        status = ", ".join(row["problems"]) or ("; ".join(row["notes"]) or "ok")
        age = "never" if row["age_s"] is None else f"{row['age_s']}s"
        versions = f"{row['applied_version'] or '-'}/{row['published_version'] or '-'}"
        print(
            f"{status[:24]:<24} {row['site'][:16]:<16} {(row['appliance_id'] or '-')[:24]:<24}"
            f" {age:>8} {versions:>12}"
        )


def cmd_list(args: argparse.Namespace) -> int:
    path = "/api/v1/fleet" if args.site is None else f"/api/v1/sites/{args.site}"
    try:
        data = fetch_json(args.server, path, args.password_file, args.ca)
    except urllib.error.HTTPError as exc:
        print(f"{args.server}{path}: HTTP {exc.code}: {exc.read()[:300]!r}", file=sys.stderr)
        return EXIT_FAILED
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"{args.server}: cannot reach the fleet server ({exc})", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    _print_appliances(data["appliances"])
    for alert in data["alerts"]:
        print(f"ALERT {alert['opened']} {alert['site']}/{alert['appliance_id']}: {alert['detail']}")
    return EXIT_OK


def add_fleet_commands(sub: SubCommands) -> None:
    from appliance.sync.msp_cmd import msp_subcommands

    fsub = msp_subcommands(sub)
    p = fsub.add_parser("serve", help="serve check-ins, the fleet page and reports (gunicorn)")
    p.add_argument("--state-dir", type=Path, default=DEFAULT_FLEET_STATE)
    p.add_argument("--publish", type=Path, required=True, help="the published bundles (msp sign)")
    p.add_argument("--listen", default="127.0.0.1:8600", help="address:port")
    p.add_argument("--password-file", type=Path, help="operator password for the pages")
    p.add_argument("--interval", type=float, default=300.0,
                   help="the agents' check-in interval, s (stale after 3)")  # fmt: skip
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--cert", type=Path, help="PEM certificate (default: self-signed)")
    p.add_argument("--key", type=Path, help="PEM private key for --cert")
    p.add_argument("--plain-http", action="store_true", help="no TLS (behind a TLS proxy, tests)")
    p.set_defaults(func=cmd_serve)

    p = fsub.add_parser("add-appliance", help="issue a check-in credential for a site")
    p.add_argument("--state-dir", type=Path, default=DEFAULT_FLEET_STATE)
    p.add_argument("--site", required=True)
    p.set_defaults(func=cmd_add_appliance)

    p = fsub.add_parser("revoke-appliance", help="revoke an appliance's check-in credential")
    p.add_argument("--state-dir", type=Path, default=DEFAULT_FLEET_STATE)
    p.add_argument("--site", required=True)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--appliance", help="the appliance id it checked in with (msp list)")
    which.add_argument("--credential", help="an issued credential (e.g. one never used)")
    p.set_defaults(func=cmd_revoke_appliance)

    for name, help_ in (("list", "list the fleet, failures first"), ("site", "show one site")):
        p = fsub.add_parser(name, help=help_)
        if name == "site":
            p.add_argument("site")
        else:
            p.set_defaults(site=None)
        p.add_argument("--server", required=True, help="the fleet server's URL")
        p.add_argument("--password-file", type=Path)
        p.add_argument("--ca", type=Path, help="CA certificate to trust for --server")
        p.add_argument("--json", action="store_true", help="print the JSON as received")
        p.set_defaults(func=cmd_list)

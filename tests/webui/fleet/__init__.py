"""Helpers for the fleet server's tests: the app on a real loopback socket, a settable clock,
and a check-in body in the contract's shape."""

from __future__ import annotations

import base64
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask
from werkzeug.serving import make_server
from werkzeug.wsgi import ClosingIterator, LimitedStream

from webui.fleet.app import FleetSettings, create_fleet_app
from webui.fleet.store import FleetStore

PASSWORD = "operator password 1"
T0 = 1_780_000_000.0  # 2026-05-28T20:26:40Z


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


@dataclass
class Fleet:
    app: Flask
    url: str
    clock: Clock
    publish: Path

    @property
    def store(self) -> FleetStore:
        found: FleetStore = self.app.extensions["fleet_store"]
        return found

    def credential(self, site: str) -> str:
        return self.store.add_credential(site, self.clock())

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        req = urllib.request.Request(self.url + path, data=body, method=method)
        for key, value in (headers or {}).items():
            req.add_header(key, value)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return Response(resp.status, dict(resp.headers), resp.read())
        except urllib.error.HTTPError as exc:
            return Response(exc.code, dict(exc.headers), exc.read())

    def checkin(self, token: str, body: dict[str, Any] | bytes) -> Response:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.request(
            "POST", "/api/v1/checkin", data,
            {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )  # fmt: skip

    def get(self, path: str, password: str = PASSWORD) -> Response:
        auth = base64.b64encode(f"msp:{password}".encode()).decode()
        return self.request("GET", path, headers={"Authorization": f"Basic {auth}"})


def drained(app: Flask) -> Any:
    """``app`` behind a reader that discards the request body the app left unread, as gunicorn
    (which serves the fleet) and Werkzeug's own server since 2.3 do. Without it, Werkzeug 2.2's
    server (Debian bookworm's) closes the connection under a client still sending, and an
    oversize check-in ends in a connection reset instead of the app's 413."""

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        length = environ.get("CONTENT_LENGTH")
        if not length:
            return app(environ, start_response)
        stream = LimitedStream(environ["wsgi.input"], int(length))
        environ["wsgi.input"] = stream
        return ClosingIterator(app(environ, start_response), stream.exhaust)

    return wsgi


@contextmanager
def running_fleet(tmp: Path, settings: FleetSettings | None = None) -> Iterator[Fleet]:
    """The fleet app served by Werkzeug on 127.0.0.1 (a free port) in a thread."""
    clock = Clock()
    publish = tmp / "publish"
    app = create_fleet_app(
        tmp / "state", publish, operator_password=PASSWORD, settings=settings, clock=clock
    )
    server = make_server("127.0.0.1", 0, drained(app), threaded=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield Fleet(app, f"http://127.0.0.1:{server.server_port}", clock, publish)
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
        app.extensions["fleet_store"].close()


def checkin_body(site: str, appliance_id: str, **changes: Any) -> dict[str, Any]:
    """A healthy appliance's check-in (the contract's shape); ``changes`` replace fields."""
    body: dict[str, Any] = {
        "site": site,
        "appliance_id": appliance_id,
        "software": "0.1.0",
        "bundle_version": 3,
        "policy_sha256": "ab" * 32,
        "live_version": 12,
        "last_apply": {"ok": True, "error": None, "at": "2026-05-28T20:00:00Z"},
        "last_sync": {"at": "2026-05-28T20:00:00Z", "result": "unchanged", "reason": None},
        "conflicts": [],
        "health": {"resolver": True, "ruleset_loaded": True, "disk_free_mb": 900, "uptime_s": 600},
        "counters": {},
        "anomalies": {"max_host_score": 10, "open_high": 0},
        "time": "2026-05-28T20:26:40Z",
    }
    body.update(changes)
    return body


def publish_bundle(publish: Path, site: str, version: int, message: str = "") -> None:
    """A bundle.json of the contract's envelope shape (the server reads ``signed`` only; the
    signature here is a placeholder, the fleet page does not verify)."""
    path = publish / "sites" / site / "bundle.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    signed = {
        "type": "edgeguard-bundle", "spec": 1, "site": site, "version": version,
        "created": "2026-05-28T10:00:00Z", "expires": "2026-06-27T10:00:00Z",
        "policy": {"sha256": "cd" * 32, "length": 100}, "files": {}, "locked": ["rules"],
        "baseline": None, "message": message,
    }  # fmt: skip
    envelope = {"signed": signed, "signatures": [{"keyid": "ef" * 32, "sig": "AAAA"}]}
    path.write_text(json.dumps(envelope))

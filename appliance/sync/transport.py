"""The agent's only network code: GETs of the MSP's static files and the check-in POST.

Why so strict: the bundle is signed, but the transport still must not become the weak part.
HTTPS with a verified certificate (``--ca`` for an MSP's private CA); plain HTTP only to the
loopback addresses (the static-file test mode); redirects checked by the same rule;
timeouts on every request; and size limits enforced while reading, so a hostile or broken
server cannot make the appliance download without end. Conditional GETs (``If-None-Match``)
let a fleet poll a CDN cheaply: 304 means nothing new.
"""

from __future__ import annotations

import email.message
import http.client
import ipaddress
import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import urlsplit

from appliance.sync.errors import SyncError

ENVELOPE_LIMIT = 1_000_000  # bytes: a bundle envelope or a root file
BLOB_LIMIT = 64_000_000  # bytes: the policy text or one list file
REPLY_LIMIT = 65_536  # bytes: the check-in answer
DEFAULT_TIMEOUT = 20.0  # seconds, per connect and per read
USER_AGENT = "edgeguard-sync/1"


class TransportError(SyncError):
    """The MSP could not be reached or answered wrongly; nothing was changed."""


@dataclass(frozen=True)
class Fetched:
    """A GET's outcome: 200 with ``body``, 304 (nothing new) or 404 (no such file)."""

    status: int
    body: bytes = b""
    etag: str | None = None


class Transport(Protocol):
    def get(self, url: str, *, limit: int, etag: str | None = None) -> Fetched:
        """GET ``url``; TransportError for anything but 200, 304 and 404."""

    def post_json(self, url: str, body: dict[str, Any], *, token: str) -> dict[str, Any]:
        """POST ``body`` as JSON with a bearer token; the JSON answer, or TransportError."""


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url(url: str) -> str:
    """``url`` if the agent may talk to it: https anywhere, http only to 127.0.0.1 or ::1."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname and is_loopback(parts.hostname):
        return url
    raise TransportError(
        f"{url}: only https:// URLs are allowed (plain http only to 127.0.0.1 or ::1, "
        "for testing with a local file server)"
    )


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        check_url(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _read_limited(response: IO[bytes], limit: int, url: str, length: str | None) -> bytes:
    if length is not None and length.isdigit() and int(length) > limit:
        raise TransportError(f"{url}: {int(length)} bytes is more than the limit of {limit}")
    body = response.read(limit + 1)
    if len(body) > limit:
        raise TransportError(f"{url}: more than the limit of {limit} bytes; not read further")
    return body


class HttpTransport:
    """urllib + ssl: the standard library is all an appliance needs to poll a static host."""

    def __init__(self, *, ca_file: Path | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout
        try:
            self._ssl = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise TransportError(f"cannot use the CA file {ca_file}: {exc}") from exc

    def _opener(self, url: str) -> urllib.request.OpenerDirector:
        handlers: list[urllib.request.BaseHandler] = [
            urllib.request.HTTPSHandler(context=self._ssl),
            _CheckedRedirects(),
        ]
        host = urlsplit(url).hostname or ""
        if is_loopback(host):
            handlers.append(urllib.request.ProxyHandler({}))  # never send loopback to a proxy
        return urllib.request.build_opener(*handlers)

    def _open(
        self, request: urllib.request.Request, limit: int
    ) -> tuple[int, bytes, email.message.Message]:
        url = request.full_url
        try:
            with self._opener(url).open(request, timeout=self.timeout) as response:
                body = _read_limited(response, limit, url, response.headers.get("Content-Length"))
                return int(response.status), body, response.headers
        except urllib.error.HTTPError as exc:
            with exc:
                detail = exc.read(REPLY_LIMIT) if exc.code not in (304, 404) else b""
            return exc.code, detail, exc.headers
        except urllib.error.URLError as exc:
            raise TransportError(f"{url}: cannot connect: {exc.reason}") from exc
        except (OSError, ssl.SSLError) as exc:  # timeouts, resets mid-body
            raise TransportError(f"{url}: {exc}") from exc

    def get(self, url: str, *, limit: int, etag: str | None = None) -> Fetched:
        request = urllib.request.Request(check_url(url), headers={"User-Agent": USER_AGENT})
        if etag:
            request.add_header("If-None-Match", etag)
        status, body, headers = self._open(request, limit)
        if status == 200:
            return Fetched(200, body, headers.get("ETag"))
        if status in (304, 404):
            return Fetched(status, b"", headers.get("ETag") if status == 304 else None)
        raise TransportError(f"{url}: the server answered HTTP {status}")

    def post_json(self, url: str, body: dict[str, Any], *, token: str) -> dict[str, Any]:
        request = urllib.request.Request(
            check_url(url),
            data=json.dumps(body).encode(),
            method="POST",
            headers={
                "User-Agent": USER_AGENT,
                "Content-Type": "application/json",
                "Authorization": f"Bearer {token}",
            },
        )
        status, reply, _ = self._open(request, REPLY_LIMIT)
        if status != 200:
            text = reply.decode("utf-8", "replace").strip()[:300]
            raise TransportError(f"{url}: check-in refused with HTTP {status}: {text}")
        try:
            answer = json.loads(reply)
        except ValueError as exc:
            raise TransportError(f"{url}: the check-in answer is not JSON") from exc
        if not isinstance(answer, dict):
            raise TransportError(f"{url}: the check-in answer is not a JSON object")
        return answer

"""The block page: what a browser sees when the resolver answered a blocked name with our IP.

With ``block_mode: ip`` a blocked name resolves to the appliance, so the browser's request
for ``http://blocked.example/`` arrives here with ``Host: blocked.example``. Instead of a
confusing connection error the user gets a short page saying which rule and list blocked
the name for which group (from ``RecentBlocks.lookup``, keyed by the client's address),
and, if the admin allows it, a form to ask for an unblock.

Plain HTTP only. An ``https://`` site cannot be answered meaningfully: we hold no
certificate for the blocked name, so the browser shows its own TLS error page (Pi-hole and
AdGuard Home behave the same way). A TLS handshake that reaches this port gets a 400.

Why the stdlib server and not Flask: this listens on every inside address and is hit by
whatever the blocked names were asked for (ad beacons, scripts, crawlers), so it should be
small, dependency-free and hard to wedge. Every response is a 403 (scripts and monitors
see a failure, not a page that looks like success), ``no-store`` (the real site must load
once it is unblocked) and HTML-escaped throughout: the Host header, the rule text and the
list name all come from outside. Handlers time out after ``HANDLER_TIMEOUT`` seconds and
at most ``MAX_CONNECTIONS`` are served at once, so slow or numerous clients cannot pin
every thread.

Unblock requests go to SQLite (``unblock_requests``, WAL) for the admin UI, which reads
them with ``open_requests``. The group, rule and list stored are looked up again on the
server: the form carries only the host and the reason, so a client cannot forge them.
"""

from __future__ import annotations

import contextlib
import html
import ipaddress
import logging
import math
import re
import socket
import socketserver
import sqlite3
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from dns_filter.feeds import BlockNote

__all__ = [
    "HANDLER_TIMEOUT",
    "MAX_BODY",
    "MAX_CONNECTIONS",
    "MAX_OPEN_PER_HOUR",
    "MAX_REASON",
    "BlockPageServer",
    "display_host",
    "open_requests",
]

log = logging.getLogger(__name__)

HANDLER_TIMEOUT = 10.0  # seconds a single socket read or write may take
MAX_CONNECTIONS = 64  # handler threads at once; further connections are closed at once
MAX_BODY = 4096  # bytes of a POST body
MAX_REASON = 500  # characters of the unblock reason
MAX_OPEN_PER_HOUR = 5  # open unblock requests a client may have from the last hour
_DISCARD_LIMIT = 65536  # unread body we still drain before an error, so the client gets it

_SCHEMA = """
CREATE TABLE IF NOT EXISTS unblock_requests (
    id INTEGER PRIMARY KEY,
    ts REAL,
    client TEXT,
    host TEXT,
    grp TEXT,
    rule TEXT,
    list TEXT,
    reason TEXT,
    status TEXT DEFAULT 'open'
);
"""

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")

_CSS = (
    "body{font-family:system-ui,sans-serif;background:#f4f4f5;color:#18181b;margin:0}"
    "main{max-width:36rem;margin:3rem auto;padding:1.5rem 2rem;background:#fff;"
    "border-radius:8px;box-shadow:0 1px 4px #0002}"
    "h1{font-size:1.4rem;color:#b91c1c}dt{font-weight:600}dd{margin:0 0 .5rem}"
    "code{word-break:break-all}textarea{width:100%;box-sizing:border-box}"
    ".sent{background:#dcfce7;padding:.5rem 1rem;border-radius:4px}"
    "footer{color:#71717a;font-size:.8rem;margin-top:1.5rem}"
)

# No scripts, no external loads, forms only to ourselves, never framed.
_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)

Lookup = Callable[[str, str], BlockNote | None]


def display_host(header: str | None) -> str | None:
    """The hostname from a Host header (port stripped, lower case), or None when it is not
    a plain hostname: bracketed IPv6, junk and over-long names are never shown."""
    if not header:
        return None
    host = header.strip()
    if host.startswith("["):
        return None
    name, sep, port = host.rpartition(":")
    if sep:
        if not port.isdigit():
            return None
        host = name
    host = host.lower().rstrip(".")
    if len(host) > 253 or not _HOSTNAME.fullmatch(host):
        return None
    return host


def _client(address: str) -> str:
    """The client as the resolver names it: an IPv4 client on a dual-stack socket arrives
    as ``::ffff:a.b.c.d`` here but as ``a.b.c.d`` on the DNS side."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return address


def _connect(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db, timeout=5.0, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(_SCHEMA)
    return conn


def open_requests(db: Path) -> list[dict[str, Any]]:
    """Open unblock requests, oldest first, as plain dicts (the table's column names) for
    the admin UI. A database that does not exist yet holds none."""
    if not db.exists():
        return []
    conn = _connect(db)
    try:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            "SELECT * FROM unblock_requests WHERE status = 'open' ORDER BY ts, id"
        ).fetchall()
        return [dict(row) for row in rows]
    finally:
        conn.close()


def _page(title: str, body: str, site_name: str) -> bytes:
    """A whole page around ``body``; ``title`` and ``body`` must already be escaped."""
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="robots" content="noindex">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{_CSS}</style></head>\n"
        f"<body><main>\n{body}\n"
        f"<footer>{html.escape(site_name)} &middot; EdgeGuard web filter</footer>\n"
        "</main></body></html>\n"
    ).encode()


class BlockPageServer:
    """The block page on every given address, one server thread per address.

    ``lookup(client_ip, host)`` is ``RecentBlocks.lookup``. With ``unblock_requests`` the
    page offers the request form and POSTs are stored in ``requests_db``; without it there
    is no form and POST answers 404.
    """

    def __init__(
        self,
        listen: list[tuple[str, int]],
        lookup: Lookup,
        *,
        site_name: str,
        unblock_requests: bool,
        requests_db: Path | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if unblock_requests and requests_db is None:
            raise ValueError("unblock_requests needs a requests_db")
        self.listen = list(listen)
        self.lookup = lookup
        self.site_name = site_name
        self.unblock_requests = unblock_requests
        self.requests_db = requests_db
        self.clock = clock
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    @property
    def bound(self) -> list[tuple[str, int]]:
        """The addresses actually bound, with the real port where 0 was asked for."""
        return [(str(s.server_address[0]), int(s.server_address[1])) for s in self._servers]

    def start(self) -> None:
        """Bind every address (all or none: a failed bind closes the others), then serve."""
        if self._servers:
            raise RuntimeError("block page already started")
        if self.unblock_requests:
            assert self.requests_db is not None
            _connect(self.requests_db).close()  # schema and WAL now, not on the first POST
        try:
            for host, port in self.listen:
                host = host.strip("[]")
                cls = _Server6 if ":" in host else _Server
                self._servers.append(cls((host, port), _Handler, self))
        except OSError:
            for server in self._servers:
                server.server_close()
            self._servers = []
            raise
        for server, (host, port) in zip(self._servers, self.bound, strict=True):
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.1},  # how quickly stop() returns
                name=f"blockpage {host} {port}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
            log.info("block page listening on %s port %s", host, port)

    def stop(self) -> None:
        """Stop accepting and close the sockets; requests in flight finish on their own."""
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join()
        self._servers = []
        self._threads = []


class _Server(ThreadingHTTPServer):
    """One listening socket. Skips HTTPServer's reverse lookup of its own address (a DNS
    query at start-up, possibly to the resolver that is starting with us) and caps the
    handler threads."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        page: BlockPageServer,
    ) -> None:
        self.page = page
        super().__init__(address, handler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.page._slots.acquire(blocking=False):
            log.warning("block page busy: dropping connection from %s", client_address[0])
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.page._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.page._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("block page: error serving %s", client_address[0])


class _Server6(_Server):
    """IPv6 listener, v6 only, so ``0.0.0.0`` and ``::`` can both be bound on one port."""

    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()


class _Handler(BaseHTTPRequestHandler):
    """One connection, one request (HTTP/1.0: the connection closes after the answer)."""

    timeout = HANDLER_TIMEOUT
    # Errors on unparsable request lines still get a status line (the default, HTTP/0.9,
    # would send a bare body that no client recognises as an error).
    default_request_version = "HTTP/1.0"
    _body_read = False

    @property
    def page(self) -> BlockPageServer:
        return cast(_Server, self.server).page

    # -- the page ------------------------------------------------------------------

    def do_GET(self) -> None:
        self._block_page(head=False)

    def do_HEAD(self) -> None:
        self._block_page(head=True)

    def _block_page(self, *, head: bool) -> None:
        page = self.page
        host = display_host(self.headers.get("Host"))
        client = _client(self.client_address[0])
        note = page.lookup(client, host) if host is not None else None
        sent = "sent=1" in urlsplit(self.path).query.split("&")
        shown = html.escape(host) if host is not None else "this site"
        parts = [f"<h1>{shown} is blocked</h1>"]
        if sent:
            parts.append('<p class="sent">Your unblock request was sent to the administrator.</p>')
        if note is None:
            parts.append(f"<p><code>{shown}</code> is blocked by the office's web filter.</p>")
        else:
            at = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(note.at))
            rows = [("Group", note.group), ("Rule", note.rule), ("List", note.list_name)]
            parts.append(f"<p><code>{shown}</code> is blocked by the office's web filter:</p>")
            parts.append(
                "<dl>"
                + "".join(
                    f"<dt>{label}</dt><dd><code>{html.escape(value)}</code></dd>"
                    for label, value in rows
                    if value is not None
                )
                + f"<dt>Blocked at</dt><dd>{html.escape(at)}</dd></dl>"
            )
        if page.unblock_requests and host is not None and not sent:
            parts.append(
                '<form method="post" action="/unblock-request">'
                f'<input type="hidden" name="host" value="{shown}">'
                '<p><label for="reason">Think this is a mistake? Tell the administrator why '
                "you need this site:</label></p>"
                f'<textarea id="reason" name="reason" rows="4" maxlength="{MAX_REASON}">'
                "</textarea>"
                '<p><button type="submit">Request unblock</button></p></form>'
            )
        body = _page(f"Blocked: {shown}", "\n".join(parts), page.site_name)
        self._send(HTTPStatus.FORBIDDEN, body, head=head)

    # -- unblock requests ----------------------------------------------------------

    def do_POST(self) -> None:
        page = self.page
        if not page.unblock_requests or urlsplit(self.path).path != "/unblock-request":
            self._fail(HTTPStatus.NOT_FOUND, "Not found", "There is nothing here.")
            return
        if self.headers.get_content_type() != "application/x-www-form-urlencoded":
            self._fail(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                "Unsupported form",
                "Only application/x-www-form-urlencoded is accepted.",
            )
            return
        length = self._content_length()
        if length is None:
            return
        if length > MAX_BODY:
            self._fail(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Too long", "The request is too long.")
            return
        form = self._read_form(length)
        if form is None:
            self._fail(HTTPStatus.BAD_REQUEST, "Bad request", "The form could not be read.")
            return
        host = display_host(form.get("host", [""])[0])
        reason = form.get("reason", [""])[0].replace("\r\n", "\n").strip()
        if host is None or len(reason) > MAX_REASON:
            self._fail(HTTPStatus.BAD_REQUEST, "Bad request", "The form could not be read.")
            return
        client = _client(self.client_address[0])
        try:
            retry_after = self._store(client, host, reason)
        except sqlite3.Error:
            log.exception("block page: cannot store the unblock request from %s", client)
            self._fail(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                "Not sent",
                "The request could not be saved. Please tell the administrator directly.",
            )
            return
        if retry_after is not None:
            self._fail(
                HTTPStatus.TOO_MANY_REQUESTS,
                "Too many requests",
                "You have sent several unblock requests in the last hour. "
                "Please wait for the administrator to answer them.",
                {"Retry-After": str(retry_after)},
            )
            return
        log.info("unblock request from %s for %s", client, host)
        self.send_response(HTTPStatus.SEE_OTHER)
        self.send_header("Location", "/?sent=1")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _store(self, client: str, host: str, reason: str) -> int | None:
        """Insert the request unless the client is over its hourly limit; then return the
        seconds until a slot frees (for Retry-After). Count and insert are one immediate
        transaction, so parallel POSTs cannot both slip under the limit."""
        page = self.page
        assert page.requests_db is not None
        note = page.lookup(client, host)
        now = page.clock()
        conn = _connect(page.requests_db)
        try:
            conn.execute("BEGIN IMMEDIATE")
            count, oldest = conn.execute(
                "SELECT COUNT(*), MIN(ts) FROM unblock_requests"
                " WHERE client = ? AND status = 'open' AND ts > ?",
                (client, now - 3600.0),
            ).fetchone()
            if count >= MAX_OPEN_PER_HOUR:
                conn.execute("ROLLBACK")
                return max(1, math.ceil(float(oldest) + 3600.0 - now))
            conn.execute(
                "INSERT INTO unblock_requests (ts, client, host, grp, rule, list, reason)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    now,
                    client,
                    host,
                    note.group if note else None,
                    note.rule if note else None,
                    note.list_name if note else None,
                    reason,
                ),
            )
            conn.execute("COMMIT")
            return None
        finally:
            conn.close()

    def _content_length(self) -> int | None:
        """The declared body length, or None after answering 411/400 (no chunked bodies:
        a browser's form always has a length)."""
        if "Transfer-Encoding" in self.headers or "Content-Length" not in self.headers:
            self._fail(HTTPStatus.LENGTH_REQUIRED, "Length required", "Send a Content-Length.")
            return None
        text = self.headers["Content-Length"].strip()
        if not text.isdigit():
            self.close_connection = True
            self.send_error(HTTPStatus.BAD_REQUEST, "Bad Content-Length")
            return None
        return int(text)

    def _read_form(self, length: int) -> dict[str, list[str]] | None:
        self._body_read = True
        data = self.rfile.read(length)
        if len(data) != length:
            return None
        try:
            return parse_qs(
                data.decode("ascii"),
                keep_blank_values=True,
                strict_parsing=False,
                errors="strict",
                max_num_fields=10,
            )
        except ValueError:  # also UnicodeDecodeError
            return None

    # -- responses -----------------------------------------------------------------

    def _fail(
        self,
        status: HTTPStatus,
        title: str,
        text: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        """An error page. A small unread body is drained first: closing a socket with
        unread data makes the kernel send a reset, which can destroy our answer before
        the client reads it."""
        self._discard_body()
        body = _page(
            html.escape(title),
            f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>",
            self.page.site_name,
        )
        self._send(status, body, head=False, headers=headers)

    def _discard_body(self) -> None:
        text = "" if self._body_read else self.headers.get("Content-Length", "").strip()
        if text.isdigit() and 0 < int(text) <= _DISCARD_LIMIT:
            with contextlib.suppress(OSError):  # gone or slow: closing is all that is left
                self.rfile.read(int(text))
        self.close_connection = True

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        *,
        head: bool,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", _CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    # -- logging -------------------------------------------------------------------

    def version_string(self) -> str:
        return "EdgeGuard-blockpage"

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Every request is not worth a line: the resolver's query log already has them."""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("block page %s: %s", self.client_address[0], format % args)

"""The agent's HTTP client against real servers on loopback: ETag/304, limits, TLS, refusals.

``StaticHost`` is a plain static file server (stdlib ``http.server``) with strong ETags, the
way nginx or a CDN serves the MSP's published directory; the agent tests use it too.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.server
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appliance.sync.transport import HttpTransport, TransportError, check_url


class _Handler(http.server.SimpleHTTPRequestHandler):
    host: StaticHost

    def log_message(self, format: str, *args: Any) -> None:
        status = str(args[1]) if len(args) > 1 else "?"
        self.host.log.append(f"{self.command} {self.path} {status}")

    def send_head(self) -> Any:
        path = Path(self.translate_path(self.path))
        if path.is_file():
            etag = '"' + hashlib.sha256(path.read_bytes()).hexdigest()[:32] + '"'
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.send_header("ETag", etag)
                self.end_headers()
                return None
            self._etag = etag
        return super().send_head()

    def end_headers(self) -> None:
        etag = getattr(self, "_etag", None)
        if etag:
            self.send_header("ETag", etag)
            self._etag = None
        super().end_headers()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length))
        self.host.posts.append((self.path, self.headers.get("Authorization"), body))
        status, answer = self.host.post_answer
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class StaticHost:
    """Serves ``root`` on 127.0.0.1 (optionally over TLS); records requests and check-ins."""

    def __init__(self, root: Path, tls: ssl.SSLContext | None = None) -> None:
        self.root = root
        self.log: list[str] = []
        self.posts: list[tuple[str, str | None, dict[str, Any]]] = []
        self.post_answer: tuple[int, dict[str, Any]] = (200, {"ok": True})
        host = self

        class Handler(_Handler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(host.root), **kwargs)

        Handler.host = self
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[StaticHost]:
    (tmp_path / "site").mkdir()
    served = StaticHost(tmp_path / "site")
    yield served
    served.close()


def test_get_returns_the_body_and_a_repeat_with_the_etag_is_a_304(host: StaticHost) -> None:
    (host.root / "bundle.json").write_bytes(b'{"v": 1}')
    transport = HttpTransport(timeout=5)
    first = transport.get(f"{host.url}/bundle.json", limit=1000)
    assert first.status == 200 and first.body == b'{"v": 1}' and first.etag
    again = transport.get(f"{host.url}/bundle.json", limit=1000, etag=first.etag)
    assert again.status == 304 and again.body == b""
    (host.root / "bundle.json").write_bytes(b'{"v": 2}')
    changed = transport.get(f"{host.url}/bundle.json", limit=1000, etag=first.etag)
    assert changed.status == 200 and changed.body == b'{"v": 2}' and changed.etag != first.etag


def test_a_missing_file_is_a_404_not_an_error(host: StaticHost) -> None:
    assert HttpTransport(timeout=5).get(f"{host.url}/root/2.json", limit=1000).status == 404


def test_a_body_over_the_limit_is_refused(host: StaticHost) -> None:
    (host.root / "big").write_bytes(b"x" * 5000)
    with pytest.raises(TransportError, match="limit of 4999"):
        HttpTransport(timeout=5).get(f"{host.url}/big", limit=4999)
    assert HttpTransport(timeout=5).get(f"{host.url}/big", limit=5000).body == b"x" * 5000


def test_a_refused_check_in_is_a_transport_error_with_the_answer(host: StaticHost) -> None:
    host.post_answer = (401, {"error": "unknown credential for site acme"})
    with pytest.raises(TransportError, match=r"HTTP 401: .*unknown credential"):
        HttpTransport(timeout=5).post_json(f"{host.url}/api/v1/checkin", {}, token="t")


def test_an_unreachable_server_is_a_transport_error() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(TransportError, match="cannot connect"):
        HttpTransport(timeout=2).get(f"http://127.0.0.1:{port}/bundle.json", limit=10)


def test_post_json_sends_the_bearer_token_and_reads_the_answer(host: StaticHost) -> None:
    answer = HttpTransport(timeout=5).post_json(
        f"{host.url}/api/v1/checkin", {"site": "acme"}, token="s3cret"
    )
    assert answer == {"ok": True}
    assert host.posts == [("/api/v1/checkin", "Bearer s3cret", {"site": "acme"})]


@pytest.mark.parametrize(
    "url",
    ["http://example.com/x", "http://10.0.0.1/x", "ftp://127.0.0.1/x", "file:///etc/passwd"],
)
def test_plain_http_is_only_for_loopback(url: str) -> None:
    with pytest.raises(TransportError, match="only https"):
        check_url(url)


def test_loopback_and_https_urls_pass() -> None:
    for url in ["http://127.0.0.1:8/x", "http://[::1]:8/x", "https://msp.example/x"]:
        assert check_url(url) == url


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgeguard test MSP")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_https_verifies_the_server_certificate(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "bundle.json").write_bytes(b"{}")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    served = StaticHost(tmp_path / "site", tls)
    try:
        url = f"{served.url}/bundle.json"
        assert url.startswith("https://")
        assert HttpTransport(ca_file=cert, timeout=5).get(url, limit=10).body == b"{}"
        with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
            HttpTransport(timeout=5).get(url, limit=10)  # the system CAs do not know it
    finally:
        served.close()


def test_a_redirect_to_plain_http_elsewhere_is_refused(host: StaticHost) -> None:
    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", "http://example.com/bundle.json")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        with pytest.raises(TransportError, match="only https"):
            HttpTransport(timeout=5).get(f"http://127.0.0.1:{server.server_address[1]}/", limit=9)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)

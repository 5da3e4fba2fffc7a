"""A real DNS server on loopback for upstream tests, with knobs to misbehave.

``LocalUpstream`` runs dnslib's ``DNSServer`` (threaded socketservers) on 127.0.0.1 or ::1:
UDP and TCP on the same ephemeral port (so a UDP answer with TC=1 can be retried over TCP at
the same address), or TLS on the TCP listener when given a server ``ssl.SSLContext``. The request
handler is our own, because dnslib's stock one answers a single query per TCP connection
(reading pipelined frames as one message) and has no way to stay silent.

Knobs are plain attributes, so a test can flip them while the server runs: ``delay`` (seconds,
or a function of the query name), ``truncate_udp``, ``drop``, ``spoof`` (a forged reply with a
wrong ID and one for another question go out first), ``flip_case`` (the question comes back
in swapped case, as 0x20-randomising servers do). ``seen`` records every query received,
``sent`` the order in which TCP/TLS answers went out.

``make_test_certs`` makes a throwaway CA and a server certificate signed by it, with the
``cryptography`` package where installed and with the ``openssl`` command otherwise.
"""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from dnslib import AAAA, QTYPE, RCODE, RR, A, DNSQuestion, DNSRecord
from dnslib.server import DNSHandler, DNSLogger, DNSServer

SPOOF_ADDRESS = "6.6.6.6"
SERVER_NAME = "dns.test"


@dataclass(frozen=True)
class Seen:
    """One query as the server received it."""

    protocol: str  # "udp", "tcp" or "tls"
    client_port: int
    qid: int
    qname: str


class _Handler(DNSHandler):
    server: Any  # socketserver.BaseServer with our ``owner`` attribute

    def handle(self) -> None:
        owner: LocalUpstream = self.server.owner
        if self.server.socket_type == socket.SOCK_DGRAM:
            data, sock = self.request
            owner.answer_udp(data, sock, self.client_address)
        else:
            owner.serve_stream(self.request, self.client_address)


class LocalUpstream:
    """A loopback DNS server for tests; use as a context manager or call ``stop()``."""

    def __init__(
        self,
        zone: Mapping[str, str | Sequence[str]] | str,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        tcp: bool = True,
        tls_context: ssl.SSLContext | None = None,
        delay: float | Callable[[str], float] = 0.0,
        truncate_udp: bool = False,
        drop: bool = False,
        spoof: bool = False,
        flip_case: bool = False,
    ) -> None:
        self.records = _records(zone)
        self.tls_context = tls_context
        self.delay, self.truncate_udp, self.drop = delay, truncate_udp, drop
        self.spoof, self.flip_case = spoof, flip_case
        self.host = host
        self.seen: list[Seen] = []
        self.sent: list[str] = []  # names answered over TCP/TLS, in the order sent
        self.stream_connections = 0
        self._lock = threading.Lock()
        self._streams: set[socket.socket] = set()
        self._servers: list[DNSServer] = []
        self.port = self.tcp_port = 0
        for _ in range(20):  # the UDP port may be taken for TCP by someone else: try another
            udp = self._server(port, tcp=False)
            try:
                stream = self._server(udp.server.server_address[1], tcp=True) if tcp else None
            except OSError:
                udp.server.server_close()
                if port:
                    raise
                continue
            self._servers = [udp] if stream is None else [udp, stream]
            self.port = udp.server.server_address[1]
            self.tcp_port = self.port if stream is not None else 0
            break
        else:
            raise OSError(f"no free port for both UDP and TCP on {host}")
        for server in self._servers:  # a short poll interval makes stop() quick
            server.thread = threading.Thread(
                target=server.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
            )
            server.thread.start()

    def _server(self, port: int, *, tcp: bool) -> DNSServer:
        quiet = DNSLogger(logf=lambda _text: None)
        server = DNSServer(
            None, address=self.host, port=port, tcp=tcp, logger=quiet, handler=_Handler
        )
        server.server.owner = self
        return server

    @property
    def queries(self) -> int:
        """How many queries arrived, over every transport."""
        with self._lock:
            return len(self.seen)

    def __enter__(self) -> LocalUpstream:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def cut_streams(self) -> None:
        """Close every open TCP/TLS connection from the server side, as an idle timeout would."""
        with self._lock:
            streams = list(self._streams)
        for conn in streams:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        """Stop listening and cut open TCP/TLS connections: from now on the upstream is dead."""
        servers, self._servers = self._servers, []
        for server in servers:
            server.stop()
            server.server.server_close()
            server.thread.join(5)
        self.cut_streams()

    # -- answering ---------------------------------------------------------------------

    def _receive(self, data: bytes, protocol: str, client: tuple[str, int]) -> DNSRecord | None:
        try:
            request = DNSRecord.parse(data)
        except Exception:  # dnslib raises several kinds on garbage
            return None
        with self._lock:
            self.seen.append(Seen(protocol, client[1], request.header.id, str(request.q.qname)))
        if self.drop:
            return None
        delay = self.delay(str(request.q.qname)) if callable(self.delay) else self.delay
        if delay:
            time.sleep(delay)
        return request

    def reply_to(self, request: DNSRecord, *, address: str | None = None) -> DNSRecord:
        """The zone's answer, or one pointing at ``address`` (a forged answer)."""
        reply = request.reply()
        name = str(request.q.qname).lower().rstrip(".")
        addresses = [address] if address else self.records.get(name)
        if addresses is None:
            reply.header.rcode = RCODE.NXDOMAIN
        for text in addresses or ():
            rtype, rdata = (QTYPE.AAAA, AAAA(text)) if ":" in text else (QTYPE.A, A(text))
            if request.q.qtype in (rtype, QTYPE.ANY):
                reply.add_answer(RR(request.q.qname, rtype, rdata=rdata, ttl=60))
        if self.flip_case:
            q = request.q
            reply.questions[0] = DNSQuestion(str(q.qname).swapcase(), q.qtype, q.qclass)
        return reply

    def _forgeries(self, request: DNSRecord) -> list[bytes]:
        wrong_id = self.reply_to(request, address=SPOOF_ADDRESS)
        wrong_id.header.id = (request.header.id + 1) & 0xFFFF
        other = DNSRecord.question("elsewhere.test").reply()
        other.header.id = request.header.id
        other.add_answer(RR("elsewhere.test", QTYPE.A, rdata=A(SPOOF_ADDRESS), ttl=60))
        return [wrong_id.pack(), other.pack()]

    def answer_udp(self, data: bytes, sock: socket.socket, client: tuple[str, int]) -> None:
        request = self._receive(data, "udp", client)
        if request is None:
            return
        frames = self._forgeries(request) if self.spoof else []
        reply = self.reply_to(request)
        if self.truncate_udp:
            reply = reply.truncate()  # dnslib's drops the question section too
        frames.append(reply.pack())
        for frame in frames:
            try:
                sock.sendto(frame, client)
            except OSError:  # stopped meanwhile
                return

    def serve_stream(self, conn: socket.socket, client: tuple[str, int]) -> None:
        """Answer every frame on one TCP/TLS connection; plain TCP answers out of order."""
        protocol = "tcp"
        if self.tls_context is not None:
            protocol = "tls"
            try:
                conn = self.tls_context.wrap_socket(conn, server_side=True)
            except (OSError, ValueError):
                return  # e.g. the client refused our certificate
        with self._lock:
            self.stream_connections += 1
            self._streams.add(conn)
        send_lock = threading.Lock()
        workers: list[threading.Thread] = []

        def answer(data: bytes) -> None:
            request = self._receive(data, protocol, client)
            if request is None:
                return
            frames = self._forgeries(request) if self.spoof else []
            frames.append(self.reply_to(request).pack())
            with send_lock:
                for frame in frames:
                    try:
                        conn.sendall(struct.pack("!H", len(frame)) + frame)
                    except OSError:
                        return
                self.sent.append(str(request.q.qname))

        try:
            while (head := _recv_exact(conn, 2)) is not None:
                body = _recv_exact(conn, struct.unpack("!H", head)[0])
                if body is None:
                    break
                if protocol == "tls":  # an SSL socket is not safe to use from two threads
                    answer(body)
                else:
                    workers.append(threading.Thread(target=answer, args=(body,), daemon=True))
                    workers[-1].start()
            for worker in workers:
                worker.join(10)
        finally:
            with self._lock:
                self._streams.discard(conn)
            conn.close()


def _recv_exact(conn: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        try:
            chunk = conn.recv(size - len(data))
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    return data


def _records(zone: Mapping[str, str | Sequence[str]] | str) -> dict[str, list[str]]:
    """Name -> addresses, from a mapping or from zone-file lines of A/AAAA records."""
    records: dict[str, list[str]] = {}
    if isinstance(zone, str):
        for rr in RR.fromZone(zone):
            records.setdefault(str(rr.rname).lower().rstrip("."), []).append(str(rr.rdata))
        return records
    for name, value in zone.items():
        records[name.lower().rstrip(".")] = [value] if isinstance(value, str) else list(value)
    return records


# -- certificates ----------------------------------------------------------------------


@dataclass(frozen=True)
class CertFiles:
    """A throwaway CA (trust it in the client) and a server certificate it signed."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


def make_test_certs(directory: Path, *, use_openssl: bool = False) -> CertFiles:
    """A CA and a server certificate for ``dns.test`` and 127.0.0.1, written to ``directory``."""
    certs = CertFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    if use_openssl or importlib.util.find_spec("cryptography") is None:
        _openssl_certs(certs)
    else:
        _cryptography_certs(certs)
    return certs


def openssl_available() -> bool:
    return shutil.which("openssl") is not None


def _openssl_certs(certs: CertFiles) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("neither the cryptography package nor the openssl command is here")
    folder = certs.ca_file.parent
    ca_key, csr, ext = folder / "ca.key", folder / "server.csr", folder / "server.ext"
    ext.write_text(f"subjectAltName=DNS:{SERVER_NAME},IP:127.0.0.1\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca_args = ["-keyout", ca_key, "-out", certs.ca_file, "-subj", "/CN=EdgeGuard test CA"]
    sign = ["-in", csr, "-CA", certs.ca_file, "-CAkey", ca_key, "-CAcreateserial"]
    runs = [
        ["req", "-x509", *ec, *ca_args, "-days", "2"],
        ["req", *ec, "-keyout", certs.key_file, "-out", csr, "-subj", f"/CN={SERVER_NAME}"],
        ["x509", "-req", *sign, "-out", certs.cert_file, "-days", "2", "-extfile", ext],
    ]
    for args in runs:
        subprocess.run([openssl, *map(str, args)], check=True, capture_output=True, timeout=30)


def _cryptography_certs(certs: CertFiles) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)

    def build(
        subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name | None, ca: bool
    ) -> x509.CertificateBuilder:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer or name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        build("EdgeGuard test CA", ca_key, None, True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName(SERVER_NAME), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        build(SERVER_NAME, key, ca_cert.subject, False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    certs.ca_file.write_bytes(ca_cert.public_bytes(pem))
    certs.cert_file.write_bytes(cert.public_bytes(pem))
    certs.key_file.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )

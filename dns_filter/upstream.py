"""Forward DNS queries to upstream resolvers over UDP, TCP or DNS-over-TLS (RFC 7858).

Why it is built this way:

* Spoofing: an off-path attacker must guess the source port and the ID of a UDP query to
  poison the cache, so each UDP query gets a fresh socket on a kernel-chosen ephemeral port
  and a fresh ID from ``secrets``; a reply counts only if its source, ID and question match.
  Anything else is ignored (and counted) while the real answer is still awaited.
* Speed when things break: a dead upstream costs at most ``attempt_timeout`` before the pool
  moves on, and the whole pool gives up after ``timeout`` with :class:`UpstreamError`, so the
  server can answer SERVFAIL (or stale cache) instead of leaving clients hanging. Upstreams
  that keep failing are skipped until a back-off expires, then probed with a real query.
* Connections are costly (a TLS handshake is several round trips), so TCP and TLS keep one
  connection per upstream and pipeline queries on it, matching answers by ID (RFC 7766).

Upstreams are named by IP address only: resolving an upstream's name would need DNS, which is
what this module provides. Conditional forwarding is the caller's job (one pool per zone).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import ssl
import time
from dataclasses import dataclass
from typing import Final, Literal, cast

from dns_filter.errors import UpstreamError, WireError

__all__ = ["DEFAULT_PORTS", "Upstream", "UpstreamPool", "UpstreamSpec"]

Protocol = Literal["udp", "tcp", "tls"]
DEFAULT_PORTS: Final[dict[str, int]] = {"udp": 53, "tcp": 53, "tls": 853}

_log = logging.getLogger(__name__)
_HEADER: Final = 12
_QR: Final = 0x80  # byte 2: this message is a response
_TC: Final = 0x02  # byte 2: truncated, ask again over TCP
_MAX_PENDING: Final = 4096  # outstanding queries on one stream connection
_CLOSE_GRACE: Final = 1.0  # seconds to wait for a TLS close_notify before aborting


class _AttemptTimeout(UpstreamError):
    """One upstream did not answer in time: worth another try if time remains (packet loss)."""


@dataclass(frozen=True)
class UpstreamSpec:
    """Where one upstream listens and how to talk to it; ``server_name`` is the TLS name."""

    host: str
    port: int = 53
    protocol: Protocol = "udp"
    server_name: str = ""

    def __post_init__(self) -> None:
        if self.protocol not in DEFAULT_PORTS:
            raise ValueError(f"unknown protocol {self.protocol!r}: use udp, tcp or tls")
        try:
            ip = ipaddress.ip_address(self.host)
        except ValueError:
            raise ValueError(
                f"host {self.host!r} is not an IP address (upstreams are named by address, "
                "since finding one by name would itself need DNS)"
            ) from None
        if isinstance(self.port, bool) or not 0 < self.port < 65536:
            raise ValueError(f"port {self.port!r} is out of range 1-65535")
        object.__setattr__(self, "host", str(ip))  # one spelling, so replies compare equal
        if not self.server_name:
            object.__setattr__(self, "server_name", self.host)

    @classmethod
    def parse(cls, text: str) -> UpstreamSpec:
        """Read ``[udp|tcp|tls://]host[:port][#tls-name]``; IPv6 with a port needs brackets."""
        rest = text.strip()
        if not rest:
            raise ValueError("empty upstream address")
        protocol = "udp"
        if "://" in rest:
            scheme, rest = rest.split("://", 1)
            protocol = scheme.lower()
            if protocol not in DEFAULT_PORTS:
                raise ValueError(
                    f"upstream {text!r}: unknown protocol {scheme!r}; use udp://, tcp:// or tls://"
                )
        server_name = ""
        if "#" in rest:
            rest, server_name = rest.split("#", 1)
            if protocol != "tls":
                raise ValueError(
                    f"upstream {text!r}: '#name' is the TLS certificate name; only tls:// takes it"
                )
            if not server_name:
                raise ValueError(f"upstream {text!r}: empty TLS name after '#'")
        host, port_text = _split_host_port(rest, text)
        if port_text is None:
            port = DEFAULT_PORTS[protocol]
        elif port_text.isascii() and port_text.isdigit():
            port = int(port_text)
        else:
            raise ValueError(f"upstream {text!r}: port {port_text!r} is not a number")
        try:
            return cls(host, port, cast(Protocol, protocol), server_name)
        except ValueError as exc:
            raise ValueError(f"upstream {text!r}: {exc}") from None

    @property
    def address(self) -> str:
        """``host:port``, with IPv6 hosts in brackets."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        name = f"#{self.server_name}" if self.server_name != self.host else ""
        return f"{self.protocol}://{self.address}{name}"


def _split_host_port(rest: str, text: str) -> tuple[str, str | None]:
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise ValueError(f"upstream {text!r}: missing ']' after an IPv6 address")
        host, after = rest[1:end], rest[end + 1 :]
        if after and not after.startswith(":"):
            raise ValueError(f"upstream {text!r}: unexpected {after!r} after ']'")
        port: str | None = after[1:] if after else None
    elif rest.count(":") > 1:
        host, port = rest, None  # bare IPv6 address
    elif ":" in rest:
        host, port = rest.split(":")
    else:
        host, port = rest, None
    if not host:
        raise ValueError(f"upstream {text!r}: missing host")
    if port == "":
        raise ValueError(f"upstream {text!r}: missing port after ':'")
    return host, port


class _Question:
    """The question section of a query, to check that a reply answers this very question.

    Names compare case-insensitively because servers may echo 0x20-randomised case back;
    type and class compare exactly. Length bytes (< 64) are unaffected by ``bytes.lower``.
    """

    __slots__ = ("end", "key", "names")

    def __init__(self, packet: bytes) -> None:
        if len(packet) < _HEADER:
            raise WireError(f"DNS query of {len(packet)} bytes is shorter than its header")
        names: list[tuple[int, int]] = []
        pos = _HEADER
        for _ in range(int.from_bytes(packet[4:6], "big")):
            start = pos
            while True:
                if pos >= len(packet):
                    raise WireError("DNS query: question name runs past the end")
                length = packet[pos]
                if length & 0xC0:
                    raise WireError("DNS query: compressed label in the question")
                pos += 1 + length
                if length == 0:
                    break
            names.append((start, pos))
            pos += 4
            if pos > len(packet):
                raise WireError("DNS query: question ends before its type and class")
        self.end = pos
        self.names = tuple(names)
        self.key = self._fold(packet)

    def _fold(self, packet: bytes) -> bytes:
        parts: list[bytes] = []
        prev = _HEADER
        for start, stop in self.names:
            parts += [packet[prev:start], packet[start:stop].lower()]
            prev = stop
        parts.append(packet[prev : self.end])
        return b"".join(parts)

    def answers(self, reply: bytes, qid: int) -> bool:
        """True if ``reply`` is a response with our ID to our question.

        A truncated reply may carry no question at all (dnslib's does not); it is accepted
        too, since all it can make us do is ask again over TCP.
        """
        if len(reply) < _HEADER or int.from_bytes(reply[:2], "big") != qid:
            return False
        if not reply[2] & _QR:
            return False
        if reply[2] & _TC and reply[4:6] == b"\0\0":
            return True
        return len(reply) >= self.end and self._fold(reply) == self.key


class _UdpExchange(asyncio.DatagramProtocol):
    """Receives on one query's own socket, ignoring what is not the awaited answer."""

    def __init__(
        self, upstream: Upstream, qid: int, question: _Question, waiter: asyncio.Future[bytes]
    ) -> None:
        self._upstream, self._qid, self._question, self._waiter = upstream, qid, question, waiter

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self._waiter.done():
            return
        if not self._upstream.sent_from(addr) or not self._question.answers(data, self._qid):
            self._upstream.spoofed += 1
            return
        self._waiter.set_result(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: fail now rather than wait for the timeout.
        if not self._waiter.done():
            self._waiter.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and not self._waiter.done():
            self._waiter.set_exception(exc)


class _StreamConnection:
    """One TCP or TLS connection carrying many outstanding queries, matched by ID."""

    def __init__(
        self, upstream: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._upstream, self._reader, self._writer = upstream, reader, writer
        self._pending: dict[int, tuple[_Question, asyncio.Future[bytes]]] = {}
        self.closed = False
        self.last_rx = 0.0  # time.monotonic() of the last frame received
        self._reader_task = asyncio.create_task(self._read_loop())

    async def query(self, packet: bytes, question: _Question) -> bytes:
        if self.closed:
            raise ConnectionResetError(f"connection to {self._upstream.spec} is closed")
        if len(self._pending) >= _MAX_PENDING:
            raise ConnectionError(f"{len(self._pending)} queries already outstanding")
        qid = secrets.randbelow(0x10000)
        while qid in self._pending:
            qid = secrets.randbelow(0x10000)
        waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[qid] = (question, waiter)
        try:
            wire = qid.to_bytes(2, "big") + packet[2:]
            self._writer.write(len(wire).to_bytes(2, "big") + wire)
            await self._writer.drain()
            return await waiter
        finally:
            self._pending.pop(qid, None)

    async def _read_loop(self) -> None:
        try:
            while True:
                size = int.from_bytes(await self._reader.readexactly(2), "big")
                reply = await self._reader.readexactly(size)
                self.last_rx = time.monotonic()
                qid = int.from_bytes(reply[:2], "big") if len(reply) >= 2 else -1
                entry = self._pending.get(qid)
                if entry is None or not entry[0].answers(reply, qid):
                    self._upstream.spoofed += 1  # stale (its query timed out) or forged
                elif not entry[1].done():
                    entry[1].set_result(reply)
        except (OSError, EOFError):
            pass  # the peer closed or reset; pending queries fail below
        finally:
            self.closed = True
            error = f"connection to {self._upstream.spec} closed with the query unanswered"
            for _, waiter in self._pending.values():
                if not waiter.done():
                    waiter.set_exception(ConnectionResetError(error))
            self._writer.close()

    def abort(self) -> None:
        """Drop a connection that looks dead, without a TLS goodbye."""
        self.closed = True
        self._writer.transport.abort()

    async def close(self) -> None:
        self.closed = True
        self._writer.close()
        try:
            async with asyncio.timeout(_CLOSE_GRACE):
                await self._writer.wait_closed()
        except (TimeoutError, OSError):
            self._writer.transport.abort()
        self._reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader_task


class Upstream:
    """One upstream server: how to query it, and the health record the pool orders by."""

    def __init__(
        self,
        spec: UpstreamSpec,
        *,
        ssl_context: ssl.SSLContext | None = None,
        failure_threshold: int = 3,
        backoff: float = 5.0,
        ewma_alpha: float = 0.3,
    ) -> None:
        self.spec = spec
        self._ssl_context = ssl_context
        self._ip = ipaddress.ip_address(spec.host)
        self._failure_threshold, self._backoff, self._alpha = failure_threshold, backoff, ewma_alpha
        self._conn: _StreamConnection | None = None
        self._connect_lock = asyncio.Lock()
        self.ewma_ms: float | None = None  # None until the first answer: counts as fast
        self.consecutive_failures = 0
        self.retry_at = 0.0  # time.monotonic() after which an unhealthy upstream is probed
        self.queries = self.failures = self.timeouts = self.spoofed = self.truncated = 0

    def __repr__(self) -> str:
        return f"Upstream({self.spec})"

    @property
    def healthy(self) -> bool:
        """False after ``failure_threshold`` consecutive failures, until one query succeeds."""
        return self.consecutive_failures < self._failure_threshold

    def due_for_probe(self, now: float) -> bool:
        """An unhealthy upstream whose back-off has run out; claim it with :meth:`claim_probe`."""
        return not self.healthy and now >= self.retry_at

    def claim_probe(self, now: float) -> None:
        """Push the next probe out, so that one query (not every query) tests a sick upstream."""
        self.retry_at = now + self._backoff

    def sent_from(self, addr: tuple[str | int, ...]) -> bool:
        """Whether a datagram's source address is this upstream's."""
        try:
            ip = ipaddress.ip_address(str(addr[0]).split("%", 1)[0])
        except ValueError:
            return False
        return ip == self._ip and addr[1] == self.spec.port

    def stats(self) -> dict[str, str | int | float | bool | None]:
        """Counters for metrics and the status page."""
        return {
            "address": self.spec.address,
            "protocol": self.spec.protocol,
            "healthy": self.healthy,
            "ewma_ms": None if self.ewma_ms is None else round(self.ewma_ms, 3),
            "queries": self.queries,
            "failures": self.failures,
            "timeouts": self.timeouts,
            "spoofed": self.spoofed,
            "truncated": self.truncated,
            "consecutive_failures": self.consecutive_failures,
        }

    async def query(self, packet: bytes, timeout: float) -> bytes:
        """Send ``packet`` and return the reply with ``packet``'s own ID; UpstreamError if none."""
        question = _Question(packet)  # a malformed query is the caller's fault, not ours
        self.queries += 1
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                if self.spec.protocol == "udp":
                    reply = await self._query_udp(packet, question)
                    if reply[2] & _TC:
                        self.truncated += 1
                        reply = await self._query_stream(packet, question)
                else:
                    reply = await self._query_stream(packet, question)
        except TimeoutError:
            self.timeouts += 1
            conn = self._conn
            if conn is not None and conn.last_rx < started:
                conn.abort()  # nothing at all came back while we waited: reconnect next time
            self._failed(timeout * 1000.0)
            raise _AttemptTimeout(
                f"{self.spec}: no answer within {timeout * 1000:.0f} ms"
            ) from None
        except (OSError, EOFError) as exc:  # refused, reset, TLS verification, ...
            self._failed(None)
            raise UpstreamError(f"{self.spec}: {exc or type(exc).__name__}") from exc
        self._sample((time.monotonic() - started) * 1000.0)
        if self.consecutive_failures >= self._failure_threshold:
            _log.warning("upstream %s answers again", self.spec)
        self.consecutive_failures = 0
        return packet[:2] + reply[2:]

    def _sample(self, ms: float) -> None:
        self.ewma_ms = (
            ms if self.ewma_ms is None else self.ewma_ms + self._alpha * (ms - self.ewma_ms)
        )

    def _failed(self, timeout_ms: float | None) -> None:
        # A timeout also feeds the EWMA, so an upstream that drops queries sorts behind
        # one that is slower but answers, long before it is declared unhealthy.
        if timeout_ms is not None:
            self._sample(timeout_ms)
        self.failures += 1
        self.consecutive_failures += 1
        if self.consecutive_failures >= self._failure_threshold:
            if self.consecutive_failures == self._failure_threshold:
                _log.warning("upstream %s unhealthy after %d failures", self.spec, self.failures)
            self.retry_at = time.monotonic() + self._backoff

    async def _query_udp(self, packet: bytes, question: _Question) -> bytes:
        loop = asyncio.get_running_loop()
        qid = secrets.randbelow(0x10000)
        waiter: asyncio.Future[bytes] = loop.create_future()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpExchange(self, qid, question, waiter),
            local_addr=("::" if self._ip.version == 6 else "0.0.0.0", 0),
            remote_addr=(self.spec.host, self.spec.port),
        )
        try:
            transport.sendto(qid.to_bytes(2, "big") + packet[2:])
            return await waiter
        finally:
            transport.close()

    async def _query_stream(self, packet: bytes, question: _Question) -> bytes:
        conn = await self._connection()
        try:
            return await conn.query(packet, question)
        except (ConnectionResetError, BrokenPipeError):
            # Servers close idle connections (RFC 7766 6.2.3); one fresh try, within the timeout.
            conn = await self._connection()
            return await conn.query(packet, question)

    async def _connection(self) -> _StreamConnection:
        async with self._connect_lock:  # one connection for everyone who is waiting
            old = self._conn
            if old is not None and not old.closed:
                return old
            self._conn = None
            if old is not None:
                await old.close()
            tls = self.spec.protocol == "tls"
            if tls and self._ssl_context is None:
                self._ssl_context = ssl.create_default_context()
            reader, writer = await asyncio.open_connection(
                self.spec.host,
                self.spec.port,
                ssl=self._ssl_context if tls else None,
                server_hostname=self.spec.server_name if tls else None,
            )
            self._conn = _StreamConnection(self, reader, writer)
            return self._conn

    async def close(self) -> None:
        """Close the pooled TCP/TLS connection (UDP sockets live only as long as a query)."""
        async with self._connect_lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await conn.close()


class UpstreamPool:
    """Upstreams tried fastest-healthy first, failing over within one overall deadline."""

    def __init__(
        self,
        upstreams: list[UpstreamSpec],
        *,
        timeout: float = 2.0,
        attempt_timeout: float = 0.8,
        ssl_context: ssl.SSLContext | None = None,
        failure_threshold: int = 3,
        backoff: float = 5.0,
    ) -> None:
        if not upstreams:
            raise ValueError("an upstream pool needs at least one upstream")
        if timeout <= 0 or attempt_timeout <= 0:
            raise ValueError("timeout and attempt_timeout must be positive")
        if ssl_context is None and any(spec.protocol == "tls" for spec in upstreams):
            ssl_context = ssl.create_default_context()  # one CA store load, shared
        self.timeout, self.attempt_timeout = timeout, attempt_timeout
        self.upstreams = [
            Upstream(
                s, ssl_context=ssl_context, failure_threshold=failure_threshold, backoff=backoff
            )
            for s in upstreams
        ]
        self._closed = False

    def order(self) -> list[Upstream]:
        """The upstreams to try, in order: due probes, then healthy ones by EWMA latency.

        A probe goes first so that a recovered upstream is noticed; claiming it pushes the next
        probe a back-off away, so a still-dead upstream costs one attempt per back-off.
        """
        now = time.monotonic()
        probes = [u for u in self.upstreams if u.due_for_probe(now)]
        for upstream in probes:
            upstream.claim_probe(now)
        healthy = [u for u in self.upstreams if u.healthy]
        healthy.sort(key=lambda u: 0.0 if u.ewma_ms is None else u.ewma_ms)  # stable: config order
        return probes + healthy

    async def query(self, packet: bytes) -> tuple[bytes, Upstream]:
        """Answer ``packet`` from the first upstream that can; UpstreamError after ``timeout``."""
        if self._closed:
            raise UpstreamError("upstream pool is closed")
        _Question(packet)  # WireError now, before any upstream is blamed
        deadline = time.monotonic() + self.timeout
        candidates = self.order()
        if not candidates:
            wait = min(u.retry_at for u in self.upstreams) - time.monotonic()
            raise UpstreamError(f"all upstreams are unhealthy; next probe in {max(wait, 0):.1f} s")
        errors: list[str] = []
        retry: list[Upstream] = []
        for upstream in candidates:
            remaining = deadline - time.monotonic()
            if remaining <= 0.001:
                break
            try:
                return await upstream.query(packet, min(self.attempt_timeout, remaining)), upstream
            except UpstreamError as exc:
                errors.append(str(exc))
                if isinstance(exc, _AttemptTimeout) and upstream.healthy:
                    retry.append(upstream)  # a lost datagram deserves a second chance
        for upstream in retry:  # only while a whole attempt still fits
            if deadline - time.monotonic() < self.attempt_timeout:
                break
            try:
                return await upstream.query(packet, self.attempt_timeout), upstream
            except UpstreamError as exc:
                errors.append(str(exc))
        raise UpstreamError(
            f"no upstream answered within {self.timeout:.1f} s: " + "; ".join(errors)
        )

    def stats(self) -> list[dict[str, str | int | float | bool | None]]:
        """One dict per upstream, in configuration order."""
        return [u.stats() for u in self.upstreams]

    async def close(self) -> None:
        """Close pooled connections; the pool answers no more queries."""
        self._closed = True
        await asyncio.gather(*(u.close() for u in self.upstreams))

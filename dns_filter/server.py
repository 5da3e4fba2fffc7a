"""Sockets at the edge: UDP and TCP listeners feeding the Resolver.

UDP is served by one blocking ``recvfrom``/``sendto`` loop per socket in its own thread:
for blocked, local and cached names the whole answer happens there without touching the
event loop, which costs tens of microseconds per packet in asyncio. Cache misses are handed
to the asyncio loop (upstream I/O), which sends the answer on the same socket. TCP (RFC 7766:
pipelined queries, answered as they complete) is served by asyncio streams.
Several worker processes can share the port with SO_REUSEPORT to use every core.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import socket
import struct
import threading
from dataclasses import dataclass

from dns_filter import udpbatch
from dns_filter.resolver import Pending, Resolver

log = logging.getLogger("edgeguard.dns")

TCP_IDLE_TIMEOUT = 10.0
TCP_MAX_INFLIGHT = 64
# Bytes read per UDP datagram. A query is 12 + at most 259 bytes of header and question plus
# an OPT record (a cookie is 40 bytes; RFC 8467 pads queries to 128-byte blocks), so 479 holds
# every real one, and a bytes object that small comes from Python's own allocator: a 4096-byte
# buffer costs a malloc and a shrinking realloc per packet, 0.27 µs of the ~10 µs a query
# costs here (measured). A longer datagram arrives cut short and is answered FORMERR.
UDP_QUERY_BYTES = 479


def quiet_gc() -> None:
    """Keep the cyclic garbage collector off the answer path.

    Everything built at start (indexes, lists, caches) is frozen out of collection, and
    young-generation collections run less often: a full collection walking the cache and the
    log backlog shows up as multi-millisecond stalls in the p99 latency otherwise.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> ListenAddress:
        """``127.0.0.1:5353``, ``[::1]:5353`` or ``0.0.0.0:53``."""
        text = text.strip()
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port = rest.removeprefix(":")
        else:
            host, _, port = text.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(
                f"expected address:port (e.g. 127.0.0.1:5353 or [::1]:5353), got {text!r}"
            )
        return cls(host, int(port))

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET


class DnsServer:
    def __init__(
        self,
        resolver: Resolver,
        listen: list[ListenAddress],
        *,
        reuse_port: bool = False,
        batched: bool | None = None,
    ) -> None:
        """``batched``: answer UDP with recvmmsg/sendmmsg (``udpbatch``); None means
        wherever the platform has them, False the one-datagram-per-call loop."""
        self.resolver = resolver
        self.listen = listen
        self.reuse_port = reuse_port
        self.batched = udpbatch.available() if batched is None else batched
        self._udp: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._tcp: list[asyncio.Server] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = threading.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._prefetch: asyncio.Task[None] | None = None
        self.bound: list[tuple[str, int]] = []

    def _udp_socket(self, addr: ListenAddress) -> socket.socket:
        sock = socket.socket(addr.family, socket.SOCK_DGRAM)
        if self.reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if addr.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.bind((addr.host, addr.port))
        # Blocking, no timeout: a timeout would cost a poll() per packet. stop() wakes the
        # loop with a datagram of its own.
        return sock

    async def _bind_pair(self, addr: ListenAddress) -> tuple[socket.socket, asyncio.Server]:
        """UDP and TCP on one port. With port 0 the kernel picks the UDP port, and that
        number can be taken for TCP (a busy machine's outgoing connections): then try
        another, a few times, instead of failing the start."""
        for attempt in range(8):
            sock = self._udp_socket(addr)
            port = sock.getsockname()[1]
            try:
                server = await asyncio.start_server(
                    self._tcp_client, addr.host, port, reuse_port=self.reuse_port or None
                )
            except OSError as exc:
                sock.close()
                if addr.port != 0 or exc.errno != errno.EADDRINUSE or attempt == 7:
                    raise
                continue
            return sock, server
        raise AssertionError("unreachable")

    async def start(self) -> None:
        quiet_gc()
        self._loop = asyncio.get_running_loop()
        for addr in self.listen:
            sock, server = await self._bind_pair(addr)
            port = sock.getsockname()[1]
            self._udp.append(sock)
            self._tcp.append(server)
            self.bound.append((addr.host, port))
        for sock in self._udp:
            thread = threading.Thread(
                target=self._udp_batched if self.batched else self._udp_loop,
                args=(sock,),
                name="dns-udp",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        self._prefetch = asyncio.ensure_future(self._prefetch_loop())
        log.info("DNS listening on %s", ", ".join(f"{h}:{p}" for h, p in self.bound))

    async def _prefetch_loop(self, every: float = 5.0) -> None:
        """Refresh popular cache entries before they expire (the resolver picks which)."""
        while True:
            await asyncio.sleep(every)
            try:
                await self.resolver.prefetch()
            except Exception:
                log.exception("prefetch round failed")

    def _udp_loop(self, sock: socket.socket) -> None:
        handle = self.resolver.handle
        recvfrom, sendto = sock.recvfrom, sock.sendto
        stopping = self._stopping.is_set
        loop = self._loop
        assert loop is not None
        while True:
            try:
                data, addr = recvfrom(UDP_QUERY_BYTES)
            except OSError:
                break  # socket closed by stop()
            if not data and stopping():  # stop() wakes us with an empty datagram
                break
            try:
                result = handle(data, addr[0], False)
            except Exception:  # never let one packet take the listener down
                log.exception("error answering %d bytes from %s", len(data), addr[0])
                continue
            if result is None:
                continue
            if isinstance(result, bytes):
                try:  # noqa: SIM105 - contextlib.suppress costs ~0.2 µs per answer; this, nothing
                    sendto(result, addr)
                except OSError:
                    pass
            else:
                loop.call_soon_threadsafe(self._spawn_udp, result, sock, addr)

    def _udp_batched(self, sock: socket.socket) -> None:
        loop = self._loop
        assert loop is not None

        def later(pending: Pending, addr: udpbatch.Address) -> None:
            loop.call_soon_threadsafe(self._spawn_udp, pending, sock, addr)

        udpbatch.serve(sock, self.resolver.handle, later, self._stopping.is_set, UDP_QUERY_BYTES)

    def _spawn_udp(
        self,
        pending: Pending,
        sock: socket.socket,
        addr: udpbatch.Address,
    ) -> None:
        task = asyncio.ensure_future(self._answer_udp(pending, sock, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer_udp(
        self,
        pending: Pending,
        sock: socket.socket,
        addr: udpbatch.Address,
    ) -> None:
        try:
            response = await self.resolver.resolve(pending)
        except Exception:
            log.exception("error resolving %s", pending.query.qname)
            return
        with contextlib.suppress(OSError):
            sock.sendto(response, addr)

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = peer[0] if peer else ""
        inflight: set[asyncio.Task[None]] = set()
        write_lock = asyncio.Lock()

        async def send(response: bytes) -> None:
            async with write_lock:
                writer.write(struct.pack("!H", len(response)) + response)
                await writer.drain()

        async def answer_later(pending: Pending) -> None:
            try:
                await send(await self.resolver.resolve(pending))
            except (ConnectionError, OSError):
                pass
            except Exception:
                log.exception("error resolving %s over TCP", pending.query.qname)

        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_TIMEOUT)
                    (length,) = struct.unpack("!H", head)
                    data = await asyncio.wait_for(reader.readexactly(length), TCP_IDLE_TIMEOUT)
                except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                    break
                try:
                    result = self.resolver.handle(data, client, True)
                except Exception:
                    log.exception("error answering over TCP from %s", client)
                    break
                if result is None:
                    break  # not a client of ours (or rate limited with drop): hang up
                if isinstance(result, bytes):
                    await send(result)
                    continue
                while len(inflight) >= TCP_MAX_INFLIGHT:
                    await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                task = asyncio.ensure_future(answer_later(result))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
            if inflight:
                await asyncio.wait(inflight, timeout=self.resolver.config.timeout + 1)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def stop(self) -> None:
        self._stopping.set()
        if self._prefetch is not None:
            self._prefetch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prefetch
        for sock in self._udp:
            host, port = sock.getsockname()[:2]
            host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
            poke = socket.socket(sock.family, socket.SOCK_DGRAM)
            with contextlib.suppress(OSError), poke:
                poke.sendto(b"", (host, port))
        for thread in self._threads:
            await asyncio.to_thread(thread.join, 2)
        for sock in self._udp:
            sock.close()
        for server in self._tcp:
            server.close()
            await server.wait_closed()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=3)

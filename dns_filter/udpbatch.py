"""The UDP answer loop with batched system calls: ``recvmmsg`` and ``sendmmsg`` via ctypes.

Why: at full load four fifths of a query's cost is the kernel's, paid per system call.
Reading every datagram that is waiting in one ``recvmmsg`` and sending the answers of the
batch in one ``sendmmsg`` cut a bare answer loop's system time from 4.9-5.7 to 4.2-4.5 µs
a query on this VM, and its user time too (1.34 -> 1.05 µs: ``recvfrom``/``sendto`` build
and parse an address tuple per datagram, here the kernel writes the sender's address where
the answer's ``sendmmsg`` reads it). Python's socket module has neither call. At low load a
batch is one datagram, which costs about what ``recvfrom`` does (the session before measured
that case as slower, hence both figures in docs/benchmarks.md).

Buffers are allocated once per socket: ``BATCH`` receive slots of ``server.UDP_QUERY_BYTES``,
as many send slots of ``SEND_BYTES`` (a longer answer goes out with ``sendto``), and the
senders' addresses, which each answer's message header points at.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import socket
import sys
from collections.abc import Callable
from ctypes import Structure, addressof, c_int, c_size_t, c_uint, c_uint32, c_void_p, sizeof

from dns_filter.resolver import Pending

Address = tuple[str, int] | tuple[str, int, int, int]
"""What ``socket.sendto`` takes for an IPv4 or an IPv6 peer."""

BATCH = 64
SEND_BYTES = 1232  # the EDNS size we advertise; longer answers (TCP-sized EDNS) use sendto
NAME_BYTES = 32  # a sockaddr_in6 (28) rounded up
_NAME_U32 = NAME_BYTES // 4
MSG_WAITFORONE = 0x10000


class _Iovec(Structure):
    _fields_ = [("base", c_void_p), ("len", c_size_t)]


class _Msghdr(Structure):
    _fields_ = [
        ("name", c_void_p),
        ("namelen", c_uint32),
        ("iov", c_void_p),
        ("iovlen", c_size_t),
        ("control", c_void_p),
        ("controllen", c_size_t),
        ("flags", c_int),
    ]


class _Mmsghdr(Structure):
    _fields_ = [("hdr", _Msghdr), ("len", c_uint)]


# Offsets into the message headers, in units of the memoryview casts used on them.
_MSG = sizeof(_Mmsghdr)  # 64 on 64-bit Linux
_MSG_U32 = _MSG // 4
_MSG_U64 = _MSG // 8
_NAMELEN_U32 = (_Mmsghdr.hdr.offset + _Msghdr.namelen.offset) // 4
_LEN_U32 = _Mmsghdr.len.offset // 4
_IOV_U64 = sizeof(_Iovec) // 8


def _libc_calls() -> tuple[Callable[..., int], Callable[..., int]] | None:
    if not sys.platform.startswith("linux") or sizeof(c_void_p) != 8:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        recvmmsg, sendmmsg = libc.recvmmsg, libc.sendmmsg
    except (OSError, AttributeError):
        return None
    recvmmsg.argtypes = [c_int, c_void_p, c_uint, c_int, c_void_p]
    recvmmsg.restype = c_int
    sendmmsg.argtypes = [c_int, c_void_p, c_uint, c_int]
    sendmmsg.restype = c_int
    return recvmmsg, sendmmsg


_CALLS = _libc_calls()
log = logging.getLogger("edgeguard.dns")


def available() -> bool:
    """Whether this platform has the calls (64-bit Linux with glibc or musl)."""
    return _CALLS is not None


class _Clients:
    """Sender address -> the client string ``recvfrom`` would give ("192.0.2.7",
    "fe80::1%eth0"), memoised by the address without the port (a stub resolver uses a new
    source port for every query)."""

    def __init__(self, family: int) -> None:
        self.family = family
        self.names: dict[int | bytes, str] = {}

    def name(self, key: int | bytes, sockaddr: bytes) -> str:
        """Name a sender not in ``names`` yet (the loop looks there first) and remember it."""
        host, _, *rest = address(self.family, sockaddr)
        found = host
        if rest and rest[1]:  # an IPv6 scope (link-local)
            try:
                found = f"{host}%{socket.if_indextoname(rest[1])}"
            except OSError:
                found = f"{host}%{rest[1]}"
        if len(self.names) > 65_536:
            self.names.clear()
        self.names[key] = found
        return found


def address(family: int, sockaddr: bytes) -> Address:
    """A raw ``sockaddr_in``/``sockaddr_in6`` as the tuple ``socket.sendto`` takes."""
    port = int.from_bytes(sockaddr[2:4], "big")
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, sockaddr[4:8]), port
    flowinfo = int.from_bytes(sockaddr[4:8], "big")
    scope = int.from_bytes(sockaddr[24:28], sys.byteorder)
    return socket.inet_ntop(socket.AF_INET6, sockaddr[8:24]), port, flowinfo, scope


def serve(
    sock: socket.socket,
    handle: Callable[[bytes, str, bool], bytes | Pending | None],
    later: Callable[[Pending, Address], None],
    stopping: Callable[[], bool],
    recv_bytes: int,
) -> None:
    """Answer ``sock``'s datagrams until ``stopping()`` is true when a batch arrives
    (``DnsServer.stop`` sets it, then sends a datagram to wake us) or the socket is closed.
    ``later`` takes the queries that need an upstream, with the address to answer. Never
    raises for one bad packet."""
    assert _CALLS is not None
    recvmmsg, sendmmsg = _CALLS
    rbuf = ctypes.create_string_buffer(BATCH * recv_bytes)
    sbuf = ctypes.create_string_buffer(BATCH * SEND_BYTES)
    names = ctypes.create_string_buffer(BATCH * NAME_BYTES)
    riov, siov = (_Iovec * BATCH)(), (_Iovec * BATCH)()
    rmsgs, smsgs = (_Mmsghdr * BATCH)(), (_Mmsghdr * BATCH)()
    for i in range(BATCH):
        riov[i].base, riov[i].len = addressof(rbuf) + i * recv_bytes, recv_bytes
        siov[i].base = addressof(sbuf) + i * SEND_BYTES
        for msgs, iov in ((rmsgs, riov), (smsgs, siov)):
            msgs[i].hdr.name, msgs[i].hdr.namelen = addressof(names) + i * NAME_BYTES, NAME_BYTES
            msgs[i].hdr.iov, msgs[i].hdr.iovlen = addressof(iov) + i * sizeof(_Iovec), 1
    # The kernel writes each sender's address length and each datagram's length into rmsgs;
    # the send headers get the address slot, its length and the answer's length per batch.
    r32 = memoryview(rmsgs).cast("B").cast("I")
    s32 = memoryview(smsgs).cast("B").cast("I")
    s64 = memoryview(smsgs).cast("B").cast("Q")
    siov64 = memoryview(siov).cast("B").cast("Q")
    rview, sview, nview = (memoryview(b).cast("B") for b in (rbuf, sbuf, names))
    names_at = addressof(names)
    rptr, sptr = addressof(rmsgs), addressof(smsgs)
    n32 = memoryview(names).cast("B").cast("I")
    fd = sock.fileno()
    family = sock.family
    v4 = family == socket.AF_INET
    clients = _Clients(family)
    known, name = clients.names, clients.name
    sendto = sock.sendto
    while True:
        n = recvmmsg(fd, rptr, BATCH, MSG_WAITFORONE, None)
        if n <= 0:
            if n < 0 and ctypes.get_errno() in (errno.EINTR, errno.EAGAIN, errno.ENOMEM):
                continue
            break  # the socket was closed (EBADF, ENOTSOCK)
        if stopping():  # set before stop() wakes us, and long before it closes the socket,
            return  # whose descriptor number could then be another file's
        count = 0
        for i in range(n):
            length = r32[i * _MSG_U32 + _LEN_U32]
            at = i * NAME_BYTES
            # IPv4: the address as one 32-bit int; IPv6: its 16 bytes and the scope id
            key: int | bytes = n32[i * _NAME_U32 + 1] if v4 else bytes(nview[at + 8 : at + 28])
            client = known.get(key)
            if client is None:
                client = name(key, bytes(nview[at : at + NAME_BYTES]))
            start = i * recv_bytes
            data = bytes(rview[start : start + length])
            try:
                result = handle(data, client, False)
            except Exception:  # never let one packet take the listener down
                log.exception("error answering %d bytes from %s", length, client)
                continue
            if result is None:
                continue
            if not isinstance(result, bytes):
                later(result, address(family, bytes(nview[at : at + NAME_BYTES])))
                continue
            size = len(result)
            if size > SEND_BYTES:
                try:  # noqa: SIM105 - see DnsServer._udp_loop
                    sendto(result, address(family, bytes(nview[at : at + NAME_BYTES])))
                except OSError:
                    pass
                continue
            sview[count * SEND_BYTES : count * SEND_BYTES + size] = result
            siov64[count * _IOV_U64 + 1] = size
            s64[count * _MSG_U64] = names_at + at
            s32[count * _MSG_U32 + _NAMELEN_U32] = r32[i * _MSG_U32 + _NAMELEN_U32]
            count += 1
        sent = 0
        while sent < count:  # a datagram the kernel refuses is skipped, as sendto's OSError
            done = sendmmsg(fd, sptr + sent * _MSG, count - sent, 0)
            sent += done if done > 0 else 1

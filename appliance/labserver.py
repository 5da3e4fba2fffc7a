"""Echo-the-peer server for the network lab: tells each client which address it came from.

Run inside a lab namespace as ``python -m appliance.labserver --tcp 22,80 --udp 53``.
Every socket binds ``::`` with IPV6_V6ONLY off, so one socket serves IPv4 (as v4-mapped
addresses) and IPv6. A TCP client receives one line, ``<its address as seen here>\\n``,
then the connection closes; a UDP datagram is answered with the same text. This is what
lets a test observe NAT: behind a masquerading router the server sees the router's WAN
address instead of the client's own.

UDP replies are sent from the exact address the datagram was addressed to (IPV6_PKTINFO).
Without that, a wildcard-bound socket would answer from whatever source the routing table
prefers (e.g. 203.0.113.1 instead of 198.51.100.10), the client's connected socket would
discard it, and conntrack on the router would not match it either.

Prints ``ready`` on stdout once every socket is bound; exits cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import selectors
import signal
import socket
import sys
from collections.abc import Sequence
from types import FrameType

__all__ = ["main", "parse_ports", "peer_text"]

_CMSG_SPACE = socket.CMSG_SPACE(20)  # struct in6_pktinfo: 16-byte address + 4-byte ifindex


class _Stop(Exception):
    """Raised from the signal handler to leave the select loop at once."""


def parse_ports(text: str) -> list[int]:
    """Parse ``"22,80,443"`` into port numbers; an empty string means no ports."""
    ports = [int(p) for p in text.split(",") if p.strip()]
    for port in ports:
        if not 0 < port < 65536:
            raise ValueError(f"port out of range: {port}")
    return ports


def peer_text(address: str) -> str:
    """Render a peer address as a client expects it: v4-mapped IPv6 becomes plain IPv4."""
    addr = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def _dual_stack(kind: socket.SocketKind, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    if kind == socket.SOCK_DGRAM:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
    sock.bind(("::", port))
    if kind == socket.SOCK_STREAM:
        sock.listen(128)
    sock.setblocking(False)
    return sock


def _serve_tcp(listener: socket.socket) -> None:
    try:
        conn, peer = listener.accept()
    except (BlockingIOError, InterruptedError, ConnectionAbortedError):
        return
    with conn:
        try:
            conn.settimeout(1.0)
            conn.sendall(f"{peer_text(peer[0])}\n".encode())
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the client went away or the reply is not routable: nothing to report


def _serve_udp(sock: socket.socket) -> None:
    try:
        _data, ancdata, _flags, peer = sock.recvmsg(2048, _CMSG_SPACE)
    except (BlockingIOError, InterruptedError):
        return
    except OSError:
        return  # e.g. a queued ICMP error for an earlier reply
    reply_cmsg = [
        (level, ctype, data)
        for level, ctype, data in ancdata
        if level == socket.IPPROTO_IPV6 and ctype == socket.IPV6_PKTINFO
    ]
    # No route back (the lab's "no NAT" case) fails here: the client times out, as intended.
    with contextlib.suppress(OSError):
        sock.sendmsg([f"{peer_text(peer[0])}\n".encode()], reply_cmsg, 0, peer)


def _on_signal(_signum: int, _frame: FrameType | None) -> None:
    raise _Stop


def serve(tcp_ports: Sequence[int], udp_ports: Sequence[int]) -> None:
    """Bind every port, announce ``ready`` and serve until a signal arrives."""
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    sel = selectors.DefaultSelector()
    socks: list[socket.socket] = []
    try:
        for port in tcp_ports:
            socks.append(_dual_stack(socket.SOCK_STREAM, port))
            sel.register(socks[-1], selectors.EVENT_READ, _serve_tcp)
        for port in udp_ports:
            socks.append(_dual_stack(socket.SOCK_DGRAM, port))
            sel.register(socks[-1], selectors.EVENT_READ, _serve_udp)
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        while True:
            for key, _events in sel.select():
                key.data(key.fileobj)
    except _Stop:
        pass
    finally:
        sel.close()
        for sock in socks:
            sock.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tcp", default="", help="comma-separated TCP ports")
    parser.add_argument("--udp", default="", help="comma-separated UDP ports")
    args = parser.parse_args(argv)
    try:
        tcp, udp = parse_ports(args.tcp), parse_ports(args.udp)
    except ValueError as exc:
        parser.error(str(exc))
    serve(tcp, udp)
    return 0


if __name__ == "__main__":
    sys.exit(main())

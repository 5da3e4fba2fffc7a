"""Batch prober for the network lab: real TCP/UDP/ICMP packets, one verdict per probe.

Run inside a client namespace as ``python -m appliance.labprobe``: reads a JSON list of
probes on stdin (``{"kind": "tcp"|"udp"|"icmp", "dst": ..., "port": ..., "src": ...,
"timeout": 1.0}``) and writes a JSON list of results (``{"ok", "outcome", "seen_as",
"detail", "elapsed"}``) on stdout, in the same order. Probes in a batch run concurrently, so a batch
that is entirely dropped costs about one timeout, not one per probe.

Outcomes, chosen so a test can tell an nft ``reject`` from a ``drop``:

* ``open`` - reached the service (TCP connected / UDP answered / ICMP echo reply).
* ``refused`` - TCP RST or ICMP port-unreachable came back (``reject``, ``reject with tcp
  reset``, or nothing listening).
* ``unreachable`` - an ICMP host/net/admin-prohibited unreachable came back (``reject with
  icmpx admin-prohibited`` and friends) or the local stack has no route.
* ``timeout`` - nothing came back (``drop``, or no route back / no NAT).
* ``error`` - anything else; ``detail`` says what.

ICMP uses raw sockets rather than ``ping``: iputils-ping is not installed on the appliance
image, raw sockets need only root (which the lab has anyway), and parsing replies ourselves
lets us report unreachables precisely and keep concurrent probes apart by echo identifier.
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import json
import os
import select
import socket
import struct
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

__all__ = ["Kind", "Outcome", "Probe", "ProbeResult", "main", "run_batch", "run_probe"]

Outcome = Literal["open", "refused", "unreachable", "timeout", "error"]
Kind = Literal["tcp", "udp", "icmp", "dns"]

# EACCES is how Linux reports ICMPv6 "administratively prohibited" to a connecting socket.
_UNREACH_ERRNOS = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES}
_IP_RECVERR = 11  # <linux/in.h>; Python's socket module lacks these two constants
_IPV6_RECVERR = 25  # <linux/in6.h>
_ids = itertools.count((os.getpid() * 7919) & 0xFFFF)


@dataclass(frozen=True)
class Probe:
    """One connection attempt; ``port`` is ignored for ICMP, ``src`` picks the source address."""

    kind: Kind
    dst: str
    port: int = 0
    src: str | None = None
    timeout: float = 1.0
    qname: str | None = None  # for "dns": the name to ask for (type A)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Probe:
        """Build from the JSON form, rejecting unknown kinds early with a clear message."""
        kind = data["kind"]
        if kind not in ("tcp", "udp", "icmp", "dns"):
            raise ValueError(f"unknown probe kind {kind!r}")
        return cls(
            kind=kind,
            dst=str(data["dst"]),
            port=int(data.get("port", 0)),
            src=None if data.get("src") is None else str(data["src"]),
            timeout=float(data.get("timeout", 1.0)),
            qname=None if data.get("qname") is None else str(data["qname"]),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form read by :func:`main`."""
        return asdict(self)


@dataclass(frozen=True)
class ProbeResult:
    """Verdict of one probe; ``seen_as`` is the client address the server reported.

    ``elapsed`` is measured inside the prober, so "reject answers fast" can be asserted
    without counting interpreter start-up on a busy machine.
    """

    ok: bool
    outcome: Outcome
    seen_as: str | None = None
    detail: str = ""
    elapsed: float = 0.0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProbeResult:
        """Parse the JSON form written by :func:`main`."""
        return cls(
            ok=bool(data["ok"]),
            outcome=data["outcome"],
            seen_as=data.get("seen_as"),
            detail=str(data.get("detail", "")),
            elapsed=float(data.get("elapsed", 0.0)),
        )


def _result(outcome: Outcome, seen_as: str | None = None, detail: str = "") -> ProbeResult:
    return ProbeResult(ok=outcome == "open", outcome=outcome, seen_as=seen_as, detail=detail)


def _from_oserror(exc: OSError) -> ProbeResult:
    if isinstance(exc, TimeoutError):
        return _result("timeout")
    if exc.errno == errno.ECONNREFUSED:
        return _result("refused", detail=str(exc))
    if exc.errno in _UNREACH_ERRNOS:
        return _result("unreachable", detail=str(exc))
    return _result("error", detail=str(exc))


def _family(dst: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(dst).version == 6 else socket.AF_INET


def _bind_src(sock: socket.socket, probe: Probe) -> None:
    if probe.src is not None:
        sock.bind((probe.src, 0))


def _recverr(sock: socket.socket) -> None:
    """Queue every ICMP error for this socket where we can read it (IP(V6)_RECVERR).

    Linux treats an ICMP error that arrives while connect() still holds the socket lock as
    a "soft" error and reports it only after the SYN is retransmitted a second later. Over
    veth the router's reject arrives within that window (reliably so for IPv6), so without
    the error queue a fast reject would look like a drop.
    """
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVERR, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, _IP_RECVERR, 1)


def _queued_errno(sock: socket.socket) -> int:
    """Errno of the first queued ICMP error (struct sock_extended_err), 0 if none."""
    try:
        _data, ancdata, _flags, _addr = sock.recvmsg(512, 512, socket.MSG_ERRQUEUE)
    except (BlockingIOError, InterruptedError):
        return 0
    for _level, _type, data in ancdata:
        if len(data) >= 4:
            return int(struct.unpack("=I", data[:4])[0])
    return 0


def _connect(sock: socket.socket, addr: tuple[str, int], deadline: float) -> ProbeResult | None:
    """Non-blocking connect watching both SO_ERROR and the error queue; None = connected."""
    sock.setblocking(False)
    err = sock.connect_ex(addr)
    if err not in (0, errno.EINPROGRESS):
        return _from_oserror(OSError(err, os.strerror(err)))
    poller = select.poll()
    poller.register(sock, select.POLLOUT | select.POLLERR)
    while (left := deadline - time.monotonic()) > 0:
        events = 0
        for _fd, ev in poller.poll(max(int(left * 1000), 1)):
            events |= ev
        hard = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        soft = _queued_errno(sock) if events & select.POLLERR else 0
        if hard or soft:
            code = hard or soft
            return _from_oserror(OSError(code, os.strerror(code)))
        if events & select.POLLOUT:
            return None
    return _result("timeout")


def _probe_tcp(probe: Probe) -> ProbeResult:
    deadline = time.monotonic() + probe.timeout
    with socket.socket(_family(probe.dst), socket.SOCK_STREAM) as sock:
        _bind_src(sock, probe)
        _recverr(sock)
        failed = _connect(sock, (probe.dst, probe.port), deadline)
        if failed is not None:
            return failed
        sock.setblocking(True)
        data = b""
        try:
            while b"\n" not in data:
                sock.settimeout(max(deadline - time.monotonic(), 0.05))
                chunk = sock.recv(256)
                if not chunk:
                    break
                data += chunk
        except OSError as exc:
            return _result("open", detail=f"connected, no banner: {exc}")
    line = data.decode(errors="replace").strip()
    return _result("open", seen_as=line or None)


def _probe_udp(probe: Probe) -> ProbeResult:
    with socket.socket(_family(probe.dst), socket.SOCK_DGRAM) as sock:
        _bind_src(sock, probe)
        _recverr(sock)  # every ICMP error becomes a hard error, not only "fatal" codes
        sock.settimeout(probe.timeout)
        try:
            sock.connect((probe.dst, probe.port))
            sock.send(b"probe\n")
            data = sock.recv(2048)
        except OSError as exc:
            return _from_oserror(exc)
    return _result("open", seen_as=data.decode(errors="replace").strip() or None)


def _probe_dns(probe: Probe) -> ProbeResult:
    """A DNS query over UDP; ``seen_as`` is the answer: addresses, or the RCODE's name."""
    from dnslib import RCODE, DNSRecord

    query = DNSRecord.question(probe.qname or "example.com", "A")
    with socket.socket(_family(probe.dst), socket.SOCK_DGRAM) as sock:
        _bind_src(sock, probe)
        _recverr(sock)
        sock.settimeout(probe.timeout)
        try:
            sock.connect((probe.dst, probe.port or 53))
            sock.send(query.pack())
            reply = DNSRecord.parse(sock.recv(4096))
        except OSError as exc:
            return _from_oserror(exc)
    answers = [str(rr.rdata) for rr in reply.rr if rr.rtype == 1]
    return _result("open", seen_as=", ".join(answers) or RCODE.get(reply.header.rcode))


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _icmp_verdict(v6: bool, icmp: bytes, ident: int, seq: int) -> ProbeResult | None:
    """Classify one received ICMP message, or None if it is not about our echo request."""
    if len(icmp) < 8:
        return None
    itype, code = icmp[0], icmp[1]
    reply, unreach, exceeded, port_unreach = (129, 1, 3, 4) if v6 else (0, 3, 11, 3)
    if itype == reply:
        return _result("open") if struct.unpack("!HH", icmp[4:8]) == (ident, seq) else None
    if itype not in (unreach, exceeded):
        return None
    inner = icmp[8:]  # the offending packet: our IP header, then our echo request
    if v6:
        if len(inner) < 48 or inner[6] != socket.IPPROTO_ICMPV6:
            return None
        echo = inner[40:48]
    else:
        ihl = (inner[0] & 0x0F) * 4 if inner else 0
        if len(inner) < ihl + 8 or inner[9] != socket.IPPROTO_ICMP:
            return None
        echo = inner[ihl : ihl + 8]
    if struct.unpack("!HH", echo[4:8]) != (ident, seq):
        return None
    detail = f"icmp{'v6' if v6 else ''} type {itype} code {code}"
    if itype == unreach and code == port_unreach:
        return _result("refused", detail=detail)
    return _result("unreachable", detail=detail)


def _probe_icmp(probe: Probe) -> ProbeResult:
    v6 = _family(probe.dst) == socket.AF_INET6
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    ident, seq = next(_ids) & 0xFFFF, 1
    deadline = time.monotonic() + probe.timeout
    with socket.socket(_family(probe.dst), socket.SOCK_RAW, proto) as sock:
        _bind_src(sock, probe)
        header = struct.pack("!BBHHH", 128 if v6 else 8, 0, 0, ident, seq)
        payload = b"edgeguard-lab"
        # The kernel fills in ICMPv6 checksums itself (it needs the pseudo-header).
        csum = 0 if v6 else _checksum(header + payload)
        packet = header[:2] + struct.pack("!H", csum) + header[4:] + payload
        try:
            sock.sendto(packet, (probe.dst, 0))
        except OSError as exc:
            return _from_oserror(exc)
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data = sock.recv(65535)
            except TimeoutError:
                break
            except OSError as exc:
                return _from_oserror(exc)
            icmp = data if v6 else data[(data[0] & 0x0F) * 4 :]
            verdict = _icmp_verdict(v6, icmp, ident, seq)
            if verdict is not None:
                return verdict
    return _result("timeout")


def run_probe(probe: Probe) -> ProbeResult:
    """Run one probe and time it; never raises (failures become ``error`` results)."""
    start = time.monotonic()
    try:
        if probe.kind == "tcp":
            result = _probe_tcp(probe)
        elif probe.kind == "udp":
            result = _probe_udp(probe)
        elif probe.kind == "dns":
            result = _probe_dns(probe)
        else:
            result = _probe_icmp(probe)
    except Exception as exc:  # a malformed probe must not sink the whole batch
        result = _result("error", detail=f"{type(exc).__name__}: {exc}")
    return replace(result, elapsed=round(time.monotonic() - start, 4))


def run_batch(probes: list[Probe]) -> list[ProbeResult]:
    """Run all probes concurrently (one thread each) and return results in input order."""
    if not probes:
        return []
    with ThreadPoolExecutor(max_workers=min(len(probes), 256)) as pool:
        return list(pool.map(run_probe, probes))


def main() -> int:
    """Read probes as JSON on stdin, write results as JSON on stdout."""
    raw = json.load(sys.stdin)
    if not isinstance(raw, list):
        sys.stderr.write("labprobe: expected a JSON list of probes on stdin\n")
        return 2
    results = run_batch([Probe.from_dict(item) for item in raw])
    json.dump([asdict(r) for r in results], sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

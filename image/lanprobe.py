#!/usr/bin/python3
"""What image/test.sh asks from a client's side (run under ``ip netns exec``): the host's
own Python 3, standard library only, so the test needs no venv and no dig/curl quirks.

    lanprobe.py dns SERVER NAME [--wait SECONDS]   -> "NOERROR 198.51.100.80" | "NXDOMAIN"
    lanprobe.py tcp HOST PORT [--timeout S]        -> "open" | "refused" | "timeout"
    lanprobe.py cert HOST PORT                     -> SHA-256 fingerprint (AA:BB:...)
    lanprobe.py get URL [--wait SECONDS]           -> "200 /login": status, path after redirects
    lanprobe.py setup BASE TOKEN USER PASSWORD     -> makes the first admin
    lanprobe.py health BASE USER PASSWORD          -> logs in, prints /api/v1/health (JSON)

Exit status 0 when the probe got an answer (whatever it says), 1 when it got none: the
test decides what answer is right.
"""

from __future__ import annotations

import argparse
import hashlib
import http.cookiejar
import json
import re
import secrets
import socket
import ssl
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

RCODES = ("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED")


def _context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the box's certificate is self-signed; we pin it instead
    return ctx


def dns_query(server: str, name: str, timeout: float = 1.0) -> str | None:
    """A recursive A query over UDP: "RCODE addr..." or None when nothing answered."""
    qid = secrets.randbelow(65536)
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    query = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(query, (server, 53))
            data = s.recv(4096)
        except OSError:
            return None
    if len(data) < 12 or struct.unpack("!H", data[:2])[0] != qid:
        return None
    rcode, answers = data[3] & 0xF, struct.unpack("!H", data[6:8])[0]
    pos = 12 + len(qname) + 4
    addrs = []
    for _ in range(answers):
        while data[pos] and data[pos] < 0xC0:  # a name: labels, or a pointer
            pos += data[pos] + 1
        pos += 2 if data[pos] >= 0xC0 else 1
        rtype, _cls, _ttl, length = struct.unpack("!HHIH", data[pos : pos + 10])
        pos += 10
        if rtype == 1 and length == 4:
            addrs.append(socket.inet_ntoa(data[pos : pos + 4]))
        pos += length
    return " ".join([RCODES[rcode] if rcode < len(RCODES) else str(rcode), *addrs])


def tcp_state(host: str, port: int, timeout: float) -> str:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return "open"
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return f"error {exc.errno}"


def cert_fingerprint(host: str, port: int) -> str:
    with (
        socket.create_connection((host, port), timeout=5) as raw,
        _context().wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


class Session:
    """A browser-like session: cookies, the CSRF token from the last form."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=_context()),
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
        )

    def request(self, path: str, form: dict[str, str] | None = None) -> tuple[int, str]:
        status, body, _ = self.fetch(path, form)
        return status, body

    def fetch(self, path: str, form: dict[str, str] | None = None) -> tuple[int, str, str]:
        """(status, body, the URL it ended at after redirects); status 0: no answer."""
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        try:
            with self.opener.open(self.base + path, data=data, timeout=20) as resp:
                return resp.status, resp.read().decode("utf-8", "replace"), resp.geturl()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8", "replace"), exc.geturl()
        except (urllib.error.URLError, OSError) as exc:
            return 0, str(exc), ""  # no answer (refused, timed out, TLS failed)

    def csrf(self, path: str) -> str:
        status, html = self.request(path)
        found = re.search(r'name="csrf_token"\s+value="([^"]+)"', html)
        if not found:
            raise SystemExit(f"{path}: HTTP {status}, no csrf_token in the form")
        return found.group(1)


def setup(base: str, token: str, user: str, password: str) -> int:
    s = Session(base)
    form = {"csrf_token": s.csrf("/setup"), "token": token, "username": user}
    status, html = s.request("/setup", {**form, "password": password, "password2": password})
    error = re.search(r'class="error"[^>]*>([^<]+)', html)
    print(f"HTTP {status}" + (f": {error.group(1).strip()}" if error else ""))
    return 0 if status == 200 and not error else 1


def health(base: str, user: str, password: str) -> int:
    s = Session(base)
    form = {"csrf_token": s.csrf("/login"), "username": user, "password": password}
    status, _ = s.request("/login", form)
    if status != 200:
        print(f"login: HTTP {status}", file=sys.stderr)
        return 1
    status, body = s.request("/api/v1/health")
    if status != 200:
        print(f"/api/v1/health: HTTP {status}", file=sys.stderr)
        return 1
    print(json.dumps(json.loads(body)))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("dns")
    p.add_argument("server")
    p.add_argument("name")
    p.add_argument("--wait", type=float, default=0.0, help="retry until answered, up to S")
    p = sub.add_parser("tcp")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--timeout", type=float, default=3.0)
    p = sub.add_parser("cert")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p = sub.add_parser("get")
    p.add_argument("url")
    p.add_argument("--wait", type=float, default=0.0, help="retry until answered, up to S")
    p = sub.add_parser("setup")
    p.add_argument("base")
    p.add_argument("token")
    p.add_argument("user")
    p.add_argument("password")
    p = sub.add_parser("health")
    p.add_argument("base")
    p.add_argument("user")
    p.add_argument("password")
    args = parser.parse_args()

    if args.cmd == "dns":
        deadline = time.monotonic() + args.wait
        while True:
            answer = dns_query(args.server, args.name)
            if answer is not None or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        print(answer or "no answer")
        return 0 if answer is not None else 1
    if args.cmd == "tcp":
        print(tcp_state(args.host, args.port, args.timeout))
        return 0
    if args.cmd == "cert":
        print(cert_fingerprint(args.host, args.port))
        return 0
    if args.cmd == "get":
        deadline = time.monotonic() + args.wait
        while True:
            status, body, final = Session("").fetch(args.url)
            if status != 0 or time.monotonic() >= deadline:
                break
            time.sleep(1.0)
        print(status, urllib.parse.urlsplit(final).path)
        if status == 0:
            print(body, file=sys.stderr)
        return 0 if status != 0 else 1
    if args.cmd == "setup":
        return setup(args.base, args.token, args.user, args.password)
    return health(args.base, args.user, args.password)


if __name__ == "__main__":
    raise SystemExit(main())

"""The lab's "public DNS server": answers for demo names, run in the inet namespace.

The lab has no real internet, so the appliance's resolver needs an upstream to forward to.
This one serves a small zone (the lab's servers, the web filter's demo names, the safe
search hosts) and answers every other name under the reserved example/test names with
198.51.100.10, so a name the resolver fails to block is visible (it resolves) while a
blocked one comes back NXDOMAIN from the appliance itself. Real-world names (facebook.com)
get NXDOMAIN: the lab has no internet, and must not pretend those live on a lab server.

    python -m appliance.labdns --listen 198.51.100.10 --port 53
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from dnslib import QTYPE, RR, A, DNSRecord
from dnslib.server import DNSLogger, DNSServer
from dnslib.zoneresolver import ZoneResolver

ZONE = """
www.example.com. 300 A 198.51.100.10
intranet.example.com. 300 A 198.51.100.20
tracker.example.net. 300 A 198.51.100.66
ads.example.net. 300 CNAME tracker.example.net.
social.example. 300 A 198.51.100.30
video.example. 300 A 198.51.100.30
cam.vendor-cloud.example. 300 A 198.51.100.40
forcesafesearch.google.com. 300 A 198.51.100.81
restrict.youtube.com. 300 A 198.51.100.82
restrictmoderate.youtube.com. 300 A 198.51.100.83
strict.bing.com. 300 A 198.51.100.84
safe.duckduckgo.com. 300 A 198.51.100.85
www.google.com. 300 A 198.51.100.90
"""
_RESERVED = (".example", ".test", ".example.com", ".example.net", ".example.org")


class LabResolver:
    """The zone above, and 198.51.100.10 for any other A question under a reserved name."""

    def __init__(self) -> None:
        self.zone = ZoneResolver(ZONE)

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        reply = self.zone.resolve(request, handler)
        name = str(request.q.qname).lower().rstrip(".")
        if not reply.rr and request.q.qtype == QTYPE.A and name.endswith(_RESERVED):
            reply = request.reply()
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A("198.51.100.10"), ttl=60))
        return reply


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", default="198.51.100.10")
    ap.add_argument("--port", type=int, default=53)
    args = ap.parse_args()
    quiet = DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data")
    servers = [
        DNSServer(LabResolver(), port=args.port, address=args.listen, tcp=tcp, logger=quiet)
        for tcp in (False, True)
    ]
    for server in servers:
        server.start_thread()
    print("ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    for server in servers:
        server.stop()
        server.server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Safe search answers: the asked name, a CNAME to the provider's safe host, its addresses.

Google, Bing, DuckDuckGo and YouTube document this: resolve www.google.com (and the other
search names) to forcesafesearch.google.com and the provider serves only the safe version;
no browser setting or cookie can turn it off. Built with dnslib: only the names of groups
with safe search on take this path, and only on a cache miss of the answer.
"""

from __future__ import annotations

from dnslib import CNAME, QTYPE, RR, DNSHeader, DNSQuestion, DNSRecord

from dns_filter import wire


def safe_search_answer(q: wire.Query, target: str, upstream_answer: bytes) -> bytes:
    """The reply to ``q``: ``q.qname CNAME target`` plus the target's records of ``q.qtype``.

    An upstream answer that does not parse, or holds no records, gives the bare CNAME with
    the upstream's RCODE (the client then resolves the target itself, still the safe host).
    """
    rd = (q.flags >> 8) & 1
    reply = DNSRecord(
        DNSHeader(id=q.id, qr=1, ra=1, rd=rd), q=DNSQuestion(q.qname, q.qtype, q.qclass)
    )
    try:
        answer = DNSRecord.parse(upstream_answer)
    except Exception:  # dnslib raises several types for garbage
        answer = None
    records = (
        [rr for rr in answer.rr if rr.rtype in (QTYPE.A, QTYPE.AAAA, QTYPE.CNAME)]
        if answer is not None
        else []
    )
    ttl = min((rr.ttl for rr in records), default=300)
    reply.add_answer(RR(q.qname, QTYPE.CNAME, rdata=CNAME(target), ttl=ttl))
    for rr in records:
        reply.add_answer(rr)
    if answer is not None:
        reply.header.rcode = answer.header.rcode
    return bytes(reply.pack())

"""Built-in names an admin can use without defining them: services and ICMP types.

Like OPNsense's port aliases, everyday services are known by name. A policy may define a
service with the same name; its own definition wins.
"""

from __future__ import annotations

from policies.model import Service

ICMP_TYPES = frozenset(
    {
        "echo-reply",
        "destination-unreachable",
        "source-quench",
        "redirect",
        "echo-request",
        "router-advertisement",
        "router-solicitation",
        "time-exceeded",
        "parameter-problem",
        "timestamp-request",
        "timestamp-reply",
        "info-request",
        "info-reply",
        "address-mask-request",
        "address-mask-reply",
    }
)

ICMPV6_TYPES = frozenset(
    {
        "destination-unreachable",
        "packet-too-big",
        "time-exceeded",
        "parameter-problem",
        "echo-request",
        "echo-reply",
        "mld-listener-query",
        "mld-listener-report",
        "mld-listener-done",
        "nd-router-solicit",
        "nd-router-advert",
        "nd-neighbor-solicit",
        "nd-neighbor-advert",
        "nd-redirect",
        "router-renumbering",
        "ind-neighbor-solicit",
        "ind-neighbor-advert",
        "mld2-listener-report",
    }
)


def _svc(name: str, tcp: tuple[int, ...] = (), udp: tuple[int, ...] = ()) -> Service:
    return Service(name, tcp=tuple((p, p) for p in tcp), udp=tuple((p, p) for p in udp))


BUILTIN_SERVICES: dict[str, Service] = {
    s.name: s
    for s in (
        _svc("ssh", tcp=(22,)),
        _svc("telnet", tcp=(23,)),
        _svc("smtp", tcp=(25,)),
        _svc("submission", tcp=(465, 587)),
        _svc("dns", tcp=(53,), udp=(53,)),
        _svc("dns-over-tls", tcp=(853,)),
        _svc("dhcp", udp=(67, 68)),
        _svc("dhcpv6", udp=(546, 547)),
        _svc("http", tcp=(80,)),
        _svc("https", tcp=(443,), udp=(443,)),
        _svc("web", tcp=(80, 443), udp=(443,)),
        _svc("ntp", udp=(123,)),
        _svc("imap", tcp=(143, 993)),
        _svc("pop3", tcp=(110, 995)),
        _svc("smb", tcp=(445,)),
        _svc("rdp", tcp=(3389,), udp=(3389,)),
        _svc("ipp", tcp=(631,)),
        _svc("printer", tcp=(515, 631, 9100)),
        _svc("snmp", udp=(161,)),
        _svc("syslog", udp=(514,)),
        _svc("mdns", udp=(5353,)),
        _svc("sip", tcp=(5060,), udp=(5060,)),
        _svc("openvpn", udp=(1194,)),
        _svc("wireguard", udp=(51820,)),
        Service("ping", icmp=("echo-request",), icmpv6=("echo-request",)),
        Service(
            "traceroute",
            udp=((33434, 33534),),
            icmp=("echo-request",),
            icmpv6=("echo-request",),
        ),
    )
}

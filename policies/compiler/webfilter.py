"""The web filter's nftables part: no way around the office's resolver.

* ``wf_dns`` (nat prerouting): DNS from an enforced zone to anything but the box is
  redirected (DNAT) to the box's resolver on that zone, so a client asking a DNS server of
  its own choosing still gets the filtered answer; conntrack rewrites the reply's source
  back, so the client never notices.
* ``wf_guard`` (forward, new connections only): DNS that could not be redirected, DNS over
  TLS (tcp 853), DNS over QUIC (udp 853) and HTTPS/HTTP3 to known DNS-over-HTTPS endpoints
  are rejected. Unfiltered groups' clients (``filter: false``) pass both chains.
* rule destination names (``domains``/``web_services``) are sets with timeouts the
  resolver fills with the addresses it answers (``dom_<rule>_v4``/``_v6``).
"""

from __future__ import annotations

from collections.abc import Iterable

from policies.compiler.matches import quoted
from policies.intervals import format_elements, merge
from policies.model import AddressSet, ClientMembers, DomainSet, Policy
from policies.web_model import WebFilter

DOMAIN_SET_SIZE = 65535


def exempt_members(wf: WebFilter) -> ClientMembers:
    groups = wf.exempt
    return ClientMembers(
        AddressSet(
            "wf_exempt",
            tuple(merge([iv for g in groups for iv in g.members.addresses.v4])),
            tuple(merge([iv for g in groups for iv in g.members.addresses.v6])),
        ),
        tuple(dict.fromkeys(m for g in groups for m in g.members.macs)),
    )


def _exempt_returns(wf: WebFilter) -> list[str]:
    ex = exempt_members(wf)
    lines = []
    if ex.addresses.v4:
        lines.append('ip saddr @wf_exempt_v4 return comment "unfiltered groups"')
    if ex.addresses.v6:
        lines.append('ip6 saddr @wf_exempt_v6 return comment "unfiltered groups"')
    if ex.macs:
        lines.append('ether saddr @wf_exempt_mac return comment "unfiltered groups"')
    return lines


class WebFilterParts:
    """Sets, chains and hook lines of the web filter, for ``Layout`` to place."""

    def __init__(self, policy: Policy, ifaces: dict[str, tuple[str, ...]]) -> None:
        self.p = policy
        self.wf = policy.web_filter
        self.ifaces = ifaces

    def _zone_ifaces(self) -> str:
        assert self.wf is not None
        return quoted([i for z in self.wf.zones for i in self.ifaces[z]])

    @property
    def enforcing(self) -> bool:
        return self.wf is not None and bool(self.wf.zones)

    # -- hook lines ----------------------------------------------------------------------------
    def dstnat_lines(self) -> list[str]:
        if not self.enforcing:
            return []
        return [
            f"iifname {self._zone_ifaces()} meta l4proto {{ tcp, udp }} th dport 53 "
            "fib daddr type != local jump wf_dns"
        ]

    def input_lines(self) -> list[str]:
        if not self.enforcing:
            return []
        lines = [
            f"iifname {self._zone_ifaces()} meta l4proto {{ tcp, udp }} th dport 53 "
            'accept comment "web filter: DNS to the box\'s resolver"'
        ]
        dns = self.p.dns
        for ip, addr in (("ip", dns.block_ipv4), ("ip6", dns.block_ipv6)) if dns else ():
            if addr:
                lines.append(
                    f"iifname {self._zone_ifaces()} {ip} daddr {addr} tcp dport 80 "
                    'accept comment "web filter: block page"'
                )
        return lines

    def forward_lines(self) -> list[str]:
        if not self.enforcing:
            return []
        return [f"iifname {self._zone_ifaces()} jump wf_guard"]

    # -- chains ---------------------------------------------------------------------------------
    def chains(self) -> list[list[str]]:
        wf = self.wf
        if wf is None or not wf.zones:
            return []
        dns = _exempt_returns(wf)
        for r in wf.redirects:
            ip = "ip" if r.family == 4 else "ip6"
            target = r.address if r.family == 4 else f"[{r.address}]"
            ifs = quoted(self.ifaces[r.zone])
            dns.append(
                f"iifname {ifs} meta nfproto ipv{r.family} dnat {ip} to {target} "
                f'comment "web filter: DNS of zone {r.zone} to the resolver"'
            )
        guard = _exempt_returns(wf)
        guard += [
            'meta l4proto tcp th dport 53 reject with tcp reset comment "DNS around the resolver"',
            'udp dport 53 reject comment "DNS around the resolver"',
        ]
        if wf.block_doh:
            guard += [
                'tcp dport 853 reject with tcp reset comment "DNS over TLS"',
                'udp dport 853 reject comment "DNS over QUIC"',
            ]
            for fam, addrs in ((4, wf.doh_v4), (6, wf.doh_v6)):
                if addrs:
                    ip = "ip" if fam == 4 else "ip6"
                    guard += [
                        f"{ip} daddr @wf_doh_v{fam} tcp dport 443 reject with tcp reset "
                        'comment "DNS over HTTPS"',
                        f'{ip} daddr @wf_doh_v{fam} udp dport 443 reject comment "DNS over HTTP/3"',
                    ]
        return [_chain("wf_dns", dns), _chain("wf_guard", guard)]

    # -- sets -------------------------------------------------------------------------------------
    def sets(self) -> list[str]:
        wf = self.wf
        lines: list[str] = []
        if wf is not None and wf.zones:
            ex = exempt_members(wf)
            for fam in ex.addresses.families():
                lines += _const_set(
                    f"wf_exempt_v{fam}",
                    "ipv4_addr" if fam == 4 else "ipv6_addr",
                    format_elements(fam, ex.addresses.of(fam)),
                    interval=True,
                )
            if ex.macs:
                lines += _const_set("wf_exempt_mac", "ether_addr", list(ex.macs))
            if wf.block_doh:
                for fam, addrs in ((4, wf.doh_v4), (6, wf.doh_v6)):
                    if addrs:
                        kind = "ipv4_addr" if fam == 4 else "ipv6_addr"
                        lines += _const_set(f"wf_doh_v{fam}", kind, list(addrs))
        return lines


def mac_sets(members: Iterable[ClientMembers]) -> list[str]:
    lines: list[str] = []
    seen: set[str] = set()
    for m in members:
        if m.macs and m.mac_set not in seen:
            seen.add(m.mac_set)
            lines += _const_set(m.mac_set, "ether_addr", list(m.macs))
    return lines


def domain_sets(sets: Iterable[DomainSet]) -> list[str]:
    lines: list[str] = []
    for ds in sets:
        for fam, kind in ((4, "ipv4_addr"), (6, "ipv6_addr")):
            lines += [
                f"\tset {ds.name}_v{fam} {{",
                f"\t\ttype {kind}",
                f"\t\tsize {DOMAIN_SET_SIZE}",
                "\t\tflags timeout",
                "\t}",
            ]
    return lines


def _const_set(name: str, kind: str, elements: list[str], *, interval: bool = False) -> list[str]:
    lines = [f"\tset {name} {{", f"\t\ttype {kind}"]
    if interval:
        lines.append("\t\tflags interval")
    lines.append("\t\telements = { " + ", ".join(elements) + " }")
    return [*lines, "\t}"]


def _chain(name: str, body: list[str]) -> list[str]:
    return [f"\tchain {name} {{", *(f"\t\t{ln}" for ln in body), "\t}"]

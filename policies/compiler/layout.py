"""Assemble the table: sets, zone-pair chains with their defaults, base chains, NAT."""

from __future__ import annotations

import ipaddress

from policies.compiler.matches import (
    IP,
    ConstSets,
    address_match,
    anonymous,
    log_statement,
    quoted,
    set_block,
    set_name,
)
from policies.compiler.quarantine import QuarantineParts
from policies.compiler.rules import DynamicSet, dynamic_sets, expand_members, rule_lines
from policies.compiler.webfilter import WebFilterParts, domain_sets, mac_sets
from policies.intervals import format_elements
from policies.model import (
    SELF,
    AddressSet,
    Default,
    Family,
    InterfaceAddress,
    Policy,
    PortForward,
)

_CT_FAST_PATH = "ct state vmap { invalid : drop, established : accept, related : accept }"
# RFC 4890: ICMPv6 that IPv6 cannot work without (neighbour discovery, PMTU, errors).
_ICMPV6_INPUT = (
    "icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem, "
    "nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } accept"
)
_ICMPV6_OUTPUT = (
    "icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, "
    "mld-listener-report, mld2-listener-report } accept"
)
_ICMPV6_FORWARD = (
    "icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem } "
    "accept"
)


class Layout:
    def __init__(self, policy: Policy, offset: int, offload: bool) -> None:
        self.p = policy
        self.offset = offset
        self.offload = offload
        self.ifaces = {z.name: z.interfaces for z in policy.zones}
        self.zone_names = [z.name for z in policy.zones]
        self.networks = {z.name: [_network(a) for a in z.addresses] for z in policy.zones}
        self.fwd: dict[tuple[str, str], list[str]] = {}
        self.inp: dict[str, list[str]] = {}
        self.out: dict[str, list[str]] = {}
        self.dynamic: list[DynamicSet] = []
        self.stats: dict[str, int] = {}
        self.consts = ConstSets()
        self.web = WebFilterParts(policy, self.ifaces)
        self.quarantine = QuarantineParts(policy)
        self.rules = [v for r in policy.rules for v in expand_members(r)]
        self._place_rules()

    # -- rules into zone-pair chains ---------------------------------------------------------
    def _place_rules(self) -> None:
        for rule in self.rules:
            lines = rule_lines(rule, self.offset, self.consts)
            self.dynamic += dynamic_sets(rule)
            src_zones = rule.src.zones or self._zones_holding(rule.src.addresses)
            if rule.src.members is not None and rule.src.zones is None:
                # a MAC is a neighbour on an inside segment, never behind the WAN
                src_zones = [z for z in src_zones if z not in self.p.nat.masquerade]
            dst_zones = rule.dst.zones or self._zones_holding(rule.dst.addresses)
            if rule.src.is_self:
                for z in dst_zones:
                    self.out.setdefault(z, []).extend(lines)
            elif rule.dst.is_self:
                for z in src_zones:
                    self.inp.setdefault(z, []).extend(lines)
            else:
                for s in src_zones:
                    for d in dst_zones:
                        self.fwd.setdefault((s, d), []).extend(lines)

    def _zones_holding(self, addresses: AddressSet | None) -> list[str]:
        """Zones whose own networks hold every address, else all zones.

        An address inside a zone's connected network can only arrive from (or go to) that
        zone, so a rule like ``from: printers`` lands in the LAN's chains only instead of
        being copied into every zone pair.
        """
        if addresses is None:
            return self.zone_names
        found: list[str] = []
        for fam in addresses.families():
            for start, end in addresses.of(fam):
                holders = [
                    z
                    for z, nets in self.networks.items()
                    for f, lo, hi in nets
                    if f == fam and lo <= start and end <= hi
                ]
                if not holders:
                    return self.zone_names
                found += [z for z in holders if z not in found]
        return [z for z in self.zone_names if z in found] or self.zone_names

    # -- chains -----------------------------------------------------------------------------
    def _pair_chain(self, name: str, lines: list[str], default: Default) -> list[str] | None:
        """The chain body for one zone pair, or None when a plain vmap verdict suffices."""
        counted_by_base = self.p.counters and default.action == "drop"
        needs_chain = (
            default.action == "reject" or default.log or (default.counter and not counted_by_base)
        )
        if not lines and not needs_chain:
            return None  # a vmap verdict, or the base chain's counted drop, is enough
        label = f'comment "default {default.src}->{default.dst}"'
        tail: list[str] = []
        stmts = ["counter"] if default.counter else []
        if default.log and default.log.rate:  # rate-limit the log line only, never the verdict
            tail.append(f"limit rate {default.log.rate} {log_statement(default.log)} {label}")
        elif default.log:
            stmts.append(log_statement(default.log))
        if default.action == "reject":
            tail.append(" ".join(["meta l4proto tcp", *stmts, "reject with tcp reset", label]))
            tail.append(" ".join([*stmts, "reject with icmpx admin-prohibited", label]))
        else:
            tail.append(" ".join([*stmts, default.action, label]))
        return [f"\tchain {name} {{", *(f"\t\t{ln}" for ln in [*lines, *tail]), "\t}"]

    def _dispatch(self) -> tuple[list[str], list[str], list[str], list[list[str]]]:
        """vmap entries for input, forward and output, and the regular chains they jump to."""
        chains: list[list[str]] = []
        inp: list[str] = []
        fwd: list[str] = []
        out: list[str] = []

        def entry(
            keys: list[str], name: str, lines: list[str], default: Default, base_drop: bool
        ) -> list[str]:
            body = self._pair_chain(name, lines, default)
            if body:
                chains.append(body)
                verdict = f"jump {name}"
            elif default.action == "drop" and base_drop:
                return []  # falls through to the base chain's own drop
            else:
                verdict = default.action
            return [f"{k} : {verdict}" for k in keys]

        for s in self.zone_names:
            keys = [f'"{i}"' for i in self.ifaces[s]]
            inp += entry(keys, f"in_{s}", self.inp.get(s, []), self.p.default_for(s, SELF), True)
        for s in self.zone_names:
            for d in self.zone_names:
                keys = [f'"{i}" . "{o}"' for i in self.ifaces[s] for o in self.ifaces[d]]
                fwd += entry(
                    keys, f"fwd_{s}-{d}", self.fwd.get((s, d), []), self.p.default_for(s, d), True
                )
        for d in self.zone_names:
            keys = [f'"{o}"' for o in self.ifaces[d]]
            out += entry(keys, f"out_{d}", self.out.get(d, []), self.p.default_for(SELF, d), False)
        out = [e for e in out if not e.endswith(": accept")]
        return inp, fwd, out, chains

    # -- block lists, management, NAT ---------------------------------------------------------
    def _zone_ifaces(self, zones: tuple[str, ...]) -> list[str]:
        return [i for z in zones for i in self.ifaces[z]]

    def _blocklist_lines(self, direction: str) -> list[str]:
        """Drops for block lists: 'inbound' matches sources, 'outbound' destinations.

        They sit after the conntrack fast path: only packets that open a connection pay the
        set lookups (forwarding throughput measured 0.91 of an empty ruleset with the lookups
        first, see docs/benchmarks.md). So a block list stops new connections, and replies
        to connections the office opened are not cut; flows open before a list changed run
        until they end.
        """
        out: list[str] = []
        counter = "counter " if self.p.counters else ""
        for bl in self.p.blocklists:
            if bl.block not in ("both", direction):
                continue
            dev = "iifname" if direction == "inbound" else "oifname"
            key = "saddr" if direction == "inbound" else "daddr"
            log = f"{log_statement_for(bl.name, direction)} " if bl.log else ""
            for fam in bl.addresses.families():
                out.append(
                    f"{dev} {quoted(self._zone_ifaces(bl.zones))} "
                    f"{address_match(bl.addresses, fam, key, self.consts)} "
                    f'{counter}{log}drop comment "blocklist {bl.name} {direction}"'
                )
        return out

    def _anti_lockout(self) -> list[str]:
        m = self.p.management
        if not m.anti_lockout or not m.zones or not m.tcp_ports:
            return []
        return [
            f"iifname {quoted(self._zone_ifaces(m.zones))} "
            f"tcp dport {self.consts.ports(m.tcp_ports)} "
            'accept comment "anti-lockout"'
        ]

    def _named_sets(self) -> list[AddressSet]:
        found: dict[str, AddressSet] = {}
        for rule in self.rules:
            for side in (rule.src.addresses, rule.dst.addresses):
                if side is not None and side.name:
                    found.setdefault(side.name, side)
        for pf in self.p.nat.port_forwards:
            if pf.sources is not None and pf.sources.name:
                found.setdefault(pf.sources.name, pf.sources)
        for bl in self.p.blocklists:
            if bl.block != "none":
                found.setdefault(bl.addresses.name or bl.name, bl.addresses)
        return list(found.values())

    def _port_forward_lines(self, pf: PortForward) -> tuple[list[str], list[str]]:
        fam: Family = pf.family
        lo, hi = pf.ports
        dport = str(lo) if lo == hi else f"{lo}-{hi}"
        proto = (
            f"{pf.protocols[0]} dport"
            if len(pf.protocols) == 1
            else "meta l4proto { tcp, udp } th dport"
        )
        target = pf.to_address if fam == 4 else f"[{pf.to_address}]"
        if pf.to_port is not None:
            target += f":{pf.to_port}"
        nfproto = f"meta nfproto ipv{fam}"
        src = (
            f" {address_match(pf.sources, fam, 'saddr', self.consts)}"
            if pf.sources is not None
            else ""
        )
        comment = f'comment "forward {pf.name}{": " + pf.comment if pf.comment else ""}"'
        dnat = f"dnat {IP[fam]} to {target} {comment}"
        # Only traffic addressed to the box's own outside address is forwarded: without this
        # match a packet routed *through* the box to an inside host on that port would be
        # rewritten to the forward's target too.
        outside = [a.address for z in pf.zones for a in self.p.zone(z).addresses if a.family == fam]
        daddr = f"{IP[fam]} daddr {anonymous(outside)}" if outside else "fib daddr type local"
        match = f"{nfproto} {daddr}{src} {proto} {dport}"
        pre = [f"iifname {quoted(self._zone_ifaces(pf.zones))} {match} {dnat}"]
        post: list[str] = []
        if pf.hairpin_zones:
            # From inside, the same forward (sources included) via the outside address;
            # masquerade so the target answers through the box, not directly.
            hp_ifaces = quoted(self._zone_ifaces(pf.hairpin_zones))
            pre.append(f"iifname {hp_ifaces} {match} {dnat}")
            to_ports = str(pf.to_port) if pf.to_port is not None else dport
            post.append(
                f"iifname {hp_ifaces} {IP[fam]} daddr {pf.to_address} {proto} {to_ports} "
                f'ct status dnat masquerade comment "hairpin {pf.name}"'
            )
        return pre, post

    # -- the whole table ----------------------------------------------------------------------
    def render(self) -> list[str]:
        chains = self._chains()  # first: rendering chains registers the constant sets
        lines: list[str] = []
        elements = 0
        for aset in self._named_sets():
            for fam in aset.families():
                elems = format_elements(fam, aset.of(fam))
                elements += len(elems)
                lines += set_block(set_name(aset, fam), fam, elems)
        lines += self.consts.render()
        lines += self.web.sets()
        lines += self.quarantine.sets()
        lines += mac_sets(r.src.members for r in self.rules if r.src.members is not None)
        lines += domain_sets(
            dict.fromkeys(r.dst.domains for r in self.p.rules if r.dst.domains is not None)
        )
        for ds in self.dynamic:
            lines += [
                f"\tset {ds.name} {{",
                f"\t\ttype {'ipv4_addr' if ds.family == 4 else 'ipv6_addr'}",
                "\t\tsize 65535",
                "\t\tflags dynamic,timeout",
                f"\t\ttimeout {ds.timeout}",
                "\t}",
            ]
        if self.offload:
            all_ifaces = [i for z in self.zone_names for i in self.ifaces[z]]
            lines += [
                "\tflowtable ft {",
                "\t\thook ingress priority filter",
                f"\t\tdevices = {{ {', '.join(quoted([i]) for i in all_ifaces)} }}",
                "\t}",
            ]
        lines += chains
        self.stats = {
            "chains": sum(1 for ln in chains if ln.startswith("\tchain ")),
            "rules": sum(
                1
                for ln in chains
                if ln.startswith("\t\t") and not ln.startswith(("\t\t\t", "\t\ttype ", "\t\t}"))
            ),
            "sets": sum(1 for ln in lines if ln.startswith("\tset ")),
            "set_elements": elements,
        }
        return lines

    def _chains(self) -> list[str]:
        lines: list[str] = []
        inp_map, fwd_map, out_map, pair_chains = self._dispatch()
        tail_counter = ['counter comment "default drop"'] if self.p.counters else []
        pf_pre: list[str] = []
        pf_post: list[str] = []
        for pf in self.p.nat.port_forwards:
            pre, post = self._port_forward_lines(pf)
            pf_pre += pre
            pf_post += post
        dstnat = [*self.web.dstnat_lines(), *pf_pre]
        if dstnat:
            lines += _base("dstnat", "nat hook prerouting priority dstnat; policy accept;", dstnat)
        masq = []
        if self.p.nat.masquerade:
            wan = quoted(self._zone_ifaces(self.p.nat.masquerade))
            masq = [f'oifname {wan} meta nfproto ipv4 masquerade comment "masquerade"']
        if pf_post or masq:
            lines += _base(
                "srcnat", "nat hook postrouting priority srcnat; policy accept;", [*pf_post, *masq]
            )
        lines += _base(
            "input",
            "filter hook input priority filter; policy drop;",
            [
                'iif "lo" accept',
                *self.quarantine.input_lines(),
                _CT_FAST_PATH,
                *self._anti_lockout(),
                *self._blocklist_lines("inbound"),
                *self.web.input_lines(),
                _ICMPV6_INPUT,
                *_vmap("iifname", inp_map),
                *tail_counter,
            ],
        )
        fwd_body = [
            *self.quarantine.forward_lines(),
            *(["meta l4proto { tcp, udp } flow add @ft"] if self.offload else []),
            _CT_FAST_PATH,
            *self._blocklist_lines("inbound"),
            *self._blocklist_lines("outbound"),
            *self.web.forward_lines(),
            *(['ct status dnat accept comment "port forwards"'] if pf_pre else []),
            _ICMPV6_FORWARD,
            *_vmap("iifname . oifname", fwd_map),
            *tail_counter,
        ]
        lines += _base("forward", "filter hook forward priority filter; policy drop;", fwd_body)
        outbound = self._blocklist_lines("outbound")
        out_body: list[str] = []
        if out_map or outbound:
            # Neighbour discovery is untracked: accept it before the zone defaults can drop it.
            out_body = ['oif "lo" accept', _CT_FAST_PATH, *outbound]
            out_body += [_ICMPV6_OUTPUT, *_vmap("oifname", out_map)] if out_map else []
        lines += _base("output", "filter hook output priority filter; policy accept;", out_body)
        quarantine = self.quarantine.chains(self._anti_lockout())
        for chain in [*quarantine, *self.web.chains(), *pair_chains]:
            lines += chain
        return lines


def _network(addr: InterfaceAddress) -> tuple[int, int, int]:
    net = ipaddress.ip_network(f"{addr.address}/{addr.prefix}", strict=False)
    return addr.family, int(net.network_address), int(net.broadcast_address)


def log_statement_for(name: str, direction: str) -> str:
    return f'log prefix "eg blocklist {name} {direction}: " level info'


def _vmap(key: str, entries: list[str]) -> list[str]:
    if not entries:
        return []
    if len(entries) <= 4:
        return [f"{key} vmap {{ {', '.join(entries)} }}"]
    return [f"{key} vmap {{", *(f"\t{e}," for e in entries[:-1]), f"\t{entries[-1]}", "}"]


def _base(name: str, hook: str, body: list[str]) -> list[str]:
    return [f"\tchain {name} {{", f"\t\ttype {hook}", *(f"\t\t{ln}" for ln in body), "\t}"]

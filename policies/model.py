"""The validated policy: plain frozen dataclasses the compiler reads.

Everything here is already resolved: nested groups flattened to merged intervals, service
names to ports, schedule names to windows. The compiler never has to look anything up or
report a user mistake; if a Policy exists, it is valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from policies.dns_section import DnsSettings
from policies.intervals import Interval

if TYPE_CHECKING:
    from policies.anomaly_section import AnomalySettings
    from policies.web_model import WebFilter

SCHEMA_VERSION = 1

Action = Literal["accept", "drop", "reject"]
Family = Literal[4, 6]
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ANY = "any"
SELF = "self"


@dataclass(frozen=True)
class InterfaceAddress:
    """An address of the box on a zone, with its prefix (e.g. 192.0.2.1/26)."""

    family: Family
    address: str
    prefix: int


@dataclass(frozen=True)
class Zone:
    name: str
    interfaces: tuple[str, ...]
    addresses: tuple[InterfaceAddress, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class AddressSet:
    """Merged intervals per family; ``name`` is set for named groups and block lists."""

    name: str | None
    v4: tuple[Interval, ...] = ()
    v6: tuple[Interval, ...] = ()

    def families(self) -> tuple[Family, ...]:
        fams: list[Family] = []
        if self.v4:
            fams.append(4)
        if self.v6:
            fams.append(6)
        return tuple(fams)

    def of(self, family: Family) -> tuple[Interval, ...]:
        return self.v4 if family == 4 else self.v6


@dataclass(frozen=True)
class BlockList:
    """An IP block list from feed files, dropped in ``block`` directions on ``zones``."""

    name: str
    addresses: AddressSet
    block: Literal["both", "inbound", "outbound", "none"]
    zones: tuple[str, ...]
    log: bool
    sources: tuple[str, ...]
    entries: int
    skipped: int


PortRange = tuple[int, int]


@dataclass(frozen=True)
class Service:
    name: str
    tcp: tuple[PortRange, ...] = ()
    udp: tuple[PortRange, ...] = ()
    icmp: tuple[str, ...] = ()
    icmpv6: tuple[str, ...] = ()


@dataclass(frozen=True)
class TimeWindow:
    """A weekly window in the site's local time: minutes from Monday 00:00, end exclusive."""

    start: int
    end: int


@dataclass(frozen=True)
class Schedule:
    name: str
    windows: tuple[TimeWindow, ...]


@dataclass(frozen=True)
class DomainSet:
    """A rule's destination names. The compiler declares the nft sets ``{name}_v4`` and
    ``{name}_v6`` (with timeouts); the resolver adds the addresses it answers for matching
    names, so the rule follows the names' addresses like dnsmasq's nftset does.

    A pattern ``example.com`` covers the name and its subdomains, ``*.example.com`` only
    the subdomains (the same meaning as in block lists).
    """

    name: str
    patterns: tuple[str, ...]


@dataclass(frozen=True)
class ClientMembers:
    """Who is in a client group: addresses (the named set ``cg_<group>``), MACs, zones."""

    addresses: AddressSet
    macs: tuple[str, ...] = ()
    zones: tuple[str, ...] = ()

    @property
    def mac_set(self) -> str:
        assert self.addresses.name is not None
        return f"{self.addresses.name}_mac"

    def empty(self) -> bool:
        return not (self.addresses.v4 or self.addresses.v6 or self.macs or self.zones)


@dataclass(frozen=True)
class Endpoint:
    """One side of a rule: zones (None = any zone, or self) and optional addresses.

    ``members`` (a web-filter client group) and ``domains`` (destination names) are
    alternatives to ``addresses``; the compiler expands a client group into one rule per
    kind of member (addresses, MACs, zones).
    """

    zones: tuple[str, ...] | None
    is_self: bool = False
    addresses: AddressSet | None = None
    members: ClientMembers | None = None
    domains: DomainSet | None = None


@dataclass(frozen=True)
class LogSpec:
    prefix: str
    level: str = "info"
    rate: str | None = None


@dataclass(frozen=True)
class LimitSpec:
    rate: str
    burst: int | None = None
    per_source: bool = False


@dataclass(frozen=True)
class Rule:
    name: str
    src: Endpoint
    dst: Endpoint
    services: tuple[Service, ...]
    action: Action
    log: LogSpec | None = None
    counter: bool = False
    limit: LimitSpec | None = None
    schedule: Schedule | None = None
    comment: str = ""


@dataclass(frozen=True)
class Default:
    """The verdict for traffic from one zone to another that no rule decided."""

    src: str  # a zone or "any"
    dst: str  # a zone, "self" or "any"
    action: Action
    log: LogSpec | None = None
    counter: bool = False


@dataclass(frozen=True)
class PortForward:
    name: str
    zones: tuple[str, ...]
    protocols: tuple[Literal["tcp", "udp"], ...]
    ports: PortRange
    family: Family
    to_address: str
    to_port: int | None
    sources: AddressSet | None
    hairpin_zones: tuple[str, ...]
    comment: str = ""


@dataclass(frozen=True)
class Nat:
    masquerade: tuple[str, ...] = ()
    port_forwards: tuple[PortForward, ...] = ()


@dataclass(frozen=True)
class Management:
    """Anti-lockout: management ports stay reachable from these zones whatever the rules say."""

    anti_lockout: bool
    zones: tuple[str, ...]
    tcp_ports: tuple[PortRange, ...]


@dataclass(frozen=True)
class Site:
    name: str
    timezone: str
    description: str = ""


@dataclass(frozen=True)
class Policy:
    version: int
    site: Site
    zones: tuple[Zone, ...]
    groups: tuple[AddressSet, ...]
    blocklists: tuple[BlockList, ...]
    services: tuple[Service, ...]
    schedules: tuple[Schedule, ...]
    rules: tuple[Rule, ...]
    defaults: tuple[Default, ...]
    nat: Nat
    management: Management
    offload: Literal["auto", "on", "off"] = "auto"
    counters: bool = True
    dns: DnsSettings | None = None
    web_filter: WebFilter | None = None
    anomaly: AnomalySettings | None = None

    def default_for(self, src: str, dst: str) -> Default:
        """The default for traffic from zone (or self) ``src`` to zone (or self) ``dst``.

        Most specific wins: the exact pair, then any->dst, then src->any, then any->any;
        ``any`` never stands for the box itself. Without a default: drop, except traffic the
        box itself sends, which is accepted.
        """
        table = {(d.src, d.dst): d for d in self.defaults}
        candidates = [(src, dst)]
        if dst != SELF:
            candidates += [(ANY, dst)] if src != SELF else []
            candidates += [(src, ANY)] + ([(ANY, ANY)] if src != SELF else [])
        else:
            candidates += [(ANY, SELF)]
        for key in candidates:
            if key in table:
                return table[key]
        return Default(src, dst, "accept" if src == SELF else "drop")

    def zone(self, name: str) -> Zone:
        for z in self.zones:
            if z.name == name:
                return z
        raise KeyError(name)

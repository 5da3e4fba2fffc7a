"""The contract every detector keeps, and the context the scorer hands them.

A detector is fed records in event-time order (roughly: live inputs may be a few seconds
out of order), keeps bounded state per host, and on ``evaluate(now)`` returns what it is
confident about *now*. It never does I/O and never reads the wall clock: ``now`` is the
injected clock, so tests and captures are repeatable.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

from appliance.anomaly.records import DnsRecord, Finding, FlowRecord

DEFAULT_LAN = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "fc00::/7",
    "fe80::/10",
)
"""Private and unique-local ranges: the office's own networks unless ``--lan`` says otherwise."""


@dataclass(frozen=True)
class Networks:
    """Which addresses are the office's own (``is_lan``); cached, as every flow asks twice."""

    cidrs: tuple[str, ...] = DEFAULT_LAN

    def __post_init__(self) -> None:
        nets = tuple(ipaddress.ip_network(c, strict=False) for c in self.cidrs)
        object.__setattr__(self, "_nets", nets)
        object.__setattr__(self, "is_lan", lru_cache(maxsize=65536)(self._is_lan))

    def _is_lan(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in n for n in self._nets)  # type: ignore[attr-defined]

    def is_lan(self, address: str) -> bool:  # replaced per instance by the cached version
        return self._is_lan(address)


@dataclass
class Context:
    """What detectors share: the office's networks and the site's own infrastructure.

    ``infrastructure`` holds the appliance's own addresses (its resolver, NTP): hosts talking
    to them are never beacons or tunnels by that alone.
    """

    networks: Networks = field(default_factory=Networks)
    infrastructure: frozenset[str] = frozenset()


class Detector(Protocol):
    """One kind of evidence. ``kinds`` are the ``Finding.kind`` values it produces."""

    kinds: tuple[str, ...]

    def add_flow(self, rec: FlowRecord) -> None: ...

    def add_dns(self, rec: DnsRecord) -> None: ...

    def evaluate(self, now: float) -> Iterable[Finding]:
        """Findings as of ``now``; also ages out state older than the detector's horizon."""
        ...

    def tracked(self) -> int:
        """How many state entries it holds (for the memory bound and its test)."""
        ...

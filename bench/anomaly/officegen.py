"""A labelled, synthetic small office for evaluating anomaly scoring (issue #7).

``generate(seed)`` describes an office of 10-25 hosts over some days: who is there when
(weekday office hours, a lunch dip, some late evenings, laptops that come and go), what
each device does (see ``officegen_benign``), and which attacks are injected where
(``officegen_attacks``, each an ``Incident`` label). ``Office.records()`` then streams the
resulting ``FlowRecord``s and ``DnsRecord``s in report-time order (a flow when it ends or
every 5 min while it is open, as conntrack input reports it; a DNS record when asked), by
merging one lazy stream per (host, activity) and per incident: days of traffic never sit
in memory, and the same seed always yields the same records.

    from bench.anomaly.officegen import generate
    office = generate(seed=2, hosts=20, days=3)
    for rec in office.records(): ...
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from operator import itemgetter

from bench.anomaly.officegen_attack_traffic import attack_stream
from bench.anomaly.officegen_attacks import KINDS, Incident, Planner
from bench.anomaly.officegen_benign import activities
from bench.anomaly.officegen_world import (
    DAY,
    GATEWAY,
    HOUR,
    LAN_CIDR,
    LAN_PREFIX,
    Host,
    Record,
    Scene,
    World,
    plan_presence,
    seeded,
)

__all__ = ["KINDS", "MONDAY", "Host", "Incident", "Office", "generate"]

MONDAY = 1709510400.0
"""2024-03-04 00:00 UTC, a Monday: the default start, so day 0 is a working day."""


@dataclass
class Office:
    """One generated office: its hosts, networks, threat feed and injected incidents."""

    seed: int
    hosts: list[Host]
    lan_cidrs: tuple[str, ...]
    feed_lines: list[str]
    incidents: list[Incident]
    start: float
    end: float
    utc_offset: float
    scene: Scene = field(repr=False)
    infrastructure: frozenset[str] = frozenset({GATEWAY})

    @property
    def days(self) -> float:
        return (self.end - self.start) / DAY

    def records(self) -> Iterator[Record]:
        """Every record of the run, in report-time order; a fresh, identical stream per call.

        Stops at the end of the run, as a capture would: a flow still open then has only
        its ``open`` records.
        """
        scene = self.scene
        streams = [activity(scene, host) for host in self.hosts for activity in activities(host)]
        streams += [attack_stream(scene, incident) for incident in self.incidents]
        end = self.end
        for at, record in heapq.merge(*streams, key=itemgetter(0)):
            if at > end:
                return
            yield record


def _hosts(seed: int, count: int, start: float, end: float, utc_offset: float) -> list[Host]:
    """Four fixed devices, then workstations and (about a quarter) laptops."""
    if count < 6:
        raise ValueError("an office needs at least 6 hosts (4 devices and 2 users)")
    hosts = [
        Host(LAN_PREFIX + "10", "fileserver", "nas"),
        Host(LAN_PREFIX + "11", "dc", "dc01"),
        Host(LAN_PREFIX + "20", "printer", "printer"),
        Host(LAN_PREFIX + "30", "camera", "cam-lobby"),
    ]
    users = count - len(hosts)
    laptops = max(1, round(users * 0.25))
    for i in range(users - laptops):
        address = f"{LAN_PREFIX}{101 + i}"
        presence = plan_presence(
            seeded(seed, address, "presence"), "workstation", start, end, utc_offset
        )
        hosts.append(Host(address, "workstation", f"ws-{i + 1:02d}", presence, admin=i == 0))
    for i in range(laptops):
        address = f"{LAN_PREFIX}{151 + i}"
        presence = plan_presence(
            seeded(seed, address, "presence"), "laptop", start, end, utc_offset
        )
        hosts.append(Host(address, "laptop", f"lt-{i + 1:02d}", presence))
    return hosts


def generate(
    seed: int,
    hosts: int = 20,
    days: float = 3,
    attacks: bool = True,
    start: float = MONDAY,
    *,
    per_type: int | None = None,
    warmup: float = 12 * HOUR,
    utc_offset: float = HOUR,
) -> Office:
    """Describe an office; ``Office.records()`` produces its traffic on demand.

    ``per_type`` incidents of each kind are injected (default: two per day, at least
    three), none before ``warmup`` has passed so the scorer has seen some normal traffic.
    ``utc_offset`` is the office's local time zone (office hours are local).
    """
    end = start + days * DAY
    world = World(seed)
    office_hosts = _hosts(seed, hosts, start, end, utc_offset)
    scene = Scene(seed, world, office_hosts, start, end, utc_offset)
    incidents: list[Incident] = []
    planner = Planner(scene, per_type or max(3, round(2 * days)), warmup)
    planner.plan()  # also without attacks, so the feed's decoys are the same
    feed = ["# EdgeGuard synthetic threat feed (bench.anomaly.officegen)", *planner.feed]
    if attacks:
        incidents = planner.incidents
    return Office(seed, office_hosts, (LAN_CIDR,), feed, incidents, start, end, utc_offset, scene)

"""Injected attacks: their plan (labels, drawn across the issue's parameter ranges) and traffic.

Planning is eager and cheap (a few dozen ``Incident``s); traffic is produced lazily from each
incident's parameters by ``attack_stream``. Main parameters are drawn by stratified sampling,
so even a handful of incidents per type covers each range from end to end (a 10 s and a
near-1 h beacon, 0 % and near-80 % jitter) instead of clustering in the middle.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field
from typing import Any

from bench.anomaly.officegen_world import (
    DAY,
    HOUR,
    LAN_PREFIX,
    WORDS,
    Host,
    Scene,
)

KINDS = ("beacon", "scan", "lateral", "dns-tunnel", "dga", "exfil", "intel")
OPEN_PORTS = {
    "dc": {53, 88, 135, 139, 389, 445, 464, 636, 3268, 3389},
    "fileserver": {22, 80, 139, 443, 445, 5000},
    "workstation": {135, 139, 445},
    "laptop": {135, 139, 445},
    "printer": {80, 443, 515, 631, 9100},
    "camera": {80, 554},
}
DGA_TLDS = ("com", "net", "org", "info", "biz", "ru", "top", "xyz")
BASE32 = string.ascii_lowercase + "234567"
HEX = "0123456789abcdef"


@dataclass(frozen=True)
class Incident:
    """One injected attack: the label the evaluation matches alerts against."""

    kind: str
    host: str
    peer: str
    start: float
    end: float
    params: dict[str, Any] = field(default_factory=dict)


def strata(rng: random.Random, n: int, low: float, high: float, log: bool = False) -> list[float]:
    """``n`` values, one from each of ``n`` equal slices of [low, high], in random order."""
    values = []
    for i in range(n):
        u = (i + rng.random()) / n
        values.append(low * (high / low) ** u if log else low + (high - low) * u)
    rng.shuffle(values)
    return values


def dga_names(rng: random.Random, count: int, style: str) -> list[str]:
    """A DGA burst's names: random letters (``random``) or concatenated words (``dictionary``)."""
    names: list[str] = []
    for _ in range(count):
        if style == "random":
            label = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(10, 20)))
        else:
            label = "".join(rng.choice(WORDS) for _ in range(rng.randint(2, 3)))
        names.append(f"{label}.{rng.choice(DGA_TLDS)}")
    return names


class Planner:
    """Places incidents on hosts and times and allocates their peers and feed entries."""

    def __init__(self, scene: Scene, per_type: int, warmup: float) -> None:
        self.scene = scene
        self.rng = scene.rng("attacks")
        self.n = per_type
        self.earliest = min(scene.start + warmup, scene.end - 2 * HOUR)
        self.incidents: list[Incident] = []
        self.feed: list[str] = []
        self.book = scene.world.book

    def span(self, margin: float = HOUR) -> float:
        """The longest incident that fits between the warm-up and the end of the run."""
        return max(self.scene.end - self.earliest - margin, 600.0)

    def place(self, kind: str, duration: float, roles: tuple[str, ...]) -> tuple[Host, float]:
        """A host of ``roles`` on the network throughout and free of another ``kind`` incident."""
        duration = min(duration, self.span())
        rng, latest = self.rng, self.scene.end - duration - 600.0
        hosts = [h for h in self.scene.hosts if h.role in roles]
        load = {h.address: 0 for h in hosts}
        for inc in self.incidents:
            if inc.host in load:
                load[inc.host] += 1
        for _ in range(400):
            start = rng.uniform(self.earliest, max(latest, self.earliest))
            free = [
                h
                for h in hosts
                if h.present(start, start + duration)
                and not any(
                    i.host == h.address
                    and i.kind == kind
                    and i.start < start + duration + 2 * HOUR
                    and start < i.end + 2 * HOUR
                    for i in self.incidents
                )
            ]
            if free:
                least = min(load[h.address] for h in free)
                return rng.choice([h for h in free if load[h.address] == least]), start
        raise RuntimeError(f"no room for a {kind} incident of {duration:.0f} s")

    def add(self, kind: str, host: Host, peer: str, start: float, **params: Any) -> None:
        params["duration"] = min(params["duration"], self.scene.end - start)
        end = start + params["duration"]
        self.incidents.append(Incident(kind, host.address, peer, start, end, params))

    def name(self) -> str:
        rng = self.rng
        word, other = rng.choice(WORDS), rng.choice(WORDS)
        return rng.choice(
            (
                f"{word}-{other}.com",
                f"{word}{other}.net",
                f"cdn-{word}.io",
                f"{word}{rng.randint(2, 99)}.org",
                f"{word}{other}.xyz",
            )
        )

    def plan(self) -> None:
        for planner in (
            self.beacons,
            self.scans,
            self.lateral,
            self.tunnels,
            self.dga,
            self.exfil,
            self.intel,
        ):
            planner()
        for _ in range(20):
            self.feed.append(self.book.address())
        for _ in range(5):
            self.feed.append(f"{self.book.network24()}.0/24")
        for _ in range(15):
            self.feed.append(f"{self.name()}")
        self.rng.shuffle(self.feed)
        self.incidents.sort(key=lambda i: (i.start, i.kind, i.host))

    def beacons(self) -> None:
        rng, n = self.rng, self.n
        for interval, jitter in zip(
            strata(rng, n, 10, 3600, log=True), strata(rng, n, 0, 0.8), strict=True
        ):
            longest = min(2 * DAY, self.span())
            duration = max(rng.uniform(3 * HOUR, longest), min(12 * interval, longest))
            host, start = self.place("beacon", duration, ("workstation", "dc", "fileserver"))
            address = self.book.address()
            via = rng.choice(("ip", "name"))
            name = self.name() if via == "name" else ""
            self.add(
                "beacon",
                host,
                name or address,
                start,
                interval=interval,
                jitter=jitter,
                duration=duration,
                via=via,
                address=address,
                name=name,
                port=rng.choice((443, 443, 80, 8080)),
                size_out=rng.randint(150, 3000),
                size_in=rng.randint(80, 1500),
            )

    def scans(self) -> None:
        rng, n = self.rng, self.n
        widths = strata(rng, n, 0, 1)
        for i, width in enumerate(widths):
            style = ("vertical", "horizontal")[i % 2]
            speed = ("fast", "slow")[(i // 2) % 2]
            duration = rng.uniform(60, 600) if speed == "fast" else rng.uniform(2, 12) * HOUR
            host, start = self.place("scan", duration, ("workstation", "laptop"))
            target = rng.choice(("lan", "internet"))
            if style == "vertical":
                count = round(100 + width * 900)
                if target == "lan":
                    others = [h for h in self.scene.hosts if h.address != host.address]
                    peer = rng.choice(others).address
                else:
                    peer = self.book.address()
                port = 0
            else:
                count = round(50 + width * 204)
                peer = LAN_PREFIX + "0/24" if target == "lan" else self.book.network24() + ".0/24"
                lan_ports = (80, 8080, 23, 5900, 1433, 9100, 161, 21)
                port = rng.choice(lan_ports if target == "lan" else (23, 445, 3389, 22, 80))
            self.add(
                "scan",
                host,
                peer,
                start,
                style=style,
                speed=speed,
                count=count,
                target=target,
                port=port,
                duration=duration,
            )

    def lateral(self) -> None:
        rng = self.rng
        for i, targets in enumerate(strata(rng, self.n, 10, 60)):
            fast = i % 2 == 0
            duration = rng.uniform(120, 1200) if fast else rng.uniform(1, 6) * HOUR
            host, start = self.place("lateral", duration, ("workstation", "laptop"))
            ports = sorted(rng.sample((22, 445, 3389), rng.randint(1, 3)))
            if rng.random() < 0.3:
                ports.append(rng.choice((135, 5985)))
            self.add(
                "lateral",
                host,
                "",
                start,
                targets=round(targets),
                ports=ports,
                speed="fast" if fast else "slow",
                duration=duration,
            )

    def tunnels(self) -> None:
        rng, n = self.rng, self.n
        for i, (rate, duration) in enumerate(
            zip(
                strata(rng, n, 150, 3000, log=True),
                strata(rng, n, 600, 6 * HOUR, log=True),
                strict=True,
            )
        ):
            host, start = self.place("dns-tunnel", duration, ("workstation", "laptop"))
            style = ("iodine", "dnscat2")[i % 2]
            domain = self.name()
            self.add(
                "dns-tunnel",
                host,
                domain,
                start,
                rate_per_hour=rate,
                duration=duration,
                style=style,
                domain=domain,
                label_min=30,
                label_max=60,
            )

    def dga(self) -> None:
        rng = self.rng
        for i, count in enumerate(strata(rng, self.n, 50, 500)):
            burst = rng.uniform(60, 1200)
            host, start = self.place("dga", burst + 600, ("workstation", "laptop"))
            style = ("random", "dictionary")[i % 2]
            resolved = dga_names(self.scene.rng("dga", host.address, start), round(count), style)[
                -1
            ]
            self.add(
                "dga",
                host,
                resolved,
                start,
                count=round(count),
                style=style,
                burst=burst,
                duration=burst + 600,
                address=self.book.address(),
            )

    def exfil(self) -> None:
        rng = self.rng
        for i, size in enumerate(strata(rng, self.n, 25e6, 1e9, log=True)):
            mode = ("single", "spread", "long-lived")[i % 3]
            if mode == "single":
                duration = size / rng.uniform(1e6, 8e6)
            else:
                duration = (
                    rng.uniform(1, 8) * HOUR if mode == "spread" else rng.uniform(2, 10) * HOUR
                )
            host, start = self.place("exfil", duration, ("workstation", "laptop", "fileserver"))
            address = self.book.address()
            name = self.name() if rng.random() < 0.5 else ""
            self.add(
                "exfil",
                host,
                address,
                start,
                bytes=int(size),
                mode=mode,
                address=address,
                name=name,
                port=rng.choice((443, 443, 22, 8443, 21)),
                duration=duration,
                flows=1 if mode != "spread" else rng.randint(5, 60),
            )

    def intel(self) -> None:
        rng = self.rng
        for i in range(self.n):
            mode = ("address", "cidr", "domain")[i % 3]
            duration = rng.uniform(30, 1800)
            host, start = self.place("intel", duration, ("workstation", "laptop"))
            if mode == "address":
                address = self.book.address()
                entry = qname = address
            elif mode == "cidr":
                prefix = self.book.network24()
                entry, address = f"{prefix}.0/24", f"{prefix}.{rng.randint(1, 254)}"
                qname = address
            else:
                address = self.book.address()
                entry = self.name()
                qname = entry if rng.random() < 0.67 else f"www.{entry}"
            self.feed.append(entry)
            self.add(
                "intel",
                host,
                qname,
                start,
                mode=mode,
                entry=entry,
                address=address,
                qname=qname,
                flows=rng.randint(1, 5),
                duration=duration,
            )

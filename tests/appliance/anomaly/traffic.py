"""Small, seeded traffic makers for the flow detectors' tests: attacks and the hard negatives.

Every maker returns records in report order (by ``end``) with explicit event times, so a
test controls the clock completely. Addresses: the office is 192.168.1.0/24, peers are in
documentation and ordinary public ranges.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from appliance.anomaly.records import TCP, UDP, DnsRecord, FlowRecord, FlowState

T0 = 1_700_000_000.0 - (1_700_000_000.0 % 86400)  # a midnight UTC
HOUR = 3600.0
DAY = 86400.0
MB = 1_000_000


def host(n: int) -> str:
    return f"192.168.1.{n}"


def flow(
    start: float,
    src: str,
    dst: str,
    dport: int = 443,
    out: int = 600,
    back: int = 4000,
    *,
    proto: int = TCP,
    state: FlowState = "established",
    duration: float = 0.5,
    sport: int = 40000,
) -> FlowRecord:
    pkts_out = max(1, out // 1000)
    pkts_in = 0 if state in ("unanswered",) else max(1, back // 1000)
    return FlowRecord(
        start, start + duration, proto, src, sport, dst, dport, out, back, pkts_out, pkts_in, state
    )


def by_end(records: Iterable[FlowRecord]) -> list[FlowRecord]:
    return sorted(records, key=lambda r: r.end)


def beacon(
    src: str,
    dst: str,
    start: float,
    until: float,
    period: float,
    jitter: float,
    rng: random.Random,
    size: int = 420,
) -> list[FlowRecord]:
    """Check-ins every ``period`` +- ``jitter`` (a fraction), constant-size requests."""
    out, t = [], start
    while t < until:
        out.append(
            flow(t, src, dst, 443, size, rng.randint(200, 3000), sport=rng.randint(1024, 65535))
        )
        t += period * (1 + rng.uniform(-jitter, jitter))
    return out


def ntp(
    src: str, servers: list[str], start: float, until: float, rng: random.Random
) -> list[FlowRecord]:
    """ntpd against a pool: polls back off from 64 s to 1024 s, server by server."""
    out = []
    for server in servers:
        t, poll = start + rng.uniform(0, 64), 64.0
        while t < until:
            out.append(flow(t, src, server, 123, 76, 76, proto=UDP, sport=123, duration=0.05))
            t += poll
            poll = min(1024.0, poll * 2)
    return by_end(out)


def update_check(src: str, dst: str, start: float, until: float) -> list[FlowRecord]:
    out, t = [], start
    while t < until:
        out.append(flow(t, src, dst, 443, 900, 5000))
        t += 6 * HOUR
    return out


def chat(src: str, dst: str, start: float, until: float, rng: random.Random) -> list[FlowRecord]:
    """A chat client: bursts of message posts in office hours, quiet gaps between, any size."""
    out, t = [], start
    while t < until:
        hour = (t % DAY) / HOUR
        if 8 <= hour < 18:
            for _ in range(rng.randint(1, 6)):
                t += rng.expovariate(1 / 8)
                out.append(flow(t, src, dst, 443, rng.randint(300, 9000), rng.randint(300, 20000)))
            t += rng.lognormvariate(5, 1.2)
        else:
            t += HOUR
    return out


def browser(
    src: str, start: float, until: float, rng: random.Random, sites: int = 400
) -> list[FlowRecord]:
    """A busy browser: page loads (a burst of flows to a few of many sites) at random times."""
    peers = [
        f"{rng.randint(11, 220)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        for _ in range(sites)
    ]
    popular = peers[:20]
    out, t = [], start
    while t < until:
        page = rng.choice(popular) if rng.random() < 0.5 else rng.choice(peers)
        for peer in dict.fromkeys([page, *rng.sample(peers, rng.randint(0, 6))]):
            out.append(
                flow(
                    t + rng.uniform(0, 2),
                    src,
                    peer,
                    443,
                    rng.randint(500, 4000),
                    rng.randint(2000, 900_000),
                    sport=rng.randint(1024, 65535),
                )
            )
        t += rng.lognormvariate(3.5, 1.3)
    return by_end(out)


def resolve(ts: float, client: str, name: str, *addresses: str) -> DnsRecord:
    return DnsRecord(ts, client, name, 1, 0, addresses)


def upload(
    start: float, src: str, dst: str, total: int, seconds: float = 600.0, back_share: float = 0.02
) -> list[FlowRecord]:
    """``total`` bytes up in 10 MB connections spread over ``seconds``."""
    chunks = max(1, total // (10 * MB))
    step = seconds / chunks
    return [
        flow(
            start + i * step,
            src,
            dst,
            443,
            total // chunks,
            int(total // chunks * back_share),
            duration=step * 0.9,
            sport=30000 + i,
        )
        for i in range(chunks)
    ]

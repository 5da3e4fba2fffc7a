"""Throughput of the anomaly scorer with all flow detectors: flows/s on one core, memory per host.

All six detectors run (the DNS ones see the flows too, as in production). The target is
>= 50,000 flow records/s on one core (a Raspberry Pi-class appliance must keep
up with an office's conntrack stream). 500k records of a synthetic office (~25 hosts, a
Zipf-popular pool of ~20k external peers, a file server, NTP, a few beacons and a scan) are
built in memory first, so only ``add_flow`` and the periodic ``evaluate`` are timed. A second
pass under tracemalloc gives the scorer's peak memory (records excluded: they were allocated
before tracing started) per tracked host.

    .venv/bin/python bench/anomaly_throughput.py [--flows 500000] [--seed 1] [--every 300]
"""

from __future__ import annotations

import argparse
import bisect
import gc
import random
import resource
import time
import tracemalloc
from itertools import accumulate

from appliance.anomaly.engine import Scorer, ScoringConfig
from appliance.anomaly.intel import ThreatIntel
from appliance.anomaly.records import TCP, UDP, DnsRecord, FlowRecord

HOSTS = 25
PEERS = 20_000
DAY = 86400.0
T0 = 1_700_000_000.0 - (1_700_000_000.0 % DAY)


def office(flows: int, seed: int) -> tuple[list[FlowRecord], list[DnsRecord]]:
    """``flows`` records over one working day, in report (end) order, and the DNS answers."""
    rng = random.Random(seed)
    hosts = [f"192.168.10.{10 + i}" for i in range(HOSTS)]
    peers = [
        f"{rng.randint(11, 220)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        for _ in range(PEERS)
    ]
    weights = list(accumulate(1 / (rank + 1) ** 1.1 for rank in range(PEERS)))
    names = [
        DnsRecord(T0, rng.choice(hosts), f"site{i}.example", 1, 0, (peer,))
        for i, peer in enumerate(peers[:5000])
    ]
    out: list[FlowRecord] = []
    span = 10 * 3600.0
    start = T0 + 8 * 3600
    # a few hard cases mixed in: beacons, NTP, a file server, a slow scan
    for n in range(3):
        t = start
        while t < start + span:
            out.append(
                FlowRecord(
                    t,
                    t + 0.3,
                    TCP,
                    hosts[n],
                    rng.randint(1024, 65535),
                    f"198.51.100.{n + 1}",
                    443,
                    420,
                    900,
                    4,
                    4,
                    "established",
                )
            )
            t += 60 * (1 + rng.uniform(-0.5, 0.5))
    for i in range(120):
        t = start + i * span / 120
        out.append(
            FlowRecord(
                t,
                t + 0.01,
                TCP,
                hosts[5],
                40000 + i,
                "192.168.10.200",
                1 + i * 7,
                60,
                40,
                1,
                1,
                "rejected",
            )
        )
    while len(out) < flows:
        src = rng.choice(hosts)
        t = start + rng.random() * span
        kind = rng.random()
        if kind < 0.80:  # web
            dst = peers[bisect.bisect(weights, rng.random() * weights[-1])]
            out.append(
                FlowRecord(
                    t,
                    t + rng.expovariate(1 / 5),
                    TCP,
                    src,
                    rng.randint(1024, 65535),
                    dst,
                    443,
                    rng.randint(500, 5000),
                    rng.randint(2000, 500_000),
                    8,
                    40,
                    "established" if rng.random() > 0.01 else "unanswered",
                )
            )
        elif kind < 0.90:  # file server
            out.append(
                FlowRecord(
                    t,
                    t + 2,
                    TCP,
                    src,
                    rng.randint(1024, 65535),
                    "192.168.10.2",
                    445,
                    rng.randint(500, 50_000),
                    rng.randint(500, 500_000),
                    10,
                    10,
                    "established",
                )
            )
        elif kind < 0.95:  # NTP, QUIC-ish UDP
            out.append(
                FlowRecord(
                    t,
                    t + 0.05,
                    UDP,
                    src,
                    123,
                    peers[rng.randint(0, 50)],
                    123,
                    76,
                    76,
                    1,
                    1,
                    "established",
                )
            )
        else:  # printer, NAS, mDNS: a few fixed LAN peers per host
            dst, port, proto, back = rng.choice(
                (
                    ("192.168.10.3", 9100, TCP, 300),
                    ("192.168.10.4", 5000, TCP, 90_000),
                    ("224.0.0.251", 5353, UDP, 0),
                )
            )
            out.append(
                FlowRecord(
                    t,
                    t + 0.1,
                    proto,
                    src,
                    rng.randint(1024, 65535),
                    dst,
                    port,
                    200,
                    back,
                    1,
                    1 if back else 0,
                    "" if proto == UDP else "established",
                )
            )
    out.sort(key=lambda r: r.end)
    return out[:flows], names


def build(intel: ThreatIntel) -> Scorer:
    """The production configuration: every detector, sharing the scorer's names and history."""
    return Scorer(ScoringConfig(intel=intel, infrastructure=frozenset({"192.168.10.1"})))


def feed(
    scorer: Scorer, flows: list[FlowRecord], names: list[DnsRecord], every: float
) -> tuple[int, float]:
    """(alerts emitted, seconds spent in evaluate)."""
    for rec in names:
        scorer.add_dns(rec)
    add_flow, evaluate, clock = scorer.add_flow, scorer.evaluate, time.perf_counter
    due = flows[0].end + every
    alerts, evaluating = 0, 0.0
    for rec in flows:
        if rec.end >= due:
            began = clock()
            alerts += len(evaluate(due))
            evaluating += clock() - began
            due += every
        add_flow(rec)
    began = clock()
    alerts += len(evaluate(flows[-1].end))
    return alerts, evaluating + clock() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flows", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--every", type=float, default=300.0)
    args = parser.parse_args()
    intel = ThreatIntel()
    intel.add_lines(["203.0.113.0/24", "evil.example"])
    flows, names = office(args.flows, args.seed)
    print(f"{len(flows)} flows over {(flows[-1].end - flows[0].end) / 3600:.1f} h of event time")

    gc.collect()
    scorer = build(intel)
    began = time.perf_counter()
    alerts, evaluating = feed(scorer, flows, names, args.every)
    took = time.perf_counter() - began
    print(
        f"{len(flows) / took:,.0f} flows/s ({took:.2f} s, of which evaluate {evaluating:.2f} s;"
        f" {alerts} alerts emitted)"
    )
    for alert in scorer.alerts()[:8]:
        print(f"  {alert.score:3d} {alert.severity:8} {alert.host} {alert.kind} {alert.peer}")

    scorer = build(intel)
    tracemalloc.start()
    feed(scorer, flows, names, args.every)
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    tracked_hosts = scorer.history.active_hosts(flows[-1].end) or 1
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"state entries: {scorer.tracked()}")
    print(
        f"peak traced scorer memory {peak / 1e6:.1f} MB = {peak / tracked_hosts / 1e3:.0f} kB "
        f"per tracked host ({tracked_hosts} hosts); process max RSS {rss / 1e6:.0f} MB "
        "(includes the generated records)"
    )


if __name__ == "__main__":
    main()

"""``Resolver.handle`` in-process: one policy against client groups (issue #5), no sockets.

The two resolvers are built as ``edgeguard dns serve`` builds them: ``single`` from the
harness's 1M-name list alone (``--blocklist``), ``groups`` with ``resolver_for`` from the
policy ``groups_bench.py`` generates (the same list plus five client groups; the client
127.0.0.1 is in group ``bench``). The allowed names are put in both response caches first,
as the dnsperf warm-up does. Then every query of a mix file goes through ``handle`` as wire
bytes from client 127.0.0.1; the first pass fills the verdict caches (``cold``), later
passes hit them (``warm``, what most of a dnsperf run is). Query log off, as in lean mode.

The harness's names are all listed (blocked) or 1,000 cached ones, so its mixes never pay a
verdict-cache miss for a name on no list, the common case in real traffic (and each group
has its own verdict cache). ``unlisted`` times that apart: the first decision
(``Resolver._match``) for 100,000 distinct names on no list (each query file name under
``.unlisted.test``).

Usage: .venv/bin/python bench/groups_microbench.py [--passes 5] [--profile groups:blocked]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from dnslib import RR, A, DNSRecord
from groups_bench import DATA, UPSTREAM, write_policy

from appliance.dns_service import resolver_for
from dns_filter.resolver import Pending, Resolver, ResolverConfig
from dns_filter.updater import ListSource, ListUpdater
from policies.loader import load_policy

CLIENT = "127.0.0.1"


def single_resolver(blocklist: Path, cache: Path) -> Resolver:
    source = ListSource(str(blocklist), "block", files=(blocklist,))
    matcher = ListUpdater([source], cache, lambda _: None).build()
    return Resolver(ResolverConfig(upstreams=(UPSTREAM,)), matcher)


def groups_resolver(blocklist: Path, state: Path) -> Resolver:
    policy = load_policy(write_policy(state / "policy.yaml", blocklist)).policy
    assert policy.dns is not None
    policy = replace(policy, dns=replace(policy.dns, query_log=False))
    resolver, _, _, _ = resolver_for(policy, state)
    return resolver


def queries(mix: str) -> list[bytes]:
    out = []
    for i, line in enumerate((DATA / f"q_{mix}.txt").read_text().splitlines()):
        name, qtype = line.split()
        record = DNSRecord.question(name, qtype)
        record.header.id = i & 0xFFFF
        out.append(bytes(record.pack()))
    return out


def warm_cache(resolver: Resolver) -> None:
    for line in (DATA / "q_allowed.txt").read_text().splitlines():
        name = line.split()[0]
        reply = DNSRecord.question(name).reply()
        reply.add_answer(RR(name, rdata=A("192.0.2.1"), ttl=86_400))
        resolver.cache.put((name, 1, 1, False), bytes(reply.pack()))


def run_pass(resolver: Resolver, packets: list[bytes]) -> tuple[float, dict[str, int]]:
    """Mean µs per ``handle`` call, and what the calls returned."""
    handle = resolver.handle
    kinds = {"answer": 0, "pending": 0, "drop": 0}
    t0 = time.perf_counter()
    for packet in packets:
        out = handle(packet, CLIENT)
        if out is None:
            kinds["drop"] += 1
        elif isinstance(out, Pending):
            kinds["pending"] += 1
    elapsed = time.perf_counter() - t0
    kinds["answer"] = len(packets) - kinds["pending"] - kinds["drop"]
    return elapsed / len(packets) * 1e6, kinds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--blocklist", type=Path, default=DATA / "blocklist.txt")
    ap.add_argument("--mixes", nargs="+", default=["blocked", "allowed", "mix"])
    ap.add_argument("--passes", type=int, default=5, help="passes per mix (first one cold)")
    ap.add_argument("--profile", help="VARIANT:MIX to run warm under cProfile, e.g. groups:mix")
    args = ap.parse_args()
    state = Path(tempfile.mkdtemp(prefix="groups-micro-"))
    resolvers = {
        "single": single_resolver(args.blocklist, state / "single"),
        "groups": groups_resolver(args.blocklist, state),
    }
    for resolver in resolvers.values():
        warm_cache(resolver)
    gc.collect()
    gc.freeze()
    print("| mix | pass | single µs | groups µs | groups - single µs | single / groups |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for mix in args.mixes:
        packets = queries(mix)
        if mix == "allowed":  # 1,000 names: repeat to get a stable time
            packets *= 100
        warm: dict[str, list[float]] = {"single": [], "groups": []}
        for n in range(args.passes):
            times = {}
            for variant, resolver in resolvers.items():  # interleaved, pass by pass
                times[variant], kinds = run_pass(resolver, packets)
                if kinds["pending"] or kinds["drop"]:
                    raise SystemExit(f"{variant} {mix}: not all answered at once: {kinds}")
                if n:
                    warm[variant].append(times[variant])
            label = "cold" if n == 0 else f"warm {n}"
            s, g = times["single"], times["groups"]
            print(f"| {mix} | {label} | {s:.2f} | {g:.2f} | {g - s:+.2f} | {s / g:.3f} |")
        if warm["single"]:
            s, g = min(warm["single"]), min(warm["groups"])
            print(f"| {mix} | **best warm** | {s:.2f} | {g:.2f} | {g - s:+.2f} | {s / g:.3f} |")
    names = [
        line.split()[0] + ".unlisted.test"
        for line in (DATA / "q_blocked.txt").read_text().splitlines()
    ]
    single, groups = resolvers["single"], resolvers["groups"]
    assert groups.clients is not None
    profile = groups.clients.profile(CLIENT, time.time())
    t0 = time.perf_counter()
    found = [single._match(name) for name in names]
    t1 = time.perf_counter()
    found += [groups._match(name, profile) for name in names]
    t2 = time.perf_counter()
    if any(f is not None for f in found):
        raise SystemExit("an unlisted name matched a list")
    s, g = (t1 - t0) / len(names) * 1e6, (t2 - t1) / len(names) * 1e6
    print(f"| unlisted (first decision) | cold | {s:.2f} | {g:.2f} | {g - s:+.2f} | {s / g:.3f} |")
    if args.profile:
        variant, mix = args.profile.split(":")
        packets = queries(mix)
        run_pass(resolvers[variant], packets)
        profiler = cProfile.Profile()
        profiler.enable()
        run_pass(resolvers[variant], packets)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: forwarding throughput through the lab router with the compiled ruleset.

Issue target (apply engine): iperf3 throughput LAN -> internet through the router namespace
with the compiled ruleset of a 1,000-rule policy with 100,000 block-list CIDRs is at least
0.95 of the same path with an empty ruleset. The same figure for the naive layout (one rule
per block-list CIDR instead of a set lookup) shows why the compiler emits sets.

Why several numbers and not one: the ruleset's costs fall on different packets.

* The block-list checks sit right after the conntrack fast path (in forward), so only
  packets that are not part of an established flow pay them (they used to come first, and
  then every forwarded packet paid two set lookups: 0.91 of empty for TCP).
* The zone-pair chains with the 1,000 rules are only walked by packets whose conntrack state
  is not established, i.e. new connections and unreplied UDP.
* TCP over veth moves GSO super-packets of up to 64 KB, so a per-packet cost shows far less
  in Gbit/s than in packets/s.

Hence three measurements per ruleset: iperf3 TCP (Gbit/s, bulk transfer on an established
flow), iperf3 UDP with 64-byte datagrams at unlimited rate (packets/s on an established
flow), and an unreplied 64-byte UDP stream (conntrack keeps it in state ``new``, so every
packet walks the whole lan->wan chain to its default accept, as the first packet of every
new connection does). Each runs ``--rounds`` times; the empty, NAT-only and compiled
rulesets are interleaved per round so drift hits them alike, and medians are reported. The
naive ruleset (slow to load, and orders of magnitude slower) is measured last, once by
default.

The machine is shared (2 cores): other people's test suites halve veth throughput while
they run. Runs wait for the machine to be quiet, a run during which other processes used
CPU is repeated once, and the table uses the clean runs and says how many there were (all
within a bounded time budget, ``--max-wait``).

"Empty" really is empty (no conntrack, no NAT); for it the bench adds a route in the lab's
inet namespace back to the LAN, which the NAT'ing rulesets do not use. "NAT only" (just the
masquerade chain) is shown too, to separate the cost of conntrack + NAT from the rules.

Everything runs in the lab's own namespaces (``Lab.up``); every transfer has a fixed
duration. Two cores: the client (and the forwarding, which veth does in the sender's
softirq) is pinned to CPU 0, the receiver to CPU 1.

    .venv/bin/python bench/forward_bench.py [--rules 1000] [--cidrs 100000] [--duration 5]
        [--udp-duration 2] [--rounds 5] [--naive-cap N] [--no-naive]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from resource import RUSAGE_CHILDREN, RUSAGE_SELF
from typing import Any, TypeVar

from compile_bench import write_policy  # bench/ is sys.path[0] when run as a script

from appliance import netns
from appliance.lab import Lab
from policies.compiler import compile_policy
from policies.intervals import parse_address
from policies.loader import load_policy

CLIENT = "192.0.2.10"
SERVER = "198.51.100.10"
WAN_ADDR = "203.0.113.2"
IPERF_PORT = 5201
UNREPLIED_PORT = 5202
LAB_NETS = ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
"""Block-list entries overlapping these are dropped from the generated feeds: the bench must
measure forwarding, not drops."""
CLIENT_CPU, SERVER_CPU = 0, 1

NAT_ONLY = """table inet edgeguard {
\tchain srcnat {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\toifname "wan0" meta nfproto ipv4 masquerade comment "masquerade"
\t}
}
"""

UNREPLIED_SENDER = r"""
import os, socket, sys, time
os.sched_setaffinity(0, {int(sys.argv[5])})
src, dst, port, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 0))
s.connect((dst, port))
send, payload, sent, errors = s.send, b"x" * 64, 0, 0
start = time.perf_counter()
end = start + seconds
while time.perf_counter() < end:
    for _ in range(500):
        try:
            send(payload)
        except OSError:
            errors += 1
    sent += 500
print(sent - errors, time.perf_counter() - start)
"""

UNREPLIED_SINK = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
time.sleep(float(sys.argv[3]))  # never reads, never replies: the flow stays ct state new
"""


# --------------------------------------------------------------------------- rulesets
def _overlaps_lab(entry: str) -> bool:
    family, (start, end) = parse_address(entry)
    for net in LAB_NETS:
        _f, (lo, hi) = parse_address(net)
        if family == 4 and start <= hi and lo <= end:
            return True
    return False


def scrub_feeds(feed_dir: Path) -> int:
    """Remove feed lines that would block the lab's own addresses; return how many."""
    removed = 0
    for feed in feed_dir.iterdir():
        kept = []
        for line in feed.read_text().splitlines():
            entry = line.split(";", 1)[0].split("#", 1)[0].strip()
            if entry and _overlaps_lab(entry):
                removed += 1
                continue
            kept.append(line)
        feed.write_text("\n".join(kept) + "\n")
    return removed


def compile_text(policy: Path) -> tuple[str, int]:
    """The policy's ruleset text (compiled as the appliance does) and its rule count."""
    ruleset = compile_policy(load_policy(policy).policy, at=dt.datetime.now(dt.UTC))
    return ruleset.text, int(ruleset.stats["rules"])


_SET_RE = re.compile(
    r"\tset (\S+) \{\n(?:\t\t[^\n]*\n)*?\t\telements = \{ ?(.*?) ?\}\n\t\}\n", re.S
)
_BLOCK_RULE_RE = re.compile(
    r'^(\t\t)((?:iifname|oifname) "wan0" ip [sd]addr )@(bl_\S+) counter drop comment "[^"]*"\n',
    re.M,
)


def set_elements(text: str) -> dict[str, list[str]]:
    """Named sets of a ruleset text: name -> elements as written."""
    return {
        m.group(1): [e.strip() for e in m.group(2).replace("\n", " ").split(",") if e.strip()]
        for m in _SET_RE.finditer(text)
    }


def naive_text(text: str, cap: int | None) -> tuple[str, int]:
    """The same ruleset with every block-list set lookup unrolled into one rule per element.

    ``iifname "wan0" ip saddr @bl_x counter drop`` becomes ``iifname "wan0" ip saddr E drop``
    for each element E of ``bl_x``, in the same chain at the same place (forward and output,
    after the conntrack fast path): the layout people write without sets. ``cap`` limits the
    elements taken per set. Returns the text and the rule count.
    """
    lists = {n: e[:cap] for n, e in set_elements(text).items() if n.startswith("bl_")}
    count = 0

    def unroll(m: re.Match[str]) -> str:
        nonlocal count
        elems = lists[m.group(3)]
        count += len(elems)
        return "".join(f"{m.group(1)}{m.group(2)}{e} drop\n" for e in elems)

    out = _BLOCK_RULE_RE.sub(unroll, text)
    for name in lists:  # the sets themselves are no longer referenced
        out = re.sub(rf"\tset {re.escape(name)} \{{\n.*?\n\t\}}\n", "", out, count=1, flags=re.S)
    return out, count


def _chain_body(text: str, chain: str) -> list[str]:
    m = re.search(rf"\n\tchain {re.escape(chain)} \{{\n(.*?)\n\t\}}\n", text, re.S)
    if not m:
        raise SystemExit(f"chain {chain} not found in the compiled ruleset")
    return [line.strip() for line in m.group(1).splitlines() if line.strip()]


def _ports(spec: str, sets: dict[str, list[str]]) -> set[int]:
    items = sets[spec[1:]] if spec.startswith("@") else spec.strip("{} ").split(",")
    ports: set[int] = set()
    for item in (i.strip() for i in items if i.strip()):
        lo, _, hi = item.partition("-")
        ports.update(range(int(lo), int(hi or lo) + 1))
    return ports


def check_flow_path(text: str, flows: Iterable[tuple[str, int]]) -> int:
    """Prove from the text that lab flows lan -> wan reach the chain's default accept.

    Also checks they are masqueraded (the "empty" runs route replies back without NAT, so
    traffic alone would not show a missing masquerade).

    For each ``(proto, dport)`` every rule of ``fwd_lan-wan`` before the final ``accept``
    must be unable to match (another protocol, or a port set without the port); anything the
    check cannot rule out aborts the bench. Returns the rules a new flow walks past.
    """
    forward = "\n".join(_chain_body(text, "forward"))
    if '"lan0" . "wan0" : jump fwd_lan-wan' not in forward:
        raise SystemExit("forward chain does not dispatch lan0 -> wan0 to fwd_lan-wan")
    srcnat = _chain_body(text, "srcnat")
    if not any(r.startswith('oifname "wan0"') and "masquerade" in r for r in srcnat):
        raise SystemExit("the compiled ruleset does not masquerade lan -> wan")
    body = _chain_body(text, "fwd_lan-wan")
    if not body[-1].startswith("accept"):
        raise SystemExit(f"fwd_lan-wan does not end in an accept: {body[-1]!r}")
    sets = set_elements(text)
    for proto, port in flows:
        for rule in body[:-1]:
            m = re.search(r"\b(tcp|udp) dport (@\S+|\{[^}]*\}|\d+(?:-\d+)?)", rule)
            if m:
                if m.group(1) == proto and port in _ports(m.group(2), sets):
                    raise SystemExit(f"{proto}/{port} may stop at: {rule}")
            elif not re.search(r"\bicmp(v6)? type\b", rule):
                raise SystemExit(f"cannot rule out that {proto}/{port} matches: {rule}")
    return len(body) - 1


def blocklist_hits(lab: Lab) -> int:
    """Packets counted by the compiled ruleset's block-list rules (must stay 0)."""
    hits = 0
    for chain in ("input", "forward", "output"):
        listing = json.loads(lab.nft(["-j", "list", "chain", "inet", "edgeguard", chain]))
        for item in listing["nftables"]:
            rule = item.get("rule")
            if rule and rule.get("comment", "").startswith("blocklist"):
                hits += sum(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
    return hits


def load(lab: Lab, text: str | None) -> float:
    """Replace the router's ruleset (atomically, like ``lab.load_ruleset``); return seconds."""
    start = time.perf_counter()
    netns.run(
        lab.ns("router"),
        ["nft", "-f", "-"],
        input="flush ruleset\n" + (text or ""),
        timeout=900,
        env_extra=netns.NFT_ENV,
    )
    return time.perf_counter() - start


# --------------------------------------------------------------------------- traffic
def _await_line(proc_stdout: Iterable[str], word: str) -> None:
    for line in proc_stdout:
        if word in line:
            return
    raise SystemExit(f"server exited before printing {word!r}")


def iperf3(lab: Lab, extra: list[str]) -> dict[str, Any]:
    """One bounded iperf3 run (one-off server in inet, client in lan); the client's JSON."""
    port, srv_cpu, cli_cpu = str(IPERF_PORT), str(SERVER_CPU), str(CLIENT_CPU)
    client_argv = ["iperf3", "-c", SERVER, "-B", CLIENT, "-p", port, "-A", cli_cpu, "-J"]
    client_argv += ["--connect-timeout", "3000", *extra]
    server = netns.popen(
        lab.ns("inet"),
        ["iperf3", "-s", "-1", "-B", SERVER, "-p", port, "-A", srv_cpu, "--forceflush"],
    )
    try:
        assert server.stdout is not None
        _await_line(server.stdout, "Server listening")
        client = netns.run(
            lab.ns("lan"),
            client_argv,
            timeout=60,  # callers pass -t (a few seconds); iperf3 stops by itself
            check=False,
        )
        result: dict[str, Any] = json.loads(client.stdout)
        if "error" in result:
            raise SystemExit(f"iperf3 failed: {result['error']}")
        server.wait(timeout=10)
        return result
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        for stream in (server.stdout, server.stderr):
            if stream is not None:
                stream.close()


def tcp_gbps(lab: Lab, seconds: float) -> float:
    end = iperf3(lab, ["-t", str(seconds)])["end"]
    return float(end["sum_received"]["bits_per_second"]) / 1e9


@dataclass
class Udp:
    rx_pps: float
    loss: float


def udp_established(lab: Lab, seconds: float) -> Udp:
    """iperf3 UDP, 64-byte payloads, unlimited rate: the receiver's packets/s and loss."""
    end = iperf3(lab, ["-t", str(seconds), "-u", "-b", "0", "-l", "64"])["end"]
    rx = end["sum_received"]
    got = rx["packets"] - rx["lost_packets"]
    return Udp(got / rx["seconds"], rx["lost_packets"] / max(rx["packets"], 1))


def _rx_packets(lab: Lab) -> int:
    [link] = json.loads(netns.ip(["-s", "-j", "link", "show", "isp0"], ns=lab.ns("inet")).stdout)
    return int(link["stats64"]["rx"]["packets"])


def udp_unreplied(lab: Lab, seconds: float) -> Udp:
    """A one-way 64-byte UDP stream (state ``new`` for every packet); rx counted on isp0."""
    sink = netns.popen(
        lab.ns("inet"),
        [sys.executable, "-c", UNREPLIED_SINK, SERVER, str(UNREPLIED_PORT), str(seconds + 5)],
    )
    try:
        assert sink.stdout is not None
        _await_line(sink.stdout, "ready")
        before = _rx_packets(lab)
        argv = [CLIENT, SERVER, str(UNREPLIED_PORT), str(seconds), str(CLIENT_CPU)]
        sender = netns.run(
            lab.ns("lan"),
            [sys.executable, "-c", UNREPLIED_SENDER, *argv],
            timeout=seconds + 30,
        )
        time.sleep(0.2)  # let the last packets drain out of the router
        received = _rx_packets(lab) - before
    finally:
        sink.kill()
        sink.wait()
        for stream in (sink.stdout, sink.stderr):
            if stream is not None:
                stream.close()
    sent_s, elapsed_s = sender.stdout.split()
    sent, elapsed = int(sent_s), float(elapsed_s)
    return Udp(received / elapsed, max(0.0, 1 - received / max(sent, 1)))


# --------------------------------------------------------------------------- bookkeeping
FOREIGN_CPU_LIMIT = 0.05
"""A run during which other processes used more than this share of one CPU is "disturbed"."""
IDLE_LIMIT = 0.10
"""Before a run, wait until the machine's busy time (without us) is below this share of a CPU."""

T = TypeVar("T")


def _cpu_seconds() -> tuple[float, float]:
    """(user+nice, user+nice+system+irq+softirq) CPU seconds of the whole machine."""
    with open("/proc/stat") as stat:
        f = [int(x) for x in stat.readline().split()[1:8]]
    tick = os.sysconf("SC_CLK_TCK")
    return (f[0] + f[1]) / tick, (f[0] + f[1] + f[2] + f[5] + f[6]) / tick


def _our_user_seconds() -> float:
    return sum(resource.getrusage(w).ru_utime for w in (RUSAGE_SELF, RUSAGE_CHILDREN))


class Quiet:
    """Runs measurements when the machine is quiet, and tells which were disturbed anyway.

    The machine is shared: a test suite started by someone else can halve veth throughput
    for its duration. Before a run we wait until the machine is idle apart from us; during
    a run, other processes' user time shows up in /proc/stat but not in our rusage, which
    covers iperf3, the UDP sender and every helper we start. A disturbed run is repeated
    once. Waiting and repeats share one time budget so the bench stays bounded. (Others'
    system time cannot be told apart from the forwarding's, so a kernel-heavy neighbour
    during a run goes unnoticed.)
    """

    def __init__(self, log: Callable[[str], None], budget: float) -> None:
        self.log = log
        self.budget = budget
        self.waited = 0.0
        self.repeated = 0
        self.disturbed = 0

    def _settle(self) -> None:
        while self.budget > 0:
            busy0 = _cpu_seconds()[1]
            time.sleep(0.25)
            if (_cpu_seconds()[1] - busy0) / 0.25 <= IDLE_LIMIT:
                return
            time.sleep(0.5)
            self.waited += 0.75
            self.budget -= 0.75

    def __call__(self, what: str, run: Callable[[], T]) -> tuple[T, bool]:
        """``run()``'s result and whether the run was clean (no one else busy)."""
        while True:
            self._settle()
            user0, ours0 = _cpu_seconds()[0], _our_user_seconds()
            start = time.monotonic()
            result = run()
            elapsed = time.monotonic() - start
            user1, ours1 = _cpu_seconds()[0], _our_user_seconds()
            share = ((user1 - user0) - (ours1 - ours0)) / elapsed
            if share <= FOREIGN_CPU_LIMIT:
                return result, True
            if self.budget < elapsed:
                self.disturbed += 1
                self.log(f"    ({what}: other processes used {share:.0%} of a CPU; kept)")
                return result, False
            self.budget -= elapsed
            self.repeated += 1
            self.log(f"    ({what}: other processes used {share:.0%} of a CPU; repeating)")


Sample = tuple[float, bool]
"""A measured value and whether its run was clean."""


def _pick(samples: list[Sample]) -> list[float]:
    """The clean values if there are any, else all (the table says how many were clean)."""
    return [v for v, ok in samples if ok] or [v for v, _ in samples]


@dataclass
class Result:
    name: str
    text: str | None
    rules: str
    loads: list[float] = field(default_factory=list)
    tcp: list[Sample] = field(default_factory=list)
    """Receiver Gbit/s."""
    udp: list[Sample] = field(default_factory=list)
    """Received packets/s of iperf3 UDP."""
    loss: list[Sample] = field(default_factory=list)
    new: list[Sample] = field(default_factory=list)
    """Received packets/s of the unreplied stream."""

    def measure(
        self, lab: Lab, args: argparse.Namespace, quiet: Quiet, *, reload: bool = True
    ) -> None:
        if reload:
            self.loads.append(load(lab, self.text))
        self.tcp.append(quiet(f"{self.name} tcp", lambda: tcp_gbps(lab, args.duration)))
        udp, ok = quiet(f"{self.name} udp", lambda: udp_established(lab, args.udp_duration))
        self.udp.append((udp.rx_pps, ok))
        self.loss.append((udp.loss, ok))
        new, ok = quiet(f"{self.name} unreplied", lambda: udp_unreplied(lab, args.udp_duration))
        self.new.append((new.rx_pps, ok))
        quiet.log(
            f"  {self.name:<9} tcp {self.tcp[-1][0]:7.3g} Gbit/s"
            f"  udp {udp.rx_pps / 1e3:7.3g} kpps ({udp.loss:5.1%} lost)"
            f"  unreplied udp {new.rx_pps / 1e3:7.3g} kpps"
        )

    def clean(self) -> str:
        return "/".join(str(sum(ok for _, ok in s)) for s in (self.tcp, self.udp, self.new))


def table(results: list[Result]) -> str:
    """Markdown table: medians (min-max), ratios of medians to the first (empty) ruleset."""
    med = statistics.median
    base = results[0]
    b_tcp, b_udp, b_new = (med(_pick(s)) for s in (base.tcp, base.udp, base.new))
    rows = [
        "| ruleset | rules (block-list rules) | `nft -f` | TCP Gbit/s | ratio "
        "| UDP kpps (loss) | ratio | unreplied UDP kpps | ratio | clean runs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        tcp, loss = _pick(r.tcp), _pick(r.loss)
        udp, new = [v / 1e3 for v in _pick(r.udp)], [v / 1e3 for v in _pick(r.new)]
        load_s = f"{med(r.loads):.2f} s" if r.text else "-"
        rows.append(
            f"| {r.name} | {r.rules} | {load_s} "
            f"| {med(tcp):.3g} ({min(tcp):.3g}-{max(tcp):.3g}) | {med(tcp) / b_tcp:.3g} "
            f"| {med(udp):.3g} ({med(loss):.1%}) | {med(udp) * 1e3 / b_udp:.3g} "
            f"| {med(new):.3g} ({min(new):.3g}-{max(new):.3g}) | {med(new) * 1e3 / b_new:.3g} "
            f"| {r.clean()} of {len(r.tcp)} |"
        )
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", type=int, default=1000)
    ap.add_argument("--cidrs", type=int, default=100_000)
    ap.add_argument("--duration", type=int, default=5, help="seconds per TCP run")
    ap.add_argument("--udp-duration", type=int, default=2, help="seconds per UDP run")
    ap.add_argument("--rounds", type=int, default=5, help="runs per ruleset (median)")
    ap.add_argument("--naive-rounds", type=int, default=1, help="runs of the naive layout")
    ap.add_argument(
        "--naive-cap",
        type=int,
        default=None,
        help="unroll at most this many elements per block list in the naive layout",
    )
    ap.add_argument("--no-naive", action="store_true", help="skip the naive layout")
    ap.add_argument(
        "--max-wait",
        type=float,
        default=60,
        help="seconds to spend in total waiting for other processes to go quiet, and on"
        " repeating runs they disturbed",
    )
    ap.add_argument("--prefix", default="egfwd", help="lab namespace prefix")
    args = ap.parse_args()

    def log(msg: str) -> None:
        print(msg, flush=True)

    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        policy = write_policy(Path(tmp), args.rules, args.cidrs)
        removed = scrub_feeds(Path(tmp) / "feeds")
        compiled, n_rules = compile_text(policy)
    flows = [("tcp", IPERF_PORT), ("udp", IPERF_PORT), ("udp", UNREPLIED_PORT)]
    walked = check_flow_path(compiled, flows)
    bl_elems = sum(len(e) for n, e in set_elements(compiled).items() if n.startswith("bl_"))
    log(
        f"policy: {args.rules} rules, {args.cidrs} block-list CIDRs ({removed} overlapping the"
        f" lab's addresses removed) -> {bl_elems} block-list set elements"
    )
    log(
        f"checked: new lan->wan flows (tcp/udp {IPERF_PORT}, udp {UNREPLIED_PORT}) pass all"
        f" {walked} rules of fwd_lan-wan and reach its default accept"
    )
    results = [
        Result("empty", None, "0"),
        Result("NAT only", NAT_ONLY, "1"),
        Result("compiled", compiled, f"{n_rules:,} (6, on 2 sets)"),
    ]
    quiet = Quiet(log, args.max_wait)
    with Lab.up(args.prefix) as lab:
        # Only "empty" needs it: without NAT, inet must route replies back to the LAN.
        netns.ip(["route", "add", "192.0.2.0/24", "via", WAN_ADDR], ns=lab.ns("inet"))
        tcp_gbps(lab, 1)  # warm-up, discarded: the first transfer in a fresh lab is slower
        for rnd in range(args.rounds):
            log(f"round {rnd + 1}/{args.rounds}")
            for r in results:
                r.measure(lab, args, quiet)
                if r.name == "compiled" and (hits := blocklist_hits(lab)):
                    raise SystemExit(f"block lists dropped {hits} bench packets")
        if not args.no_naive:
            text, unrolled = naive_text(compiled, args.naive_cap)
            naive = Result("naive", text, f"{n_rules - 6 + unrolled:,} ({unrolled:,})")
            naive.loads.append(load(lab, naive.text))
            log(f"naive layout: {unrolled} block-list rules, loaded in {naive.loads[0]:.1f} s")
            for _ in range(args.naive_rounds):
                naive.measure(lab, args, quiet, reload=False)
            results.append(naive)
    log("")
    log(table(results))
    log(
        f"\nmedian (min-max) of the clean runs (all runs if none was clean); ratios vs empty;"
        f" TCP {args.duration} s, UDP {args.udp_duration} s per run; waited"
        f" {quiet.waited:.0f} s for quiet, {quiet.repeated} runs repeated, {quiet.disturbed}"
        f" kept although disturbed; total {time.monotonic() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The traffic of each injected attack, produced lazily from its ``Incident`` parameters."""

from __future__ import annotations

import base64
import random
from collections.abc import Callable

from appliance.anomaly.records import TCP, UDP, DnsRecord, FlowState
from bench.anomaly.officegen_attacks import OPEN_PORTS, Incident, dga_names
from bench.anomaly.officegen_world import HOUR, LAN_PREFIX, Host, Scene, Stream, Timeline

NULL, TXT, CNAME, MX, A = 10, 16, 5, 15, 1


def attack_stream(scene: Scene, incident: Incident) -> Stream:
    rng = scene.rng("attack", incident.kind, incident.host, incident.start)
    return _STREAMS[incident.kind](scene, incident, rng)


def beacon(scene: Scene, inc: Incident, rng: random.Random) -> Stream:
    """Check-ins every ``interval`` +- ``jitter``; by name, each preceded by a lookup."""
    p, tl = inc.params, Timeline()
    t = inc.start
    while t < inc.end:
        yield from tl.release(t)
        at = t
        if p["via"] == "name":
            tl.dns(t, inc.host, p["name"], answers=(p["address"],))
            at += 0.02
        size_in = p["size_in"] * rng.uniform(0.8, 1.2)
        if rng.random() < 0.05:  # the operator queued a task: a bigger answer
            size_in = rng.uniform(5e3, 2e5)
        tl.flow(
            rng,
            at,
            rng.uniform(0.1, 1.5),
            inc.host,
            p["address"],
            p["port"],
            int(p["size_out"] * rng.uniform(0.85, 1.15)),
            int(size_in),
        )
        t += p["interval"] * (1.0 + rng.uniform(-p["jitter"], p["jitter"]))
    yield from tl.drain()


def _lan_answer(hosts: dict[str, Host], dst: str, port: int) -> FlowState:
    """How a LAN address answers a probe: open port, closed port (RST), or nobody there."""
    host = hosts.get(dst)
    if host is None:
        return "rejected" if dst == LAN_PREFIX + "1" else "unanswered"
    return "established" if port in OPEN_PORTS[host.role] else "rejected"


def _probe(
    tl: Timeline, rng: random.Random, t: float, src: str, dst: str, port: int, state: FlowState
) -> None:
    proto = UDP if port == 161 else TCP
    if state == "unanswered":
        tl.flow(rng, t, 30.0, src, dst, port, 60 * rng.choice((1, 1, 2)), 0, state, proto)
    elif state == "rejected":
        tl.flow(rng, t, rng.uniform(0.0005, 0.01), src, dst, port, 60, 40, state, proto)
    else:
        tl.flow(rng, t, rng.uniform(0.01, 0.5), src, dst, port, 180, 140, state, proto)


def _probes_over_time(
    tl: Timeline,
    rng: random.Random,
    inc: Incident,
    probes: list[tuple[str, int]],
    answer: Callable[[str, int], FlowState],
) -> Stream:
    rng.shuffle(probes)  # scanners randomise their order
    times = sorted(rng.uniform(inc.start, inc.end) for _ in probes)
    for t, (dst, port) in zip(times, probes, strict=True):
        yield from tl.release(t)
        _probe(tl, rng, t, inc.host, dst, port, answer(dst, port))
    yield from tl.drain()


def scan(scene: Scene, inc: Incident, rng: random.Random) -> Stream:
    """Vertical (many ports, one host) or horizontal (one port, many hosts), fast or slow."""
    p = inc.params
    hosts = {h.address: h for h in scene.hosts}
    if p["style"] == "vertical":
        common = [21, 22, 23, 25, 53, 80, 110, 135, 139, 143, 443, 445, 3389, 8080]
        extra = rng.sample(range(1, 10001), p["count"] + len(common))
        ports = list(dict.fromkeys(common + extra))[: p["count"]]
        probes = [(inc.peer, port) for port in ports]
    else:
        prefix = inc.peer.rsplit(".", 1)[0]
        last = [d for d in range(1, 255) if f"{prefix}.{d}" != inc.host]
        probes = [(f"{prefix}.{d}", p["port"]) for d in rng.sample(last, p["count"])]

    def answer(dst: str, port: int) -> FlowState:
        if dst.startswith(LAN_PREFIX):
            return _lan_answer(hosts, dst, port)
        roll = rng.random()
        if port in (22, 80, 443) and roll < 0.3:
            return "established"
        return "unanswered" if roll < 0.8 else "rejected"

    return _probes_over_time(Timeline(), rng, inc, probes, answer)


def lateral(scene: Scene, inc: Incident, rng: random.Random) -> Stream:
    """Admin ports (22/445/3389) tried across the LAN; real hosts answer, others stay silent."""
    p = inc.params
    hosts = {h.address: h for h in scene.hosts}
    real = [a for a in hosts if a != inc.host]
    count = p["targets"]
    chosen = rng.sample(real, min(len(real), max(1, round(count * 0.6))))
    absent = [f"{LAN_PREFIX}{d}" for d in range(2, 255) if f"{LAN_PREFIX}{d}" not in hosts]
    chosen += rng.sample(absent, count - len(chosen))
    probes = [(dst, port) for dst in chosen for port in p["ports"]]

    def answer(dst: str, port: int) -> FlowState:
        return _lan_answer(hosts, dst, port)

    return _probes_over_time(Timeline(), rng, inc, probes, answer)


def dns_tunnel(scene: Scene, inc: Incident, rng: random.Random) -> Stream:
    """iodine (base32, NULL/TXT) or dnscat2 (hex, TXT/CNAME/MX) queries under one domain."""
    p = inc.params
    rate = p["rate_per_hour"] / HOUR
    iodine = p["style"] == "iodine"
    qtypes = (NULL, NULL, NULL, TXT, TXT, CNAME, A) if iodine else (TXT, TXT, CNAME, MX)
    t = inc.start + rng.expovariate(rate)
    while t < inc.end:
        size = rng.randint(p["label_min"], p["label_max"])
        if iodine:
            label = base64.b32encode(rng.randbytes(size)).decode().lower()[:size]
            qname = f"{label}.t.{p['domain']}"
        else:
            data = f"{rng.getrandbits(4 * size):0{size}x}"
            half = size // 2
            qname = f"{data[:half]}.{data[half:]}.{p['domain']}"
        yield t, DnsRecord(t, inc.host, qname, rng.choice(qtypes), 0, ())
        t += rng.expovariate(rate)


def dga(scene: Scene, inc: Incident, rng: random.Random) -> Stream:
    """A burst of NXDOMAINs for generated names; the last resolves and is contacted."""
    p, tl = inc.params, Timeline()
    names = dga_names(scene.rng("dga", inc.host, inc.start), p["count"], p["style"])
    times = sorted(rng.uniform(inc.start, inc.start + p["burst"]) for _ in names)
    for i, (t, name) in enumerate(zip(times, names, strict=True)):
        yield from tl.release(t)
        if i == len(names) - 1:
            tl.dns(t, inc.host, name, answers=(p["address"],))
        else:
            tl.dns(t, inc.host, name, rcode=3)
    t = times[-1]
    for _ in range(rng.randint(1, 5)):
        t += rng.uniform(1, 90)
        yield from tl.release(t)
        tl.flow(
            rng,
            t,
            rng.uniform(0.2, 5),
            inc.host,
            p["address"],
            rng.choice((443, 80)),
            rng.randint(400, 4000),
            rng.randint(500, 60000),
        )
    yield from tl.drain()


def exfil(scene: Scene, inc: Incident, rng: random.Random) -> Stream:
    """25 MB-1 GB out to a new peer: one flow, many flows over hours, or one long connection."""
    p, tl = inc.params, Timeline()
    total, flows = p["bytes"], p["flows"]
    if flows == 1:
        starts, sizes = [inc.start], [total]
    else:
        starts = sorted(rng.uniform(inc.start, inc.end - 60) for _ in range(flows))
        weights = [rng.uniform(0.7, 1.3) for _ in range(flows)]
        sizes = [int(total * w / sum(weights)) for w in weights]
    for t, size in zip(starts, sizes, strict=True):
        yield from tl.release(t)
        at = t
        if p["name"]:
            tl.dns(t, inc.host, p["name"], answers=(p["address"],))
            at += 0.02
        duration = inc.end - at if flows == 1 else size / rng.uniform(1e6, 5e6)
        tl.flow(rng, at, max(duration, 0.5), inc.host, p["address"], p["port"], size, size // 80)
    yield from tl.drain()


def intel(scene: Scene, inc: Incident, rng: random.Random) -> Stream:
    """A few flows to a feed address (or into a feed CIDR), or to a feed domain's address."""
    p, tl = inc.params, Timeline()
    if p["mode"] == "domain":
        tl.dns(inc.start, inc.host, p["qname"], answers=(p["address"],))
    times = sorted(rng.uniform(inc.start + 0.05, inc.end) for _ in range(p["flows"]))
    times[0] = inc.start + 0.05
    for t in times:
        yield from tl.release(t)
        if p["mode"] != "domain" and rng.random() < 0.2:
            _probe(tl, rng, t, inc.host, p["address"], 443, "unanswered")
            continue
        tl.flow(
            rng,
            t,
            rng.uniform(0.2, 20),
            inc.host,
            p["address"],
            rng.choice((443, 80)),
            rng.randint(500, 20000),
            rng.randint(1000, 200000),
        )
    yield from tl.drain()


_STREAMS: dict[str, Callable[[Scene, Incident, random.Random], Stream]] = {
    "beacon": beacon,
    "scan": scan,
    "lateral": lateral,
    "dns-tunnel": dns_tunnel,
    "dga": dga,
    "exfil": exfil,
    "intel": intel,
}

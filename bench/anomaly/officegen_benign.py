"""Benign office traffic, one stream per (host, activity).

Deliberately includes what fools naive detectors: a monitoring agent that beacons every
60 s from every host (rarity must save it), NTP and update checks (periodic), a printer
checking in hourly and asking for a missing name every 5 minutes (periodic NXDOMAIN), AV
reputation lookups (short unique DNS labels), video calls and a nightly NAS backup (large
uploads to the same peer), occasional big uploads to a popular cloud, SMB from every
workstation to the file server, and an admin's RDP/SSH sessions inside the LAN.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from appliance.anomaly.records import UDP
from bench.anomaly.officegen_world import (
    DAY,
    HOUR,
    LOCAL_DOMAIN,
    Host,
    Scene,
    Service,
    Stream,
    Timeline,
    arrivals,
    local_hour,
    lognormal,
    periodic,
)

Activity = Callable[[Scene, Host], Stream]


def activities(host: Host) -> list[Activity]:
    """Which activities run on a host, by its role."""
    if host.role == "printer":
        return [printer, ntp]
    if host.role == "camera":
        return [camera, ntp]
    common: list[Activity] = [monitoring_agent, ntp, update_checks]
    if host.role == "fileserver":
        return [*common, nightly_backup]
    if host.role == "dc":
        return common
    user: list[Activity] = [
        reputation_lookups,
        browsing,
        office_services,
        chat,
        video_calls,
        big_uploads,
    ]
    return [*common, *user, *([admin_sessions] if host.admin else [])]


def _resolve(
    tl: Timeline,
    rng: random.Random,
    cache: dict[str, float],
    t: float,
    client: str,
    service: Service,
) -> float:
    """A lookup unless the host's stub cache still holds the name; returns when flows may start."""
    if cache.get(service.name, 0.0) > t:
        return t
    if rng.random() < 0.02:  # the resolver tried the search domain first
        tl.dns(t, client, f"{service.name}.{LOCAL_DOMAIN}", rcode=3)
        t += 0.01
    tl.dns(t, client, service.name, answers=service.answers())
    cache[service.name] = t + 300.0
    return t + 0.02


def _typo(rng: random.Random, name: str) -> str:
    labels = name.split(".")
    i = 1 if labels[0] == "www" and len(labels) > 2 else 0
    word = labels[i]
    if len(word) > 3:
        k = rng.randrange(len(word) - 1)
        labels[i] = word[:k] + word[k + 1] + word[k] + word[k + 2 :]
    else:
        labels[i] = word + word[-1]
    return ".".join(labels)


def browsing(scene: Scene, host: Host) -> Stream:
    """Page visits: a lookup (cached 5 min), a few TCP/QUIC 443 flows, some third parties."""
    rng = scene.rng(host.address, "web")
    world, me, tl = scene.world, host.address, Timeline()
    cache: dict[str, float] = {}
    for t in arrivals(rng, host.presence, rng.uniform(20, 60), scene.utc_offset):
        yield from tl.release(t)
        for n, site in enumerate([world.site(rng) for _ in range(rng.choice((1, 1, 2, 3, 4)))]):
            at = _resolve(tl, rng, cache, t + n * 0.05, me, site)
            for _ in range(rng.choice((1, 1, 2, 2, 3)) if n == 0 else 1):
                tl.flow(
                    rng,
                    at + rng.uniform(0.02, 2.0),
                    lognormal(rng, 2.0, 1.2, 0.05, 240),
                    me,
                    rng.choice(site.addresses),
                    443,
                    int(lognormal(rng, 1500, 0.8, 300, 60_000)),
                    int(lognormal(rng, 25_000, 1.5, 400, 20_000_000)),
                    proto=UDP if rng.random() < 0.1 else 6,
                )
        if rng.random() < 0.004:
            tl.dns(t + 0.5, me, _typo(rng, world.site(rng).name), rcode=3)
    yield from tl.drain()


def monitoring_agent(scene: Scene, host: Host) -> Stream:
    """The MSP's RMM agent: a small HTTPS check-in every 60 s from every managed host."""
    rng = scene.rng(host.address, "rmm")
    svc, tl = scene.world.monitoring, Timeline()
    next_lookup = 0.0
    for t in periodic(rng, scene.online(host), 60.0, 0.01):
        yield from tl.release(t)
        if t >= next_lookup:
            tl.dns(t, host.address, svc.name, answers=svc.answers())
            next_lookup = t + HOUR
        tl.flow(
            rng,
            t + 0.02,
            rng.uniform(0.1, 0.4),
            host.address,
            svc.addresses[0],
            443,
            int(rng.gauss(1500, 60)),
            int(rng.gauss(700, 40)),
        )
    yield from tl.drain()


def ntp(scene: Scene, host: Host) -> Stream:
    """NTP to pool servers, polling every 64-1024 s (fixed per host), re-resolving hourly."""
    rng = scene.rng(host.address, "ntp")
    world, tl = scene.world, Timeline()
    period = 2.0 ** rng.randint(6, 10)
    server, next_lookup = "", 0.0
    for t in periodic(rng, scene.online(host), period, 0.02):
        yield from tl.release(t)
        if t >= next_lookup:
            name = rng.choice(world.ntp_names)
            answer = tuple(rng.sample(world.ntp_servers, 4))
            tl.dns(t, host.address, name, answers=answer)
            server, next_lookup = answer[0], t + HOUR
        tl.flow(rng, t + 0.01, 0.03, host.address, server, 123, 76, 76, proto=UDP)
    yield from tl.drain()


def update_checks(scene: Scene, host: Host) -> Stream:
    """OS/AV/browser update checks every 1-6 h; now and then a large download."""
    rng = scene.rng(host.address, "updates")
    tl, cache = Timeline(), dict[str, float]()
    for t in periodic(rng, scene.online(host), rng.uniform(HOUR, 6 * HOUR), 0.1):
        yield from tl.release(t)
        svc = rng.choice(scene.world.updates)
        at = _resolve(tl, rng, cache, t, host.address, svc)
        size = int(rng.uniform(50e6, 500e6)) if rng.random() < 0.03 else int(rng.uniform(5e3, 6e4))
        tl.flow(
            rng,
            at + 0.05,
            max(0.3, size / rng.uniform(2e6, 10e6)),
            host.address,
            rng.choice(svc.addresses),
            443,
            int(rng.uniform(2e3, 5e3)),
            size,
        )
    yield from tl.drain()


def reputation_lookups(scene: Scene, host: Host) -> Stream:
    """AV file-reputation lookups over DNS (short unique hex labels) and WPAD NXDOMAINs."""
    rng = scene.rng(host.address, "reputation")
    zone, tl = scene.world.reputation_zone, Timeline()
    busy = rng.uniform(10, 60)
    quiet = [(scene.start, scene.end)] if host.always_on else []
    times = sorted(
        [
            *arrivals(rng, host.presence, busy, scene.utc_offset, lunch=0.5),
            *arrivals(rng, quiet, 1.0, scene.utc_offset, lunch=1.0),
        ]
    )
    for t in times:
        yield from tl.release(t)
        label = f"{rng.getrandbits(64):016x}"[: rng.randint(12, 16)]
        tl.dns(t, host.address, f"{label}.{rng.randint(1, 4)}.{zone}", answers=("127.0.0.1",))
        if rng.random() < 0.05:
            tl.dns(t + 0.01, host.address, f"wpad.{LOCAL_DOMAIN}", rcode=3)
    yield from tl.drain()


def office_services(scene: Scene, host: Host) -> Stream:
    """SMB to the file server, Kerberos/LDAP/SMB to the domain controller, printing."""
    rng = scene.rng(host.address, "lan")
    me, tl = host.address, Timeline()
    fileserver = scene.role("fileserver").address
    dc = scene.role("dc").address
    printer = scene.role("printer").address
    times = sorted(
        [
            *((arrive, "logon") for arrive, _ in host.presence),
            *(
                (t, "smb")
                for t in arrivals(rng, host.presence, rng.uniform(10, 40), scene.utc_offset)
            ),
            *((t, "dc") for t in arrivals(rng, host.presence, 3.0, scene.utc_offset)),
            *((t, "print") for t in arrivals(rng, host.presence, 0.4, scene.utc_offset)),
        ]
    )
    for t, what in times:
        yield from tl.release(t)
        if what == "logon":
            for port in (88, 88, 389, 445):
                tl.flow(
                    rng,
                    t + rng.uniform(0, 5),
                    rng.uniform(0.05, 2),
                    me,
                    dc,
                    port,
                    int(rng.uniform(1e3, 6e3)),
                    int(rng.uniform(2e3, 4e4)),
                )
        elif what == "smb":
            tl.flow(
                rng,
                t,
                lognormal(rng, 1.0, 1.2, 0.02, 120),
                me,
                fileserver,
                445,
                int(lognormal(rng, 3e3, 1.5, 200, 5e7)),
                int(lognormal(rng, 5e4, 2.0, 200, 5e8)),
            )
        elif what == "dc":
            tl.flow(
                rng,
                t,
                rng.uniform(0.02, 0.5),
                me,
                dc,
                rng.choice((88, 389, 135)),
                int(rng.uniform(500, 4e3)),
                int(rng.uniform(500, 8e3)),
            )
        else:
            size = int(lognormal(rng, 3e5, 1.2, 2e4, 2e7))
            tl.flow(rng, t, max(0.5, size / 2e6), me, printer, 9100, size, 2000)
    yield from tl.drain()


def chat(scene: Scene, host: Host) -> Stream:
    """A Teams-like client: one long-lived connection, reconnecting every 1-3 h."""
    rng = scene.rng(host.address, "chat")
    svc, tl = scene.world.chat, Timeline()
    for arrive, leave in host.presence:
        t = arrive + rng.uniform(20, 120)
        while t < leave:
            yield from tl.release(t)
            tl.dns(t, host.address, svc.name, answers=svc.answers())
            duration = min(rng.uniform(HOUR, 3 * HOUR), leave - t)
            tl.flow(
                rng,
                t + 0.05,
                duration,
                host.address,
                rng.choice(svc.addresses),
                443,
                int(duration * lognormal(rng, 150, 0.7, 20, 3000)),
                int(duration * lognormal(rng, 400, 0.7, 50, 8000)),
            )
            t += duration + rng.uniform(1, 30)
    yield from tl.drain()


def video_calls(scene: Scene, host: Host) -> Stream:
    """Video calls: 15-60 min, UDP to a media relay, large both ways."""
    rng = scene.rng(host.address, "video")
    svc, tl = scene.world.media_relays, Timeline()
    per_day = rng.uniform(0.0, 2.5)
    for t in arrivals(rng, host.presence, per_day / 8.0, scene.utc_offset):
        yield from tl.release(t)
        relays = tuple(rng.sample(svc.addresses, 4))  # the answer rotates through the pool
        tl.dns(t, host.address, svc.name, answers=relays)
        duration = rng.uniform(900, 3600)
        tl.flow(
            rng,
            t + 0.1,
            duration,
            host.address,
            relays[0],
            3478,
            int(duration * lognormal(rng, 150e3, 0.4, 30e3, 600e3)),
            int(duration * lognormal(rng, 200e3, 0.4, 30e3, 900e3)),
            proto=UDP,
        )
    yield from tl.drain()


def big_uploads(scene: Scene, host: Host) -> Stream:
    """Now and then someone uploads 50-800 MB to the office's cloud storage (a popular peer)."""
    rng = scene.rng(host.address, "upload")
    svc, tl, cache = scene.world.storage, Timeline(), dict[str, float]()
    for arrive, leave in host.presence:
        if rng.random() >= 0.05 or leave - arrive < 2 * HOUR:
            continue
        t = rng.uniform(arrive + 0.5 * HOUR, leave - HOUR)
        yield from tl.release(t)
        size = int(rng.uniform(50e6, 800e6))
        parts = rng.choice((1, 1, 3, 6))
        for i in range(parts):
            at = _resolve(tl, rng, cache, t + i * 240.0, host.address, svc)
            chunk = size // parts
            tl.flow(
                rng,
                at + 0.05,
                chunk / rng.uniform(3e6, 10e6),
                host.address,
                rng.choice(svc.addresses),
                443,
                chunk,
                chunk // 60,
            )
    yield from tl.drain()


def admin_sessions(scene: Scene, host: Host) -> Stream:
    """The IT person's RDP to the domain controller and SSH to the file server."""
    rng = scene.rng(host.address, "admin")
    tl = Timeline()
    targets = ((scene.role("dc").address, 3389), (scene.role("fileserver").address, 22))
    for t in arrivals(rng, host.presence, 0.5, scene.utc_offset):
        yield from tl.release(t)
        target, port = rng.choice(targets)
        duration = rng.uniform(120, 3600)
        tl.flow(
            rng,
            t,
            duration,
            host.address,
            target,
            port,
            int(duration * rng.uniform(200, 2e3)),
            int(duration * rng.uniform(2e3, 3e4)),
        )
    yield from tl.drain()


def nightly_backup(scene: Scene, host: Host) -> Stream:
    """The NAS uploads 1-5 GB to the same cloud backup peer every night at about 01:00."""
    rng = scene.rng(host.address, "backup")
    svc, tl = scene.world.backup, Timeline()
    day = scene.start - (scene.start + scene.utc_offset) % DAY
    while day < scene.end:
        t = day + HOUR + rng.uniform(0, 1800)
        if scene.start <= t < scene.end:
            yield from tl.release(t)
            tl.dns(t, host.address, svc.name, answers=svc.answers())
            size = int(rng.uniform(1e9, 5e9))
            tl.flow(
                rng,
                t + 0.1,
                size / rng.uniform(4e5, 1.2e6),
                host.address,
                svc.addresses[0],
                443,
                size,
                size // 80,
            )
        day += DAY
    yield from tl.drain()


def printer(scene: Scene, host: Host) -> Stream:
    """Hourly vendor-cloud check-in; a missing discovery name asked for every 5 minutes."""
    rng = scene.rng(host.address, "printer")
    svc, tl = scene.world.printer_cloud, Timeline()
    times = sorted(
        [
            *((t, "cloud") for t in periodic(rng, [(scene.start, scene.end)], HOUR, 0.02)),
            *((t, "nx") for t in periodic(rng, [(scene.start, scene.end)], 300.0, 0.01)),
        ]
    )
    for t, what in times:
        yield from tl.release(t)
        if what == "nx":
            tl.dns(t, host.address, f"printvendor-discovery.{LOCAL_DOMAIN}", rcode=3)
            continue
        tl.dns(t, host.address, svc.name, answers=svc.answers())
        tl.flow(
            rng,
            t + 0.05,
            rng.uniform(0.3, 1.0),
            host.address,
            svc.addresses[0],
            443,
            int(rng.gauss(2500, 100)),
            int(rng.gauss(4000, 200)),
        )
    yield from tl.drain()


def camera(scene: Scene, host: Host) -> Stream:
    """An IP camera: a long-lived cloud connection plus motion-clip uploads (more by day)."""
    rng = scene.rng(host.address, "camera")
    svc, tl = scene.world.camera_cloud, Timeline()
    clips = arrivals(rng, [(scene.start, scene.end)], 2.0, scene.utc_offset, lunch=1.0)
    connects: list[float] = []
    t = scene.start + rng.uniform(0, 60)
    while t < scene.end:
        connects.append(t)
        t += rng.uniform(6 * HOUR, 24 * HOUR)
    ends = [*connects[1:], scene.end]
    events = sorted([*((c, "connect") for c in connects), *((c, "clip") for c in clips)])
    for t, what in events:
        yield from tl.release(t)
        if what == "connect":
            tl.dns(t, host.address, svc.name, answers=svc.answers())
            duration = ends[connects.index(t)] - t - 1.0
            tl.flow(
                rng,
                t + 0.05,
                duration,
                host.address,
                svc.addresses[0],
                443,
                int(duration * rng.uniform(1500, 2500)),
                int(duration * rng.uniform(200, 400)),
            )
        elif 7.0 <= local_hour(t, scene.utc_offset) < 19.0 or rng.random() < 0.1:
            size = int(rng.uniform(1e6, 10e6))
            tl.flow(
                rng, t, rng.uniform(5, 30), host.address, svc.addresses[1], 443, size, size // 50
            )
    yield from tl.drain()

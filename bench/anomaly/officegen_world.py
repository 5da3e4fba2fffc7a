"""The synthetic office's fixed parts: hosts and their schedules, address and name pools, and
the ordered buffer every activity writes its records into.

Everything here is built once per ``generate()`` call from the seed, so two calls with the
same seed describe the same office. Addresses are data only: nothing here touches a network.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from appliance.anomaly.records import TCP, DnsRecord, FlowRecord, FlowState

Record = FlowRecord | DnsRecord
Stream = Iterator[tuple[float, Record]]
"""An activity's output: (report time, record), non-decreasing in report time."""

DAY = 86400.0
HOUR = 3600.0
LAN_PREFIX = "192.168.10."
LAN_CIDR = "192.168.10.0/24"
GATEWAY = LAN_PREFIX + "1"
LOCAL_DOMAIN = "office.lan"
OPEN_EVERY = 300.0
"""A long flow is reported as an ``open`` record this often (as conntrack input does)."""

WORDS = """
acme alpha amber anchor apex apple arbor arrow atlas aurora autumn azure badger bamboo
banner basil beacon bear birch bison blaze bloom blue bolt border boulder bridge bright
brook bronze buffalo cactus canyon cardinal carbon castle cedar charter cherry cinder
citrus clear cliff cloud clover cobalt comet compass copper coral cosmos cove crane crest
crystal cypress dawn delta desert diamond dolphin dove dragon drift dune eagle echo
eclipse ember emerald falcon fern festival field finch fjord flame flint forest fox frost
galaxy garden garnet gazelle glacier globe golden granite grape harbor harvest hawk
hazel heron hickory highland horizon hudson indigo iris island ivory jade jaguar jasmine
jet juniper kestrel kite lagoon lake lantern lark laurel lemon lilac linden lion lotus
lunar lynx magnet mango maple marble marina meadow mercury mesa meteor mint mirror
monarch moose mosaic mountain nebula nectar nimbus noble north nova oak oasis ocean
olive onyx orange orbit orchid osprey otter owl oxford palm panda panther parrot peak
pearl pelican pepper phoenix pilot pine pioneer planet plum polar poplar prairie prism
quartz quest rabbit radiant rain ranger raven redwood reef ridge river robin rocket
rose ruby saffron sage salmon sapphire saturn sequoia shadow shore sierra silver sky
slate snow solar sparrow spring spruce star stone storm summit sun swan tango teal
thunder tiger timber topaz trail tulip tundra twilight union valley velvet venture
vertex violet vista voyage walnut wave willow wind winter wolf zenith zephyr
market travel news daily shop store media world online cloud tech data health home
finance bank insure energy auto motor sport game music video photo book learn study
school office supply print design studio craft build smart green fresh food kitchen
recipe garden pet legal tax account payroll cargo freight ship post mail chat meet
""".split()  # noqa: SIM905 (a word list reads better as text)

SUFFIXES = ("com", "com", "com", "com", "net", "org", "io", "de", "co.uk", "eu", "info")


def is_lan(address: str) -> bool:
    """The generated office's own addresses (the default private-range LAN covers them)."""
    return address.startswith(LAN_PREFIX)


def public_ipv4(rng: random.Random) -> str:
    """A public-looking unicast IPv4 address outside private, shared and documentation space."""
    while True:
        a = rng.randint(11, 223)
        b = rng.randint(0, 255)
        c = rng.randint(0, 255)
        if a == 127 or (a == 100 and 64 <= b < 128) or (a == 169 and b == 254):
            continue
        if (a == 172 and 16 <= b < 32) or (a == 192 and b == 168) or (a == 198 and b in (18, 19)):
            continue
        if (a, b, c) in ((192, 0, 0), (192, 0, 2), (198, 51, 100), (203, 0, 113), (192, 88, 99)):
            continue
        return f"{a}.{b}.{c}.{rng.randint(1, 254)}"


class AddressBook:
    """Hands out distinct public addresses, so an attack's peer is never a benign one.

    ``prefixes`` remembers every /24 in use: a feed CIDR or a scanned /24 must not hold a
    benign peer, or "contacted a feed network" would be true of benign traffic by accident.
    """

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self.used: set[str] = set()
        self.prefixes: set[str] = set()

    def address(self) -> str:
        while True:
            address = public_ipv4(self._rng)
            prefix = address.rsplit(".", 1)[0]
            if address not in self.used and prefix not in self.prefixes:
                self.used.add(address)
                self.prefixes.add(prefix)
                return address

    def addresses(self, count: int) -> list[str]:
        return [self.address() for _ in range(count)]

    def network24(self) -> str:
        """A /24 prefix (``a.b.c``) holding no address handed out so far."""
        address = self.address()
        return address.rsplit(".", 1)[0]


@dataclass
class Host:
    """One LAN device. ``presence`` lists (arrive, leave) epochs when a person uses it."""

    address: str
    role: str  # workstation, laptop, fileserver, dc, printer, camera
    name: str
    presence: list[tuple[float, float]] = field(default_factory=list)
    admin: bool = False

    @property
    def always_on(self) -> bool:
        """Laptops leave with their owners; everything else stays powered on."""
        return self.role != "laptop"

    @property
    def has_user(self) -> bool:
        return self.role in ("workstation", "laptop")

    def present(self, start: float, end: float) -> bool:
        """Whether the device is on the network for the whole of [start, end]."""
        if self.always_on:
            return True
        return any(a <= start and end <= b for a, b in self.presence)

    def online(self) -> list[tuple[float, float]] | None:
        """When the device is on the network (``None``: always)."""
        return None if self.always_on else self.presence


def local_hour(t: float, utc_offset: float) -> float:
    return ((t + utc_offset) % DAY) / HOUR


def weekday(t: float, utc_offset: float) -> int:
    """0 Monday ... 6 Sunday, in the office's local time."""
    return (int((t + utc_offset) // DAY) + 3) % 7


def plan_presence(
    rng: random.Random, role: str, start: float, end: float, utc_offset: float
) -> list[tuple[float, float]]:
    """When a person sits at the device: weekday office hours, some late evenings, rare weekends."""
    presence: list[tuple[float, float]] = []
    midnight = math.floor((start + utc_offset) / DAY) * DAY - utc_offset
    day = midnight
    attendance = 0.75 if role == "laptop" else 0.95
    while day < end:
        if weekday(day + HOUR, utc_offset) < 5:
            if rng.random() < attendance:
                arrive = min(max(rng.gauss(8.3, 0.5), 7.0), 10.0)
                if rng.random() < 0.08:
                    leave = rng.uniform(19.5, 22.0)  # working late
                else:
                    leave = min(max(rng.gauss(17.3, 0.6), 15.5), 19.0)
                presence.append((day + arrive * HOUR, day + leave * HOUR))
        elif rng.random() < 0.04:
            arrive = rng.uniform(9.5, 12.0)
            presence.append((day + arrive * HOUR, day + (arrive + rng.uniform(1.5, 4.0)) * HOUR))
        day += DAY
    return [(max(a, start), min(b, end)) for a, b in presence if b > start and a < end]


class Zipf:
    """Draws ranks 0..n-1 with probability ~ 1/(rank+1)**s (bisect on cumulative weights)."""

    def __init__(self, n: int, s: float) -> None:
        total = 0.0
        self._cum: list[float] = []
        for rank in range(n):
            total += 1.0 / (rank + 1) ** s
            self._cum.append(total)
        self._total = total

    def draw(self, rng: random.Random) -> int:
        return bisect.bisect_left(self._cum, rng.random() * self._total)


class Timeline:
    """Collects one activity's records and releases them in report-time order.

    A flow is reported when it ends (conntrack's destroy event), so a visit's DNS answer and
    its flows come out interleaved with the next visit's; an activity pushes whole events and
    calls ``release(t)`` before each new event at time ``t`` (nothing pushed later reports
    before ``t``).
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Record]] = []
        self._count = 0

    def push(self, at: float, record: Record) -> None:
        self._count += 1
        heapq.heappush(self._heap, (at, self._count, record))

    def release(self, upto: float) -> Stream:
        heap = self._heap
        while heap and heap[0][0] <= upto:
            at, _, record = heapq.heappop(heap)
            yield at, record

    def drain(self) -> Stream:
        return self.release(math.inf)

    def dns(
        self,
        ts: float,
        client: str,
        qname: str,
        qtype: int = 1,
        rcode: int = 0,
        answers: tuple[str, ...] = (),
    ) -> None:
        self.push(ts, DnsRecord(ts, client, qname, qtype, rcode, answers))

    def flow(
        self,
        rng: random.Random,
        start: float,
        duration: float,
        src: str,
        dst: str,
        dport: int,
        bytes_out: int,
        bytes_in: int,
        state: FlowState = "established",
        proto: int = TCP,
    ) -> None:
        """One connection; a long one becomes ``open`` records every 5 min carrying deltas."""
        sport = rng.randint(49152, 65535)
        if duration <= OPEN_EVERY:
            end = start + duration
            self.push(
                end,
                FlowRecord(
                    start,
                    end,
                    proto,
                    src,
                    sport,
                    dst,
                    dport,
                    bytes_out,
                    bytes_in,
                    _packets(bytes_out),
                    _packets(bytes_in),
                    state,
                ),
            )
            return
        pieces = math.ceil(duration / OPEN_EVERY)
        weights = [rng.uniform(0.5, 1.5) for _ in range(pieces)]
        total = sum(weights)
        sent_out = sent_in = 0
        for i, weight in enumerate(weights):
            last = i == pieces - 1
            end = start + duration if last else start + (i + 1) * OPEN_EVERY
            out = bytes_out - sent_out if last else int(bytes_out * weight / total)
            inb = bytes_in - sent_in if last else int(bytes_in * weight / total)
            sent_out += out
            sent_in += inb
            self.push(
                end,
                FlowRecord(
                    start,
                    end,
                    proto,
                    src,
                    sport,
                    dst,
                    dport,
                    out,
                    inb,
                    _packets(out),
                    _packets(inb),
                    state if last else "open",
                ),
            )


def _packets(size: int) -> int:
    """Packets for a byte count: full-size segments plus a little for handshakes and acks."""
    return 0 if size <= 0 else size // 1200 + 1


def lognormal(rng: random.Random, median: float, sigma: float, low: float, high: float) -> float:
    return min(max(median * math.exp(rng.gauss(0.0, sigma)), low), high)


@dataclass(frozen=True)
class Service:
    """A name the office resolves and the addresses its answer holds (CNAME target first)."""

    name: str
    addresses: tuple[str, ...]
    cname: str = ""

    def answers(self) -> tuple[str, ...]:
        return (self.cname, *self.addresses) if self.cname else self.addresses


class World:
    """The internet as this office sees it: popular names (Zipf), CDNs, and fixed services.

    Many names share a handful of CDN addresses, so most web peers are contacted by many
    hosts; the long tail of names is what a single curious user visits once.
    """

    def __init__(self, seed: int, site_count: int = 3000) -> None:
        rng = random.Random(f"{seed}:world")
        self.book = AddressBook(random.Random(f"{seed}:addresses"))
        cdn = {
            "cloudfront.net": self.book.addresses(240),
            "akamaiedge.net": self.book.addresses(160),
            "fastly.net": self.book.addresses(80),
            "azureedge.net": self.book.addresses(120),
        }
        self.sites: list[Service] = []
        seen: set[str] = set()
        while len(self.sites) < site_count:
            name, site = self._site(rng, cdn)
            if name not in seen:
                seen.add(name)
                self.sites.append(site)

        def service(name: str, count: int = 1) -> Service:
            return Service(name, tuple(self.book.addresses(count)))

        self.ntp_names = tuple(f"{i}.pool.ntp.org" for i in range(4))
        self.ntp_servers = self.book.addresses(40)
        self.updates = (
            service("download.windowsupdate.com", 4),
            service("ctldl.windowsupdate.com", 2),
            service("definitions.avsecure-cloud.com", 2),
            service("update.googleapis.com", 3),
        )
        self.monitoring = service("agent.northwind-msp.net")
        self.chat = service("presence.teams.microsoft.com", 4)
        self.media_relays = service("relay.teams.microsoft.com", 20)
        self.storage = service("upload.onedrive-files.com", 6)
        self.backup = service("vault.backblaze-b2.com", 2)
        self.camera_cloud = service("device.vigilcam-cloud.com", 2)
        self.printer_cloud = service("connect.printvendor.com")
        self.reputation_zone = "rep.avsecure-cloud.com"
        # The popular cloud names also appear in the browsing mix: everyone visits them.
        self.sites[3:3] = [self.storage, self.chat]
        self.popularity = Zipf(len(self.sites), 1.05)

    def _site(self, rng: random.Random, cdn: dict[str, list[str]]) -> tuple[str, Service]:
        word, other = rng.choice(WORDS), rng.choice(WORDS)
        suffix = rng.choice(SUFFIXES)
        style = rng.random()
        if style < 0.40:
            name = f"www.{word}{rng.choice(('', '', other, '-' + other))}.{suffix}"
        elif style < 0.55:
            name = f"{word}{other}.{suffix}"
        elif style < 0.70:
            prefix = rng.choice(("api", "cdn", "static", "img", "login", "app", "assets"))
            name = f"{prefix}.{word}.{suffix}"
        elif style < 0.82:
            name = f"d{rng.getrandbits(52):013x}.cloudfront.net"
            return name, Service(name, tuple(rng.sample(cdn["cloudfront.net"], 2)))
        elif style < 0.88:
            name = f"e{rng.randint(1000, 99999)}.a.akamaiedge.net"
            return name, Service(name, tuple(rng.sample(cdn["akamaiedge.net"], 2)))
        elif style < 0.94:
            name = f"{word}-{other}.azureedge.net"
            return name, Service(name, tuple(rng.sample(cdn["azureedge.net"], 2)))
        else:
            name = f"{word}.global.ssl.fastly.net"
            return name, Service(name, tuple(rng.sample(cdn["fastly.net"], 2)))
        if rng.random() < 0.55:  # a site hosted on a CDN: CNAME plus shared addresses
            network = rng.choice(tuple(cdn))
            target = f"{word}-{rng.getrandbits(24):06x}.{network}"
            return name, Service(name, tuple(rng.sample(cdn[network], 2)), cname=target)
        return name, Service(name, tuple(self.book.addresses(rng.choice((1, 1, 2)))))

    def site(self, rng: random.Random) -> Service:
        return self.sites[self.popularity.draw(rng)]


@dataclass
class Scene:
    """What every activity stream needs: the office, its internet, the run's time span."""

    seed: int
    world: World
    hosts: list[Host]
    start: float
    end: float
    utc_offset: float

    def rng(self, *parts: object) -> random.Random:
        """An independent, repeatable random source per (host, activity)."""
        return seeded(self.seed, *parts)

    def role(self, role: str) -> Host:
        return next(h for h in self.hosts if h.role == role)

    def online(self, host: Host) -> list[tuple[float, float]]:
        online = host.online()
        return [(self.start, self.end)] if online is None else online


def seeded(seed: int, *parts: object) -> random.Random:
    """A random source fixed by the seed and a path (str seeds hash the same in every run)."""
    return random.Random(":".join(str(p) for p in (seed, *parts)))


def arrivals(
    rng: random.Random,
    intervals: list[tuple[float, float]],
    per_hour: float,
    utc_offset: float,
    lunch: float = 0.3,
) -> Iterator[float]:
    """Poisson event times inside ``intervals``, thinned to ``lunch`` between 12 and 13 local."""
    rate = per_hour / HOUR
    for begin, finish in intervals:
        t = begin + rng.expovariate(rate)
        while t < finish:
            hour = local_hour(t, utc_offset)
            if not 12.0 <= hour < 13.0 or rng.random() < lunch:
                yield t
            t += rng.expovariate(rate)


def periodic(
    rng: random.Random, intervals: list[tuple[float, float]], period: float, jitter: float
) -> Iterator[float]:
    """Times every ``period`` s (relative jitter ``jitter``) inside ``intervals``."""
    for begin, finish in intervals:
        t = begin + rng.uniform(0.0, period)
        while t < finish:
            yield t
            t += period * (1.0 + rng.uniform(-jitter, jitter))

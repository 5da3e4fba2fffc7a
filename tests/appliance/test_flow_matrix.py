"""Flow matrix: each example policy, compiled and loaded into the lab router, checked with real
TCP/UDP/ICMP packets over IPv4 and IPv6.

Every row of a table below is one flow: (from role, source address, protocol, destination,
port, expected outcome, address the server must see, why). The outcomes tell the verdicts apart:

* ``open`` - the flow passed, and so did its return traffic: a TCP probe is open only after
  reading the server's reply line (a UDP probe after its answer), and every pair of zones
  that is not allowed in the reply direction proves the conntrack fast path at the same time;
* ``refused`` / ``unreachable`` - the router rejected it (TCP reset / ICMP admin-prohibited),
  answered at once;
* ``timeout`` - the router dropped it.

``seen`` is what the server reported as the client's address: the WAN address proves
masquerade, the client's own address proves no translation.

The module starts a few extra echo servers (see ``EXTRA_SERVERS``) so that "allowed" and
"rejected" cannot be confused: wherever a reject is expected, something listens behind it. It
also adds a few documentation addresses to lab namespaces (``EXTRA_ADDRESSES``): a printer on
the LAN, a non-camera IoT device, the vendor cloud's IPv6 address and hosts in the IPv6 block
lists. Probes are batched: one ``lab.probe`` call per source role and policy (all roles in
parallel), results cached for the per-flow test cases.

While the matrix runs, IPv6 neighbour entries between the router and each client network are
pinned (static), so the matrix checks only what the rules say; neighbour discovery through a
cold cache (which the output chain once dropped) is tested on its own in
``test_router_ipv6_neighbour_discovery``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import selectors
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from appliance import netns
from appliance.lab import LINKS, Lab
from appliance.labprobe import Kind, Outcome, Probe, ProbeResult
from policies.compiler import compile_policy
from policies.loader import load_policy, parse_policy

pytestmark = pytest.mark.netns

EXAMPLES = Path(__file__).resolve().parents[2] / "policies" / "examples"
FIXTURES = Path(__file__).resolve().parent / "policies"

DROP_WAIT = 0.5  # expected drops: how long to wait for nothing
ANSWER_WAIT = 2.0  # expected answers arrive in milliseconds; this only bounds a failure
FAST = 0.9  # a reject answers before TCP's first SYN retransmission (1 s)

# -- the lab's address plan (checked against appliance.lab by test_address_plan) --------------
WAN4, WAN6 = "203.0.113.2", "2001:db8:ffff::2"  # the router's WAN addresses
ISP4, ISP6 = "203.0.113.1", "2001:db8:ffff::1"  # inet's own addresses on the WAN link
SRV, SRV_B, LISTED = "198.51.100.10", "198.51.100.20", "198.51.100.66"
SRV6, LISTED6 = "2001:db8:100::10", "2001:db8:100::66"
LAN, LAN_B, LAN6, LAN6_B = "192.0.2.10", "192.0.2.11", "2001:db8:0:10::10", "2001:db8:0:10::11"
GUEST, GUEST6 = "192.0.2.70", "2001:db8:0:20::70"
CAM, CAM6 = "192.0.2.140", "2001:db8:0:30::40"
DMZ, DMZ6 = "192.0.2.170", "2001:db8:0:40::70"
MGMT, MGMT6 = "192.0.2.200", "2001:db8:0:50::200"
R_LAN, R_LAN6 = "192.0.2.1", "2001:db8:0:10::1"
R_GUEST, R_GUEST6 = "192.0.2.65", "2001:db8:0:20::1"
R_IOT, R_IOT6 = "192.0.2.129", "2001:db8:0:30::1"
R_DMZ, R_DMZ6 = "192.0.2.161", "2001:db8:0:40::1"
R_MGMT, R_MGMT6 = "192.0.2.193", "2001:db8:0:50::1"
# -- added by this module ----------------------------------------------------------------------
PRINTER = "192.0.2.50"  # small-office group "printers"
IOT_OTHER, IOT_OTHER6 = "192.0.2.155", "2001:db8:0:30::99"  # IoT devices that are not cameras
VENDOR6 = "2001:db8:100::20"  # office-guest-iot "vendor-cloud" over IPv6
BAD6 = "2001:db8:bad::1"  # spamhaus-drop (JSON feed) / office-guest-iot drop-v6
DEAD6 = "2001:db8:dead::1"  # firehol-level1

EXTRA_ADDRESSES: dict[str, tuple[tuple[str, str], ...]] = {
    "lan": (("eth0", f"{PRINTER}/26"),),
    "iot": (("eth0", f"{IOT_OTHER}/27"), ("eth0", f"{IOT_OTHER6}/64")),
    "inet": (("srv0", f"{VENDOR6}/128"), ("srv0", f"{BAD6}/128"), ("srv0", f"{DEAD6}/128")),
}
"""Secondary IPv4 and deprecated IPv6 addresses: usable as probe sources or server addresses,
never picked as a namespace's default source address."""

EXTRA_SERVERS: dict[str, tuple[str, str]] = {
    "router": ("22,53,80,443,8080", "53,123,443,5000"),
    "lan": ("22,80,443", "53,443"),
    "iot": ("22,80,443", "53,443"),
    "mgmt": ("22,443", "53"),
    "inet": ("53,465,587,993,5060,8883", "443,3478,5060,10000"),
    "dmz": ("5001,5060,10000,10100", "5060,10000,10100"),
}
"""(tcp ports, udp ports) of the extra labservers, beyond lab.start_servers' inet/dmz ones."""


# -- schedules, restated independently of the compiler ---------------------------------------
@dataclass(frozen=True)
class Weekly:
    """Weekly windows in a site's local time: (days 0=Mon.., "HH:MM", "HH:MM"), end exclusive;
    an end before the start runs into the next day."""

    timezone: str
    windows: tuple[tuple[frozenset[int], str, str], ...]

    def is_open(self, when: dt.datetime) -> bool:
        local = when.astimezone(ZoneInfo(self.timezone))
        t = local.hour * 3600 + local.minute * 60 + local.second
        day = local.weekday()
        for days, start, end in self.windows:
            a, b = _seconds(start), _seconds(end)
            if a < b and day in days and a <= t < b:
                return True
            if a > b and ((day in days and t >= a) or ((day - 1) % 7 in days and t < b)):
                return True
        return False

    def settled(self, when: dt.datetime, margin: float = 60.0) -> bool:
        """True unless a window opens or closes within ``margin`` seconds of ``when``."""
        delta = dt.timedelta(seconds=margin)
        return self.is_open(when - delta) == self.is_open(when) == self.is_open(when + delta)


def _seconds(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 3600 + int(m) * 60


WEEKDAYS, ALL_DAYS = frozenset(range(5)), frozenset(range(7))
OPENING_HOURS = Weekly(
    "America/New_York", ((WEEKDAYS, "07:30", "19:00"), (frozenset({5}), "09:00", "13:00"))
)
WORKING_WEEK = Weekly("Europe/London", ((WEEKDAYS, "08:00", "18:30"),))
NIGHT_BACKUP = Weekly("Europe/London", ((ALL_DAYS, "23:00", "02:00"),))


# -- flows -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Flow:
    role: str
    src: str | None
    kind: Kind
    dst: str
    port: int
    expect: Outcome
    seen: str | None = None
    why: str = ""
    when: Weekly | None = None  # scheduled: ``expect`` inside the window, ``closed`` outside
    closed: Outcome = "timeout"

    def __str__(self) -> str:
        src = f"[{self.src}]" if self.src else ""
        port = f"/{self.port}" if self.kind != "icmp" else ""
        return f"{self.role}{src}->{self.dst}:{self.kind}{port}={self.expect}"

    def expected(self, now: dt.datetime) -> Outcome | None:
        """The outcome due at ``now``; None if a schedule boundary is too close to know."""
        if self.when is None:
            return self.expect
        if not self.when.settled(now):
            return None
        return self.expect if self.when.is_open(now) else self.closed

    def probe(self, expect: Outcome | None) -> Probe:
        wait = DROP_WAIT if expect == "timeout" else ANSWER_WAIT
        return Probe(self.kind, self.dst, self.port, src=self.src, timeout=wait)


Row = tuple[str, str | None, Kind, str, int, Outcome, str | None, str]


def flows(*rows: Row | Flow) -> list[Flow]:
    table = [row if isinstance(row, Flow) else Flow(*row) for row in rows]
    assert len(set(table)) == len(table), "duplicate flow"
    for f in table:
        if f.expect == "open" and f.kind != "icmp":
            assert f.seen, f"{f}: say which address the server must see"
    return table


def scheduled(when: Weekly, closed: Outcome, *rows: Row) -> list[Flow]:
    return [Flow(*row, when=when, closed=closed) for row in rows]


def params(table: list[Flow]) -> list[Any]:
    return [pytest.param(f, id=str(f)) for f in table]


# fmt: off
SMALL_OFFICE = flows(
    # role    src        proto   dst       port  expect         seen    why
    ("lan",   None,      "tcp",  SRV,      80,   "open",        WAN4,   "lan-out, masqueraded"),
    ("lan",   None,      "tcp",  SRV,      22,   "open",        WAN4,   "lan-out: any service"),
    ("lan",   LAN_B,     "tcp",  SRV_B,    8080, "open",        WAN4,   "lan-out"),
    ("lan",   None,      "udp",  SRV,      53,   "open",        WAN4,   "lan-out"),
    ("lan",   LAN_B,     "udp",  SRV,      5000, "open",        WAN4,   "lan-out"),
    ("lan",   None,      "icmp", SRV,      0,    "open",        None,   "lan-out"),
    ("lan",   None,      "tcp",  SRV6,     443,  "open",        LAN6,   "lan-out, v6 untranslated"),
    ("lan",   LAN6_B,    "udp",  SRV6,     123,  "open",        LAN6_B, "lan-out"),
    ("lan",   None,      "icmp", SRV6,     0,    "open",        None,   "lan-out"),
    ("lan",   None,      "tcp",  SRV,      9,    "refused",     None,   "server's RST returns"),
    ("lan",   None,      "udp",  SRV,      9,    "refused",     None,   "related ICMP returns"),
    ("lan",   None,      "udp",  SRV6,     9,    "refused",     None,   "related ICMP returns"),
    ("lan",   None,      "tcp",  LISTED,   80,   "timeout",     None,   "spamhaus-drop outbound"),
    ("lan",   None,      "udp",  LISTED,   53,   "timeout",     None,   "spamhaus-drop outbound"),
    ("lan",   None,      "icmp", LISTED,   0,    "timeout",     None,   "spamhaus-drop outbound"),
    ("lan",   None,      "tcp",  LISTED6,  80,   "open",        LAN6,   "feed has no IPv6 entry"),
    ("lan",   PRINTER,   "tcp",  SRV,      443,  "refused",     None,   "no-printer-cloud"),
    ("lan",   PRINTER,   "udp",  SRV,      53,   "unreachable", None,   "no-printer-cloud"),
    ("lan",   PRINTER,   "icmp", SRV,      0,    "unreachable", None,   "no-printer-cloud"),
    ("lan",   None,      "tcp",  DMZ,      443,  "open",        LAN,    "lan-nas"),
    ("lan",   LAN_B,     "tcp",  DMZ,      5001, "open",        LAN_B,  "lan-nas"),
    ("lan",   None,      "tcp",  DMZ6,     443,  "open",        LAN6,   "lan-nas"),
    ("lan",   None,      "tcp",  DMZ,      22,   "open",        LAN,    "admin-ssh-dmz"),
    ("lan",   None,      "tcp",  DMZ6,     22,   "open",        LAN6,   "admin-ssh-dmz"),
    ("lan",   LAN_B,     "tcp",  DMZ,      22,   "timeout",     None,   "not an admin"),
    ("lan",   LAN6_B,    "tcp",  DMZ6,     22,   "timeout",     None,   "not an admin"),
    ("lan",   None,      "tcp",  DMZ,      80,   "timeout",     None,   "default any->any"),
    ("lan",   None,      "udp",  DMZ,      53,   "timeout",     None,   "default any->any"),
    ("lan",   None,      "icmp", DMZ6,     0,    "timeout",     None,   "default any->any"),
    ("lan",   None,      "tcp",  WAN4,     8443, "open",        R_DMZ,  "hairpin nas-https"),
    ("lan",   None,      "tcp",  R_LAN,    22,   "open",        LAN,    "anti-lockout"),
    ("lan",   None,      "tcp",  R_LAN6,   443,  "open",        LAN6,   "anti-lockout"),
    ("lan",   None,      "tcp",  WAN4,     22,   "open",        LAN,    "anti-lockout"),
    ("lan",   None,      "tcp",  R_LAN,    53,   "open",        LAN,    "dns-to-box"),
    ("lan",   None,      "udp",  R_LAN,    123,  "open",        LAN,    "dns-to-box"),
    ("lan",   None,      "udp",  R_LAN6,   53,   "open",        LAN6,   "dns-to-box"),
    ("lan",   None,      "icmp", R_LAN,    0,    "open",        None,   "dns-to-box"),
    ("lan",   None,      "tcp",  R_LAN,    80,   "timeout",     None,   "default any->self"),
    ("lan",   None,      "udp",  R_LAN6,   5000, "timeout",     None,   "default any->self"),
    ("lan",   None,      "tcp",  MGMT,     22,   "timeout",     None,   "mgmt0 in no zone"),
    ("lan",   None,      "tcp",  CAM6,     80,   "timeout",     None,   "iot0 in no zone"),
    ("dmz",   None,      "tcp",  SRV,      443,  "open",        WAN4,   "dmz-updates"),
    ("dmz",   None,      "tcp",  SRV,      80,   "open",        WAN4,   "dmz-updates"),
    ("dmz",   None,      "tcp",  SRV,      53,   "open",        WAN4,   "dmz-updates"),
    ("dmz",   None,      "udp",  SRV,      123,  "open",        WAN4,   "dmz-updates"),
    ("dmz",   None,      "udp",  SRV6,     53,   "open",        DMZ6,   "dmz-updates"),
    ("dmz",   None,      "tcp",  SRV6,     80,   "open",        DMZ6,   "dmz-updates"),
    ("dmz",   None,      "tcp",  SRV,      22,   "timeout",     None,   "default any->any"),
    ("dmz",   None,      "tcp",  SRV6,     8080, "timeout",     None,   "default any->any"),
    ("dmz",   None,      "udp",  SRV,      5000, "timeout",     None,   "default any->any"),
    ("dmz",   None,      "icmp", SRV,      0,    "timeout",     None,   "default any->any"),
    ("dmz",   None,      "tcp",  LISTED,   443,  "timeout",     None,   "spamhaus-drop outbound"),
    ("dmz",   None,      "tcp",  LAN,      22,   "timeout",     None,   "default any->any"),
    ("dmz",   None,      "tcp",  LAN6,     443,  "timeout",     None,   "default any->any"),
    ("dmz",   None,      "tcp",  R_DMZ,    53,   "open",        DMZ,    "dns-to-box"),
    ("dmz",   None,      "udp",  R_DMZ6,   123,  "open",        DMZ6,   "dns-to-box"),
    ("dmz",   None,      "icmp", R_DMZ,    0,    "open",        None,   "dns-to-box"),
    ("dmz",   None,      "tcp",  R_DMZ,    22,   "timeout",     None,   "anti-lockout is lan's"),
    ("dmz",   None,      "tcp",  WAN4,     8443, "timeout",     None,   "hairpin is lan's only"),
    ("inet",  ISP4,      "tcp",  WAN4,     8443, "open",        ISP4,   "nas-https forward"),
    ("inet",  SRV,       "tcp",  WAN4,     8443, "open",        SRV,    "nas-https forward"),
    ("inet",  LISTED,    "tcp",  WAN4,     8443, "timeout",     None,   "spamhaus-drop inbound"),
    ("inet",  ISP4,      "icmp", WAN4,     0,    "open",        None,   "wan-ping"),
    ("inet",  ISP6,      "icmp", WAN6,     0,    "open",        None,   "wan-ping"),
    ("inet",  LISTED,    "icmp", WAN4,     0,    "timeout",     None,   "spamhaus-drop inbound"),
    ("inet",  ISP4,      "tcp",  WAN4,     443,  "timeout",     None,   "default any->self"),
    ("inet",  ISP4,      "tcp",  WAN4,     22,   "timeout",     None,   "wan is no mgmt zone"),
    ("inet",  ISP6,      "tcp",  WAN6,     8443, "timeout",     None,   "the forward is IPv4"),
    ("inet",  ISP6,      "tcp",  DMZ6,     443,  "timeout",     None,   "default any->any"),
    ("inet",  ISP6,      "tcp",  LAN6,     22,   "timeout",     None,   "default any->any"),
    ("router", None,     "tcp",  SRV,      80,   "open",        WAN4,   "output accepts"),
    ("router", None,     "tcp",  SRV6,     8080, "open",        WAN6,   "output accepts"),
    ("router", None,     "tcp",  LISTED,   80,   "timeout",     None,   "spamhaus-drop outbound"),
    ("guest", None,      "tcp",  SRV,      80,   "timeout",     None,   "guest0 in no zone"),
    ("guest", None,      "tcp",  SRV6,     80,   "timeout",     None,   "guest0 in no zone"),
    ("guest", None,      "tcp",  R_GUEST,  22,   "timeout",     None,   "guest0 in no zone"),
)

OFFICE_GUEST_IOT = flows(
    # role    src        proto   dst       port  expect         seen    why
    ("lan",   None,      "tcp",  SRV,      80,   "open",        WAN4,   "lan-out, masqueraded"),
    ("lan",   LAN_B,     "udp",  SRV,      5000, "open",        WAN4,   "lan-out"),
    ("lan",   None,      "icmp", SRV,      0,    "open",        None,   "lan-out"),
    ("lan",   None,      "tcp",  SRV6,     443,  "open",        LAN6,   "lan-out, v6 untranslated"),
    ("lan",   None,      "icmp", SRV6,     0,    "open",        None,   "lan-out"),
    ("lan",   None,      "udp",  SRV,      9,    "refused",     None,   "related ICMP returns"),
    ("lan",   None,      "tcp",  SRV6,     9,    "refused",     None,   "server's RST returns"),
    ("lan",   None,      "tcp",  LISTED,   443,  "timeout",     None,   "firehol-level1 outbound"),
    ("lan",   None,      "icmp", LISTED,   0,    "timeout",     None,   "firehol-level1 outbound"),
    ("lan",   None,      "tcp",  LISTED6,  443,  "open",        LAN6,   "not on any v6 list"),
    ("lan",   None,      "tcp",  DEAD6,    443,  "timeout",     None,   "firehol-level1 outbound"),
    ("lan",   None,      "tcp",  BAD6,     443,  "timeout",     None,   "drop-v6 outbound"),
    ("lan",   None,      "tcp",  CAM,      80,   "open",        LAN,    "lan-to-iot"),
    ("lan",   None,      "udp",  CAM,      443,  "open",        LAN,    "lan-to-iot"),
    ("lan",   None,      "tcp",  CAM6,     443,  "open",        LAN6,   "lan-to-iot"),
    ("lan",   None,      "icmp", CAM6,     0,    "open",        None,   "lan-to-iot"),
    ("lan",   None,      "tcp",  CAM,      22,   "timeout",     None,   "default any->any"),
    ("lan",   None,      "udp",  CAM6,     53,   "timeout",     None,   "default any->any"),
    ("lan",   None,      "tcp",  GUEST,    22,   "timeout",     None,   "default any->any"),
    ("lan",   None,      "tcp",  MGMT6,    22,   "timeout",     None,   "default any->any"),
    ("lan",   None,      "tcp",  DMZ,      443,  "timeout",     None,   "dmz0 in no zone"),
    ("lan",   None,      "tcp",  R_LAN,    53,   "open",        LAN,    "lan-box"),
    ("lan",   None,      "udp",  R_LAN,    53,   "open",        LAN,    "lan-box"),
    ("lan",   None,      "udp",  R_LAN6,   123,  "open",        LAN6,   "lan-box"),
    ("lan",   None,      "icmp", R_LAN,    0,    "open",        None,   "lan-box"),
    ("lan",   None,      "icmp", R_LAN6,   0,    "open",        None,   "lan-box"),
    ("lan",   None,      "tcp",  R_LAN,    22,   "timeout",     None,   "anti-lockout is mgmt's"),
    ("lan",   None,      "tcp",  R_LAN6,   443,  "timeout",     None,   "anti-lockout is mgmt's"),
    *scheduled(
        OPENING_HOURS, "timeout",
        ("guest", None,  "tcp",  SRV,      80,   "open",        WAN4,   "guest-internet"),
        ("guest", None,  "tcp",  SRV,      443,  "open",        WAN4,   "guest-internet"),
        ("guest", None,  "tcp",  SRV,      53,   "open",        WAN4,   "guest-internet"),
        ("guest", None,  "udp",  SRV,      53,   "open",        WAN4,   "guest-internet"),
        ("guest", None,  "udp",  SRV,      443,  "open",        WAN4,   "guest-internet"),
        ("guest", None,  "tcp",  SRV6,     443,  "open",        GUEST6, "guest-internet"),
        ("guest", None,  "udp",  SRV6,     53,   "open",        GUEST6, "guest-internet"),
    ),
    ("guest", None,      "tcp",  SRV,      22,   "timeout",     None,   "default guest->any"),
    ("guest", None,      "tcp",  SRV6,     8080, "timeout",     None,   "default guest->any"),
    ("guest", None,      "udp",  SRV,      123,  "timeout",     None,   "default guest->any"),
    ("guest", None,      "icmp", SRV,      0,    "timeout",     None,   "default guest->any"),
    ("guest", None,      "tcp",  LISTED,   80,   "timeout",     None,   "firehol-level1 outbound"),
    ("guest", None,      "tcp",  LAN,      22,   "refused",     None,   "guest-no-internal"),
    ("guest", None,      "udp",  LAN,      53,   "unreachable", None,   "guest-no-internal"),
    ("guest", None,      "icmp", LAN,      0,    "unreachable", None,   "guest-no-internal"),
    ("guest", None,      "tcp",  LAN6,     443,  "refused",     None,   "guest-no-internal"),
    ("guest", None,      "udp",  LAN6,     443,  "unreachable", None,   "guest-no-internal"),
    ("guest", None,      "icmp", LAN6,     0,    "unreachable", None,   "guest-no-internal"),
    ("guest", None,      "tcp",  CAM,      80,   "refused",     None,   "guest-no-internal"),
    ("guest", None,      "udp",  CAM,      443,  "unreachable", None,   "guest-no-internal"),
    ("guest", None,      "tcp",  MGMT,     22,   "refused",     None,   "guest-no-internal"),
    ("guest", None,      "tcp",  CAM6,     80,   "timeout",     None,   "internal has no iot v6"),
    ("guest", None,      "tcp",  MGMT6,    22,   "timeout",     None,   "internal has no mgmt v6"),
    ("guest", None,      "tcp",  DMZ,      443,  "timeout",     None,   "dmz0 in no zone"),
    ("guest", None,      "tcp",  R_GUEST,  53,   "open",        GUEST,  "guest-dns-box"),
    ("guest", None,      "udp",  R_GUEST,  53,   "open",        GUEST,  "guest-dns-box"),
    ("guest", None,      "udp",  R_GUEST6, 53,   "open",        GUEST6, "guest-dns-box"),
    ("guest", None,      "tcp",  R_LAN,    53,   "open",        GUEST,  "guest-dns-box (self)"),
    ("guest", None,      "tcp",  R_GUEST,  22,   "timeout",     None,   "default guest->self"),
    ("guest", None,      "udp",  R_GUEST,  123,  "timeout",     None,   "default guest->self"),
    ("guest", None,      "icmp", R_GUEST6, 0,    "timeout",     None,   "default guest->self"),
    ("iot",   None,      "tcp",  SRV_B,    443,  "open",        WAN4,   "cameras-cloud"),
    ("iot",   None,      "tcp",  SRV_B,    8883, "open",        WAN4,   "cameras-cloud"),
    ("iot",   None,      "udp",  SRV_B,    3478, "open",        WAN4,   "cameras-cloud"),
    ("iot",   None,      "tcp",  VENDOR6,  443,  "open",        CAM6,   "cameras-cloud"),
    ("iot",   None,      "tcp",  SRV_B,    80,   "refused",     None,   "default iot->wan"),
    ("iot",   None,      "tcp",  SRV,      443,  "refused",     None,   "default iot->wan"),
    ("iot",   None,      "udp",  SRV_B,    53,   "unreachable", None,   "default iot->wan"),
    ("iot",   None,      "icmp", SRV_B,    0,    "unreachable", None,   "default iot->wan"),
    ("iot",   None,      "tcp",  SRV6,     443,  "refused",     None,   "default iot->wan"),
    ("iot",   None,      "udp",  SRV6,     53,   "unreachable", None,   "default iot->wan"),
    ("iot",   IOT_OTHER, "tcp",  SRV_B,    443,  "refused",     None,   "not a camera"),
    ("iot",   IOT_OTHER6, "tcp", VENDOR6,  443,  "refused",     None,   "not a camera"),
    ("iot",   None,      "tcp",  LAN,      22,   "timeout",     None,   "default any->any"),
    ("iot",   None,      "tcp",  LAN6,     443,  "timeout",     None,   "default any->any"),
    ("iot",   None,      "tcp",  MGMT,     22,   "timeout",     None,   "default any->any"),
    ("iot",   None,      "tcp",  R_IOT,    53,   "open",        CAM,    "guest-dns-box"),
    ("iot",   None,      "udp",  R_IOT6,   53,   "open",        CAM6,   "guest-dns-box"),
    ("iot",   None,      "tcp",  R_IOT,    22,   "timeout",     None,   "default iot->self"),
    ("iot",   None,      "icmp", R_IOT,    0,    "timeout",     None,   "default iot->self"),
    ("mgmt",  None,      "tcp",  R_MGMT,   22,   "open",        MGMT,   "anti-lockout"),
    ("mgmt",  None,      "tcp",  R_MGMT6,  443,  "open",        MGMT6,  "anti-lockout"),
    ("mgmt",  None,      "tcp",  R_LAN,    443,  "open",        MGMT,   "anti-lockout"),
    ("mgmt",  None,      "tcp",  R_MGMT,   53,   "timeout",     None,   "default mgmt->self"),
    ("mgmt",  None,      "icmp", R_MGMT,   0,    "timeout",     None,   "default mgmt->self"),
    ("mgmt",  None,      "tcp",  SRV,      443,  "timeout",     None,   "default any->any"),
    ("mgmt",  None,      "tcp",  SRV6,     443,  "timeout",     None,   "default any->any"),
    ("mgmt",  None,      "tcp",  LAN,      22,   "timeout",     None,   "default any->any"),
    ("inet",  ISP4,      "tcp",  WAN4,     22,   "timeout",     None,   "default wan->self"),
    ("inet",  ISP4,      "icmp", WAN4,     0,    "timeout",     None,   "default wan->self"),
    ("inet",  ISP6,      "tcp",  WAN6,     443,  "timeout",     None,   "default wan->self"),
    ("inet",  ISP6,      "tcp",  LAN6,     22,   "timeout",     None,   "default any->any"),
    ("inet",  ISP6,      "tcp",  CAM6,     80,   "timeout",     None,   "default any->any"),
    ("inet",  ISP6,      "tcp",  MGMT6,    22,   "timeout",     None,   "default any->any"),
    ("router", None,     "tcp",  SRV,      443,  "open",        WAN4,   "box-updates"),
    ("router", None,     "udp",  SRV,      123,  "open",        WAN4,   "box-updates"),
    ("router", None,     "tcp",  SRV6,     80,   "open",        WAN6,   "box-updates"),
    ("router", None,     "tcp",  SRV,      22,   "timeout",     None,   "default self->wan"),
    ("router", None,     "tcp",  SRV6,     8080, "timeout",     None,   "default self->wan"),
    ("router", None,     "tcp",  LISTED,   80,   "timeout",     None,   "firehol-level1 outbound"),
    ("router", None,     "tcp",  DEAD6,    80,   "timeout",     None,   "firehol-level1 outbound"),
    ("router", None,     "tcp",  LAN,      22,   "open",        R_LAN,  "self->lan: accept"),
)

STRICT_LOCKDOWN = flows(
    # role    src        proto   dst       port  expect         seen    why
    ("lan",   None,      "tcp",  SRV,      443,  "open",        WAN4,   "staff-cloud, masqueraded"),
    ("lan",   LAN_B,     "udp",  SRV,      443,  "open",        WAN4,   "staff-cloud"),
    ("lan",   None,      "tcp",  SRV6,     443,  "open",        LAN6,   "staff-cloud"),
    ("lan",   None,      "udp",  SRV6,     443,  "open",        LAN6,   "staff-cloud (+udp)"),
    ("lan",   None,      "tcp",  SRV_B,    993,  "open",        WAN4,   "staff-mail"),
    ("lan",   LAN_B,     "tcp",  SRV_B,    587,  "open",        WAN4,   "staff-mail"),
    ("lan",   None,      "tcp",  SRV6,     465,  "open",        LAN6,   "staff-mail"),
    *scheduled(
        WORKING_WEEK, "refused",
        ("lan",   None,  "tcp",  SRV_B,    80,   "open",        WAN4,   "staff-web"),
        ("lan",   None,  "tcp",  SRV_B,    443,  "open",        WAN4,   "staff-web"),
        ("lan",   None,  "tcp",  SRV6,     80,   "open",        LAN6,   "staff-web"),
    ),
    *scheduled(
        WORKING_WEEK, "unreachable",
        ("lan",   None,  "udp",  SRV_B,    53,   "open",        WAN4,   "staff-web"),
        ("lan",   None,  "udp",  LISTED6,  443,  "open",        LAN6,   "staff-web"),
    ),
    *scheduled(
        NIGHT_BACKUP, "refused",
        ("lan",   None,  "tcp",  SRV,      22,   "open",        WAN4,   "backup"),
        ("lan",   None,  "tcp",  SRV6,     22,   "open",        LAN6,   "backup"),
    ),
    ("lan",   None,      "tcp",  SRV_B,    22,   "refused",     None,   "default lan->wan"),
    ("lan",   None,      "tcp",  SRV_B,    8080, "refused",     None,   "default lan->wan"),
    ("lan",   None,      "udp",  SRV_B,    5000, "unreachable", None,   "default lan->wan"),
    ("lan",   None,      "icmp", SRV,      0,    "unreachable", None,   "default lan->wan"),
    ("lan",   None,      "udp",  SRV6,     5000, "unreachable", None,   "default lan->wan"),
    ("lan",   None,      "icmp", SRV6,     0,    "unreachable", None,   "default lan->wan"),
    ("lan",   None,      "tcp",  LISTED,   993,  "open",        WAN4,   "inbound list: replies ok"),
    ("lan",   None,      "tcp",  LISTED6,  993,  "open",        LAN6,   "staff-mail"),
    ("lan",   None,      "tcp",  DMZ,      22,   "refused",     None,   "default any->any"),
    ("lan",   None,      "udp",  DMZ,      53,   "unreachable", None,   "default any->any"),
    ("lan",   None,      "icmp", DMZ,      0,    "unreachable", None,   "default any->any"),
    ("lan",   None,      "tcp",  DMZ6,     443,  "refused",     None,   "default any->any"),
    ("lan",   None,      "tcp",  MGMT,     22,   "refused",     None,   "default any->any"),
    ("lan",   None,      "tcp",  WAN4,     10000, "timeout",    None,   "voip-in: partners only"),
    ("lan",   None,      "udp",  WAN4,     10000, "timeout",    None,   "voip-in: partners only"),
    ("lan",   None,      "udp",  WAN4,     5060, "timeout",     None,   "sip-in has no hairpin"),
    ("lan",   None,      "tcp",  R_LAN,    53,   "open",        LAN,    "lan-dns"),
    ("lan",   None,      "udp",  R_LAN,    123,  "open",        LAN,    "lan-dns"),
    ("lan",   None,      "udp",  R_LAN6,   53,   "open",        LAN6,   "lan-dns"),
    ("lan",   None,      "tcp",  R_LAN,    22,   "timeout",     None,   "anti-lockout is mgmt's"),
    ("lan",   None,      "icmp", R_LAN,    0,    "timeout",     None,   "default any->self"),
    ("dmz",   None,      "udp",  SRV,      5060, "open",        WAN4,   "voip-out"),
    ("dmz",   None,      "udp",  SRV,      10000, "open",       WAN4,   "voip-out"),
    ("dmz",   None,      "tcp",  SRV,      5060, "open",        WAN4,   "voip-out (sip)"),
    ("dmz",   None,      "tcp",  SRV,      443,  "refused",     None,   "default any->any"),
    ("dmz",   None,      "udp",  SRV,      53,   "unreachable", None,   "default any->any"),
    ("dmz",   None,      "udp",  SRV6,     5060, "unreachable", None,   "gateway has no v6"),
    ("dmz",   None,      "udp",  LISTED,   5060, "open",        WAN4,   "inbound list: replies ok"),
    ("dmz",   None,      "tcp",  LAN,      22,   "refused",     None,   "default any->any"),
    ("dmz",   None,      "tcp",  R_DMZ,    53,   "open",        DMZ,    "lan-dns"),
    ("dmz",   None,      "tcp",  R_DMZ,    22,   "timeout",     None,   "default any->self"),
    ("dmz",   None,      "tcp",  WAN4,     10000, "timeout",    None,   "voip-in: partners only"),
    # Anti-lockout: every router address, both ports, in one burst (8 IPv4 SYNs from one
    # source), more than mgmt-ssh's per-source limit (burst 5) would let through: the
    # anti-lockout accept comes first in the input chain, so that limit never applies to TCP.
    ("mgmt",  None,      "tcp",  R_MGMT,   22,   "open",        MGMT,   "anti-lockout"),
    ("mgmt",  None,      "tcp",  R_MGMT,   443,  "open",        MGMT,   "anti-lockout"),
    ("mgmt",  None,      "tcp",  R_LAN,    22,   "open",        MGMT,   "anti-lockout"),
    ("mgmt",  None,      "tcp",  R_LAN,    443,  "open",        MGMT,   "anti-lockout"),
    ("mgmt",  None,      "tcp",  R_DMZ,    22,   "open",        MGMT,   "anti-lockout"),
    ("mgmt",  None,      "tcp",  R_DMZ,    443,  "open",        MGMT,   "anti-lockout"),
    ("mgmt",  None,      "tcp",  WAN4,     22,   "open",        MGMT,   "anti-lockout"),
    ("mgmt",  None,      "tcp",  WAN4,     443,  "open",        MGMT,   "anti-lockout"),
    ("mgmt",  None,      "tcp",  R_MGMT6,  22,   "open",        MGMT6,  "anti-lockout"),
    ("mgmt",  None,      "tcp",  R_MGMT6,  443,  "open",        MGMT6,  "anti-lockout"),
    ("mgmt",  None,      "tcp",  R_LAN6,   22,   "open",        MGMT6,  "anti-lockout"),
    ("mgmt",  None,      "tcp",  WAN6,     443,  "open",        MGMT6,  "anti-lockout"),
    ("mgmt",  None,      "udp",  R_MGMT,   443,  "open",        MGMT,   "mgmt-ssh (https/udp)"),
    ("mgmt",  None,      "tcp",  R_MGMT,   53,   "timeout",     None,   "default any->self"),
    ("mgmt",  None,      "tcp",  R_MGMT,   80,   "timeout",     None,   "default any->self"),
    ("mgmt",  None,      "icmp", R_MGMT,   0,    "timeout",     None,   "default any->self"),
    ("mgmt",  None,      "tcp",  DMZ,      22,   "open",        MGMT,   "mgmt-to-dmz"),
    ("mgmt",  None,      "tcp",  DMZ6,     443,  "open",        MGMT6,  "mgmt-to-dmz"),
    ("mgmt",  None,      "icmp", DMZ,      0,    "open",        None,   "mgmt-to-dmz"),
    ("mgmt",  None,      "icmp", DMZ6,     0,    "open",        None,   "mgmt-to-dmz"),
    ("mgmt",  None,      "tcp",  DMZ,      80,   "refused",     None,   "default any->any"),
    ("mgmt",  None,      "udp",  DMZ,      53,   "unreachable", None,   "default any->any"),
    ("mgmt",  None,      "udp",  DMZ6,     123,  "unreachable", None,   "default any->any"),
    ("mgmt",  None,      "tcp",  SRV,      443,  "refused",     None,   "default any->any"),
    ("mgmt",  None,      "tcp",  SRV6,     443,  "refused",     None,   "default any->any"),
    ("mgmt",  None,      "tcp",  LAN,      22,   "refused",     None,   "default any->any"),
    ("inet",  SRV,       "tcp",  WAN4,     10000, "open",       SRV,    "voip-in from partners"),
    ("inet",  SRV,       "udp",  WAN4,     10000, "open",       SRV,    "voip-in from partners"),
    ("inet",  SRV_B,     "udp",  WAN4,     10100, "open",       SRV_B,  "voip-in from partners"),
    ("inet",  SRV,       "udp",  WAN4,     5060, "open",        SRV,    "sip-in from partners"),
    ("inet",  ISP4,      "tcp",  WAN4,     10000, "timeout",    None,   "voip-in: not a partner"),
    ("inet",  ISP4,      "udp",  WAN4,     5060, "timeout",     None,   "sip-in: not a partner"),
    ("inet",  LISTED,    "udp",  WAN4,     10000, "timeout",    None,   "spamhaus-drop inbound"),
    ("inet",  SRV,       "tcp",  WAN4,     5060, "timeout",     None,   "sip-in is UDP only"),
    ("inet",  SRV,       "tcp",  WAN4,     443,  "timeout",     None,   "portal-v6 is IPv6 only"),
    ("inet",  SRV6,      "tcp",  WAN6,     443,  "open",        SRV6,   "portal-v6 from partners"),
    ("inet",  LISTED6,   "tcp",  WAN6,     443,  "open",        LISTED6, "partner, not listed"),
    ("inet",  ISP6,      "tcp",  WAN6,     443,  "timeout",     None,   "portal-v6: not a partner"),
    ("inet",  BAD6,      "tcp",  WAN6,     443,  "timeout",     None,   "spamhaus-drop inbound"),
    ("inet",  ISP4,      "tcp",  WAN4,     22,   "timeout",     None,   "default any->self"),
    ("inet",  ISP4,      "icmp", WAN4,     0,    "timeout",     None,   "default any->self"),
    ("inet",  ISP6,      "icmp", WAN6,     0,    "timeout",     None,   "default any->self"),
    ("inet",  ISP6,      "tcp",  DMZ6,     22,   "refused",     None,   "default any->any"),
    ("inet",  BAD6,      "tcp",  DMZ6,     22,   "timeout",     None,   "spamhaus-drop inbound"),
    ("inet",  ISP6,      "tcp",  LAN6,     443,  "refused",     None,   "default any->any"),
    ("inet",  ISP6,      "udp",  LAN6,     53,   "unreachable", None,   "default any->any"),
    ("inet",  SRV6,      "tcp",  LAN6,     443,  "refused",     None,   "partner, not to WAN6"),
    ("inet",  SRV6,      "tcp",  MGMT6,    443,  "refused",     None,   "partner, not to WAN6"),
    ("router", None,     "tcp",  SRV,      443,  "open",        WAN4,   "box-dns"),
    ("router", None,     "udp",  SRV,      53,   "open",        WAN4,   "box-dns"),
    ("router", None,     "udp",  SRV6,     123,  "open",        WAN6,   "box-dns"),
    ("router", None,     "tcp",  SRV6,     443,  "open",        WAN6,   "box-dns"),
    ("router", None,     "tcp",  SRV,      80,   "timeout",     None,   "default self->any"),
    ("router", None,     "tcp",  SRV,      22,   "timeout",     None,   "default self->any"),
    ("router", None,     "tcp",  DMZ,      22,   "timeout",     None,   "default self->any"),
    ("router", None,     "tcp",  LAN6,     22,   "timeout",     None,   "default self->any"),
    ("guest", None,      "tcp",  SRV,      80,   "timeout",     None,   "guest0 in no zone"),
    ("guest", None,      "tcp",  R_GUEST,  22,   "timeout",     None,   "guest0 in no zone"),
    ("iot",   None,      "tcp",  SRV_B,    443,  "timeout",     None,   "iot0 in no zone"),
)
# fmt: on

MATRIX = {
    "small-office": SMALL_OFFICE,
    "office-guest-iot": OFFICE_GUEST_IOT,
    "strict-lockdown": STRICT_LOCKDOWN,
}


# -- lab helpers -------------------------------------------------------------------------------
def compiled(name: str, *, at: dt.datetime | None = None) -> str:
    policy = load_policy(EXAMPLES / f"{name}.yaml").policy
    return compile_policy(policy, at=at or dt.datetime.now(dt.UTC)).text


def _start_server(lab: Lab, role: str, tcp: str, udp: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "appliance.labserver", "--tcp", tcp, "--udp", udp]
    proc = netns.popen(lab.ns(role), argv)
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        ready = bool(sel.select(5.0)) and proc.stdout.readline().strip() == "ready"
    if not ready:
        proc.kill()
        _out, err = proc.communicate(timeout=5)
        raise RuntimeError(f"extra labserver in {role} did not start: {err.strip()}")
    return proc


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=2)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


@pytest.fixture(scope="module")
def extras(lab: Lab) -> Iterator[Lab]:
    """The module's lab plus this module's extra addresses and servers."""
    for role, addrs in EXTRA_ADDRESSES.items():
        cmds = [
            f"addr add {cidr} dev {dev}" + (" nodad preferred_lft 0" if ":" in cidr else "")
            for dev, cidr in addrs
        ]
        netns.ip(["-batch", "-"], ns=lab.ns(role), input="\n".join(cmds) + "\n")
    procs: list[subprocess.Popen[str]] = []
    try:
        for role, (tcp, udp) in EXTRA_SERVERS.items():
            procs.append(_start_server(lab, role, tcp, udp))
        yield lab
    finally:
        for proc in procs:
            _stop(proc)


def _link_json(lab: Lab, role: str, args: list[str]) -> Any:
    return json.loads(netns.ip(["-j", *args], ns=lab.ns(role)).stdout)


@contextlib.contextmanager
def pinned_neighbours(lab: Lab) -> Iterator[None]:
    """Static IPv6 neighbour entries router <-> every client network, removed afterwards."""
    add: dict[str, list[str]] = {}
    remove: dict[str, list[str]] = {}
    for role, link in LINKS.items():
        [router_link] = _link_json(lab, "router", ["link", "show", "dev", link.router_if])
        [peer_link] = _link_json(lab, role, ["link", "show", "dev", link.peer_if])
        [peer_addrs] = _link_json(lab, role, ["-6", "addr", "show", "dev", link.peer_if])
        for info in peer_addrs["addr_info"]:
            if info.get("scope") == "global":
                entry = f"{info['local']} dev {link.router_if}"
                add.setdefault("router", []).append(
                    f"neigh replace {entry} lladdr {peer_link['address']} nud permanent"
                )
                remove.setdefault("router", []).append(f"neigh del {entry}")
        entry = f"{link.router6.split('/')[0]} dev {link.peer_if}"
        add[role] = [f"neigh replace {entry} lladdr {router_link['address']} nud permanent"]
        remove[role] = [f"neigh del {entry}"]

    def batch(cmds: dict[str, list[str]]) -> None:
        for role, lines in cmds.items():
            netns.ip(["-batch", "-"], ns=lab.ns(role), input="\n".join(lines) + "\n")

    batch(add)
    try:
        yield
    finally:
        batch(remove)


def forget_neighbours(lab: Lab) -> None:
    """Flush the (dynamic) neighbour caches of every lab namespace."""
    for ns in lab.namespaces:
        netns.ip(["neigh", "flush", "all"], ns=ns)


@dataclass(frozen=True)
class Verdict:
    result: ProbeResult
    expect: Outcome | None  # None: a schedule boundary is too close to know


def run_matrix(lab: Lab, ruleset: str, table: list[Flow]) -> dict[Flow, Verdict]:
    """Load ``ruleset`` and probe every flow: one batch per source role, roles in parallel."""
    lab.load_ruleset(ruleset)
    forget_neighbours(lab)
    by_role: dict[str, list[Flow]] = {}
    for f in table:
        by_role.setdefault(f.role, []).append(f)
    now = dt.datetime.now(dt.UTC)
    expect = {f: f.expected(now) for f in table}
    with pinned_neighbours(lab), ThreadPoolExecutor(len(by_role)) as pool:
        futures = {
            role: pool.submit(lab.probe, role, [f.probe(expect[f]) for f in group])
            for role, group in by_role.items()
        }
        results = {role: fut.result() for role, fut in futures.items()}
    return {
        f: Verdict(res, expect[f])
        for role, group in by_role.items()
        for f, res in zip(group, results[role], strict=True)
    }


def check(flow: Flow, expect: Outcome, res: ProbeResult) -> None:
    assert res.outcome == expect, f"{flow} ({flow.why}): expected {expect}, got {res}"
    if expect == "open" and flow.kind != "icmp" and flow.seen:
        assert res.seen_as == flow.seen, f"{flow} ({flow.why}): server saw {res.seen_as}"
    if expect in ("refused", "unreachable"):
        assert res.elapsed < FAST, f"{flow}: the reject took {res.elapsed}s"


@pytest.fixture(scope="module")
def matrix(extras: Lab) -> Callable[[str], dict[Flow, Verdict]]:
    """Probe results per policy, computed on first use (one run per policy)."""
    cache: dict[str, dict[Flow, Verdict]] = {}

    def results(name: str) -> dict[Flow, Verdict]:
        if name not in cache:
            cache[name] = run_matrix(extras, compiled(name), MATRIX[name])
        return cache[name]

    return results


def verify(matrix: Callable[[str], dict[Flow, Verdict]], name: str, flow: Flow) -> None:
    verdict = matrix(name)[flow]
    if verdict.expect is None:
        pytest.skip(f"{flow}: too close to a {flow.why} schedule boundary to know")
    check(flow, verdict.expect, verdict.result)


# -- tests -------------------------------------------------------------------------------------
def test_address_plan(lab: Lab) -> None:
    """The constants above are the lab's plan (a lab change must not silently void them)."""
    assert (lab.router_addr("inet"), lab.router_addr6("inet")) == (WAN4, WAN6)
    assert (lab.server(), lab.server(1), lab.server(2)) == (SRV, SRV_B, LISTED)
    assert (lab.server6(), lab.server6(1)) == (SRV6, LISTED6)
    plan = {
        "inet": (ISP4, ISP6, WAN4, WAN6),
        "lan": (LAN, LAN6, R_LAN, R_LAN6),
        "guest": (GUEST, GUEST6, R_GUEST, R_GUEST6),
        "iot": (CAM, CAM6, R_IOT, R_IOT6),
        "dmz": (DMZ, DMZ6, R_DMZ, R_DMZ6),
        "mgmt": (MGMT, MGMT6, R_MGMT, R_MGMT6),
    }
    for role, addrs in plan.items():
        got = (lab.addr(role), lab.addr6(role), lab.router_addr(role), lab.router_addr6(role))
        assert got == addrs, role
    assert (lab.addr("lan", 1), lab.addr6("lan", 1)) == (LAN_B, LAN6_B)


@pytest.mark.parametrize("flow", params(SMALL_OFFICE))
def test_small_office(matrix: Callable[[str], dict[Flow, Verdict]], flow: Flow) -> None:
    verify(matrix, "small-office", flow)


@pytest.mark.parametrize("flow", params(OFFICE_GUEST_IOT))
def test_office_guest_iot(matrix: Callable[[str], dict[Flow, Verdict]], flow: Flow) -> None:
    verify(matrix, "office-guest-iot", flow)


@pytest.mark.parametrize("flow", params(STRICT_LOCKDOWN))
def test_strict_lockdown(matrix: Callable[[str], dict[Flow, Verdict]], flow: Flow) -> None:
    verify(matrix, "strict-lockdown", flow)


def test_small_office_forward_is_only_for_the_wan_address(extras: Lab) -> None:
    """nas-https forwards 203.0.113.2:8443; 192.0.2.10:8443 (a LAN host) is wan->lan: drop.

    inet normally has no IPv4 route into the office, so one is added for the LAN /26 here,
    as a neighbour on the ISP segment could do.
    """
    lab = extras
    lab.load_ruleset(compiled("small-office"))
    route = ["route", "add", "192.0.2.0/26", "via", WAN4]
    netns.ip(route, ns=lab.ns("inet"))
    try:
        control, hijacked = lab.probe(
            "inet",
            [Probe("tcp", LAN, 22, timeout=DROP_WAIT), Probe("tcp", LAN, 8443, timeout=1.0)],
        )
    finally:
        netns.ip(["route", "del", "192.0.2.0/26", "via", WAN4], ns=lab.ns("inet"))
    assert control.outcome == "timeout", control  # wan -> lan is dropped
    assert hijacked.outcome == "timeout", f"LAN host's 8443 answered by {hijacked}"


@pytest.mark.parametrize(
    ("name", "role", "dst", "port", "why"),
    [
        ("strict-lockdown", "mgmt", R_MGMT6, 22, "anti-lockout over IPv6"),
        ("strict-lockdown", "lan", SRV6, 443, "staff-cloud over IPv6"),
        ("office-guest-iot", "lan", SRV6, 443, "lan-out over IPv6"),
    ],
)
def test_router_ipv6_neighbour_discovery(
    extras: Lab, name: str, role: str, dst: str, port: int, why: str
) -> None:
    """With cold neighbour caches, IPv6 through or to the router must work as in the matrix."""
    lab = extras
    lab.load_ruleset(compiled(name))
    forget_neighbours(lab)
    [res] = lab.probe(role, [Probe("tcp", dst, port, timeout=1.0)])
    neigh = netns.ip(["-6", "neigh"], ns=lab.ns("router")).stdout.strip()
    assert res.outcome == "open", f"{why}: {res}; router's IPv6 neighbours:\n{neigh}"


# -- schedules ---------------------------------------------------------------------------------
def _window(now: dt.datetime, tz: ZoneInfo, start: int, end: int) -> tuple[int, str]:
    """(local weekday of the start, "HH:MM-HH:MM") for [now+start, now+end) minutes."""
    a = (now + dt.timedelta(minutes=start)).astimezone(tz)
    b = (now + dt.timedelta(minutes=end)).astimezone(tz)
    return a.weekday(), f"{a:%H:%M}-{b:%H:%M}"


DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def schedule_policy(tz_name: str, now: dt.datetime) -> str:
    """The schedule-now fixture with its windows placed around ``now`` in ``tz_name``."""
    tz = ZoneInfo(tz_name)
    data = yaml.safe_load((FIXTURES / "schedule-now.yaml").read_text(encoding="utf-8"))
    day, around_now = _window(now, tz, -30, 30)
    data["site"]["timezone"] = tz_name
    data["schedules"] = {
        "now-window": [{"days": DAY_NAMES[day], "time": around_now}],
        "other-days": [
            {"days": [d for i, d in enumerate(DAY_NAMES) if i != day], "time": around_now}
        ],
        "other-hours": [
            {"days": "daily", "time": _window(now, tz, 60, 120)[1]},
            {"days": "daily", "time": _window(now, tz, -120, -60)[1]},
        ],
        "daily-now": [{"days": "daily", "time": around_now}],
    }
    return yaml.safe_dump(data, sort_keys=False)


@pytest.mark.parametrize(
    "tz_name",
    ["UTC", "America/New_York", "Asia/Kolkata", "Pacific/Kiritimati", "Pacific/Pago_Pago"],
)
def test_schedule_enforced_both_ways(extras: Lab, tz_name: str) -> None:
    """Windows around the current time in several site time zones (half-hour offsets, and
    +14 / -11 h where the local weekday differs from UTC's much of the day): the window
    holding "now" is open, the same hours on other days and other hours today are closed."""
    lab = extras
    now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    loaded = parse_policy(schedule_policy(tz_name, now), "schedule-now.yaml", base_dir=FIXTURES)
    ruleset = compile_policy(loaded.policy, at=now)
    assert "meta day" in ruleset.text and "meta hour" in ruleset.text
    lab.load_ruleset(ruleset.text)
    # fmt: off
    table = [
        # proto  dst    port  expect     rule (schedule)
        ("tcp",  SRV,   80,   "open",    "in-window"),
        ("udp",  SRV,   53,   "open",    "in-window"),
        ("icmp", SRV,   0,    "open",    "in-window"),
        ("tcp",  SRV6,  80,   "open",    "in-window"),
        ("tcp",  SRV,   22,   "open",    "daily-now"),
        ("tcp",  SRV,   443,  "timeout", "other-days"),
        ("udp",  SRV,   443,  "timeout", "other-days"),
        ("tcp",  SRV6,  443,  "timeout", "other-days"),
        ("tcp",  SRV,   8080, "timeout", "other-hours"),
    ]
    # fmt: on
    probes = [
        Probe(kind, dst, port, timeout=DROP_WAIT if want == "timeout" else ANSWER_WAIT)
        for kind, dst, port, want, _rule in table
    ]
    results = lab.probe("guest", probes)
    got = [
        (rule, kind, dst, port, res.outcome)
        for (kind, dst, port, _want, rule), res in zip(table, results, strict=True)
    ]
    assert got == [(rule, kind, dst, port, want) for kind, dst, port, want, rule in table], (
        ruleset.text
    )
    seen = {res.seen_as for res, row in zip(results, table, strict=True) if row[0] != "icmp"}
    assert seen <= {WAN4, GUEST6, None}, seen  # masqueraded v4, untranslated v6

"""The web filter in the resolver: groups, schedules, safe search, DoH, domain sets.

The policy is the bundled example ``web-filter.yaml``; the upstream is a real DNS server on
loopback. Queries go through ``Resolver.handle``/``resolve`` (the exact code the server
runs per packet), with the wall clock injected so schedule boundaries can be crossed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import zoneinfo
from collections.abc import Iterator
from pathlib import Path

import pytest
from dnslib import QTYPE, DNSRecord

from appliance.dns_service import resolver_for
from appliance.nftset import MemorySetFeed
from appliance.webfilter import client_policy
from dns_filter.feeds import RecentBlocks
from dns_filter.resolver import Pending, Resolver
from policies.loader import parse_policy
from tests.dns_filter.test_server import Upstream

EXAMPLE = Path(__file__).parents[2] / "policies" / "examples" / "web-filter.yaml"
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
ZONE = """
adult.example. 60 A 198.51.100.77
social.example. 60 A 198.51.100.30
video.example. 60 A 198.51.100.31
www.example.com. 60 A 198.51.100.10
go.example. 60 CNAME adult.example.
cam.vendor-cloud.example. 60 A 198.51.100.40
cam.vendor-cloud.example. 60 AAAA 2001:db8:100::40
forcesafesearch.google.com. 60 A 198.51.100.81
restrict.youtube.com. 60 A 198.51.100.82
www.google.com. 60 A 198.51.100.90
use-application-dns.net. 60 A 198.51.100.91
dns.google. 60 A 198.51.100.92
"""
STAFF, KIDS, CAMERA, BOSS = "192.0.2.10", "192.0.2.70", "192.0.2.140", "192.0.2.11"
TABLET_ON_LAN = "192.0.2.12"


def local(text: str) -> float:
    """A Berlin wall-clock time as a Unix timestamp."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=BERLIN).timestamp()


class Box:
    def __init__(self, port: int, tmp: Path) -> None:
        text = EXAMPLE.read_text().replace("198.51.100.10:53", f"127.0.0.1:{port}")
        self.policy = parse_policy(text, "web-filter.yaml", base_dir=EXAMPLE.parent).policy
        self.now = local("2026-11-23 10:00")  # a Monday morning
        self.feed = MemorySetFeed()
        self.blocks = RecentBlocks()
        self.macs = {TABLET_ON_LAN: "02:00:00:00:00:70"}
        resolver, _, _, _ = resolver_for(
            self.policy, tmp, set_feed=self.feed, recent_blocks=self.blocks
        )
        # the neighbour table, injected: the tablet's MAC for its LAN address
        resolver.clients = client_policy(self.policy, mac_for=self.macs.get, mac_version=lambda: 1)
        assert resolver.clients is not None
        resolver.clients.use_lists(resolver.matcher.lists)
        resolver.wallclock = lambda: self.now
        self.resolver: Resolver = resolver
        self.loop = asyncio.new_event_loop()

    def ask(self, name: str, client: str, qtype: str = "A") -> DNSRecord:
        out = self.resolver.handle(bytes(DNSRecord.question(name, qtype).pack()), client)
        if isinstance(out, Pending):
            out = self.loop.run_until_complete(self.resolver.resolve(out))
        assert out is not None
        return DNSRecord.parse(out)

    def close(self) -> None:
        self.loop.run_until_complete(self.resolver.close())
        self.loop.close()
        if self.resolver.log is not None:
            self.resolver.log.close()


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    up = Upstream(ZONE)
    b = Box(up.port, tmp_path)
    try:
        yield b
    finally:
        b.close()
        up.stop()


def addresses(reply: DNSRecord) -> list[str]:
    return [str(rr.rdata) for rr in reply.rr if rr.rtype in (QTYPE.A, QTYPE.AAAA)]


def test_two_groups_get_different_answers_for_the_same_name(box: Box) -> None:
    for _ in range(2):  # the second round answers from each group's verdict memo
        assert addresses(box.ask("adult.example", STAFF)) == ["198.51.100.77"]
        kids = box.ask("adult.example", KIDS)
        assert addresses(kids) == ["192.0.2.1"]  # the kids' block mode: the block page
    note = box.blocks.lookup(KIDS, "adult.example")
    assert note is not None and note.group == "kids" and note.list_name == "category:adult"
    assert box.blocks.lookup(STAFF, "adult.example") is None


def test_a_mac_puts_a_device_in_its_group_wherever_its_address_is(box: Box) -> None:
    assert addresses(box.ask("adult.example", TABLET_ON_LAN)) == ["192.0.2.1"]
    assert box.resolver.clients is not None
    assert box.resolver.clients.group_of(TABLET_ON_LAN) == "kids"
    assert box.resolver.clients.group_of(STAFF) == "staff"
    assert box.resolver.clients.group_of(BOSS) == "admins"  # a named client beats its zone


def test_lunch_schedule_switches_social_media_at_the_boundaries(box: Box) -> None:
    box.now = local("2026-11-23 11:59:59")
    assert box.ask("social.example", STAFF).header.rcode == 3  # NXDOMAIN: blocked
    box.now = local("2026-11-23 12:00:00")
    assert addresses(box.ask("social.example", STAFF)) == ["198.51.100.30"]
    box.now = local("2026-11-23 13:29:59")
    assert addresses(box.ask("social.example", STAFF)) == ["198.51.100.30"]
    box.now = local("2026-11-23 13:30:00")
    assert box.ask("social.example", STAFF).header.rcode == 3
    box.now = local("2026-11-28 12:30:00")  # Saturday: the lunch schedule is weekdays only
    assert box.ask("social.example", STAFF).header.rcode == 3
    # kids never get it, lunch or not
    box.now = local("2026-11-23 12:30:00")
    assert addresses(box.ask("social.example", KIDS)) == ["192.0.2.1"]


def test_safe_search_answers_with_the_providers_safe_host(box: Box) -> None:
    kids = box.ask("www.google.com", KIDS)
    cname = [str(rr.rdata) for rr in kids.rr if rr.rtype == QTYPE.CNAME]
    assert cname == ["forcesafesearch.google.com."]
    assert addresses(kids) == ["198.51.100.81"]
    assert str(kids.q.qname) == "www.google.com."
    yt = box.ask("www.youtube.com", KIDS)
    assert [str(rr.rdata) for rr in yt.rr if rr.rtype == QTYPE.CNAME] == ["restrict.youtube.com."]
    # no HTTPS/SVCB record with the real addresses as hints
    https = box.ask("www.google.com", KIDS, "HTTPS")
    assert https.header.rcode == 0 and not https.rr
    assert addresses(box.ask("www.google.com", STAFF)) == ["198.51.100.90"]


def test_doh_canary_and_doh_names_for_filtered_groups_only(box: Box) -> None:
    for _ in range(2):  # asked again: the canary is never memoised as "not listed"
        assert box.ask("use-application-dns.net", KIDS).header.rcode == 3
        assert box.ask("use-application-dns.net", STAFF).header.rcode == 3
        assert addresses(box.ask("use-application-dns.net", BOSS)) == ["198.51.100.91"]
        assert box.ask("dns.google", STAFF).header.rcode == 3
        assert addresses(box.ask("dns.google", BOSS)) == ["198.51.100.92"]


def cnames(reply: DNSRecord) -> list[str]:
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.CNAME]


def test_a_cname_cached_for_one_group_is_still_checked_for_another(box: Box) -> None:
    assert cnames(box.ask("go.example", STAFF)) == ["adult.example."]
    assert addresses(box.ask("go.example", KIDS)) == ["192.0.2.1"]  # from the cache path
    assert cnames(box.ask("go.example", STAFF)) == ["adult.example."]


def test_answers_for_rule_names_feed_the_rule_sets(box: Box) -> None:
    box.ask("cam.vendor-cloud.example", CAMERA)
    box.ask("cam.vendor-cloud.example", CAMERA, "AAAA")
    assert box.feed.members("dom_iot-cloud_v4") == {"198.51.100.40"}
    assert box.feed.members("dom_iot-cloud_v6") == {"2001:db8:100::40"}
    assert box.feed.members("dom_kids-no-social_v4") == set()
    # an unfiltered client's answer for a social name teaches the kids' reject rule its address
    box.ask("social.example", BOSS)
    assert box.feed.members("dom_kids-no-social_v4") == {"198.51.100.30"}


def test_cached_answers_seed_new_sets(box: Box) -> None:
    box.ask("social.example", BOSS)
    fresh = MemorySetFeed()
    box.resolver.set_feed = fresh
    assert box.resolver.seed_domain_sets() >= 1
    assert fresh.members("dom_kids-no-social_v4") == {"198.51.100.30"}


def test_reloaded_lists_keep_per_group_answers(box: Box) -> None:
    from appliance.dns_service import build_matcher

    assert addresses(box.ask("adult.example", KIDS)) == ["192.0.2.1"]
    matcher, _ = build_matcher(box.policy, Path("/nonexistent"))
    box.resolver.matcher = matcher  # what the list updater's swap does
    assert addresses(box.ask("adult.example", KIDS)) == ["192.0.2.1"]
    assert addresses(box.ask("adult.example", STAFF)) == ["198.51.100.77"]

"""The web filter with real packets: `edgeguard run` in the lab's router, clients asking.

One controller runs for the whole module (starting it costs seconds); the checks follow
the issue's list: a rogue DNS server still gives the filtered answer, DoT is blocked, an
address learned before the rule cannot be used after it, IoT reaches only its cloud name,
safe search answers with the safe host, two groups get different answers, the block page
says why. Schedules at their boundary are checked with an injected clock in
test_webfilter.py (a lab cannot move the wall clock).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance import netns
from appliance.lab import Lab
from appliance.labprobe import Probe
from tests.appliance.helpers import Controller

pytestmark = pytest.mark.netns

EXAMPLES = Path(__file__).parents[2] / "policies" / "examples"
SOCIAL, CLOUD, OTHER = "198.51.100.30", "198.51.100.40", "198.51.100.10"
STAFF, BOSS = "192.0.2.10", "192.0.2.11"


def _policy(tmp: Path, *, with_social_rule: bool) -> Path:
    text = (EXAMPLES / "web-filter.yaml").read_text()
    text = text.replace("lists/ads-trackers.txt", str(EXAMPLES / "lists" / "ads-trackers.txt"))
    if not with_social_rule:
        start = text.index("  - name: kids-no-social")
        end = text.index("  - name: lan-out")
        text = text[:start] + text[end:]
    path = tmp / ("web-filter.yaml" if with_social_rule else "web-filter-no-rule.yaml")
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def box(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    tmp = tmp_path_factory.mktemp("webfilter")
    lab.load_ruleset(None)
    upstream = netns.popen(
        lab.ns("inet"),
        [sys.executable, "-m", "appliance.labdns", "--listen", OTHER],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    controller = Controller(lab, tmp / "state", _policy(tmp, with_social_rule=False))
    try:
        controller.wait_for("resolver answering on")
        yield controller
    finally:
        controller.stop()
        upstream.terminate()
        upstream.wait(10)
        lab.load_ruleset(None)


def dns(lab: Lab, role: str, server: str, name: str, src: str | None = None) -> str:
    [r] = lab.probe(role, [Probe("dns", server, 53, src=src, qname=name, timeout=2.0)])
    return r.seen_as or r.outcome


def tcp(lab: Lab, role: str, dst: str, port: int, src: str | None = None) -> str:
    [r] = lab.probe(role, [Probe("tcp", dst, port, src=src, timeout=2.0)])
    return r.outcome


def test_two_groups_get_different_answers(lab: Lab, box: Controller) -> None:
    assert dns(lab, "lan", "192.0.2.1", "adult.example") == OTHER  # staff: not blocked
    assert dns(lab, "guest", "192.0.2.65", "adult.example") == "192.0.2.1"  # kids: block page
    assert dns(lab, "guest", "192.0.2.65", "casino.example") == "192.0.2.1"
    assert dns(lab, "lan", "192.0.2.1", "phish.example") == "NXDOMAIN"  # staff's category


def test_asking_a_rogue_dns_server_still_gets_the_filtered_answer(
    lab: Lab, box: Controller
) -> None:
    assert dns(lab, "guest", OTHER, "adult.example") == "192.0.2.1"
    assert dns(lab, "lan", OTHER, "phish.example", src=STAFF) == "NXDOMAIN"
    # the admin's laptop is unfiltered: it really reaches the outside server
    assert dns(lab, "lan", OTHER, "phish.example", src=BOSS) == OTHER


def test_dns_over_tls_and_quic_are_blocked_for_filtered_groups(lab: Lab, box: Controller) -> None:
    assert tcp(lab, "guest", OTHER, 853) == "refused"
    assert tcp(lab, "lan", OTHER, 853, src=STAFF) == "refused"
    assert tcp(lab, "lan", OTHER, 853, src=BOSS) == "open"
    assert tcp(lab, "lan", OTHER, 443, src=STAFF) == "open"  # plain HTTPS is fine


def test_firefox_canary_says_no_doh(lab: Lab, box: Controller) -> None:
    assert dns(lab, "guest", "192.0.2.65", "use-application-dns.net") == "NXDOMAIN"


def test_safe_search_resolves_to_the_safe_hosts(lab: Lab, box: Controller) -> None:
    assert dns(lab, "guest", "192.0.2.65", "www.google.com") == "198.51.100.81"
    assert dns(lab, "guest", "192.0.2.65", "www.youtube.com") == "198.51.100.82"
    assert dns(lab, "lan", "192.0.2.1", "www.google.com") == "198.51.100.90"  # staff: as is


def test_iot_reaches_its_cloud_name_and_nothing_else(lab: Lab, box: Controller) -> None:
    assert dns(lab, "iot", "192.0.2.129", "cam.vendor-cloud.example") == CLOUD
    deadline = time.monotonic() + 5  # the feeder sends its batch within 50 ms
    while tcp(lab, "iot", CLOUD, 443) != "open" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert tcp(lab, "iot", CLOUD, 443) == "open"
    assert tcp(lab, "iot", OTHER, 443) == "refused"  # no name, no way out
    assert tcp(lab, "iot", SOCIAL, 443) == "refused"


def test_block_page_says_which_rule_and_list(lab: Lab, box: Controller) -> None:
    assert dns(lab, "guest", "192.0.2.65", "adult.example") == "192.0.2.1"
    script = (
        "import http.client, json\n"
        "c = http.client.HTTPConnection('192.0.2.1', 80, timeout=5)\n"
        "c.request('GET', '/', headers={'Host': 'adult.example'})\n"
        "r = c.getresponse()\n"
        "print(json.dumps([r.status, r.read().decode()]))\n"
    )
    out = netns.run(lab.ns("guest"), [sys.executable, "-c", script], timeout=20).stdout
    status, page = json.loads(out)
    assert status == 403
    assert "adult.example" in page and "kids" in page and "category:adult" in page
    assert "unblock" in page.lower()  # the policy turns unblock requests on


def test_an_address_learned_before_the_rule_is_useless_after_it(
    lab: Lab, box: Controller, tmp_path: Path
) -> None:
    """Runs last in this module: it applies the policy with the kids' social rule."""
    assert dns(lab, "lan", "192.0.2.1", "social.example", src=BOSS) == SOCIAL
    assert tcp(lab, "guest", SOCIAL, 443) == "open"  # before: the tablet can use the address
    box.apply(_policy(tmp_path, with_social_rule=True))
    box.wait_for("web filter updated in place")
    deadline = time.monotonic() + 10
    while tcp(lab, "guest", SOCIAL, 443) != "refused" and time.monotonic() < deadline:
        time.sleep(0.3)
    assert tcp(lab, "guest", SOCIAL, 443) == "refused"  # the DNS block alone would not stop it
    assert tcp(lab, "lan", SOCIAL, 443, src=STAFF) == "open"  # staff are not in the rule


def test_a_device_is_recognised_by_its_mac(lab: Lab, box: Controller) -> None:
    """Runs after the social rule is on: the LAN client takes the kids' tablet's MAC."""
    lan = lab.ns("lan")
    netns.ip(["link", "set", "dev", "eth0", "address", "02:00:00:00:00:70"], ns=lan)
    netns.ip(["neigh", "flush", "dev", "lan0"], ns=lab.ns("router"))
    try:
        deadline = time.monotonic() + 15  # the neighbour table is read every 2 s
        while dns(lab, "lan", "192.0.2.1", "adult.example", src=STAFF) != "192.0.2.1":
            assert time.monotonic() < deadline, "the tablet's MAC did not make it a kid"
            time.sleep(0.5)
        # the firewall matches the MAC too (ether saddr @cg_kids_mac)
        assert tcp(lab, "lan", SOCIAL, 443, src=STAFF) == "refused"
        assert tcp(lab, "lan", OTHER, 443, src=STAFF) == "open"
    finally:
        netns.ip(["link", "set", "dev", "eth0", "address", "02:00:00:00:00:10"], ns=lan)
        netns.ip(["neigh", "flush", "dev", "lan0"], ns=lab.ns("router"))

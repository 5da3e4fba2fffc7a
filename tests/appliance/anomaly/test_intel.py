"""Threat intel feeds (loading, bad lines, matching) and the detector's address and name hits."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.anomaly.detector import Context
from appliance.anomaly.intel import IntelDetector, ThreatIntel
from appliance.anomaly.records import DnsRecord
from appliance.errors import AnomalyError
from tests.appliance.anomaly.traffic import DAY, T0, flow, host, resolve

FEED = """\
# abuse.example feed, 2024-05-01
203.0.113.66
198.51.100.0/24   # a bullet-proof hoster

evil-c2.example
*.badcdn.test.
2001:db8:bad::/48
not an entry
300.1.2.3
localhost
"""


@pytest.fixture
def intel(tmp_path: Path) -> ThreatIntel:
    feed = tmp_path / "feed.txt"
    feed.write_text(FEED)
    return ThreatIntel.load([feed])


def test_load_counts_entries_and_reports_bad_lines_with_their_place(intel: ThreatIntel) -> None:
    assert intel.entries == 5
    assert [(i.line, i.text) for i in intel.invalid] == [
        (8, "not an entry"),
        (9, "300.1.2.3"),
        (10, "localhost"),
    ]
    assert intel.invalid[2].reason == "a single label would match a whole top-level domain"
    assert str(intel.invalid[0]).startswith(f"{intel.invalid[0].source}:8: not a domain name")


def test_a_missing_feed_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(AnomalyError, match=r"missing\.txt.*one CIDR, address or domain per line"):
        ThreatIntel.load([tmp_path / "missing.txt"])


def test_addresses_match_by_network_in_both_families(intel: ThreatIntel) -> None:
    assert intel.match_address("203.0.113.66") == "203.0.113.66/32"
    assert intel.match_address("198.51.100.200") == "198.51.100.0/24"
    assert intel.match_address("198.51.101.1") is None
    assert intel.match_address("2001:db8:bad:1::5") == "2001:db8:bad::/48"
    assert intel.match_address("2001:db8:bae::5") is None
    assert intel.match_address("not-an-address") is None


def test_domains_match_themselves_and_subdomains_only(intel: ThreatIntel) -> None:
    assert intel.match_domain("evil-c2.example") == "evil-c2.example"
    assert intel.match_domain("a.b.evil-c2.example") == "evil-c2.example"
    assert intel.match_domain("x.badcdn.test") == "badcdn.test"
    assert intel.match_domain("notevil-c2.example") is None
    assert intel.match_domain("example") is None


def test_flows_to_listed_addresses_are_high_confidence_hits(intel: ThreatIntel) -> None:
    detector = IntelDetector(Context(), intel=intel)
    for i in range(3):
        detector.add_flow(flow(T0 + i, host(10), "198.51.100.9"))
    detector.add_flow(flow(T0, host(11), "192.0.2.1"))
    (finding,) = detector.evaluate(T0 + 60)
    assert (finding.host, finding.kind, finding.peer) == (host(10), "intel", "198.51.100.9")
    assert finding.score == 0.9
    assert finding.evidence == {"indicator": "198.51.100.0/24", "match": "address", "count": 3}


def test_queries_for_listed_names_and_flows_to_their_addresses_are_hits(
    intel: ThreatIntel,
) -> None:
    detector = IntelDetector(Context(), intel=intel)
    detector.add_dns(resolve(T0, host(12), "beacon.evil-c2.example", "192.0.2.44"))
    detector.add_flow(flow(T0 + 1, host(12), "192.0.2.44"))
    detector.add_dns(
        DnsRecord(T0, host(13), "innocent.test", 1, 0, ("x.badcdn.test", "192.0.2.45"))
    )
    findings = {(f.host, f.evidence["match"]): f for f in detector.evaluate(T0 + 60)}
    assert set(findings) == {(host(12), "domain"), (host(13), "domain")}
    hit = findings[(host(12), "domain")]
    assert hit.peer == "beacon.evil-c2.example"
    assert hit.evidence["count"] == 2  # the query and the flow to the address it returned
    assert hit.score == 0.85


def test_unanswered_inbound_noise_from_listed_hosts_is_not_a_hit(intel: ThreatIntel) -> None:
    detector = IntelDetector(Context(), intel=intel)
    detector.add_flow(flow(T0, "203.0.113.66", host(14), 22, state="unanswered"))
    assert detector.evaluate(T0 + 60) == []
    detector.add_flow(flow(T0, "203.0.113.66", host(14), 22, state="established"))
    assert [f.host for f in detector.evaluate(T0 + 60)] == [host(14)]


def test_hits_age_out_and_no_feed_means_no_work(intel: ThreatIntel) -> None:
    detector = IntelDetector(Context(), intel=intel)
    detector.add_flow(flow(T0, host(15), "203.0.113.66"))
    assert detector.tracked() == 1
    assert detector.evaluate(T0 + 2 * DAY) == []
    assert detector.tracked() == 0
    empty = IntelDetector(Context())
    empty.add_flow(flow(T0, host(15), "203.0.113.66"))
    assert empty.tracked() == 0

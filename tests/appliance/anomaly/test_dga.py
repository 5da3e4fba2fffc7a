"""DGA detection: NXDOMAIN bursts of generated names, and the hard negatives that are not."""

from __future__ import annotations

import random

import pytest

from appliance.anomaly.detector import Context
from appliance.anomaly.dga import DgaDetector
from appliance.anomaly.records import DnsRecord

HOST = "192.168.1.23"
T0 = 1_700_000_000.0
NORMAL = [
    "www.google.com", "mail.google.com", "outlook.office365.com", "www.bbc.co.uk",
    "github.com", "api.github.com", "www.wikipedia.org", "cdn.jsdelivr.net",
    "www.amazon.de", "login.microsoftonline.com", "www.nytimes.com", "slack.com",
    "zoom.us", "www.dropbox.com", "update.mozilla.org", "www.reddit.com",
]  # fmt: skip
ADS = [
    "doubleclick.net", "googlesyndication.com", "adnxs.com", "criteo.com", "taboola.com",
    "outbrain.com", "scorecardresearch.com", "quantserve.com", "moatads.com", "rubiconproject.com",
    "pubmatic.com", "openx.net", "casalemedia.com", "advertising.com", "yieldmo.com",
    "bidswitch.net", "smartadserver.com", "teads.tv", "sharethrough.com", "contextweb.com",
    "adform.net", "mathtag.com", "demdex.net", "everesttech.net", "krxd.net", "bluekai.com",
    "addthis.com", "hotjar.com", "mixpanel.com", "segment.io", "optimizely.com", "newrelic.com",
    "chartbeat.com", "parsely.com", "marketo.net", "hubspot.com", "pardot.com", "tapad.com",
    "liveramp.com", "lotame.com", "zemanta.com", "revcontent.com",
]  # fmt: skip


def _random_names(rng: random.Random, count: int, chars: str, tld: str = "com") -> list[str]:
    return [
        "".join(rng.choice(chars) for _ in range(rng.randint(10, 16))) + "." + tld
        for _ in range(count)
    ]


def _normal_traffic(start: float, minutes: int, host: str = HOST) -> list[DnsRecord]:
    """A person's machine: ~30 resolved queries a minute over a few dozen names."""
    return [
        DnsRecord(start + m * 60 + i * 2, host, NORMAL[(m + i) % len(NORMAL)], 1, 0)
        for m in range(minutes)
        for i in range(30)
    ]


def _feed(detector: DgaDetector, records: list[DnsRecord]) -> None:
    for rec in sorted(records):
        detector.add_dns(rec)


def test_random_letter_dga_burst_is_found_with_samples_and_its_resolved_hit() -> None:
    rng = random.Random(1)
    names = _random_names(rng, 60, "abcdefghijklmnopqrstuvwxyz")
    dga = [DnsRecord(T0 + 300 + i * 5, HOST, n, 1, 3) for i, n in enumerate(names)]
    hit = DnsRecord(T0 + 700, HOST, "qxzvkwjhtpfd.net", 1, 0)
    detector = DgaDetector(Context())
    _feed(detector, [*_normal_traffic(T0, 20), *dga, hit])
    [finding] = detector.evaluate(T0 + 1200)
    assert (finding.host, finding.kind, finding.peer) == (HOST, "dga", "")
    assert finding.score > 0.7
    assert finding.subscores["nxdomain"] == 1.0
    assert finding.subscores["names"] > 0.7
    assert finding.first == T0 + 300
    assert finding.last == T0 + 300 + 59 * 5
    assert finding.evidence["nx_domains"] == 60
    assert set(finding.evidence["samples"]) <= set(names)
    assert len(finding.evidence["samples"]) == 8
    assert finding.evidence["resolved_generated"] == ["qxzvkwjhtpfd.net"]
    assert "60 different domains" in finding.explanation


def test_hex_dga_on_several_tlds_is_found() -> None:
    rng = random.Random(2)
    names = [
        n
        for tld in ("com", "net", "org", "info")
        for n in _random_names(rng, 10, "0123456789abcdef", tld)
    ]
    detector = DgaDetector(Context())
    _feed(detector, [DnsRecord(T0 + i, HOST, n, 1, 3) for i, n in enumerate(names)])
    [finding] = detector.evaluate(T0 + 600)
    assert finding.score > 0.8
    assert finding.evidence["mean_loglik"] < detector.low_likelihood


def test_a_few_generated_names_are_below_the_volume_threshold() -> None:
    rng = random.Random(3)
    names = _random_names(rng, 7, "abcdefghijklmnopqrstuvwxyz")
    detector = DgaDetector(Context(), min_score=0.0)
    _feed(detector, [DnsRecord(T0 + i, HOST, n, 1, 3) for i, n in enumerate(names)])
    assert detector.evaluate(T0 + 60) == []
    _feed(detector, [DnsRecord(T0 + 30, HOST, "zqxjkvbwpy.com", 1, 3)])
    assert len(list(detector.evaluate(T0 + 60))) == 1


def test_dictionary_dga_scores_well_below_a_random_one_on_a_busy_machine() -> None:
    """Real-looking names carry no weight of their own: among a person's ordinary queries
    (NXDOMAIN a minority) a few dozen missing dictionary names stay low..."""
    rng = random.Random(4)
    words = ["water", "beyond", "right", "study", "house", "market", "forest", "simple"]
    dictionary = {rng.choice(words) + rng.choice(words) + ".net" for _ in range(200)}
    randoms = _random_names(rng, len(dictionary), "abcdefghijklmnopqrstuvwxyz", "net")
    scores = []
    for names in (sorted(dictionary), randoms):
        detector = DgaDetector(Context())
        _feed(detector, _normal_traffic(T0, 10))
        _feed(detector, [DnsRecord(T0 + i, HOST, n, 1, 3) for i, n in enumerate(names)])
        found = list(detector.evaluate(T0 + 600))
        scores.append(found[0].score if found else 0.0)
    assert scores[0] < 0.5 <= 0.9 < scores[1]


def test_a_machine_whose_queries_mostly_fail_is_flagged_even_with_real_looking_names() -> None:
    """...but when missing names are most of what a machine asks, that is the DGA's tell."""
    rng = random.Random(5)
    words = ["water", "beyond", "right", "study", "house", "market", "forest", "simple"]
    dictionary = sorted({rng.choice(words) + rng.choice(words) + ".net" for _ in range(200)})
    detector = DgaDetector(Context())
    _feed(detector, [DnsRecord(T0 + i, HOST, n, 1, 3) for i, n in enumerate(dictionary)])
    _feed(detector, [DnsRecord(T0 + i, HOST, NORMAL[i % 4], 1, 0) for i in range(12)])
    (found,) = detector.evaluate(T0 + 600)
    assert found.subscores["names"] < 0.1 and found.subscores["ratio"] > 0.7
    assert found.score >= 0.6


@pytest.mark.parametrize(("distinct", "flagged"), [(80, False), (130, True), (260, True)])
def test_a_flood_of_missing_dictionary_names_is_a_dga_however_real_they_look(
    distinct: int, flagged: bool
) -> None:
    """suppobox-style names read as real words; only their number gives them away."""
    words = [
        f"{a}{b}"
        for a in ("water", "beyond", "right", "study", "house")
        for b in ("market", "forest", "simple", "garden", "window", "summer", "silver", "paper")
    ]
    rng = random.Random(distinct)
    names: set[str] = set()
    while len(names) < distinct:
        names.add(rng.choice(words) + rng.choice(words) + ".net")
    detector = DgaDetector(Context())
    _feed(detector, _normal_traffic(T0, 20))
    _feed(detector, [DnsRecord(T0 + i, HOST, n, 1, 3) for i, n in enumerate(sorted(names))])
    found = list(detector.evaluate(T0 + 900))
    score = found[0].score if found else 0.0
    if flagged:
        assert score >= 0.7 and found[0].subscores["flood"] >= 0.7
    else:
        assert score < 0.5


def test_printer_asking_one_missing_name_all_day_is_not_a_dga() -> None:
    detector = DgaDetector(Context())
    _feed(
        detector,
        [DnsRecord(T0 + i * 10, HOST, "printer-hq.example.com", 1, 3) for i in range(2000)],
    )
    assert detector.evaluate(T0 + 20_000) == []


def test_search_domain_suffix_queries_are_one_registered_domain() -> None:
    """``www.google.com.corp.example`` and friends: many names, one registered domain."""
    detector = DgaDetector(Context())
    records = [
        DnsRecord(T0 + i, HOST, f"{name}.corp.example", 28, 3) for i, name in enumerate(NORMAL * 10)
    ] + [DnsRecord(T0 + 500 + i, HOST, f"wpad{i}.corp.example", 1, 3) for i in range(50)]
    _feed(detector, records)
    assert detector.evaluate(T0 + 900) == []


def test_single_label_names_and_reverse_lookups_are_ignored() -> None:
    """Chrome's random intranet probes are single labels; PTR misses are not DGAs."""
    rng = random.Random(5)
    probes = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(10)) for _ in range(40)
    ]
    ptrs = [f"{i}.{i}.168.192.in-addr.arpa" for i in range(40)]
    detector = DgaDetector(Context())
    _feed(detector, [DnsRecord(T0 + i, HOST, n, 1, 3) for i, n in enumerate(probes + ptrs)])
    assert detector.evaluate(T0 + 600) == []
    assert detector.tracked() == 0


def test_typos_are_few_and_read_like_real_names() -> None:
    typos = ["gooogle.com", "faceboook.com", "amazom.com", "wikipedai.org", "githbu.com"]
    detector = DgaDetector(Context())
    _feed(
        detector,
        [
            *_normal_traffic(T0, 10),
            *(DnsRecord(T0 + i, HOST, t, 1, 3) for i, t in enumerate(typos)),
        ],
    )
    assert detector.evaluate(T0 + 600) == []


def test_blocked_ad_domains_answered_nxdomain_do_not_alert() -> None:
    """A filter answering blocked trackers with NXDOMAIN: many distinct NX names, real ones."""
    records = _normal_traffic(T0, 30)
    records += [DnsRecord(T0 + i * 40, HOST, f"ads.{d}", 1, 3) for i, d in enumerate(ADS)]
    detector = DgaDetector(Context())
    _feed(detector, records)
    assert detector.evaluate(T0 + 1800) == []
    # the same names from a generator would have alerted: the names factor is what decides
    rng = random.Random(6)
    fake = _random_names(rng, len(ADS), "abcdefghijklmnopqrstuvwxyz")
    _feed(detector, [DnsRecord(T0 + 1000 + i, HOST, f"ads.{d}", 1, 3) for i, d in enumerate(fake)])
    assert len(list(detector.evaluate(T0 + 1800))) == 1


def test_state_ages_out_after_the_window() -> None:
    rng = random.Random(7)
    names = _random_names(rng, 30, "abcdefghijklmnopqrstuvwxyz")
    detector = DgaDetector(Context(), window=600.0)
    _feed(
        detector,
        [*_normal_traffic(T0, 5), *(DnsRecord(T0 + i, HOST, n, 1, 3) for i, n in enumerate(names))],
    )
    assert len(list(detector.evaluate(T0 + 300))) == 1
    assert detector.tracked() > 0
    assert detector.evaluate(T0 + 300 + 601) == []
    assert detector.tracked() == 0


def test_per_client_caps_bound_the_state_and_the_finding_survives() -> None:
    rng = random.Random(8)
    names = _random_names(rng, 3000, "abcdefghijklmnopqrstuvwxyz")
    detector = DgaDetector(Context(), max_nx_domains=200, max_ok_domains=100)
    _feed(detector, [DnsRecord(T0 + i * 0.1, HOST, n, 1, 3) for i, n in enumerate(names)])
    _feed(
        detector,
        [DnsRecord(T0 + i * 0.1, HOST, f"host{i}.example{i}.com", 1, 0) for i in range(1000)],
    )
    assert detector.tracked() <= 300
    [finding] = detector.evaluate(T0 + 400)
    assert finding.evidence["evicted"] > 0
    assert finding.score > 0.7
    assert set(finding.evidence["samples"]) <= set(names[-200:])  # the newest ones are kept


def test_clients_are_judged_separately_and_infrastructure_is_skipped() -> None:
    rng = random.Random(9)
    names = _random_names(rng, 40, "abcdefghijklmnopqrstuvwxyz")
    resolver = "192.168.1.1"
    detector = DgaDetector(Context(infrastructure=frozenset({resolver})))
    records = [DnsRecord(T0 + i, HOST, n, 1, 3) for i, n in enumerate(names)]
    records += [DnsRecord(T0 + i, resolver, n, 1, 3) for i, n in enumerate(names)]
    records += _normal_traffic(T0, 5, host="192.168.1.50")
    _feed(detector, records)
    assert [f.host for f in detector.evaluate(T0 + 100)] == [HOST]


@pytest.mark.parametrize("ratio_traffic", [0, 60])
def test_the_ratio_subscore_follows_the_share_of_nxdomain_queries(ratio_traffic: int) -> None:
    rng = random.Random(10)
    names = _random_names(rng, 40, "abcdefghijklmnopqrstuvwxyz")
    detector = DgaDetector(Context())
    _feed(
        detector,
        [
            *_normal_traffic(T0, ratio_traffic),
            *(DnsRecord(T0 + i, HOST, n, 1, 3) for i, n in enumerate(names)),
        ],
    )
    [finding] = detector.evaluate(T0 + 3000)
    expected = 40 / (40 + 30 * ratio_traffic)
    assert finding.subscores["ratio"] == pytest.approx(expected, abs=1e-3)
    assert finding.evidence["queries"] == 40 + 30 * ratio_traffic

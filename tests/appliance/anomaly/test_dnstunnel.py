"""DNS tunnel detection: iodine/dnscat2-like traffic, and the look-alikes that are not."""

from __future__ import annotations

import random

import pytest

from appliance.anomaly.detector import Context
from appliance.anomaly.dnstunnel import DnsTunnelDetector, entropy_bits
from appliance.anomaly.records import DnsRecord

HOST = "192.168.1.23"
T0 = 1_700_000_000.0
A, CNAME, NULL, MX, TXT, AAAA = 1, 5, 10, 15, 16, 28
BASE32 = "abcdefghijklmnopqrstuvwxyz234567"
HEX = "0123456789abcdef"


def _label(rng: random.Random, chars: str, low: int, high: int) -> str:
    return "".join(rng.choice(chars) for _ in range(rng.randint(low, high)))


def _feed(detector: DnsTunnelDetector, records: list[DnsRecord]) -> None:
    for rec in sorted(records):
        detector.add_dns(rec)


def _iodine(
    rng: random.Random, count: int, qtype: int = NULL, start: float = T0
) -> list[DnsRecord]:
    """``count`` queries over an hour: 30-60 char base32 labels under t.tunnel-example.com."""
    step = 3600.0 / count
    return [
        DnsRecord(
            start + i * step, HOST, f"{_label(rng, BASE32, 30, 60)}.t.tunnel-example.com", qtype, 0
        )
        for i in range(count)
    ]


def test_iodine_like_null_tunnel_scores_high_on_every_subscore() -> None:
    detector = DnsTunnelDetector(Context())
    _feed(detector, _iodine(random.Random(1), 1200))
    [finding] = detector.evaluate(T0 + 3600)
    assert (finding.host, finding.kind, finding.peer) == (HOST, "dns-tunnel", "tunnel-example.com")
    assert finding.score > 0.9
    assert finding.subscores["unique"] == 1.0
    assert finding.subscores["length"] == 1.0
    assert finding.subscores["entropy"] == 1.0
    assert finding.subscores["qtype"] == 1.0
    assert finding.subscores["rate"] == 1.0
    assert finding.evidence["unique_names"] == 512 + (1200 - 512)  # capped names + overflow
    assert finding.evidence["names_capped"] is True
    assert 30 <= finding.evidence["mean_label_len"] <= 60
    assert finding.evidence["samples"][0].endswith(".t")
    assert finding.first == T0


def test_dnscat2_like_hex_tunnel_over_txt_cname_mx_is_found() -> None:
    rng = random.Random(2)
    qtypes = [TXT, CNAME, MX]
    records = [
        DnsRecord(
            T0 + i * 4.0, HOST,
            f"{_label(rng, HEX, 30, 30)}.{_label(rng, HEX, 20, 30)}.c2.example.org",
            qtypes[i % 3], 0,
        )
        for i in range(600)
    ]  # fmt: skip
    detector = DnsTunnelDetector(Context())
    _feed(detector, records)
    [finding] = detector.evaluate(T0 + 2400)
    assert finding.peer == "example.org"
    assert finding.score > 0.85
    assert finding.evidence["odd_qtype_queries"] == 600


def test_a_record_tunnel_is_found_but_below_a_txt_one() -> None:
    scores = []
    for qtype in (A, TXT):
        detector = DnsTunnelDetector(Context())
        _feed(detector, _iodine(random.Random(3), 600, qtype))
        [finding] = detector.evaluate(T0 + 3600)
        scores.append(finding.score)
    assert 0.5 < scores[0] < scores[1]


def test_cdn_hashed_host_names_queried_a_few_times_are_not_tunnels() -> None:
    rng = random.Random(4)
    records = []
    for i in range(25):
        name = f"d{_label(rng, HEX + 'ghijklmnopqrstuvwxyz', 12, 13)}.cloudfront.net"
        records += [
            DnsRecord(T0 + i * 60 + k, HOST, name, q, 0) for k in range(3) for q in (A, AAAA)
        ]
        edge = f"e{rng.randint(1000, 99999)}.{_label(rng, 'abcdefgh', 1, 1)}.akamaiedge.net"
        records += [DnsRecord(T0 + i * 60 + 5, HOST, edge, A, 0)]
        records += [DnsRecord(T0 + i * 60 + 6, HOST, f"www.site{i}.com.edgekey.net", CNAME, 0)]
    detector = DnsTunnelDetector(Context())
    _feed(detector, records)
    assert detector.evaluate(T0 + 1800) == []


def test_reputation_lookups_many_unique_short_labels_are_not_tunnels() -> None:
    """Anti-virus hash lookups and DNSBL queries: hundreds of unique names, short labels."""
    rng = random.Random(5)
    av = [
        DnsRecord(
            T0 + i * 5,
            HOST,
            f"{_label(rng, HEX, 8, 8)}.{_label(rng, HEX, 2, 2)}.avqs.example-av.com",
            A,
            0,
        )
        for i in range(600)
    ]
    dnsbl = [
        DnsRecord(
            T0 + i * 5, HOST,
            ".".join(str(rng.randint(1, 254)) for _ in range(4)) + ".zen.spamhaus.org",
            TXT if i % 2 else A, 3,
        )
        for i in range(600)
    ]  # fmt: skip
    detector = DnsTunnelDetector(Context())
    _feed(detector, av + dnsbl)
    assert detector.evaluate(T0 + 3000) == []
    # the same volume with tunnel-shaped names would have alerted
    lax = DnsTunnelDetector(Context(), min_score=0.0)
    _feed(lax, av + dnsbl)
    scores = {f.peer: f for f in lax.evaluate(T0 + 3000)}
    assert scores["example-av.com"].subscores["unique"] == 1.0
    assert scores["example-av.com"].subscores["length"] == 0.0
    assert scores["spamhaus.org"].subscores["length"] == 0.0
    assert scores["spamhaus.org"].subscores["entropy"] < 0.2
    assert max(f.score for f in scores.values()) < detector.min_score


def test_browser_prefetch_spreads_over_many_registered_domains() -> None:
    records = [
        DnsRecord(T0 + i, HOST, f"{sub}.news-site-{i}.com", A, 0)
        for i in range(400)
        for sub in ("www", "static", "img", "cdn")
    ]
    detector = DnsTunnelDetector(Context())
    _feed(detector, records)
    assert detector.evaluate(T0 + 900) == []


def test_names_older_than_the_window_stop_counting_and_state_ages_out() -> None:
    detector = DnsTunnelDetector(Context(), window=600.0)
    _feed(detector, _iodine(random.Random(6), 100, TXT))  # an hour: 36 s apart
    # at T0+3600 only the last 600 s are in the window: 16 or 17 names, under min_unique
    assert detector.evaluate(T0 + 3600) == []
    assert 0 < detector.tracked() < 30
    assert detector.evaluate(T0 + 3600 + 601) == []
    assert detector.tracked() == 0


def test_domains_per_client_are_capped() -> None:
    detector = DnsTunnelDetector(Context(), max_domains=100)
    records = [DnsRecord(T0 + i, HOST, f"www.site{i}.com", A, 0) for i in range(1000)]
    _feed(detector, records)
    assert detector.tracked() <= 2 * 100
    tunnel = DnsTunnelDetector(Context(), max_domains=100)
    _feed(tunnel, [*records, *_iodine(random.Random(7), 400, TXT, start=T0 + 500)])
    assert [f.peer for f in tunnel.evaluate(T0 + 4000)] == ["tunnel-example.com"]


def test_names_per_client_are_capped_and_a_running_tunnel_survives_eviction() -> None:
    detector = DnsTunnelDetector(Context(), max_client_names=1000)
    rng = random.Random(9)
    tunnel = _iodine(rng, 900, TXT)
    busy = [
        DnsRecord(T0 + i * 0.5, HOST, f"host{k}.site{i}.com", A, 0)
        for i in range(3000)
        for k in range(4)
    ]
    _feed(detector, busy + tunnel)
    zones = detector._clients[HOST]
    kept = sum(len(zone.names) for zone in zones.values())
    assert kept <= 1000
    assert detector._names[HOST] == kept
    [finding] = detector.evaluate(T0 + 3600)
    assert finding.peer == "tunnel-example.com"
    assert detector._names[HOST] == sum(len(zone.names) for zone in zones.values())


def test_infrastructure_clients_and_local_zones_are_skipped() -> None:
    resolver = "192.168.1.1"
    rng = random.Random(8)
    records = [
        DnsRecord(T0 + i, resolver, f"{_label(rng, BASE32, 40, 40)}.t.tunnel-example.com", TXT, 0)
        for i in range(200)
    ]
    records += [
        DnsRecord(T0 + i, HOST, f"{_label(rng, BASE32, 40, 40)}.printers.local", TXT, 0)
        for i in range(200)
    ]
    detector = DnsTunnelDetector(Context(infrastructure=frozenset({resolver})))
    _feed(detector, records)
    assert detector.evaluate(T0 + 300) == []
    assert detector.tracked() == 0


@pytest.mark.parametrize(
    ("text", "bits"),
    [("", 0.0), ("aaaa", 0.0), ("abab", 1.0), ("abcd", 2.0), ("0123456789abcdef", 4.0)],
)
def test_entropy_bits(text: str, bits: float) -> None:
    assert entropy_bits(text) == pytest.approx(bits)

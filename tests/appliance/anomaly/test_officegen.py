"""The labelled office generator (bench.anomaly.officegen) and the evaluation harness.

The generator is test infrastructure for issue #7: if its labels do not describe the traffic
it injected, every recall and precision figure built on it is wrong. So these tests re-derive
each incident from the records and compare with the label, check that the attack-free office
is exactly the attacked one minus the attack traffic, and that parameters cover the ranges
the issue names. The harness is checked with a stand-in scorer whose alerts are known.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from functools import cache
from typing import Any

import pytest

from appliance.anomaly.detector import Networks
from appliance.anomaly.records import Alert, DnsRecord, FlowRecord
from bench.anomaly.evaluate import (
    Emission,
    Episode,
    RunResult,
    average_precision,
    collect,
    false_alert_metrics,
    markdown,
    match,
    percentile,
    run_office,
    summarise,
    type_metrics,
)
from bench.anomaly.officegen import KINDS, MONDAY, Incident, Office, generate
from bench.anomaly.officegen_world import local_hour, weekday

HOUR = 3600.0
Record = FlowRecord | DnsRecord


@cache
def small_office(seed: int = 7, attacks: bool = True) -> tuple[Office, tuple[Record, ...]]:
    """A 10-host office over 1.5 days (about 50,000 records), generated once per module."""
    office = generate(seed, hosts=10, days=1.5, attacks=attacks, per_type=3)
    return office, tuple(office.records())


def report_time(record: Record) -> float:
    return record.end if isinstance(record, FlowRecord) else record.ts


# --- determinism and shape -------------------------------------------------------------------


def test_same_seed_same_office_and_records_other_seed_differs() -> None:
    first = generate(11, hosts=10, days=0.5)
    again = generate(11, hosts=10, days=0.5)
    other = generate(12, hosts=10, days=0.5)
    assert first.incidents == again.incidents
    assert first.feed_lines == again.feed_lines
    head = list(zip(range(5000), first.records(), strict=False))
    assert head == list(zip(range(5000), again.records(), strict=False))
    assert list(first.records()) == list(first.records())  # records() restarts identically
    assert first.incidents != other.incidents
    assert head != list(zip(range(5000), other.records(), strict=False))


def test_records_stream_in_report_time_order_within_the_run() -> None:
    office, records = small_office()
    times = [report_time(r) for r in records]
    assert times == sorted(times)
    assert office.start <= times[0] and times[-1] <= office.end
    assert iter(office.records()) is not None
    stream = office.records()
    assert iter(stream) is stream  # a generator, not a list held in memory


def test_addresses_lan_inside_the_office_cidr_and_internet_peers_public() -> None:
    office, records = small_office()
    lan = Networks(office.lan_cidrs)
    default_lan = Networks()  # the private-range default also covers the office
    assert office.start == MONDAY and weekday(MONDAY, 0) == 0
    assert len(office.hosts) == 10
    for host in office.hosts:
        assert lan.is_lan(host.address) and default_lan.is_lan(host.address)
    peers = {r.dst for r in records if isinstance(r, FlowRecord) and not lan.is_lan(r.dst)}
    assert len(peers) > 300
    for peer in peers:
        address = ipaddress.ip_address(peer)
        assert address.is_global, peer
        assert not default_lan.is_lan(peer), peer
    sources = {r.src for r in records if isinstance(r, FlowRecord)}
    assert sources <= {h.address for h in office.hosts}


def test_attack_free_office_is_the_same_office_without_the_attack_records() -> None:
    office, attacked = small_office()
    clean_office, clean = small_office(attacks=False)
    assert clean_office.incidents == []
    assert clean_office.feed_lines == office.feed_lines
    assert not Counter(clean) - Counter(attacked)  # every benign record is in both
    extra = Counter(attacked) - Counter(clean)
    assert sum(extra.values()) > 500
    for record in extra:
        assert any(_belongs(inc, record) for inc in office.incidents), record
    # and benign traffic never touches an attack's peer (address, name or domain)
    addresses = {i.params["address"] for i in office.incidents if "address" in i.params}
    addresses |= {i.peer for i in office.incidents if i.kind == "scan" and "/" not in i.peer}
    names = {
        i.params[k]
        for i in office.incidents
        for k in ("name", "domain", "qname")
        if i.params.get(k)
    }
    names |= {i.peer for i in office.incidents if i.kind == "dga"}
    for record in clean:
        if isinstance(record, FlowRecord):
            assert record.dst not in addresses, record
        else:
            assert not any(record.qname.endswith(n) for n in names), record


def _belongs(inc: Incident, r: Record) -> bool:
    p = inc.params
    if isinstance(r, DnsRecord):
        if r.client != inc.host or not inc.start - 1 <= r.ts <= inc.end + 1:
            return False
        if inc.kind == "dns-tunnel":
            return r.qname.endswith(f".{p['domain']}")
        if inc.kind == "dga":  # generated names are one label under a TLD
            return (r.rcode == 3 and r.qname.count(".") == 1) or r.qname == inc.peer
        return r.qname in (p.get("name"), p.get("qname")) and bool(r.qname)
    if r.src != inc.host or not inc.start - 1 <= r.start <= inc.end + 600:
        return False
    if inc.kind in ("beacon", "exfil", "intel", "dga"):
        return bool(r.dst == p["address"])
    if inc.kind == "scan":
        if p["style"] == "vertical":
            return r.dst == inc.peer
        return r.dst.rsplit(".", 1)[0] == inc.peer.rsplit(".", 1)[0] and bool(r.dport == p["port"])
    if inc.kind == "lateral":
        return r.dst.startswith("192.168.10.") and bool(r.dport in p["ports"])
    return False


# --- labels match the injected traffic --------------------------------------------------------


def _by_incident(office: Office, records: Iterable[Record]) -> dict[int, list[Record]]:
    clean = set(small_office(office.seed, attacks=False)[1])
    found: dict[int, list[Record]] = defaultdict(list)
    for record in records:
        if record in clean:
            continue
        owners = [i for i, inc in enumerate(office.incidents) if _belongs(inc, record)]
        assert len(owners) == 1, (record, owners)
        found[owners[0]].append(record)
    return found


def test_each_incident_label_describes_its_traffic() -> None:
    office, records = small_office()
    found = _by_incident(office, records)
    assert Counter(i.kind for i in office.incidents) == dict.fromkeys(KINDS, 3)
    for index, inc in enumerate(office.incidents):
        mine = found[index]
        assert mine, inc
        times = [r.start if isinstance(r, FlowRecord) else r.ts for r in mine]
        assert inc.start - 1 <= min(times) and max(times) <= inc.end + 600, inc
        CHECKS[inc.kind](
            inc,
            [r for r in mine if isinstance(r, FlowRecord)],
            [r for r in mine if isinstance(r, DnsRecord)],
        )


def _beacon(inc: Incident, flows: list[FlowRecord], queries: list[DnsRecord]) -> None:
    p = inc.params
    expected = (inc.end - inc.start) / p["interval"]
    assert 0.6 * expected - 2 <= len(flows) <= 1.6 * expected + 2, (len(flows), expected)
    assert {f.dport for f in flows} == {p["port"]}
    starts = sorted(f.start for f in flows)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    spread = max(gaps) / min(gaps) if gaps else 1.0
    if p["jitter"] < 0.05:  # near-periodic check-ins
        assert spread < 1.25, spread
    if p["via"] == "name":
        assert len(queries) == len(flows)
        assert {q.answers for q in queries} == {(p["address"],)}
    else:
        assert not queries


def _scan(inc: Incident, flows: list[FlowRecord], queries: list[DnsRecord]) -> None:
    p = inc.params
    if p["style"] == "vertical":
        assert len({f.dport for f in flows}) == p["count"]
        assert {f.dst for f in flows} == {inc.peer}
    else:
        assert len({f.dst for f in flows}) == p["count"]
        assert {f.dport for f in flows} == {p["port"]}
    failed = sum(f.state in ("unanswered", "rejected") for f in flows)
    assert failed >= 0.6 * len(flows)
    span = max(f.start for f in flows) - min(f.start for f in flows)
    if p["speed"] == "fast":
        assert span <= 600
    else:
        assert span >= 0.8 * 2 * HOUR


def _lateral(inc: Incident, flows: list[FlowRecord], queries: list[DnsRecord]) -> None:
    p = inc.params
    assert len({f.dst for f in flows}) == p["targets"]
    assert {f.dport for f in flows} == set(p["ports"])
    assert len(flows) == p["targets"] * len(p["ports"])
    assert any(f.state == "established" for f in flows)


def _tunnel(inc: Incident, flows: list[FlowRecord], queries: list[DnsRecord]) -> None:
    p = inc.params
    expected = p["rate_per_hour"] * p["duration"] / HOUR
    assert abs(len(queries) - expected) <= 4 * math.sqrt(expected) + 2, (len(queries), expected)
    assert not flows
    for q in queries:
        payload = q.qname.removesuffix("." + p["domain"]).removesuffix(".t").replace(".", "")
        assert 30 <= len(payload) <= 60, q.qname
    heavy = sum(q.qtype in (10, 16) for q in queries)
    assert heavy >= 0.25 * len(queries)


def _dga(inc: Incident, flows: list[FlowRecord], queries: list[DnsRecord]) -> None:
    p = inc.params
    failed = [q for q in queries if q.rcode == 3]
    resolved = [q for q in queries if q.rcode == 0]
    assert len(failed) == p["count"] - 1
    assert [q.qname for q in resolved] == [inc.peer]
    assert resolved[0].answers == (p["address"],)
    assert resolved[0].ts == max(q.ts for q in queries)  # the last one resolves
    assert 1 <= len(flows) <= 5 and min(f.start for f in flows) > resolved[0].ts


def _exfil(inc: Incident, flows: list[FlowRecord], queries: list[DnsRecord]) -> None:
    p = inc.params
    sent = sum(f.bytes_out for f in flows)
    assert p["bytes"] * 0.99 <= sent <= p["bytes"], (sent, p["bytes"])
    assert sum(f.bytes_in for f in flows) < sent / 20
    connections = {(f.start, f.sport) for f in flows}
    assert len(connections) == (p["flows"] if p["mode"] == "spread" else 1)
    if p["mode"] == "long-lived":
        assert sum(f.state == "open" for f in flows) >= 10


def _intel(inc: Incident, flows: list[FlowRecord], queries: list[DnsRecord]) -> None:
    p = inc.params
    assert len({(f.start, f.sport) for f in flows}) == p["flows"]
    if p["mode"] == "domain":
        assert [q.qname for q in queries] == [p["qname"]]
        assert p["qname"] == p["entry"] or p["qname"].endswith("." + p["entry"])
    else:
        assert ipaddress.ip_address(p["address"]) in ipaddress.ip_network(p["entry"])


CHECKS = {
    "beacon": _beacon,
    "scan": _scan,
    "lateral": _lateral,
    "dns-tunnel": _tunnel,
    "dga": _dga,
    "exfil": _exfil,
    "intel": _intel,
}


def test_feed_hits_are_listed_and_decoys_never_contacted() -> None:
    office, records = small_office()
    feed = [line for line in office.feed_lines if not line.startswith("#")]
    entries = {i.params["entry"] for i in office.incidents if i.kind == "intel"}
    assert entries <= set(feed)
    decoys = set(feed) - entries
    assert len(decoys) >= 30
    networks = [ipaddress.ip_network(d) for d in decoys if d[0].isdigit()]
    domains = {d for d in decoys if not d[0].isdigit()}
    for r in records:
        if isinstance(r, FlowRecord):
            address = ipaddress.ip_address(r.dst)
            assert not any(address in n for n in networks), r
        else:
            assert not any(r.qname == d or r.qname.endswith("." + d) for d in domains), r


# --- attack parameters span the ranges -------------------------------------------------


def _planned(seeds: Iterable[int]) -> list[Incident]:
    return [i for s in seeds for i in generate(s, hosts=20, days=3).incidents]


def test_attack_parameters_span_the_ranges() -> None:
    incidents = _planned([1, 2])

    def values(kind: str, key: str) -> list[Any]:
        return [i.params[key] for i in incidents if i.kind == kind]

    def spans(kind: str, key: str, low: float, high: float, near: float, log: bool = False) -> None:
        """All values inside [low, high]; the extremes within ``near`` of its ends."""
        got = values(kind, key)
        assert low <= min(got) and max(got) <= high, (kind, key, min(got), max(got))
        scale = math.log if log else float
        width = scale(high) - scale(low)
        assert scale(min(got)) <= scale(low) + near * width, (kind, key, min(got))
        assert scale(max(got)) >= scale(high) - near * width, (kind, key, max(got))

    assert min(values("beacon", "interval")) < 30 and max(values("beacon", "interval")) > 1500
    spans("beacon", "interval", 10, 3600, 0.15, log=True)
    spans("beacon", "jitter", 0.0, 0.8, 0.15)
    assert {"ip", "name"} <= set(values("beacon", "via"))
    assert max(values("beacon", "duration")) >= 24 * HOUR
    assert min(values("beacon", "duration")) >= 2.9 * HOUR
    scans = [i.params for i in incidents if i.kind == "scan"]
    assert {(p["style"], p["speed"]) for p in scans} == {
        (a, b) for a in ("vertical", "horizontal") for b in ("fast", "slow")
    }
    vertical = [p["count"] for p in scans if p["style"] == "vertical"]
    horizontal = [p["count"] for p in scans if p["style"] == "horizontal"]
    assert 100 <= min(vertical) < 400 and 700 < max(vertical) <= 1000
    assert 50 <= min(horizontal) < 120 and 190 < max(horizontal) <= 254
    spans("dns-tunnel", "rate_per_hour", 150, 3000, 0.15, log=True)
    spans("dns-tunnel", "duration", 600, 6 * HOUR, 0.15, log=True)
    assert set(values("dns-tunnel", "style")) == {"iodine", "dnscat2"}
    spans("dga", "count", 50, 500, 0.2)
    assert set(values("dga", "style")) == {"random", "dictionary"}
    spans("exfil", "bytes", 25e6, 1e9, 0.15, log=True)
    assert set(values("exfil", "mode")) == {"single", "spread", "long-lived"}
    assert set(values("intel", "mode")) == {"address", "cidr", "domain"}
    spans("lateral", "targets", 10, 60, 0.2)


def test_incidents_fall_on_nights_too_and_never_before_the_warmup() -> None:
    for seed in (1, 2, 3):
        office = generate(seed, hosts=20, days=3)
        assert all(i.start >= office.start + 12 * HOUR for i in office.incidents)
        assert all(i.end <= office.end for i in office.incidents)
        per_kind = Counter(i.kind for i in office.incidents)
        assert per_kind == dict.fromkeys(KINDS, 6)
    nights = [
        i
        for s in (1, 2, 3)
        for i in generate(s, hosts=20, days=3).incidents
        if not 8 <= local_hour(i.start, 3600) < 18
    ]
    assert len(nights) >= 10


def test_same_kind_incidents_on_one_host_do_not_overlap() -> None:
    for seed in (1, 2, 3):
        _no_overlap(generate(seed, hosts=20, days=3).incidents)


def _no_overlap(incidents: list[Incident]) -> None:
    for a in incidents:
        for b in incidents:
            if a is not b and a.host == b.host and a.kind == b.kind:
                assert a.end + HOUR < b.start or b.end + HOUR < a.start


# --- benign behaviour --------------------------------------------------------------------------


def test_benign_office_has_shared_popular_peers_and_office_hours() -> None:
    office, records = small_office(attacks=False)
    lan = Networks(office.lan_cidrs)
    hosts_per_peer: dict[str, set[str]] = defaultdict(set)
    for r in records:
        if isinstance(r, FlowRecord) and not lan.is_lan(r.dst):
            hosts_per_peer[r.dst].add(r.src)
    users = [h for h in office.hosts if h.has_user]
    # the monitoring agent: one peer every managed host talks to
    agent = office.scene.world.monitoring.addresses[0]
    managed = {h.address for h in office.hosts if h.role not in ("printer", "camera")}
    assert hosts_per_peer[agent] == managed
    flows_per_peer = Counter(
        r.dst for r in records if isinstance(r, FlowRecord) and not lan.is_lan(r.dst)
    )
    top = [peer for peer, _ in flows_per_peer.most_common(30)]
    assert sum(len(hosts_per_peer[p]) >= len(users) // 2 for p in top) >= 20
    assert sum(len(h) == 1 for h in hosts_per_peer.values()) > 50  # a long tail too
    # browsing happens when people are in
    web = [
        r
        for r in records
        if isinstance(r, FlowRecord)
        and r.dport == 443
        and r.src in {u.address for u in users}
        and r.dst not in (agent,)
    ]
    in_hours = sum(7 <= local_hour(r.start, office.utc_offset) < 22 for r in web)
    assert in_hours >= 0.97 * len(web)


def test_benign_office_includes_the_hard_cases() -> None:
    office, records = small_office(attacks=False)
    world = office.scene.world
    nas = next(h.address for h in office.hosts if h.role == "fileserver")
    backup = [
        r for r in records if isinstance(r, FlowRecord) and r.dst == world.backup.addresses[0]
    ]
    assert {r.src for r in backup} == {nas}
    assert sum(r.bytes_out for r in backup) > 0.9e9
    nx = Counter(r.qname for r in records if isinstance(r, DnsRecord) and r.rcode == 3)
    assert nx["printvendor-discovery.office.lan"] >= 250  # every 5 min for 1.5 days
    reputation = [
        r for r in records if isinstance(r, DnsRecord) and r.qname.endswith(world.reputation_zone)
    ]
    assert len({r.qname for r in reputation}) >= 0.95 * len(reputation) > 100
    smb = {r.src for r in records if isinstance(r, FlowRecord) and r.dst == nas and r.dport == 445}
    assert smb >= {h.address for h in office.hosts if h.role == "workstation"}
    ntp = {r.src for r in records if isinstance(r, FlowRecord) and r.dport == 123}
    assert ntp >= {h.address for h in office.hosts if h.always_on}


def test_laptops_come_and_go() -> None:
    office, records = small_office(attacks=False)
    for laptop in (h for h in office.hosts if h.role == "laptop"):
        seen = [r.start for r in records if isinstance(r, FlowRecord) and r.src == laptop.address]
        assert bool(seen) == bool(laptop.presence)
        assert all(any(a <= t <= b + 1 for a, b in laptop.presence) for t in seen)


def test_too_small_an_office_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 6 hosts"):
        generate(1, hosts=5)


# --- the harness, with a stand-in scorer -------------------------------------------------------


class OracleScorer:
    """Alerts on each incident one evaluation after it starts, except those it is told to miss.

    ``decoys`` adds false alerts; exfil incidents are reported as ``long-conn`` to exercise
    the kind compatibility.
    """

    def __init__(self, office: Office, miss: frozenset[int] = frozenset(), decoys: int = 0) -> None:
        self.office, self.miss, self.decoys = office, miss, decoys
        self.consumed = 0

    def run(self, records: Iterable[Record], every: float = 300.0) -> Iterator[tuple[float, Alert]]:
        pending = [(i, inc) for i, inc in enumerate(self.office.incidents) if i not in self.miss]
        due = self.office.start + every
        decoys = self.decoys
        for record in records:
            self.consumed += 1
            now = report_time(record)
            if now < due:
                continue
            due = (now // every + 1) * every
            for i, inc in [p for p in pending if p[1].start <= now - every]:
                pending.remove((i, inc))
                kind = "long-conn" if inc.kind == "exfil" else inc.kind
                yield now, Alert(inc.host, kind, inc.peer, 90, "high", inc.start, now, "")
                yield (
                    now + every,
                    Alert(inc.host, kind, inc.peer, 95, "critical", inc.start, now + every, ""),
                )
            if decoys and now > self.office.start + 2 * HOUR:
                decoys -= 1
                yield (
                    now,
                    Alert("192.168.10.250", "beacon", f"decoy{decoys}", 40, "low", now, now, ""),
                )


def test_harness_with_a_perfect_stand_in_scores_everything_one() -> None:
    office = generate(3, hosts=10, days=1, per_type=2)
    scorer = OracleScorer(office)
    run = run_office(office, scorer)
    assert run.records == scorer.consumed > 10_000
    assert len(run.episodes) == len(office.incidents)  # re-emissions are one alert each
    summary = summarise([run], [], "medium")
    for row in summary["types"]:
        assert row["incidents"] == 2
        assert row["recall"] == row["recall_notify"] == row["precision"] == row["pr_auc"] == 1.0
        assert 0 < row["ttd_median"] <= 2 * 300 + 300
    table = markdown(summary, "Oracle", 10, 1)
    rows = {
        line.split(" | ")[0][2:]: line.split(" | ")
        for line in table.splitlines()
        if line.startswith("| ") and line.split(" | ")[0][2:] in KINDS
    }
    assert set(rows) == set(KINDS)
    assert all(row[2:4] == ["1.00 (2/2)", "1.00 (2/2)"] for row in rows.values())


def test_harness_counts_misses_and_false_alerts() -> None:
    office = generate(3, hosts=10, days=1, per_type=2)
    first_beacon = min(i for i, inc in enumerate(office.incidents) if inc.kind == "beacon")
    run = run_office(office, OracleScorer(office, miss=frozenset({first_beacon}), decoys=3))
    beacon = type_metrics([run], "beacon", notify=2)
    assert beacon["incidents"] == 2 and beacon["detected"] == 1
    assert beacon["recall"] == 0.5
    assert beacon["alerts"] == 4 and beacon["matched"] == 1
    assert beacon["precision"] == 0.25
    assert beacon["precision_notify"] == 1.0  # the decoys are only "low"
    # the matched alert (score 95) ranks first, the missed incident is never retrieved
    assert beacon["pr_auc"] == pytest.approx(0.5)
    assert [m["kind"] for m in beacon["missed"]] == ["beacon"]
    clean = false_alert_metrics(run, notify=2)
    assert clean["host_days"] == 10
    assert clean["alerts_notify"] == len(office.incidents) - 1


def _alert(host: str, kind: str, first: float, last: float, score: int = 80) -> Alert:
    return Alert(host, kind, "peer", score, "high" if score >= 70 else "low", first, last, "")


def test_matching_respects_kind_host_and_the_grace_hour() -> None:
    incident = Incident("exfil", "h1", "p", 1000.0, 2000.0)
    lateral = Incident("lateral", "h1", "", 1000.0, 2000.0)
    episodes = collect(
        [
            (2100.0, _alert("h1", "long-conn", 1500, 2100)),  # compatible kind
            (2600.0, _alert("h1", "scan", 1000, 2600)),  # scan never matches lateral
            (9000.0, _alert("h2", "exfil", 1000, 2000)),  # other host
        ]
    )
    outcomes = match([incident, lateral], episodes, notify=2)
    assert outcomes[0].detected_at == 2100.0 and outcomes[1].detected_at is None
    assert [e.matched for e in episodes] == [True, False, False]
    late = collect([(7000.0, _alert("h1", "exfil", 2000 + HOUR + 1, 7000))])
    assert match([incident], late, notify=2)[0].detected_at is None
    just = collect([(5700.0, _alert("h1", "exfil", 2000 + HOUR, 5700, score=40))])
    outcome = match([incident], just, notify=2)[0]
    assert outcome.detected_at == 5700.0 and outcome.notified_at is None


def test_collect_merges_re_emissions_and_splits_a_reopened_alert() -> None:
    episodes = collect(
        [
            (300.0, _alert("h", "beacon", 0, 300, 50)),
            (900.0, _alert("h", "beacon", 0, 900, 80)),
            (90000.0, _alert("h", "beacon", 80000, 90000, 60)),
        ]
    )
    assert [len(e.emissions) for e in episodes] == [2, 1]
    assert episodes[0].score == 80 and episodes[0].last == 900 and episodes[1].first == 80000


def test_average_precision_and_percentile() -> None:
    ranked = [(0.9, True), (0.8, False), (0.7, True)]
    assert average_precision(ranked, 3) == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3)
    assert average_precision(ranked, 2) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert average_precision([(0.5, True), (0.5, False)], 1) == pytest.approx(0.5)  # a tie
    assert average_precision([(0.5, False), (0.4, True)], 1) == pytest.approx(0.5)
    assert math.isnan(average_precision([], 0))
    assert percentile(list(range(1, 11)), 0.9) == 9
    assert percentile([5.0], 0.5) == 5.0
    assert math.isnan(percentile([], 0.9))


def test_false_alerts_per_host_day() -> None:
    day = 86400.0
    episodes = [
        Episode("h", "beacon", "a", [Emission(1, 0, 1, 80, 3)]),
        Episode("h", "dga", "", [Emission(1, 0, 1, 40, 1)]),
        Episode("h", "exfil", "b", [Emission(day + 5, 0, 1, 60, 2), Emission(9, 0, 1, 90, 4)]),
        Episode("h", "beacon", "c", [Emission(day + 5, 0, 1, 40, 1)]),
    ]
    run = RunResult(1, False, 20, 3.0, 100, 0.0, 1.0, episodes, [], 5, start=0.0)
    clean = false_alert_metrics(run, notify=2)
    assert clean["per_host_day"] == pytest.approx(4 / 60)
    assert clean["per_host_day_notify"] == pytest.approx(2 / 60)
    assert clean["after_day1_notify"] == 1  # only the exfil alert is loud and after day 1
    assert clean["after_day1_per_host_day_notify"] == pytest.approx(1 / 40)
    assert clean["notify_by_kind"] == {"beacon": 1, "exfil": 1}

"""The policy's anomaly: section: parsed into AnomalySettings, every mistake at its place."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from policies.anomaly_section import AnomalySettings, inside_networks
from policies.errors import PolicyValidationError
from policies.intervals import parse_address
from policies.loader import LoadedPolicy, parse_policy
from policies.summary import describe

BASE = """\
version: 1
site: {name: x}
zones:
  wan: {interfaces: [wan0], addresses: [203.0.113.2/24]}
  lan: {interfaces: [lan0], addresses: [192.0.2.1/26, "2001:db8:0:10::1/64"]}
  iot: {interfaces: [iot0], addresses: [192.0.2.129/27]}
address_groups:
  servers: [192.0.2.20, "2001:db8:0:10::20"]
nat: {masquerade: [wan]}
"""


def load(section: str, tmp_path: Path) -> LoadedPolicy:
    return parse_policy(BASE + textwrap.dedent(section), "policy.yaml", base_dir=tmp_path)


def settings(section: str, tmp_path: Path) -> AnomalySettings:
    found = load(section, tmp_path).policy.anomaly
    assert found is not None
    return found


def errors(section: str, tmp_path: Path) -> list[str]:
    with pytest.raises(PolicyValidationError) as exc:
        load(section, tmp_path)
    return [str(p) for p in exc.value.problems if p.severity == "error"]


def test_a_full_section(tmp_path: Path) -> None:
    (tmp_path / "feeds").mkdir()
    (tmp_path / "feeds" / "intel.txt").write_text("# bad\n198.51.100.66\nevil.example\n")
    a = settings(
        """\
        anomaly:
          lan: [192.0.2.0/24, "2001:DB8:0:10::1/64"]
          feeds: [feeds/intel.txt]
          record: info
          notify: critical
          quarantine: high
          quarantine_min_score: 95
          exempt: [servers, 192.0.2.64/28]
          webhook: https://msp.example/hooks/edgeguard
          syslog: {address: "198.51.100.5:514"}
          detectors: {beacon: {min_connections: 20, jitter: 0.25}, long-conn: {enabled: false}}
        """,
        tmp_path,
    )
    assert a.enabled and a.lan == ("192.0.2.0/24", "2001:db8:0:10::/64") and not a.lan_derived
    assert a.feeds == (tmp_path / "feeds" / "intel.txt",)
    assert (a.record, a.notify, a.quarantine, a.quarantine_min_score) == (
        "info", "critical", "high", 95
    )  # fmt: skip
    host20 = parse_address("192.0.2.20")[1]
    assert host20 in a.exempt.v4 and parse_address("192.0.2.64/28")[1] in a.exempt.v4
    assert a.exempt.v6 == (parse_address("2001:db8:0:10::20")[1],)
    assert a.webhook == "https://msp.example/hooks/edgeguard"
    assert a.syslog and a.syslog_address == ("198.51.100.5", 514)
    assert a.detector_params() == {
        "beacon": {"min_connections": 20, "jitter": 0.25},
        "long-conn": {"enabled": False},
    }
    hash(a)  # a Policy stays hashable with the section in it


def test_an_empty_section_turns_scoring_on_with_defaults(tmp_path: Path) -> None:
    for text in ("anomaly:\n", "anomaly: {}\n"):
        a = settings(text, tmp_path)
        assert a.enabled and a.record == "low" and a.notify == "high"
        assert a.quarantine == "never" and a.quarantine_min_score == 90
        assert a.webhook is None and not a.syslog and a.detectors == ()
    assert load("", tmp_path).policy.anomaly is None


def test_lan_defaults_to_every_zone_but_the_masquerade_ones(tmp_path: Path) -> None:
    a = settings("anomaly: {enabled: false}\n", tmp_path)
    assert not a.enabled and a.lan_derived
    assert a.lan == ("192.0.2.0/26", "2001:db8:0:10::/64", "192.0.2.128/27")
    policy = load("anomaly: {}\n", tmp_path).policy
    assert inside_networks(policy.zones, ()) == ["203.0.113.0/24", *a.lan]


def test_no_inside_addresses_warns_and_falls_back(tmp_path: Path) -> None:
    text = "version: 1\nsite: {name: x}\nzones:\n  lan: {interfaces: [lan0]}\n"
    text += "anomaly:\n  syslog: true\n"
    loaded = parse_policy(text, "p.yaml", base_dir=tmp_path)
    assert loaded.policy.anomaly is not None and loaded.policy.anomaly.lan == ()
    assert any("set anomaly.lan" in str(w) for w in loaded.warnings)
    assert loaded.policy.anomaly.syslog and loaded.policy.anomaly.syslog_address is None


def test_mistakes_are_reported_at_their_place(tmp_path: Path) -> None:
    found = errors(
        """\
        anomaly:
          recrd: low
          notify: hihg
          quarantine: medium
          quarantine_min_score: 101
          lan: [192.0.2.0/33]
          exempt: [servres, 300.1.1.1]
          webhook: ftp://msp.example/x
          syslog: {address: "syslog.example"}
          feeds: [missing.txt]
          detectors: {beacons: {min_connections: 20}, dga: {threshold: high}}
        """,
        tmp_path,
    )
    text = "\n".join(found)
    assert "policy.yaml:11:3: anomaly.recrd: unknown key 'recrd'" in text
    assert "did you mean 'record'?" in text
    assert "policy.yaml:12:11: anomaly.notify: expected one of" in text and "'high'?" in text
    assert "policy.yaml:13:15: anomaly.quarantine: expected one of never, high, critical" in text
    assert "policy.yaml:14:25: anomaly.quarantine_min_score: expected 0-100, got 101" in text
    assert "policy.yaml:15:9: anomaly.lan[0]: expected a network" in text
    assert "anomaly.exempt[0]: unknown address group 'servres'" in text
    assert "did you mean 'servers'?" in text
    assert "anomaly.exempt[1]:" in text
    assert "policy.yaml:17:12: anomaly.webhook: expected an http(s) URL" in text
    assert "anomaly.syslog.address: expected host:port" in text
    assert "anomaly.feeds[0]: cannot read threat-intel feed" in text
    assert "anomaly.detectors.beacons: unknown detector 'beacons'" in text
    assert "did you mean 'beacon'?" in text
    assert "anomaly.detectors.dga.threshold: expected a number" in text
    assert len(found) == 12, text


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[1, 2]", "expected a mapping, got a list"),
        ("{syslog: yes-please}", "expected true, false or {address: host:port}"),
        ("{syslog: {address: '[2001:db8::zz]:514'}}", "expected host:port"),
        ("{syslog: {address: '198.51.100.5:0'}}", "expected host:port"),
        ("{webhook: 'https://exa mple/'}", "expected an http(s) URL"),
        ("{detectors: {beacon: 3}}", "expected parameter: number pairs"),
        ("{detectors: {beacon: {Min: 3}}}", "invalid parameter name 'Min'"),
        ("{enabled: 1}", "expected true or false"),
    ],
)
def test_each_shape_mistake(tmp_path: Path, value: str, message: str) -> None:
    assert any(message in e for e in errors(f"anomaly: {value}\n", tmp_path))


def test_ipv6_syslog_address(tmp_path: Path) -> None:
    a = settings("anomaly: {syslog: {address: '[2001:db8::5]:1514'}}\n", tmp_path)
    assert a.syslog_address == ("2001:db8::5", 1514)


def test_explain_describes_the_section(tmp_path: Path) -> None:
    lines = describe(
        load("anomaly: {quarantine: critical, webhook: 'https://h.example/x'}\n", tmp_path).policy
    )
    text = "\n".join(lines)
    assert "anomaly scoring of 192.0.2.0/26, 2001:db8:0:10::/64, 192.0.2.128/27" in text
    assert "notified: >= high via webhook" in text
    assert "automatic quarantine: alerts >= critical scoring >= 90" in text
    off = "\n".join(describe(load("anomaly: {enabled: false}\n", tmp_path).policy))
    assert "anomaly scoring: OFF" in off

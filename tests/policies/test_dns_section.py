"""The policy's dns: section: parsed into DnsSettings, every mistake at its place."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from policies.errors import PolicyValidationError
from policies.loader import parse_policy

BASE = """\
version: 1
site: {name: x}
zones:
  lan: {interfaces: [lan0], addresses: [192.0.2.1/26]}
"""


def load(dns: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    return parse_policy(BASE + textwrap.dedent(dns), "policy.yaml", base_dir=tmp_path)


def errors(dns: str, tmp_path: Path) -> list[str]:
    with pytest.raises(PolicyValidationError) as exc:
        load(dns, tmp_path)
    return [str(p) for p in exc.value.problems if p.severity == "error"]


def test_a_full_dns_section(tmp_path: Path) -> None:
    (tmp_path / "ads.txt").write_text("ads.example\n")
    dns = load(
        """\
        dns:
          listen: ["192.0.2.1:53", "127.0.0.1:5353"]
          upstreams: ["198.51.100.53", "tls://198.51.100.54:853#dns.example"]
          blocklists:
            ads: {files: [ads.txt]}
          allow: [Good.Example.]
          block_mode: ip
          block_page: {ipv4: 192.0.2.1}
          local_records:
            nas.office.lan: {A: 192.0.2.170, AAAA: "2001:db8:0:40::70"}
            files.office.lan: {CNAME: nas.office.lan}
          forward_zones:
            corp.example: [192.0.2.5]
          rate_limit: {rate: 50, burst: 100, action: drop}
          query_log: {retention_days: 30}
        """,
        tmp_path,
    ).policy.dns
    assert dns is not None
    assert dns.listen == ("192.0.2.1:53", "127.0.0.1:5353")
    assert dns.blocklists[0].name == "ads" and dns.blocklists[0].files == (tmp_path / "ads.txt",)
    assert dns.allow == ("good.example",)
    assert dns.block_mode == "ip" and dns.block_ipv4 == "192.0.2.1"
    assert ("nas.office.lan", "AAAA", "2001:db8:0:40::70") in dns.local_records
    assert ("files.office.lan", "CNAME", "nas.office.lan") in dns.local_records
    assert dns.forward_zones == (("corp.example", ("192.0.2.5",)),)
    assert (dns.rate_limit, dns.rate_burst, dns.rate_limit_action) == (50.0, 100.0, "drop")
    assert dns.log_retention_days == 30.0 and dns.query_log is True


def test_dns_mistakes_are_reported_at_their_place(tmp_path: Path) -> None:
    found = errors(
        """\
        dns:
          upstream: [198.51.100.53]
          block_mode: nxdomian
          blocklists:
            ads: {files: [missing.txt]}
          local_records:
            nas.office.lan: {A: "2001:db8::1", MX: x}
          forward_zones:
            corp.example: ["not a server!"]
          rate_limit: {rate: -1}
        """,
        tmp_path,
    )
    assert found[0].startswith("policy.yaml:6:3: dns.upstream: unknown key 'upstream'")
    assert "did you mean 'upstreams'?" in found[0]
    assert found[1].startswith("policy.yaml:7:15: dns.block_mode: unknown block mode 'nxdomian'")
    assert found[2].startswith(
        "policy.yaml:9:19: dns.blocklists.ads.files[0]: cannot read list file"
    )
    assert found[3].startswith(
        "policy.yaml:11:25: dns.local_records.nas.office.lan.A: '2001:db8::1' is not an IPv4"
    )
    assert found[4].startswith(
        "policy.yaml:11:40: dns.local_records.nas.office.lan.MX: unknown record type"
    )
    assert found[5].startswith(
        "policy.yaml:13:20: dns.forward_zones.corp.example[0]: expected host:port"
    )
    assert found[6].startswith("policy.yaml:14:22: dns.rate_limit.rate: expected a positive number")
    assert len(found) == 7


def test_ip_block_mode_needs_a_block_page(tmp_path: Path) -> None:
    (found,) = errors("dns:\n  block_mode: ip\n", tmp_path)
    assert "block_mode 'ip' needs block_page.ipv4 and/or ipv6" in found

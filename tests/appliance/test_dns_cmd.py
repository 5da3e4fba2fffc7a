"""`edgeguard dns serve` as a process: lists from files, a real upstream, /metrics."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from dnslib import RCODE, DNSRecord

from appliance.hashseed import SEED_FILE_ENV
from tests.dns_filter.test_server import Upstream

ZONE = "allowed.test. 60 A 198.51.100.10\n"


def test_dns_serve_answers_blocks_and_exports_metrics(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("0.0.0.0 tracker.test\n")
    adblock = tmp_path / "adblock.txt"
    adblock.write_text("||ads.test^\n")
    upstream = Upstream(ZONE)
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "dns", "serve", "--listen", "127.0.0.1:0",
         "--blocklist", str(hosts), "--blocklist", str(adblock),
         "--upstream", f"127.0.0.1:{upstream.port}", "--querylog", str(tmp_path / "q.db"),
         "--metrics", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        port = metrics_url = None
        deadline = time.monotonic() + 20
        while port is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
            if m := re.search(r"resolver answering on 127\.0\.0\.1:(\d+)", line):
                port = int(m.group(1))
            if m := re.search(r"metrics on (http://\S+)", line):
                metrics_url = m.group(1)
        assert port, "".join(lines)
        assert any("hosts.txt: hosts" in line for line in lines)
        assert any("adblock.txt: adblock" in line for line in lines)

        def ask(name: str) -> DNSRecord:
            return DNSRecord.parse(DNSRecord.question(name).send("127.0.0.1", port, timeout=3))

        assert [str(r.rdata) for r in ask("allowed.test").rr] == ["198.51.100.10"]
        assert ask("tracker.test").header.rcode == RCODE.NXDOMAIN
        assert ask("sub.ads.test").header.rcode == RCODE.NXDOMAIN
        assert metrics_url, "".join(lines)
        with urllib.request.urlopen(metrics_url, timeout=5) as response:  # our own loopback
            text = response.read().decode()
        assert 'edgeguard_dns_answers_total{verdict="blocked"} 2' in text
        assert 'edgeguard_dns_answers_total{verdict="allowed"} 1' in text
        assert "edgeguard_dns_upstream_healthy" in text
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
        upstream.stop()
    assert proc.returncode == 0, out


def test_dns_serve_reuses_the_compiled_list_at_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second start reads the list compiled by the first (same pinned seed) and blocks
    the same names; an edit of the list is parsed again."""
    monkeypatch.setenv(SEED_FILE_ENV, str(tmp_path / "seed" / "hashseed"))
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    listfile = tmp_path / "list.txt"
    listfile.write_text("tracker.test\n")
    upstream = Upstream("a.tracker.test. 60 A 198.51.100.10\nother.test. 60 A 198.51.100.11\n")
    cmd = [sys.executable, "-m", "appliance.cli", "dns", "serve", "--listen", "127.0.0.1:0",
           "--blocklist", str(listfile), "--upstream", f"127.0.0.1:{upstream.port}",
           "--no-querylog"]  # fmt: skip
    seen = []
    try:
        for step in ("parsed", "loaded", "edited"):
            if step == "edited":
                listfile.write_text("other.test\n")
            proc, port, lines = _start(cmd)
            try:
                blocked = [
                    DNSRecord.parse(
                        DNSRecord.question(name).send("127.0.0.1", port, timeout=3)
                    ).header.rcode
                    == RCODE.NXDOMAIN
                    for name in ("a.tracker.test", "other.test")
                ]
            finally:
                proc.terminate()
                proc.communicate(timeout=10)
            (cache,) = [line for line in lines if line.startswith("list files:")]
            seen.append((cache.split(" (")[0], blocked))
    finally:
        upstream.stop()
    assert seen == [
        ("list files: 0 loaded compiled, 1 parsed", [True, False]),
        ("list files: 1 loaded compiled, 0 parsed", [True, False]),
        ("list files: 0 loaded compiled, 1 parsed", [False, True]),
    ]


def test_dns_serve_refuses_a_missing_list(tmp_path: Path) -> None:
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "appliance.cli",
            "dns",
            "serve",
            "--blocklist",
            str(tmp_path / "nope.txt"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert res.returncode == 2 and "nope.txt" in res.stderr


GROUPS_POLICY = """\
version: 1
site: {name: dns-serve-groups, timezone: UTC}
zones:
  wan: {interfaces: [wan0], addresses: [203.0.113.2/24]}
  lan: {interfaces: [lan0], addresses: [192.0.2.1/24]}
rules:
  - {name: lan-out, from: lan, to: wan, action: accept}
nat: {masquerade: [wan]}
dns:
  upstreams: ["198.51.100.10:53"]
  listen: ["192.0.2.1:53"]
  blocklists:
    local: {files: [local.txt]}
web_filter:
  default_group: staff
  groups:
    staff:
      clients: [lan]
    kids:
      clients: [127.0.0.0/8]
      categories: [adult]
      block: [games.example]
"""
GROUPS_ZONE = ZONE + "adult.example. 60 A 198.51.100.77\ngames.example. 60 A 198.51.100.78\n"


def _start(cmd: list[str]) -> tuple[subprocess.Popen[str], int, list[str]]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, "".join(lines)
        lines.append(line)
        if m := re.search(r"resolver answering on 127\.0\.0\.1:(\d+)", line):
            return proc, int(m.group(1)), lines
    raise AssertionError("".join(lines))


def test_dns_serve_policy_applies_the_client_group(tmp_path: Path) -> None:
    """--policy: the loopback client is in group kids (adult category, its own block list);
    --listen and --upstream replace the policy's, which point at nothing reachable."""
    (tmp_path / "local.txt").write_text("tracker.test\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text(GROUPS_POLICY)
    state = tmp_path / "state"
    upstream = Upstream(GROUPS_ZONE)
    proc, port, lines = _start(
        [sys.executable, "-m", "appliance.cli", "dns", "serve", "--policy", str(policy),
         "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{upstream.port}",
         "--state-dir", str(state)]
    )  # fmt: skip
    try:
        assert any(line.startswith("list category:adult:") for line in lines), lines
        assert any("client groups: staff, kids" in line for line in lines), lines

        def ask(name: str) -> DNSRecord:
            return DNSRecord.parse(DNSRecord.question(name).send("127.0.0.1", port, timeout=3))

        assert ask("adult.example").header.rcode == RCODE.NXDOMAIN  # kids: category adult
        assert ask("games.example").header.rcode == RCODE.NXDOMAIN  # kids: own domains
        assert ask("tracker.test").header.rcode == RCODE.NXDOMAIN  # every dns block list
        assert [str(r.rdata) for r in ask("allowed.test").rr] == ["198.51.100.10"]
        assert ask("use-application-dns.net").header.rcode == RCODE.NXDOMAIN  # DoH canary
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
        upstream.stop()
    assert proc.returncode == 0, out
    assert (state / "querylog.db").exists()  # the policy's query log, in the state dir


def test_dns_serve_policy_without_the_group_resolves(tmp_path: Path) -> None:
    """The same names for a client of the default group (staff: no adult category),
    with --no-querylog: loopback moved to staff by editing the policy."""
    (tmp_path / "local.txt").write_text("tracker.test\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        GROUPS_POLICY.replace("clients: [lan]", "clients: [lan, 127.0.0.0/8]").replace(
            "clients: [127.0.0.0/8]", "clients: [192.0.2.128/25]"
        )
    )
    state = tmp_path / "state"
    upstream = Upstream(GROUPS_ZONE)
    proc, port, _ = _start(
        [sys.executable, "-m", "appliance.cli", "dns", "serve", "--policy", str(policy),
         "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{upstream.port}",
         "--state-dir", str(state), "--no-querylog"]
    )  # fmt: skip
    try:

        def ask(name: str) -> DNSRecord:
            return DNSRecord.parse(DNSRecord.question(name).send("127.0.0.1", port, timeout=3))

        assert [str(r.rdata) for r in ask("adult.example").rr] == ["198.51.100.77"]
        assert [str(r.rdata) for r in ask("games.example").rr] == ["198.51.100.78"]
        assert ask("tracker.test").header.rcode == RCODE.NXDOMAIN
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
        upstream.stop()
    assert proc.returncode == 0, out
    assert not (state / "querylog.db").exists()


def test_dns_serve_policy_refuses_list_flags(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(GROUPS_POLICY)
    res = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "dns", "serve", "--policy", str(policy),
         "--blocklist", str(tmp_path / "x.txt")],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert res.returncode == 2 and "--blocklist" in res.stderr

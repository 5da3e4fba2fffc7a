"""`edgeguard dns serve` as a process: lists from files, a real upstream, /metrics."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from dnslib import RCODE, DNSRecord

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

"""Check-in readers: small, and tolerant of missing or broken files."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

from appliance.anomaly.store import DB_NAME, AnomalyStore
from appliance.sync.checkin import HealthProbe, build_checkin, read_anomalies, read_counters


def test_missing_files_give_neutral_values(tmp_path: Path) -> None:
    assert read_counters(tmp_path) == {}
    assert read_anomalies(tmp_path) == {"max_host_score": 0, "open_high": 0}
    (tmp_path / "counters.json").write_text("{not json")
    (tmp_path / DB_NAME).write_bytes(b"not a database at all, just bytes" * 10)
    assert read_counters(tmp_path) == {}
    assert read_anomalies(tmp_path) == {"max_host_score": 0, "open_high": 0}


def test_counters_and_anomalies_are_read_from_the_state_dir(tmp_path: Path) -> None:
    counters = {"ts": 1.0, "counters": [{"chain": "fwd", "packets": 7, "bytes": 99}]}
    (tmp_path / "counters.json").write_text(json.dumps(counters))
    AnomalyStore.in_state_dir(tmp_path).close()  # the real schema
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.executemany("INSERT INTO host_scores VALUES (?, ?, 0)", [("a", 40), ("b", 91)])
    rows = [("a", "scan", 90, "open"), ("b", "beacon", 95, "dismissed"), ("c", "dns", 50, "open")]
    for host, kind, score, status in rows:
        db.execute(
            "INSERT INTO anomalies (ts, host, kind, score, severity, first, last, explanation,"
            " status) VALUES (0, ?, ?, ?, 'high', 0, 0, '', ?)",
            (host, kind, score, status),
        )
    db.commit()
    db.close()
    assert read_counters(tmp_path) == counters
    assert read_anomalies(tmp_path) == {"max_host_score": 91, "open_high": 1}


def test_a_broken_probe_reports_unhealthy_instead_of_failing(tmp_path: Path) -> None:
    def broken() -> bool:
        raise OSError("no such namespace")

    health = HealthProbe(ruleset_loaded=broken, resolver_up=lambda: True, uptime_s=lambda: 5)
    read = health.read(tmp_path)
    assert read["ruleset_loaded"] is False and read["resolver"] is True
    assert read["disk_free_mb"] > 0 and read["uptime_s"] == 5


def test_the_document_has_the_contract_fields(tmp_path: Path) -> None:
    doc = build_checkin(
        site="acme", appliance_id="box", software="edgeguard 0.1.0", bundle_version=3,
        live_policy_text="version: 1\n", live_version=9, last_apply=None,
        last_sync={"at": None, "result": "unchanged", "reason": None}, conflicts=["rules"],
        health={}, state_dir=tmp_path, now=dt.datetime(2027, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
    )  # fmt: skip
    assert set(doc) == {
        "site", "appliance_id", "software", "bundle_version", "policy_sha256", "live_version",
        "last_apply", "last_sync", "conflicts", "health", "counters", "anomalies", "time",
    }  # fmt: skip
    assert doc["time"] == "2027-01-02T03:04:05Z" and len(doc["policy_sha256"]) == 64
    assert doc["last_apply"] == {"ok": True, "error": None, "at": None}


def test_dns_blocks_are_counted_per_list_for_the_msp_report(tmp_path: Path) -> None:
    """Written by the resolver's own query-log writer, so a schema change breaks this."""
    import time

    from appliance.sync.checkin import read_blocked
    from dns_filter.querylog import LogEntry, QueryLog

    now = time.time()
    log = QueryLog(tmp_path / "querylog.db")
    for i, (verdict, list_name) in enumerate(
        [("blocked", "malware-phishing"), ("blocked", "malware-phishing"), ("blocked", "adult"),
         ("allowed", None), ("cached", None), ("blocked", None)]
    ):  # fmt: skip
        log.log(LogEntry(now + i, "192.0.2.10", f"n{i}.example", 1, verdict, None, list_name,
                         None, 1.0, 3 if verdict == "blocked" else 0))  # fmt: skip
    log.close()
    assert read_blocked(tmp_path) == {"malware-phishing": 2, "adult": 1, "blocked": 1}
    assert read_blocked(tmp_path / "nowhere") == {}

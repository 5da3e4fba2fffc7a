"""The query-log tail: new rows only, the resolver's own blocks left out, names normalised.

Written by the resolver's real QueryLog writer, so a schema change there breaks this test.
"""

from __future__ import annotations

import time
from pathlib import Path

from appliance.anomaly.querytail import QueryLogTail
from appliance.anomaly.records import DnsRecord
from dns_filter.querylog import LogEntry, QueryLog

NOW = time.time()  # the writer prunes rows older than its retention


def _entry(ts: float, name: str, verdict: str = "allowed", rcode: int = 0) -> LogEntry:
    return LogEntry(NOW + ts, "192.0.2.10", name, 1, verdict, None, None, None, 1.0, rcode)


def test_reads_new_rows_once_and_skips_names_the_filter_blocked(tmp_path: Path) -> None:
    path = tmp_path / "querylog.db"
    log = QueryLog(path)
    log.log(_entry(1.0, "before.example"))
    log.flush()
    tail = QueryLogTail(path)
    assert tail.read() == [], "history before the tail started is not rescored"
    log.log(_entry(2.0, "Qx7zk2.Example."))
    log.log(_entry(3.0, "ads.example", verdict="blocked", rcode=3))
    log.log(_entry(4.0, "missing.example", verdict="allowed", rcode=3))
    log.flush()
    assert tail.read() == [
        DnsRecord(NOW + 2.0, "192.0.2.10", "qx7zk2.example", 1, 0),
        DnsRecord(NOW + 4.0, "192.0.2.10", "missing.example", 1, 3),
    ]
    assert tail.read() == []
    log.close()
    assert QueryLogTail(path, from_start=True).read()[0].qname == "before.example"


def test_no_log_yet_is_no_records(tmp_path: Path) -> None:
    assert QueryLogTail(tmp_path / "querylog.db").read() == []

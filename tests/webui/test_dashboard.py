"""The dashboard: DNS numbers from the query log's aggregates, the applied policy, honest
placeholders for what is not collected yet, SVG charts with escaped labels, and its API."""

from __future__ import annotations

import json
import random
import re
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from appliance.anomaly.records import Alert, Severity
from appliance.anomaly.store import AnomalyStore
from appliance.nft import MemoryNft
from appliance.store import ConfigStore, PendingConfirm
from dns_filter.querylog import LogEntry, QueryLog
from webui import charts, pages, querylog_data

XSS_NAME = "<script>alert(1)</script>.example"
XSS_IMG = '"><img src=x onerror=alert(1)>.example'
XSS_CLIENT = '10.0.0.66" onmouseover="alert(1)'
POLICY = """\
version: 1
site: {name: test, timezone: UTC}
rules:
  - {from: lan, to: wan, action: accept}
  - {from: any, to: any, action: drop, counter: true}
  - {from: wan, to: self, service: ssh, action: reject}
"""


def entry(ts: float, client: str, name: str, verdict: str = "allowed") -> LogEntry:
    return LogEntry(ts, client, name, 1, verdict, None, None, "198.51.100.53", 2.0, 0)


def write_log(app: Flask, entries: list[LogEntry]) -> Path:
    path: Path = app.extensions["edgeguard_config"].state_dir / "querylog.db"
    log = QueryLog(path, interval=3600)
    try:
        for e in entries:
            log.log(e)
        log.flush()
    finally:
        log.close()
    return path


@pytest.fixture(autouse=True)
def memory_nft(app: Flask) -> None:
    """The dashboard reads the config store only; never a real nftables handle in tests."""
    app.extensions["edgeguard_appliance"].nft = MemoryNft()


def config_store(app: Flask) -> ConfigStore:
    store: ConfigStore = app.extensions["edgeguard_appliance"].engine().store
    return store


def test_dashboard_counts_the_last_24_hours_and_the_last_hour(
    app: Flask, admin: FlaskClient
) -> None:
    now = time.time()
    rows = [entry(now - 5, "192.0.2.10", "www.example", "allowed") for _ in range(6)]
    rows += [entry(now - 5, "192.0.2.10", "ads.example", "blocked") for _ in range(3)]
    rows += [entry(now - 4, "192.0.2.11", "cdn.example", "cached")]
    rows += [entry(now - 3 * 3600, "192.0.2.12", "old.example", "servfail") for _ in range(2)]
    rows += [entry(now - 30 * 3600, "192.0.2.13", "older.example", "allowed")]  # outside 24 h
    write_log(app, rows)
    data = admin.get("/api/v1/stats").get_json()
    dns = data["dns"]
    assert dns["available"] and dns["window_hours"] == 24
    assert (dns["total"], dns["blocked"], dns["cached"], dns["failed"]) == (12, 3, 1, 2)
    assert dns["share_blocked"] == pytest.approx(3 / 12)
    assert dns["mean_latency_ms"] == pytest.approx(2.0)
    series = dns["queries_per_minute"]
    assert len(series) == 60 and sum(m["total"] for m in series) == 10
    assert sum(m["blocked"] for m in series) == 3
    assert dns["top_domains"][0] == {"name": "www.example", "count": 6}
    assert {"name": "old.example", "count": 2} in dns["top_domains"]
    assert all(r["name"] != "ads.example" for r in dns["top_domains"])  # not blocked only
    assert dns["top_blocked"] == [{"name": "ads.example", "count": 3}]
    assert dns["top_clients"][0] == {"client": "192.0.2.10", "count": 9}
    assert "older.example" not in str(dns)
    page = admin.get("/").get_data(as_text=True)
    assert "25.0 %" in page and ">12</span> answers" in page
    assert "www.example" in page and 'class="chart"' in page


def test_api_parameters_are_bounded(admin: FlaskClient, app: Flask) -> None:
    now = time.time()
    write_log(app, [entry(now - 30 * 3600, "192.0.2.13", "older.example")])
    data = admin.get("/api/v1/stats?hours=48&minutes=5&top=1").get_json()
    assert data["dns"]["total"] == 1 and len(data["dns"]["queries_per_minute"]) == 5
    for bad in ("hours=0", "hours=169", "minutes=abc", "top=101"):
        resp = admin.get(f"/api/v1/stats?{bad}")
        assert resp.status_code == 400, bad
    doc = admin.get("/api/v1/openapi.json").get_json()
    assert "/stats" in doc["paths"] and "/querylog" in doc["paths"]


def test_without_a_query_log_the_page_says_so(admin: FlaskClient) -> None:
    page = admin.get("/").get_data(as_text=True)
    assert "no query log yet" in page
    assert admin.get("/api/v1/stats").get_json()["dns"] == {
        "available": False,
        "note": "no query log yet",
    }


def test_policy_version_confirm_and_the_placeholders_are_honest(
    app: Flask, viewer: FlaskClient
) -> None:
    page = viewer.get("/").get_data(as_text=True)
    assert "No policy applied yet." in page
    store = config_store(app)
    vid = store.record(POLICY, "table inet edgeguard {}\n", author="alice", message="lunch <b>")
    deadline = time.time() + 60
    store.make_live(vid, confirmed=False, pending=PendingConfirm(vid, deadline, None))
    page = viewer.get("/").get_data(as_text=True)
    assert f"v{vid}</span>" in page and "unconfirmed" in page
    assert "lunch &lt;b&gt;" in page  # the commit message is escaped too
    assert f'data-deadline="{int(deadline)}"' in page
    assert "3 rules in the policy, 1 with <code>counter: true</code>" in page
    assert "counters: not collected yet" in page
    assert "no anomaly scoring yet" in page
    assert "not configured" in page
    data = viewer.get("/api/v1/stats").get_json()
    assert data["policy"]["live"]["version"] == vid
    assert data["policy"]["pending_confirm"]["deadline"] == pytest.approx(deadline)
    assert data["firewall"] == {
        "rules": {"total": 3, "with_counter": 1},
        "counters": None,
        "note": pages.COUNTERS_NOTE,
    }
    assert data["anomalies"]["open"] == [] and data["sync"] == {
        "status": "not configured",
        "conflicts": [],
    }


def test_names_and_clients_are_escaped_in_the_html_and_the_svg(
    app: Flask, admin: FlaskClient
) -> None:
    now = time.time()
    write_log(
        app,
        [entry(now - 2, XSS_CLIENT, XSS_NAME, "blocked"), entry(now - 2, XSS_CLIENT, XSS_IMG)],
    )
    page = admin.get("/").get_data(as_text=True)
    assert page.count("<script") == 1  # base.html's own app.js, nothing else
    assert "<img" not in page and 'onmouseover="' not in page
    svgs = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(svgs) == 4
    labels = " ".join(svgs)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.example" in labels
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in labels
    assert "10.0.0.66&#34; onmouseover=&#34;alert(1)" in labels
    assert "style=" not in page  # the CSP blocks inline styles: classes only


def test_charts_escape_every_label_and_scale() -> None:
    svg = charts.bar_list([("a<b", 10), ("c&d", 5)], label='x"y', link=lambda n: f"/q?n={n}")
    assert "a&lt;b" in svg and "c&amp;d" in svg and 'aria-label="x&#34;y"' in svg
    assert 'href="/q?n=a&lt;b"' in svg
    assert 'width="320"' in svg and 'width="160"' in svg  # proportional to the count
    long = charts.bar_list([("x" * 100, 1)], label="l")
    assert "x" * 51 + "…" in long and "<title>" + "x" * 100 in long
    bars = charts.minute_bars([(29_000_000, 10, 4), (29_000_001, 0, 0)], label="q")
    assert bars.count('class="bar"') == 1 and bars.count('class="bar blocked"') == 1
    assert ">10</text>" in bars  # the axis top
    assert "10 queries, 4 blocked" in bars


def _brute_top(db: sqlite3.Connection, kind: str, first: int, last: int, n: int) -> list[int]:
    rows = db.execute(
        "SELECT sum(count) AS c FROM top_hour WHERE kind = ? AND hour BETWEEN ? AND ?"
        " GROUP BY key ORDER BY c DESC LIMIT ?",
        (kind, first, last, n),
    ).fetchall()
    return [r[0] for r in rows]


@pytest.mark.parametrize("skew", [0.0, 0.6, 1.2])
def test_top_lists_are_exact_without_reading_every_hour_fully(tmp_path: Path, skew: float) -> None:
    """The threshold search gives the same counts as summing everything (ties may order
    differently, so counts are compared), for flat and skewed distributions."""
    rnd = random.Random(int(skew * 10))
    names = [f"n{i}.example" for i in range(400)]
    weights = [1 / (i + 1) ** skew for i in range(len(names))]
    base = 500_000 * 3600
    log = QueryLog(tmp_path / "q.db", interval=3600)
    try:
        for hour in range(30):
            for name in rnd.choices(names, weights, k=300):
                log.log(entry(base + hour * 3600 + rnd.random() * 3600, "c", name))
        log.flush()
    finally:
        log.close()
    conn = querylog_data.connect(tmp_path / "q.db")
    try:
        for first, last, n in (
            (500_000, 500_029, 10),
            (500_010, 500_012, 5),
            (500_000, 500_029, 1),
        ):
            got = querylog_data.top_keys(conn, "domain", first, last, n)
            assert [c for _, c in got] == _brute_top(conn, "domain", first, last, n)
            assert len({k for k, _ in got}) == len(got)
    finally:
        conn.close()
    totals = Counter[str]()
    with sqlite3.connect(tmp_path / "q.db") as db:
        for (name,) in db.execute("SELECT qname FROM queries"):
            totals[name] += 1
    conn = querylog_data.connect(tmp_path / "q.db")
    try:
        got = querylog_data.top_keys(conn, "domain", 500_000, 500_029, 3)
    finally:
        conn.close()
    assert [c for _, c in got] == [c for _, c in totals.most_common(3)]


def test_firewall_counters_saved_by_the_controller_are_shown(
    app: Flask, admin: FlaskClient
) -> None:
    state = app.extensions["edgeguard_config"].state_dir
    state.mkdir(parents=True, exist_ok=True)
    (state / "counters.json").write_text(
        json.dumps(
            {
                "ts": time.time() - 5,
                "counters": [
                    {"chain": "forward", "comment": "default drop", "packets": 7, "bytes": 420},
                    {"chain": "fwd_lan-wan", "comment": "<b>lan-out</b>", "packets": 99,
                     "bytes": 9900},
                ],
            }
        )
    )  # fmt: skip
    html = admin.get("/").get_data(as_text=True)
    assert html.index("&lt;b&gt;lan-out&lt;/b&gt;") < html.index("default drop")  # busiest first
    assert "read 5 s ago" in html or "read 4 s ago" in html or "read 6 s ago" in html
    data = admin.get("/api/v1/stats").get_json()
    assert data["firewall"]["counters"][0]["packets"] == 99


def test_open_anomalies_and_quarantined_hosts_are_on_the_dashboard(
    app: Flask, viewer: FlaskClient
) -> None:
    state = app.extensions["edgeguard_config"].state_dir
    store = AnomalyStore.in_state_dir(state)
    now = time.time()

    def alert(host: str, kind: str, score: int, severity: Severity) -> Alert:
        return Alert(host, kind, "198.51.100.7", score, severity, now - 60, now, "why")

    stored = store.record(
        [
            alert("192.0.2.10", "beacon", 88, "critical"),
            alert("192.0.2.11", "<b>scan</b>", 60, "medium"),
            alert("192.0.2.12", "exfil", 20, "info"),  # below the dashboard's bar
            alert("192.0.2.13", "dga", 75, "high"),
        ],
        now,
    )
    store.set_status(stored[3].id, "dismissed")  # dismissed: not open any more
    store.add_quarantine("192.0.2.10", "beaconing", "alice", now)
    store.close()
    page = viewer.get("/").get_data(as_text=True)
    assert "192.0.2.10" in page and "192.0.2.11" in page
    assert "192.0.2.12" not in page and "192.0.2.13" not in page
    assert "&lt;b&gt;scan&lt;/b&gt;" in page
    assert "Quarantined: 192.0.2.10" in page
    data = viewer.get("/api/v1/stats").get_json()["anomalies"]
    assert [a["host"] for a in data["open"]] == ["192.0.2.10", "192.0.2.11"]
    assert data["quarantined"] == ["192.0.2.10"]


def test_msp_sync_state_and_kept_local_changes_are_on_the_dashboard(
    app: Flask, viewer: FlaskClient
) -> None:
    sync = app.extensions["edgeguard_config"].state_dir / "sync"
    sync.mkdir(parents=True)
    (sync / "enrolment.json").write_text(json.dumps({"site": "acme-hq"}))
    (sync / "state.json").write_text(
        json.dumps(
            {
                "bundle_version": 7,
                "last_contact": "2026-11-27T04:00:00Z",
                "last_sync": {"at": "2026-11-27T04:00:00Z", "result": "refused",
                              "reason": "expired", "error": None},
                "conflicts": [{"section": "web_filter", "base": {}, "local": {}, "remote": {}}],
            }
        )
    )  # fmt: skip
    page = viewer.get("/").get_data(as_text=True)
    assert "site acme-hq: last synced 2026-11-27T04:00:00Z, last cycle refused (expired)" in page
    assert "bundle v7" in page and "kept over the MSP's in: web_filter" in page
    data = viewer.get("/api/v1/stats").get_json()["sync"]
    assert data["result"] == "refused" and data["conflicts"] == ["web_filter"]

"""The query log page and API: filters, keyset pages, escaping, the search budget, and the
writer's aggregates (kept in step with the rows, built for an older log, pruned)."""

from __future__ import annotations

import fnmatch
import html
import random
import re
import sqlite3
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from flask import Flask
from flask.testing import FlaskClient

from dns_filter.querylog import LogEntry, QueryLog
from webui import querylog_data
from webui.querylog_data import Filters

T0 = 1_800_000_000.0
XSS_NAME = "<script>alert(1)</script>.example"
XSS_IMG = '"><img src=x onerror=alert(1)>.example'
XSS_CLIENT = "10.0.0.66' onmouseover='alert(1)\""


def entry(ts: float, client: str, name: str, verdict: str = "allowed") -> LogEntry:
    return LogEntry(ts, client, name, 1, verdict, None, None, "198.51.100.53", 1.5, 0)


def log_path(app: Flask) -> Path:
    path: Path = app.extensions["edgeguard_config"].state_dir / "querylog.db"
    return path


def write(path: Path, entries: list[LogEntry], retention_days: float = 7.0) -> None:
    log = QueryLog(path, interval=3600, retention_days=retention_days)
    try:
        for e in entries:
            log.log(e)
        log.flush()
    finally:
        log.close()


@pytest.fixture
def sample(app: Flask) -> list[LogEntry]:
    """120 rows a minute apart: three clients, names under two domains, every 4th blocked."""
    rows = []
    for i in range(120):
        client = ("192.0.2.1", "192.0.2.2", "2001:db8::3")[i % 3]
        name = ("www.example.com", "ads.example.com", "example.com", "cdn.example.net")[i % 4]
        rows.append(entry(T0 + 60 * i, client, name, "blocked" if i % 4 == 1 else "allowed"))
    write(log_path(app), rows)
    return rows


def rows_of(page: str) -> list[tuple[str, str]]:
    """(client, name) of each table row, unescaped."""
    cell = r"<td><a [^>]+>([^<]*)</a>"
    found = re.findall(rf"<tr>\s*<td>[^<]+</td>\s*{cell}.*?{cell}", page, re.S)
    return [(html.unescape(c), html.unescape(n)) for c, n in found]


def link(page: str, rel: str) -> str | None:
    m = re.search(rf'<a href="([^"]+)" rel="{rel}">', page)
    return html.unescape(m.group(1)) if m else None


def api(client: FlaskClient, query: str) -> dict[str, object]:
    resp = client.get(f"/api/v1/querylog?{query}")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    data: dict[str, object] = resp.get_json()
    return data


def names(data: dict[str, object]) -> list[str]:
    return [r["name"] for r in data["rows"]]  # type: ignore[attr-defined]


def test_pages_go_by_cursor_newest_first(admin: FlaskClient, sample: list[LogEntry]) -> None:
    first = admin.get("/querylog").get_data(as_text=True)
    got = rows_of(first)
    assert len(got) == 50
    assert got[0] == (sample[-1].client, sample[-1].qname)
    assert link(first, "prev") is None
    older = link(first, "next")
    assert older and "before=" in older
    second = admin.get(older).get_data(as_text=True)
    assert rows_of(second) == [(e.client, e.qname) for e in reversed(sample[20:70])]
    newer = link(second, "prev")
    assert newer and "after=" in newer
    assert rows_of(admin.get(newer).get_data(as_text=True)) == got
    third_url = link(second, "next")
    assert third_url
    third = admin.get(third_url).get_data(as_text=True)
    assert len(rows_of(third)) == 20 and link(third, "next") is None


def test_filters_by_client_name_verdict_and_time(
    admin: FlaskClient, sample: list[LogEntry]
) -> None:
    def expect(query: str, keep: list[LogEntry]) -> None:
        data = api(admin, query)
        assert names(data) == [e.qname for e in reversed(keep)][:50], query
        assert data["complete"] is True

    expect("client=2001:db8::3", [e for e in sample if e.client == "2001:db8::3"])
    expect("name=example.com", [e for e in sample if e.qname == "example.com"])
    expect("name=EXAMPLE.com.", [e for e in sample if e.qname == "example.com"])
    expect("name=*.example.com", [e for e in sample if e.qname.endswith(".example.com")])
    expect("name=*example.com", [e for e in sample if e.qname.endswith("example.com")])
    expect("name=*ads*", [e for e in sample if "ads" in e.qname])
    expect("name=*.example.org", [])
    expect("verdict=blocked", [e for e in sample if e.verdict == "blocked"])
    since, until = T0 + 60 * 10, T0 + 60 * 20
    expect(f"from={since}&to={until}", sample[10:20])
    expect(
        "from=2027-01-15T08:10&to=2027-01-15T08:20&verdict=blocked&client=192.0.2.2",
        [
            e
            for e in sample
            if T0 + 600 <= e.ts < T0 + 1200 and e.verdict == "blocked" and e.client == "192.0.2.2"
        ],
    )
    page = admin.get("/querylog?name=*.example.com&verdict=blocked").get_data(as_text=True)
    assert {n for _, n in rows_of(page)} == {"ads.example.com"}
    assert 'value="*.example.com"' in page and '<option value="blocked" selected>' in page


def test_api_cursor_and_limit(admin: FlaskClient, sample: list[LogEntry]) -> None:
    first = api(admin, "limit=7&client=192.0.2.1")
    assert len(names(first)) == 7 and first["prev"] is None
    second = api(admin, f"limit=7&client=192.0.2.1&before={first['next']}")
    expected = [e for e in reversed(sample) if e.client == "192.0.2.1"]
    assert names(second) == [e.qname for e in expected[7:14]]
    back = api(admin, f"limit=7&client=192.0.2.1&after={second['prev']}")
    assert back["rows"] == first["rows"]
    row = first["rows"][0]  # type: ignore[index]
    assert set(row) >= {"id", "ts", "time", "client", "name", "qtype", "qtype_name", "verdict"}
    assert row["qtype_name"] == "A" and row["time"].endswith("+00:00")


@pytest.mark.parametrize(
    "query",
    ["verdict=bogus", "from=yesterday", "before=abc", "before=1&after=2", "limit=0", "limit=501"],
)
def test_bad_parameters_are_refused(admin: FlaskClient, sample: list[LogEntry], query: str) -> None:
    resp = admin.get(f"/api/v1/querylog?{query}")
    assert resp.status_code == 400 and resp.get_json()["error"]
    page = admin.get(f"/querylog?{query}")
    assert page.status_code == 200  # the page shows what was wrong and the unfiltered log


def test_attacker_controlled_names_and_clients_are_only_shown_escaped(
    app: Flask, viewer: FlaskClient
) -> None:
    now = time.time()
    write(log_path(app), [entry(now, XSS_CLIENT, XSS_NAME, "blocked"), entry(now, "c", XSS_IMG)])
    page = viewer.get("/querylog").get_data(as_text=True)
    assert page.count("<script") == 1  # base.html's app.js only
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.example" in page
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;.example" in page
    assert "<img" not in page and "onmouseover='" not in page
    assert "10.0.0.66&#39; onmouseover=&#39;alert(1)&#34;" in page
    hrefs = re.findall(r'href="([^"]*)"', page)
    assert any(parse_qs(urlparse(html.unescape(h)).query).get("name") == [XSS_NAME] for h in hrefs)
    filtered = viewer.get("/querylog", query_string={"client": XSS_CLIENT}).get_data(as_text=True)
    assert rows_of(filtered) == [(XSS_CLIENT, XSS_NAME)]
    assert 'value="10.0.0.66&#39; onmouseover=&#39;alert(1)&#34;"' in filtered
    data = viewer.get("/api/v1/querylog", query_string={"name": XSS_NAME}).get_json()
    assert names(data) == [XSS_NAME]


def test_without_a_log_the_page_says_so(admin: FlaskClient) -> None:
    assert "no query log yet" in admin.get("/querylog").get_data(as_text=True)
    assert api(admin, "")["note"] == "no query log yet"


def test_a_search_that_would_scan_too_much_stops_with_a_cursor(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    rows = [entry(T0 + i, f"192.0.2.{i % 50}", f"n{i % 900}.example") for i in range(30_000)]
    rows[5] = entry(T0 + 5, "192.0.2.5", "n5.example", "servfail")
    write(path, rows)
    conn = querylog_data.connect(path)
    try:
        # With no time budget at all, each call searches one window of ids and hands back
        # a cursor; following the cursors reaches the match at the far end.
        f = Filters(client="192.0.2.5", verdict="servfail")
        page = querylog_data.search(conn, f, budget=0.0)
        assert not page.complete and page.rows == [] and page.older is not None
        cursor: int | None
        calls, cursor = 1, page.older
        while cursor is not None and not page.rows:
            page = querylog_data.search(conn, f, before=cursor, budget=0.0)
            cursor, calls = page.older, calls + 1
        assert [r.id for r in page.rows] == [6] and calls > 2
        assert querylog_data.search(conn, f).rows == page.rows  # with time: in one go
    finally:
        conn.close()


def test_broad_patterns_test_each_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "q.db"
    names = ["h1.wide.example", "h2.wide.example", "h[3].wide.example", "wide.example"]
    write(path, [entry(T0 + i, "c", names[i % 4], "blocked" if i % 3 else "allowed")
                 for i in range(100)])  # fmt: skip
    conn = querylog_data.connect(path)
    try:
        for pattern in ("*.wide.example", "*[3]*", "*wide.example"):
            f = Filters(name=pattern, verdict="blocked")
            narrow = querylog_data.search(conn, f, limit=30)
            with monkeypatch.context() as m:
                m.setattr(querylog_data, "MAX_IN_NAMES", 0)
                match = querylog_data.name_condition(conn, pattern)
                assert match is not None and match.sql == "+qname GLOB ?", pattern
                wide = querylog_data.search(conn, f, limit=30)
            assert [r.id for r in wide.rows] == [r.id for r in narrow.rows], pattern
            assert narrow.rows and all(
                fnmatch.fnmatchcase(r.qname, pattern.replace("[", "[[]")) for r in narrow.rows
            )
    finally:
        conn.close()


def _aggregates(db: sqlite3.Connection) -> tuple[list[tuple[object, ...]], ...]:
    return (
        db.execute("SELECT minute, total, blocked, cached, failed FROM stats_minute ORDER BY 1")
        .fetchall(),
        db.execute("SELECT kind, key, hour, count FROM top_hour ORDER BY 1, 2, 3").fetchall(),
        db.execute("SELECT rname, last_hour FROM names ORDER BY 1").fetchall(),
    )  # fmt: skip


def _expected(db: sqlite3.Connection) -> tuple[list[tuple[object, ...]], ...]:
    minutes = db.execute(
        "SELECT CAST(ts AS INTEGER) / 60 AS m, count(*), sum(verdict = 'blocked'),"
        " sum(verdict = 'cached'), sum(verdict IN ('servfail', 'refused', 'formerr'))"
        " FROM queries GROUP BY m ORDER BY m"
    ).fetchall()
    tops = db.execute(
        "SELECT kind, key, hour, count(*) FROM ("
        " SELECT CASE verdict WHEN 'blocked' THEN 'blocked' ELSE 'domain' END AS kind,"
        "  qname AS key, CAST(ts AS INTEGER) / 3600 AS hour FROM queries"
        " UNION ALL SELECT 'client', client, CAST(ts AS INTEGER) / 3600 FROM queries)"
        " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    ).fetchall()
    seen = db.execute(
        "SELECT qname, max(CAST(ts AS INTEGER) / 3600) FROM queries GROUP BY qname"
    ).fetchall()
    return minutes, tops, sorted((name[::-1], hour) for name, hour in seen)


def _random_rows(n: int, start: float, seed: int) -> list[LogEntry]:
    rnd = random.Random(seed)
    verdicts = ["allowed", "blocked", "cached", "servfail", "refused"]
    return [
        entry(start + rnd.random() * 4 * 3600, f"c{rnd.randrange(5)}",
              f"n{rnd.randrange(40)}.example", rnd.choice(verdicts))
        for _ in range(n)
    ]  # fmt: skip


def test_the_writer_keeps_the_aggregates_in_step_with_the_rows(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    write(path, _random_rows(3_000, time.time() - 5 * 3600, 1))
    write(path, _random_rows(500, time.time() - 5 * 3600, 2))  # a second run adds up
    with sqlite3.connect(path) as db:
        assert _aggregates(db) == _expected(db)


def test_an_older_log_is_migrated_and_counted_in_the_background(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    with sqlite3.connect(path) as db:  # the schema before aggregates and web filtering
        db.executescript(
            "CREATE TABLE queries (id INTEGER PRIMARY KEY, ts REAL NOT NULL, client TEXT NOT"
            " NULL, qname TEXT NOT NULL, qtype INTEGER NOT NULL, verdict TEXT NOT NULL, rule"
            " TEXT, list TEXT, upstream TEXT, latency_ms REAL NOT NULL, rcode INTEGER NOT NULL);"
            "CREATE INDEX queries_ts ON queries (ts);"
            "CREATE INDEX queries_client_ts ON queries (client, ts);"
        )
        old = _random_rows(50_000, time.time() - 5 * 3600, 3)
        db.executemany("INSERT INTO queries VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       [e[:10] for e in old])  # fmt: skip
    log = QueryLog(path, interval=0.05)
    try:
        assert log.backfilling
        log.log(entry(time.time(), "new-client", "new.example"))
        deadline = time.monotonic() + 30
        while log.backfilling:
            assert time.monotonic() < deadline, "the backfill did not finish"
            time.sleep(0.05)
        log.flush()
    finally:
        log.close()
    with sqlite3.connect(path) as db:
        assert _aggregates(db) == _expected(db)
        indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_schema WHERE type='index'")}
        assert {"queries_client_id", "queries_qname_id", "queries_verdict"} <= indexes
        assert "queries_client_ts" not in indexes
        assert dict(db.execute("SELECT key, value FROM querylog_meta")) == {"aggregates": 1}
    log = QueryLog(path, interval=3600)  # reopening counts nothing twice
    try:
        assert not log.backfilling
    finally:
        log.close()


def test_retention_prunes_the_aggregates_too(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    now = time.time()
    write(path, [entry(now - 3 * 86_400, "old", "old.example"), entry(now, "new", "new.example")],
          retention_days=1)  # fmt: skip
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM queries").fetchone() == (1,)
        assert db.execute("SELECT sum(total) FROM stats_minute").fetchone() == (1,)
        keys = {r[0] for r in db.execute("SELECT key FROM top_hour")}
        assert keys == {"new", "new.example"}
        assert db.execute("SELECT rname FROM names").fetchall() == [("new.example"[::-1],)]

"""The per-site report: blocked by category, anomalies, uptime from gaps, policy changes,
and CSS that prints."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.webui.fleet import Fleet, checkin_body, publish_bundle, running_fleet
from webui.fleet.app import FleetSettings
from webui.fleet.report import PeriodError, cumulative_increase, parse_period, uptime_of

DAY = dt.datetime(2026, 5, 28, tzinfo=dt.UTC).timestamp()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with running_fleet(tmp_path, FleetSettings(checkin_interval=60.0)) as running:
        running.clock.now = DAY + 3600  # 01:00Z
        yield running


def _cells(html: str, section: str) -> list[list[str]]:
    part = html[html.index(f'id="{section}"') :]
    part = part[: part.index("</section>")]
    rows = [
        [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        for row in re.findall(r"<tr>(.*?)</tr>", part, re.S)
    ]
    return [row for row in rows if row]  # the header rows have no <td>


def test_a_days_report_from_the_checkin_history(fleet: Fleet) -> None:
    publish_bundle(fleet.publish, "acme-hq", 3, "first baseline")
    token = fleet.credential("acme-hq")
    blocked = iter([0, 5, 12])

    def check_in(minute: int, **changes: object) -> None:
        fleet.clock.now = DAY + 3600 + minute * 60
        body = checkin_body("acme-hq", "box-1", **changes)
        assert fleet.checkin(token, body).status == 200

    for minute in range(60):  # every minute 01:00-01:59, bundle v3
        counters: dict[str, object] = (
            {"blocked": {"category:malware": next(blocked)}} if minute < 3 else {}
        )
        if minute in (10, 11):  # the firewall's drops by the spamhaus feed, both directions
            counters["counters"] = [
                {"comment": "blocklist spamhaus-drop inbound", "packets": 4 * minute},
                {"comment": "blocklist spamhaus-drop outbound", "packets": minute},
                {"comment": "lan-out", "packets": 1000 * minute},
            ]
        check_in(minute, counters=counters, health={"uptime_s": 600 + minute * 60})
    publish_bundle(fleet.publish, "acme-hq", 4, "block ads everywhere")
    # silent 01:59 -> 02:30 (31 min: 30 min down, one interval was due anyway);
    # back after a restart, on bundle v4
    check_in(
        90,
        bundle_version=4,
        counters={"blocked": {"category:malware": 3}},
        health={"uptime_s": 30},
        anomalies={"max_host_score": 92, "open_high": 1},
    )
    for minute in range(91, 121):
        check_in(
            minute,
            bundle_version=4,
            health={"uptime_s": 30 + (minute - 90) * 60},
            live_version=13 if minute >= 100 else 12,
        )  # a local change at 02:40
    resp = fleet.get("/sites/acme-hq/report?from=2026-05-28&to=2026-05-28")
    assert resp.status == 200, resp.text
    html = resp.text
    blocked_rows = _cells(html, "blocked")  # the threats table, then the firewall rules
    assert blocked_rows[:2] == [
        ["category:malware", "15"],  # 5 + 7 + 3 (after restart)
        ["spamhaus-drop (firewall feed)", "5"],  # (44 - 40) + (11 - 10); accepts are not threats
    ]
    assert ["lan-out", "1000"] in blocked_rows[2:]
    [uptime] = _cells(html, "uptime")
    assert uptime == ["box-1", "75.00 %", "30 min", "1", "91"]  # 30 of 120 min down
    anomalies = _cells(html, "anomalies")
    detail = "host anomaly score 92, 1 open high alert(s)"
    resolved = "resolved 2026-05-28T02:31:00Z"
    assert ["2026-05-28T02:30:00Z", "box-1", "anomaly", detail, resolved] in anomalies
    assert "box-1 92" in html
    changes = _cells(html, "changes")
    assert changes == [
        ["2026-05-28T02:30:00Z", "box-1", "MSP", "bundle v4: block ads everywhere"],
        ["2026-05-28T02:40:00Z", "box-1", "local admin", "config version 13"],
    ]


def test_the_report_of_another_day_is_empty(fleet: Fleet) -> None:
    token = fleet.credential("acme-hq")
    assert fleet.checkin(token, checkin_body("acme-hq", "box-1")).status == 200
    html = fleet.get("/sites/acme-hq/report?from=2026-05-20&to=2026-05-21").text
    assert "No policy changes in this period" in html
    assert "No alerts in this period" in html
    assert "No blocked-by-category counters" in html


def test_the_report_prints_well(fleet: Fleet) -> None:
    fleet.credential("acme-hq")
    html = fleet.get("/sites/acme-hq/report").text
    css_link = re.search(r'<link rel="stylesheet" href="([^"]+)"', html)
    assert css_link is not None
    css = fleet.get(css_link.group(1)).text
    media = css[css.index("@media print") :]
    assert "@page" in media and "form.period" in media and "display: none" in media
    assert 'class="period no-print"' in html  # the period form is not printed


def test_a_bad_period_is_400_with_a_reason(fleet: Fleet) -> None:
    fleet.credential("acme-hq")
    resp = fleet.get("/sites/acme-hq/report?from=2026-05-29&to=2026-05-28")
    assert resp.status == 400 and "is after to" in resp.text
    assert fleet.get("/sites/acme-hq/report?from=yesterday").status == 400
    assert fleet.get("/sites/unknown/report").status == 404


def test_period_parsing() -> None:
    today = dt.date(2026, 5, 28)
    start, end = parse_period("2026-05-01", "2026-05-31", today)
    assert (end - start) == 31 * 86400
    start, end = parse_period(None, None, today)  # the last 30 days, today included
    assert end == DAY + 86400 and end - start == 30 * 86400
    with pytest.raises(PeriodError, match="at most 400 days"):
        parse_period("2024-01-01", "2026-01-01", today)


def test_counter_increase_survives_restarts() -> None:
    assert cumulative_increase([10, 15, 15, 2, 9]) == 5 + 0 + 2 + 7
    assert cumulative_increase([4]) == 0


def test_uptime_counts_long_gaps_and_the_edges_of_the_window() -> None:
    up = uptime_of("b", [100.0, 160.0], [5, 65], (0.0, 1000.0), 60.0)
    # 0->100: 100 s > 120? no; 160->1000: 840 s gap, 780 s down
    assert up.down_s == 780.0 and up.restarts == 0 and up.checkins == 2
    assert round(up.percent, 1) == 22.0

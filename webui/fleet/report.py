"""The per-site report for a period: what the MSP brings to the client's review meeting.

Everything comes from what the appliances reported at check-in, kept in the history table:

* blocked threats by category: the ``counters`` an appliance reports are cumulative (they
  restart from zero when the appliance restarts), so the period's count is the sum of the
  increases between consecutive check-ins, a drop counting as a restart. Two shapes are
  read: ``counters.blocked = {category: count}`` (DNS blocks by list/category) and the
  firewall's ``counters.counters = [{"comment", "packets"}]`` (``<state>/counters.json``);
  the block-list rules among those (``blocklist <feed> inbound|outbound``) also count as
  blocked threats, one category per feed, both directions together;
* anomalies: the alerts this server raised (score at or above the threshold), when each
  was resolved, and the highest score each appliance reported;
* uptime: a gap between check-ins longer than two intervals counts as down time, minus
  the one interval a healthy appliance would have waited anyway; a falling ``uptime_s`` is
  a restart;
* policy changes: a new ``bundle_version`` is an MSP bundle (its message from the
  published bundle), a new ``live_version`` with the same bundle is a local admin change.

HTML only, with print CSS: the browser's "print to PDF" is the PDF export.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Response, abort, render_template, request

from webui.fleet.app import fleet_settings, fleet_store, now
from webui.fleet.store import Alert, Appliance, HistoryRow
from webui.fleet.views import SITE_RE, iso

bp = Blueprint("report", __name__)
MAX_DAYS = 400
DEFAULT_DAYS = 30


class PeriodError(ValueError):
    pass


@dataclass(frozen=True)
class Uptime:
    appliance_id: str
    observed_s: float
    down_s: float
    restarts: int
    checkins: int

    @property
    def percent(self) -> float:
        return 100.0 if self.observed_s <= 0 else 100.0 * (1 - self.down_s / self.observed_s)


@dataclass(frozen=True)
class PolicyChange:
    at: float
    appliance_id: str
    who: str
    what: str


@dataclass
class SiteReport:
    site: str
    start: float
    end: float
    blocked: list[tuple[str, int]] = field(default_factory=list)
    firewall: list[tuple[str, int]] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    peak_scores: dict[str, int] = field(default_factory=dict)
    uptime: list[Uptime] = field(default_factory=list)
    changes: list[PolicyChange] = field(default_factory=list)


def parse_period(start: str | None, end: str | None, today: dt.date) -> tuple[float, float]:
    """``from``/``to`` (YYYY-MM-DD, UTC, both days included) as ``[start, end)`` timestamps."""
    try:
        last = dt.date.fromisoformat(end) if end else today
        first = (
            dt.date.fromisoformat(start) if start else last - dt.timedelta(days=DEFAULT_DAYS - 1)
        )
    except ValueError as exc:
        raise PeriodError(f"from/to: dates as YYYY-MM-DD ({exc})") from exc
    if first > last:
        raise PeriodError(f"from ({first}) is after to ({last})")
    if (last - first).days >= MAX_DAYS:
        raise PeriodError(f"a report covers at most {MAX_DAYS} days")

    def midnight(day: dt.date) -> float:
        return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()

    return midnight(first), midnight(last + dt.timedelta(days=1))


def cumulative_increase(values: list[int]) -> int:
    """The increase of a counter that restarts from zero, over consecutive readings."""
    total = 0
    for before, after in itertools.pairwise(values):
        total += after - before if after >= before else after
    return total


def _counter_series(rows: list[HistoryRow]) -> tuple[Counter[str], Counter[str]]:
    series_blocked: dict[str, list[int]] = defaultdict(list)
    series_fw: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        blocked = row.counters.get("blocked")
        if isinstance(blocked, dict):
            for name, count in blocked.items():
                if isinstance(count, int):
                    series_blocked[str(name)].append(count)
        rules = row.counters.get("counters")
        if isinstance(rules, list):
            for rule in rules:
                if isinstance(rule, dict) and isinstance(rule.get("packets"), int):
                    name = str(rule.get("comment") or rule.get("chain") or "?")
                    series_fw[name].append(rule["packets"])
    return (
        Counter({k: cumulative_increase(v) for k, v in series_blocked.items()}),
        Counter({k: cumulative_increase(v) for k, v in series_fw.items()}),
    )


def uptime_of(
    appliance_id: str, times: list[float], uptimes: list[int | None], window: tuple[float, float],
    interval: float,
) -> Uptime:  # fmt: skip
    """Down time from the gaps between check-ins in ``window`` (its edges included)."""
    start, end = window
    if end <= start:
        return Uptime(appliance_id, 0.0, 0.0, 0, len(times))
    points = [start, *times, end]
    down = sum(
        max(0.0, (b - a) - interval) for a, b in itertools.pairwise(points) if b - a > 2 * interval
    )
    known = [u for u in uptimes if u is not None]
    restarts = sum(1 for a, b in itertools.pairwise(known) if b < a)
    return Uptime(appliance_id, end - start, min(down, end - start), restarts, len(times))


def _policy_changes(
    appliance_id: str, rows: list[HistoryRow], messages: dict[int, tuple[str, str]]
) -> list[PolicyChange]:
    changes: list[PolicyChange] = []
    for before, after in itertools.pairwise(rows):
        if after.bundle_version is not None and after.bundle_version != before.bundle_version:
            message = messages.get(after.bundle_version, ("", "(message not seen by this server)"))
            changes.append(
                PolicyChange(after.at, appliance_id, "MSP", f"bundle v{after.bundle_version}: "
                             f"{message[1]}")
            )  # fmt: skip
        elif after.live_version is not None and after.live_version != before.live_version:
            changes.append(
                PolicyChange(after.at, appliance_id, "local admin",
                             f"config version {after.live_version}")
            )  # fmt: skip
    return changes


def build_report(
    site: str, appliances: list[Appliance], history: list[HistoryRow], alerts: list[Alert],
    messages: dict[int, tuple[str, str]], period: tuple[float, float], at: float,
    interval: float,
) -> SiteReport:  # fmt: skip
    """The report from stored facts only (pure: the route gathers, this computes)."""
    start, end = period
    report = SiteReport(site, start, end, alerts=alerts)
    by_cred: dict[int, list[HistoryRow]] = defaultdict(list)
    for row in history:
        by_cred[row.credential_id].append(row)
    blocked: Counter[str] = Counter()
    firewall: Counter[str] = Counter()
    for app in appliances:
        if app.appliance_id is None or app.first_seen is None:
            continue
        rows = by_cred.get(app.credential_id, [])
        b, f = _counter_series(rows)
        blocked.update(b)
        firewall.update(f)
        scores = [r.max_score for r in rows if r.max_score is not None]
        if scores:
            report.peak_scores[app.appliance_id] = max(scores)
        window = (max(start, app.first_seen), min(end, at))
        report.uptime.append(
            uptime_of(app.appliance_id, [r.at for r in rows], [r.uptime_s for r in rows],
                      window, interval)
        )  # fmt: skip
        report.changes.extend(_policy_changes(app.appliance_id, rows, messages))
    for comment, packets in firewall.items():
        # The compiler's block-list rules: "blocklist <name> inbound|outbound" (a threat feed)
        if match := _FEED_RULE.fullmatch(comment):
            blocked[f"{match[1]} (firewall feed)"] += packets
    report.blocked = [(k, v) for k, v in blocked.most_common() if v > 0]
    report.firewall = [(k, v) for k, v in firewall.most_common(15) if v > 0]
    report.changes.sort(key=lambda c: c.at)
    return report


_FEED_RULE = re.compile(r"blocklist (\S+) (?:inbound|outbound)")


def _day(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d")


@bp.get("/sites/<site>/report")
def site_report(site: str) -> str | tuple[str, int] | Response:
    if not SITE_RE.match(site):
        abort(404)
    at = now()
    try:
        period = parse_period(
            request.args.get("from"), request.args.get("to"),
            dt.datetime.fromtimestamp(at, dt.UTC).date(),
        )  # fmt: skip
    except PeriodError as exc:
        return render_template("fleet/report_error.html", site=site, message=str(exc),
                               generated=iso(at)), 400  # fmt: skip
    store = fleet_store()
    appliances = store.appliances(site)
    if not appliances:
        abort(404)
    report = build_report(
        site, appliances, store.history(site, *period),
        store.alerts(site=site, open_only=False, since=period[0], until=period[1]),
        store.bundle_messages(site), period, at, fleet_settings().checkin_interval,
    )  # fmt: skip
    context: dict[str, Any] = {
        "r": report,
        "first_day": _day(period[0]),
        "last_day": _day(period[1] - 1),
        "iso": iso,
        "generated": iso(at),
        "high_score": fleet_settings().high_score,
    }
    return render_template("fleet/report.html", **context)

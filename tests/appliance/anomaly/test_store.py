"""The anomaly store: one row per alert key, statuses that respect the admin, retention."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from appliance.anomaly.records import Alert
from appliance.anomaly.store import AnomalyStore, read_only, row_dict, severity_rank
from appliance.errors import AnomalyError

DAY = 86400.0
T0 = 1_760_000_000.0


def alert(
    host: str = "192.0.2.10", severity: str = "medium", score: int = 55, **kw: object
) -> Alert:
    base = Alert(
        host=host,
        kind="beacon",
        peer="198.51.100.7",
        score=score,
        severity=severity,  # type: ignore[arg-type]
        first=T0 - 3600,
        last=T0,
        explanation="every 60 s to 198.51.100.7",
        subscores={"timing": 0.9},
        modifiers={"rarity": 1.2},
        evidence={"connections": 61, "interval": 60.0},
    )
    return replace(base, **kw)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> AnomalyStore:
    return AnomalyStore.in_state_dir(tmp_path)


def test_an_updated_alert_updates_its_row(store: AnomalyStore) -> None:
    [first] = store.record([alert()], T0, {"192.0.2.10": 55})
    assert first.is_new and first.status == "open"
    [again] = store.record([alert(score=80, severity="high", last=T0 + 300)], T0 + 300)
    assert again.id == first.id and not again.is_new and again.previous_severity == "medium"
    [row] = store.alerts()
    assert (row.alert.score, row.alert.severity, row.alert.last, row.ts) == (
        80, "high", T0 + 300, T0 + 300
    )  # fmt: skip
    assert row.alert.evidence == {"connections": 61, "interval": 60.0}
    other = store.record([alert(peer="198.51.100.8")], T0 + 301)
    assert other[0].id != first.id and len(store.alerts()) == 2
    assert store.host_scores() == {"192.0.2.10": 55}


def test_a_dismissed_alert_reopens_only_when_it_gets_worse(store: AnomalyStore) -> None:
    [row] = store.record([alert(severity="medium")], T0)
    assert store.set_status(row.id, "dismissed") and not store.set_status(row.id, "dismissed")
    [same] = store.record([alert(severity="medium", score=58)], T0 + 60)
    assert same.status == "dismissed" and same.mark_severity == "medium"
    [lower] = store.record([alert(severity="low", score=30)], T0 + 120)
    assert lower.status == "dismissed"
    [worse] = store.record([alert(severity="high", score=75)], T0 + 180)
    assert worse.status == "open"
    assert store.alerts(["dismissed"]) == [] and store.alerts(["open"])[0].id == row.id


def test_dismissed_by_another_writer_is_marked_too(store: AnomalyStore, tmp_path: Path) -> None:
    """The web UI dismisses with its own UPDATE; the trigger records the severity anyway."""
    [row] = store.record([alert(severity="high", score=70)], T0)
    with sqlite3.connect(tmp_path / "anomalies.db") as other:
        other.execute("UPDATE anomalies SET status = 'dismissed' WHERE id = ?", (row.id,))
    other.close()
    stored = store.alert(row.id)
    assert stored is not None and stored.mark_severity == "high"
    [again] = store.record([alert(severity="high", score=74)], T0 + 60)
    assert again.status == "dismissed"


def test_quarantine_rows_and_the_alert_they_came_from(store: AnomalyStore) -> None:
    [row] = store.record([alert(severity="critical", score=97)], T0)
    entry = store.add_quarantine("192.0.2.10", "beacon", "auto", T0, row.id)
    assert entry is not None and entry.by == "auto" and entry.lifted is None
    assert store.add_quarantine("192.0.2.10", "again", "bob", T0 + 1) is None  # one active
    assert store.alert(row.id).status == "quarantined"  # type: ignore[union-attr]
    lifted = store.lift_quarantine("192.0.2.10", "bob", T0 + 600)
    assert lifted is not None and lifted.lifted == T0 + 600 and lifted.lifted_by == "bob"
    assert store.lift_quarantine("192.0.2.10", "bob", T0 + 601) is None
    after = store.alert(row.id)
    assert after is not None and after.status == "lifted" and after.mark_severity == "critical"
    assert store.quarantined() == []
    again = store.add_quarantine("192.0.2.10", "by hand", "carol", T0 + 700)
    assert again is not None and [e.id for e in store.quarantined()] == [again.id]
    assert [e.by for e in store.quarantine_history()] == ["carol", "auto"]


def test_retention_keeps_active_quarantines(store: AnomalyStore) -> None:
    [old] = store.record([alert(host="192.0.2.11")], T0, {"192.0.2.11": 40})
    [kept] = store.record([alert(host="192.0.2.12", severity="critical")], T0)
    store.add_quarantine("192.0.2.12", "x", "auto", T0, kept.id)
    store.add_quarantine("192.0.2.13", "x", "auto", T0)
    store.lift_quarantine("192.0.2.13", "bob", T0)
    store.record([alert(host="192.0.2.14")], T0 + 80 * DAY)
    store.prune(T0 + 91 * DAY)
    assert {r.alert.host for r in store.alerts()} == {"192.0.2.12", "192.0.2.14"}
    assert store.host_scores() == {}
    assert [e.address for e in store.quarantine_history()] == ["192.0.2.12"]
    assert old.id not in [r.id for r in store.alerts()]


def test_record_is_one_transaction(store: AnomalyStore, tmp_path: Path) -> None:
    """A reader sees all of an evaluation's alerts or none of them."""
    bad = alert(host="192.0.2.99", evidence={"x": object()})  # JSON-encodable via str()
    store.record([alert(), bad], T0)
    conn = read_only(tmp_path / "anomalies.db")
    assert conn is not None
    rows = [row_dict(r) for r in conn.execute("SELECT * FROM anomalies ORDER BY id")]
    conn.close()
    assert [r["host"] for r in rows] == ["192.0.2.10", "192.0.2.99"]
    assert rows[0]["subscores"] == {"timing": 0.9} and rows[0]["status"] == "open"
    mode = sqlite3.connect(tmp_path / "anomalies.db").execute("PRAGMA journal_mode").fetchone()
    assert mode[0] == "wal"


def test_bad_statuses_and_paths_are_refused(store: AnomalyStore, tmp_path: Path) -> None:
    with pytest.raises(AnomalyError, match="unknown alert status"):
        store.set_status(1, "closed")
    (tmp_path / "file").write_text("")
    with pytest.raises(AnomalyError, match="cannot open the anomaly store"):
        AnomalyStore(tmp_path / "file" / "anomalies.db")
    assert read_only(tmp_path / "nope.db") is None
    assert severity_rank("critical") == 4 and severity_rank(None) == -1

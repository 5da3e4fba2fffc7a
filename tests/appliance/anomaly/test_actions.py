"""Alert actions: record / notify (a real local webhook and a real UDP syslog socket) /
quarantine only on high confidence, never protected hosts, and reversible."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from appliance.anomaly.actions import ActionSettings, AlertActions
from appliance.anomaly.notify import (
    BackgroundNotifier,
    SyslogSender,
    WebhookSender,
    notifier_for,
    syslog_message,
)
from appliance.anomaly.quarantine import MemoryQuarantineSets, QuarantineManager
from appliance.anomaly.records import Alert
from appliance.anomaly.store import AnomalyStore
from policies.loader import parse_policy

T0 = 1_760_000_000.0
POLICY = """\
version: 1
site: {name: branch-7}
zones:
  wan: {interfaces: [wan0], addresses: [203.0.113.2/24]}
  lan: {interfaces: [lan0], addresses: [192.0.2.1/26]}
  mgmt: {interfaces: [mgmt0], addresses: [192.0.2.193/27]}
address_groups:
  servers: [192.0.2.20]
nat: {masquerade: [wan]}
management: {zones: [mgmt]}
anomaly:
  record: low
  notify: high
  quarantine: high
  quarantine_min_score: 90
  exempt: [servers]
"""


def alert(host: str = "192.0.2.10", severity: str = "critical", score: int = 96) -> Alert:
    return Alert(
        host=host,
        kind="beacon",
        peer="198.51.100.7",
        score=score,
        severity=severity,  # type: ignore[arg-type]
        first=T0 - 3600,
        last=T0,
        explanation='every 60 s to 198.51.100.7 "c2"]',
        evidence={"connections": 61},
    )


class Recorder:
    """A Notifier that keeps what it was handed."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def notify(self, body: dict[str, Any]) -> None:
        self.bodies.append(body)


@pytest.fixture
def parts(tmp_path: Path) -> tuple[AlertActions, Recorder, QuarantineManager]:
    policy = parse_policy(POLICY, "p.yaml").policy
    store = AnomalyStore.in_state_dir(tmp_path)
    manager = QuarantineManager(store, lambda: T0)
    notes = Recorder()
    settings = ActionSettings.from_policy(policy, admin_addresses=["192.0.2.30"])
    return AlertActions(store, settings, notes, manager, lambda: T0), notes, manager


def test_levels_decide_what_is_recorded_and_notified(
    parts: tuple[AlertActions, Recorder, QuarantineManager],
) -> None:
    actions, notes, _ = parts
    report = actions.handle(
        [alert("192.0.2.11", "info", 10), alert("192.0.2.12", "medium", 50),
         alert("192.0.2.13", "high", 70)],
        {"192.0.2.13": 70},
    )  # fmt: skip
    assert [r.alert.host for r in report.recorded] == ["192.0.2.12", "192.0.2.13"]
    assert [b["host"] for b in notes.bodies] == ["192.0.2.13"]
    body = notes.bodies[0]
    assert body["site"] == "branch-7" and body["action"] == "alert" and body["score"] == 70
    assert body["evidence"] == {"connections": 61} and body["id"] == report.notified[0]
    assert report.quarantined == []  # high, but scores 70 < 90
    assert actions.store.host_scores() == {"192.0.2.13": 70}
    actions.handle([alert("192.0.2.13", "high", 72)])
    assert len(notes.bodies) == 1  # the same alert, not raised: no second notification


def test_a_confident_alert_quarantines_and_lifting_is_respected(
    parts: tuple[AlertActions, Recorder, QuarantineManager],
) -> None:
    actions, notes, manager = parts
    report = actions.handle([alert("192.0.2.10", "high", 93)])
    assert report.quarantined == ["192.0.2.10"]
    [entry] = manager.active()
    assert entry.by == "auto" and entry.alert_id == report.recorded[0].id
    assert "beacon alert" in entry.reason and "scored 93" in entry.reason
    assert [b["action"] for b in notes.bodies] == ["alert", "quarantined"]
    feed = MemoryQuarantineSets()
    manager.sync(feed)
    assert feed.sets["quarantine4"] == {"192.0.2.10"}

    manager.lift("192.0.2.10", by="alice")
    again = actions.handle([alert("192.0.2.10", "high", 95)])
    assert again.quarantined == [] and "lifted" in again.held_back["192.0.2.10"]
    higher = actions.handle([alert("192.0.2.10", "critical", 99)])
    assert higher.quarantined == ["192.0.2.10"]  # a new, higher alert
    manager.sync(feed)
    assert feed.sets["quarantine4"] == {"192.0.2.10"}


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("192.0.2.1", "appliance"),  # the box's own LAN address
        ("192.0.2.30", "admin"),  # the caller's admin session
        ("192.0.2.200", "management"),  # anti-lockout zone
        ("192.0.2.20", "exempt"),  # exempt: [servers]
    ],
)
def test_protected_hosts_are_never_quarantined(
    parts: tuple[AlertActions, Recorder, QuarantineManager], host: str, why: str
) -> None:
    actions, _, manager = parts
    report = actions.handle([alert(host, "critical", 100)])
    assert report.quarantined == [] and why in report.held_back[host]
    assert manager.active() == []


def test_dismissed_alerts_and_never_do_not_quarantine(
    parts: tuple[AlertActions, Recorder, QuarantineManager], tmp_path: Path
) -> None:
    actions, _, manager = parts
    [row] = actions.handle([alert("192.0.2.10", "high", 85)]).recorded
    actions.store.set_status(row.id, "dismissed")
    report = actions.handle([alert("192.0.2.10", "high", 92)])
    assert report.quarantined == [] and "dismissed" in report.held_back["192.0.2.10"]
    never = replace(actions.settings, quarantine="never")
    quiet = AlertActions(actions.store, never, None, manager, lambda: T0)
    assert quiet.handle([alert("192.0.2.11", "critical", 100)]).quarantined == []
    assert manager.active() == []


# -- real senders ---------------------------------------------------------------------------
@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]], list[int]]]:
    """A local HTTP server; answers 503 while ``failures`` has items (popping one each)."""
    received: list[dict[str, Any]] = []
    failures: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            data = json.loads(self.rfile.read(length))
            status = 503 if failures and failures.pop() else 204
            if status == 204:
                received.append(data)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received, failures
    finally:
        server.shutdown()
        server.server_close()


def test_webhook_gets_the_alert_json_and_retries(
    webhook: tuple[str, list[dict[str, Any]], list[int]],
) -> None:
    url, received, failures = webhook
    failures += [1, 1]  # two 503s, then success
    notifier = BackgroundNotifier([WebhookSender(url, timeout=2)], retry_delays=(0.01, 0.01, 0.01))
    body = {**alert().to_json(), "site": "branch-7"}
    notifier.notify(body)
    assert notifier.flush(5)
    assert received == [json.loads(json.dumps(body))]
    stats = notifier.stats()
    assert (stats["sent"], stats["retried"], stats["failed"]) == (1, 2, 0)
    notifier.stop()


def test_a_dead_webhook_is_counted_and_never_blocks() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    notifier = BackgroundNotifier(
        [WebhookSender(f"http://127.0.0.1:{port}/", timeout=0.5)],
        retry_delays=(0.01,),
        max_queue=2,
    )
    for _ in range(5):
        notifier.notify({"host": "192.0.2.10"})  # returns at once; the queue is bounded
    assert notifier.flush(10)
    stats = notifier.stats()
    assert stats["failed"] + stats["dropped"] == 5 and stats["failed"] >= 2
    assert "ConnectionRefusedError" in stats["last_error"] or "URLError" in stats["last_error"]
    notifier.stop()


def test_syslog_over_udp_is_rfc5424_with_structured_data() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        sender = SyslogSender(sock.getsockname(), clock=lambda: T0)
        notifier = BackgroundNotifier([sender], retry_delays=())
        notifier.notify({**alert().to_json(), "site": "branch-7", "action": "alert"})
        data = sock.recv(4096).decode()
        notifier.stop()
    # <PRI>: facility daemon (3) * 8 + critical (2) = 26
    assert data.startswith("<26>1 2025-10-09T08:53:20Z ")
    assert ' edgeguard - anomaly [edgeguard@32473 site="branch-7" host="192.0.2.10"' in data
    assert 'kind="beacon" peer="198.51.100.7" score="96" severity="critical"' in data
    assert data.endswith('] every 60 s to 198.51.100.7 "c2"]')


def test_syslog_values_are_escaped() -> None:
    msg = syslog_message({"host": 'a"b]c\\', "explanation": "x\ny"}, T0, "")
    assert 'host="a\\"b\\]c\\\\"' in msg and msg.endswith("] x y") and " - edgeguard " in msg


def test_notifier_for_the_policy_section() -> None:
    assert notifier_for(None, False, None).senders == []
    both = notifier_for("https://msp.example/h", True, ("198.51.100.5", 514))
    assert [s.name for s in both.senders] == ["webhook", "syslog"]
    with pytest.raises(ValueError):
        WebhookSender("file:///etc/passwd")

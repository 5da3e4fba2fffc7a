"""Alert notifications: a webhook (JSON POST) and syslog, sent off the scoring path.

``BackgroundNotifier.notify`` only appends to a bounded queue; one daemon thread sends
each alert to every sender, retrying a few times with growing pauses (an MSP's webhook
being down for a minute must not lose the alert, and must never stall the scorer). What
still fails is logged and counted (``stats()``), and when the queue is full new alerts are
dropped and counted rather than blocking.

Syslog messages follow RFC 5424 (``<PRI>1 TIMESTAMP HOST edgeguard - anomaly [SD] MSG``)
with the alert's host, kind, peer, score and severity as structured data, so a SIEM can
filter on them without parsing the explanation.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import socket
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)

_SD_ID = "edgeguard@32473"  # 32473: the example Private Enterprise Number of RFC 5612
_LEVELS = {"critical": logging.CRITICAL, "high": logging.ERROR, "medium": logging.WARNING}


class Notifier(Protocol):
    """Where ``AlertActions`` hands an alert's JSON body; must return at once."""

    def notify(self, body: dict[str, Any]) -> None: ...


class Sender(Protocol):
    """One destination; ``send`` raises (OSError, ValueError) when it did not get through."""

    name: str

    def send(self, body: dict[str, Any]) -> None: ...


class WebhookSender:
    """POST the body as JSON to an http(s) URL (stdlib ``urllib``, short timeout)."""

    name = "webhook"

    def __init__(self, url: str, *, timeout: float = 3.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook must be an http(s) URL, got {url!r}")
        self.url = url
        self.timeout = timeout

    def send(self, body: dict[str, Any]) -> None:
        data = json.dumps(body, default=str).encode()
        request = urllib.request.Request(
            self.url,
            data=data,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "EdgeGuard anomaly"},
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as resp:
            if not 200 <= resp.status < 300:
                raise OSError(f"webhook answered HTTP {resp.status}")


def _sd_value(value: Any) -> str:
    """RFC 5424 PARAM-VALUE: escape the three characters it reserves."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def syslog_message(body: dict[str, Any], when: float, hostname: str) -> str:
    """The RFC 5424 message after ``<PRI>`` (which the syslog handler adds)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
    params = " ".join(
        f'{key}="{_sd_value(body.get(key, ""))}"'
        for key in ("site", "host", "kind", "peer", "score", "severity", "action")
        if body.get(key) not in (None, "")
    )
    text = " ".join(str(body.get("explanation", "")).split())
    return f"1 {stamp} {hostname or '-'} edgeguard - anomaly [{_SD_ID} {params}] {text}"


class _RaisingSysLogHandler(logging.handlers.SysLogHandler):
    def handleError(self, record: logging.LogRecord) -> None:
        raise


class SyslogSender:
    """Send to a syslog server over UDP, or to the local ``/dev/log`` (``address`` None)."""

    name = "syslog"

    def __init__(
        self,
        address: tuple[str, int] | None = None,
        *,
        facility: int = logging.handlers.SysLogHandler.LOG_DAEMON,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.address = address
        self.facility = facility
        self.clock = clock
        self.hostname = socket.gethostname()
        self._handler: logging.handlers.SysLogHandler | None = None

    def _open(self) -> logging.handlers.SysLogHandler:
        if self._handler is None:
            where: str | tuple[str, int] = self.address or "/dev/log"
            handler = _RaisingSysLogHandler(where, facility=self.facility)
            handler.append_nul = False
            self._handler = handler
        return self._handler

    def send(self, body: dict[str, Any]) -> None:
        handler = self._open()
        level = _LEVELS.get(str(body.get("severity")), logging.INFO)
        record = logging.LogRecord(
            __name__, level, __file__, 0, syslog_message(body, self.clock(), self.hostname),
            None, None,
        )  # fmt: skip
        try:
            handler.emit(record)
        except OSError:
            handler.close()
            self._handler = None  # reconnect next time (syslog restarted, route changed)
            raise

    def close(self) -> None:
        if self._handler is not None:
            self._handler.close()
            self._handler = None


@dataclass
class _Stats:
    queued: int = 0
    sent: int = 0
    failed: int = 0
    retried: int = 0
    dropped: int = 0
    last_error: str = ""


class BackgroundNotifier:
    """``Notifier`` that sends to ``senders`` from a daemon thread, with retries."""

    def __init__(
        self,
        senders: Sequence[Sender],
        *,
        retry_delays: Sequence[float] = (1.0, 5.0, 20.0),
        max_queue: int = 1000,
    ) -> None:
        self.senders = list(senders)
        self.retry_delays = tuple(retry_delays)
        self.max_queue = max_queue
        self._queue: deque[dict[str, Any]] = deque()
        self._stats = _Stats()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None

    def notify(self, body: dict[str, Any]) -> None:
        if not self.senders:
            return
        with self._lock:
            if len(self._queue) >= self.max_queue:
                self._stats.dropped += 1
                return
            self._queue.append(body)
            self._stats.queued += 1
            self._idle.clear()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="anomaly-notify", daemon=True)
            self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                body = self._queue.popleft() if self._queue else None
                if body is None:
                    self._idle.set()
            if body is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            for sender in self.senders:
                self._deliver(sender, body)

    def _deliver(self, sender: Sender, body: dict[str, Any]) -> None:
        for attempt in range(len(self.retry_delays) + 1):
            try:
                sender.send(body)
            except (OSError, ValueError) as exc:
                error = f"{sender.name}: {type(exc).__name__}: {exc}"
                with self._lock:
                    self._stats.last_error = error
                if attempt == len(self.retry_delays) or self._stop.wait(self.retry_delays[attempt]):
                    with self._lock:
                        self._stats.failed += 1
                    log.warning("anomaly notification failed, giving up: %s", error)
                    return
                with self._lock:
                    self._stats.retried += 1
                continue
            with self._lock:
                self._stats.sent += 1
            return

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until the queue is empty and nothing is in flight; False on timeout."""
        return self._idle.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for sender in self.senders:
            close = getattr(sender, "close", None)
            if close is not None:
                close()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            s = self._stats
            return {
                "queued": s.queued,
                "pending": len(self._queue),
                "sent": s.sent,
                "failed": s.failed,
                "retried": s.retried,
                "dropped": s.dropped,
                "last_error": s.last_error,
            }


def notifier_for(
    webhook: str | None, syslog: bool, syslog_address: tuple[str, int] | None
) -> BackgroundNotifier:
    """The notifier an ``anomaly:`` section asks for (no senders: notifies nobody)."""
    senders: list[Sender] = []
    if webhook:
        senders.append(WebhookSender(webhook))
    if syslog:
        senders.append(SyslogSender(syslog_address))
    return BackgroundNotifier(senders)


__all__ = [
    "BackgroundNotifier",
    "Notifier",
    "Sender",
    "SyslogSender",
    "WebhookSender",
    "notifier_for",
    "syslog_message",
]

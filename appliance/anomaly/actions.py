"""What alerts do: record them, notify someone, and (only if asked) quarantine the host.

The policy's ``anomaly:`` section chooses three thresholds: alerts at or above ``record``
are stored, at or above ``notify`` sent to the webhook/syslog, and at or above
``quarantine`` (``high`` or ``critical``, default ``never``) *and* scoring at least
``quarantine_min_score`` quarantine their host. Quarantine is the one action that cuts a
user off, so it is guarded further:

* never the appliance's own addresses, never an ``exempt`` address, never an address in a
  management (anti-lockout) zone, never an address the caller names as an admin's (the
  SSH client or web UI session the controller knows about);
* never for an alert an admin dismissed;
* a host whose quarantine was lifted is not quarantined again by the same alert; only if
  that alert's severity rises above what it was at the lift (a new, higher alert).

Every call to ``handle`` is one evaluation: one store transaction, then notifications are
queued (the notifier sends them from its own thread) and quarantines written to the
``quarantine`` table, which the controller's loop turns into nft set elements.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from appliance.anomaly.notify import Notifier
from appliance.anomaly.quarantine import QuarantineManager, canonical_address
from appliance.anomaly.records import Alert
from appliance.anomaly.store import AnomalyStore, StoredAlert, severity_rank
from appliance.errors import AnomalyError
from policies.intervals import Interval, contains

if TYPE_CHECKING:
    from policies.model import Policy

AUTO = "auto"
"""``by`` of automatic quarantines (people's quarantines carry their user name)."""


@dataclass(frozen=True)
class ActionSettings:
    """The thresholds and protections ``AlertActions`` applies (see ``from_policy``)."""

    site: str = "edgeguard"
    record: str = "low"
    notify: str = "high"  # or "never"
    quarantine: str = "never"  # "high", "critical" or "never"
    quarantine_min_score: int = 90
    exempt_v4: tuple[Interval, ...] = ()
    exempt_v6: tuple[Interval, ...] = ()
    protected: frozenset[str] = frozenset()  # canonical addresses: the box's, admins'
    protected_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def from_policy(cls, policy: Policy, admin_addresses: Iterable[str] = ()) -> ActionSettings:
        """Thresholds from ``policy.anomaly``; protections from the zones and management."""
        a = policy.anomaly
        own = [x.address for z in policy.zones for x in z.addresses]
        protected = frozenset(c for x in [*own, *admin_addresses] if (c := _canonical(x)))
        m = policy.management
        nets = (
            tuple(
                ipaddress.ip_network(f"{x.address}/{x.prefix}", strict=False)
                for z in policy.zones
                if z.name in m.zones
                for x in z.addresses
            )
            if m.anti_lockout
            else ()
        )
        base = cls(site=policy.site.name, protected=protected, protected_networks=nets)
        if a is None:
            return base
        return cls(
            site=base.site,
            record=a.record,
            notify=a.notify,
            quarantine=a.quarantine,
            quarantine_min_score=a.quarantine_min_score,
            exempt_v4=a.exempt.v4,
            exempt_v6=a.exempt.v6,
            protected=base.protected,
            protected_networks=nets,
        )


def _canonical(address: str) -> str | None:
    try:
        return canonical_address(address)[1]
    except AnomalyError:
        return None


@dataclass
class ActionReport:
    """What one ``handle`` call did (for logs, metrics and tests)."""

    recorded: list[StoredAlert] = field(default_factory=list)
    notified: list[int] = field(default_factory=list)  # alert ids
    quarantined: list[str] = field(default_factory=list)  # addresses
    held_back: dict[str, str] = field(default_factory=dict)  # address -> why not quarantined


class AlertActions:
    """Record / notify / quarantine, as ``settings`` say; ``clock`` gives epoch seconds."""

    def __init__(
        self,
        store: AnomalyStore,
        settings: ActionSettings,
        notifier: Notifier | None = None,
        quarantine_manager: QuarantineManager | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings
        self.notifier = notifier
        self.quarantine = quarantine_manager
        self.clock = clock

    def handle(
        self, alerts: Sequence[Alert], scores: Mapping[str, int] | None = None
    ) -> ActionReport:
        """Act on the alerts of one evaluation (new or raised ones) and store the scores."""
        s = self.settings
        keep = [a for a in alerts if self._at_least(a.severity, s.record) or self._candidate(a)]
        report = ActionReport(recorded=self.store.record(keep, self.clock(), scores))
        for row in report.recorded:
            if self._should_notify(row):
                self._notify(row, "alert")
                report.notified.append(row.id)
            why_not = self.why_not_quarantine(row) if self._candidate(row.alert) else "not asked"
            if why_not is None and self.quarantine is not None:
                alert = row.alert
                self.quarantine.add(
                    alert.host,
                    reason=f"{alert.kind} alert #{row.id} scored {alert.score} ({alert.severity})",
                    by=AUTO,
                    alert_id=row.id,
                )
                report.quarantined.append(alert.host)
                if s.notify != "never":
                    self._notify(row, "quarantined")
            elif why_not not in (None, "not asked"):
                report.held_back[row.alert.host] = str(why_not)
        return report

    # -- decisions ------------------------------------------------------------------------
    @staticmethod
    def _at_least(severity: str, level: str) -> bool:
        return level != "never" and severity_rank(severity) >= severity_rank(level)

    def _candidate(self, alert: Alert) -> bool:
        s = self.settings
        return (
            s.quarantine != "never"
            and self._at_least(alert.severity, s.quarantine)
            and alert.score >= s.quarantine_min_score
        )

    def _should_notify(self, row: StoredAlert) -> bool:
        if row.status == "dismissed" or not self._at_least(
            row.alert.severity, self.settings.notify
        ):
            return False
        return row.is_new or severity_rank(row.alert.severity) > severity_rank(
            row.previous_severity
        )

    def protected(self, address: str) -> str | None:
        """Why ``address`` may never be quarantined automatically, or None."""
        s = self.settings
        try:
            family, addr = canonical_address(address)
        except AnomalyError as exc:
            return str(exc)
        if addr in s.protected:
            return "an address of the appliance or of an admin"
        ip = ipaddress.ip_address(addr)
        if any(ip in net for net in s.protected_networks):
            return "in a management (anti-lockout) zone"
        if contains(s.exempt_v4 if family == 4 else s.exempt_v6, int(ip)):
            return "exempt in the policy"
        return None

    def why_not_quarantine(self, row: StoredAlert) -> str | None:
        """None if this (candidate) alert's host should be quarantined now, else why not."""
        if self.quarantine is None:
            return "no quarantine manager"
        reason = self.protected(row.alert.host)
        if reason is not None:
            return reason
        if row.status == "dismissed":
            return "the alert was dismissed"
        if row.status == "lifted" and severity_rank(row.alert.severity) <= severity_rank(
            row.mark_severity
        ):
            return "quarantine was lifted for this alert; it has not risen since"
        if self.quarantine.is_quarantined(row.alert.host):
            return "already quarantined"
        return None

    def _notify(self, row: StoredAlert, action: str) -> None:
        if self.notifier is None:
            return
        body: dict[str, Any] = {
            **row.alert.to_json(),
            "site": self.settings.site,
            "id": row.id,
            "status": "quarantined" if action == "quarantined" else row.status,
            "action": action,
        }
        self.notifier.notify(body)


__all__ = ["AUTO", "ActionReport", "ActionSettings", "AlertActions"]

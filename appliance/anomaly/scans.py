"""Scans (many ports on one host, one port on many hosts) and lateral movement inside the LAN.

Per internal host the detector keeps the set of (target, port) it contacted over the last
``horizon`` (24 h), each with first/last time and whether anything answered, so a slow scan
spread over hours counts the same as a fast one. What is kept is chosen to stay small:

* LAN targets: every contact (a LAN host has few peers; answered ones matter for lateral).
* External targets: only failed contacts (rejected, unanswered). A browser's thousands of
  answered connections a day are not a scan, and not remembering them is what keeps a
  busy host's state in the kilobytes.

Failed contacts weigh 1, answered ones ``success_weight``: scanning finds closed ports and
absent hosts, ordinary use finds open ones. UDP that got no reply at all weighs
``quiet_weight``: many UDP services (mDNS, syslog, NetBIOS) never answer anyone. Lateral
movement (an internal host reaching many internal hosts on SSH, SMB, RDP, WMI or WinRM) is
its own kind ``lateral``; those contacts are not also counted as a horizontal scan. Lateral
movement with answers from several hosts ("confirmed") is graded high from the start.

A busy host's connections fail now and then (a dead server, IPv6 without a route): over a day
that is dozens of failed targets on port 443. A horizontal scan is an *excess* of failures on
a port over ``background_failures`` times the answered connections on it.
"""

from __future__ import annotations

from collections import defaultdict

from appliance.anomaly.detector import Context
from appliance.anomaly.peers import remote_check
from appliance.anomaly.records import UDP, DnsRecord, Finding, FlowRecord
from appliance.anomaly.scantally import ANSWERED, FAILED, QUIET, Contact, Tally, grade, scan_finding

DAY = 86400.0
LATERAL_PORTS = frozenset({22, 135, 445, 3389, 5985, 5986})  # SSH, RPC/WMI, SMB, RDP, WinRM
CONFIRMED_FLOOR = 0.7

SWEEP_EVERY = 3600.0  # how often evaluate() ages contacts out


class ScanDetector:
    """Vertical and horizontal scans (kind ``scan``), fast or slow, and ``lateral`` movement."""

    kinds = ("scan", "lateral")

    def __init__(
        self,
        context: Context,
        *,
        vertical_ports: float = 15.0,
        horizontal_hosts: float = 15.0,
        lateral_hosts: int = 5,
        lateral_confirmed: int = 3,
        success_weight: float = 0.1,
        quiet_weight: float = 0.3,
        background_failures: float = 0.05,
        horizon: float = DAY,
        max_contacts_per_host: int = 4096,
    ) -> None:
        self._is_lan = context.networks.is_lan
        self._is_remote = remote_check(context.networks)
        self._infrastructure = context.infrastructure
        self.vertical_ports = vertical_ports
        self.horizontal_hosts = horizontal_hosts
        self.lateral_hosts = lateral_hosts
        self.lateral_confirmed = lateral_confirmed
        self.success_weight = success_weight
        self.quiet_weight = quiet_weight
        self.background_failures = background_failures
        self.horizon = horizon
        self.max_contacts_per_host = max_contacts_per_host
        self._hosts: dict[str, dict[tuple[str, int], Contact]] = {}
        self._weights = {FAILED: 1.0, QUIET: quiet_weight, ANSWERED: success_weight}
        # running weights per host and target / port, and lateral targets: which hosts are
        # worth judging (a full pass over their contacts) at the next evaluation
        self._by_target: dict[str, dict[str, float]] = {}
        self._by_port: dict[str, dict[int, float]] = {}
        self._lateral_targets: dict[str, set[str]] = {}
        self._candidates: set[str] = set()
        # answered outbound flows per host and port (a decaying count, not kept per target):
        # the background that a browser's occasional failed connections are measured against
        self._answered_out: dict[str, dict[int, float]] = {}
        self._next_sweep = float("-inf")

    def add_flow(self, rec: FlowRecord) -> None:
        src = rec.src
        if not self._is_lan(src):
            return
        dst, state = rec.dst, rec.state
        if state == "established" or state == "open" or (state == "" and rec.pkts_in > 0):
            outcome = ANSWERED
        elif rec.proto == UDP and state != "rejected":
            outcome = QUIET
        else:
            outcome = FAILED
        inside = self._is_lan(dst)
        if inside:
            if dst == src or dst in self._infrastructure:
                return
        elif outcome == ANSWERED:
            answered = self._answered_out.get(src)
            if answered is None:
                answered = self._answered_out[src] = {}
            answered[rec.dport] = answered.get(rec.dport, 0.0) + 1.0
            return
        elif not self._is_remote(dst):
            return
        contacts = self._hosts.get(src)
        if contacts is None:
            contacts = self._hosts[src] = {}
        key = (dst, rec.dport)
        ts = rec.start
        old = contacts.get(key)
        if old is None:
            contacts[key] = (ts, ts, outcome)
            self._count(src, dst, rec.dport, inside, self._weights[outcome])
            if len(contacts) > self.max_contacts_per_host:
                self._shrink(src, contacts)
        elif outcome == ANSWERED and old[2] != ANSWERED:
            contacts[key] = (old[0], max(ts, old[1]), ANSWERED)
            delta = self._weights[ANSWERED] - self._weights[old[2]]
            self._count(src, dst, rec.dport, inside, delta)
        elif ts > old[1]:
            contacts[key] = (old[0], ts, old[2])

    def _count(self, host: str, dst: str, port: int, inside: bool, weight: float) -> None:
        """Add a contact's weight; a host crossing a threshold becomes a candidate."""
        targets = self._by_target.setdefault(host, {})
        crossed = (targets.get(dst, 0.0) + weight) >= self.vertical_ports
        targets[dst] = targets.get(dst, 0.0) + weight
        if inside and port in LATERAL_PORTS:
            lateral = self._lateral_targets.setdefault(host, set())
            lateral.add(dst)
            crossed = crossed or len(lateral) >= self.lateral_hosts
        else:
            ports = self._by_port.setdefault(host, {})
            ports[port] = ports.get(port, 0.0) + weight
            crossed = crossed or ports[port] >= self.horizontal_hosts
        if crossed:
            self._candidates.add(host)

    def add_dns(self, rec: DnsRecord) -> None:
        """Scans are seen in flows only."""

    def evaluate(self, now: float) -> list[Finding]:
        """Judge the hosts that crossed a threshold since the last call; age out hourly."""
        if now >= self._next_sweep:
            self._sweep(now - self.horizon)
            self._next_sweep = now + SWEEP_EVERY
        findings: list[Finding] = []
        candidates, self._candidates = self._candidates, set()
        for host in candidates:
            contacts = self._hosts.get(host)
            if contacts:
                findings.extend(self._judge(host, contacts))
        return findings

    def _sweep(self, cutoff: float) -> None:
        """Drop contacts older than ``cutoff`` and recount what is left exactly."""
        self._by_target, self._by_port, self._lateral_targets = {}, {}, {}
        candidates = self._candidates
        for host in list(self._hosts):
            contacts = self._hosts[host]
            for key in [k for k, c in contacts.items() if c[1] < cutoff]:
                del contacts[key]
            if not contacts:
                del self._hosts[host]
            for (dst, port), contact in contacts.items():
                self._count(host, dst, port, self._is_lan(dst), self._weights[contact[2]])
        self._candidates = candidates  # a recount is not news: only new contacts are
        keep = 1 - SWEEP_EVERY / self.horizon  # hourly decay: about the last horizon's flows
        for host, ports in list(self._answered_out.items()):
            decayed = {port: n * keep for port, n in ports.items() if n * keep >= 1.0}
            if decayed:
                self._answered_out[host] = decayed
            else:
                del self._answered_out[host]

    def tracked(self) -> int:
        return sum(len(contacts) for contacts in self._hosts.values())

    def _judge(self, host: str, contacts: dict[tuple[str, int], Contact]) -> list[Finding]:
        by_target: dict[str, Tally] = defaultdict(Tally)
        by_port: dict[int, Tally] = defaultdict(Tally)
        lateral = Tally()
        lateral_hosts: dict[str, bool] = {}  # target -> answered on any lateral port
        lateral_first: dict[str, float] = {}  # target -> first lateral contact
        lateral_ports: set[int] = set()
        for (dst, port), contact in contacts.items():
            by_target[dst].add(contact)
            if port in LATERAL_PORTS and self._is_lan(dst):
                lateral.add(contact)
                lateral_hosts[dst] = lateral_hosts.get(dst, False) or contact[2] == ANSWERED
                lateral_first[dst] = min(lateral_first.get(dst, contact[0]), contact[0])
                lateral_ports.add(port)
            else:
                by_port[port].add(contact)
        findings: list[Finding] = []
        weights = (self.success_weight, self.quiet_weight)
        for dst, tally in by_target.items():
            w = tally.weight(*weights)
            if w >= self.vertical_ports:
                what = f"{tally.failed + tally.answered} ports on {dst}"
                findings.append(
                    scan_finding(host, dst, "vertical", grade(w, self.vertical_ports), tally, what)
                )
        answered_out = self._answered_out.get(host, {})
        background = self.background_failures
        excess = {
            p: t.weight(*weights) - background * answered_out.get(p, 0.0)
            for p, t in by_port.items()
        }
        wide = {p: by_port[p] for p, w in excess.items() if w >= self.horizontal_hosts}
        if wide:
            port = max(wide, key=excess.__getitem__)
            tally = wide[port]
            score = grade(excess[port], self.horizontal_hosts)
            what = f"port {port} on {tally.failed + tally.answered} hosts" + (
                f" (and {len(wide) - 1} more ports)" if len(wide) > 1 else ""
            )
            finding = scan_finding(host, "", "horizontal", score, tally, what)
            finding.evidence["ports"] = sorted(wide)
            findings.append(finding)
        if len(lateral_hosts) >= self.lateral_hosts:
            findings.append(
                self._lateral(host, lateral, lateral_hosts, lateral_first, sorted(lateral_ports))
            )
        return findings

    def _lateral(
        self,
        host: str,
        tally: Tally,
        targets: dict[str, bool],
        firsts: dict[str, float],
        ports: list[int],
    ) -> Finding:
        answered = sum(targets.values())
        confirmed = answered >= self.lateral_confirmed
        score = grade(float(len(targets)), float(self.lateral_hosts))
        if confirmed:
            score = max(score, CONFIRMED_FLOOR)
        # when the latest run of ``lateral_hosts`` targets began: the admin's daily SMB to the
        # file server must not make this morning's sweep look like it started yesterday
        began = sorted(firsts.values(), reverse=True)[self.lateral_hosts - 1]
        return Finding(
            host=host,
            kind="lateral",
            peer="",
            score=round(score, 3),
            first=began,
            last=tally.last,
            explanation=(
                f"reached {len(targets)} LAN hosts on {'/'.join(map(str, ports))}"
                f" ({answered} answered) in {(tally.last - began) / 60:.0f} min"
            ),
            subscores={"hosts": float(len(targets)), "answered_share": answered / len(targets)},
            evidence={
                "targets": sorted(targets)[:20],
                "answered": answered,
                "confirmed": confirmed,
                "ports": ports,
            },
        )

    def _shrink(self, host: str, contacts: dict[tuple[str, int], Contact]) -> None:
        """Over the cap (a scan of every port does this): keep the most recent three quarters."""
        recent = sorted(contacts.items(), key=lambda item: item[1][1], reverse=True)
        kept = self._hosts[host] = dict(recent[: self.max_contacts_per_host * 3 // 4])
        self._by_target[host], self._by_port[host], self._lateral_targets[host] = {}, {}, set()
        for (dst, port), contact in kept.items():
            self._count(host, dst, port, self._is_lan(dst), self._weights[contact[2]])

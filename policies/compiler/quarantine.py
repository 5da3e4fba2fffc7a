"""Quarantine in the ruleset: hosts in ``quarantine4``/``quarantine6`` reach only the box.

The sets are declared whenever the policy has an ``anomaly:`` section, whatever its
``quarantine`` level (and even with ``enabled: false``): automatic quarantine is opt-in,
but an admin must be able to quarantine a host by hand (``edgeguard quarantine add``, the
web UI) on any box that runs scoring. Without the section there are no sets and no rules,
so a policy that does not use anomaly scoring compiles exactly as before.

The sets are plain (no timeouts, no intervals): elements are single addresses put there
and taken out by ``appliance.anomaly.quarantine`` (the ``quarantine`` table is the source
of truth), and the names are fixed here, never taken from user data. Replacing the table
empties them; the appliance refills them after every apply.

Placement, and why:

* the jumps come *before* the conntrack fast path (and before flowtable offload), so a
  quarantined host's established connections are cut too, not only new ones; the lookups
  cost every forwarded packet one hash probe per family, only when the section exists;
* forward: anything from a quarantined host is rejected (TCP reset, else ICMP
  admin-prohibited), so its programs fail at once instead of hanging; anything to it is
  dropped (replies included, and port forwards, which are already DNAT'ed here);
* input: a quarantined host still gets DNS (udp/tcp 53), the block page (tcp 80 on the
  block-page addresses; it is plain HTTP only), DHCP, ICMP echo and IPv6 neighbour
  discovery from the box: enough to keep its address and be told what happened;
  everything else to the box is dropped;
* anti-lockout keeps its priority: the management accept is repeated first in
  ``quarantine_in``, so quarantining the admin's own machine (by mistake, or because it
  really is infected) never locks the admin out of the box.

Known limit: a flow the kernel had already offloaded to the flowtable (``options.offload``)
bypasses the forward hook until it ends or idles out; deleting the host's conntrack
entries when quarantining would end it at once (not done here: the compiler does no I/O).
"""

from __future__ import annotations

from policies.model import Policy

QUARANTINE_SETS: dict[int, str] = {4: "quarantine4", 6: "quarantine6"}
"""Set name per address family; fixed, referenced by the appliance's quarantine manager."""
_IP = {4: "ip", 6: "ip6"}


class QuarantineParts:
    """Sets, hook lines and chains of the quarantine, for ``Layout`` to place."""

    def __init__(self, policy: Policy) -> None:
        self.p = policy

    @property
    def active(self) -> bool:
        return self.p.anomaly is not None

    def _counter(self) -> str:
        return "counter " if self.p.counters else ""

    def sets(self) -> list[str]:
        if not self.active:
            return []
        lines: list[str] = []
        for fam, name in QUARANTINE_SETS.items():
            kind = "ipv4_addr" if fam == 4 else "ipv6_addr"
            lines += [f"\tset {name} {{", f"\t\ttype {kind}", "\t}"]
        return lines

    def input_lines(self) -> list[str]:
        """Right after loopback, before the conntrack fast path of the input chain."""
        if not self.active:
            return []
        return [
            f"{_IP[fam]} saddr @{name} jump quarantine_in" for fam, name in QUARANTINE_SETS.items()
        ]

    def forward_lines(self) -> list[str]:
        """First in the forward chain: before offload and the conntrack fast path."""
        if not self.active:
            return []
        lines = [
            f"{_IP[fam]} saddr @{name} jump quarantine_fwd" for fam, name in QUARANTINE_SETS.items()
        ]
        lines += [
            f'{_IP[fam]} daddr @{name} {self._counter()}drop comment "quarantined host"'
            for fam, name in QUARANTINE_SETS.items()
        ]
        return lines

    def chains(self, anti_lockout: list[str]) -> list[list[str]]:
        """``quarantine_in`` and ``quarantine_fwd``; ``anti_lockout`` are the input chain's
        management accepts, repeated first so they keep winning."""
        if not self.active:
            return []
        inp = [
            *anti_lockout,
            'meta l4proto { tcp, udp } th dport 53 accept comment "quarantine: DNS to the box"',
        ]
        dns = self.p.dns
        for fam, addr in ((4, dns.block_ipv4), (6, dns.block_ipv6)) if dns else ():
            if addr:
                inp.append(
                    f'{_IP[fam]} daddr {addr} tcp dport 80 accept comment "quarantine: block page"'
                )
        inp += [
            'udp dport { 67, 547 } accept comment "quarantine: DHCP"',
            'icmp type echo-request accept comment "quarantine: ping the box"',
            "icmpv6 type { echo-request, nd-router-solicit, nd-neighbor-solicit, "
            'nd-neighbor-advert } accept comment "quarantine: ping, neighbour discovery"',
            f'{self._counter()}drop comment "quarantined host"',
        ]
        fwd = [
            f'meta l4proto tcp {self._counter()}reject with tcp reset comment "quarantined host"',
            f'{self._counter()}reject with icmpx admin-prohibited comment "quarantined host"',
        ]
        return [_chain("quarantine_in", inp), _chain("quarantine_fwd", fwd)]


def _chain(name: str, body: list[str]) -> list[str]:
    return [f"\tchain {name} {{", *(f"\t\t{ln}" for ln in body), "\t}"]


__all__ = ["QUARANTINE_SETS", "QuarantineParts"]

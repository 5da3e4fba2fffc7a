"""The quarantine manager: the ``quarantine`` table decides, the nft sets follow.

The CLI (``edgeguard quarantine``) and the web UI run in other processes than the
controller, so none of them touches nftables: they write the table (``add``/``lift``), and
the controller's live loop calls ``sync(feed)`` every couple of seconds, which lists the
sets ``quarantine4``/``quarantine6`` and adds or deletes only the difference. Applying a
policy replaces the whole table, which empties the sets: the loop then calls
``refill(feed)``. So a quarantine survives reboots, applies and controller restarts, and
lifting it is one row update away from any of the three front ends.

Addresses are parsed with ``ipaddress`` and only their canonical text reaches nft, inside
JSON (never pasted into nft syntax). Loopback, unspecified, multicast and link-local
addresses are refused: quarantining them would do nothing useful or break the box itself.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from appliance.anomaly.store import AnomalyStore, QuarantineEntry
from appliance.errors import AnomalyError
from appliance.nftset import JsonCmdBackend
from policies.compiler import TABLE_FAMILY, TABLE_NAME
from policies.compiler.quarantine import QUARANTINE_SETS

MAX_REASON = 200


def canonical_address(text: str) -> tuple[int, str]:
    """(family, canonical text) of one host address; AnomalyError if it is not one."""
    try:
        ip = ipaddress.ip_address(str(text).strip())
    except ValueError:
        raise AnomalyError(f"not an IP address: {text!r}") from None
    if ip.is_loopback or ip.is_unspecified or ip.is_multicast or ip.is_link_local:
        raise AnomalyError(f"{ip} cannot be quarantined (loopback, multicast or link-local)")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.version, str(ip)


class QuarantineSetFeed(Protocol):
    """The two nft sets, as the manager needs them."""

    def members(self) -> dict[str, set[str]]:
        """Set name -> addresses now in it; AnomalyError if the sets cannot be read."""

    def change(self, add: dict[str, set[str]], delete: dict[str, set[str]]) -> None:
        """Add and delete elements in one transaction; AnomalyError if refused."""


class NftQuarantineSets:
    """``QuarantineSetFeed`` over libnftables JSON (``nftset.JsonCmdBackend``, the same
    Protocol the resolver's set feeder uses): acts in the backend's network namespace."""

    def __init__(
        self,
        backend: JsonCmdBackend | None = None,
        *,
        family: str = TABLE_FAMILY,
        table: str = TABLE_NAME,
    ) -> None:
        self._backend = backend
        self._base = {"family": family, "table": table}

    def _cmd(self, commands: list[dict[str, Any]]) -> Any:
        if self._backend is None:
            import nftables  # Debian's python3-nftables; only on the box

            self._backend = nftables.Nftables()
        rc, out, err = self._backend.json_cmd({"nftables": commands})
        if rc != 0:
            text = "; ".join(dict.fromkeys(ln.strip() for ln in str(err).splitlines() if ln))
            raise AnomalyError(f"nft refused the quarantine sets: {text or f'status {rc}'}")
        return out

    def members(self) -> dict[str, set[str]]:
        # One set per command: nft 1.0.6 fails a JSON batch of two "list set" commands.
        found: dict[str, set[str]] = {n: set() for n in QUARANTINE_SETS.values()}
        for name in found:
            out = self._cmd([{"list": {"set": {**self._base, "name": name}}}])
            for item in (out or {}).get("nftables", []):
                nft_set = item.get("set") if isinstance(item, dict) else None
                if isinstance(nft_set, dict) and nft_set.get("name") == name:
                    found[name] = {e for e in nft_set.get("elem", []) if isinstance(e, str)}
        return found

    def change(self, add: dict[str, set[str]], delete: dict[str, set[str]]) -> None:
        commands: list[dict[str, Any]] = []
        for verb, sets in (("delete", delete), ("add", add)):
            for name, elems in sets.items():
                if elems:
                    element = {**self._base, "name": name, "elem": sorted(elems)}
                    commands.append({verb: {"element": element}})
        if commands:
            self._cmd(commands)


class MemoryQuarantineSets:
    """Test double: the two sets as Python sets; ``missing`` plays a table without them."""

    def __init__(self) -> None:
        self.sets: dict[str, set[str]] = {n: set() for n in QUARANTINE_SETS.values()}
        self.missing = False
        self.transactions = 0

    def members(self) -> dict[str, set[str]]:
        if self.missing:
            raise AnomalyError("nft refused the quarantine sets: No such file or directory")
        return {k: set(v) for k, v in self.sets.items()}

    def change(self, add: dict[str, set[str]], delete: dict[str, set[str]]) -> None:
        if self.missing:
            raise AnomalyError("nft refused the quarantine sets: No such file or directory")
        for name, elems in delete.items():
            if not elems <= self.sets[name]:  # nft fails the whole transaction
                raise AnomalyError(f"nft refused the quarantine sets: {name} lacks an element")
        self.transactions += 1
        for name, elems in delete.items():
            self.sets[name] -= elems
        for name, elems in add.items():
            self.sets[name] |= elems


@dataclass(frozen=True)
class SyncResult:
    added: int = 0
    removed: int = 0
    error: str = ""


class QuarantineManager:
    """Quarantine and lift hosts (table writes), and make the nft sets match the table."""

    def __init__(self, store: AnomalyStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    def add(
        self, address: str, *, reason: str, by: str, alert_id: int | None = None
    ) -> QuarantineEntry:
        """Quarantine ``address``; AnomalyError if invalid or already quarantined."""
        _, addr = canonical_address(address)
        reason = " ".join(str(reason).split())[:MAX_REASON] or "no reason given"
        entry = self.store.add_quarantine(addr, reason, by, self.clock(), alert_id)
        if entry is None:
            raise AnomalyError(f"{addr} is already quarantined")
        return entry

    def lift(self, address: str, *, by: str) -> QuarantineEntry:
        """Lift ``address``'s quarantine; AnomalyError if it has none."""
        _, addr = canonical_address(address)
        entry = self.store.lift_quarantine(addr, by, self.clock())
        if entry is None:
            raise AnomalyError(f"{addr} is not quarantined")
        return entry

    def active(self) -> list[QuarantineEntry]:
        return self.store.quarantined()

    def is_quarantined(self, address: str) -> bool:
        try:
            _, addr = canonical_address(address)
        except AnomalyError:
            return False
        return any(e.address == addr for e in self.store.quarantined())

    def wanted(self) -> dict[str, set[str]]:
        """Set name -> the addresses the table says are quarantined."""
        out: dict[str, set[str]] = {n: set() for n in QUARANTINE_SETS.values()}
        for entry in self.store.quarantined():
            family, addr = canonical_address(entry.address)
            out[QUARANTINE_SETS[family]].add(addr)
        return out

    def sync(self, feed: QuarantineSetFeed) -> SyncResult:
        """Make the sets match the table, touching only the difference.

        Never raises for nft trouble (the live loop calls this every few seconds): a table
        without the sets (a policy without ``anomaly:``) or a refused change comes back in
        ``error`` and the next call tries again.
        """
        try:
            have = feed.members()
            want = self.wanted()
            add = {n: want[n] - have.get(n, set()) for n in want}
            delete = {n: have.get(n, set()) - want[n] for n in want}
            feed.change(add, delete)
        except AnomalyError as exc:
            return SyncResult(error=str(exc))
        return SyncResult(sum(map(len, add.values())), sum(map(len, delete.values())))

    def refill(self, feed: QuarantineSetFeed) -> SyncResult:
        """After an apply replaced the table (its sets start empty): add every quarantine.

        Adding an element that is already there is not an error in nft, so this is safe
        even if something filled the sets meanwhile.
        """
        try:
            want = self.wanted()
            feed.change(want, {})
        except AnomalyError as exc:
            return SyncResult(error=str(exc))
        return SyncResult(added=sum(map(len, want.values())))


def describe(entries: Iterable[QuarantineEntry]) -> list[str]:
    """One line per entry, for the CLI and logs."""
    return [
        f"{e.address:<39} since {time.strftime('%Y-%m-%d %H:%M', time.gmtime(e.since))} UTC "
        f"by {e.by}: {e.reason}"
        + (f" (alert #{e.alert_id})" if e.alert_id is not None else "")
        + (f"; lifted by {e.lifted_by}" if e.lifted is not None else "")
        for e in entries
    ]


__all__ = [
    "MemoryQuarantineSets",
    "NftQuarantineSets",
    "QuarantineManager",
    "QuarantineSetFeed",
    "SyncResult",
    "canonical_address",
    "describe",
]

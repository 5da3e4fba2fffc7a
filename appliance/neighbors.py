"""IP -> MAC from the kernel's neighbour table, for the web filter's per-device policy.

The web filter sees a client's IP address, but a DHCP lease or a privacy IPv6 address
changes while the device stays the same, so policy is keyed by MAC. The kernel already
knows each on-link neighbour's MAC (ARP for IPv4, neighbour discovery for IPv6), and
``ip -j neigh show`` prints it as JSON; a refresher thread reads it every few seconds.

Lookups are on the request path, so ``mac_for`` is one dict lookup without a lock: each
refresh builds a new dict and publishes it with a single reference assignment, and a
published dict is never mutated. ``version`` changes whenever the mapping does, so callers
can cache derived data (per-MAC policy, say) and rebuild only when it moves.

Entries without a link-layer address or in state FAILED/INCOMPLETE are left out: they are
addresses the kernel tried and failed to reach, not devices. STALE entries are kept, since
a device that has been quiet for a minute is still that device.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

from appliance.errors import ApplianceError

__all__ = ["NEIGH_COMMAND", "NeighborError", "NeighborTable", "parse_neigh_json"]

NEIGH_COMMAND = ("ip", "-j", "neigh", "show")
"""Lists the neighbour table of the namespace this process runs in, as JSON."""

_UNUSABLE_STATES = frozenset({"FAILED", "INCOMPLETE"})
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


class NeighborError(ApplianceError):
    """The neighbour table could not be read; the previous mapping is still used."""


def _canonical_ip(text: str) -> str | None:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def parse_neigh_json(text: str) -> dict[str, str]:
    """IP -> lower-case MAC from ``ip -j neigh show`` output; raises NeighborError if not JSON.

    Only Ethernet-style MACs are kept (tunnels report other link addresses). When one IP
    appears on two interfaces the first usable entry wins, as ``ip`` lists them.
    """
    if not text.strip():
        return {}
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NeighborError(f"ip -j neigh show printed something that is not JSON: {exc}") from exc
    if not isinstance(entries, list):
        raise NeighborError("ip -j neigh show did not print a JSON list")
    table: dict[str, str] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        dst, mac, state = entry.get("dst"), entry.get("lladdr"), entry.get("state", [])
        if not isinstance(dst, str) or not isinstance(mac, str):
            continue
        states = {state} if isinstance(state, str) else set(state or ())
        if states & _UNUSABLE_STATES:
            continue
        mac = mac.lower()
        ip = _canonical_ip(dst)
        if ip is None or not _MAC_RE.fullmatch(mac) or ip in table:
            continue
        table[ip] = mac
    return table


def _run_ip(argv: Sequence[str], timeout: float) -> str:
    try:
        proc = subprocess.run(  # noqa: S603 - fixed argv, no shell
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise NeighborError(f"{' '.join(argv)} timed out after {timeout}s") from exc
    except OSError as exc:
        raise NeighborError(f"cannot run {' '.join(argv)}: {exc}") from exc
    if proc.returncode != 0:
        raise NeighborError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
    return proc.stdout


class NeighborTable:
    """The current IP -> MAC mapping of this network namespace, refreshed in the background.

    ``source`` returns ``ip -j neigh show`` output; by default it runs ``NEIGH_COMMAND``
    with ``timeout`` (tests inject canned text).
    """

    def __init__(self, source: Callable[[], str] | None = None, *, timeout: float = 5.0) -> None:
        self._source = source or (lambda: _run_ip(NEIGH_COMMAND, timeout))
        self._map: dict[str, str] = {}
        self._version = 0
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failures = 0
        self.last_error = ""

    @property
    def version(self) -> int:
        """Bumped by every refresh that changed the mapping."""
        return self._version

    def refresh(self) -> bool:
        """Re-read the table; True if the mapping changed. NeighborError if it cannot."""
        with self._refresh_lock:
            new = parse_neigh_json(self._source())
            if new == self._map:
                return False
            self._map = new  # one reference swap: readers see the old or the new dict
            self._version += 1
            return True

    def mac_for(self, ip: str) -> str | None:
        """The MAC of ``ip`` (lower case), or None if the kernel does not know it.

        ``::ffff:a.b.c.d`` (an IPv4 client on a dual-stack socket) is looked up as ``a.b.c.d``.
        """
        table = self._map
        mac = table.get(ip)
        if mac is None and ip.startswith("::ffff:"):
            mac = table.get(ip[7:])
        return mac

    def snapshot(self) -> Mapping[str, str]:
        """A read-only view of the current mapping (it never changes under the caller)."""
        return MappingProxyType(self._map)

    def start(self, interval: float = 5.0) -> None:
        """Refresh now (errors kept, not raised), then every ``interval`` seconds in a thread."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._refresh_quietly()
        self._thread = threading.Thread(
            target=self._run, args=(interval,), name="neighbor-table", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the refresher and wait for it."""
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout)
        self._thread = None

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self._refresh_quietly()

    def _refresh_quietly(self) -> None:
        """A failed read keeps the previous mapping: a stale MAC beats no MAC at all."""
        try:
            self.refresh()
        except NeighborError as exc:
            self.failures += 1
            self.last_error = str(exc)

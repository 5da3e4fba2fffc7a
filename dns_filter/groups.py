"""Per-client filtering: which group a client is in, and what that group gets right now.

The resolver asks ``ClientPolicy.profile(client, now)`` for every query. That has to cost
about as much as a dict lookup, so:

* a client's group is worked out once (MAC, then the longest address prefix, then the
  zone's network, then the default group) and cached; the cache is dropped when the
  neighbour table (IP -> MAC) changes;
* each group's current profile is recomputed only when the site's local minute changes:
  a profile is the group's lists with its schedules' changes applied, memoised by which
  schedules are on, so a schedule boundary swaps one reference;
* every profile carries its own verdict cache (name -> match), so two groups can get
  different answers for one name without sharing a cache entry.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import zoneinfo
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

WEEK_MINUTES = 7 * 1440
_EMPTY: Mapping[str, str] = MappingProxyType({})
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Change:
    """While one of ``windows`` holds (local minutes from Monday 00:00, end exclusive and
    possibly past the week's end): lists ``add`` on, ``remove`` off, safe search replaced."""

    windows: tuple[tuple[int, int], ...]
    add: frozenset[str] = frozenset()
    remove: frozenset[str] = frozenset()
    safe_hosts: Mapping[str, str] | None = None

    def active(self, minute: int) -> bool:
        return any(s <= minute < e or s <= minute + WEEK_MINUTES < e for s, e in self.windows)


@dataclass(frozen=True)
class GroupSpec:
    name: str
    lists: frozenset[str]  # matcher lists that apply (block and allow lists alike)
    # exact query name -> the provider's safe host
    safe_hosts: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    block_mode: str | None = None  # None: the resolver's default
    filtered: bool = True  # the DoH canary and DoH names apply
    changes: tuple[Change, ...] = ()


class Profile:
    """A group as it is at one moment; ``verdicts`` caches its list decisions by name."""

    __slots__ = ("block_mode", "by_key", "filtered", "group", "lists", "safe_hosts", "verdicts")

    def __init__(
        self,
        group: str,
        lists: frozenset[str],
        safe_hosts: Mapping[str, str],
        block_mode: str | None,
        filtered: bool,
    ) -> None:
        self.group = group
        self.lists = lists
        self.safe_hosts = safe_hosts
        self.block_mode = block_mode
        self.filtered = filtered
        self.verdicts: dict[str, Any] = {}
        self.by_key: dict[bytes, Any] = {}  # the resolver's hot-path memo (Resolver._by_key)


@dataclass(frozen=True)
class Membership:
    """How clients map to groups; most specific wins (MAC, address prefix, zone)."""

    default: str
    macs: Mapping[str, str] = field(default_factory=lambda: _EMPTY)  # lowercase MAC -> group
    addresses: Sequence[tuple[str, str]] = ()  # (CIDR, group)
    zones: Sequence[tuple[str, str]] = ()  # (zone network CIDR, group)


def _by_prefix(pairs: Sequence[tuple[str, str]]) -> list[tuple[IPNetwork, str]]:
    nets = [(ipaddress.ip_network(c, strict=False), g) for c, g in pairs]
    return sorted(nets, key=lambda ng: -ng[0].prefixlen)


@dataclass
class ClientPolicy:
    groups: Sequence[GroupSpec]
    membership: Membership
    timezone: str = "UTC"
    mac_for: Callable[[str], str | None] | None = None
    mac_version: Callable[[], int] | None = None
    _specs: dict[str, GroupSpec] = field(init=False)
    _current: dict[str, Profile] = field(init=False)

    def __post_init__(self) -> None:
        self._specs = {g.name: g for g in self.groups}
        if self.membership.default not in self._specs:
            raise ValueError(f"default group {self.membership.default!r} is not defined")
        self._tz = zoneinfo.ZoneInfo(self.timezone)
        self._addresses = _by_prefix(self.membership.addresses)
        self._zones = _by_prefix(self.membership.zones)
        self._clients: dict[str, str] = {}
        self._memo: dict[tuple[str, tuple[bool, ...]], Profile] = {}
        self._current = {}
        self._tick_from = self._tick_until = 0.0
        self._seen_mac_version = -1
        self._minute = -1
        self._aliases: dict[str, set[str]] | None = None

    # -- the hot path ---------------------------------------------------------------------
    def profile(self, client: str, now: float) -> Profile:
        if not self._tick_from <= now < self._tick_until:
            self._tick(now)
        group = self._clients.get(client)
        if group is None:
            group = self._classify(client)
        return self._current[group]

    # -- slower paths ---------------------------------------------------------------------
    def group_of(self, client: str) -> str:
        return self._classify(client)

    def _classify(self, client: str) -> str:
        group = self.membership.default
        host = client.split("%", 1)[0]
        mac = self.mac_for(host) if self.mac_for is not None and self.membership.macs else None
        if mac is not None and mac in self.membership.macs:
            group = self.membership.macs[mac]
        else:
            try:
                ip = ipaddress.ip_address(host)
            except ValueError:
                ip = None
            if ip is not None:
                for table in (self._addresses, self._zones):
                    hit = next((g for n, g in table if ip.version == n.version and ip in n), None)
                    if hit is not None:
                        group = hit
                        break
        if len(self._clients) > 65_536:
            self._clients.clear()
        self._clients[client] = group
        return group

    def _tick(self, now: float) -> None:
        """Once a second: follow the neighbour table and the site's local minute."""
        self._tick_from = float(int(now))
        self._tick_until = self._tick_from + 1.0
        if self.mac_version is not None:
            version = self.mac_version()
            if version != self._seen_mac_version:
                self._seen_mac_version = version
                self._clients.clear()
        local = dt.datetime.fromtimestamp(now, self._tz)
        minute = local.weekday() * 1440 + local.hour * 60 + local.minute
        if minute == self._minute and self._current:
            return
        self._minute = minute
        self._current = {name: self._profile_at(spec, minute) for name, spec in self._specs.items()}

    def _profile_at(self, spec: GroupSpec, minute: int) -> Profile:
        active = tuple(c.active(minute) for c in spec.changes)
        key = (spec.name, active)
        found = self._memo.get(key)
        if found is not None:
            return found
        lists = set(spec.lists)
        safe = spec.safe_hosts
        for change, on in zip(spec.changes, active, strict=True):
            if on:
                lists |= change.add
                lists -= change.remove
                if change.safe_hosts is not None:
                    safe = change.safe_hosts
        if self._aliases is not None:
            lists = {alias for name in lists for alias in self._aliases.get(name, ())}
        profile = Profile(spec.name, frozenset(lists), safe, spec.block_mode, spec.filtered)
        self._memo[key] = profile
        return profile

    def clear_verdicts(self) -> None:
        """Lists were reloaded: every profile's cached decisions are stale."""
        for profile in self._memo.values():
            profile.verdicts.clear()
            profile.by_key.clear()

    def use_lists(self, loaded: Iterable[str]) -> None:
        """Map each source name to the matcher lists it became, then rebuild the profiles.

        A source with several files or URLs is loaded as ``name``, ``name/file`` and
        ``name <url>``; a group naming ``name`` gets all of them.
        """
        aliases: dict[str, set[str]] = {}
        for list_name in loaded:
            source = list_name.split(" <", 1)[0].split("/", 1)[0]
            aliases.setdefault(source, set()).add(list_name)
        self._aliases = aliases
        self._memo = {}
        self._current = {}
        self._minute = -1
        self._tick_until = 0.0

    def group_names(self) -> list[str]:
        return list(self._specs)

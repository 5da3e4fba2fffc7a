"""The validated web-filtering policy: client groups, what each blocks, and when.

Like ``model``, everything here is resolved: group members split into addresses, MACs and
zones; services named by group expanded to catalogue services; schedules turned into weekly
windows. The resolver (per-client answers) and the compiler (DNS redirect, DoT/DoH blocks,
domain sets) both read it, and neither can meet an unknown name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Literal

from policies.model import ClientMembers, Family, Schedule

BlockMode = Literal["nxdomain", "null", "ip", "refused"]
DEFAULT_GROUP = "default"


@dataclass(frozen=True)
class FilterItems:
    """Things that block: categories, catalogue services, DNS block lists, domains."""

    categories: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    blocklists: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()


SafeSearch = tuple[tuple[str, str], ...]  # (provider, mode), e.g. (("youtube", "moderate"),)


@dataclass(frozen=True)
class GroupSchedule:
    """While ``schedule`` is on: ``block`` is added, ``unblock`` taken away, and safe search
    set to ``safe_search`` (None: unchanged)."""

    schedule: Schedule
    block: FilterItems
    unblock: FilterItems
    safe_search: SafeSearch | None = None


@dataclass(frozen=True)
class ClientGroup:
    name: str
    members: ClientMembers
    filtered: bool  # False: no DNS redirect, DoT/DoH allowed (the admins' own devices)
    blocks: FilterItems
    allow: tuple[str, ...] = ()
    safe_search: SafeSearch = ()
    block_mode: BlockMode | None = None  # None: the dns section's block_mode
    schedules: tuple[GroupSchedule, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class CategorySource:
    """A category's list: bundled or subscribed files/URLs, or a catalogue service group's
    domains."""

    name: str
    files: tuple[FsPath, ...] = ()
    urls: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()


@dataclass(frozen=True)
class DnsRedirect:
    """LAN DNS on ``zone`` (family ``family``) is redirected to ``address``:53."""

    zone: str
    family: Family
    address: str


@dataclass(frozen=True)
class WebFilter:
    groups: tuple[ClientGroup, ...]
    default_group: str
    categories: tuple[CategorySource, ...]  # those some group uses
    services: tuple[tuple[str, tuple[str, ...]], ...]  # (service, domains), those used
    zones: tuple[str, ...]  # zones whose DNS is enforced
    redirects: tuple[DnsRedirect, ...]
    block_doh: bool
    doh_names: tuple[str, ...]
    doh_v4: tuple[str, ...]
    doh_v6: tuple[str, ...]
    unblock_requests: bool = False
    domain_set_timeout: int = 600
    catalogue_version: str = ""

    def group(self, name: str) -> ClientGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)

    @property
    def exempt(self) -> tuple[ClientGroup, ...]:
        """Unfiltered groups: their clients pass the DNS redirect and DoT/DoH blocks."""
        return tuple(g for g in self.groups if not g.filtered)

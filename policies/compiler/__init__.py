"""The policy compiler: a pure function from a validated Policy to one nftables table.

Layout (the structure of well-made hand-written rulesets, e.g. OpenWrt fw4):

* one ``table inet edgeguard`` so IPv4 and IPv6 share one policy and nothing else is touched;
* base chains start with the conntrack fast path (established/related accepted, invalid
  dropped), then anti-lockout, then dispatch by zone through verdict maps
  (``iifname . oifname vmap``): one hash lookup picks the zone-pair chain, instead of a
  linear walk through every rule;
* groups and block lists are named interval sets, merged beforehand (nft rejects
  overlapping intervals, and merged sets load about twice as fast);
* block lists are checked right after the conntrack fast path, so established traffic never
  pays their set lookups and only connection attempts do;
* schedules are ``meta day``/``meta hour`` in UTC (see ``schedule``).

No I/O, no subprocess: the applier in ``appliance`` is the only code that talks to nft.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from policies.compiler.layout import Layout
from policies.compiler.schedule import offset_until, utc_offset_minutes
from policies.errors import CompileError
from policies.model import Policy

TABLE_FAMILY = "inet"
TABLE_NAME = "edgeguard"


@dataclass(frozen=True)
class Target:
    """What the box's kernel can do; the appliance probes it, tests state it."""

    flowtable: bool = False


@dataclass(frozen=True)
class Ruleset:
    """The compiled table; ``text`` is loadable with ``nft -f`` (TZ=UTC)."""

    text: str
    utc_offset_minutes: int
    valid_until: dt.datetime | None
    stats: dict[str, int] = field(default_factory=dict)


def compile_policy(policy: Policy, *, at: dt.datetime, target: Target = Target()) -> Ruleset:
    """Compile ``policy`` as it applies at instant ``at`` (which fixes the UTC offset)."""
    if at.tzinfo is None:
        raise CompileError("compile time must be timezone-aware (e.g. datetime.now(timezone.utc))")
    offset = utc_offset_minutes(policy.site.timezone, at)
    until = offset_until(policy.site.timezone, at)
    offload = policy.offload == "on" or (policy.offload == "auto" and target.flowtable)
    if policy.offload == "on" and not target.flowtable:
        raise CompileError(
            "options.offload is 'on' but this kernel has no flowtable support; use 'auto'"
        )
    layout = Layout(policy, offset, offload)
    sign = "+" if offset >= 0 else "-"
    tz_note = f"UTC{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
    until_note = f" until {until.strftime('%Y-%m-%dT%H:%MZ')}" if until else ""
    header = [
        f"# EdgeGuard ruleset for site '{policy.site.name}' (policy schema v{policy.version}).",
        "# Generated; do not edit. Load with TZ=UTC: schedule times below are UTC",
        f"# (site time zone {policy.site.timezone} = {tz_note}{until_note}).",
    ]
    body = layout.render()
    text = "\n".join([*header, f"table {TABLE_FAMILY} {TABLE_NAME} {{", *body, "}"]) + "\n"
    return Ruleset(text, offset, until, layout.stats)


__all__ = ["TABLE_FAMILY", "TABLE_NAME", "Ruleset", "Target", "compile_policy"]

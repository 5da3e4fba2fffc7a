"""Read a policy file into a validated Policy, or report every problem at once.

This is the only part of ``policies`` that reads files (the policy and the feed files it
names); the compiler gets the finished Policy and does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from policies.anomaly_section import parse_anomaly
from policies.checks import Checker, suggest
from policies.dns_section import parse_dns
from policies.errors import PolicyLoadError, PolicyValidationError, Problem
from policies.feeds import load_feed
from policies.model import SCHEMA_VERSION, Policy
from policies.nat import parse_management, parse_nat
from policies.objects import (
    FeedReader,
    parse_blocklists,
    parse_groups,
    parse_schedules,
    parse_services,
    parse_site,
    parse_zones,
)
from policies.sections import Names, parse_defaults, parse_rules
from policies.web_filter import WebContext, parse_clients, parse_web_filter
from policies.webcatalog import Catalogue, CatalogueError, default_catalogue
from policies.yaml_source import load_yaml


@dataclass(frozen=True)
class LoadedPolicy:
    """A valid policy and the warnings found on the way (skipped feed lines, ...)."""

    policy: Policy
    warnings: tuple[Problem, ...]


def load_policy(path: str | Path, *, read_feed: FeedReader = load_feed) -> LoadedPolicy:
    """Load and validate ``path``; raises PolicyLoadError or PolicyValidationError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyLoadError(f"{path}: cannot read policy: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise PolicyLoadError(
            f"{path}: policy is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from exc
    return parse_policy(text, str(path), base_dir=path.parent, read_feed=read_feed)


def parse_policy(
    text: str,
    file: str = "<policy>",
    *,
    base_dir: Path = Path("."),
    read_feed: FeedReader = load_feed,
) -> LoadedPolicy:
    data, source, structural = load_yaml(text, file)
    ck = Checker(source)
    ck.problems.extend(structural)
    policy = _build(ck, data, base_dir, read_feed)
    if ck.failed or policy is None:
        raise PolicyValidationError(sorted(ck.problems, key=_order))
    return LoadedPolicy(policy, tuple(p for p in ck.problems if p.severity == "warning"))


def _order(p: Problem) -> tuple[int, int]:
    return (p.location.line, p.location.column) if p.location else (0, 0)


def _build(ck: Checker, data: Any, base_dir: Path, read_feed: FeedReader) -> Policy | None:
    if data is None:
        ck.error((), "the policy is empty (it needs version, site and zones)")
        return None
    top = ck.mapping(data, (), "top")
    if top is None:
        return None
    version = top.get("version")
    if "version" in top and (type(version) is not int or version != SCHEMA_VERSION):
        ck.error(
            ("version",),
            f"unsupported policy version {version!r} "
            f"(this EdgeGuard reads version {SCHEMA_VERSION})",
        )
    site = parse_site(ck, top["site"]) if "site" in top else None
    zones = parse_zones(ck, top["zones"]) if "zones" in top else []
    groups = parse_groups(ck, top.get("address_groups"))
    blocklists = parse_blocklists(
        ck, top.get("blocklists"), base_dir, read_feed, [z.name for z in zones]
    )
    services = parse_services(ck, top.get("services"))
    schedules = parse_schedules(ck, top.get("schedules"))
    zone_names = {z.name for z in zones}
    for section, defined in (("address_groups", groups), ("blocklists", blocklists)):
        for name in defined:
            if name in zone_names:
                ck.error(
                    (section, name),
                    f"'{name}' is also a zone; zone and address names must differ",
                    key=True,
                )
    for name in set(groups) & set(blocklists):
        ck.error(
            ("blocklists", name), f"'{name}' is also an address group; names must differ", key=True
        )
    catalogue = _catalogue(ck, top)
    names = Names(
        {z.name: z for z in zones}, groups, blocklists, services, schedules, catalogue=catalogue
    )
    nat = parse_nat(ck, top.get("nat"), names)
    dns = parse_dns(ck, top.get("dns"), base_dir)
    clients = parse_clients(ck, top.get("clients"))
    for name in clients:
        if name in zone_names:  # a group's member 'lan' would silently mean the client
            ck.error(
                ("clients", name),
                f"'{name}' is also a zone; client and zone names must differ",
                key=True,
            )
    web_filter = None
    if catalogue is not None:
        ctx = WebContext(names.zones, schedules, dns, nat.masquerade, clients, catalogue, base_dir)
        web_filter = parse_web_filter(ck, top.get("web_filter"), ctx)
    if web_filter is not None:
        names.client_groups = {g.name: g.members for g in web_filter.groups}
    rules = parse_rules(ck, top.get("rules"), names)
    defaults = parse_defaults(ck, top.get("defaults"), names)
    for name, bl in blocklists.items():
        if not bl.zones and bl.block != "none":
            if nat.masquerade:
                blocklists[name] = replace(bl, zones=nat.masquerade)
            else:
                ck.error(
                    ("blocklists", name),
                    "no zones given and no masquerade (WAN) zone to default to: set 'zones'",
                )
    management = parse_management(ck, top.get("management"), names)
    anomaly = (
        parse_anomaly(
            ck, top["anomaly"], base_dir, zones=zones, masquerade=nat.masquerade, groups=groups
        )
        if "anomaly" in top
        else None
    )
    offload, counters = _options(ck, top.get("options"))
    if site is None or ck.failed:
        return None
    return Policy(
        version=SCHEMA_VERSION,
        site=site,
        zones=tuple(zones),
        groups=tuple(groups.values()),
        blocklists=tuple(blocklists.values()),
        services=tuple(services.values()),
        schedules=tuple(schedules.values()),
        rules=tuple(rules),
        defaults=tuple(defaults),
        nat=nat,
        management=management,
        offload=offload,
        counters=counters,
        dns=dns,
        web_filter=web_filter,
        anomaly=anomaly,
    )


def _catalogue(ck: Checker, top: dict[str, Any]) -> Catalogue | None:
    """The bundled catalogue, read only when a policy uses web filtering or web services."""
    rules = top.get("rules")
    uses_services = isinstance(rules, list) and any(
        isinstance(r, dict) and isinstance(r.get("to"), dict) and "web_services" in r["to"]
        for r in rules
    )
    if "web_filter" not in top and not uses_services:
        return None
    try:
        return default_catalogue()
    except CatalogueError as exc:
        ck.error(("web_filter",), f"the bundled web catalogue is broken: {exc}")
        return None


def _options(ck: Checker, value: Any) -> tuple[Any, bool]:
    if value is None:
        return "auto", True
    data = ck.mapping(value, ("options",), "options") or {}
    offload = data.get("offload", "auto")
    if offload not in ("auto", "on", "off"):
        choices = ("auto", "on", "off")
        ck.error(
            ("options", "offload"),
            f"expected auto, on or off, got {offload!r}{suggest(str(offload), choices)}",
        )
        offload = "auto"
    counters = ck.boolean(data.get("counters", True), ("options", "counters"))
    return offload, counters is not False

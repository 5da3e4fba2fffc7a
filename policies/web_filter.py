"""Parse ``clients:`` and ``web_filter:`` into a WebFilter, reporting every mistake.

Names are checked against what exists: zones, schedules, the dns section's lists, and the
bundled catalogue (services, service groups, categories, safe-search providers), so an
unknown category, service or group, or a malformed MAC, is an error with its position and
nothing is applied.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from policies.checks import Checker, suggest
from policies.dns_section import DnsSettings, domain_name
from policies.intervals import Interval, merge
from policies.model import AddressSet, ClientMembers, Family, Schedule, Zone
from policies.objects import looks_like_address, parse_literal, parse_windows
from policies.schema_base import NAME_PATTERN
from policies.web_model import (
    DEFAULT_GROUP,
    BlockMode,
    CategorySource,
    ClientGroup,
    DnsRedirect,
    FilterItems,
    GroupSchedule,
    SafeSearch,
    WebFilter,
)
from policies.webcatalog import Catalogue
from policies.yaml_source import Path

_MAC = re.compile(r"^[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}$")
_MAC_LIKE = re.compile(r"^[0-9a-z]{1,3}([:-][0-9a-z]{0,3}){3,7}$")
# Not an address either: a MAC with an octet too few or too many (02:00:00:00:00).
_BROKEN_MAC = re.compile(r"^[0-9a-z]{1,2}([:-][0-9a-z]{1,2}){2,7}$")
BLOCK_MODES: tuple[BlockMode, ...] = ("nxdomain", "null", "ip", "refused")


@dataclass
class Client:
    macs: list[str] = field(default_factory=list)
    v4: list[Interval] = field(default_factory=list)
    v6: list[Interval] = field(default_factory=list)


def parse_mac(text: str) -> str | None:
    """``02:00:00:00:00:21`` (or with dashes, any case) in canonical form; None if malformed."""
    t = text.strip().lower()
    return t.replace("-", ":") if _MAC.match(t) else None


def looks_like_mac(text: str) -> bool:
    t = text.strip().lower()
    return (
        "::" not in t
        and "." not in t
        and bool(_MAC_LIKE.match(t))
        and (t.count(":") == 5 or t.count("-") == 5)
    )


def parse_clients(ck: Checker, value: Any) -> dict[str, Client]:
    out: dict[str, Client] = {}
    for name, spec in ck.named_mapping(value, ("clients",)).items():
        path: Path = ("clients", name)
        if not ck.name(name, path, NAME_PATTERN, "client name", key=True):
            continue
        data = ck.mapping(spec, path, "client")
        if data is None:
            continue
        client = Client()
        for mpath, text in ck.strings(data.get("mac"), (*path, "mac")):
            mac = parse_mac(text)
            if mac is None:
                ck.error(mpath, f"malformed MAC address {text!r} (expected e.g. 02:00:00:00:00:21)")
            else:
                client.macs.append(mac)
        for ipath, text in ck.strings(data.get("ip"), (*path, "ip")):
            parsed = parse_literal(text)
            if isinstance(parsed, str):
                ck.error(ipath, parsed)
                continue
            (client.v4 if parsed[0] == 4 else client.v6).append(parsed[1])
        if "mac" not in data and "ip" not in data and len(data) == len(spec):
            ck.error(path, "a client needs 'mac' or 'ip'")  # (an unknown key is reported)
        ck.text(data.get("description", ""), (*path, "description"))
        out[name] = client
    return out


@dataclass
class WebContext:
    """What the web filter's names are checked against."""

    zones: dict[str, Zone]
    schedules: dict[str, Schedule]
    dns: DnsSettings | None
    masquerade: tuple[str, ...]
    clients: dict[str, Client]
    catalogue: Catalogue
    base_dir: FsPath
    categories: dict[str, CategorySource] = field(default_factory=dict)
    owners: dict[str, tuple[str, Path]] = field(default_factory=dict)  # member -> group


def _members(ck: Checker, value: Any, path: Path, ctx: WebContext, group: str) -> ClientMembers:
    v4: list[Interval] = []
    v6: list[Interval] = []
    macs: list[str] = []
    zones: list[str] = []
    for mpath, text in ck.strings(value, path):
        key = text.strip().lower()
        also: list[str] = []  # the client's MACs: the same device if named directly
        if key in ctx.clients:
            c = ctx.clients[key]
            also = c.macs
            macs += c.macs
            v4 += c.v4
            v6 += c.v6
        elif key in ctx.zones:
            zones.append(key)
        elif looks_like_mac(key):
            mac = parse_mac(key)
            if mac is None:
                ck.error(mpath, f"malformed MAC address {text!r} (expected e.g. 02:00:00:00:00:21)")
                continue
            macs.append(mac)
            key = mac
        else:
            parsed = parse_literal(text)
            if isinstance(parsed, str):
                if _BROKEN_MAC.match(key):
                    ck.error(
                        mpath, f"malformed MAC address {text!r} (expected e.g. 02:00:00:00:00:21)"
                    )
                elif looks_like_address(text):
                    ck.error(mpath, parsed)
                else:
                    known = [*ctx.clients, *ctx.zones]
                    ck.error(
                        mpath,
                        f"unknown client or zone '{text}' (clients: "
                        f"{', '.join(ctx.clients) or 'none defined'}; zones: "
                        f"{', '.join(ctx.zones)}){suggest(text, known)}",
                    )
                continue
            (v4 if parsed[0] == 4 else v6).append(parsed[1])
        for k in (key, *also):
            if k in ctx.owners and ctx.owners[k][0] != group:
                same = "" if k == key else f" (as MAC {k})"
                ck.error(mpath, f"'{text}' is already in group '{ctx.owners[k][0]}'{same}")
                break
        for k in (key, *also):
            ctx.owners.setdefault(k, (group, mpath))
    return ClientMembers(
        AddressSet(f"cg_{group}", tuple(merge(v4)), tuple(merge(v6))),
        tuple(dict.fromkeys(macs)),
        tuple(dict.fromkeys(zones)),
    )


def _items(ck: Checker, data: dict[str, Any], path: Path, ctx: WebContext) -> FilterItems:
    cats: list[str] = []
    known_cats = sorted({*ctx.catalogue.categories, *ctx.categories})
    for cpath, name in ck.strings(data.get("categories"), (*path, "categories")):
        if name not in known_cats:
            ck.error(
                cpath,
                f"unknown category '{name}' (categories: {', '.join(known_cats)})"
                f"{suggest(name, known_cats)}",
            )
        else:
            cats.append(name)
    services: list[str] = []
    for spath, name in ck.strings(data.get("services"), (*path, "services")):
        try:
            services += [s.name for s in ctx.catalogue.expand_services([name])]
        except KeyError:
            known = [*ctx.catalogue.service_groups, *ctx.catalogue.services]
            ck.error(
                spath,
                f"unknown service '{name}' (service groups: "
                f"{', '.join(ctx.catalogue.service_groups)}; or a catalogue service)"
                f"{suggest(name, known)}",
            )
    lists: list[str] = []
    dns_lists = [lst.name for lst in ctx.dns.blocklists] if ctx.dns else []
    for lpath, name in ck.strings(data.get("blocklists"), (*path, "blocklists")):
        if name not in dns_lists:
            ck.error(
                lpath,
                f"unknown DNS block list '{name}' (dns.blocklists: "
                f"{', '.join(dns_lists) or 'none defined'}){suggest(name, dns_lists)}",
            )
        else:
            lists.append(name)
    return FilterItems(
        tuple(dict.fromkeys(cats)),
        tuple(dict.fromkeys(services)),
        tuple(dict.fromkeys(lists)),
        _domains(ck, data.get("domains"), (*path, "domains")),
    )


def _domains(ck: Checker, value: Any, path: Path) -> tuple[str, ...]:
    out: list[str] = []
    for dpath, text in ck.strings(value, path):
        wild = text.strip().startswith("*.")
        name = domain_name(ck, text.strip()[2:] if wild else text, dpath)
        if name is not None:
            out.append(f"*.{name}" if wild else name)
    return tuple(dict.fromkeys(out))


def _safe_search(ck: Checker, value: Any, path: Path, ctx: WebContext) -> SafeSearch:
    providers = ctx.catalogue.safe_search
    if value is True:
        return tuple((p.name, p.default_mode) for p in providers.values())
    if value is False or value is None:
        return ()
    if not isinstance(value, dict):
        ck.error(path, "expected true, false or provider -> mode (e.g. {youtube: moderate})")
        return ()
    out: list[tuple[str, str]] = []
    for name, mode in value.items():
        if name not in providers:
            ck.error(
                (*path, name),
                f"unknown safe-search provider '{name}' (allowed: {', '.join(providers)})"
                f"{suggest(str(name), providers)}",
                key=True,
            )
            continue
        if mode is False:
            continue
        modes = providers[name].modes
        if mode is True:
            mode = providers[name].default_mode
        if mode not in modes:
            ck.error(
                (*path, name), f"unknown mode {mode!r} for {name} (allowed: {', '.join(modes)})"
            )
            continue
        out.append((name, str(mode)))
    return tuple(out)


def _when(ck: Checker, value: Any, path: Path, ctx: WebContext, label: str) -> Schedule | None:
    if isinstance(value, str):
        if value not in ctx.schedules:
            ck.error(
                path,
                f"unknown schedule '{value}' (schedules: {', '.join(ctx.schedules) or 'none'})"
                f"{suggest(value, ctx.schedules)}",
            )
            return None
        return ctx.schedules[value]
    return Schedule(label, tuple(parse_windows(ck, value, path)))


def _group(ck: Checker, name: str, spec: Any, ctx: WebContext) -> ClientGroup | None:
    path: Path = ("web_filter", "groups", name)
    data = ck.mapping(spec if spec is not None else {}, path, "client_group")
    if data is None:
        return None
    members = _members(ck, data.get("clients"), (*path, "clients"), ctx, name)
    blocks = _items(ck, data, path, ctx)
    if "blocklists" not in data and ctx.dns is not None:  # default: every dns block list
        blocks = FilterItems(
            blocks.categories,
            blocks.services,
            tuple(lst.name for lst in ctx.dns.blocklists),
            blocks.domains,
        )
    blocks = FilterItems(
        blocks.categories,
        blocks.services,
        blocks.blocklists,
        _domains(ck, data.get("block"), (*path, "block")),
    )
    mode = data.get("block_mode")
    if mode is not None and mode not in BLOCK_MODES:
        ck.error(
            (*path, "block_mode"),
            f"unknown block mode {mode!r} (allowed: {', '.join(BLOCK_MODES)})"
            f"{suggest(str(mode), BLOCK_MODES)}",
        )
        mode = None
    if mode == "ip" and ctx.dns is not None and not (ctx.dns.block_ipv4 or ctx.dns.block_ipv6):
        ck.error((*path, "block_mode"), "block_mode 'ip' needs dns.block_page.ipv4 and/or ipv6")
    schedules: list[GroupSchedule] = []
    for spath, sdef in ck.items(data.get("schedules"), (*path, "schedules"), scalar=False):
        sdata = ck.mapping(sdef, spath, "group_schedule")
        if sdata is None or "when" not in sdata:
            continue
        when = _when(ck, sdata["when"], (*spath, "when"), ctx, f"{name}-{spath[-1]}")
        parts: list[FilterItems] = []
        for key in ("block", "unblock"):
            raw = sdata.get(key, {})
            pdata = ck.mapping(raw, (*spath, key), "filter_items") if raw else {}
            parts.append(_items(ck, pdata or {}, (*spath, key), ctx))
        safe = (
            _safe_search(ck, sdata["safe_search"], (*spath, "safe_search"), ctx)
            if "safe_search" in sdata
            else None
        )
        if when is not None:
            schedules.append(GroupSchedule(when, parts[0], parts[1], safe))
    filtered = ck.boolean(data.get("filter", True), (*path, "filter"))
    return ClientGroup(
        name=name,
        members=members,
        filtered=filtered is not False,
        blocks=blocks,
        allow=_domains(ck, data.get("allow"), (*path, "allow")),
        safe_search=_safe_search(ck, data.get("safe_search"), (*path, "safe_search"), ctx),
        block_mode=mode,
        schedules=tuple(schedules),
        description=ck.text(data.get("description", ""), (*path, "description")) or "",
    )


def _categories(ck: Checker, value: Any, ctx: WebContext) -> None:
    for name, spec in ck.named_mapping(value, ("web_filter", "categories")).items():
        path: Path = ("web_filter", "categories", name)
        if not ck.name(name, path, NAME_PATTERN, "category name", key=True):
            continue
        data = ck.mapping(spec, path, "category_source") or {}
        files: list[FsPath] = []
        for fpath, fname in ck.strings(data.get("files"), (*path, "files")):
            file = FsPath(fname) if FsPath(fname).is_absolute() else ctx.base_dir / fname
            if not file.is_file():
                ck.error(fpath, f"cannot read list file {file}")
            files.append(file)
        urls: list[str] = []
        for upath, url in ck.strings(data.get("urls"), (*path, "urls")):
            if not url.startswith(("https://", "http://")):
                ck.error(upath, f"expected an http(s) URL, got {url!r}")
            urls.append(url)
        if not files and not urls:
            ck.error(path, "a category needs 'files' or 'urls'")
        ctx.categories[name] = CategorySource(name, tuple(files), tuple(urls))


def _listens_on(dns: DnsSettings, address: str, family: Family) -> bool:
    wanted = {
        ipaddress.ip_address(address),
        ipaddress.ip_address("0.0.0.0" if family == 4 else "::"),
    }
    for item in dns.listen:
        host, _, port = item.split("://")[-1].rpartition(":")
        try:
            if port == "53" and ipaddress.ip_address(host.strip("[]")) in wanted:
                return True
        except ValueError:
            continue
    return False


def _enforcement(
    ck: Checker, data: dict[str, Any], ctx: WebContext, groups: list[ClientGroup]
) -> tuple[tuple[str, ...], tuple[DnsRedirect, ...]]:
    inside = [z for z in ctx.zones if z not in ctx.masquerade and ctx.zones[z].addresses]
    if "zones" in data:
        zones: list[str] = []
        for zpath, z in ck.strings(data["zones"], ("web_filter", "zones")):
            if z not in ctx.zones:
                ck.error(zpath, f"unknown zone '{z}' (zones: {', '.join(ctx.zones)})")
            elif not ctx.zones[z].addresses:
                ck.error(zpath, f"zone '{z}' has no address of the box to redirect DNS to")
            else:
                zones.append(z)
    else:
        zones = inside
    exempt_zones = {z for g in groups if not g.filtered for z in g.members.zones}
    zones = [z for z in zones if z not in exempt_zones]
    redirects: list[DnsRedirect] = []
    for z in zones:
        for fam in (4, 6):
            addr = next((a.address for a in ctx.zones[z].addresses if a.family == fam), None)
            if addr is None:
                continue
            redirects.append(DnsRedirect(z, fam, addr))
            if ctx.dns is not None and ctx.dns.listen and not _listens_on(ctx.dns, addr, fam):
                shown = addr if fam == 4 else f"[{addr}]"
                ck.error(
                    ("dns", "listen"),
                    f"web filtering redirects DNS from zone '{z}' to {shown}:53, but the "
                    f'resolver does not listen there; add "{shown}:53"',
                )
    return tuple(zones), tuple(redirects)


def parse_web_filter(ck: Checker, value: Any, ctx: WebContext) -> WebFilter | None:
    if value is None:
        return None
    data = ck.mapping(value, ("web_filter",), "web_filter")
    if data is None:
        return None
    if ctx.dns is None:
        ck.error(("web_filter",), "web filtering needs a 'dns' section (the resolver it filters)")
    _categories(ck, data.get("categories"), ctx)
    groups: list[ClientGroup] = []
    for name, spec in ck.named_mapping(data.get("groups"), ("web_filter", "groups")).items():
        if ck.name(name, ("web_filter", "groups", name), NAME_PATTERN, "group name", key=True):
            if name in ctx.zones or name in ctx.clients:
                what = "zone" if name in ctx.zones else "client"
                ck.error(
                    ("web_filter", "groups", name),
                    f"'{name}' is also a {what}; names must differ",
                    key=True,
                )
            group = _group(ck, name, spec, ctx)
            if group is not None:
                groups.append(group)
    default = data.get("default_group", DEFAULT_GROUP)
    names = [g.name for g in groups]
    if default not in names:
        if default != DEFAULT_GROUP:
            ck.error(
                ("web_filter", "default_group"),
                f"unknown group '{default}' (groups: {', '.join(names) or 'none defined'})"
                f"{suggest(str(default), names)}",
            )
        else:  # clients no group names: the dns section's lists, like before web filtering
            lists = tuple(lst.name for lst in ctx.dns.blocklists) if ctx.dns else ()
            groups.append(
                ClientGroup(
                    DEFAULT_GROUP,
                    ClientMembers(AddressSet(f"cg_{DEFAULT_GROUP}")),
                    True,
                    FilterItems(blocklists=lists),
                )
            )
    zones, redirects = _enforcement(ck, data, ctx, groups)
    doh = ck.mapping(data.get("doh", {}), ("web_filter", "doh"), "doh") or {}
    block_doh = ck.boolean(doh.get("block", True), ("web_filter", "doh", "block")) is not False
    v4, v6 = list(ctx.catalogue.doh_v4), list(ctx.catalogue.doh_v6)
    for apath, text in ck.strings(doh.get("addresses"), ("web_filter", "doh", "addresses")):
        try:
            ip = ipaddress.ip_address(text.strip())
        except ValueError:
            ck.error(apath, f"expected an address, got {text!r}")
            continue
        (v4 if ip.version == 4 else v6).append(str(ip))
    doh_names = (
        *ctx.catalogue.doh_names,
        *_domains(ck, doh.get("names"), ("web_filter", "doh", "names")),
    )
    timeout = data.get("domain_set_timeout", 600)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 60 <= timeout <= 604800:
        ck.error(("web_filter", "domain_set_timeout"), f"expected 60-604800 s, got {timeout!r}")
        timeout = 600
    unblock = ck.boolean(data.get("unblock_requests", False), ("web_filter", "unblock_requests"))
    used_cats: list[str] = []
    used_services: list[str] = []
    for g in groups:
        for items in (g.blocks, *(s.block for s in g.schedules), *(s.unblock for s in g.schedules)):
            used_cats += items.categories
            used_services += items.services
    categories: list[CategorySource] = []
    for name in dict.fromkeys(used_cats):
        if name in ctx.categories:  # the policy's own source wins over the bundled list
            categories.append(ctx.categories[name])
            continue
        cat = ctx.catalogue.categories[name]
        files = (cat.file,) if cat.file is not None else ()
        categories.append(CategorySource(name, files, (), cat.domains))
    services = tuple((s, ctx.catalogue.services[s].domains) for s in dict.fromkeys(used_services))
    return WebFilter(
        groups=tuple(groups),
        default_group=str(default),
        categories=tuple(categories),
        services=services,
        zones=zones,
        redirects=redirects,
        block_doh=block_doh,
        doh_names=tuple(dict.fromkeys(doh_names)),
        doh_v4=tuple(dict.fromkeys(v4)),
        doh_v6=tuple(dict.fromkeys(v6)),
        unblock_requests=unblock is True,
        domain_set_timeout=timeout,
        catalogue_version=ctx.catalogue.version,
    )

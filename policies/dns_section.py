"""The policy's ``dns:`` section: what the appliance's resolver does.

Validated like every other section (file:line:column, unknown keys refused). The resolver
itself lives in ``dns_filter``; this module only turns YAML into a frozen DnsSettings, so
``policies`` still imports nothing of ours.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any, Literal

from policies.checks import Checker, suggest
from policies.schema_base import NAME_PATTERN
from policies.yaml_source import Path

BlockMode = Literal["nxdomain", "null", "ip", "refused"]
BLOCK_MODES: tuple[BlockMode, ...] = ("nxdomain", "null", "ip", "refused")
RECORD_TYPES = ("A", "AAAA", "CNAME")
_DOMAIN = re.compile(
    r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$"
)
_ENDPOINT = re.compile(
    r"^(udp://|tcp://|tls://)?(\[[0-9a-fA-F:.]+\]|[0-9.]+|[a-z0-9.-]+)(:\d{1,5})?(#[A-Za-z0-9.-]+)?$"
)


@dataclass(frozen=True)
class DnsList:
    name: str
    files: tuple[FsPath, ...]
    urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class DnsSettings:
    """Resolver settings; paths are absolute (resolved against the policy's folder)."""

    listen: tuple[str, ...] = ()  # empty: the box's addresses on the non-WAN zones, port 53
    upstreams: tuple[str, ...] = ()
    blocklists: tuple[DnsList, ...] = ()
    allowlists: tuple[DnsList, ...] = ()
    block: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    block_mode: BlockMode = "nxdomain"
    block_ttl: int = 10
    block_ipv4: str | None = None
    block_ipv6: str | None = None
    local_records: tuple[tuple[str, str, str], ...] = ()  # (name, type, value)
    forward_zones: tuple[tuple[str, tuple[str, ...]], ...] = ()
    rate_limit: float = 200.0
    rate_burst: float = 1000.0
    rate_limit_action: Literal["refuse", "drop"] = "refuse"
    rebinding_protection: bool = True
    rebind_allow: tuple[str, ...] = ()
    cache_size: int = 10_000
    query_log: bool = True
    log_retention_days: float = 7.0
    extra: dict[str, Any] = field(default_factory=dict)


def domain_name(ck: Checker, value: Any, path: Path) -> str | None:
    if not isinstance(value, str) or not _DOMAIN.match(value.strip().lower().rstrip(".")):
        ck.error(path, f"expected a domain name, got {value!r}")
        return None
    return value.strip().lower().rstrip(".")


def _endpoints(ck: Checker, value: Any, path: Path) -> tuple[str, ...]:
    out: list[str] = []
    for p, text in ck.strings(value, path):
        if not _ENDPOINT.match(text):
            ck.error(p, f"expected host:port, udp://, tcp:// or tls://host:853#name, got {text!r}")
        else:
            out.append(text)
    return tuple(out)


def _lists(ck: Checker, value: Any, path: Path, base_dir: FsPath) -> tuple[DnsList, ...]:
    out: list[DnsList] = []
    for name, spec in ck.named_mapping(value, path).items():
        lpath: Path = (*path, name)
        if not ck.name(name, lpath, NAME_PATTERN, "list name", key=True):
            continue
        data = ck.mapping(spec, lpath, "dns_list")
        if data is None:
            continue
        files: list[FsPath] = []
        for fpath, fname in ck.strings(data.get("files"), (*lpath, "files")):
            file = FsPath(fname) if FsPath(fname).is_absolute() else base_dir / fname
            if not file.is_file():
                ck.error(fpath, f"cannot read list file {file}")
            files.append(file)
        urls: list[str] = []
        for upath, url in ck.strings(data.get("urls"), (*lpath, "urls")):
            if not url.startswith(("https://", "http://")):
                ck.error(upath, f"expected an http(s) URL, got {url!r}")
            urls.append(url)
        if not files and not urls:
            ck.error(lpath, "a list needs 'files' or 'urls'")
        out.append(DnsList(name, tuple(files), tuple(urls)))
    return tuple(out)


def parse_dns(ck: Checker, value: Any, base_dir: FsPath) -> DnsSettings | None:
    if value is None:
        return None
    data = ck.mapping(value, ("dns",), "dns")
    if data is None:
        return None
    mode = data.get("block_mode", "nxdomain")
    if mode not in BLOCK_MODES:
        ck.error(
            ("dns", "block_mode"),
            f"unknown block mode {mode!r} (allowed: {', '.join(BLOCK_MODES)})"
            f"{suggest(str(mode), BLOCK_MODES)}",
        )
        mode = "nxdomain"
    ttl = data.get("block_ttl", 10)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= 86_400:
        ck.error(("dns", "block_ttl"), f"expected seconds (0-86400), got {ttl!r}")
        ttl = 10
    page = ck.mapping(data.get("block_page", {}), ("dns", "block_page"), "block_page") or {}
    ipv4, ipv6 = page.get("ipv4"), page.get("ipv6")
    for key, want, val in (("ipv4", 4, ipv4), ("ipv6", 6, ipv6)):
        if val is not None:
            try:
                if ipaddress.ip_address(val).version != want:
                    raise ValueError
            except ValueError:
                ck.error(("dns", "block_page", key), f"expected an IPv{want} address, got {val!r}")
    if mode == "ip" and ipv4 is None and ipv6 is None:
        ck.error(("dns", "block_mode"), "block_mode 'ip' needs block_page.ipv4 and/or ipv6")
    records: list[tuple[str, str, str]] = []
    for name, spec in ck.named_mapping(data.get("local_records"), ("dns", "local_records")).items():
        rpath: Path = ("dns", "local_records", name)
        host = domain_name(ck, name, rpath)
        if host is None or not isinstance(spec, dict):
            if host is not None:
                ck.error(rpath, "expected a mapping like {A: 192.0.2.10}")
            continue
        for rtype, rvalue in spec.items():
            vpath: Path = (*rpath, rtype)
            if rtype not in RECORD_TYPES:
                allowed = ", ".join(RECORD_TYPES)
                ck.error(vpath, f"unknown record type {rtype!r} (allowed: {allowed})", key=True)
                continue
            for ip_path, item in ck.strings(rvalue, vpath):
                if rtype == "CNAME":
                    target = domain_name(ck, item, ip_path)
                    if target:
                        records.append((host, rtype, target))
                    continue
                try:
                    ok = ipaddress.ip_address(item).version == (4 if rtype == "A" else 6)
                except ValueError:
                    ok = False
                if not ok:
                    ck.error(ip_path, f"{item!r} is not an IPv{4 if rtype == 'A' else 6} address")
                else:
                    records.append((host, rtype, item))
    zones: list[tuple[str, tuple[str, ...]]] = []
    for domain, servers in ck.named_mapping(
        data.get("forward_zones"), ("dns", "forward_zones")
    ).items():
        zpath: Path = ("dns", "forward_zones", domain)
        d = domain_name(ck, domain, zpath)
        eps = _endpoints(ck, servers, zpath)
        if d and eps:
            zones.append((d, eps))
    rl = ck.mapping(data.get("rate_limit", {}), ("dns", "rate_limit"), "dns_rate_limit") or {}
    rate, burst = rl.get("rate", 200), rl.get("burst", 1000)
    for key, val in (("rate", rate), ("burst", burst)):
        if isinstance(val, bool) or not isinstance(val, int | float) or val <= 0:
            ck.error(("dns", "rate_limit", key), f"expected a positive number, got {val!r}")
    action = rl.get("action", "refuse")
    if action not in ("refuse", "drop"):
        ck.error(("dns", "rate_limit", "action"), f"expected refuse or drop, got {action!r}")
        action = "refuse"
    cache_size = data.get("cache_size", 10_000)
    if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
        ck.error(("dns", "cache_size"), f"expected a number of entries, got {cache_size!r}")
        cache_size = 10_000
    qlog = ck.mapping(data.get("query_log", {}), ("dns", "query_log"), "dns_query_log") or {}
    retention = qlog.get("retention_days", 7)
    if isinstance(retention, bool) or not isinstance(retention, int | float) or retention <= 0:
        ck.error(("dns", "query_log", "retention_days"), f"expected days > 0, got {retention!r}")
        retention = 7
    block = tuple(
        d
        for p, v in ck.strings(data.get("block"), ("dns", "block"))
        if (d := domain_name(ck, v, p))
    )
    allow = tuple(
        d
        for p, v in ck.strings(data.get("allow"), ("dns", "allow"))
        if (d := domain_name(ck, v, p))
    )
    rebind_allow = tuple(
        d
        for p, v in ck.strings(data.get("rebind_allow"), ("dns", "rebind_allow"))
        if (d := domain_name(ck, v, p))
    )
    return DnsSettings(
        listen=_endpoints(ck, data.get("listen"), ("dns", "listen")),
        upstreams=_endpoints(ck, data.get("upstreams"), ("dns", "upstreams")),
        blocklists=_lists(ck, data.get("blocklists"), ("dns", "blocklists"), base_dir),
        allowlists=_lists(ck, data.get("allowlists"), ("dns", "allowlists"), base_dir),
        block=block,
        allow=allow,
        block_mode=mode,
        block_ttl=ttl,
        block_ipv4=ipv4,
        block_ipv6=ipv6,
        local_records=tuple(records),
        forward_zones=tuple(zones),
        rate_limit=float(rate) if isinstance(rate, int | float) else 200.0,
        rate_burst=float(burst) if isinstance(burst, int | float) else 1000.0,
        rate_limit_action=action,
        rebinding_protection=ck.boolean(
            data.get("rebinding_protection", True), ("dns", "rebinding_protection")
        )
        is not False,
        rebind_allow=rebind_allow,
        cache_size=cache_size,
        query_log=ck.boolean(qlog.get("enabled", True), ("dns", "query_log", "enabled"))
        is not False,
        log_retention_days=float(retention),
    )

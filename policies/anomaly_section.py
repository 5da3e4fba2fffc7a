"""The policy's ``anomaly:`` section: what scoring watches and what its alerts may do.

Validated like every other section (file:line:column, unknown keys refused with a
suggestion). ``policies`` imports nothing of the appliance, so this only turns YAML into a
frozen ``AnomalySettings``; ``appliance.anomaly`` builds the scorer and the alert actions
from it.

The office's own networks (``lan``) default to the networks of every zone that is not a
masquerade (WAN) zone, taken from the zones' ``addresses`` (``192.0.2.1/26`` on ``lan``
gives ``192.0.2.0/26``): that is what "inside" means to the firewall too, so scoring and
rules cannot disagree about it. A policy whose inside zones carry no addresses must list
``lan`` itself; without either, scoring falls back to the private ranges (a warning says so).

Quarantine is never automatic unless the admin asks for it (``quarantine: high`` or
``critical``) and then only for alerts that also reach ``quarantine_min_score``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any, Literal
from urllib.parse import urlsplit

from policies.anomaly_schema import SEVERITY_LEVELS
from policies.checks import Checker, suggest, type_name
from policies.intervals import Interval, merge
from policies.model import AddressSet, Zone
from policies.objects import looks_like_address, parse_literal
from policies.yaml_source import Path

Level = Literal["info", "low", "medium", "high", "critical"]
QuarantineLevel = Literal["never", "high", "critical"]
NotifyLevel = Literal["info", "low", "medium", "high", "critical", "never"]
QUARANTINE_LEVELS: tuple[QuarantineLevel, ...] = ("never", "high", "critical")
NOTIFY_LEVELS: tuple[NotifyLevel, ...] = (*SEVERITY_LEVELS, "never")  # type: ignore[assignment]

DETECTOR_KINDS = ("beacon", "scan", "lateral", "dns-tunnel", "dga", "exfil", "long-conn", "intel")
"""Alert kinds, as ``Finding.kind`` names them."""
DETECTOR_NAMES = ("beacon", "scans", "exfil", "intel", "dnstunnel", "dga")
"""Detector modules (``appliance.anomaly.<name>``); one may produce several kinds."""
_PARAM_NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
_URL_TEXT = re.compile(r"^[\x21-\x7e]{1,500}$")  # printable ASCII, no spaces or controls
_HOST_PORT = re.compile(
    r"^(\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.-]+)):(?P<port>\d{1,5})$"
)

ParamValue = int | float | bool


@dataclass(frozen=True)
class AnomalySettings:
    """The ``anomaly:`` section, resolved: feed paths absolute, exempt as merged intervals.

    ``detectors`` is a tuple of ``(detector, ((parameter, value), ...))`` so the settings stay
    hashable like the rest of the Policy; ``detector_params()`` gives it as dicts.
    """

    enabled: bool = True
    lan: tuple[str, ...] = ()  # CIDRs; empty: scoring's default (the private ranges)
    lan_derived: bool = True  # True when ``lan`` came from the zones, not the policy
    feeds: tuple[FsPath, ...] = ()
    record: Level = "low"
    notify: NotifyLevel = "high"
    quarantine: QuarantineLevel = "never"
    quarantine_min_score: int = 90
    exempt: AddressSet = field(default_factory=lambda: AddressSet(None))
    webhook: str | None = None
    syslog: bool = False
    syslog_address: tuple[str, int] | None = None  # None with syslog: the local /dev/log
    detectors: tuple[tuple[str, tuple[tuple[str, ParamValue], ...]], ...] = ()

    def detector_params(self) -> dict[str, dict[str, ParamValue]]:
        """Overrides by detector (or kind) name, for ``ScoringConfig.params``."""
        return {name: dict(params) for name, params in self.detectors}


def inside_networks(zones: list[Zone] | tuple[Zone, ...], masquerade: tuple[str, ...]) -> list[str]:
    """The networks of every zone that is not a masquerade (WAN) zone, in zone order."""
    nets: list[str] = []
    for zone in zones:
        if zone.name in masquerade:
            continue
        for a in zone.addresses:
            net = str(ipaddress.ip_network(f"{a.address}/{a.prefix}", strict=False))
            if net not in nets:
                nets.append(net)
    return nets


def _level(
    ck: Checker, data: dict[str, Any], key: str, default: str, allowed: tuple[str, ...]
) -> Any:
    value = data.get(key, default)
    if value not in allowed:
        ck.error(
            ("anomaly", key),
            f"expected one of {', '.join(allowed)}, got {value!r}{suggest(str(value), allowed)}",
        )
        return default
    return value


def _lan(ck: Checker, value: Any) -> tuple[str, ...]:
    out: list[str] = []
    for p, text in ck.strings(value, ("anomaly", "lan")):
        try:
            net = ipaddress.ip_network(text.strip(), strict=False)
        except ValueError:
            ck.error(p, f"expected a network like 192.0.2.0/24, got {text!r}")
            continue
        if str(net) not in out:
            out.append(str(net))
    return tuple(out)


def _feeds(ck: Checker, value: Any, base_dir: FsPath) -> tuple[FsPath, ...]:
    files: list[FsPath] = []
    for p, name in ck.strings(value, ("anomaly", "feeds")):
        file = FsPath(name) if FsPath(name).is_absolute() else base_dir / name
        if not file.is_file():
            ck.error(p, f"cannot read threat-intel feed {file}")
        files.append(file)
    return tuple(files)


def _exempt(ck: Checker, value: Any, groups: dict[str, AddressSet]) -> AddressSet:
    v4: list[Interval] = []
    v6: list[Interval] = []
    for p, text in ck.strings(value, ("anomaly", "exempt")):
        if text in groups:
            v4 += groups[text].v4
            v6 += groups[text].v6
            continue
        parsed = parse_literal(text)
        if isinstance(parsed, str):
            if looks_like_address(text):
                ck.error(p, parsed)
            else:
                ck.error(
                    p,
                    f"unknown address group '{text}' "
                    f"(groups: {', '.join(groups) or 'none defined'}){suggest(text, groups)}",
                )
            continue
        fam, iv = parsed
        (v4 if fam == 4 else v6).append(iv)
    return AddressSet(None, tuple(merge(v4)), tuple(merge(v6)))


def _webhook(ck: Checker, value: Any) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value) if isinstance(value, str) and _URL_TEXT.match(value) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        ck.error(("anomaly", "webhook"), f"expected an http(s) URL, got {value!r}")
        return None
    return str(value)


def _syslog(ck: Checker, value: Any) -> tuple[bool, tuple[str, int] | None]:
    path: Path = ("anomaly", "syslog")
    if value is None or isinstance(value, bool):
        return bool(value), None
    if not isinstance(value, dict):
        ck.error(path, f"expected true, false or {{address: host:port}}, got {type_name(value)}")
        return False, None
    data = ck.mapping(value, path, "anomaly_syslog")
    text = data.get("address") if data else None
    if data is None or text is None:
        return False, None
    m = _HOST_PORT.match(text) if isinstance(text, str) else None
    port = int(m["port"]) if m else 0
    if m is None or not 0 < port < 65536:
        ck.error((*path, "address"), f"expected host:port (or [IPv6]:port), got {text!r}")
        return False, None
    host = m["v6"] or m["host"]
    if m["v6"]:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            ck.error((*path, "address"), f"{host!r} is not an IPv6 address")
            return False, None
    return True, (host, port)


def _detectors(
    ck: Checker, value: Any
) -> tuple[tuple[str, tuple[tuple[str, ParamValue], ...]], ...]:
    out: list[tuple[str, tuple[tuple[str, ParamValue], ...]]] = []
    known = dict.fromkeys((*DETECTOR_NAMES, *DETECTOR_KINDS))
    for name, params in ck.named_mapping(value, ("anomaly", "detectors")).items():
        dpath: Path = ("anomaly", "detectors", name)
        if name not in known:
            ck.error(
                dpath,
                f"unknown detector '{name}' (detectors: {', '.join(DETECTOR_NAMES)}; kinds: "
                f"{', '.join(DETECTOR_KINDS)}){suggest(str(name), known)}",
                key=True,
            )
            continue
        if not isinstance(params, dict):
            ck.error(dpath, f"expected parameter: number pairs, got {type_name(params)}")
            continue
        pairs: list[tuple[str, ParamValue]] = []
        for pname, pval in params.items():
            ppath: Path = (*dpath, pname)
            if not isinstance(pname, str) or not _PARAM_NAME.match(pname):
                ck.error(ppath, f"invalid parameter name {pname!r}", key=True)
            elif not isinstance(pval, int | float) or pval != pval:  # bool is an int; NaN refused
                ck.error(ppath, f"expected a number or true/false, got {type_name(pval)}")
            else:
                pairs.append((pname, pval))
        out.append((name, tuple(pairs)))
    return tuple(out)


def parse_anomaly(
    ck: Checker,
    value: Any,
    base_dir: FsPath,
    *,
    zones: list[Zone] | tuple[Zone, ...],
    masquerade: tuple[str, ...],
    groups: dict[str, AddressSet],
) -> AnomalySettings | None:
    """The section's settings; call it only when the policy has the key. An empty section
    (``anomaly:`` or ``anomaly: {}``) turns scoring on with every default."""
    data = ck.mapping({} if value is None else value, ("anomaly",), "anomaly")
    if data is None:
        return None
    enabled = ck.boolean(data.get("enabled", True), ("anomaly", "enabled"))
    lan = _lan(ck, data["lan"]) if "lan" in data else ()
    derived = "lan" not in data
    if derived:
        lan = tuple(inside_networks(zones, masquerade))
        if not lan and zones:
            ck.warn(
                ("anomaly",),
                "no inside zone has addresses, so scoring treats the private ranges as the "
                "office's networks: set anomaly.lan",
            )
    score = data.get("quarantine_min_score", 90)
    if isinstance(score, bool) or not isinstance(score, int) or not 0 <= score <= 100:
        ck.error(("anomaly", "quarantine_min_score"), f"expected 0-100, got {score!r}")
        score = 90
    syslog, syslog_address = _syslog(ck, data.get("syslog"))
    return AnomalySettings(
        enabled=enabled is not False,
        lan=lan,
        lan_derived=derived,
        feeds=_feeds(ck, data.get("feeds"), base_dir),
        record=_level(ck, data, "record", "low", SEVERITY_LEVELS),
        notify=_level(ck, data, "notify", "high", NOTIFY_LEVELS),
        quarantine=_level(ck, data, "quarantine", "never", QUARANTINE_LEVELS),
        quarantine_min_score=score,
        exempt=_exempt(ck, data.get("exempt"), groups),
        webhook=_webhook(ck, data.get("webhook")),
        syslog=syslog,
        syslog_address=syslog_address,
        detectors=_detectors(ck, data.get("detectors")),
    )


def describe_anomaly(settings: AnomalySettings) -> list[str]:
    """Plain-language lines for ``edgeguard explain`` and the UI's policy summary."""
    if not settings.enabled:
        return ["anomaly scoring: OFF (quarantine sets kept for manual quarantine)"]
    lan = ", ".join(settings.lan[:3]) + (
        f" (+{len(settings.lan) - 3})" if len(settings.lan) > 3 else ""
    )
    where = [w for w, on in (("webhook", settings.webhook), ("syslog", settings.syslog)) if on]
    lines = [
        f"anomaly scoring of {lan or 'the private ranges'}"
        + (f" with {len(settings.feeds)} threat-intel feed(s)" if settings.feeds else "")
        + f"; alerts >= {settings.record} recorded",
        "anomaly alerts notified: "
        + (
            f">= {settings.notify} via {' and '.join(where)}"
            if where and settings.notify != "never"
            else "no"
        ),
    ]
    if settings.quarantine == "never":
        lines.append("automatic quarantine: never (by hand: edgeguard quarantine add, or the UI)")
    else:
        n = len(settings.exempt.v4) + len(settings.exempt.v6)
        lines.append(
            f"automatic quarantine: alerts >= {settings.quarantine} scoring >= "
            f"{settings.quarantine_min_score}" + (f"; {n} exempt range(s)" if n else "")
        )
    return lines


__all__ = [
    "DETECTOR_KINDS",
    "DETECTOR_NAMES",
    "NOTIFY_LEVELS",
    "QUARANTINE_LEVELS",
    "AnomalySettings",
    "describe_anomaly",
    "inside_networks",
    "parse_anomaly",
]

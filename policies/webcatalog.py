"""The bundled web-filtering catalogue: services, safe search, DoH resolvers and categories.

A policy says "block social networks and AI chat for the guests, enforce safe search"; this
module knows what that means in DNS names. The data lives in plain files under ``catalogue/``
so it can be reviewed, diffed and versioned apart from the code (``version`` is reported with
every enforced policy), and so an MSP can see exactly which names a category covers.

The loader is strict because a mistake here is silent in production: a misspelt group orphans
its services, a domain listed under two services makes "block video" take shopping down too,
and an unparsable address would break the nft set that blocks DoH resolvers. Every problem is
a :class:`CatalogueError` naming the file and the entry.

Only the standard library and PyYAML: ``policies`` sits at the bottom of the import graph.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

CATALOGUE_DIR = Path(__file__).resolve().parent / "catalogue"
SERVICES_FILE = "web_services.yaml"
SAFE_SEARCH_FILE = "safe_search.yaml"
DOH_FILE = "doh.yaml"
CATEGORIES_DIR = "categories"

_ID = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_VERSION = re.compile(r"^\d{4}\.\d{1,2}\.\d+$")
_TITLE_PREFIX = "# Title:"
DEFAULT_MODE = "default"  # safe_hosts() accepts it for "whatever the provider's default is"


class CatalogueError(Exception):
    """The bundled catalogue files are broken; the message names the file and the entry."""


@dataclass(frozen=True)
class WebService:
    """One popular service and every name its sites and apps need."""

    name: str
    title: str
    group: str
    domains: tuple[str, ...]


@dataclass(frozen=True)
class SafeSearchProvider:
    """A search engine whose documented safe host is answered for its search hostnames."""

    name: str
    modes: Mapping[str, str] = field(hash=False)
    default_mode: str
    domains: tuple[str, ...]  # exact query names, never their subdomains
    title: str = ""


@dataclass(frozen=True)
class Category:
    """A web-filter category.

    File categories (``file`` set, ``domains`` empty) are block lists that the DNS filter reads
    with its list parser, like a subscribed list. Service-group categories (``file`` None) carry
    the union of their services' domains.
    """

    name: str
    title: str
    file: Path | None
    domains: tuple[str, ...]


@dataclass(frozen=True)
class Catalogue:
    """Everything in ``catalogue/``, validated and read-only."""

    version: str
    services: Mapping[str, WebService] = field(hash=False)
    service_groups: Mapping[str, str] = field(hash=False)  # id -> title
    safe_search: Mapping[str, SafeSearchProvider] = field(hash=False)
    doh_names: tuple[str, ...]
    doh_v4: tuple[str, ...]
    doh_v6: tuple[str, ...]
    categories: Mapping[str, Category] = field(hash=False)

    def expand_services(self, names: Iterable[str]) -> tuple[WebService, ...]:
        """Services named directly or through their group, each once, in first-seen order.

        Raises ``KeyError(name)`` for a name that is neither, so callers can report it.
        """
        out: dict[str, WebService] = {}
        for name in names:
            if name in self.services:
                out.setdefault(name, self.services[name])
            elif name in self.service_groups:
                for svc in self.services.values():
                    if svc.group == name:
                        out.setdefault(svc.name, svc)
            else:
                raise KeyError(name)
        return tuple(out.values())

    def safe_hosts(self, settings: Mapping[str, str]) -> dict[str, str]:
        """``{provider: mode}`` to ``{exact query name: safe host}``.

        ``"default"`` stands for the provider's default mode. Unknown providers raise
        ``KeyError(provider)``; unknown modes raise ``ValueError``.
        """
        out: dict[str, str] = {}
        for provider_name, mode in settings.items():
            provider = self.safe_search[provider_name]
            chosen = provider.default_mode if mode == DEFAULT_MODE else mode
            if chosen not in provider.modes:
                known = ", ".join(sorted(provider.modes))
                raise ValueError(
                    f"safe search {provider_name}: unknown mode {mode!r} (known: {known})"
                )
            host = provider.modes[chosen]
            for qname in provider.domains:
                out[qname] = host
        return out


# --- loading -------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: the last duplicate would silently win."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Hashable] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if isinstance(key, Hashable) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


class _File:
    """One catalogue file being read: every error it raises names the file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, where: str, message: str) -> CatalogueError:
        return CatalogueError(f"{self.path}: {where}: {message}")

    def load(self) -> dict[str, Any]:
        try:
            data = yaml.load(self.path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
        except OSError as exc:
            raise CatalogueError(f"{self.path}: cannot read: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise CatalogueError(f"{self.path}: not valid YAML: {exc}") from exc
        return self.mapping(data, "top level")

    def mapping(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(where, "expected a mapping")
        return value

    def text(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.error(where, f"expected text, got {value!r} (quote it)")
        return value

    def texts(self, value: Any, where: str) -> list[str]:
        if not isinstance(value, list) or not value:
            raise self.error(where, "expected a non-empty list")
        items = [self.text(v, f"{where}[{i}]") for i, v in enumerate(value)]
        seen: set[str] = set()
        for item in items:
            if item in seen:
                raise self.error(where, f"{item!r} is listed twice")
            seen.add(item)
        return items

    def ident(self, value: Any, where: str) -> str:
        text = self.text(value, where)
        if not _ID.match(text):
            raise self.error(where, f"{text!r} is not an id (lowercase, ^[a-z][a-z0-9-]{{0,31}}$)")
        return text

    def hostnames(self, value: Any, where: str, *, wildcard: bool) -> tuple[str, ...]:
        names = self.texts(value, where)
        for name in names:
            if not is_domain_entry(name, wildcard=wildcard):
                kind = "hostname (optionally *.)" if wildcard else "exact hostname"
                raise self.error(where, f"{name!r} is not a lowercase {kind}")
        return tuple(names)

    def version(self, data: Mapping[str, Any]) -> str:
        text = self.text(data.get("version"), "version")
        if not _VERSION.match(text):
            raise self.error("version", f"{text!r} is not YYYY.MM.N")
        return text


def is_domain_entry(text: str, *, wildcard: bool = True) -> bool:
    """A lowercase DNS name of two or more labels, optionally ``*.``-prefixed.

    Single labels are refused: a bare ``com`` in a block list would block a whole TLD. An
    all-numeric last label is refused so an IPv4 address is never mistaken for a name.
    """
    if wildcard and text.startswith("*."):
        text = text[2:]
    labels = text.split(".")
    return (
        len(text) <= 253
        and len(labels) >= 2
        and all(_LABEL.match(label) for label in labels)
        and not labels[-1].isdigit()
    )


def read_category_file(path: Path) -> tuple[str, tuple[str, ...]]:
    """``(title, domains)`` of a bundled category list; the title is its ``# Title:`` line."""
    f = _File(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CatalogueError(f"{path}: cannot read: {exc.strerror}") from exc
    title = ""
    domains: list[str] = []
    seen: set[str] = set()
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if line.startswith(_TITLE_PREFIX) and not title:
            title = line[len(_TITLE_PREFIX) :].strip()
        if not line or line.startswith("#"):
            continue
        if not is_domain_entry(line):
            raise f.error(f"line {number}", f"{line!r} is not a lowercase domain")
        if line in seen:
            raise f.error(f"line {number}", f"{line!r} is listed twice")
        seen.add(line)
        domains.append(line)
    if not title:
        raise f.error("header", f"no '{_TITLE_PREFIX} ...' comment line")
    if not domains:
        raise f.error("content", "no domains")
    return title, tuple(domains)


def _load_services(
    path: Path,
) -> tuple[str, dict[str, str], dict[str, WebService]]:
    f = _File(path)
    data = f.load()
    version = f.version(data)
    groups: dict[str, str] = {}
    for gid, title in f.mapping(data.get("groups"), "groups").items():
        groups[f.ident(gid, f"groups.{gid}")] = f.text(title, f"groups.{gid}")
    services: dict[str, WebService] = {}
    owner: dict[str, str] = {}  # bare name (without *.) -> the service that lists it
    for sid, body in f.mapping(data.get("services"), "services").items():
        where = f"services.{sid}"
        f.ident(sid, where)
        if sid in groups:
            raise f.error(where, f"service id {sid!r} is also a group id")
        entry = f.mapping(body, where)
        unknown = set(entry) - {"title", "group", "domains"}
        if unknown:
            raise f.error(where, f"unknown keys {sorted(unknown)}")
        group = f.text(entry.get("group"), f"{where}.group")
        if group not in groups:
            raise f.error(f"{where}.group", f"unknown group {group!r}")
        domains = f.hostnames(entry.get("domains"), f"{where}.domains", wildcard=True)
        for domain in domains:
            bare = domain.removeprefix("*.")
            if bare in owner and owner[bare] != sid:
                raise f.error(f"{where}.domains", f"{domain!r} is already under {owner[bare]!r}")
            owner[bare] = sid
        title = f.text(entry.get("title"), f"{where}.title")
        services[sid] = WebService(sid, title, group, domains)
    for gid in groups:
        if not any(s.group == gid for s in services.values()):
            raise f.error(f"groups.{gid}", "no service is in this group")
    return version, groups, services


def _load_safe_search(path: Path) -> tuple[str, dict[str, SafeSearchProvider]]:
    f = _File(path)
    data = f.load()
    version = f.version(data)
    providers: dict[str, SafeSearchProvider] = {}
    owner: dict[str, str] = {}
    for pid, body in f.mapping(data.get("providers"), "providers").items():
        where = f"providers.{pid}"
        f.ident(pid, where)
        entry = f.mapping(body, where)
        modes: dict[str, str] = {}
        for mode, host in f.mapping(entry.get("modes"), f"{where}.modes").items():
            f.ident(mode, f"{where}.modes.{mode}")
            if mode == DEFAULT_MODE:
                raise f.error(f"{where}.modes", f"{DEFAULT_MODE!r} is reserved")
            modes[mode] = f.hostnames([host], f"{where}.modes.{mode}", wildcard=False)[0]
        default = f.text(entry.get("default"), f"{where}.default")
        if default not in modes:
            raise f.error(f"{where}.default", f"{default!r} is not one of its modes")
        domains = f.hostnames(entry.get("domains"), f"{where}.domains", wildcard=False)
        for qname in domains:
            if qname in owner:
                raise f.error(f"{where}.domains", f"{qname!r} is already under {owner[qname]!r}")
            owner[qname] = pid
        title = f.text(entry.get("title", pid), f"{where}.title")
        providers[pid] = SafeSearchProvider(pid, MappingProxyType(modes), default, domains, title)
    return version, providers


def _addresses(f: _File, value: Any, where: str, version: int) -> tuple[str, ...]:
    texts = f.texts(value, where)
    for text in texts:
        try:
            addr = ipaddress.ip_address(text)
        except ValueError as exc:
            raise f.error(where, f"{text!r} is not an address") from exc
        if addr.version != version:
            raise f.error(where, f"{text!r} is not an IPv{version} address")
        if str(addr) != text:
            raise f.error(where, f"{text!r} is not in canonical form, write {str(addr)!r}")
    return tuple(texts)


def _load_doh(path: Path) -> tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    f = _File(path)
    data = f.load()
    version = f.version(data)
    names = f.hostnames(data.get("names"), "names", wildcard=False)
    v4 = _addresses(f, data.get("v4"), "v4", 4)
    v6 = _addresses(f, data.get("v6"), "v6", 6)
    return version, names, v4, v6


def load_catalogue(directory: Path = CATALOGUE_DIR) -> Catalogue:
    """Read and validate every catalogue file under ``directory``.

    The three YAML files must carry the same ``version``: they are one release of the
    catalogue, and a policy report quotes a single version.
    """
    version, groups, services = _load_services(directory / SERVICES_FILE)
    ss_version, safe_search = _load_safe_search(directory / SAFE_SEARCH_FILE)
    doh_version, doh_names, doh_v4, doh_v6 = _load_doh(directory / DOH_FILE)
    for name, other in ((SAFE_SEARCH_FILE, ss_version), (DOH_FILE, doh_version)):
        if other != version:
            raise CatalogueError(
                f"{directory / name}: version: {other!r} differs from {SERVICES_FILE}'s {version!r}"
            )

    categories: dict[str, Category] = {}
    for path in sorted((directory / CATEGORIES_DIR).glob("*.txt")):
        if not _ID.match(path.stem):
            raise CatalogueError(f"{path}: file name: {path.stem!r} is not a category id")
        if path.stem in groups:
            raise CatalogueError(f"{path}: file name: {path.stem!r} is also a service group")
        title, _ = read_category_file(path)
        categories[path.stem] = Category(path.stem, title, path, ())
    for gid, title in groups.items():
        domains = tuple(d for s in services.values() if s.group == gid for d in s.domains)
        categories[gid] = Category(gid, title, None, domains)

    return Catalogue(
        version=version,
        services=MappingProxyType(services),
        service_groups=MappingProxyType(groups),
        safe_search=MappingProxyType(safe_search),
        doh_names=doh_names,
        doh_v4=doh_v4,
        doh_v6=doh_v6,
        categories=MappingProxyType(categories),
    )


@functools.cache
def default_catalogue() -> Catalogue:
    """The bundled catalogue, read once per process (it only changes with a release)."""
    return load_catalogue()

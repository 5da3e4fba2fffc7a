"""What the settings pages read and change, kept apart from the views: the live policy's
lists with their parse summaries, the "update now" download job, a list added to the policy
text, and the UI's TLS pair.

Policy edits are *prepared* here, never applied: the result goes to the policy editor's
preview (``PREVIEW_ENDPOINT``), which plans it through the engine with the same safety
checks as every other change. The edit uses ruamel.yaml's round trip so the admin's comments,
key order, quoting and flow style survive: the preview's diff should show the one new list,
not a reformatted file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark, YAMLError
from ruamel.yaml.tokens import CommentToken

from appliance.atomic import write_atomic
from appliance.dns_service import list_sources
from appliance.store import Version
from dns_filter.matcher import MatcherError
from dns_filter.updater import ListSource, ListUpdater
from policies.errors import PolicyError
from policies.loader import parse_policy
from policies.model import Policy
from policies.schema_base import NAME_PATTERN
from webui.bridge import Appliance

PREVIEW_ENDPOINT = "policy.preview"  # the policy editor's preview: POST with PREVIEW_FIELD
PREVIEW_FIELD = "text"
LIST_KINDS = {"block": "blocklists", "allow": "allowlists"}
# Indentations tried in order: the first that reproduces the original text byte for byte is
# kept, so the edit changes only the lines it adds (the examples use the first one).
_INDENTS = ((2, 4, 2), (2, 2, 0), (4, 4, 2), (4, 6, 4), (4, 4, 0))
MAX_PEM = 64 * 1024
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


class EditError(ValueError):
    """The edit cannot be made; the message says why, for the admin."""


def _yaml(indent: tuple[int, int, int]) -> YAML:
    yaml = YAML()  # round-trip mode
    # ruamel.yaml 0.17 (bookworm) types these attributes as None: both versions pass mypy
    yaml.preserve_quotes = True  # type: ignore[assignment,unused-ignore]
    yaml.width = 4096  # type: ignore[assignment,unused-ignore]  # never re-wrap long lines
    yaml.indent(mapping=indent[0], sequence=indent[1], offset=indent[2])
    return yaml


def _dump(yaml: YAML, data: Any) -> str:
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def add_dns_list(text: str, name: str, url: str, kind: str = "block") -> str:
    """``text`` with a new list ``name`` fetched from ``url`` under ``dns.blocklists`` (or
    ``allowlists``), everything else as the admin wrote it. Raises EditError for a bad name
    or URL, a name already used, or a policy without a ``dns:`` section (a resolver needs
    upstreams, which a list alone cannot supply)."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise EditError("list name: a lowercase letter, then letters, digits, - or _ (32 at most)")
    if not url.startswith(("https://", "http://")) or any(c.isspace() for c in url):
        raise EditError("the list's address must be an http:// or https:// URL")
    if kind not in LIST_KINDS:
        raise EditError(f"unknown list kind {kind!r}")
    yaml = _yaml(_INDENTS[0])
    try:
        data = yaml.load(text)
    except YAMLError as exc:
        raise EditError(f"the live policy is not valid YAML: {exc}") from exc
    for indent in _INDENTS:
        candidate = _yaml(indent)
        if _dump(candidate, data) == text:
            yaml = candidate
            break
    if not isinstance(data, CommentedMap):
        raise EditError("the policy is not a mapping")
    dns = data.get("dns")
    if not isinstance(dns, CommentedMap):
        raise EditError("the policy has no dns: section; add one with upstreams first")
    for other in LIST_KINDS.values():
        existing = dns.get(other)
        if isinstance(existing, dict) and name in existing:
            raise EditError(f"a list named {name!r} already exists in dns.{other}")
    section = LIST_KINDS[kind]
    lists = dns.get(section)
    if lists is None:
        lists = CommentedMap()
        dns[section] = lists
    elif not isinstance(lists, CommentedMap):
        raise EditError(f"dns.{section} is not a mapping")
    urls = CommentedSeq([url])
    urls.fa.set_flow_style()
    entry = CommentedMap(urls=urls)
    entry.fa.set_flow_style()  # like the examples: name: {urls: [https://...]}
    trailing = _pop_trailing(lists)
    lists[name] = entry
    if trailing is not None:
        lists.ca.items[name] = [None, None, CommentToken("\n" + trailing, CommentMark(0)), None]
    return _dump(yaml, data)


def _pop_trailing(node: Any) -> str | None:
    """Detach the comment lines (and blank lines) that follow a block mapping's last line.

    ruamel hangs them on the deepest last value, so a key appended to the mapping would land
    below them, separated from its siblings; the last line's own end-of-line comment stays.
    """
    if not isinstance(node, CommentedMap | CommentedSeq) or not node or node.fa.flow_style():
        return None
    last: Any = list(node)[-1] if isinstance(node, CommentedMap) else len(node) - 1
    found = _pop_trailing(node[last])
    if found is not None:
        return found
    index = 2 if isinstance(node, CommentedMap) else 0
    slot = node.ca.items.get(last)
    if not slot or slot[index] is None:
        return None
    token = slot[index]
    keep, newline, rest = str(token.value).partition("\n")
    if not rest:
        return None
    slot[index] = CommentToken(keep + newline, token.start_mark) if keep.strip() else None
    return rest


# -- the live policy's lists ---------------------------------------------------------------
@dataclass(frozen=True)
class LivePolicy:
    version: Version | None
    text: str | None
    policy: Policy | None  # None: no live version, or it no longer validates here
    problems: tuple[str, ...] = ()


def live_policy(bridge: Appliance) -> LivePolicy:
    """The version the store says is enforced, parsed with list files resolved against the
    UI's policy base (a list file deleted since the apply shows up as a problem)."""
    store = bridge.engine().store
    version = store.live()
    if version is None:
        return LivePolicy(None, None, None)
    text = store.texts(version.id)[0]
    try:
        loaded = parse_policy(text, f"version {version.id}", base_dir=bridge.policy_base)
    except PolicyError as exc:
        return LivePolicy(version, text, None, tuple(str(exc).splitlines()))
    return LivePolicy(version, text, loaded.policy)


def _file_lists(policy: Policy) -> list[ListSource]:
    """The lists read from files or URLs: the dns section's and the web filter's categories
    (the names written into the policy itself are the policy editor's business)."""
    if policy.dns is None:
        return []
    return [s for s in list_sources(policy) if s.files or s.urls]


def url_sources(policy: Policy) -> list[tuple[str, str]]:
    return [(s.name, url) for s in _file_lists(policy) for url in s.urls]


def _signature(version: int, sources: list[ListSource], cache_dir: Path) -> tuple[Any, ...]:
    """Changes when a list file or a downloaded copy changes: the summaries are rebuilt
    only then (building a 1M-name list takes a second)."""

    def stamp(path: Path) -> tuple[str, int, int]:
        try:
            st = path.stat()
        except OSError:
            return (str(path), 0, -1)
        return (str(path), st.st_mtime_ns, st.st_size)

    files = [stamp(f) for source in sources for f in source.files]
    copies = sorted(stamp(p) for p in cache_dir.glob("*.list"))
    return (version, tuple(files), tuple(copies))


def list_rows(
    live: LivePolicy, state_dir: Path, cache: dict[str, Any]
) -> tuple[list[dict[str, Any]], str | None]:
    """One row per list (name, kind, files, URLs with their download state, entries,
    skipped lines, format), and an error when the lists cannot be read at all."""
    if live.policy is None or live.version is None:
        return [], None
    sources = _file_lists(live.policy)
    cache_dir = state_dir / "lists"
    updater = ListUpdater(sources, cache_dir, lambda _: None)
    key = _signature(live.version.id, sources, cache_dir)
    if cache.get("edgeguard_list_rows", (None,))[0] != key:
        try:
            summaries = updater.summaries()  # counts only: no indexes built in the UI
        except MatcherError as exc:
            return [], str(exc)
        cache["edgeguard_list_rows"] = (key, summaries)
    summaries = cache["edgeguard_list_rows"][1]
    rows = []
    for source in sources:
        mine = [
            s for k, s in summaries.items()
            if k == source.name or k.startswith((f"{source.name}/", f"{source.name} <"))
        ]  # fmt: skip
        rows.append(
            {
                "name": source.name,
                "kind": source.kind,
                "files": [str(f) for f in source.files],
                "urls": [
                    {"url": u, "downloaded": f"{source.name} <{u}>" in summaries}
                    for u in source.urls
                ],
                "entries": sum(s.entries for s in mine),
                "skipped": sum(s.skipped for s in mine),
                "format": ", ".join(sorted({s.format for s in mine})) or "not loaded",
            }
        )
    return rows, None


@dataclass
class ListJob:
    """One "update now" at a time, in a thread; ``snapshot`` is what the page polls."""

    state: str = "idle"  # idle, running, done
    started: float | None = None
    finished: float | None = None
    lines: list[str] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self, cache_dir: Path, urls: list[tuple[str, str]], timeout: float = 20.0) -> bool:
        """False when one is already running."""
        with self._lock:
            if self.state == "running":
                return False
            self.state, self.started, self.finished = "running", time.time(), None
            self.lines, self.results = [f"{len(urls)} list address(es) to download"], {}
        sources = [ListSource(name, "block", urls=(url,)) for name, url in urls]
        updater = ListUpdater(sources, cache_dir, lambda _: None, timeout=timeout)
        self._thread = threading.Thread(
            target=self._run, args=(updater, urls), name="ui-list-update", daemon=True
        )
        self._thread.start()
        return True

    def _say(self, line: str) -> None:
        with self._lock:
            self.lines.append(line)

    def _run(self, updater: ListUpdater, urls: list[tuple[str, str]]) -> None:
        try:
            for i, (name, url) in enumerate(urls, 1):
                self._say(f"{i}/{len(urls)} {name}: downloading {url}")
                updater.fetch(url)  # never raises: failures land in updater.status
                status = updater.status[url]
                with self._lock:
                    self.results[url] = {"list": name, "ok": status.ok, "detail": status.detail}
                self._say(f"{i}/{len(urls)} {name}: {status.detail}")
        finally:
            with self._lock:
                self.state, self.finished = "done", time.time()
                self.lines.append("done; the resolver picks up new copies on its next check")

    def wait(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "state": self.state,
                "started": self.started,
                "finished": self.finished,
                "progress": list(self.lines),
                "results": dict(self.results),
            }


# -- the UI's certificate ------------------------------------------------------------------
@dataclass(frozen=True)
class CertInfo:
    """What the settings page shows of a certificate: never anything of the private key."""

    subject: str
    issuer: str
    names: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    sha256: str
    chain: int  # certificates in the file (the server's own first)

    @property
    def days_left(self) -> int:
        return (self.not_after - dt.datetime.now(dt.UTC)).days

    @property
    def self_signed(self) -> bool:
        return self.subject == self.issuer

    def as_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "names": list(self.names),
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "days_left": self.days_left,
            "sha256": self.sha256,
            "chain": self.chain,
        }


def _utc(cert: x509.Certificate, attr: str) -> dt.datetime:
    """cryptography >= 42 has ``*_utc``; older ones give naive UTC datetimes."""
    aware = getattr(cert, f"{attr}_utc", None)
    if isinstance(aware, dt.datetime):
        return aware
    naive: dt.datetime = getattr(cert, attr)
    return naive.replace(tzinfo=dt.UTC)


def _certificates(pem: bytes) -> list[x509.Certificate]:
    blocks = _PEM_CERT.findall(pem)
    if not blocks:
        raise EditError("no PEM certificate found (-----BEGIN CERTIFICATE-----)")
    try:
        return [x509.load_pem_x509_certificate(block) for block in blocks]
    except ValueError as exc:
        raise EditError(f"the certificate does not parse: {exc}") from exc


def _info(certs: list[x509.Certificate]) -> CertInfo:
    cert = certs[0]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(str(n.value) for n in san)
    except x509.ExtensionNotFound:
        names = ()
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        names=names,
        not_before=_utc(cert, "not_valid_before"),
        not_after=_utc(cert, "not_valid_after"),
        sha256=hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
        chain=len(certs),
    )


def certificate_info(path: Path) -> CertInfo | None:
    """The installed certificate, or None when there is none (or it does not parse)."""
    try:
        return _info(_certificates(path.read_bytes()[: MAX_PEM * 4]))
    except (OSError, EditError):
        return None


def _spki(key: Any) -> bytes:
    der: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def install_certificate(tls_dir: Path, cert_pem: bytes, key_pem: bytes) -> CertInfo:
    """Check that ``cert_pem`` (the certificate, optionally followed by its chain) and
    ``key_pem`` (an unencrypted private key) parse, belong together and are in date, then
    write both atomically: ``key.pem`` 0600 first, ``cert.pem`` after, so a reader that
    sees the new certificate also finds its key. Raises EditError otherwise."""
    if len(cert_pem) > MAX_PEM or len(key_pem) > MAX_PEM:
        raise EditError("a certificate or key file larger than 64 KiB is not a PEM pair")
    certs = _certificates(cert_pem)
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError as exc:
        raise EditError("the private key is encrypted; upload it without a passphrase") from exc
    except ValueError as exc:
        raise EditError(f"the private key does not parse: {exc}") from exc
    if not isinstance(
        key,
        rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
        | ed448.Ed448PrivateKey,
    ):  # fmt: skip
        raise EditError("unsupported key type (RSA, EC or Ed25519/Ed448 expected)")
    if _spki(key.public_key()) != _spki(certs[0].public_key()):
        raise EditError("the private key does not belong to the (first) certificate")
    info = _info(certs)
    now = dt.datetime.now(dt.UTC)
    if info.not_after <= now:
        raise EditError(f"the certificate expired on {info.not_after:%Y-%m-%d}")
    if info.not_before > now + dt.timedelta(days=1):
        raise EditError(f"the certificate is valid only from {info.not_before:%Y-%m-%d}")
    tls_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(tls_dir, 0o700)
    key_text = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_atomic(tls_dir / "key.pem", key_text, mode=0o600)
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    write_atomic(tls_dir / "cert.pem", chain, mode=0o644)
    return info


_UPSTREAM = re.compile(
    r"^(udp://|tcp://|tls://)?(\[[0-9a-fA-F:.]+\]|[0-9.]+|[a-z0-9.-]+)(:\d{1,5})?(#[A-Za-z0-9.-]+)?$"
)


def set_upstreams(text: str, upstreams: list[str]) -> str:
    """``text`` with ``dns.upstreams`` replaced (the same forms the policy accepts: host:port,
    udp://, tcp://, tls://host:853#name), everything else as the admin wrote it."""
    cleaned = [u.strip() for u in upstreams if u.strip()]
    if not cleaned:
        raise EditError("give at least one upstream server")
    for u in cleaned:
        if not _UPSTREAM.match(u):
            raise EditError(f"not an upstream: {u!r} (host:port, tcp://, tls://host:853#name)")
    yaml = _yaml(_INDENTS[0])
    try:
        data = yaml.load(text)
    except YAMLError as exc:
        raise EditError(f"the live policy is not valid YAML: {exc}") from exc
    for indent in _INDENTS:
        candidate = _yaml(indent)
        if _dump(candidate, data) == text:
            yaml = candidate
            break
    if not isinstance(data, CommentedMap) or not isinstance(data.get("dns"), CommentedMap):
        raise EditError("the policy has no dns: section")
    seq = CommentedSeq(cleaned)
    seq.fa.set_flow_style()
    data["dns"]["upstreams"] = seq
    return _dump(yaml, data)

"""Serve the UI: gunicorn (a production WSGI server) over HTTPS with a certificate made on
first start, and the one-time setup token printed when no user exists yet.

One gunicorn worker with a few threads: a Raspberry Pi has little memory, and the UI's
work (SQLite reads, an occasional plan) is short. A certificate the admin uploads (or
``--cert/--key``) replaces the self-signed one.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from flask import Flask

from appliance.store import ConfigStore
from webui.app import create_app
from webui.config import UiConfig
from webui.gunicorn_base import BaseApplication
from webui.store import UiStore


def ensure_certificate(tls_dir: Path, names: list[str]) -> tuple[Path, Path]:
    """``cert.pem``/``key.pem`` in ``tls_dir``, made (self-signed, EC P-256) if missing."""
    cert_file, key_file = tls_dir / "cert.pem", tls_dir / "key.pem"
    if cert_file.exists() and key_file.exists():
        return cert_file, key_file
    tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "EdgeGuard appliance")])
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    tmp_key = key_file.with_suffix(".tmp")
    fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    os.replace(tmp_key, key_file)
    tmp_cert = cert_file.with_suffix(".tmp")
    tmp_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp_cert, cert_file)
    return cert_file, key_file


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, app: Flask, options: dict[str, Any]) -> None:
        self.application = app
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return self.application


def setup_token_line(config: UiConfig, urls: list[str]) -> str | None:
    """Make a fresh setup token if nobody can log in yet; the line to print, else None."""
    store = UiStore(config.ui_path / "ui.db")
    try:
        if not store.needs_setup():
            return None
        token = store.new_setup_token()
    finally:
        store.close()
    where = " or ".join(f"{url}/setup" for url in urls)
    return f"first start: open {where} and enter the setup token {token}"


WILDCARDS = ("0.0.0.0", "::", "")


def management_addresses(state_dir: Path) -> list[str]:
    """The live policy's addresses on its management zones: where the admin should go.

    Read from the stored YAML itself (no list files, no validation): this is only for a
    console line, and any problem just means falling back to the interfaces' addresses."""
    try:
        store = ConfigStore(state_dir)
        try:
            live = store.live()
            text = store.texts(live.id)[0] if live is not None else None
        finally:
            store.close()
        if text is None:
            return []
        data = yaml.safe_load(text)
        zones = data["zones"]
        out: list[str] = []
        for name in data["management"]["zones"]:
            addresses = zones[name].get("addresses", [])
            for a in [addresses] if isinstance(addresses, str) else addresses:
                out.append(str(ipaddress.ip_interface(a).ip))
        return out
    except Exception:  # any unreadable store or policy: no policy addresses
        return []


def interface_addresses(netns: str | None = None) -> list[str]:
    """Global-scope addresses on this box's interfaces now (``ip -j addr``), IPv4 first."""
    argv = ["ip", *(["-n", netns] if netns else []), "-j", "addr", "show", "scope", "global"]
    try:
        done = subprocess.run(  # noqa: S603 - fixed argv: ip, our options
            argv, capture_output=True, text=True, timeout=5, check=True
        )
        links = json.loads(done.stdout or "[]")
    except (OSError, subprocess.SubprocessError, ValueError):
        return []
    found = [
        str(info["local"])
        for link in links
        for info in link.get("addr_info", [])
        if info.get("local") and not info.get("tentative")
    ]
    return sorted(found, key=lambda a: ":" in a)


def display_urls(scheme: str, host: str, port: int, addresses: list[str]) -> list[str]:
    """The URLs an admin can type: the bound host, or for a wildcard bind the box's
    addresses (``addresses``; an IPv4 wildcard only serves IPv4). The default port is left
    out. With no address known, the bound host itself."""
    default = {"https": 443, "http": 80}.get(scheme)
    suffix = "" if port == default else f":{port}"
    hosts = [host]
    if host in WILDCARDS:
        ipv4_only = host == "0.0.0.0"
        known = list(dict.fromkeys(a for a in addresses if not (ipv4_only and ":" in a)))
        hosts = known or [host]
    return [f"{scheme}://{f'[{h}]' if ':' in h else h}{suffix}" for h in hosts]


def serve(
    config: UiConfig,
    host: str,
    port: int,
    *,
    cert: Path | None = None,
    key: Path | None = None,
    plain_http: bool = False,
) -> int:
    options: dict[str, Any] = {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": 1,
        "worker_class": "gthread",
        "threads": 4,
        "timeout": 120,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
    }
    scheme = "http"
    if not plain_http:
        if cert is None or key is None:
            cert, key = ensure_certificate(config.ui_path / "tls", ["localhost", "127.0.0.1", host])
        options.update(certfile=str(cert), keyfile=str(key))
        scheme = "https"
    shown = f"[{host}]" if ":" in host else host
    url = f"{scheme}://{shown}:{port}"
    addresses = []
    if host in WILDCARDS:
        addresses = management_addresses(config.state_dir) or interface_addresses(config.netns)
    line = setup_token_line(config, display_urls(scheme, host, port, addresses))
    print(f"EdgeGuard web UI on {url}", flush=True)
    if line:
        print(line, flush=True)
    app = create_app(config)
    _Gunicorn(app, options).run()
    return 0

"""Serve the UI: gunicorn (a production WSGI server) over HTTPS with a certificate made on
first start, and the one-time setup token printed when no user exists yet.

One gunicorn worker with a few threads: a Raspberry Pi has little memory, and the UI's
work (SQLite reads, an occasional plan) is short. A certificate the admin uploads (or
``--cert/--key``) replaces the self-signed one.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from flask import Flask
from gunicorn.app.base import BaseApplication

from webui.app import create_app
from webui.config import UiConfig
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


def setup_token_line(config: UiConfig, url: str) -> str | None:
    """Make a fresh setup token if nobody can log in yet; the line to print, else None."""
    store = UiStore(config.ui_path / "ui.db")
    try:
        if not store.needs_setup():
            return None
        token = store.new_setup_token()
    finally:
        store.close()
    return f"first start: open {url}/setup and enter the setup token {token}"


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
    line = setup_token_line(config, url)
    print(f"EdgeGuard web UI on {url}", flush=True)
    if line:
        print(line, flush=True)
    app = create_app(config)
    _Gunicorn(app, options).run()
    return 0

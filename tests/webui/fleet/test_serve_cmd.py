"""``edgeguard msp serve|add-appliance|list|site`` end to end: gunicorn on loopback, a
credential from the CLI, a check-in over HTTPS, the fleet read back with ``edgeguard msp list``,
and ``msp revoke-appliance``."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.webui.fleet import PASSWORD, checkin_body
from webui.cli import main


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``edgeguard msp serve`` (HTTPS, self-signed) in a child process; (url, state dir)."""
    state = tmp_path / "state"
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "webui.cli", "msp", "serve", "--state-dir", str(state),
         "--publish", str(tmp_path / "publish"), "--listen", f"127.0.0.1:{port}",
         "--password-file", str(tmp_path / "pw")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    proc.kill()
                    pytest.fail(f"msp serve did not start: {proc.communicate()[0]}")
                time.sleep(0.1)
        yield f"https://127.0.0.1:{port}", state
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        assert proc.stdout is not None
        proc.stdout.close()


def test_add_appliance_then_check_in_then_list(
    server: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, state = server
    assert main(["msp", "add-appliance", "--state-dir", str(state), "--site", "acme-hq"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("egc_")
    ca = state / "tls" / "cert.pem"  # the self-signed certificate, trusted as its own CA
    body = json.dumps(checkin_body("acme-hq", "box-1", bundle_version=2)).encode()
    req = urllib.request.Request(
        url + "/api/v1/checkin", data=body, method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    context = ssl.create_default_context(cafile=str(ca))
    with urllib.request.urlopen(req, timeout=10, context=context) as resp:
        assert json.loads(resp.read()) == {"ok": True}
    args = ["--server", url, "--password-file", str(tmp_path / "pw"), "--ca", str(ca)]
    assert main(["msp", "list", *args]) == 0
    out = capsys.readouterr().out
    assert "acme-hq" in out and "box-1" in out and "2/-" in out
    assert main(["msp", "site", "acme-hq", "--json", *args]) == 0
    site = json.loads(capsys.readouterr().out)
    assert site["appliances"][0]["report"]["bundle_version"] == 2
    revoke = ["msp", "revoke-appliance", "--state-dir", str(state), "--site", "acme-hq"]
    assert main([*revoke, "--appliance", "box-1"]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main([*revoke, "--appliance", "box-1"]) == 1  # nothing left to revoke
    assert "no credential" in capsys.readouterr().err
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=10, context=context)
    assert refused.value.code == 401
    refused.value.close()


def test_list_without_the_password_fails_with_the_reason(
    server: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, state = server
    assert main(["msp", "list", "--server", url, "--ca", str(state / "tls" / "cert.pem")]) == 1
    assert "HTTP 401" in capsys.readouterr().err


def test_add_appliance_refuses_a_bad_site_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["msp", "add-appliance", "--state-dir", str(tmp_path), "--site", "../x"]) == 2
    assert "--site '../x'" in capsys.readouterr().err

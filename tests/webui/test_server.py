"""What `edgeguard ui serve` prints before it serves: the setup-token line must name the
addresses an admin can type, not the wildcard it is bound to (the appliance image binds
0.0.0.0:443 and shows this line on its console)."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.store import ConfigStore
from webui import server
from webui.config import UiConfig
from webui.server import display_urls, management_addresses, setup_token_line

POLICY = """\
version: 1
site: {name: t}
zones:
  wan: {interfaces: [enp1s0], addresses: [203.0.113.2/24]}
  lan: {interfaces: [enp2s0], addresses: [192.0.2.1/24, "2001:db8:0:10::1/64"]}
management: {zones: [lan], services: [https]}
"""


def test_a_wildcard_bind_shows_the_box_addresses() -> None:
    urls = display_urls("https", "0.0.0.0", 443, ["192.0.2.1", "2001:db8::1", "192.0.2.1"])
    assert urls == ["https://192.0.2.1"]  # an IPv4 wildcard serves no IPv6; no duplicates
    assert display_urls("https", "::", 8443, ["192.0.2.1", "2001:db8::1"]) == [
        "https://192.0.2.1:8443",
        "https://[2001:db8::1]:8443",
    ]


def test_a_specific_bind_or_no_known_address_shows_the_bind() -> None:
    assert display_urls("https", "127.0.0.1", 8443, ["192.0.2.1"]) == ["https://127.0.0.1:8443"]
    assert display_urls("http", "0.0.0.0", 80, []) == ["http://0.0.0.0"]


def test_management_addresses_come_from_the_live_policy(tmp_path: Path) -> None:
    assert management_addresses(tmp_path) == []  # nothing applied yet
    store = ConfigStore(tmp_path)
    store.set_status(store.record(POLICY, "", author="t", message="first"), "good")
    store.close()
    assert management_addresses(tmp_path) == ["192.0.2.1", "2001:db8:0:10::1"]


def test_the_token_line_lists_every_url(tmp_path: Path) -> None:
    config = UiConfig(state_dir=tmp_path)
    line = setup_token_line(config, ["https://192.0.2.1", "https://[2001:db8::1]"])
    assert line is not None
    assert line.startswith(
        "first start: open https://192.0.2.1/setup or https://[2001:db8::1]/setup and enter "
        "the setup token "
    )


class _NoServer:
    def __init__(self, app: object, options: object) -> None:
        pass

    def run(self) -> None:
        pass


@pytest.mark.parametrize("listen", ["0.0.0.0", "::"])
def test_serve_prints_the_policy_addresses_for_a_wildcard(
    tmp_path: Path, listen: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ConfigStore(tmp_path)
    store.set_status(store.record(POLICY, "", author="t", message="first"), "good")
    store.close()
    monkeypatch.setattr(server, "interface_addresses", lambda netns=None: ["198.51.100.7"])
    monkeypatch.setattr(server, "_Gunicorn", _NoServer)
    server.serve(UiConfig(state_dir=tmp_path), listen, 443, plain_http=False)
    out = capsys.readouterr().out
    assert "open https://192.0.2.1/setup" in out
    assert "198.51.100.7" not in out  # the policy's management addresses win
    assert ("[2001:db8:0:10::1]" in out) == (listen == "::")

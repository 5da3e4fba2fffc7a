"""The image's first boot (appliance/firstboot.py): which ports become WAN and LAN, the
default policy and network files it writes, and enrol.json turned into `edgeguard sync enrol`.
Booting it for real is `make image-test`."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest

from appliance.firstboot import (
    FIRST_POLICY,
    FirstBootError,
    box_network,
    configure,
    default_policy,
    enrol,
    enrol_argv,
    ethernet_ports,
    networkd_files,
)
from appliance.sync.agent import Enrolment, SyncPaths
from appliance.sync.keys import generate_key
from appliance.sync.metadata import make_root
from policies.compiler import Target, compile_policy
from policies.loader import parse_policy


def fake_sys(tmp_path: Path, links: dict[str, str | None]) -> Path:
    """A /sys/class/net: name -> PCI device path (None: a virtual link, no device)."""
    net = tmp_path / "sys/class/net"
    net.mkdir(parents=True)
    for name, pci in links.items():
        link = net / name
        link.mkdir()
        (link / "type").write_text("1\n")
        if pci is not None:
            device = tmp_path / "sys/devices" / pci
            device.mkdir(parents=True)
            os.symlink(device, link / "device")
    return net


def test_ports_are_taken_in_bus_order_not_name_order(tmp_path: Path) -> None:
    net = fake_sys(
        tmp_path,
        {
            "enp9s0": "pci0000:00/0000:00:01.0/0000:09:00.0",  # first slot, sorts last by name
            "enp2s0": "pci0000:00/0000:00:02.0/0000:02:00.0",
            "enx020000000001": "pci0000:00/0000:00:14.0/usb1/1-1",
            "lo": None,
            "eth9": None,  # virtual: no device behind it
            "wlp3s0": "pci0000:00/0000:00:03.0",
        },
    )
    assert ethernet_ports(net) == ["enp9s0", "enp2s0", "enx020000000001"]


def test_first_port_is_wan_second_lan_with_defaults() -> None:
    net = box_network(["enp1s0", "enp2s0", "enp3s0"])
    assert (net.wan.interface, net.lan.interface) == ("enp1s0", "enp2s0")
    assert net.wan.addresses == ()  # DHCP
    assert net.lan.addresses == ("192.168.77.1/24",)
    assert net.upstreams[0] == "9.9.9.9:53"


def test_network_json_names_ports_and_addresses() -> None:
    data = {
        "wan": {"interface": "enp3s0", "addresses": ["203.0.113.2/24"], "gateway": "203.0.113.1"},
        "lan": {"addresses": ["192.0.2.1/24", "2001:db8:0:10::1/64"]},
        "upstreams": ["203.0.113.1:53"],
    }
    net = box_network(["enp1s0", "enp2s0", "enp3s0"], data)
    assert (net.wan.interface, net.lan.interface) == ("enp3s0", "enp1s0")
    files = networkd_files(net)
    wan, lan = files["10-edgeguard-wan.network"], files["10-edgeguard-lan.network"]
    assert "Name=enp3s0" in wan and "Address=203.0.113.2/24" in wan
    assert "Gateway=203.0.113.1" in wan and "DHCP" not in wan
    assert "Address=2001:db8:0:10::1/64" in lan and "Name=enp1s0" in lan


@pytest.mark.parametrize(
    ("ports", "data", "error"),
    [
        (["enp1s0"], None, "no second Ethernet port"),
        ([], None, "no Ethernet port left for the WAN"),
        (["enp1s0", "enp2s0"], {"lan": {"addresses": ["192.0.2.300/24"]}}, "network.json: lan"),
        (["enp1s0", "enp2s0"], {"wan": {"gateway": "nope"}}, "wan.gateway"),
        (["enp1s0", "enp2s0"], {"lan": {"interface": "enp1s0"}, "wan": {"interface": "enp1s0"}},
         "same port"),
        (["enp1s0", "enp2s0"], {"dns": []}, "unknown keys: dns"),
        (["enp1s0", "enp2s0"], {"upstreams": []}, "upstreams"),
    ],
)  # fmt: skip
def test_wrong_settings_are_refused_with_the_reason(
    ports: list[str], data: dict[str, object] | None, error: str
) -> None:
    with pytest.raises(FirstBootError, match=error):
        box_network(ports, data)


@pytest.mark.parametrize("flowtable", [False, True])
def test_default_policy_parses_and_compiles(flowtable: bool) -> None:
    net = box_network(["enp0s16", "enp0s17"], {"lan": {"addresses": ["192.0.2.1/24"]}})
    policy = parse_policy(default_policy(net), "first-policy.yaml").policy
    assert [z.interfaces for z in policy.zones] == [("enp0s16",), ("enp0s17",)]
    assert policy.management.zones == ("lan",)
    assert policy.dns is not None and policy.dns.upstreams
    assert policy.web_filter is not None
    ruleset = compile_policy(policy, at=dt.datetime.now(dt.UTC), target=Target(flowtable=flowtable))
    assert '"enp0s16"' in ruleset.text and '"enp0s17"' in ruleset.text


def test_configure_writes_policy_and_network_once(tmp_path: Path) -> None:
    net_dir = fake_sys(
        tmp_path, {"enp0s16": "pci0000:00/0000:00:10.0", "enp0s17": "pci0000:00/0000:00:11.0"}
    )
    esp, state = tmp_path / "esp", tmp_path / "state"
    esp.mkdir()
    state.mkdir()
    (esp / "network.json").write_text(json.dumps({"lan": {"addresses": ["192.0.2.1/24"]}}))
    lines = configure(esp, state, net_dir)
    assert any("WAN enp0s16 (DHCP), LAN enp0s17 (192.0.2.1/24)" in ln for ln in lines)
    assert "interfaces: [enp0s17]" in (state / FIRST_POLICY).read_text()
    assert sorted(p.name for p in (state / "network").iterdir()) == [
        "10-edgeguard-lan.network",
        "10-edgeguard-wan.network",
    ]
    (esp / "network.json").write_text("{broken")
    assert configure(esp, state, net_dir) == [f"{state / FIRST_POLICY} exists: kept"]


def test_a_policy_on_the_esp_is_used_as_given(tmp_path: Path) -> None:
    net_dir = fake_sys(tmp_path, {"eth0": "pci0/0:1", "eth1": "pci0/0:2"})
    esp, state = tmp_path / "esp", tmp_path / "state"
    esp.mkdir()
    state.mkdir()
    (esp / "policy.yaml").write_text("version: 1\n# the MSP's own\n")
    configure(esp, state, net_dir)
    assert (state / FIRST_POLICY).read_text() == "version: 1\n# the MSP's own\n"


def test_broken_network_json_is_an_error_not_a_default(tmp_path: Path) -> None:
    esp, state = tmp_path / "esp", tmp_path / "state"
    esp.mkdir()
    state.mkdir()
    (esp / "network.json").write_text("{broken")
    with pytest.raises(FirstBootError, match=r"network\.json"):
        configure(esp, state, fake_sys(tmp_path, {}))
    assert not (state / FIRST_POLICY).exists()


# -- enrolment ---------------------------------------------------------------------------------
def msp_root() -> dict[str, object]:
    root, bundle = generate_key(), generate_key()
    return make_root(
        1,
        [root, bundle],
        root_keys=[root],
        bundle_keys=[bundle],
        revoked=[],
        expires=dt.datetime.now(dt.UTC) + dt.timedelta(days=365),
        signers=[root],
    )


def enrol_files(tmp_path: Path, **extra: object) -> tuple[Path, Path]:
    esp, state = tmp_path / "esp", tmp_path / "state"
    esp.mkdir()
    state.mkdir()
    (esp / "root.json").write_text(json.dumps(msp_root()))
    request = {
        "server": "https://msp.example.net/site",
        "checkin": "https://msp.example.net/fleet",
        "site": "dental-office",
        "credential": "egc-secret-credential",
        "root_file": "root.json",
        **extra,
    }
    (esp / "enrol.json").write_text(json.dumps(request))
    return esp, state


def test_enrol_json_becomes_the_sync_enrol_arguments(tmp_path: Path) -> None:
    esp, state = enrol_files(tmp_path, ca_file="msp-ca.pem", root_keyid="abc123")
    (esp / "msp-ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    argv = enrol_argv(esp, state)
    assert argv[:2] == ["sync", "enrol"]
    pairs = dict(zip(argv[2::2], argv[3::2], strict=True))
    assert pairs["--site"] == "dental-office"
    assert pairs["--credential"] == "egc-secret-credential"
    assert pairs["--root-keyid"] == "abc123"
    # Copied off the boot partition: the agent keeps the CA's path, the ESP is not mounted.
    assert pairs["--root"] == str(state / "sync-request/root.json")
    assert pairs["--ca"] == str(state / "sync-request/msp-ca.pem")
    assert (state / "sync-request/msp-ca.pem").read_text().startswith("-----BEGIN")


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"site": ""}, "missing site"),
        ({"root_file": "../root.json"}, "file name next to enrol.json"),
        ({"root_file": "absent.json"}, "does not exist"),
        ({"root": {}}, "inline as root or as root_file"),  # both given
        ({"token": "x"}, "unknown keys: token"),
    ],
)
def test_wrong_enrol_json_is_refused(tmp_path: Path, change: dict[str, object], error: str) -> None:
    esp, state = enrol_files(tmp_path)
    data = json.loads((esp / "enrol.json").read_text())
    data.update(change)
    (esp / "enrol.json").write_text(json.dumps(data))
    with pytest.raises(FirstBootError, match=error):
        enrol_argv(esp, state)


def test_enrol_runs_edgeguard_sync_enrol_and_hides_the_credential(tmp_path: Path) -> None:
    esp, state = enrol_files(tmp_path)
    code, out = enrol(esp, state)
    assert code == 0, out
    assert "of site dental-office" in out
    enrolment = Enrolment.load(SyncPaths(state).enrolment)
    assert enrolment.site == "dental-office"
    assert enrolment.credential == "egc-secret-credential"
    assert SyncPaths(state).root.exists()
    # A refused enrolment (here: an unparsable root) says why, without the secret.
    (esp / "root.json").write_text(json.dumps({"signed": {}, "signatures": []}))
    code, out = enrol(esp, tmp_path / "state")
    assert code != 0 and "enrolment failed" in out
    assert "egc-secret-credential" not in out

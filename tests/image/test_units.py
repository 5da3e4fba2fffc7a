"""Static checks of the appliance image's systemd units and scripts (image/): fast, no root,
nothing outside this tree. Booting the image is `make image-test` (docs/image.md)."""

from __future__ import annotations

import configparser
import subprocess
from pathlib import Path

import pytest

IMAGE = Path(__file__).resolve().parents[2] / "image"
UNITS = IMAGE / "units"


def unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNITS / name).read_text())
    return parser


@pytest.mark.parametrize("name", ["edgeguard-run.service", "edgeguard-ui.service"])
def test_services_are_unprivileged_and_hardened(name: str) -> None:
    service = unit(name)["Service"]
    assert service["User"] == "edgeguard"
    assert set(service["AmbientCapabilities"].split()) == {"CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE"}
    assert set(service["CapabilityBoundingSet"].split()) == set(
        service["AmbientCapabilities"].split()
    )
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"] == "/var/lib/edgeguard"
    assert service["Restart"] == "on-failure"
    assert service["ExecStart"].startswith("/opt/edgeguard/venv/bin/edgeguard ")


def test_controller_loads_the_ruleset_before_the_network() -> None:
    run = unit("edgeguard-run.service")
    assert "network-pre.target" in run["Unit"]["Before"].split()
    assert "network-pre.target" in run["Unit"]["Wants"].split()
    assert run["Unit"]["DefaultDependencies"] == "no"
    # The unit counts as started only once the last good ruleset is loaded (run --once).
    assert " run --once " in run["Service"]["ExecStartPre"] + " "
    # Ports have their final names before a ruleset naming them (a flowtable's devices) loads.
    assert "systemd-udev-settle.service" in run["Unit"]["After"].split()


def test_first_boot_policy_is_given_to_both_controller_starts() -> None:
    service = unit("edgeguard-run.service")["Service"]
    for key in ("ExecStartPre", "ExecStart"):
        assert "--policy /var/lib/edgeguard/first-policy.yaml" in service[key]
    firstboot = (IMAGE / "rootfs/opt/edgeguard/lib/firstboot.sh").read_text()
    assert "-m appliance.firstboot" in firstboot and "configure" in firstboot


def test_port_files_reach_networkd_before_it_starts() -> None:
    net = unit("edgeguard-network.service")
    assert "systemd-networkd.service" in net["Unit"]["Before"].split()
    assert {"var-lib-edgeguard.mount", "edgeguard-firstboot.service"} <= set(
        net["Unit"]["After"].split()
    )
    assert "/var/lib/edgeguard/network/" in net["Service"]["ExecStart"]
    assert "/run/systemd/network" in net["Service"]["ExecStart"]
    enabled = (IMAGE / "customize.sh").read_text()
    assert "edgeguard-network.service" in enabled


def test_resolver_may_bind_the_lan_address_before_networkd_sets_it() -> None:
    sysctl = (IMAGE / "rootfs/etc/sysctl.d/60-edgeguard.conf").read_text()
    assert "net.ipv4.ip_nonlocal_bind = 1" in sysctl
    assert "net.ipv6.ip_nonlocal_bind = 1" in sysctl


def test_firstboot_runs_first_and_once() -> None:
    first = unit("edgeguard-firstboot.service")
    assert first["Service"]["Type"] == "oneshot"
    before = first["Unit"]["Before"].split()
    assert {"edgeguard-run.service", "edgeguard-ui.service"} <= set(before)
    assert first["Unit"]["ConditionPathExists"].startswith("!/var/lib/edgeguard/")
    script = IMAGE / "rootfs" / first["Service"]["ExecStart"].lstrip("/")
    assert script.is_file()


def test_state_partition_and_readonly_root_in_fstab() -> None:
    rows = [
        line.split()
        for line in (IMAGE / "rootfs/etc/fstab").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    mounts = {row[1]: row for row in rows}
    assert mounts["/"][0] == "LABEL=EG-ROOT" and "ro" in mounts["/"][3].split(",")
    state = mounts["/var/lib/edgeguard"]
    assert state[0] == "LABEL=EDGEGUARD-STATE" and state[2] == "ext4"


@pytest.mark.parametrize(
    "script", ["build.sh", "customize.sh", "test.sh", "rootfs/opt/edgeguard/lib/firstboot.sh"]
)
def test_scripts_are_strict_bash_and_parse(script: str) -> None:
    path = IMAGE / script
    text = path.read_text()
    assert text.startswith("#!/bin/bash\n")
    assert "set -euo pipefail" in text
    subprocess.run(["bash", "-n", str(path)], check=True)

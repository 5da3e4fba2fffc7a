"""Static checks of the appliance image's systemd units and scripts (image/): fast, no root,
nothing outside this tree. Booting the image is `make image-test` (docs/image.md)."""

from __future__ import annotations

import configparser
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest

IMAGE = Path(__file__).resolve().parents[2] / "image"
UNITS = IMAGE / "units"
PYPROJECT = IMAGE.parent / "pyproject.toml"
# Debian names a Python distribution python3-<import name>; the exceptions:
DEBIAN_NAME = {"pyyaml": "python3-yaml"}


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
    # the UI starts through its light entry point (webui.ui_main: only the UI's imports)
    assert service["ExecStart"].startswith(
        "/opt/edgeguard/venv/bin/python -m webui.ui_main ui serve "
        if name == "edgeguard-ui.service"
        else "/opt/edgeguard/venv/bin/edgeguard "
    )


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
    "script",
    [
        "build.sh",
        "customize.sh",
        "test.sh",
        "test-arm64.sh",
        "rootfs/opt/edgeguard/lib/firstboot.sh",
    ],
)
def test_scripts_are_strict_bash_and_parse(script: str) -> None:
    path = IMAGE / script
    text = path.read_text()
    assert text.startswith("#!/bin/bash\n")
    assert "set -euo pipefail" in text
    subprocess.run(["bash", "-n", str(path)], check=True)


def bash_array(script: str, name: str) -> list[str]:
    """The words of ``NAME=( ... )`` in an image script (a plain list, no expansions)."""
    found = re.search(rf"^{name}=\((.*?)\)", (IMAGE / script).read_text(), re.M | re.S)
    assert found, f"no {name}=( ... ) in {script}"
    return shlex.split(found.group(1), comments=True)


def test_every_runtime_dependency_is_a_debian_package_in_the_image() -> None:
    """Nothing from PyPI goes into the image: each of pyproject.toml's runtime dependencies
    is installed from Debian, and the image installs no Python package we do not need."""
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!~ \[;]", dep, maxsplit=1)[0].lower() for dep in deps}
    wanted = {DEBIAN_NAME.get(name, f"python3-{name}") for name in names}
    image = set(bash_array("build.sh", "PYTHON_PACKAGES"))
    assert wanted <= image, f"not installed from Debian: {sorted(wanted - image)}"
    # python3-nftables is the one more: Debian's binding to its libnftables, not on PyPI.
    assert image - wanted == {"python3-nftables"}


def test_our_wheel_goes_in_alone_and_debian_must_meet_its_bounds() -> None:
    customize = (IMAGE / "customize.sh").read_text()
    install = re.search(r"venv/bin/pip install ([^\n]*\\\n[^\n]*)", customize)
    assert install, "no pip install of our wheel in customize.sh"
    assert {"--no-index", "--no-deps"} <= set(install.group(1).split())
    assert "venv/bin/pip check" in customize  # fails the build if Debian's are too old
    assert not (IMAGE / "vendor_deps.py").exists()
    assert "site-packages" not in (IMAGE / "build.sh").read_text()


@pytest.mark.parametrize(
    ("arch", "needed"),
    [
        ("amd64", {"linux-image-cloud-amd64", "systemd-boot-efi"}),
        ("arm64", {"linux-image-arm64", "raspi-firmware"}),
    ],
)
def test_each_architecture_gets_its_kernel_and_boot_packages(arch: str, needed: set[str]) -> None:
    build = (IMAGE / "build.sh").read_text()
    branch = re.search(rf"^\s+{arch}\) BOOT_PACKAGES=\(([^)]*)\)", build, re.M)
    assert branch, f"no BOOT_PACKAGES for {arch} in build.sh"
    assert set(branch.group(1).split()) == needed


def test_arm64_boots_the_read_only_root_by_label_with_a_serial_console() -> None:
    """raspi-firmware writes cmdline.txt from /etc/default/raspi-firmware (and its extra
    file): the root by label and read-only, as fstab has it, and the Pi's serial port."""
    customize = (IMAGE / "customize.sh").read_text()
    assert 'ROOTPART="LABEL=EG-ROOT"' in customize
    extra = re.search(
        r'^\s*echo "([^"]*)" > "\$ROOT/etc/default/raspi-extra-cmdline"', customize, re.M
    )
    assert extra, "no raspi-extra-cmdline in customize.sh"
    assert "ro" in extra.group(1).split() and "rw" not in extra.group(1).split()
    consoles = re.search(r'^CONSOLES="([^"]*)"', customize, re.M)
    assert consoles, "no CONSOLES= for raspi-firmware in customize.sh"
    assert consoles.group(1).split()[-1] == "ttyS1,115200"  # the last gets the boot log
    # No cma= (raspi-firmware's CMA=0): what its hook does on a Pi 4, where cma=64M can stop
    # the boot; in the build chroot it cannot tell a Pi 4 and would write cma=64M.
    assert re.search(r"^CMA=0$", customize, re.M)
    # The firmware partition is mounted where raspi-firmware's hooks write.
    assert re.search(r"LABEL=RASPIFIRM\s+/boot/firmware\s+vfat", customize)
    assert "mkfs.vfat -F 32 -n RASPIFIRM" in (IMAGE / "build.sh").read_text()


@pytest.mark.parametrize("unit_name", ["apt-daily.service", "apt-daily-upgrade.service"])
def test_upgrades_open_root_and_the_pi_firmware_partition_and_close_them(unit_name: str) -> None:
    drop_in = IMAGE / "rootfs/etc/systemd/system" / f"{unit_name}.d" / "edgeguard-rw.conf"
    lines = drop_in.read_text().splitlines()
    pre = [line for line in lines if line.startswith("ExecStartPre=")]
    post = [line for line in lines if line.startswith("ExecStopPost=")]
    assert pre[0] == "ExecStartPre=/bin/mount -o remount,rw /"
    assert any(
        "remount,rw /boot/firmware" in line and line.startswith("ExecStartPre=-") for line in pre
    )
    assert any(
        "remount,ro /boot/firmware" in line and line.startswith("ExecStopPost=-") for line in post
    )
    assert post[-1] == "ExecStopPost=/bin/mount -o remount,ro /"  # the root closes last


def test_first_boot_reads_the_technicians_files_from_either_boot_partition() -> None:
    script = (IMAGE / "rootfs/opt/edgeguard/lib/firstboot.sh").read_text()
    assert "ESP_DIR=/boot/efi/edgeguard" in script
    assert "[ -d /boot/firmware/edgeguard ] && ESP_DIR=/boot/firmware/edgeguard" in script

"""The kernel-to-ESP hook on a scratch ESP and /boot: a Debian kernel update must reach the
ESP systemd-boot loads, safely for a power cut, keeping the previous kernel bootable."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

IMAGE = Path(__file__).resolve().parents[2] / "image"
HOOK = IMAGE / "rootfs" / "opt" / "edgeguard" / "lib" / "kernel-to-esp.sh"
ENTRY = """title   EdgeGuard 0.1.0
linux   /edgeguard/vmlinuz
initrd  /edgeguard/initrd.img
options root=LABEL=EG-ROOT ro console=ttyS0
"""


def _layout(tmp_path: Path) -> tuple[Path, Path]:
    """The ESP as build.sh makes it, and /boot with the kernel it was built from."""
    esp, boot = tmp_path / "esp", tmp_path / "boot"
    (esp / "loader" / "entries").mkdir(parents=True)
    (esp / "edgeguard").mkdir()
    (esp / "loader" / "entries" / "edgeguard.conf").write_text(ENTRY)
    (esp / "edgeguard" / "vmlinuz").write_text("kernel 6.1.0-56")
    (esp / "edgeguard" / "initrd.img").write_text("initrd 6.1.0-56")
    boot.mkdir()
    _install(boot, "6.1.0-56-cloud-amd64")
    return esp, boot


def _install(boot: Path, version: str, initrd: bool = True) -> None:
    (boot / f"vmlinuz-{version}").write_text(f"kernel {version}")
    if initrd:
        (boot / f"initrd.img-{version}").write_text(f"initrd {version}")


def _run(esp: Path, boot: Path) -> str:
    env = {**os.environ, "EDGEGUARD_ESP": str(esp), "EDGEGUARD_BOOT": str(boot)}
    done = subprocess.run(["bash", str(HOOK), "ignored-version"], env=env, capture_output=True,
                          text=True, check=True)  # fmt: skip
    return done.stderr


def _entry(esp: Path, name: str = "edgeguard.conf") -> dict[str, str]:
    lines = (esp / "loader" / "entries" / name).read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(" ") for line in lines)}


def test_a_kernel_update_is_copied_and_the_old_one_kept_as_previous(tmp_path: Path) -> None:
    esp, boot = _layout(tmp_path)
    _install(boot, "6.1.0-57-cloud-amd64")
    _run(esp, boot)
    current = _entry(esp)
    assert current["linux"] == "/edgeguard/vmlinuz-6.1.0-57-cloud-amd64"
    assert current["initrd"] == "/edgeguard/initrd.img-6.1.0-57-cloud-amd64"
    assert current["options"] == "root=LABEL=EG-ROOT ro console=ttyS0"  # kept as built
    assert (esp / current["linux"][1:]).read_text() == "kernel 6.1.0-57-cloud-amd64"
    previous = _entry(esp, "edgeguard-previous.conf")
    assert previous["title"] == "EdgeGuard 0.1.0 (previous kernel)"
    assert (esp / previous["linux"][1:]).read_text() == "kernel 6.1.0-56"
    assert not list(esp.rglob("*.tmp"))
    # the next update drops the oldest kernel: at most two on the small ESP
    _install(boot, "6.1.0-58-cloud-amd64")
    _run(esp, boot)
    assert sorted(p.name for p in (esp / "edgeguard").iterdir()) == [
        "initrd.img-6.1.0-57-cloud-amd64", "initrd.img-6.1.0-58-cloud-amd64",
        "vmlinuz-6.1.0-57-cloud-amd64", "vmlinuz-6.1.0-58-cloud-amd64",
    ]  # fmt: skip
    assert (
        _entry(esp, "edgeguard-previous.conf")["linux"] == "/edgeguard/vmlinuz-6.1.0-57-cloud-amd64"
    )


def test_it_waits_for_the_initrd_and_does_nothing_twice(tmp_path: Path) -> None:
    esp, boot = _layout(tmp_path)
    _install(boot, "6.1.0-57-cloud-amd64", initrd=False)
    assert "waiting for update-initramfs" in _run(esp, boot)
    assert _entry(esp)["linux"] == "/edgeguard/vmlinuz"  # untouched until the initrd exists
    _install(boot, "6.1.0-57-cloud-amd64")
    _run(esp, boot)
    before = {p: p.read_bytes() for p in esp.rglob("*") if p.is_file()}
    assert "already what the ESP boots" in _run(esp, boot)
    assert {p: p.read_bytes() for p in esp.rglob("*") if p.is_file()} == before


def test_a_rebuilt_initrd_of_the_same_kernel_is_copied_too(tmp_path: Path) -> None:
    esp, boot = _layout(tmp_path)
    _install(boot, "6.1.0-57-cloud-amd64")
    _run(esp, boot)
    (boot / "initrd.img-6.1.0-57-cloud-amd64").write_text("initrd rebuilt")
    _run(esp, boot)
    assert (esp / "edgeguard" / "initrd.img-6.1.0-57-cloud-amd64").read_text() == "initrd rebuilt"


def test_without_our_loader_entry_it_changes_nothing(tmp_path: Path) -> None:
    esp, boot = tmp_path / "firmware", tmp_path / "boot"
    esp.mkdir()
    boot.mkdir()
    _install(boot, "6.1.0-57-arm64")
    assert "nothing to do" in _run(esp, boot)
    assert list(esp.iterdir()) == []


def test_the_hooks_call_it_and_are_executable() -> None:
    for hook in ("etc/kernel/postinst.d/zz-edgeguard-esp",
                 "etc/initramfs/post-update.d/zz-edgeguard-esp"):  # fmt: skip
        path = IMAGE / "rootfs" / hook
        assert os.access(path, os.X_OK)
        assert "exec /opt/edgeguard/lib/kernel-to-esp.sh" in path.read_text()
    assert os.access(HOOK, os.X_OK)

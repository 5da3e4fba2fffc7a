#!/bin/bash
# mmdebstrap --customize-hook for the EdgeGuard image: runs on the build host with the new root
# at $1 (mmdebstrap has mounted /proc, /sys and /dev in it). Called by build.sh only.
# usage: customize.sh ROOT IMAGE_DIR WHEEL ARCH
set -euo pipefail
ROOT=$1 IMAGE_DIR=$2 WHEEL=$3 ARCH=$4
in_root() { chroot "$ROOT" "$@"; }
step() { echo "==> customize: $*"; }

step "configuration files (image/rootfs/)"
cp -a "$IMAGE_DIR/rootfs/." "$ROOT/"
install -m 0644 "$IMAGE_DIR"/units/*.service "$ROOT/etc/systemd/system/"

step "service user 'edgeguard' (no login, no password)"
in_root useradd --system --user-group --home-dir /var/lib/edgeguard --no-create-home \
    --shell /usr/sbin/nologin edgeguard
install -d -m 0750 "$ROOT/var/lib/edgeguard"

step "venv /opt/edgeguard/venv: our wheel only; every dependency is a Debian python3-* package"
# pip here is Debian's (python3-venv's bundled wheel); it installs our wheel with no index and
# no dependencies, and `pip check` then proves Debian's packages meet pyproject.toml's bounds.
in_root /usr/bin/python3 -m venv --system-site-packages /opt/edgeguard/venv
SITE=$ROOT/opt/edgeguard/venv/lib/python3.11/site-packages
[ -d "$SITE" ] || { echo "customize: expected $SITE (the image's Python is not 3.11?)" >&2; exit 1; }
install -d "$ROOT/opt/edgeguard/wheels"
cp "$WHEEL" "$ROOT/opt/edgeguard/wheels/"
in_root /opt/edgeguard/venv/bin/pip install -q --no-index --no-deps --no-compile \
    --disable-pip-version-check "/opt/edgeguard/wheels/$(basename "$WHEEL")"
in_root /opt/edgeguard/venv/bin/pip check --disable-pip-version-check
in_root /opt/edgeguard/venv/bin/python3 -c 'import nftables, yaml, flask, gunicorn, cryptography, dnslib, ruamel.yaml, scapy.utils, webui.server, appliance.commands; print("imports ok")'
# The root filesystem is read-only at run time: compile the byte code now.
in_root /opt/edgeguard/venv/bin/python3 -m compileall -q -j 0 /opt/edgeguard/venv/lib/python3.11/site-packages >/dev/null
# (Debian's own python3-* packages were byte-compiled by their postinst.)
install -m 0644 "$IMAGE_DIR/../README.md" "$ROOT/opt/edgeguard/README.md"

step "units: EdgeGuard on, networkd on, SSH installed but off"
in_root systemctl enable edgeguard-firstboot.service edgeguard-network.service edgeguard-run.service \
    edgeguard-ui.service \
    systemd-networkd.service >/dev/null 2>&1
in_root systemctl disable ssh.service ssh.socket >/dev/null 2>&1 || true
rm -f "$ROOT"/etc/ssh/ssh_host_*   # each box makes its own (first boot, on the state partition)

if [ "$ARCH" = arm64 ]; then
    step "Raspberry Pi: cmdline.txt (root by label, read-only, serial console), firmware partition"
    # raspi-firmware's hooks rewrite /boot/firmware/config.txt and cmdline.txt from these files
    # at every kernel or initramfs update. Its line is "<consoles> root=$ROOTPART rw ... rootwait
    # <extra>": the extra "ro" comes after its "rw", and the kernel takes the last one. The last
    # console gets the boot log and the UI's setup-token line: the Pi 3/4 serial port (ttyS1).
    # CMA=0: no cma= at all. The hook leaves it out on a Pi 4 (where cma=64M can stop the boot)
    # but cannot tell the board in a chroot; a headless box needs no graphics memory pool.
    cat >> "$ROOT/etc/default/raspi-firmware" <<'CONF'

# EdgeGuard image (image/customize.sh)
ROOTPART="LABEL=EG-ROOT"
CONSOLES="tty0 ttyS1,115200"
GPU_FREQ=360
CMA=0
CONF
    echo "ro" > "$ROOT/etc/default/raspi-extra-cmdline"
    # The Pi 4's mini UART takes its clock from the GPU: a fixed core clock keeps the serial
    # console's baud rate (Debian's GPU_FREQ does this only when the hook runs on a Pi 4).
    printf '[pi4]\ncore_freq=360\n[all]\n' > "$ROOT/etc/default/raspi-firmware-custom"
    in_root env DEB_MAINT_PARAMS=configure /etc/kernel/postinst.d/z50-raspi-firmware
    # The firmware partition is mounted where those hooks write (amd64's ESP is /boot/efi).
    sed -i 's|^LABEL=EG-ESP .*|LABEL=RASPIFIRM        /boot/firmware       vfat  ro,noauto,x-systemd.automount,umask=0077 0 2|' \
        "$ROOT/etc/fstab"
    grep -q '^LABEL=RASPIFIRM ' "$ROOT/etc/fstab" || { echo "customize: fstab has no EG-ESP line" >&2; exit 1; }
fi

step "no passwords, machine identity made at boot, hostname"
in_root passwd -l root >/dev/null
: > "$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id"
echo edgeguard > "$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tedgeguard\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
    > "$ROOT/etc/hosts"
# Every mount point in fstab must exist: the root is read-only, nothing can create them later.
awk '$1 !~ /^#/ && NF >= 2 {print $2}' "$ROOT/etc/fstab" | while read -r mp; do install -d "$ROOT$mp"; done

step "trim: apt caches, docs, man pages"
rm -rf "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/* \
    "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* "$ROOT"/var/log/*

#!/bin/bash
# Build the EdgeGuard appliance disk image from Debian packages and our own wheel.
#
#   image/build.sh [amd64|arm64]    (make image ARCH=amd64|arm64)
#
# Output: dist/edgeguard-<version>-<arch>.img, .img.zst and .sha256. Needs root (mmdebstrap in
# root mode, chroot) and the Debian packages named below; downloads nothing but Debian packages:
# the Python runtime dependencies are Debian's too, and our wheel goes in with --no-deps.
# arm64 on another host runs the image's programs through qemu-user (binfmt_misc), set up here.
# Environment: MIRROR (Debian mirror URL; a snapshot.debian.org/archive/debian/<time> URL pins the
# package versions), SOURCE_DATE_EPOCH (default: the last commit's time), WORK (scratch dir,
# default /tmp/edgeguard-image-<arch>),
# STATE_MB (initial state partition size, default 256), ZSTD_LEVEL (default 10).
set -euo pipefail

ARCH=${1:-${ARCH:-amd64}}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$HERE/.." && pwd)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SUITE=bookworm
WORK=${WORK:-/tmp/edgeguard-image-$ARCH}
DIST=$TOP/dist
STATE_MB=${STATE_MB:-256}
ESP_MB=96
ZSTD_LEVEL=${ZSTD_LEVEL:-10}
T0=$(date +%s)

say() { echo "==> [$(( $(date +%s) - T0 ))s] $*"; }
die() { echo "build.sh: error: $*" >&2; exit 1; }
qemu_name() { case "$1" in arm64) echo aarch64 ;; amd64) echo x86_64 ;; *) echo "$1" ;; esac; }

# Foreign-architecture programs (the image's maintainer scripts, pip, compileall) run through
# qemu-user. systemd-binfmt registers it on a normal host; in a container without it we mount
# binfmt_misc and register Debian's qemu-user-static entry ourselves. F (fix binary) in that
# entry makes the interpreter work inside the chroot too.
ensure_binfmt() {
    local arch=$1 name conf
    name=qemu-$(qemu_name "$arch")
    conf=/usr/lib/binfmt.d/$name.conf
    arch-test "$arch" >/dev/null 2>&1 && return 0
    if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
        say "mounting binfmt_misc"
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null \
            || die "cannot mount binfmt_misc on /proc/sys/fs/binfmt_misc (a container without" \
                   "that right?): on the host run 'modprobe binfmt_misc' and" \
                   "'mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc', or build on an $arch machine"
    fi
    if [ ! -e "/proc/sys/fs/binfmt_misc/$name" ]; then
        say "registering $name from $conf"
        grep -v '^#' "$conf" > /proc/sys/fs/binfmt_misc/register \
            || die "cannot register $conf with binfmt_misc (read-only /proc/sys/fs/binfmt_misc?)"
    fi
    [ "$(cat /proc/sys/fs/binfmt_misc/status)" = enabled ] \
        || die "binfmt_misc is disabled: echo 1 > /proc/sys/fs/binfmt_misc/status"
    arch-test "$arch" >/dev/null 2>&1 \
        || die "$name is registered but $arch programs still do not run ('arch-test $arch' says:" \
               "$(arch-test "$arch" 2>&1 | tail -1)); is /proc/sys/fs/binfmt_misc/$name enabled?"
    say "binfmt: $arch programs run through $(sed -n 's/^interpreter //p' "/proc/sys/fs/binfmt_misc/$name")"
}

# amd64: small x86 boxes, UEFI (GPT, ESP, systemd-boot). arm64: Raspberry Pi 3/4 (MBR, FAT32
# firmware partition filled by Debian's raspi-firmware, which is in non-free-firmware).
case "$ARCH" in
    amd64) BOOT_PACKAGES=(linux-image-cloud-amd64 systemd-boot-efi) COMPONENTS="main" ;;
    arm64) BOOT_PACKAGES=(linux-image-arm64 raspi-firmware) COMPONENTS="main non-free-firmware"
           ESP_MB=256 ;;  # kernel + initrd (~60 MB) twice during a kernel update, firmware
    *) die "unknown ARCH '$ARCH' (amd64 or arm64)" ;;
esac
[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap in root mode, chroot, file ownership in the image)"

# Host tools, with the Debian package that provides each.
missing=()
for pair in mmdebstrap:mmdebstrap mkfs.ext4:e2fsprogs mkfs.vfat:dosfstools mcopy:mtools \
            mmd:mtools sfdisk:fdisk zstd:zstd; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
HOST_ARCH=$(dpkg --print-architecture)
if [ "$ARCH" != "$HOST_ARCH" ]; then
    command -v arch-test >/dev/null || missing+=(arch-test)
    [ -e "/usr/lib/binfmt.d/qemu-$(qemu_name "$ARCH").conf" ] || missing+=(qemu-user-static)
fi
[ ${#missing[@]} -eq 0 ] || die "missing tools; install them with: apt-get install ${missing[*]}"
[ "$ARCH" = "$HOST_ARCH" ] || ensure_binfmt "$ARCH"

VENV_PY=$TOP/.venv/bin/python
[ -x "$VENV_PY" ] || die "no $TOP/.venv: run 'make setup' first (it builds our wheel)"

VERSION=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$TOP/pyproject.toml")
NAME=edgeguard-$VERSION-$ARCH

# Reproducible bytes: one time for every timestamp (mmdebstrap, the wheel's zip, byte code as
# checked hashes, mtools, e2fsprogs, the rootfs's build-time files) and UUIDs derived from the
# image name, so two builds from the same mirror state can be compared byte for byte. The
# filesystems are found by label, so boxes sharing these UUIDs is harmless.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$TOP" log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH
uuid_for() { python3 -c 'import sys, uuid; print(uuid.uuid5(uuid.NAMESPACE_URL, sys.argv[1]))' "edgeguard-image:$NAME:$1"; }
say "building $NAME (work dir $WORK)"
rm -rf "$WORK"
mkdir -p "$WORK" "$DIST"
ROOT=$WORK/rootfs

# 1. Our wheel (pure Python; no dependencies: those are Debian's packages, below).
say "wheel from $TOP"
# Built from a copy, so setuptools' build/ and egg-info never touch the working tree.
mkdir -p "$WORK/src"
tar -C "$TOP" --exclude=./.venv --exclude=./.git --exclude=./dist --exclude=./build \
    --exclude='*.egg-info' --exclude=./var --exclude=__pycache__ --exclude=./image \
    --exclude=./tests --exclude=./bench -cf - . | tar -C "$WORK/src" -xf -
"$VENV_PY" -m pip wheel -q --no-deps --no-build-isolation --no-index --disable-pip-version-check \
    -w "$WORK/wheels" "$WORK/src" >/dev/null
WHEEL=$(ls "$WORK"/wheels/edgeguard-*.whl)

# 2. (was: vendoring from .venv) Nothing from PyPI goes into the image: our runtime dependencies
# are Debian's own packages (PYTHON_PACKAGES), security-patched by Debian and updated by
# unattended-upgrades like the rest of the system; pyproject.toml's lower bounds are what
# bookworm ships. tests/image/test_units.py checks this list against pyproject.toml.
PYTHON_PACKAGES=(
    python3-yaml python3-dnslib python3-flask python3-gunicorn python3-cryptography
    python3-ruamel.yaml python3-scapy python3-nftables
)

# 3. The root filesystem.
PACKAGES=(
    systemd-sysv udev dbus "${BOOT_PACKAGES[@]}" initramfs-tools
    nftables python3 python3-venv "${PYTHON_PACKAGES[@]}" iproute2 fdisk e2fsprogs
    unattended-upgrades ca-certificates openssl openssh-server netbase
)
say "mmdebstrap $SUITE/$ARCH minbase ($COMPONENTS): ${PACKAGES[*]}"
t=$(date +%s)
mmdebstrap --variant=minbase --arch="$ARCH" --mode=root --format=directory \
    --include="$(IFS=,; echo "${PACKAGES[*]}")" \
    --customize-hook="\"$HERE/customize.sh\" \"\$1\" \"$HERE\" \"$WHEEL\" \"$ARCH\"" \
    "$SUITE" "$ROOT" \
    "deb $MIRROR $SUITE $COMPONENTS" "deb $MIRROR $SUITE-updates $COMPONENTS" \
    "deb $SECURITY_MIRROR $SUITE-security $COMPONENTS"
say "rootfs done in $(( $(date +%s) - t ))s: $(du -sh "$ROOT" | cut -f1)"
# Files made during the build get SOURCE_DATE_EPOCH. Not Debian's *.py: their byte code
# (compiled by the postinsts against the packaged mtime) would go stale on the read-only root;
# our venv's byte code is checked-hash (SOURCE_DATE_EPOCH is set), so its mtimes do not matter.
find "$ROOT" -xdev -newermt "@$SOURCE_DATE_EPOCH" \( ! -name '*.py' -o -path "$ROOT/opt/edgeguard/*" \) \
    -print0 | xargs -0r touch --no-dereference --date="@$SOURCE_DATE_EPOCH"

# 4. Boot partition, with the kernel and initrd from the rootfs. amd64: an ESP with
# systemd-boot. arm64: the Raspberry Pi firmware partition (RASPIFIRM) as raspi-firmware's hooks
# filled /boot/firmware (boot ROM files, device trees, config.txt, cmdline.txt, kernel, initrd).
KERNEL=$(ls "$ROOT"/boot/vmlinuz-* | sort -V | tail -1)
INITRD=$(ls "$ROOT"/boot/initrd.img-* | sort -V | tail -1)
[ -f "$KERNEL" ] && [ -f "$INITRD" ] || die "no kernel/initrd in $ROOT/boot"
export MTOOLS_SKIP_CHECK=1
ESP=$WORK/esp.img
if [ "$ARCH" = arm64 ]; then
    FW=$ROOT/boot/firmware
    for f in start4.elf bootcode.bin config.txt cmdline.txt; do
        [ -f "$FW/$f" ] || die "no $f in /boot/firmware: raspi-firmware's hooks did not run?"
    done
    # The root by label, read-only (the last of rw/ro wins), the serial console last.
    read -ra words < "$FW/cmdline.txt"
    [[ " ${words[*]} " == *" root=LABEL=EG-ROOT "* && "${words[-1]}" == ro ]] \
        && [[ " ${words[*]} " == *" console=ttyS1,115200 root="* ]] \
        || die "unexpected /boot/firmware/cmdline.txt: ${words[*]}"
    say "firmware partition ($ESP_MB MiB, RASPIFIRM): $(ls "$FW" | wc -l) files, $(cat "$FW/cmdline.txt")"
    mkfs.vfat -F 32 -n RASPIFIRM --invariant -i "$(uuid_for boot | cut -c1-8)" -C "$ESP" \
        $(( ESP_MB * 1024 )) >/dev/null
    mcopy -i "$ESP" -s -p -Q "$FW"/* ::/
    # In the root, /boot/firmware is only the partition's mount point: no second copy. Emptying
    # it sets the directory's mtime to now: back to SOURCE_DATE_EPOCH (two builds differed there).
    find "$FW" -mindepth 1 -delete
    touch --date="@$SOURCE_DATE_EPOCH" "$FW"
else
    SDBOOT=$ROOT/usr/lib/systemd/boot/efi/systemd-bootx64.efi
    [ -f "$SDBOOT" ] || die "no $SDBOOT (systemd-boot-efi)"
    CMDLINE="root=LABEL=EG-ROOT ro rootwait console=tty0 console=ttyS0,115200 quiet systemd.show_status=1"
    say "ESP ($ESP_MB MiB): systemd-boot, $(basename "$KERNEL")"
    mkfs.vfat -F 32 -n EG-ESP --invariant -i "$(uuid_for boot | cut -c1-8)" -C "$ESP" \
        $(( ESP_MB * 1024 )) >/dev/null
    cat > "$WORK/loader.conf" <<CONF
default edgeguard.conf
timeout 0
console-mode keep
editor no
CONF
    cat > "$WORK/edgeguard.conf" <<CONF
title   EdgeGuard $VERSION
linux   /edgeguard/vmlinuz
initrd  /edgeguard/initrd.img
options $CMDLINE
CONF
    mmd -i "$ESP" ::/EFI ::/EFI/BOOT ::/loader ::/loader/entries ::/edgeguard
    mcopy -i "$ESP" "$SDBOOT" ::/EFI/BOOT/BOOTX64.EFI
    mcopy -i "$ESP" "$WORK/loader.conf" ::/loader/loader.conf
    mcopy -i "$ESP" "$WORK/edgeguard.conf" ::/loader/entries/edgeguard.conf
    mcopy -i "$ESP" "$KERNEL" ::/edgeguard/vmlinuz
    mcopy -i "$ESP" "$INITRD" ::/edgeguard/initrd.img
fi

# 5. Root (read-only at run time) and state filesystems, filled without mounting.
ROOT_MB=$(( $(du -sm "$ROOT" | cut -f1) * 115 / 100 + 64 ))
say "root ext4 ($ROOT_MB MiB, label EG-ROOT)"
mkfs.ext4 -q -L EG-ROOT -d "$ROOT" -U "$(uuid_for root)" \
    -E lazy_itable_init=0,lazy_journal_init=0,hash_seed="$(uuid_for root-hash)" \
    "$WORK/root.img" "${ROOT_MB}M"
# mkfs.ext4 -d copies each file's ctime and atime, which the kernel set while the build ran:
# set both to SOURCE_DATE_EPOCH in the new filesystem (debugfs, ~1 s for ~17k files).
stamp=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y%m%d%H%M%S)
(cd "$ROOT" && find . -xdev -printf '%P\n') \
    | awk -v t="$stamp" '{ printf "sif \"/%s\" ctime %s\nsif \"/%s\" atime %s\n", $0, t, $0, t }' \
    > "$WORK/times.debugfs"
debugfs -w -f "$WORK/times.debugfs" "$WORK/root.img" >/dev/null 2>"$WORK/times.err"
! grep -v '^debugfs [0-9]' "$WORK/times.err" || die "debugfs could not set the times above"
EG_UID=$(awk -F: '$1=="edgeguard"{print $3}' "$ROOT/etc/passwd")
EG_GID=$(awk -F: '$1=="edgeguard"{print $4}' "$ROOT/etc/passwd")
[ -n "$EG_UID" ] || die "no edgeguard user in the image"
say "state ext4 ($STATE_MB MiB, label EDGEGUARD-STATE, owner $EG_UID:$EG_GID; grown on first boot)"
mkfs.ext4 -q -L EDGEGUARD-STATE -U "$(uuid_for state)" \
    -E root_owner=$EG_UID:$EG_GID,lazy_itable_init=0,lazy_journal_init=0,hash_seed="$(uuid_for state-hash)" \
    "$WORK/state.img" "${STATE_MB}M"

# 6. The disk: boot partition, root, state (last, so it can grow). amd64: GPT, ESP and the
# x86-64 root partition type. arm64: MBR (the Pi 3 boot ROM reads MBR only), FAT32 LBA first.
IMG=$DIST/$NAME.img
DISK_MB=$(( 1 + ESP_MB + ROOT_MB + STATE_MB + 1 ))
say "disk $IMG ($DISK_MB MiB, $([ "$ARCH" = arm64 ] && echo MBR || echo GPT))"
rm -f "$IMG" "$IMG.zst"
truncate -s "${DISK_MB}M" "$IMG"
if [ "$ARCH" = arm64 ]; then
    sfdisk -q "$IMG" <<PARTS
label: dos
label-id: 0x$(uuid_for disk | cut -c1-8)
start=1MiB, size=${ESP_MB}MiB, type=c, bootable
size=${ROOT_MB}MiB, type=83
size=${STATE_MB}MiB, type=83
PARTS
else
    sfdisk -q "$IMG" <<PARTS
label: gpt
label-id: $(uuid_for disk)
start=1MiB, size=${ESP_MB}MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=EG-ESP, uuid=$(uuid_for p1)
size=${ROOT_MB}MiB, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name=EG-ROOT, uuid=$(uuid_for p2)
size=${STATE_MB}MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=EDGEGUARD-STATE, uuid=$(uuid_for p3)
PARTS
fi
off=1
for part in esp:$ESP_MB root:$ROOT_MB state:$STATE_MB; do
    dd if="$WORK/${part%%:*}.img" of="$IMG" bs=1M seek=$off conv=notrunc,sparse status=none
    off=$(( off + ${part#*:} ))
done

# 7. Compressed copy and checksums.
say "zstd -$ZSTD_LEVEL"
zstd -q -T0 -"$ZSTD_LEVEL" -f "$IMG" -o "$IMG.zst"
(cd "$DIST" && sha256sum "$NAME.img" "$NAME.img.zst" > "$NAME.sha256")
rm -rf "$WORK/root.img" "$WORK/state.img" "$WORK/esp.img"
say "done in $(( $(date +%s) - T0 ))s"
printf '  %-40s %s\n' "rootfs" "$(du -sh "$ROOT" | cut -f1)" \
    "$NAME.img" "$(du -h --apparent-size "$IMG" | cut -f1)" \
    "$NAME.img.zst" "$(du -h "$IMG.zst" | cut -f1)"

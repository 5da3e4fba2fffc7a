#!/bin/bash
# Smoke-boot the arm64 image's root filesystem under qemu-system-aarch64 (TCG, -M virt) and wait
# for the web UI's setup-token line on the serial console. What this checks: the arm64 userland,
# Debian's generic arm64 kernel and initrd (taken from the image's firmware partition), root by
# label read-only, the state partition, first boot and the services. What it cannot check: the
# Raspberry Pi boot path (boot ROM, start4.elf, config.txt, cmdline.txt, device tree) — qemu's
# virt machine has no Pi firmware; that needs a real Pi. The image file is not modified
# (snapshot=on). Network: qemu's user-mode NIC only.
#
#   image/test-arm64.sh [IMAGE]      (make image-test-arm64)     env: TIMEOUT (s, default 900), KEEP_LOG
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$HERE/.." && pwd)
VERSION=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$TOP/pyproject.toml")
IMG=${1:-$TOP/dist/edgeguard-$VERSION-arm64.img}
TIMEOUT=${TIMEOUT:-900}

die() { echo "image-test-arm64: error: $*" >&2; exit 1; }
[ -f "$IMG" ] || die "no $IMG: run 'make image ARCH=arm64' first"
command -v qemu-system-aarch64 >/dev/null || die "needs qemu-system-aarch64: apt-get install qemu-system-arm"
command -v mcopy >/dev/null || die "needs mtools: apt-get install mtools"

RUN=$(mktemp -d /tmp/edgeguard-image-test-arm64.XXXXXX)
LOG=$RUN/serial.log
: > "$LOG"
QEMU_PID=
cleanup() {
    [ -n "$QEMU_PID" ] && kill "$QEMU_PID" 2>/dev/null && wait "$QEMU_PID" 2>/dev/null
    if [ -n "${KEEP_LOG:-}" ]; then echo "serial log kept: $LOG"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT

# The kernel and initrd the Pi firmware would load, read from partition 1 (FAT) with mtools.
FW_START=$(sfdisk -J "$IMG" | python3 -c 'import json, sys; t = json.load(sys.stdin)["partitiontable"]; print(t["partitions"][0]["start"] * t.get("sectorsize", 512))')
export MTOOLS_SKIP_CHECK=1
names=$(mdir -b -i "$IMG@@$FW_START" ::/ | sed 's|^::/||')
kernel=$(grep '^vmlinuz-' <<<"$names" | sort -V | tail -1)
initrd=$(grep '^initrd.img-' <<<"$names" | sort -V | tail -1)
[ -n "$kernel" ] && [ -n "$initrd" ] || die "no vmlinuz-*/initrd.img-* on the firmware partition"
mcopy -i "$IMG@@$FW_START" "::/$kernel" "$RUN/vmlinuz"
mcopy -i "$IMG@@$FW_START" "::/$initrd" "$RUN/initrd.img"
# As the Pi's cmdline.txt, with the virt machine's serial port (ttyAMA0) instead of ttyS1.
CMDLINE="root=LABEL=EG-ROOT ro rootwait console=tty0 console=ttyAMA0,115200"

echo "image-test-arm64: booting $(basename "$IMG") ($kernel; virt, cortex-a72, TCG, 2 vCPU, 1 GiB; timeout ${TIMEOUT}s)"
start=$(date +%s.%N)
qemu-system-aarch64 -machine virt -cpu cortex-a72 -m 1024 -smp 2 -nographic -no-reboot \
    -kernel "$RUN/vmlinuz" -initrd "$RUN/initrd.img" -append "$CMDLINE" \
    -drive if=none,id=disk,format=raw,file="$IMG",snapshot=on -device virtio-blk-pci,drive=disk \
    -nic user,model=virtio-net-pci \
    -serial file:"$LOG" -monitor none </dev/null >"$RUN/qemu.out" 2>&1 &
QEMU_PID=$!

declare -A seen=()
mark() {  # mark NAME PATTERN: print the time the pattern first appears on the console
    if [ -z "${seen[$1]:-}" ] && grep -aq -- "$2" "$LOG"; then
        seen[$1]=$(python3 -c "import sys; print(f'{float(sys.argv[1]) - float(sys.argv[2]):.1f}')" "$(date +%s.%N)" "$start")
        printf '  %-34s %6ss\n' "$1" "${seen[$1]}"
    fi
}
while :; do
    mark "kernel started" "Booting Linux on physical CPU"
    mark "systemd started" "systemd\[1\]: \|Welcome to"
    mark "state partition mounted" "var/lib/edgeguard\|var-lib-edgeguard"
    mark "edgeguard-run started" "EdgeGuard controller"
    mark "first boot done" "edgeguard-firstboot: ready"
    mark "setup token on the console" "enter the setup token"
    [ -n "${seen[setup token on the console]:-}" ] && break
    if grep -aq "You are in emergency mode\|Kernel panic" "$LOG"; then
        KEEP_LOG=1; grep -a "FAILED\|DEPEND\|panic" "$LOG" | sed 's/^/    /'; die "boot failed (emergency mode or panic)"
    fi
    kill -0 "$QEMU_PID" 2>/dev/null || { KEEP_LOG=1; tail -40 "$LOG"; die "qemu exited before the setup token"; }
    elapsed=$(( $(date +%s) - ${start%.*} ))
    [ "$elapsed" -lt "$TIMEOUT" ] || { KEEP_LOG=1; tail -60 "$LOG"; die "no setup token after ${TIMEOUT}s"; }
    sleep 0.5
done
echo "image-test-arm64: console lines:"
grep -a "edgeguard-firstboot:\|setup token\|EdgeGuard web UI" "$LOG" | sed 's/^/    /'
if grep -aq "FAILED" "$LOG"; then
    echo "image-test-arm64: units that failed during boot:"; grep -a "FAILED" "$LOG" | sed 's/^/    /'
fi
echo "image-test-arm64: OK: setup token on the serial console ${seen[setup token on the console]}s after qemu start (TCG, emulated arm64 on x86-64; not the Pi firmware path)"

#!/bin/bash
# Boot the amd64 image headless under qemu (TCG: no KVM here) through UEFI (OVMF) and
# systemd-boot, exactly as flashed, and wait for the web UI's setup-token line on the serial
# console. The image file is not modified (-snapshot). Network: qemu's user-mode NIC only
# (nothing touches this machine's own network namespace).
#
#   image/test.sh [IMAGE]      (make image-test)     env: TIMEOUT (s, default 420), KEEP_LOG
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$HERE/.." && pwd)
VERSION=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$TOP/pyproject.toml")
IMG=${1:-$TOP/dist/edgeguard-$VERSION-amd64.img}
TIMEOUT=${TIMEOUT:-420}
OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.fd
OVMF_VARS=/usr/share/OVMF/OVMF_VARS_4M.fd

die() { echo "image-test: error: $*" >&2; exit 1; }
[ -f "$IMG" ] || die "no $IMG: run 'make image ARCH=amd64' first"
command -v qemu-system-x86_64 >/dev/null || die "needs qemu-system-x86_64: apt-get install qemu-system-x86"
[ -f "$OVMF_CODE" ] || die "needs $OVMF_CODE: apt-get install ovmf"

UI_PORT=${UI_PORT:-18443}  # host loopback port qemu forwards to the guest's :443 (user-mode NIC)
RUN=$(mktemp -d /tmp/edgeguard-image-test.XXXXXX)
LOG=$RUN/serial.log
cp "$OVMF_VARS" "$RUN/vars.fd"
: > "$LOG"
QEMU_PID=
cleanup() {
    [ -n "$QEMU_PID" ] && kill "$QEMU_PID" 2>/dev/null && wait "$QEMU_PID" 2>/dev/null
    if [ -n "${KEEP_LOG:-}" ]; then echo "serial log kept: $LOG"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT

echo "image-test: booting $(basename "$IMG") (UEFI, TCG, 2 vCPU, 1 GiB; timeout ${TIMEOUT}s)"
start=$(date +%s.%N)
qemu-system-x86_64 -accel tcg -machine q35 -m 1024 -smp 2 -nographic -no-reboot \
    -drive if=pflash,format=raw,readonly=on,file="$OVMF_CODE" \
    -drive if=pflash,format=raw,file="$RUN/vars.fd" \
    -drive if=virtio,format=raw,file="$IMG" -snapshot \
    -nic user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:$UI_PORT-:443 \
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
    mark "systemd started" "systemd\[1\]: \|Welcome to"
    mark "state partition mounted" "var/lib/edgeguard\|var-lib-edgeguard"
    mark "edgeguard-run started" "EdgeGuard controller"
    mark "first boot done" "edgeguard-firstboot: ready"
    mark "setup token on the console" "enter the setup token"
    [ -n "${seen[setup token on the console]:-}" ] && break
    if grep -aq "You are in emergency mode\|Kernel panic" "$LOG"; then
        KEEP_LOG=1; grep -a "FAILED\|DEPEND\|panic" "$LOG" | sed 's/^/    /'; die "boot failed (emergency mode or panic)"
    fi
    kill -0 "$QEMU_PID" 2>/dev/null || { tail -40 "$LOG"; die "qemu exited before the setup token"; }
    elapsed=$(( $(date +%s) - ${start%.*} ))
    [ "$elapsed" -lt "$TIMEOUT" ] || { KEEP_LOG=1; tail -60 "$LOG"; die "no setup token after ${TIMEOUT}s"; }
    sleep 0.5
done
echo "image-test: console lines:"
grep -a "edgeguard-firstboot:\|setup token\|EdgeGuard web UI" "$LOG" | sed 's/^/    /'
if grep -aq "FAILED" "$LOG"; then
    echo "image-test: units that failed during boot:"; grep -a "FAILED" "$LOG" | sed 's/^/    /'
fi
# Informational for now: the boot-time safe ruleset decides whether the WAN-side NIC reaches :443.
code=000
for _ in $(seq 1 40); do
    code=$(curl -sk -o /dev/null -w '%{http_code}' --max-time 3 "https://127.0.0.1:$UI_PORT/setup" || true)
    [ "$code" != 000 ] && break
    sleep 1
done
echo "image-test: web UI over HTTPS through qemu's user NIC (guest :443): HTTP $code (000 = no answer)"
echo "image-test: OK: setup token on the serial console ${seen[setup token on the console]}s after qemu start (TCG, emulated)"

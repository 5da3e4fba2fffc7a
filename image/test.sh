#!/bin/bash
# Boot the amd64 image headless under qemu (TCG: no KVM here) through UEFI (OVMF) and
# systemd-boot, as flashed, with two NICs on tap devices in two network namespaces this test
# creates (WAN, LAN), and check it from the LAN side; then reboot it and check it kept its state.
#
#   image/test.sh [IMAGE]      (make image-test)
#   env: TIMEOUT (s per boot, default 420), IDLE_WAIT (s before reading idle RAM, default 30),
#        KEEP_LOG=1 (keep the run dir: serial logs, disk copy)
#
# The image file itself is not changed: the test boots a copy (grown by 256 MiB, as a card
# bigger than the image is), with network.json, enrol.json and root.json put on the copy's
# boot partition as a technician would; the WAN gets its address by DHCP (the default).
# Addresses: 192.0.2.0/24 and 2001:db8:0:10::/64 (LAN), 203.0.113.0/24 and 198.51.100.0/24
# (WAN, "internet"). Nothing is configured in this machine's own network namespace: every
# tap, address and route lives in the namespaces, which are deleted on exit (trap), failed
# or not.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$HERE/.." && pwd)
VERSION=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$TOP/pyproject.toml")
IMG=${1:-$TOP/dist/edgeguard-$VERSION-amd64.img}
TIMEOUT=${TIMEOUT:-420}
IDLE_WAIT=${IDLE_WAIT:-30}
OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.fd
OVMF_VARS=/usr/share/OVMF/OVMF_VARS_4M.fd
PROBE="python3 $HERE/lanprobe.py"

die() { echo "image-test: FAIL: $*" >&2; exit 1; }
say() { printf 'image-test: [%6.1fs] %s\n' "$(since "$T0")" "$*"; }
since() { python3 -c "import sys, time; print(f'{time.time() - float(sys.argv[1]):.1f}')" "$1"; }
[ "$(id -u)" = 0 ] || die "needs root (network namespaces, tap devices)"
[ -f "$IMG" ] || die "no $IMG: run 'make image ARCH=amd64' first"
missing=()
for pair in qemu-system-x86_64:qemu-system-x86 mcopy:mtools dnsmasq:dnsmasq-base \
            debugfs:e2fsprogs sfdisk:fdisk; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
[ -f "$OVMF_CODE" ] || missing+=(ovmf)
[ ${#missing[@]} -eq 0 ] || die "missing tools; install them with: apt-get install ${missing[*]}"
EDGEGUARD=$TOP/.venv/bin/edgeguard
[ -x "$EDGEGUARD" ] || die "no $EDGEGUARD (make setup): it makes the MSP root the box enrols with"

T0=$(date +%s.%N)
RUN=$(mktemp -d /tmp/edgeguard-image-test.XXXXXX)
NS_WAN=egimg$$-wan
NS_LAN=egimg$$-lan
QEMU_PID= DNSMASQ_PID= HTTP_PID=
LAN_BOX=192.0.2.1 LAN_CLIENT=192.0.2.10 WAN_BOX=203.0.113.2 WAN_GW=203.0.113.1
INET_SERVER=198.51.100.80 BAD_NAME=internetbadguys.com WAN_MAC=52:54:00:eb:00:01
ADMIN=admin PASSWORD="image-test-$RANDOM-$RANDOM-pw"

stop_wan_services() {
    for pid in $DNSMASQ_PID $HTTP_PID; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    DNSMASQ_PID= HTTP_PID=
}
cleanup() {
    local rc=$?
    if [ -n "$QEMU_PID" ]; then kill "$QEMU_PID" 2>/dev/null || true; wait "$QEMU_PID" 2>/dev/null || true; fi
    stop_wan_services
    for ns in "$NS_WAN" "$NS_LAN"; do
        [ -e "/run/netns/$ns" ] && ip netns delete "$ns"
    done
    if [ -n "${KEEP_LOG:-}" ] || [ "$rc" != 0 ]; then echo "image-test: run dir kept: $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT

# -- 1. The disk: a copy of the image, bigger, with the technician's files on its ESP. ---------
DISK=$RUN/disk.img
cp --sparse=always "$IMG" "$DISK"
truncate -s +256M "$DISK"
part_field() {  # part_field N start|size: in bytes, from the GPT
    sfdisk -J "$DISK" 2>/dev/null | python3 -c "import json, sys; p = json.load(sys.stdin)['partitiontable']['partitions'][int(sys.argv[1]) - 1]; print(p[sys.argv[2]] * 512)" "$1" "$2"
}
ESP_AT=$(part_field 1 start)
mkdir -p "$RUN/esp" "$RUN/msp" "$RUN/www"
# WAN: the default (DHCP: dnsmasq in the WAN namespace leases $WAN_BOX to the WAN NIC's MAC).
cat > "$RUN/esp/network.json" <<JSON
{"site": "image-test",
 "lan": {"addresses": ["$LAN_BOX/24", "2001:db8:0:10::1/64"]},
 "upstreams": ["$WAN_GW:53"]}
JSON
# Enrolment: the MSP's root made here (edgeguard msp init), the credential a random token.
"$EDGEGUARD" msp init --keys "$RUN/msp/keys" --publish "$RUN/msp/pub" >/dev/null
cp "$RUN/msp/pub/root/1.json" "$RUN/esp/root.json"
cat > "$RUN/esp/enrol.json" <<JSON
{"server": "https://$WAN_GW:8081", "checkin": "https://$WAN_GW:8082",
 "site": "image-test-site", "credential": "egc-$RANDOM$RANDOM$RANDOM", "root_file": "root.json"}
JSON
export MTOOLS_SKIP_CHECK=1
mmd -i "$DISK@@$ESP_AT" ::/edgeguard 2>/dev/null || true
for f in network.json enrol.json root.json; do mcopy -o -i "$DISK@@$ESP_AT" "$RUN/esp/$f" "::/edgeguard/$f"; done
echo ok > "$RUN/www/ok.txt"
cp "$OVMF_VARS" "$RUN/vars.fd"
say "disk copy $(du -h --apparent-size "$DISK" | cut -f1) with edgeguard/{network,enrol,root}.json on its ESP"

# -- 2. The namespaces: LAN (a client, and qemu itself) and WAN (gateway, DNS, a web server). --
ip netns add "$NS_LAN"
ip netns add "$NS_WAN"
for ns in "$NS_LAN" "$NS_WAN"; do ip -n "$ns" link set lo up; done
in_lan() { ip netns exec "$NS_LAN" "$@"; }
in_wan() { ip netns exec "$NS_WAN" "$@"; }

boot() {  # boot N: start qemu in the LAN namespace; its WAN tap is then moved to the WAN one
    local n=$1
    LOG=$RUN/serial-$n.log
    : > "$LOG"
    # qemu opens both taps in its own namespace; the WAN one moves once it is attached.
    ip -n "$NS_WAN" link show egwan >/dev/null 2>&1 && ip -n "$NS_WAN" link set egwan netns "$NS_LAN"
    for tap in egwan eglan; do
        ip -n "$NS_LAN" link show "$tap" >/dev/null 2>&1 || ip -n "$NS_LAN" tuntap add dev "$tap" mode tap
        ip -n "$NS_LAN" link set "$tap" up
    done
    START=$(date +%s.%N)
    # `ip netns exec` execs its command: $! is qemu's (dnsmasq's, the web server's) own PID.
    ip netns exec "$NS_LAN" qemu-system-x86_64 -accel tcg -machine q35 -m 1024 -smp 2 -nographic -no-reboot \
        -drive if=pflash,format=raw,readonly=on,file="$OVMF_CODE" \
        -drive if=pflash,format=raw,file="$RUN/vars.fd" \
        -drive if=virtio,format=raw,file="$DISK" \
        -netdev tap,id=wan,ifname=egwan,script=no,downscript=no \
        -device virtio-net-pci,netdev=wan,mac=$WAN_MAC,bus=pcie.0,addr=0x10 \
        -netdev tap,id=lan,ifname=eglan,script=no,downscript=no \
        -device virtio-net-pci,netdev=lan,mac=52:54:00:eb:00:02,bus=pcie.0,addr=0x11 \
        -serial file:"$LOG" -monitor unix:"$RUN/monitor.sock",server,nowait \
        </dev/null >"$RUN/qemu-$n.out" 2>&1 &
    QEMU_PID=$!
    for _ in $(seq 1 50); do  # attached: the tap has a carrier
        ip -n "$NS_LAN" link show egwan | grep -q LOWER_UP && break
        sleep 0.1
    done
    ip -n "$NS_LAN" link show egwan | grep -q LOWER_UP || { cat "$RUN/qemu-$n.out"; die "qemu did not attach its taps"; }
    ip -n "$NS_LAN" link set egwan netns "$NS_WAN"
    ip -n "$NS_WAN" link set egwan up
    ip -n "$NS_WAN" addr add "$WAN_GW/24" dev egwan
    ip -n "$NS_WAN" addr add "$INET_SERVER/24" dev egwan
    ip -n "$NS_LAN" addr replace "$LAN_CLIENT/24" dev eglan
    ip -n "$NS_LAN" addr replace 2001:db8:0:10::10/64 dev eglan nodad
    ip -n "$NS_LAN" route replace default via "$LAN_BOX"
    # The "internet": dnsmasq is the ISP's DHCP server (the box's WAN address) and the upstream
    # DNS answering two names itself; a plain web server. $BAD_NAME resolves here, so only the
    # box's filter can make it NXDOMAIN for the LAN.
    ip netns exec "$NS_WAN" dnsmasq --keep-in-foreground --no-resolv --no-hosts \
        --bind-interfaces --interface=egwan --except-interface=lo --user=root --group=root \
        --dhcp-range="$WAN_BOX,$WAN_BOX,255.255.255.0,10m" --dhcp-host="$WAN_MAC,$WAN_BOX" \
        --dhcp-option=option:router,"$WAN_GW" --dhcp-leasefile="$RUN/leases-$n" \
        --address=/upstream.example.net/"$INET_SERVER" --address=/$BAD_NAME/198.51.100.66 \
        --log-queries --log-facility="$RUN/dnsmasq-$n.log" &
    DNSMASQ_PID=$!
    ip netns exec "$NS_WAN" python3 -m http.server --bind "$INET_SERVER" --directory "$RUN/www" 8080 \
        >"$RUN/http-$n.log" 2>&1 &
    HTTP_PID=$!
}

declare -A seen=()
mark() {  # mark NAME PATTERN: print when the pattern first appears on this boot's console
    if [ -z "${seen[$1]:-}" ] && grep -aq -- "$2" "$LOG"; then
        seen[$1]=$(since "$START")
        printf '  %-40s %6ss\n' "$1" "${seen[$1]}"
    fi
}
wait_boot() {  # wait_boot N: milestones until DNS answers from the LAN and the UI has started
    local n=$1 dns_key="boot $1: DNS answering from the LAN"
    while :; do
        mark "boot $n: systemd started" "systemd\[1\]: \|Welcome to"
        mark "boot $n: state partition mounted" "var/lib/edgeguard\|var-lib-edgeguard"
        mark "boot $n: first boot done" "edgeguard-firstboot: ready"
        mark "boot $n: web UI started" "EdgeGuard web UI on"
        mark "boot $n: setup token on the console" "enter the setup token"
        if [ -z "${seen[$dns_key]:-}" ] && in_lan $PROBE dns "$LAN_BOX" upstream.example.net >/dev/null 2>&1; then
            seen[$dns_key]=$(since "$START")
            printf '  %-40s %6ss   (TCG, emulated)\n' "$dns_key" "${seen[$dns_key]}"
        fi
        [ -n "${seen[$dns_key]:-}" ] && [ -n "${seen[boot $n: web UI started]:-}" ] && return 0
        if grep -aq "You are in emergency mode\|Kernel panic" "$LOG"; then
            grep -a "FAILED\|DEPEND\|panic" "$LOG" | sed 's/^/    /'; die "boot $n failed (emergency mode or panic)"
        fi
        kill -0 "$QEMU_PID" 2>/dev/null || { tail -40 "$LOG"; die "qemu exited during boot $n"; }
        [ "$(since "$START" | cut -d. -f1)" -lt "$TIMEOUT" ] || { tail -60 "$LOG"; die "boot $n: not up after ${TIMEOUT}s"; }
        sleep 0.5
    done
}
check() {  # check WHAT EXPECTED ACTUAL: one line, and fail unless ACTUAL matches EXPECTED (glob)
    # shellcheck disable=SC2053
    if [[ "$3" == $2 ]]; then printf '  ok    %-52s %s\n' "$1" "$3"; else die "$1: expected $2, got '$3'"; fi
}
shutdown_box() {  # ctrl-alt-delete through the monitor: systemd reboots, qemu (-no-reboot) exits
    local t
    t=$(date +%s.%N)
    python3 - "$RUN/monitor.sock" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
time.sleep(0.3)
s.sendall(b"sendkey ctrl-alt-delete\n")
time.sleep(0.5)
PY
    for _ in $(seq 1 240); do kill -0 "$QEMU_PID" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$QEMU_PID" 2>/dev/null && die "the box did not shut down within 120 s of ctrl-alt-delete"
    wait "$QEMU_PID" 2>/dev/null || true
    QEMU_PID=
    stop_wan_services
    printf '  %-40s %6ss\n' "clean shutdown (ctrl-alt-delete)" "$(since "$t")"
}
state_file() {  # state_file PATH: a file from the (shut down) copy's state partition, or ""
    debugfs -c -R "cat $1" "$RUN/state.img" 2>/dev/null || true
}
read_state() {
    local at size
    at=$(part_field 3 start) size=$(part_field 3 size)
    dd if="$DISK" of="$RUN/state.img" bs=1M iflag=skip_bytes,count_bytes skip="$at" count="$size" \
        conv=sparse status=none
}
health() {  # health N: log in as the admin, keep /api/v1/health, print the checks of interest
    in_lan $PROBE health "https://$LAN_BOX" "$ADMIN" "$PASSWORD" > "$RUN/health-$1.json" \
        || die "boot $1: could not log in and read /api/v1/health"
    for name in "EdgeGuard services memory" "Live policy" "DNS resolver"; do
        printf '  %-28s %s\n' "$name:" "$(health_value "$1" "$name")"
    done
}
health_value() {  # health_value N NAME: "value [detail]" of a check in boot N's health report
    python3 - "$RUN/health-$1.json" "$2" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
checks = {c["name"]: c for group in report["sections"].values() for c in group}
c = checks.get(sys.argv[2])
print("missing" if c is None else c["value"] + (f"  [{c['detail']}]" if c["detail"] else ""))
PY
}

# -- 3. First boot. --------------------------------------------------------------------------
say "boot 1 (first boot): $(basename "$IMG") copy, UEFI, TCG, 2 vCPU, 1 GiB, taps in $NS_WAN/$NS_LAN"
boot 1
wait_boot 1
for _ in $(seq 1 60); do grep -aq "enter the setup token" "$LOG" && break; sleep 0.5; done
say "boot 1: checks from the LAN ($LAN_CLIENT) and the WAN ($WAN_GW)"
check "DNS through the box to the WAN upstream" "NOERROR $INET_SERVER" \
    "$(in_lan $PROBE dns "$LAN_BOX" upstream.example.net)"
check "the upstream itself answers $BAD_NAME" "NOERROR 198.51.100.66" \
    "$(in_wan $PROBE dns "$WAN_GW" "$BAD_NAME")"
check "the box blocks $BAD_NAME (malware-phishing)" "NXDOMAIN" \
    "$(in_lan $PROBE dns "$LAN_BOX" "$BAD_NAME")"
check "DNS over IPv6 on the LAN address" "NOERROR $INET_SERVER" \
    "$(in_lan $PROBE dns 2001:db8:0:10::1 upstream.example.net || true)"
check "not an open resolver: no DNS answer on the WAN" "no answer" \
    "$(in_wan $PROBE dns "$WAN_BOX" upstream.example.net || true)"
check "HTTPS setup page from the LAN" "200 /setup" "$(in_lan $PROBE get "https://$LAN_BOX/setup" --wait 60 || true)"
printf "  %-40s %6ss\n" "boot 1: setup page answering over HTTPS" "$(since "$START")"
check "ruleset: LAN to a closed box port is dropped" "timeout" \
    "$(in_lan $PROBE tcp "$LAN_BOX" 9 --timeout 3)"
check "ruleset: WAN to the web UI is dropped" "timeout" \
    "$(in_wan $PROBE tcp "$WAN_BOX" 443 --timeout 3)"
check "forwarding: LAN client fetches from the internet" "200 /ok.txt" \
    "$(in_lan $PROBE get "http://$INET_SERVER:8080/ok.txt" || true)"
check "NAT: the web server saw the box's WAN address" "*$WAN_BOX*" \
    "$(grep -a 'GET /ok.txt' "$RUN/http-1.log" | head -1)"
check "the WAN address came by DHCP (default)" "*$WAN_MAC $WAN_BOX*" "$(cat "$RUN/leases-1" 2>/dev/null)"
banner_fp=$(grep -ao "fingerprint: [0-9A-F:]*" "$LOG" | head -1 | cut -d' ' -f2)
cert1=$(in_lan $PROBE cert "$LAN_BOX" 443)
check "served certificate = the console banner's" "$banner_fp" "$cert1"
check "enrolled with the MSP from the ESP" "*enrolled as * of site image-test-site*" \
    "$(grep -a 'edgeguard-firstboot: enrolled as' "$LOG" | head -1)"
token_line=$(grep -a "enter the setup token" "$LOG" | tail -1 | tr -d '\r')
check "setup token line shows the LAN address" "*https://$LAN_BOX/setup*" "$token_line"
token=${token_line##* }
check "first admin made with the console's token" "HTTP 200" \
    "$(in_lan $PROBE setup "https://$LAN_BOX" "$token" "$ADMIN" "$PASSWORD")"
say "boot 1: idle for ${IDLE_WAIT}s, then RAM of the EdgeGuard services (cgroups, via /api/v1/health)"
sleep "$IDLE_WAIT"
health 1
IDLE_RAM=$(health_value 1 "EdgeGuard services memory" | cut -d' ' -f1)
check "services' memory is in the health report" "[0-9]*.[0-9]" "$IDLE_RAM"
if python3 -c "import sys; sys.exit(float(sys.argv[1]) >= 150)" "$IDLE_RAM"; then verdict=within; else verdict=OVER; fi
say "idle RAM of the EdgeGuard services: $IDLE_RAM MB ($verdict the issue's 150 MB target; reported, not a pass condition)"

# -- 4. Reboot: the state must survive. ------------------------------------------------------
say "reboot (ctrl-alt-delete through the qemu monitor)"
shutdown_box
read_state
check "state: .firstboot-done kept" "present" \
    "$(debugfs -c -R 'stat /.firstboot-done' "$RUN/state.img" 2>/dev/null | grep -q Inode: && echo present)"
check "state: enrolment saved by edgeguard sync enrol" "image-test-site https://$WAN_GW:8081 *" \
    "$(state_file /sync/enrolment.json | python3 -c 'import json, sys; d = json.load(sys.stdin); print(d["site"], d["server"], d["appliance_id"])' || true)"
check "state: the first policy names the two ports" "*enp0s16*enp0s17*" \
    "$(state_file /first-policy.yaml | grep -a 'interfaces:' | tr '\n' ' ')"
check "state: the box's hash seed, owner-only" "*0600*" \
    "$(debugfs -c -R 'stat /hashseed' "$RUN/state.img" 2>/dev/null | grep -a -o 'Mode: *[0-7]*' || true)"
check "state: block lists kept compiled for the next start" "*.idx*" \
    "$(debugfs -c -R 'ls /index' "$RUN/state.img" 2>/dev/null | tr '\n' ' ' || true)"
check "enrolled: the credential file is gone from the ESP" "*root.json*" \
    "$(mdir -b -i "$DISK@@$ESP_AT" ::/edgeguard/ 2>&1 | tr '\n' ' ')"
check "... and enrol.json with it" "" "$(mdir -b -i "$DISK@@$ESP_AT" ::/edgeguard/ 2>&1 | grep -i enrol.json || true)"
boot 2
wait_boot 2
say "boot 2: checks"
check "HTTPS from the LAN: /setup now sends to the login" "200 /login*" \
    "$(in_lan $PROBE get "https://$LAN_BOX/setup" --wait 60 || true)"
check "first boot did not run again" "0" "$(grep -ac 'edgeguard-firstboot:' "$LOG" || true)"
check "no new setup token (an admin exists)" "0" "$(grep -ac 'enter the setup token' "$LOG" || true)"
check "same TLS certificate" "$cert1" "$(in_lan $PROBE cert "$LAN_BOX" 443)"
check "DNS still filtered" "NXDOMAIN" "$(in_lan $PROBE dns "$LAN_BOX" "$BAD_NAME")"
say "boot 2: right after boot (not idle)"
health 2
check "the admin made in boot 1 logs in; version 1 still live" "version 1 *" \
    "$(health_value 2 "Live policy")"
shutdown_box
say "OK: boot to DNS answering ${seen[boot 1: DNS answering from the LAN]}s (first boot), ${seen[boot 2: DNS answering from the LAN]}s (reboot) after qemu start (TCG, emulated); idle RAM $IDLE_RAM MB; whole test $(since "$T0")s"

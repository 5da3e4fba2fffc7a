#!/bin/bash
# EdgeGuard first boot: runs as root (edgeguard-firstboot.service) until it succeeded once.
set -euo pipefail
STATE=/var/lib/edgeguard
VENV=/opt/edgeguard/venv

say() {  # to the journal (stdout) and to every console a technician might look at
    echo "edgeguard-firstboot: $*"
    for tty in /dev/ttyS0 /dev/tty1; do
        [ -w "$tty" ] && { echo "edgeguard-firstboot: $*" > "$tty"; } 2>/dev/null || true
    done
}

# 1. Grow the state partition (the last one) to the end of the disk, then its filesystem.
grow_state() {
    local part disk num
    part=$(findmnt -no SOURCE "$STATE") || { say "state partition not mounted"; return 1; }
    disk=/dev/$(lsblk -no PKNAME "$part")
    num=$(cat "/sys/class/block/$(basename "$part")/partition")
    # A flashed card is bigger than the image: move the GPT backup header to the real end first.
    sfdisk --relocate gpt-bak-std "$disk" >/dev/null 2>&1 || true
    if echo ", +" | sfdisk --no-reread --no-tell-kernel -N "$num" "$disk" >/dev/null 2>&1; then
        partx -u -n "$num" "$disk" || true
    fi
    resize2fs "$part" >/dev/null 2>&1 || say "resize2fs on $part failed (state keeps its size)"
    say "state partition $part: $(df -h --output=size "$STATE" | tail -1 | tr -d ' ')"
}
grow_state || say "could not grow the state partition"

# 2. The state directory belongs to the service user.
chown edgeguard:edgeguard "$STATE"
chmod 0750 "$STATE"
install -d -o edgeguard -g edgeguard -m 0750 "$STATE/ui"

# 3. SSH host key on the state partition (sshd itself stays disabled until someone enables it).
install -d -m 0700 "$STATE/ssh" "$STATE/ssh/authorized_keys"
[ -f "$STATE/ssh/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N "" -f "$STATE/ssh/ssh_host_ed25519_key"

# 4. What a technician put on the boot partition (<boot>/edgeguard/: network.json,
#    policy.yaml, enrol.json + root.json; docs/image.md). The boot partition is the ESP at
#    /boot/efi on amd64 and the Pi's firmware partition at /boot/firmware on arm64. It is
#    root-only (umask 0077): copy it where the service user can read it, for this boot only.
ESP_DIR=/boot/efi/edgeguard
[ -d /boot/firmware/edgeguard ] && ESP_DIR=/boot/firmware/edgeguard
REQ=/run/edgeguard-esp
rm -rf "$REQ"
install -d -o edgeguard -g edgeguard -m 0700 "$REQ"
if [ -d "$ESP_DIR" ]; then
    find "$ESP_DIR" -maxdepth 1 -type f \( -name '*.json' -o -name '*.yaml' -o -name '*.pem' \) \
        -exec install -o edgeguard -g edgeguard -m 0600 {} "$REQ/" \;
fi
as_eg() { runuser -u edgeguard -- "$VENV/bin/python" -m appliance.firstboot "$@" --esp "$REQ" --state-dir "$STATE"; }

# 5. The first policy (the default on the first two Ethernet ports, or the ESP's) and the
#    ports' network files. Without them the box would boot into the safe management-only
#    ruleset: so a failure here leaves first boot undone, to try again at the next boot.
complete=1
if out=$(as_eg configure 2>&1); then
    while IFS= read -r line; do say "$line"; done <<< "$out"
else
    complete=
    while IFS= read -r line; do say "ERROR: $line"; done <<< "$out"
fi

# 6. Enrolment with the MSP: `edgeguard sync enrol` with enrol.json's values (once).
if [ -f "$REQ/enrol.json" ] && [ ! -f "$STATE/sync/enrolment.json" ]; then
    if out=$(as_eg enrol 2>&1); then
        while IFS= read -r line; do say "$line"; done <<< "$out"
    else
        while IFS= read -r line; do say "ERROR: enrolment: $line"; done <<< "$out"
    fi
fi
rm -rf "$REQ"

# 6b. enrol.json carries the MSP check-in credential, and the boot partition is FAT that anyone
#     holding the card can read: once the box is enrolled, delete the file there (the root.json
#     beside it is public). A refused enrolment leaves it, to be fixed and run by hand.
if [ -f "$ESP_DIR/enrol.json" ] && [ -f "$STATE/sync/enrolment.json" ]; then
    boot_mnt=$(findmnt -no TARGET --target "$ESP_DIR" | tail -1 || true)
    if [ -n "$boot_mnt" ] && mount -o remount,rw "$boot_mnt" && rm -f "$ESP_DIR/enrol.json" && sync -f "$ESP_DIR"; then
        say "enrolled: enrol.json (with its credential) removed from the boot partition"
    else
        say "WARNING: could not remove $ESP_DIR/enrol.json; delete it: it holds the MSP credential"
    fi
    [ -z "$boot_mnt" ] || mount -o remount,ro "$boot_mnt" || true
fi

# 7. TLS certificate for the web UI (self-signed, EC P-256), made as the service user; its
#    names include the LAN addresses (from step 5) the admin will type.
lan=$(sed -n 's/^Address=//p' "$STATE/network/10-edgeguard-lan.network" 2>/dev/null | cut -d/ -f1 || true)
names="localhost 127.0.0.1 $(hostname) $(echo $lan)"
runuser -u edgeguard -- "$VENV/bin/python" - "$STATE/ui/tls" $names <<'PY'
import sys
from pathlib import Path
from webui.server import ensure_certificate
cert, _ = ensure_certificate(Path(sys.argv[1]), sys.argv[2:])
print(f"TLS certificate {cert}")
PY
fp=$(openssl x509 -in "$STATE/ui/tls/cert.pem" -noout -fingerprint -sha256 2>/dev/null | cut -d= -f2 || true)

if [ -z "$complete" ]; then
    say "first boot incomplete (see above): the box runs the safe management-only ruleset"
    exit 0
fi
touch "$STATE/.firstboot-done"
first_lan=$(echo $lan | cut -d' ' -f1)
say "ready. Web UI from the LAN: https://${first_lan:-<this box>}/setup"
say "TLS certificate SHA-256 fingerprint: ${fp:-unknown}"
say "the one-time setup token is printed by edgeguard-ui on this console at its start"

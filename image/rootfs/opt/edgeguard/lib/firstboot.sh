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

# 3. TLS certificate for the web UI (self-signed, EC P-256), made as the service user.
names="localhost 127.0.0.1 $(hostname)"
runuser -u edgeguard -- "$VENV/bin/python" - "$STATE/ui/tls" $names <<'PY'
import sys
from pathlib import Path
from webui.server import ensure_certificate
cert, _ = ensure_certificate(Path(sys.argv[1]), sys.argv[2:])
print(f"TLS certificate {cert}")
PY
fp=$(openssl x509 -in "$STATE/ui/tls/cert.pem" -noout -fingerprint -sha256 2>/dev/null | cut -d= -f2 || true)

# 4. SSH host key on the state partition (sshd itself stays disabled until someone enables it).
install -d -m 0700 "$STATE/ssh" "$STATE/ssh/authorized_keys"
[ -f "$STATE/ssh/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N "" -f "$STATE/ssh/ssh_host_ed25519_key"

# 5. Enrolment dropped on the boot partition by a technician (enrol.json: the arguments of
#    `edgeguard sync enrol`). Wiring it to the agent is the next slice; keep a copy for now.
if [ -f /boot/efi/edgeguard/enrol.json ]; then
    install -o edgeguard -g edgeguard -m 0600 /boot/efi/edgeguard/enrol.json "$STATE/enrol-request.json"
    say "enrolment request found on the boot partition (kept in $STATE/enrol-request.json)"
fi

touch "$STATE/.firstboot-done"
addrs=$(ip -brief -4 addr show scope global 2>/dev/null | awk '{print $3}' | cut -d/ -f1 | tr '\n' ' ')
say "ready. Web UI: https://<this box>:443/setup  ${addrs:+(addresses now: $addrs)}"
say "TLS certificate SHA-256 fingerprint: ${fp:-unknown}"
say "the one-time setup token is printed by edgeguard-ui on this console at its start"

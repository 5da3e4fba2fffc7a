#!/bin/bash
# Puts the newest installed kernel and initrd on the ESP, where systemd-boot loads them from.
#
# Why: Debian's kernel packages install into /boot on the root filesystem, but the box boots
# what build.sh copied to the ESP. Without this, a security update of the kernel would leave
# the box booting the old kernel while its modules (nf_tables among them) are removed from
# /lib/modules at the next upgrade: no firewall after a reboot. Called by the kernel postinst
# hook and by initramfs-tools' post-update hook (same script, arguments ignored: it always
# installs the newest kernel in /boot, as build.sh does).
#
# Power-cut safety on FAT: the new files are written under versioned names and synced first;
# only then is the small loader entry replaced (written beside it, then renamed), so at any
# moment the entry names complete files. The entry booted until now is kept as
# "edgeguard-previous.conf" (pick it in the boot menu if the new kernel fails); files that
# neither entry names are removed, so the 96 MiB ESP holds at most two kernels.
#
# Environment (tests): EDGEGUARD_ESP (/boot/efi), EDGEGUARD_BOOT (/boot); the ESP is
# remounted read-write for the update and read-only after, when it is a mount point.
set -euo pipefail

ESP=${EDGEGUARD_ESP:-/boot/efi}
BOOT=${EDGEGUARD_BOOT:-/boot}
ENTRIES=$ESP/loader/entries
CURRENT=$ENTRIES/edgeguard.conf
PREVIOUS=$ENTRIES/edgeguard-previous.conf

log() { echo "edgeguard kernel-to-esp: $*" >&2; }

# Touching the automounted ESP mounts it; only our systemd-boot layout is handled.
if [ ! -f "$CURRENT" ]; then
  log "no $CURRENT (not the amd64 systemd-boot layout): nothing to do"
  exit 0
fi
kernel=$(ls "$BOOT"/vmlinuz-* 2>/dev/null | sort -V | tail -1 || true)
[ -n "$kernel" ] || { log "no kernel in $BOOT"; exit 0; }
version=${kernel##*/vmlinuz-}
initrd=$BOOT/initrd.img-$version
if [ ! -f "$initrd" ]; then
  # The kernel's postinst runs before update-initramfs has made it: its post-update hook
  # calls this script again once the initrd exists.
  log "no $initrd yet: waiting for update-initramfs"
  exit 0
fi

entry_path() { sed -n "s|^$2[[:space:]]\+/||p" "$1" | head -1; }
target_kernel=edgeguard/vmlinuz-$version
target_initrd=edgeguard/initrd.img-$version
if [ "$(entry_path "$CURRENT" linux)" = "$target_kernel" ] \
   && cmp -s "$initrd" "$ESP/$target_initrd"; then
  log "$version is already what the ESP boots"
  exit 0
fi

remounted=no
if mountpoint -q "$ESP"; then
  mount -o remount,rw "$ESP"
  remounted=yes
fi
finish() { sync; if [ "$remounted" = yes ]; then mount -o remount,ro "$ESP" || true; fi; }
trap finish EXIT

# Room first: the previous entry's files go (unless the current entry still uses them).
if [ -f "$PREVIOUS" ]; then
  for key in linux initrd; do
    old=$(entry_path "$PREVIOUS" "$key")
    if [ -n "$old" ] && [ "$old" != "$(entry_path "$CURRENT" "$key")" ]; then
      rm -f "$ESP/$old"
    fi
  done
  rm -f "$PREVIOUS"
fi
cp "$kernel" "$ESP/$target_kernel.tmp"
cp "$initrd" "$ESP/$target_initrd.tmp"
sync
mv -f "$ESP/$target_kernel.tmp" "$ESP/$target_kernel"
mv -f "$ESP/$target_initrd.tmp" "$ESP/$target_initrd"
sync
sed 's/^title\(.*\)$/title\1 (previous kernel)/' "$CURRENT" > "$PREVIOUS"
sed -e "s|^linux[[:space:]].*|linux   /$target_kernel|" \
    -e "s|^initrd[[:space:]].*|initrd  /$target_initrd|" "$CURRENT" > "$CURRENT.tmp"
sync
mv -f "$CURRENT.tmp" "$CURRENT"
log "the ESP now boots $version (the kernel before it stays as the previous entry)"

#!/usr/bin/env bash
# mkinitramfs.sh KERNEL_DIR OUT.cpio
#
# Builds the test guest's initramfs for the kernel package extracted in
# KERNEL_DIR (dpkg-deb -x, then depmod -b): static busybox, vm/init and
# vm/init2, and the modules the guest needs to build its root (virtio PCI, 9p
# over virtio, virtio block + ext4 for the scratch disk, overlayfs) with their
# dependencies, in load order, decompressed (busybox insmod reads no .ko.xz).
set -euo pipefail
[ $# -eq 2 ] || { sed -n 2,8p "$0"; exit 2; }
kdir=$1 out=$2
here=$(cd "$(dirname "$0")" && pwd)
release=$(basename "$(ls -d "$kdir"/lib/modules/*/)")

busybox=/bin/busybox
! ldd "$busybox" >/dev/null 2>&1 || { echo "mkinitramfs: $busybox is not static (apt-get install busybox-static)" >&2; exit 1; }

root=$(mktemp -d "${out}.XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,dev,proc,sys,lower,scratch,newroot,modules}
cp "$busybox" "$root/bin/busybox"
cp "$here/init" "$here/init2" "$root/"
chmod 755 "$root/init"

: > "$root/modules/order"
declare -A loaded=()
for mod in virtio_pci 9pnet_virtio 9p virtio_blk ext4 overlay; do
  # "insmod PATH" lines in dependency order; "builtin NAME" needs nothing.
  deps=$(modprobe --dirname="$kdir" --set-version="$release" --show-depends "$mod") ||
    { echo "mkinitramfs: $release has no module $mod (a -cloud kernel? they lack 9p)" >&2; exit 1; }
  while read -r verb path; do
    [ "$verb" = insmod ] || continue
    name=$(basename "$path"); name=${name%%.ko*}.ko
    [ -z "${loaded[$name]:-}" ] || continue
    loaded[$name]=1
    case $path in
      *.xz) xz -dc "$path" ;;
      *.zst) zstd -qdc "$path" ;;
      *) cat "$path" ;;
    esac > "$root/modules/$name"
    echo "$name" >> "$root/modules/order"
  done <<< "$deps"
done

(cd "$root" && find . | cpio -o -H newc --quiet) > "$out.tmp"
mv "$out.tmp" "$out"

#!/usr/bin/env bash
# extract-btf.sh VMLINUZ OUT
#
# Writes the BTF of an x86 kernel image (bzImage, as Debian ships it in
# /boot/vmlinuz-*) to OUT as raw BTF, without booting it: the compressed
# payload the boot header points to is the kernel ELF, whose .BTF section is
# what the running kernel serves as /sys/kernel/btf/vmlinux (byte for byte).
# Handles xz, zstd and gzip payloads; needs xz-utils, zstd, gzip, binutils.
set -euo pipefail
[ $# -eq 2 ] || { sed -n 2,9p "$0" >&2; exit 2; }
image=$1 out=$2
fail() { echo "extract-btf.sh: $image: $*" >&2; exit 1; }
byte_at() { od -An -tu"$2" -j "$1" -N "$2" "$image" | tr -d ' '; }

[ "$(od -An -c -j 514 -N4 "$image" | tr -d ' ')" = HdrS ] || fail "not a bzImage (no HdrS boot header)"
setup_sects=$(byte_at $((0x1f1)) 1)
[ "$setup_sects" -ne 0 ] || setup_sects=4
payload_start=$(( (setup_sects + 1) * 512 + $(byte_at $((0x248)) 4) ))
payload_bytes=$(byte_at $((0x24c)) 4)
case $(od -An -tx1 -j "$payload_start" -N4 "$image" | tr -d ' \n') in
  fd377a58) decompress=(xz -dc --single-stream) ;;
  28b52ffd) decompress=(zstd -dcq) ;;
  1f8b*) decompress=(gzip -dcq) ;;
  *) fail "payload compression not supported (xz, zstd and gzip are)" ;;
esac

elf=$(mktemp) btf=$(mktemp "$out.XXXXXX")
trap 'rm -f "$elf" "$btf"' EXIT
# The payload ends with the uncompressed size (4 bytes), which the
# decompressors report as trailing garbage: judge by the result instead.
tail -c +$((payload_start + 1)) "$image" | head -c "$payload_bytes" | "${decompress[@]}" > "$elf" 2>/dev/null || true
objcopy -O binary --only-section=.BTF "$elf" "$btf" 2>/dev/null || fail "payload is not an ELF kernel"
[ -s "$btf" ] || fail "kernel has no .BTF section (built without CONFIG_DEBUG_INFO_BTF)"
chmod 444 "$btf"
mv "$btf" "$out"

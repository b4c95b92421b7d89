#!/usr/bin/env bash
# Compile BPF C programs into CO-RE objects.
#
#   ./build.sh                      every bpf/*.bpf.c -> src/memwatcher/bpf/*.bpf.o
#                                   (plus the shared record headers bpf/*.h)
#   ./build.sh OUT_DIR SRC.bpf.c..  the given sources -> OUT_DIR (used for test objects)
#
# Objects keep their BTF (.BTF/.BTF.ext: CO-RE needs them) and lose DWARF.
# An object is rebuilt when its source, any header under bpf/ or vmlinux/,
# or this script is newer than it; warnings are errors.
set -euo pipefail

top=$(cd "$(dirname "$0")" && pwd)
CLANG=${CLANG:-clang}
STRIP=${LLVM_STRIP:-llvm-strip}
arch=$(uname -m)
case "$arch" in
  x86_64) target_arch=x86 ;;
  aarch64) target_arch=arm64 ;;
  *) echo "build.sh: unsupported architecture $arch" >&2; exit 1 ;;
esac

if [ $# -ge 1 ]; then
  out_dir=$1; shift
  sources=("$@")
  ship_headers=0
else
  out_dir=$top/src/memwatcher/bpf
  sources=("$top"/bpf/*.bpf.c)
  ship_headers=1
fi
mkdir -p "$out_dir"

for tool in "$CLANG" "$STRIP"; do
  command -v "$tool" >/dev/null || { echo "build.sh: $tool not found (apt-get install clang llvm)" >&2; exit 1; }
done

# The newest dependency shared by every object.
newest_dep=$(ls -t "$top"/bpf/*.h "$top"/vmlinux/vmlinux.h "$top"/build.sh 2>/dev/null | head -1 || true)

for src in "${sources[@]}"; do
  [ -e "$src" ] || continue
  name=$(basename "$src" .bpf.c)
  obj=$out_dir/$name.bpf.o
  src_dir=$(dirname "$src")
  if [ -e "$obj" ] && [ "$obj" -nt "$src" ] && [ "$obj" -nt "$newest_dep" ] \
     && ! find "$src_dir" -maxdepth 1 -name '*.h' -newer "$obj" | grep -q .; then
    continue
  fi
  echo "  BPF     $name.bpf.o"
  # A private temporary name: concurrent builds must not collide.
  tmp=$(mktemp "$out_dir/.$name.XXXXXX.tmp")
  trap 'rm -f "$tmp"' EXIT
  "$CLANG" -O2 -g -target bpf -D__TARGET_ARCH_$target_arch \
    -Wall -Werror -Wno-unused-function \
    -I"$top/vmlinux" -I"$top/bpf" -I"$src_dir" \
    -c "$src" -o "$tmp"
  "$STRIP" -g "$tmp"
  chmod 644 "$tmp"
  mv "$tmp" "$obj"
done

# Record headers are read at run time to derive numpy dtypes; ship them next
# to the objects (bpf/*.bpf.h are BPF-only helpers and stay behind).
if [ "$ship_headers" = 1 ]; then
  for hdr in "$top"/bpf/*.h; do
    case "$hdr" in *.bpf.h) continue ;; esac
    [ -e "$hdr" ] && cp -p "$hdr" "$out_dir/"
  done
fi
exit 0

#!/usr/bin/env bash
# Install everything memwatcher needs on Debian 12 / Ubuntu (as root), build it
# and install it into ./.venv. Idempotent: a second run only refreshes the package.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

apt_packages=(
  clang llvm            # BPF C -> CO-RE objects (clang -target bpf, llvm-strip)
  libbpf-dev libelf-dev zlib1g-dev   # the cffi binding links libbpf
  bpftool               # regenerating vmlinux/vmlinux.h
  libdw1                # symbolization back end (elfutils libdwfl)
  libc6-dbg             # debug info for libc frames
  gcc make python3-dev python3-venv  # the cffi extension, test C programs
  g++ binutils          # the C++ demangling test program; c++filt, addr2line, nm: its oracles
  rustc                 # the Rust demangling test program (legacy and v0 mangling)
  util-linux            # setpriv, unshare: privilege and wheel tests
  elfutils              # eu-addr2line: symbolization agreement test
  prometheus            # a real server scrapes the exporter in its test
  golang-go             # go tool pprof: a real reader of memleak's pprof output
  man-db systemd        # man and systemd-analyze verify: the installed man page and the unit file
  chromium fonts-liberation  # headless browser for the HTML report's tests (the fonts are only recommended)
)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip setuptools  # setuptools >= 77 for --no-build-isolation rebuilds
.venv/bin/python -m pip install -q '.[test]'
echo "memwatcher installed in $top/.venv"; .venv/bin/memwatcher --version

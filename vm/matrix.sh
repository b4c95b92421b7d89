#!/usr/bin/env bash
# matrix.sh [PYTEST_ARGS...]          (`make test-kernels`)
#
# Checks the BPF objects against the BTF of every kernel of vm/kernels.txt on
# the host (`memwatcher doctor --btf`, no boot), then boots each (vm/boot.sh;
# VM_JOBS at once) and runs inside it `memwatcher doctor` and pytest
# (vm/guest-tests.sh) from this repository and its .venv, then prints one table
# per kernel and the tests x kernels matrix (vm/summary.py). Exits non-zero if
# any kernel fails.
#
# PYTEST_ARGS default to every tests/test_*.py but test_wheel.py (it needs
# PyPI, which guests cannot reach, and does not depend on the kernel); e.g.
#   vm/matrix.sh tests/test_pr.py -k reclaim
# Environment: KERNELS="pkg..." overrides vm/kernels.txt; VM_JOBS (nproc:
# guests run at once), VM_MEM (3G), VM_CPUS (2), VM_TIMEOUT_S (1500, per
# kernel); VM_CACHE (vm/cache) holds the kernel packages, initramfs images,
# btf/<release>.btf and results/<kernel package>/.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
cd "$top"
[ -x .venv/bin/memwatcher ] || { echo "matrix.sh: no $top/.venv: run ./scripts/install.sh first" >&2; exit 1; }

read -r -a kernels <<< "${KERNELS:-$(sed 's/#.*//' "$here/kernels.txt" | xargs)}"
[ ${#kernels[@]} -gt 0 ] || { echo "matrix.sh: no kernels" >&2; exit 1; }
if [ $# -eq 0 ]; then
  for f in tests/test_*.py; do [ "$f" = tests/test_wheel.py ] || set -- "$@" "$f"; done
fi
cache=${VM_CACHE:-$here/cache}
results=$cache/results
mkdir -p "$results" "$cache/btf"

# Build the BPF objects here: a stale object would otherwise be rebuilt in
# every guest, under emulation.
./build.sh

# Download kernels and build initramfs images one at a time (apt's lock).
for pkg in "${kernels[@]}"; do "$here/boot.sh" -n "$pkg"; done

# One guest keeps one host CPU busy (single-threaded TCG): run up to nproc at once.
run_kernel() {
  local pkg=$1 run=$results/$1 start_s rc
  rm -rf "$run"
  mkdir -p "$run"
  # First the CO-RE check against this kernel's BTF, on the host: no boot needed.
  local vmlinuz
  vmlinuz=$(ls "$cache/kernels/$pkg"/boot/vmlinuz-*)
  set +e
  .venv/bin/memwatcher doctor --btf "$cache/btf/${vmlinuz##*/vmlinuz-}.btf" --output json > "$run/corecheck.json" 2>&1
  echo $? > "$run/corecheck.rc"
  set -e
  start_s=$(date +%s)
  set +e
  "$here/boot.sh" -m "${VM_MEM:-3G}" -c "${VM_CPUS:-2}" -t "${VM_TIMEOUT_S:-1500}" -o "$run" "$pkg" -- \
    "$here/guest-tests.sh" "$run" -q -m "not slow" -rfE "${pytest_args[@]}" > "$run/boot.log" 2>&1
  rc=$?
  set -e
  echo $rc > "$run/boot.rc"
  echo $(($(date +%s) - start_s)) > "$run/wall.seconds"
  echo "matrix.sh: $pkg done in $(cat "$run/wall.seconds") s (exit $rc)"
}
pytest_args=("$@")
jobs=${VM_JOBS:-$(nproc)}
for pkg in "${kernels[@]}"; do
  while [ "$(jobs -pr | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  echo "matrix.sh: booting $pkg"
  run_kernel "$pkg" &
done
wait

# Each guest's whole output (doctor, pytest and its failure details), then the tables.
for pkg in "${kernels[@]}"; do
  echo; echo "======== $pkg: guest output ========"
  cat "$results/$pkg/boot.log"
done
echo
exec .venv/bin/python "$here/summary.py" "$results" "${kernels[@]}"

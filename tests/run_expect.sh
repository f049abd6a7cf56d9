#!/usr/bin/env bash
# run_expect.sh EXIT_CODE REGEX [REGEX...] -- COMMAND...
# Runs COMMAND and passes only when it exits with EXIT_CODE and its combined output matches every
# extended REGEX. Prints the output on failure.
set -u
expected_code=$1
shift
patterns=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  patterns+=("$1")
  shift
done
shift
output=$("$@" 2>&1)
code=$?
ok=1
if [ "$code" -ne "$expected_code" ]; then
  echo "expected exit code $expected_code, got $code"
  ok=0
fi
for p in "${patterns[@]}"; do
  if ! grep -Eq -- "$p" <<<"$output"; then
    echo "output does not match: $p"
    ok=0
  fi
done
if [ $ok -eq 0 ]; then
  echo "---- output of: $*"
  echo "$output"
  exit 1
fi
echo "ok: exit $code, ${#patterns[@]} pattern(s) matched"

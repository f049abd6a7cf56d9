#!/usr/bin/env bash
# End-to-end checks of the ptrain command line: cli_test.sh PTRAIN SOURCE_DIR MPIRUN
source "$(dirname "$0")/common.sh"
ptrain=$1
src=$2
mpirun="$3 --oversubscribe --allow-run-as-root"

# ptrain env on 3 ranks: one line per rank, in rank order, as each rank sees itself.
out=$($mpirun -np 3 "$ptrain" env --set output_dir="$work/env" 2>"$work/env.err")
code=$?
[ $code -eq 0 ] || fail "ptrain env exited $code: $(cat "$work/env.err")"
for r in 0 1 2; do
  line=$(sed -n "$((r + 1))p" <<<"$out")
  grep -Eq "^rank=$r local_rank=$r world=3 local_world=3 host=\S+ launcher=mpirun backend=mpi threads=[0-9]+$" <<<"$line" ||
    fail "env line $r is '$line'"
  [ -f "$work/env/logs/rank-$r.log" ] || fail "no log file for rank $r"
done
[ "$(wc -l <<<"$out")" -eq 3 ] || fail "expected 3 env lines, got: $out"

# The resolved config written by the job carries the same hash validate-config computes.
hash_written=$(sed -n 's/^# ptrain resolved config; hash \([0-9a-f]\{16\}\);.*/\1/p' "$work/env/config.resolved.yaml")
printf 'output_dir: %s\n' "$work/env" >"$work/same.yaml"
hash_validated=$("$ptrain" validate-config "$work/same.yaml" | sed -n 's/.*config hash \([0-9a-f]\{16\}\).*/\1/p')
[ -n "$hash_written" ] && [ "$hash_written" = "$hash_validated" ] ||
  fail "hash in config.resolved.yaml ($hash_written) != validate-config hash ($hash_validated)"

# Every example config validates.
for f in "$src"/examples/*.yaml; do
  "$ptrain" validate-config "$f" >/dev/null 2>"$work/err" || fail "$f does not validate: $(cat "$work/err")"
done

# Bad input: exit 2, and the message names the file, line and key.
printf 'micro_batch_size: 2\nlearning_rat: 0.1\n' >"$work/bad.yaml"
err=$("$ptrain" validate-config "$work/bad.yaml" 2>&1)
code=$?
[ $code -eq 2 ] || fail "bad config exited $code, expected 2"
grep -q "bad.yaml:2:1: unknown key 'learning_rat'; did you mean 'learning_rate'?" <<<"$err" ||
  fail "bad config message: $err"

# The same error stops a 3-rank job with exit code 2 instead of hanging it.
err=$($mpirun -np 3 "$ptrain" env --config "$work/bad.yaml" --set output_dir="$work/bad" 2>&1)
code=$?
[ $code -eq 2 ] || fail "3-rank job with a bad config exited $code, expected 2"

# No subcommand is a usage error.
"$ptrain" >/dev/null 2>&1
code=$?
[ $code -eq 2 ] || fail "ptrain without a subcommand exited $code, expected 2"

# `ptrain --config job.yaml` alone means train (ARCHITECTURE.md); until train exists it is a usage
# error that says so.
err=$("$ptrain" --config "$work/same.yaml" 2>&1)
code=$?
[ $code -eq 2 ] || fail "ptrain --config without a subcommand exited $code, expected 2"
grep -q "A subcommand is required: .*train" <<<"$err" || fail "ptrain --config message: $err"

# The top-level --config is the default command's: beside a named subcommand it is refused.
err=$("$ptrain" --config "$work/same.yaml" env 2>&1)
code=$?
[ $code -eq 2 ] || fail "ptrain --config FILE env exited $code, expected 2"
grep -q "go after the subcommand" <<<"$err" || fail "ptrain --config FILE env message: $err"

# A damaged prepared dataset reaching a user is bad input (CorruptData): exit 2, naming the damage.
mkdir -p "$work/damaged"
printf '{"format": "ptrain-prepared-data", "version": 0}\n' >"$work/damaged/meta.json"
err=$("$ptrain" inspect "$work/damaged" 2>&1)
code=$?
[ $code -eq 2 ] || fail "inspect of a damaged prepared dataset exited $code, expected 2"
grep -q "ptrain: error: prepared dataset '$work/damaged' is damaged: format version 0" <<<"$err" ||
  fail "inspect of a damaged prepared dataset: $err"

# ptrain-bench SUITE --json (ARCHITECTURE.md, "Benchmark output"): one JSON object per line.
bench="$(dirname "$ptrain")/ptrain-bench"
out=$($mpirun -np 2 "$bench" comm --max-bytes 1024 --seconds 0.01 --json 2>"$work/bench.err")
code=$?
[ $code -eq 0 ] || fail "ptrain-bench comm --json exited $code: $(cat "$work/bench.err")"
[ -n "$out" ] && ! grep -qv '^{"algbw":.*"suite":"comm".*}$' <<<"$out" ||
  fail "ptrain-bench comm --json lines: $out"

# docs/config.md is what the schema generates.
"$ptrain" config-docs >"$work/config.md" || fail "config-docs failed"
diff -u "$src/docs/config.md" "$work/config.md" >"$work/docs.diff" ||
  fail "docs/config.md is stale; regenerate with: build/bin/ptrain config-docs -o docs/config.md
$(head -20 "$work/docs.diff")"

finish

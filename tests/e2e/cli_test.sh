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
  grep -Eq "^rank=$r local_rank=$r world=3 local_world=3 host=\S+ launcher=mpirun device=cpu backend=mpi threads=[0-9]+$" <<<"$line" ||
    fail "env line $r is '$line'"
done
[ "$(wc -l <<<"$out")" -eq 3 ] || fail "expected 3 env lines, got: $out"
# env only reads: no log files and no resolved config under output_dir (issue 11). That a job which
# records its config writes validate-config's hash: tests/unit/launcher/command_line_test.cpp.
[ ! -e "$work/env" ] || fail "env wrote under output_dir: $(find "$work/env")"
printf 'output_dir: %s\n' "$work/env" >"$work/same.yaml"
hash_validated=$("$ptrain" validate-config "$work/same.yaml" | sed -n 's/.*config hash \([0-9a-f]\{16\}\).*/\1/p')
[ -n "$hash_validated" ] || fail "validate-config printed no config hash"

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

# `ptrain --config job.yaml` alone means train (ARCHITECTURE.md): this config names no base_model,
# which train (and only train) refuses.
err=$("$ptrain" --config "$work/same.yaml" 2>&1)
code=$?
[ $code -eq 2 ] || fail "ptrain --config without a subcommand exited $code, expected 2"
grep -q "'base_model' is required for training" <<<"$err" || fail "ptrain --config message: $err"

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

# ---------------------------------------------------------------- bad input from a hostile user
"$ptrain" init-model --preset tiny --out "$work/tiny" >/dev/null || fail "init-model"
printf '{"input_ids": [1, 2, 3]}\n' >"$work/ok.jsonl"
mkdir -p "$work/cwd"

# An empty path is a usage error on every path flag of every command, naming the flag, and nothing
# is written (init-model --out '' wrote config.json into / and the weights into the cwd).
root_config=$([ -e /config.json ] && echo present || echo absent)
while read -r flag args; do
  eval "set -- $args"
  err=$(cd "$work/cwd" && "$ptrain" "$@" 2>&1)
  code=$?
  [ $code -eq 2 ] && grep -q -- "$flag: expected a path, got an empty string" <<<"$err" ||
    fail "ptrain $args: exit $code, expected 2 naming $flag: $err"
done <<PATHS
--out init-model --preset tiny --out ''
dir inspect ''
config validate-config ''
--out config-docs -o ''
--model tokenize --model '' hi
--model generate --model '' --prompt hi
--adapter generate --model $work/tiny --adapter '' --prompt hi
--adapter export --model $work/tiny --adapter '' --format peft --out $work/x
--out export --model $work/tiny --adapter $work/tiny --format peft --out ''
--model eval --model '' --data $work/ok.jsonl
--data eval --model $work/tiny --data ''
--config eval --model $work/tiny --data $work/ok.jsonl --config ''
--config env --config ''
--config preprocess --config ''
PATHS
[ -z "$(ls -A "$work/cwd")" ] || fail "an empty path wrote into the cwd: $(ls -A "$work/cwd")"
[ "$root_config" = present ] || [ ! -e /config.json ] || fail "an empty path wrote /config.json"

# Commands that do not train write nothing under output_dir: pointed at an earlier job's, a
# failing eval, a good eval and env leave its resolved config and logs as they were.
mkdir -p "$work/earlier/logs"
printf 'sentinel\n' >"$work/earlier/config.resolved.yaml"
printf 'old log\n' >"$work/earlier/logs/rank-0.log"
record() { find "$work/earlier" -exec ls -ld --time-style=+%s.%N {} + | md5sum; }
before=$(record)
"$ptrain" eval --model "$work/missing" --data "$work/ok.jsonl" --set output_dir="$work/earlier" >/dev/null 2>&1 &&
  fail "eval of a missing model succeeded"
"$ptrain" eval --model "$work/tiny" --data "$work/ok.jsonl" --set output_dir="$work/earlier" >/dev/null 2>&1 ||
  fail "eval into an earlier job's output_dir"
$mpirun -np 2 "$ptrain" env --set output_dir="$work/earlier" >/dev/null 2>&1 || fail "env"
[ "$(record)" = "$before" ] || fail "an earlier job's output_dir changed: $(find "$work/earlier" -newer "$work/ok.jsonl")"
# Without a config (output_dir: the defaults' ./outputs) eval and env create nothing in the cwd.
(cd "$work/cwd" && "$ptrain" eval --model "$work/tiny" --data "$work/ok.jsonl" >/dev/null 2>&1) ||
  fail "eval without a config"
(cd "$work/cwd" && $mpirun -np 2 "$ptrain" env >/dev/null 2>&1) || fail "env without a config"
[ -z "$(ls -A "$work/cwd")" ] || fail "eval/env wrote into the cwd: $(ls -A "$work/cwd")"

# ---------------------------------------------------------------- the model from the config
# eval, generate and export take the model from the config's base_model when --model is absent, and
# its load_in_4bit when --load-in-4bit is: the same figures as the flags give.
python3 - "$work/ids.jsonl" "$work/adapter" <<'PY'
import json, os, random, struct, sys
random.seed(4)
with open(sys.argv[1], "w") as f:
    for n in [12, 30, 7, 20]:
        f.write(json.dumps({"input_ids": [1] + [random.randrange(3, 259) for _ in range(n)]}) + "\n")
# A PEFT adapter (r=2 on q_proj of both layers), written from the formats' definitions.
out = sys.argv[2]; os.makedirs(out)
header, blobs, offset = {}, [], 0
for layer in range(2):
    for part, shape in (("lora_A", [2, 64]), ("lora_B", [64, 2])):
        n = shape[0] * shape[1]
        blob = struct.pack(f"<{n}f", *[random.gauss(0, 0.3) for _ in range(n)])
        header[f"base_model.model.model.layers.{layer}.self_attn.q_proj.{part}.weight"] = {
            "dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob); offset += len(blob)
text = json.dumps(header).encode()
text += b" " * (-len(text) % 8)
with open(os.path.join(out, "adapter_model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
json.dump({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 2, "lora_alpha": 4,
           "lora_dropout": 0.0, "target_modules": ["q_proj"], "bias": "none"},
          open(os.path.join(out, "adapter_config.json"), "w"))
PY
printf 'base_model: %s\noutput_dir: %s\n' "$work/tiny" "$work/base-out" >"$work/base.yaml"
printf 'base_model: %s\nload_in_4bit: true\noutput_dir: %s\n' "$work/tiny" "$work/base-out" >"$work/base4.yaml"
ev() { "$ptrain" eval --data "$work/ids.jsonl" --dtype fp32 "$@" 2>"$work/ev.err"; }
flag=$(ev --model "$work/tiny") || fail "eval --model: $(cat "$work/ev.err")"
config=$(ev --config "$work/base.yaml") || fail "eval --config (base_model): $(cat "$work/ev.err")"
flag4=$(ev --model "$work/tiny" --load-in-4bit) || fail "eval --load-in-4bit: $(cat "$work/ev.err")"
config4=$(ev --config "$work/base4.yaml") || fail "eval --config (load_in_4bit): $(cat "$work/ev.err")"
off4=$(ev --config "$work/base4.yaml" --load-in-4bit=false) || fail "eval --load-in-4bit=false: $(cat "$work/ev.err")"
adapter=$(ev --config "$work/base4.yaml" --adapter "$work/adapter") || fail "eval --config --adapter: $(cat "$work/ev.err")"
python3 - "$work/tiny" "$flag" "$config" "$flag4" "$config4" "$off4" "$adapter" <<'PY' ||
import json, sys
tiny = sys.argv[1]
flag, config, flag4, config4, off4, adapter = (json.loads(x) for x in sys.argv[2:])
def same(a, b):
    return a["tokens"] == b["tokens"] and a["loss"] == b["loss"] and a["load_in_4bit"] == b["load_in_4bit"]
assert config["model"] == tiny and same(flag, config), ("base_model", flag, config)
assert config4["load_in_4bit"] and same(flag4, config4), ("load_in_4bit", flag4, config4)
assert flag4["loss"] != flag["loss"], ("NF4 changed nothing", flag, flag4)
assert not off4["load_in_4bit"] and same(flag, off4), ("--load-in-4bit=false", flag, off4)
assert adapter["load_in_4bit"] and adapter["loss"] != config4["loss"], ("adapter", config4, adapter)
PY
  fail "eval with the model from the config: $flag / $config / $flag4 / $config4 / $off4 / $adapter"
gen() { "$ptrain" generate --prompt-ids 1,107,108 --max-new-tokens 8 --dtype fp32 --temperature 0 --json "$@" 2>"$work/ev.err"; }
flag=$(gen --model "$work/tiny") || fail "generate --model: $(cat "$work/ev.err")"
config=$(gen --config "$work/base.yaml") || fail "generate --config (base_model): $(cat "$work/ev.err")"
python3 -c 'import json, sys; a, b = (json.loads(x) for x in sys.argv[1:]); assert a["ids"] == b["ids"]' \
  "$flag" "$config" 2>/dev/null || fail "generate with the model from the config: $flag / $config"
"$ptrain" export --model "$work/tiny" --adapter "$work/adapter" --format merged --out "$work/exp-flag" >/dev/null 2>"$work/ev.err" &&
  "$ptrain" export --config "$work/base4.yaml" --load-in-4bit=false --adapter "$work/adapter" --format merged --out "$work/exp-config" >/dev/null 2>"$work/ev.err" &&
  diff -r "$work/exp-flag" "$work/exp-config" >/dev/null ||
  fail "export with the model from the config: $(cat "$work/ev.err")"

# Neither --model nor a base_model: exit 2, naming both, and nothing written.
mkdir -p "$work/bare"
while read -r config args; do
  eval "set -- $args"
  for c in "" "--config $config"; do
    err=$(cd "$work/bare" && "$ptrain" "$@" $c 2>&1)
    code=$?
    [ $code -eq 2 ] && grep -q -- "give --model DIR, or --config FILE whose base_model" <<<"$err" ||
      fail "ptrain $args $c: exit $code, expected 2 naming --model and base_model: $err"
  done
done <<ARGS
$work/same.yaml eval --data $work/ids.jsonl
$work/same.yaml generate --prompt-ids 1,2
$work/same.yaml export --adapter $work/adapter --format peft --out $work/never
ARGS
grep -q "'$work/same.yaml' sets no base_model" <<<"$err" || fail "the config without base_model is not named: $err"
[ ! -e "$work/never" ] || fail "export without a model left --out behind"

# Without --config (or with one that sets no output_dir), no command that only reads creates the
# defaults' ./outputs, or anything else, in the cwd.
printf 'base_model: %s\n' "$work/tiny" >"$work/no-output-dir.yaml"
(
  cd "$work/bare" || exit 1
  "$ptrain" init-model --preset tiny --out "$work/bare-model" >/dev/null &&
    "$ptrain" validate-config "$work/no-output-dir.yaml" >/dev/null &&
    "$ptrain" eval --model "$work/tiny" --data "$work/ids.jsonl" >/dev/null &&
    "$ptrain" eval --config "$work/no-output-dir.yaml" --data "$work/ids.jsonl" >/dev/null &&
    "$ptrain" generate --model "$work/tiny" --prompt-ids 1,2 --max-new-tokens 2 >/dev/null &&
    "$ptrain" generate --config "$work/no-output-dir.yaml" --prompt hi --max-new-tokens 2 >/dev/null &&
    "$ptrain" tokenize --model "$work/tiny" hi >/dev/null &&
    "$ptrain" inspect "$work/tiny" >/dev/null &&
    "$ptrain" export --model "$work/tiny" --adapter "$work/adapter" --format peft --out "$work/bare-peft" >/dev/null
) 2>"$work/bare.err" || fail "a command in a bare cwd failed: $(cat "$work/bare.err")"
[ -z "$(ls -A "$work/bare")" ] || fail "a command that only reads wrote into the cwd: $(ls -A "$work/bare")"

# An unknown command is named, with the commands listed (not "a subcommand is required").
err=$("$ptrain" trian 2>&1)
code=$?
[ $code -eq 2 ] && grep -q "unknown command 'trian'.*; the commands are: .*env, validate-config, " <<<"$err" ||
  fail "ptrain trian: exit $code: $err"
err=$("$ptrain" evl --model "$work/tiny" 2>&1)
[ $? -eq 2 ] && grep -q "unknown command 'evl'; did you mean 'eval'?" <<<"$err" || fail "ptrain evl: $err"

# --version: version, git commit, libtorch, MPI, NCCL and CUDA.
out=$("$ptrain" --version 2>&1)
code=$?
[ $code -eq 0 ] || fail "ptrain --version exited $code: $out"
for pattern in '^ptrain [0-9]+\.[0-9]+\.[0-9]+$' '^git commit: ([0-9a-f]{12}(-dirty)?|unknown)$' \
  '^libtorch: [0-9]+\.' '^MPI: .+' '^NCCL: .+' '^CUDA: (found|not found)'; do
  grep -Eq "$pattern" <<<"$out" || fail "ptrain --version has no line $pattern: $out"
done

# --log-level on every command (checked), and --help shows the defaults.
for c in env validate-config config-docs init-model inspect preprocess eval generate tokenize export; do
  "$ptrain" "$c" --help 2>&1 | grep -q -- "--log-level" || fail "$c has no --log-level"
done
"$ptrain" tokenize --log-level debug --model "$work/tiny" hi >/dev/null || fail "tokenize --log-level debug"
err=$("$ptrain" tokenize --log-level loud --model "$work/tiny" hi 2>&1)
[ $? -eq 2 ] && grep -q "unknown log level 'loud'" <<<"$err" || fail "--log-level loud: $err"
"$ptrain" eval --help | grep -Eq -- '--seq-len INT=0 ' || fail "eval --help shows no defaults: $("$ptrain" eval --help)"
"$ptrain" generate --help | grep -Eq -- '--max-new-tokens INT=128 ' || fail "generate --help shows no defaults"

# One user error at -np 4, not one per rank: a missing model (every rank fails after MPI starts),
# and a usage error (before MPI starts).
err=$($mpirun -np 4 "$ptrain" eval --model /nonexistent 2>&1)
code=$?
[ $code -eq 2 ] || fail "eval of a missing model at -np 4 exited $code: $err"
[ "$(grep -c '^ptrain: ' <<<"$err")" -eq 1 ] || fail "expected one error line at -np 4: $err"
[ "$(grep -c 'more processes have sent help message' <<<"$err")" -eq 0 ] ||
  fail "several ranks called MPI_Abort: $err"
err=$($mpirun -np 4 "$ptrain" eval --model "$work/tiny" --rows 0 2>&1)
code=$?
[ $code -eq 2 ] || fail "eval --rows 0 at -np 4 exited $code: $err"
[ "$(grep -c '^ptrain: ' <<<"$err")" -eq 1 ] && grep -q -- "--rows: expected >= 1, got 0" <<<"$err" ||
  fail "expected one usage error line at -np 4: $err"

# The docs link only to files inside the repository, and their mpirun examples work as root.
python3 - "$src" <<'PY' || fail "docs link outside the repository or to a missing file"
import pathlib, re, sys
root = pathlib.Path(sys.argv[1]).resolve()
bad = []
for md in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
    for target in re.findall(r"\]\(([^)\s]+)\)", md.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (md.parent / target.split("#")[0]).resolve()
        if not (path == root or root in path.parents) or not path.exists():
            bad.append(f"{md.relative_to(root)}: {target}")
print("\n".join(bad))
sys.exit(1 if bad else 0)
PY
for doc in docs/usage.md docs/communicator.md; do
  missing=$(grep -n 'mpirun --oversubscribe' "$src/$doc" | grep -v -- '--allow-run-as-root')
  [ -z "$missing" ] || fail "$doc: mpirun examples without --allow-run-as-root: $missing"
done

finish

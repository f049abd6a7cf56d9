#!/usr/bin/env bash
# End-to-end checks of the model commands: model_test.sh PTRAIN MPIRUN
source "$(dirname "$0")/common.sh"
ptrain=$1
mpirun="$2 --oversubscribe --allow-run-as-root"

"$ptrain" init-model --preset tiny --out "$work/tiny" --dtype fp32 --seed 3 >/dev/null || fail "init-model"
"$ptrain" inspect "$work/tiny" | grep -q "status: OK" || fail "inspect of a fresh model"

# Pre-tokenized data: 9 samples of 5..40 tokens (some longer than --seq-len 16, so windowed).
python3 - "$work/data.jsonl" <<'PY'
import json, random, sys
random.seed(1)
with open(sys.argv[1], "w") as f:
    for n in [5, 40, 17, 9, 33, 16, 2, 28, 11]:
        f.write(json.dumps({"input_ids": [random.randrange(259) for _ in range(n)]}) + "\n")
PY

# The 3-rank evaluation must agree with the 1-rank one (the reference): same tokens, same loss.
one=$($mpirun -np 1 "$ptrain" eval --model "$work/tiny" --data "$work/data.jsonl" --seq-len 16 --dtype fp32 --set output_dir="$work/out1" 2>"$work/err1")
three=$($mpirun -np 3 "$ptrain" eval --model "$work/tiny" --data "$work/data.jsonl" --seq-len 16 --rows 2 --dtype fp32 --set output_dir="$work/out3" 2>"$work/err3")
python3 - "$one" "$three" <<'PY' || fail "eval np1 vs np3: $one / $three $(cat "$work/err1" "$work/err3")"
import json, math, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
# 161 tokens in 15 windows of <= 16 tokens; each window has no target for its last token
assert a["tokens"] == b["tokens"] == 146, (a["tokens"], b["tokens"])
assert abs(a["loss"] - b["loss"]) <= 1e-5 * a["loss"], (a["loss"], b["loss"])
assert abs(a["loss"] - math.log(259)) < 0.5, a["loss"]  # a random model is near uniform
assert b["world"] == 3
PY

# Bad data names the file and line, and exits 2 on every rank count.
printf '{"input_ids": [1, 2, 3]}\n{"input_ids": [1, "x"]}\n' >"$work/bad.jsonl"
err=$($mpirun -np 2 "$ptrain" eval --model "$work/tiny" --data "$work/bad.jsonl" --set output_dir="$work/outb" 2>&1)
code=$?
[ $code -eq 2 ] || fail "bad data exited $code, expected 2"
grep -q "bad.jsonl:2: 'input_ids' holds a non-integer" <<<"$err" || fail "bad data message: $err"

# --seq-len past the model's context (2048) or past anything allocatable is a usage error naming
# the flag and the limit, not a run over untrained positions or a libtorch backtrace (exit 3).
for seq in 4096 4000000000000; do
  err=$("$ptrain" eval --model "$work/tiny" --data "$work/data.jsonl" --seq-len $seq --set output_dir="$work/outs" 2>&1)
  code=$?
  [ $code -eq 2 ] && grep -q -- "--seq-len) $seq exceeds the model's context of 2048" <<<"$err" ||
    fail "eval --seq-len $seq exited $code, expected 2 naming the limit: $err"
done

# config.json sizes are bounded, and checked against the weights' headers before anything is
# allocated: each command exits 2 naming config.json and the key (these ate memory until killed,
# or tried a 256 TB allocation and printed a backtrace).
hostile() {  # hostile NAME KEY VALUE: a copy of the tiny model with config.json KEY = VALUE
  cp -r "$work/tiny" "$work/$1"
  python3 - "$work/$1/config.json" "$2" "$3" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); c[sys.argv[2]] = int(sys.argv[3])
json.dump(c, open(sys.argv[1], "w"))
PY
}
hostile layers num_hidden_layers 1000000000
hostile vocab vocab_size 1000000000000
hidden=$((1 << 40))
hostile hidden hidden_size $hidden
hostile wide intermediate_size 100000
while read -r key dir args; do
  eval "set -- $args"
  err=$(timeout 60 "$ptrain" "$@" 2>&1)
  code=$?
  [ $code -eq 2 ] && grep -q "$work/$dir/config.json" <<<"$err" && grep -q "'$key'\|$key" <<<"$err" ||
    fail "ptrain $args: exit $code, expected 2 naming config.json and $key: $err"
done <<RUNS
num_hidden_layers layers inspect $work/layers
num_hidden_layers layers eval --model $work/layers --data $work/data.jsonl --seq-len 16 --set output_dir=$work/outh
vocab_size vocab eval --model $work/vocab --data $work/data.jsonl --seq-len 16 --set output_dir=$work/outh
vocab_size vocab generate --model $work/vocab --prompt-ids 1,2
hidden_size hidden generate --model $work/hidden --prompt-ids 1,2
intermediate_size wide inspect $work/wide
intermediate_size wide generate --model $work/wide --prompt-ids 1,2
RUNS

# A model directory with a tensor the config does not use is rejected by inspect.
cp -r "$work/tiny" "$work/extra"
python3 - "$work/extra/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); c["num_hidden_layers"] = 1
json.dump(c, open(sys.argv[1], "w"))
PY
err=$("$ptrain" inspect "$work/extra" 2>&1)
code=$?
[ $code -eq 2 ] || fail "inspect of a mismatched model exited $code, expected 2"
grep -q "has tensor 'model.layers.1." <<<"$err" || fail "inspect message: $err"

# tokenize and generate on the tiny model (byte tokenizer: "hi" is bos, h+3, i+3).
ids=$("$ptrain" tokenize --model "$work/tiny" --json "hi") || fail "tokenize"
[ "$ids" = "[1,107,108]" ] || fail "tokenize ids: $ids"
by_text=$("$ptrain" generate --model "$work/tiny" --prompt "hi" --max-new-tokens 8 --dtype fp32 --json) || fail "generate --prompt"
by_ids=$("$ptrain" generate --model "$work/tiny" --prompt-ids 1,107,108 --max-new-tokens 8 --dtype fp32 --json) || fail "generate --prompt-ids"
# A model that samples by default (generation_config.json) is greedy again with --temperature 0.
python3 - "$work/tiny/generation_config.json" <<'PY'
import json, sys
g = json.load(open(sys.argv[1])); g.update(do_sample=True, temperature=1.3, top_p=0.9)
json.dump(g, open(sys.argv[1], "w"))
PY
sampled=$("$ptrain" generate --model "$work/tiny" --prompt "hi" --max-new-tokens 8 --dtype fp32 --json --seed 1) || fail "sampled generate"
greedy=$("$ptrain" generate --model "$work/tiny" --prompt "hi" --max-new-tokens 8 --dtype fp32 --json --temperature 0) || fail "generate --temperature 0"
python3 - "$by_text" "$by_ids" "$sampled" "$greedy" <<'PY' || fail "generate output: $by_text / $by_ids / $sampled / $greedy"
import json, sys
t, i, s, g = (json.loads(x) for x in sys.argv[1:])
assert t["prompt_ids"] == [1, 107, 108] and t["prompt"] == "hi"
assert t["ids"] == i["ids"] == g["ids"] and len(t["ids"]) <= 8
assert t["stop_reason"] in ("max_new_tokens", "stop_token")
assert isinstance(t["text"], str) and "text" not in i  # ids-only prompts print no text
assert s["ids"] != g["ids"], "generation_config.json's do_sample was not applied"
PY

# Bad generate input: ids that are not ids, and text for a model without a tokenizer.
err=$("$ptrain" generate --model "$work/tiny" --prompt-ids 1,x 2>&1)
[ $? -eq 2 ] && grep -q "expected comma-separated token ids, got 'x'" <<<"$err" || fail "bad --prompt-ids: $err"
rm "$work/extra/tokenizer_config.json"
err=$("$ptrain" generate --model "$work/extra" --prompt "hi" 2>&1)
[ $? -eq 2 ] && grep -q "no supported tokenizer" <<<"$err" || fail "generate without a tokenizer: $err"

# init-model over an existing model or a dataset: refused without --force, nothing touched; over a
# file: bad input (exit 2), not a runtime failure.
sum_model=$(cat "$work/tiny"/* | md5sum)
err=$("$ptrain" init-model --preset tiny --out "$work/tiny" 2>&1)
[ $? -eq 2 ] && grep -q "init-model: --out '$work/tiny' exists and is not empty (pass --force" <<<"$err" ||
  fail "init-model over a model: $err"
mkdir -p "$work/dataset" && cp "$work/data.jsonl" "$work/dataset/"
err=$("$ptrain" init-model --preset tiny --out "$work/dataset" 2>&1)
[ $? -eq 2 ] && grep -q "exists and is not empty" <<<"$err" || fail "init-model over a dataset: $err"
[ "$(ls "$work/dataset")" = data.jsonl ] || fail "init-model wrote into a dataset: $(ls "$work/dataset")"
[ "$(cat "$work/tiny"/* | md5sum)" = "$sum_model" ] || fail "a refused init-model changed the model"
"$ptrain" init-model --preset tiny --out "$work/tiny2" --dtype fp32 --seed 4 >/dev/null || fail "init-model"
"$ptrain" init-model --preset tiny --out "$work/tiny2" --dtype fp32 --seed 5 --force >/dev/null ||
  fail "init-model --force over a model"
err=$("$ptrain" init-model --preset tiny --out "$work/data.jsonl" 2>&1)
[ $? -eq 2 ] && grep -q "'$work/data.jsonl' is not a directory" <<<"$err" || fail "init-model --out FILE: $err"
err=$("$ptrain" init-model --preset huge --out "$work/new" 2>&1)
[ $? -eq 2 ] && [ ! -e "$work/new" ] || fail "a refused init-model left its --out behind: $err"

# eval with no token to score is an error naming the data, not a loss of 0: an empty file, rows
# of one token, labels all -100; a directory is named as one.
: >"$work/empty.jsonl"
printf '{"input_ids": [5]}\n{"input_ids": [7]}\n' >"$work/short.jsonl"
printf '{"input_ids": [5, 6, 7], "labels": [-100, -100, -100]}\n' >"$work/masked.jsonl"
for data in empty short masked; do
  err=$($mpirun -np 2 "$ptrain" eval --model "$work/tiny" --data "$work/$data.jsonl" 2>&1)
  code=$?
  [ $code -eq 2 ] && grep -q "$work/$data.jsonl" <<<"$err" || fail "eval of $data.jsonl: exit $code: $err"
  [ $data = empty ] || grep -q "eval: '$work/$data.jsonl' has no token to score" <<<"$err" ||
    fail "eval of $data.jsonl: $err"
done
err=$("$ptrain" eval --model "$work/tiny" --data "$work/dataset" 2>&1)
[ $? -eq 2 ] && grep -q -- "--data: '$work/dataset' is a directory; expected a file" <<<"$err" ||
  fail "eval --data DIR: $err"

# NaN weights: refused where the model is read, naming the directory (eval gave "loss": null).
cp -r "$work/tiny2" "$work/nan"
python3 - "$work/nan/model.safetensors" <<'PY'
import json, struct, sys
data = bytearray(open(sys.argv[1], "rb").read())
n = struct.unpack("<Q", data[:8])[0]
header = json.loads(data[8:8 + n])
info = header["model.norm.weight"]
assert info["dtype"] == "F32"
struct.pack_into("<f", data, 8 + n + info["data_offsets"][0], float("nan"))
open(sys.argv[1], "wb").write(data)
PY
for dtype in fp32 bf16; do
  err=$("$ptrain" eval --model "$work/nan" --data "$work/data.jsonl" --dtype $dtype 2>&1)
  code=$?
  [ $code -eq 2 ] && grep -q "model '$work/nan' holds NaN/inf values (tensor 'model.norm.weight')" <<<"$err" ||
    fail "eval of a NaN model ($dtype): exit $code: $err"
done
err=$("$ptrain" generate --model "$work/nan" --prompt-ids 1,2 2>&1)
[ $? -eq 2 ] && grep -q "holds NaN/inf values" <<<"$err" || fail "generate with a NaN model: $err"

# eval --config tokenizes the validation split with the evaluated model's tokenizer, not with the
# config's base_model's: here base_model has another tokenizer (no BOS), which used to change the
# scored tokens silently. One row and one thread are worded as such.
cp -r "$work/tiny" "$work/nobos"
sed -i 's/"add_bos_token": true/"add_bos_token": false/' "$work/nobos/tokenizer_config.json"
python3 - "$work/text.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(20):
        f.write(json.dumps({"text": f"sample {i}: " + "abc " * (i + 1)}) + "\n")
PY
job() {
  printf 'base_model: %s\ndatasets:\n  - path: %s\n    type: completion\nval_set_size: 0.5\nsequence_len: 64\noutput_dir: %s\nthreads: 1\n' \
    "$1" "$work/text.jsonl" "$work/out-$2" >"$work/$2.yaml"
}
job "$work/tiny" own
job "$work/nobos" other
own=$("$ptrain" eval --model "$work/tiny" --config "$work/own.yaml" --seq-len 64 2>"$work/own.err") || fail "eval --config: $(cat "$work/own.err")"
other=$("$ptrain" eval --model "$work/tiny" --config "$work/other.yaml" --seq-len 64 2>"$work/other.err") || fail "eval --config (other base_model): $(cat "$work/other.err")"
python3 - "$own" "$other" <<'PY' || fail "eval --config with another base_model's tokenizer: $own / $other"
import json, sys
own, other = (json.loads(x) for x in sys.argv[1:])
assert own["tokens"] == other["tokens"] and abs(own["loss"] - other["loss"]) < 1e-6, (own, other)
PY
grep -q "tokenizing the validation split with the tokenizer of '$work/tiny'" "$work/other.err" ||
  fail "eval did not say whose tokenizer it used: $(cat "$work/other.err")"
printf '{"text": "one row"}\n' >"$work/one.jsonl"
printf 'base_model: %s\ndatasets:\n  - path: %s\n    type: completion\nsequence_len: 64\noutput_dir: %s\nthreads: 1\n' \
  "$work/tiny" "$work/one.jsonl" "$work/out-one" >"$work/one.yaml"
"$ptrain" preprocess --config "$work/one.yaml" >"$work/one.out" 2>"$work/one.err" || fail "preprocess of one row: $(cat "$work/one.err")"
grep -q "(completion): 1 row, 1 sample (" "$work/one.out" && grep -q "on 1 thread$" "$work/one.err" &&
  ! grep -Eq '\b1 (rows|samples|threads|tokens)\b' "$work/one.out" "$work/one.err" ||
  fail "one row, one thread: $(cat "$work/one.out" "$work/one.err")"

finish

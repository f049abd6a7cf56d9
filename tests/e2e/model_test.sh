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

finish

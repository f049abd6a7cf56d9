#!/usr/bin/env bash
# End-to-end checks of `ptrain train`: train_test.sh PTRAIN MPIEXEC REPO
# QLoRA with packing and accumulation on 3 ranks (odd) and 8 ranks, full training, the
# no-subcommand form, metrics.jsonl, training_curves.svg and `ptrain plot`, and the final
# adapter/model loaded back by eval; a config that cannot train is refused before anything is
# written.
source "$(dirname "$0")/common.sh"
ptrain=$1
mpiexec=${2:-mpirun}
repo=${3:-.}
mpirun=("$mpiexec" --oversubscribe --allow-run-as-root)
cd "$work" || exit 1

"$ptrain" init-model --preset tiny --out model >/dev/null || fail "init-model"
python3 "$repo/examples/make_tiny_data.py" data --rows 301 >/dev/null || fail "make_tiny_data"

cat > qlora.yaml <<'EOF'
base_model: model
load_in_4bit: true
adapter: qlora
lora_r: 8
lora_alpha: 16
lora_dropout: 0.05
lora_target_linear: true
datasets:
  - path: data/alpaca.jsonl
    type: alpaca
val_set_size: 0.1
sequence_len: 256
sample_packing: true
micro_batch_size: 1
gradient_accumulation_steps: 2
max_steps: 6
learning_rate: 0.002
warmup_steps: 1
eval_steps: 3
gradient_checkpointing: true
output_dir: out-qlora
logging:
  console: none
EOF

# ---- QLoRA on 3 ranks
"${mpirun[@]}" -np 3 "$ptrain" train --config qlora.yaml >train.log 2>&1 ||
  { cat train.log; fail "qlora train on 3 ranks"; }
python3 - <<'PY' || fail "qlora metrics.jsonl"
import json
lines = [json.loads(l) for l in open("out-qlora/metrics.jsonl")]
kinds = [l["type"] for l in lines]
assert kinds[0] == "start" and kinds[-1] == "end", kinds
steps = [l for l in lines if l["type"] == "step"]
assert [s["step"] for s in steps] == [1, 2, 3, 4, 5, 6], steps
assert all(s["total_steps"] == 6 and s["tokens"] > 0 and s["applied"] for s in steps), steps
assert steps[0]["lr"] == 0.0 and abs(steps[1]["lr"] - 0.002) < 1e-12, [s["lr"] for s in steps]
evals = [l for l in lines if l["type"] == "eval"]
assert [e["step"] for e in evals] == [0, 3, 6], evals
assert all(e["eval_tokens"] > 0 for e in evals), evals
assert lines[-1]["reason"] == "finished" and lines[-1]["steps"] == 6, lines[-1]
PY
[ -f out-qlora/final/adapter_config.json ] && [ -f out-qlora/final/adapter_model.safetensors ] ||
  fail "qlora: final/ holds no PEFT adapter"
[ -f out-qlora/config.resolved.yaml ] || fail "qlora: no config.resolved.yaml"
# The training curves: drawn at the end of training, redrawn by `ptrain plot` from metrics.jsonl
# (which writes nothing else: no ./outputs, no log files); a run without metrics is exit 2.
svg_parses() { python3 -c 'import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1])' "$1"; }
[ -f out-qlora/training_curves.svg ] && svg_parses out-qlora/training_curves.svg ||
  fail "qlora: no training_curves.svg that parses"
rm -f out-qlora/training_curves.svg
before=$(ls -A . out-qlora)
"$ptrain" plot out-qlora >plot.out 2>plot.log || { cat plot.log; fail "ptrain plot"; }
grep -qx "wrote out-qlora/training_curves.svg" plot.out ||
  fail "ptrain plot does not name the svg it wrote: $(cat plot.out)"
[ -f out-qlora/training_curves.svg ] && svg_parses out-qlora/training_curves.svg ||
  fail "ptrain plot: no training_curves.svg that parses"
[ "$(ls -A . out-qlora | grep -v -x -e training_curves.svg -e plot.out -e plot.log)" = "$before" ] ||
  fail "ptrain plot wrote other files"
mkdir -p no-run && "$ptrain" plot no-run >/dev/null 2>plot-missing.log
[ $? -eq 2 ] && grep -q "no-run/metrics.jsonl" plot-missing.log ||
  fail "plot of a directory without metrics.jsonl: expected exit 2 naming the file"
# The adapter loads back onto the NF4 base and scores the validation split like the last eval.
"$ptrain" eval --model model --load-in-4bit --adapter out-qlora/final --config qlora.yaml \
  --seq-len 256 >eval.json 2>eval.log || { cat eval.log; fail "eval of the trained adapter"; }
python3 - <<'PY' || fail "eval of the adapter differs from the last in-training eval"
import json
last = [json.loads(l) for l in open("out-qlora/metrics.jsonl") if '"eval"' in l][-1]
ev = json.loads(open("eval.json").read().strip().splitlines()[-1])
assert ev["tokens"] == last["eval_tokens"], (ev, last)
assert abs(ev["loss"] - last["eval_loss"]) < 2e-3 * last["eval_loss"], (ev, last)
PY

# ---- the same job at 8 ranks, started with no subcommand (ptrain --config FILE means train)
"${mpirun[@]}" -np 8 "$ptrain" --config qlora.yaml --set output_dir=out-np8 >np8.log 2>&1 ||
  { cat np8.log; fail "ptrain --config (no subcommand) on 8 ranks"; }
[ -f out-np8/final/adapter_model.safetensors ] || fail "np8: no adapter"

# ---- full training of every weight, plain data parallel, one reduction per step
"${mpirun[@]}" -np 2 "$ptrain" train --config qlora.yaml --set load_in_4bit=false \
  --set adapter= --set lora_target_linear=false --set fsdp.sharding=none \
  --set fsdp.reduce_every_micro_batch=false --set max_steps=2 --set eval_steps=0 \
  --set output_dir=out-full >full.log 2>&1 || { cat full.log; fail "full training"; }
[ -f out-full/final/config.json ] && ls out-full/final/*.safetensors >/dev/null 2>&1 ||
  fail "full: final/ holds no model"
"$ptrain" inspect out-full/final >/dev/null 2>&1 || fail "full: the final model does not inspect"

# ---- learnability: the quickstart job (examples/quickstart.yaml, paths relative to its directory)
mkdir -p qs && (cd qs && "$ptrain" init-model --preset tiny --out outputs/quickstart/tiny-llama \
  >/dev/null && python3 "$repo/examples/make_tiny_data.py" outputs/quickstart/data >/dev/null &&
  "${mpirun[@]}" -np 2 "$ptrain" train --config "$repo/examples/quickstart.yaml" >qs.log 2>&1) ||
  { cat qs/qs.log; fail "the quickstart job"; }
python3 - <<'PY' || fail "the quickstart task was not learned"
import json
evals = [json.loads(l) for l in open("qs/outputs/quickstart/run/metrics.jsonl") if '"eval"' in l]
first, last = evals[0], evals[-1]
assert first["step"] == 0 and last["step"] == 100, evals
# Before training the tiny model guesses (~1/259 of answer tokens); a clear margin, not a number.
assert last["eval_accuracy"] > first["eval_accuracy"] + 0.15, (first, last)
assert last["eval_loss"] < first["eval_loss"] - 0.3, (first, last)
PY

# ---- a config that cannot train: exit 2, nothing written
"$ptrain" train --config qlora.yaml --set adapter=lora --set output_dir=out-bad >bad.log 2>&1
[ $? -eq 2 ] || fail "load_in_4bit with adapter lora: expected exit 2"
grep -q "load_in_4bit" bad.log || fail "the refusal does not name load_in_4bit"
[ ! -e out-bad/config.resolved.yaml ] && [ ! -e out-bad/final ] && [ ! -e out-bad/metrics.jsonl ] ||
  fail "a refused job wrote its outputs"

# ---- divergence: a step whose loss or gradient norm is not finite never reaches the weights;
# max_nonfinite_steps of them in a row end the job naming the step. The final norm's weights are
# set to 3e38 (finite, so the model loads): the logits overflow and every step is non-finite.
cp -r model model-huge
python3 - <<'PY' || fail "could not write model-huge"
import json, struct
path = "model-huge/model.safetensors"
data = bytearray(open(path, "rb").read())
n = struct.unpack("<Q", data[:8])[0]
info = json.loads(data[8:8 + n])["model.norm.weight"]
assert info["dtype"] == "BF16", info
begin, end = (8 + n + o for o in info["data_offsets"])
data[begin:end] = b"\x62\x7f" * ((end - begin) // 2)  # bf16 0x7f62, about 3.0e38
open(path, "wb").write(data)
PY
"$ptrain" train --config qlora.yaml --set base_model=model-huge --set val_set_size=0 \
  --set max_steps=10 --set max_nonfinite_steps=3 --set output_dir=out-diverge >diverge.log 2>&1
[ $? -eq 2 ] || { tail -5 diverge.log; fail "divergence: expected exit 2"; }
grep -q "training diverged: 3 consecutive steps (the last is step 3)" diverge.log ||
  { tail -3 diverge.log; fail "divergence: the message does not name the steps"; }
python3 - <<'PY' || fail "divergence: metrics.jsonl"
import json
lines = [json.loads(l) for l in open("out-diverge/metrics.jsonl")]
steps = [l for l in lines if l["type"] == "step"]
assert [s["applied"] for s in steps] == [False, False], steps
assert [s["skipped_steps"] for s in steps] == [1, 2], steps
assert lines[-1]["type"] == "end" and lines[-1]["reason"] == "max_nonfinite_steps", lines[-1]
assert lines[-1]["steps"] == 3, lines[-1]
PY
[ ! -e out-diverge/final ] || fail "a diverged job wrote final/"

# ---- device: cuda where libtorch has no CUDA (or no GPU is visible): exit 2, never a CPU run
if ! "$ptrain" env 2>/dev/null | grep -q "device=cuda"; then
  "$ptrain" train --config qlora.yaml --set device=cuda --set output_dir=out-cuda >cuda.log 2>&1
  [ $? -eq 2 ] || fail "device: cuda without a GPU: expected exit 2"
  grep -q "'device: cuda'" cuda.log && grep -q "docs/gpu.md" cuda.log ||
    fail "the device: cuda refusal does not name the key and docs/gpu.md"
  [ ! -e out-cuda/final ] && [ ! -e out-cuda/metrics.jsonl ] || fail "a refused cuda job trained"
fi

finish

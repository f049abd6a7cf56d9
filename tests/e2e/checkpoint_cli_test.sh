#!/usr/bin/env bash
# End-to-end checks of the checkpoint commands: checkpoint_cli_test.sh PTRAIN MPIEXEC REPO
# A QLoRA job (2 ranks) and a full job (3 ranks: odd shards, padding) save every 2 steps; then
# `ptrain inspect` of a checkpoint (summary, every checksum; a flipped byte is exit 2 naming the
# file) and of the checkpoints directory, and `ptrain export --checkpoint`, each compared with an
# independent path: the PEFT export with the checkpoint's adapter/ and the run's final/, the
# merged LoRA export with `export --model --adapter`, the full model rebuilt from the rank files'
# masters with the run's own final/ (gathered from the live shards at the end of training).
source "$(dirname "$0")/common.sh"
ptrain=$1
mpiexec=${2:-mpirun}
repo=${3:-.}
mpirun=("$mpiexec" --oversubscribe --allow-run-as-root)
cd "$work" || exit 1

"$ptrain" init-model --preset tiny --out model >/dev/null || fail "init-model"
python3 "$repo/examples/make_tiny_data.py" data --rows 120 >/dev/null || fail "make_tiny_data"

cat > qlora.yaml <<'EOF'
base_model: model
load_in_4bit: true
adapter: qlora
lora_r: 8
lora_alpha: 16
lora_target_linear: true
datasets:
  - path: data/alpaca.jsonl
    type: alpaca
val_set_size: 0
sequence_len: 256
sample_packing: true
micro_batch_size: 1
gradient_accumulation_steps: 2
max_steps: 4
save_steps: 2
learning_rate: 0.002
warmup_steps: 1
output_dir: out-qlora
logging:
  console: none
EOF
sed -e '/^load_in_4bit/d' -e '/^adapter/d' -e '/^lora_/d' -e 's/^output_dir: .*/output_dir: out-full/' \
  -e 's/^learning_rate: .*/learning_rate: 0.001/' qlora.yaml >full.yaml

"${mpirun[@]}" -np 2 "$ptrain" train --config qlora.yaml >qlora.log 2>&1 ||
  { tail -20 qlora.log; fail "qlora train"; }
"${mpirun[@]}" -np 3 "$ptrain" train --config full.yaml >full.log 2>&1 ||
  { tail -20 full.log; fail "full train"; }
q=out-qlora/checkpoints
f=out-full/checkpoints
[ -f $q/step-2/manifest.json ] && [ -f $q/step-4/manifest.json ] && [ -f $f/step-4/manifest.json ] ||
  fail "the runs committed no step-2 and step-4 checkpoints"

# ---- inspect: the summary, every file, exit 0
"$ptrain" inspect $q/step-2 >inspect.out 2>inspect.err || { cat inspect.err; fail "inspect a checkpoint"; }
for line in "checkpoint $q/step-2" "step: 2 (completed optimizer steps), mode: qlora" \
  "saved by: 2 rank(s), shard size 2, 1 replica(s)" "base model: model (fingerprint " \
  "config hash: " "sampler: epoch 0, position " "trainable parameters: " \
  "rank-0.safetensors  " "rank-1.safetensors  " "adapter/adapter_model.safetensors  " \
  "total: 4 file(s), " "status: OK"; do
  grep -qF -- "$line" inspect.out || fail "inspect does not print '$line': $(cat inspect.out)"
done
python3 - "$q/step-2" <<'PY' || fail "inspect's counts disagree with manifest.json"
import json, sys
d = sys.argv[1]
m = json.load(open(d + "/manifest.json"))
out = open("inspect.out").read()
flats = m["flat_parameters"]
trainable = sum(f["numel"] for f in flats if f["trainable"])
assert f"flat parameters: {len(flats)} (" in out, out
assert f"trainable parameters: {trainable}\n" in out, (trainable, out)
assert f"position {m['sampler']['position']} of" in out, out
assert f"config hash: {m['config_hash']}" in out, out
total = sum(x["bytes"] for x in m["files"])
assert f"file(s), {total} bytes" in out, out
for x in m["files"]:
    assert f"{x['name']}  {x['bytes']} bytes  OK" in out, x
PY
"$ptrain" inspect $f/step-4 >inspect-full.out 2>&1 || { cat inspect-full.out; fail "inspect full"; }
grep -qF "mode: full" inspect-full.out && grep -qF "saved by: 3 rank(s)" inspect-full.out ||
  fail "inspect of the full checkpoint: $(cat inspect-full.out)"
# The checkpoints directory: each committed checkpoint, oldest first.
"$ptrain" inspect $q >list.out 2>&1 || { cat list.out; fail "inspect the checkpoints directory"; }
grep -qF "step 2  $q/step-2" list.out && grep -qF "step 4  $q/step-4" list.out ||
  fail "inspect of the checkpoints directory: $(cat list.out)"
# The model and prepared-dataset behaviour of inspect is unchanged.
"$ptrain" inspect model | grep -q "^model model" || fail "inspect of a model directory"

# ---- a flipped byte: inspect and export exit 2 naming the file; nothing exported
mkdir -p bad && cp -r $q/step-2 bad/step-2
flip_byte bad/step-2/rank-1.safetensors
"$ptrain" inspect bad/step-2 >bad.out 2>bad.err
[ $? -eq 2 ] || fail "inspect of a damaged checkpoint: expected exit 2"
grep -q "rank-1.safetensors: checksum" bad.err || fail "inspect names no bad file: $(cat bad.err)"
grep -q "rank-1.safetensors .*BAD: " bad.out && grep -q "rank-0.safetensors .* OK" bad.out ||
  fail "inspect's summary does not mark the bad file: $(cat bad.out)"
"$ptrain" export --checkpoint bad/step-2 --format peft --out bad-peft >bad-export.out 2>&1
[ $? -eq 2 ] && grep -q "rank-1.safetensors" bad-export.out ||
  fail "export of a damaged checkpoint: expected exit 2 naming the file: $(cat bad-export.out)"
[ ! -e bad-peft ] || fail "export of a damaged checkpoint created its --out"
"$ptrain" export --checkpoint model --format merged --out not-ckpt >not-ckpt.out 2>&1
[ $? -eq 2 ] && grep -q "manifest.json is missing" not-ckpt.out ||
  fail "export --checkpoint of a model directory: expected exit 2: $(cat not-ckpt.out)"

# ---- export --format peft: the checkpoint's adapter/ (and final/ for the last step)
for step in 2 4; do
  "$ptrain" export --checkpoint $q/step-$step --format peft --out peft-$step >/dev/null 2>peft.err ||
    { cat peft.err; fail "export peft of step $step"; }
  for file in adapter_config.json adapter_model.safetensors; do
    cmp -s peft-$step/$file $q/step-$step/adapter/$file ||
      fail "peft export of step $step: $file differs from the checkpoint's adapter/"
  done
done
for file in adapter_config.json adapter_model.safetensors; do
  cmp -s peft-4/$file out-qlora/final/$file || fail "peft export of step 4: $file differs from final/"
done
! cmp -s peft-2/adapter_model.safetensors peft-4/adapter_model.safetensors ||
  fail "the adapters of step 2 and 4 are the same (no training between them?)"

# ---- export --format merged of the LoRA checkpoint == export --model --adapter (NF4 base, as trained)
"$ptrain" export --checkpoint $q/step-2 --format merged --out merged-ckpt >/dev/null 2>m1.err ||
  { cat m1.err; fail "merged export of the qlora checkpoint"; }
"$ptrain" export --model model --load-in-4bit --adapter $q/step-2/adapter --format merged \
  --out merged-adapter >/dev/null 2>m2.err || { cat m2.err; fail "merged export --adapter"; }
for file in model.safetensors config.json; do
  cmp -s merged-ckpt/$file merged-adapter/$file ||
    fail "merged export of the checkpoint: $file differs from export --model --adapter"
done
"$ptrain" inspect merged-ckpt >/dev/null 2>&1 || fail "the merged export does not inspect"

# ---- the full checkpoint: peft is refused; merged at the last step == final/ (both bf16)
"$ptrain" export --checkpoint $f/step-4 --format peft --out full-peft >full-peft.out 2>&1
[ $? -eq 2 ] && grep -q "full training" full-peft.out ||
  fail "peft export of a full checkpoint: expected exit 2: $(cat full-peft.out)"
[ ! -e full-peft ] || fail "the refused peft export created its --out"
"$ptrain" export --checkpoint $f/step-4 --format merged --out full-4 >full-4.out 2>&1 ||
  { cat full-4.out; fail "merged export of the full checkpoint"; }
grep -q "bf16" full-4.out || fail "the full export is not bf16 (the run's dtype): $(cat full-4.out)"
for file in model.safetensors config.json generation_config.json tokenizer_config.json; do
  cmp -s full-4/$file out-full/final/$file || fail "full export of step 4: $file differs from final/"
done
"$ptrain" export --checkpoint $f/step-2 --format merged --out full-2 >/dev/null 2>&1 &&
  "$ptrain" inspect full-2 >/dev/null 2>&1 || fail "full export of step 2"
! cmp -s full-2/model.safetensors full-4/model.safetensors ||
  fail "the full exports of step 2 and 4 are the same"
# --dtype fp32: the masters themselves; rounded to bf16 they give final/'s tensors.
"$ptrain" export --checkpoint $f/step-4 --format merged --dtype fp32 --out full-fp32 >/dev/null 2>&1 ||
  fail "fp32 export of the full checkpoint"
python3 - <<'PY' || fail "the fp32 export rounded to bf16 is not final/"
import json, struct
def tensors(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    return {k: (v["dtype"], data[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])
            for k, v in header.items()}
def bf16(raw):  # round to nearest even, as libtorch does
    out = bytearray()
    for (u,) in struct.iter_unpack("<I", raw):
        u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
        out += struct.pack("<H", u & 0xFFFF)
    return bytes(out)
a, b = tensors("full-fp32/model.safetensors"), tensors("out-full/final/model.safetensors")
assert a.keys() == b.keys(), (a.keys() ^ b.keys())
for k in a:
    assert a[k][0] == "F32" and b[k][0] == "BF16", (k, a[k][0], b[k][0])
    assert bf16(a[k][1]) == b[k][1], k
PY

finish

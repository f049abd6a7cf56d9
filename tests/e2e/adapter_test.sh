#!/usr/bin/env bash
# End-to-end checks of LoRA adapters on the command line: adapter_test.sh PTRAIN
# The PEFT adapter is written here by Python from the file formats' definitions (independent of
# ptrain's writer), then applied by eval, exported as PEFT and merged.
source "$(dirname "$0")/common.sh"
ptrain=$1

"$ptrain" init-model --preset tiny --out "$work/tiny" --dtype fp32 --seed 5 >/dev/null || fail "init-model"
python3 - "$work/data.jsonl" <<'PY'
import json, random, sys
random.seed(2)
with open(sys.argv[1], "w") as f:
    for n in [30, 12, 25, 40]:
        f.write(json.dumps({"input_ids": [1] + [random.randrange(3, 259) for _ in range(n)]}) + "\n")
PY

# A PEFT adapter (r=4, alpha=8) on q_proj and down_proj of both layers, random A and B.
python3 - "$work/adapter" <<'PY'
import json, os, random, struct, sys
out = sys.argv[1]; os.makedirs(out)
random.seed(7)
shapes = {}
for layer in range(2):
    for module, (o, i) in {"self_attn.q_proj": (64, 64), "mlp.down_proj": (64, 176)}.items():
        base = f"base_model.model.model.layers.{layer}.{module}"
        shapes[base + ".lora_A.weight"] = [4, i]
        shapes[base + ".lora_B.weight"] = [o, 4]
header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
for name, shape in shapes.items():
    n = shape[0] * shape[1]
    blob = struct.pack(f"<{n}f", *[random.gauss(0, 0.3) for _ in range(n)])
    header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(blob)]}
    blobs.append(blob); offset += len(blob)
text = json.dumps(header).encode()
text += b" " * (-len(text) % 8)
with open(os.path.join(out, "adapter_model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
json.dump({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_alpha": 8,
           "lora_dropout": 0.1, "target_modules": ["q_proj", "down_proj"], "bias": "none"},
          open(os.path.join(out, "adapter_config.json"), "w"))
PY

ev() { "$ptrain" eval --data "$work/data.jsonl" --seq-len 64 --dtype fp32 --set output_dir="$work/ev" "$@" 2>>"$work/err"; }
base=$(ev --model "$work/tiny") || fail "eval base: $(cat "$work/err")"
with=$(ev --model "$work/tiny" --adapter "$work/adapter") || fail "eval --adapter: $(cat "$work/err")"
"$ptrain" export --model "$work/tiny" --adapter "$work/adapter" --format merged --dtype fp32 --out "$work/merged" >/dev/null 2>>"$work/err" || fail "export merged: $(cat "$work/err")"
merged=$(ev --model "$work/merged") || fail "eval merged: $(cat "$work/err")"
q4=$(ev --model "$work/tiny" --adapter "$work/adapter" --load-in-4bit) || fail "eval --load-in-4bit: $(cat "$work/err")"
python3 - "$base" "$with" "$merged" "$q4" <<'PY' || fail "losses: base $base / adapter $with / merged $merged / 4-bit $q4"
import json, sys
base, with_, merged, q4 = (json.loads(x)["loss"] for x in sys.argv[1:])
assert abs(with_ - base) > 1e-3, "the adapter changed nothing"
assert abs(merged - with_) < 1e-4 * with_, (merged, with_)   # merged weights == base + adapter
assert abs(q4 - with_) < 0.05 * with_, (q4, with_)           # NF4 base: close, not equal
PY
cmp -s "$work/tiny/tokenizer_config.json" "$work/merged/tokenizer_config.json" || fail "merged model lost the tokenizer config"

# PEFT re-export: the same tensors, byte for byte, under the same names.
"$ptrain" export --model "$work/tiny" --adapter "$work/adapter" --format peft --out "$work/peft" >/dev/null 2>>"$work/err" || fail "export peft: $(cat "$work/err")"
python3 - "$work/adapter/adapter_model.safetensors" "$work/peft/adapter_model.safetensors" "$work/peft/adapter_config.json" <<'PY' || fail "PEFT re-export differs"
import json, struct, sys
def tensors(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    return {k: data[8 + n + v["data_offsets"][0]: 8 + n + v["data_offsets"][1]]
            for k, v in header.items() if k != "__metadata__"}
a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
assert all(a[k] == b[k] for k in a)
c = json.load(open(sys.argv[3]))
assert c["peft_type"] == "LORA" and c["r"] == 4 and c["lora_alpha"] == 8 and c["target_modules"] == ["q_proj", "down_proj"]
PY

# Refusals: exporting over the model, into a non-empty directory, an adapter for other shapes.
err=$("$ptrain" export --model "$work/tiny" --adapter "$work/adapter" --format merged --out "$work/tiny" 2>&1)
[ $? -eq 2 ] && grep -q "is the model or adapter directory" <<<"$err" || fail "export over the model: $err"
"$ptrain" inspect "$work/tiny" | grep -q "status: OK" || fail "the model was damaged by a refused export"
err=$("$ptrain" export --model "$work/tiny" --adapter "$work/adapter" --format merged --out "$work/peft" 2>&1)
[ $? -eq 2 ] && grep -q "exists and is not empty" <<<"$err" || fail "export into a non-empty dir: $err"
sed -i 's/"r": 4/"r": 5/' "$work/adapter/adapter_config.json"
err=$("$ptrain" eval --data "$work/data.jsonl" --model "$work/tiny" --adapter "$work/adapter" --set output_dir="$work/ev" 2>&1)
[ $? -eq 2 ] && grep -q "lora_A.weight' has shape \[4, [0-9]*\], expected \[5, " <<<"$err" || fail "mismatched adapter: $err"

finish

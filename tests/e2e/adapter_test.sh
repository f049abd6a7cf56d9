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

# A model bitsandbytes saved in 4 bits: written here from the dense model by an independent
# Python NF4 quantizer (FORMATS.md), read by ptrain as stored. Its loss must match ptrain's own
# quantization of the same weights (--load-in-4bit).
python3 - "$work/tiny" "$work/bnb" <<'PY' || fail "writing the bitsandbytes model"
import json, os, shutil, struct, sys
src, out = sys.argv[1], sys.argv[2]
os.makedirs(out)
f32 = lambda x: struct.unpack("<f", struct.pack("<f", x))[0]
NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
       -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
       0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
       0.7229568362236023, 1.0]
NF4 = [f32(v) for v in NF4]
def dynamic_map():  # bitsandbytes create_dynamic_map(signed=True), fp32 arithmetic
    data = []
    for i in range(7):
        n = 2 ** i + 1
        step = f32((f32(1.0) - f32(0.1)) / (n - 1))
        b = [f32(f32(0.1) + f32(step * k)) if k < n // 2 else f32(f32(1.0) - f32(step * (n - k - 1))) for k in range(n)]
        for k in range(n - 1):
            mean = f32(f32(b[k] + b[k + 1]) / 2)
            v = f32(f32(10.0 ** (i - 6)) * mean)
            data += [v, -v]
    return sorted(data + [0.0, 1.0])
DMAP = dynamic_map()
nearest = lambda table, x: min(range(len(table)), key=lambda k: abs(x - table[k]))
def read(path):
    data = open(path, "rb").read(); n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    return {k: (v, data[8 + n + v["data_offsets"][0]: 8 + n + v["data_offsets"][1]])
            for k, v in header.items() if k != "__metadata__"}
tensors, out_tensors = read(os.path.join(src, "model.safetensors")), {}
for name, (info, blob) in tensors.items():
    if not (name.endswith("_proj.weight") and (".self_attn." in name or ".mlp." in name)):
        out_tensors[name] = (info["dtype"], info["shape"], blob); continue
    w = struct.unpack(f"<{len(blob) // 4}f", blob)
    codes, absmax = [], []
    for b in range(0, len(w), 64):
        block = w[b:b + 64]; m = max(abs(x) for x in block); absmax.append(f32(m))
        codes += [nearest(NF4, x / m) if m else 7 for x in block]
    codes += [0] * (len(codes) % 2)
    packed = bytes((codes[j] << 4) | codes[j + 1] for j in range(0, len(codes), 2))
    offset = f32(sum(absmax) / len(absmax))
    q, nested = [], []
    for b in range(0, len(absmax), 256):
        xs = [f32(a - offset) for a in absmax[b:b + 256]]
        m = max(abs(x) for x in xs); nested.append(m)
        q += [nearest(DMAP, x / m) for x in xs]
    state = json.dumps({"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": info["shape"],
                        "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": offset}).encode()
    out_tensors[name] = ("U8", [len(packed), 1], packed)
    out_tensors[name + ".absmax"] = ("U8", [len(q)], bytes(q))
    out_tensors[name + ".quant_map"] = ("F32", [16], struct.pack("<16f", *NF4))
    out_tensors[name + ".nested_absmax"] = ("F32", [len(nested)], struct.pack(f"<{len(nested)}f", *nested))
    out_tensors[name + ".nested_quant_map"] = ("F32", [256], struct.pack("<256f", *DMAP))
    out_tensors[name + ".quant_state.bitsandbytes__nf4"] = ("U8", [len(state)], state)
header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
for name, (dtype, shape, blob) in out_tensors.items():
    header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(blob)]}
    blobs.append(blob); offset += len(blob)
text = json.dumps(header).encode(); text += b" " * (-len(text) % 8)
open(os.path.join(out, "model.safetensors"), "wb").write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
config = json.load(open(os.path.join(src, "config.json")))
config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True, "load_in_8bit": False,
                                 "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
                                 "bnb_4bit_compute_dtype": "bfloat16"}
json.dump(config, open(os.path.join(out, "config.json"), "w"))
PY
"$ptrain" inspect "$work/bnb" >"$work/inspect" 2>&1 && grep -q "NF4 (bitsandbytes)" "$work/inspect" || fail "inspect of a bitsandbytes model: $(cat "$work/inspect")"
bnb=$(ev --model "$work/bnb") || fail "eval of a bitsandbytes model: $(cat "$work/err")"
ours=$(ev --model "$work/tiny" --load-in-4bit) || fail "eval --load-in-4bit: $(cat "$work/err")"
python3 - "$bnb" "$ours" "$base" <<'PY' || fail "bitsandbytes model loss: $bnb vs ours $ours (dense $base)"
import json, sys
bnb, ours, dense = (json.loads(x)["loss"] for x in sys.argv[1:])
assert abs(bnb - ours) < 1e-4 * ours, (bnb, ours)
assert abs(bnb - dense) > 1e-6, "no quantization error at all: was the 4-bit model read?"
PY
python3 - "$work/bnb/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); c["quantization_config"]["bnb_4bit_quant_type"] = "fp4"
json.dump(c, open(sys.argv[1], "w"))
PY
err=$("$ptrain" inspect "$work/bnb" 2>&1)
[ $? -eq 2 ] && grep -q "bnb_4bit_quant_type.*'fp4' is not supported (only nf4)" <<<"$err" || fail "FP4 model: $err"

# Refusals: exporting over the model, into a non-empty directory, an adapter for other shapes.
err=$("$ptrain" export --model "$work/tiny" --adapter "$work/adapter" --format merged --out "$work/tiny" 2>&1)
[ $? -eq 2 ] && grep -q "is the model or adapter directory" <<<"$err" || fail "export over the model: $err"
"$ptrain" inspect "$work/tiny" | grep -q "status: OK" || fail "the model was damaged by a refused export"
err=$("$ptrain" export --model "$work/tiny" --adapter "$work/adapter" --format merged --out "$work/peft" 2>&1)
[ $? -eq 2 ] && grep -q "exists and is not empty" <<<"$err" || fail "export into a non-empty dir: $err"
sed -i 's/"r": 4/"r": 5/' "$work/adapter/adapter_config.json"
err=$("$ptrain" eval --data "$work/data.jsonl" --model "$work/tiny" --adapter "$work/adapter" --set output_dir="$work/ev" 2>&1)
[ $? -eq 2 ] && grep -q "lora_A.weight' has shape \[4, [0-9]*\], expected \[5, " <<<"$err" || fail "mismatched adapter: $err"

sed -i 's/"r": 5/"r": 4/' "$work/adapter/adapter_config.json"

# --out naming a file, or a place that cannot hold a directory: bad input (exit 2), not exit 3.
err=$("$ptrain" export --model "$work/tiny" --adapter "$work/adapter" --format peft --out "$work/data.jsonl" 2>&1)
[ $? -eq 2 ] && grep -q "'$work/data.jsonl' is not a directory" <<<"$err" || fail "export --out FILE: $err"
err=$("$ptrain" export --model "$work/tiny" --adapter "$work/adapter" --format peft --out /proc/ptrain-x 2>&1)
[ $? -eq 2 ] && grep -q "export: --out '/proc/ptrain-x': cannot create the directory" <<<"$err" ||
  fail "export --out /proc/x: $err"
# A refused export leaves no --out behind (the model is read after --out is claimed).
err=$("$ptrain" export --model "$work/missing" --adapter "$work/adapter" --format peft --out "$work/never" 2>&1)
[ $? -eq 2 ] && [ ! -e "$work/never" ] || fail "a failed export left its --out behind: $err"

# An adapter with NaN values: refused where it is read, naming the adapter directory.
cp -r "$work/adapter" "$work/nan-adapter"
python3 - "$work/nan-adapter/adapter_model.safetensors" <<'PY'
import json, struct, sys
data = bytearray(open(sys.argv[1], "rb").read())
n = struct.unpack("<Q", data[:8])[0]
header = json.loads(data[8:8 + n])
info = header["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"]
struct.pack_into("<f", data, 8 + n + info["data_offsets"][0] + 4, float("inf"))
open(sys.argv[1], "wb").write(data)
PY
err=$(ev --model "$work/tiny" --adapter "$work/nan-adapter" 2>&1)
[ $? -eq 2 ] && grep -q "adapter '$work/nan-adapter' holds NaN/inf values (tensor 'model.layers.1.mlp.down_proj.lora_B.weight')" "$work/err" ||
  fail "eval with a NaN adapter: $err $(tail -2 "$work/err")"

# Targets that came from a PEFT adapter are named by its file and key, not by the config key.
cp -r "$work/adapter" "$work/other-arch"
sed -i 's/"target_modules": \["q_proj", "down_proj"\]/"target_modules": ["q_proj", "c_attn"]/' "$work/other-arch/adapter_config.json"
err=$("$ptrain" eval --data "$work/data.jsonl" --model "$work/tiny" --adapter "$work/other-arch" 2>&1)
[ $? -eq 2 ] && grep -q "'$work/other-arch/adapter_config.json': target_modules: 'c_attn' matches no projection" <<<"$err" &&
  ! grep -q lora_target_modules <<<"$err" || fail "adapter target error: $err"


finish

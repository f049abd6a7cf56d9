#!/usr/bin/env python3
"""Writes a PEFT LoRA adapter directory with random weights for a Llama model directory.

Standard library only, from the formats' definitions (safetensors; PEFT's adapter_config.json and
tensor names), so ptrain's adapter commands can be tried before any training:

    python3 examples/make_lora_adapter.py MODEL_DIR OUT_DIR [--r 8] [--alpha 16]
        [--targets q_proj,v_proj] [--std 0.02] [--seed 0]

lora_B is random too (PEFT initialises it to zero, which would make the adapter a no-op).
"""
import argparse
import json
import os
import random
import struct


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model")
    p.add_argument("out")
    p.add_argument("--r", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16)
    p.add_argument("--targets", default="q_proj,v_proj")
    p.add_argument("--std", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    c = json.load(open(os.path.join(a.model, "config.json")))
    h, inter = c["hidden_size"], c["intermediate_size"]
    heads = c["num_attention_heads"]
    kv = c.get("num_key_value_heads", heads)
    d = c.get("head_dim", h // heads)
    shapes = {  # [out, in] of each projection
        "self_attn.q_proj": (heads * d, h), "self_attn.k_proj": (kv * d, h),
        "self_attn.v_proj": (kv * d, h), "self_attn.o_proj": (h, heads * d),
        "mlp.gate_proj": (inter, h), "mlp.up_proj": (inter, h), "mlp.down_proj": (h, inter),
    }
    targets = a.targets.split(",")
    random.seed(a.seed)
    tensors = {}
    for layer in range(c["num_hidden_layers"]):
        for module, (out_f, in_f) in shapes.items():
            if module.split(".")[1] not in targets:
                continue
            base = f"base_model.model.model.layers.{layer}.{module}"
            tensors[base + ".lora_A.weight"] = ([a.r, in_f], a.r * in_f)
            tensors[base + ".lora_B.weight"] = ([out_f, a.r], out_f * a.r)

    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, (shape, n) in tensors.items():
        blob = struct.pack(f"<{n}f", *[random.gauss(0, a.std) for _ in range(n)])
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)  # tensor data 8-byte aligned
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "adapter_model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": a.model,
              "r": a.r, "lora_alpha": a.alpha, "lora_dropout": 0.0, "target_modules": targets,
              "bias": "none", "fan_in_fan_out": False, "use_rslora": False, "modules_to_save": None,
              "init_lora_weights": True, "inference_mode": True}
    with open(os.path.join(a.out, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    print(f"wrote {a.out}: {len(tensors)} tensors, r={a.r}, targets {targets}")


if __name__ == "__main__":
    main()

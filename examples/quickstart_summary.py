#!/usr/bin/env python3
"""Prints what a training run did, for people: python3 examples/quickstart_summary.py OUTPUT_DIR

Reads OUTPUT_DIR/metrics.jsonl (docs/training.md) and lists OUTPUT_DIR/final/."""
import json
import os
import sys


def main():
    out = sys.argv[1]
    lines = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    steps = [l for l in lines if l["type"] == "step"]
    evals = [l for l in lines if l["type"] == "eval"]
    end = [l for l in lines if l["type"] == "end"][-1]
    print(f"\nptrain: {end['steps']} optimizer steps in {end['seconds']:.0f} s "
          f"({end['reason']}), {lines[0]['world']} ranks")
    if steps:
        rate = sum(s["tokens_per_s"] for s in steps) / len(steps)
        print(f"  training loss      {steps[0]['loss']:.3f} -> {steps[-1]['loss']:.3f}"
              f"   ({rate:.0f} learned tokens/s)")
    if len(evals) >= 2:
        first, last = evals[0], evals[-1]
        print(f"  held-out loss      {first['eval_loss']:.3f} -> {last['eval_loss']:.3f}")
        print(f"  held-out accuracy  {100 * first['eval_accuracy']:.1f}% -> "
              f"{100 * last['eval_accuracy']:.1f}% of answer tokens predicted exactly")
    final = os.path.join(out, "final")
    print(f"  adapter            {final}/")
    for name in sorted(os.listdir(final)):
        print(f"    {name:32} {os.path.getsize(os.path.join(final, name)):>10,} bytes")
    print(f"  per-step metrics   {os.path.join(out, 'metrics.jsonl')}\n")


if __name__ == "__main__":
    main()

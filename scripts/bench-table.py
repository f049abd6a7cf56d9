#!/usr/bin/env python3
"""Turns ptrain-bench comm or train JSON lines (stdin or files) into the markdown tables of
docs/benchmarks.md."""
import json
import sys


def rows(lines):
    for line in lines:
        line = line.strip()
        if line.startswith("{"):
            yield json.loads(line)


def size(n):
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n} B"


def main():
    files = sys.argv[1:] or ["-"]
    results = []
    for name in files:
        with (sys.stdin if name == "-" else open(name)) as f:
            results.extend(rows(f))
    train = [r for r in results if r.get("suite") == "train"]
    if train:
        train_table(train)
        return
    print("| world | op | dtype | size | busbw GB/s | raw MPI busbw GB/s | ours / raw |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['world']} | {r['op']} | {r['dtype']} | {size(r['bytes'])} | "
              f"{r['busbw']:.2f} | {r['baseline_busbw']:.2f} | {r['vs_baseline']:.2f} |")


def train_table(results):
    print("| mode | preset | world | step s | tokens/s | MFU | exposed comm | peak RSS / rank | "
          "ideal | RSS / ideal | bare fwd+bwd tokens/s | vs_baseline | scaling |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['mode']} | {r['preset']} | {r['world']} | {r['step_s']:.2f} | "
              f"{r['tokens_per_s']:.1f} | {100 * r['mfu']:.1f}% | "
              f"{100 * r['exposed_comm_fraction']:.1f}% | {r['peak_rss_bytes'] / 1e9:.2f} GB | "
              f"{r['ideal_bytes'] / 1e9:.2f} GB | {r['rss_vs_ideal']:.2f} | "
              f"{r['baseline_tokens_per_s']:.1f} | {r['vs_baseline']:.2f} | "
              f"{r.get('scaling', 1.0):.2f} |")


if __name__ == "__main__":
    main()

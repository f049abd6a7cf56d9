#!/usr/bin/env python3
"""Turns ptrain-bench comm, train or ckpt JSON lines (stdin or files) into the markdown tables of
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
    ckpt = [r for r in results if r.get("suite") == "ckpt"]
    if ckpt:
        ckpt_table(ckpt)
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


def ckpt_table(results):
    print("| preset | world | op | GB | seconds | GB/s | baseline GB/s | vs_baseline | stall s | "
          "extra RSS / rank | largest shard | notes |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        op = r["op"] + (" async" if r.get("async") else "")
        head = f"| {r['preset']} | {r['world']} | {op} | {r['bytes'] / 1e9:.2f} |"
        if "skipped" in r:
            print(f"{head} | | | | | | | skipped: {r['skipped']} |")
            continue
        if r["op"] == "load":
            notes = (f"second read {r['second_read_gb_per_s']:.2f} GB/s, "
                     f"XXH3 {r['checksum_gb_per_s']:.1f} GB/s")
            stall = rss = shard = ""
        else:
            notes = (f"write {r['write_s']:.2f} s after the stall" if r.get("async") else "")
            stall = f"{r['stall_s']:.3f}" if r.get("async") else f"{r['stall_s']:.2f}"
            rss = f"{r['extra_rss_bytes'] / 1e6:.1f} MB"
            shard = f"{r['largest_shard_bytes'] / 1e6:.0f} MB"
        print(f"{head} {r['seconds']:.2f} | {r['gb_per_s']:.3f} | {r['baseline_gb_per_s']:.3f} | "
              f"{r['vs_baseline']:.2f} | {stall} | {rss} | {shard} | {notes} |")


if __name__ == "__main__":
    main()

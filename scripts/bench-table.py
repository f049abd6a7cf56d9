#!/usr/bin/env python3
"""Turns ptrain-bench comm JSON lines (stdin or files) into the markdown table of docs/benchmarks.md."""
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
    print("| world | op | dtype | size | busbw GB/s | raw MPI busbw GB/s | ours / raw |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['world']} | {r['op']} | {r['dtype']} | {size(r['bytes'])} | "
              f"{r['busbw']:.2f} | {r['baseline_busbw']:.2f} | {r['vs_baseline']:.2f} |")


if __name__ == "__main__":
    main()

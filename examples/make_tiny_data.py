#!/usr/bin/env python3
"""Writes small, deterministic instruction datasets for the tiny examples (no downloads):

    python3 examples/make_tiny_data.py OUT_DIR [--rows N] [--seed S]

OUT_DIR/alpaca.jsonl    Alpaca rows {"instruction", "input", "output"}: arithmetic, counting,
                        reversing and sorting tasks with exact answers.
OUT_DIR/sharegpt.jsonl  ShareGPT rows {"conversations": [{"from", "value"}, ...]}: one to three
                        exchanges of the same tasks, some with a system turn.
"""
import argparse
import json
import os
import random


def task(r):
    kind = r.randrange(4)
    if kind == 0:
        a, b = r.randrange(1000), r.randrange(1000)
        return "Add the two numbers.", f"{a} {b}", str(a + b)
    if kind == 1:
        n = r.randint(1, 30)
        return f"Count from 1 to {n}.", "", " ".join(map(str, range(1, n + 1)))
    words = [r.choice(["apple", "river", "stone", "cloud", "lamp", "tiger", "honey", "north"])
             for _ in range(r.randint(2, 8))]
    if kind == 2:
        return "Reverse the order of the words.", " ".join(words), " ".join(reversed(words))
    return "Sort the words alphabetically.", " ".join(words), " ".join(sorted(words))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    r = random.Random(args.seed)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "alpaca.jsonl"), "w") as f:
        for _ in range(args.rows):
            instruction, given, answer = task(r)
            row = {"instruction": instruction, "output": answer}
            if given:
                row["input"] = given
            f.write(json.dumps(row) + "\n")
    with open(os.path.join(args.out_dir, "sharegpt.jsonl"), "w") as f:
        for _ in range(args.rows // 4):
            turns = [{"from": "system", "value": "Answer exactly."}] if r.random() < 0.3 else []
            for _ in range(r.randint(1, 3)):
                instruction, given, answer = task(r)
                turns.append({"from": "human", "value": f"{instruction} {given}".strip()})
                turns.append({"from": "gpt", "value": answer})
            f.write(json.dumps({"conversations": turns}) + "\n")


if __name__ == "__main__":
    main()

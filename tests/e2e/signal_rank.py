#!/usr/bin/env python3
"""signal_rank.py OUT STEP RANK SIGNAL [TIMEOUT]: once OUT/metrics.jsonl has logged STEP training
steps, sends SIGNAL (KILL, STOP, ...) to the rank RANK process of the job writing OUT (found by its
command line, `output_dir=OUT`, and its OMPI_COMM_WORLD_RANK). Prints what it did as JSON:
{"pid", "rank", "step", "unix_s"}. Exit 1 when the step or the rank never shows up."""
import json
import os
import signal
import sys
import time

out, step, rank, name = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
deadline = time.time() + (float(sys.argv[5]) if len(sys.argv) > 5 else 300)
metrics = os.path.join(out, "metrics.jsonl")


def steps_logged():
    try:
        with open(metrics, "rb") as f:
            return f.read().count(b'"type":"step"')
    except OSError:
        return 0


def rank_pid():
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() != "ptrain":
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if f"output_dir={out}".encode() not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                if f"OMPI_COMM_WORLD_RANK={rank}".encode() in f.read().split(b"\0"):
                    return int(entry)
        except OSError:
            continue
    return None


while steps_logged() < step:
    if time.time() > deadline:
        sys.exit(f"signal_rank: {metrics} never reached step {step}")
    time.sleep(0.005)
pid = rank_pid()
if pid is None:
    sys.exit(f"signal_rank: no rank {rank} process writes {out}")
now = time.time()
os.kill(pid, getattr(signal, "SIG" + name))
print(json.dumps({"pid": pid, "rank": rank, "step": steps_logged(), "unix_s": now}))

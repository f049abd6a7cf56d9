#!/usr/bin/env bash
# End-to-end checks of the stop signals: signals_test.sh PTRAIN MPIEXEC REPO
# SIGUSR1 (Slurm's time-limit warning) to one rank of a 2-rank job: every rank stops at the same
# step boundary after writing a checkpoint, the job exits 4 (requeue), and the requeued run
# (resume_from_checkpoint: latest) ends with an adapter byte-identical to an uninterrupted run's.
# SIGTERM (preemption) to the other rank: the same exit 4. SIGINT once: the checkpoint, exit 0.
source "$(dirname "$0")/common.sh"
ptrain=$1
mpiexec=${2:-mpirun}
repo=${3:-.}
mpirun=("$mpiexec" --oversubscribe --allow-run-as-root)
cd "$work" || exit 1

tiny_lora_job 400 job.yaml "max_steps: 60" "save_steps: 1000" "learning_rate: 0.002" \
  "output_dir: out" "resume_from_checkpoint: latest"

# run NAME [--set ...]: the job into out-NAME in the background; its pid in job_pid.
run() {
  local name=$1
  shift
  "${mpirun[@]}" -np 2 "$ptrain" train --config job.yaml --set output_dir="out-$name" "$@" \
    >"$name.log" 2>&1 &
  job_pid=$!
}

# signal_rank NAME SIGNAL INDEX: once out-NAME has logged 5 steps, sends SIGNAL to one rank
# (INDEX 0 or 1 of its two processes, by pid order).
signal_rank() {
  local end=$((SECONDS + 120)) pids
  while [ $SECONDS -lt $end ]; do
    if [ -f "out-$1/metrics.jsonl" ] && [ "$(grep -c '"type":"step"' "out-$1/metrics.jsonl")" -ge 5 ]; then
      mapfile -t pids < <(pgrep -f -- "--set output_dir=out-$1" | sort -n | grep -v "^$job_pid\$")
      [ ${#pids[@]} -ge 2 ] || { fail "$1: ranks not found (${pids[*]})"; return 1; }
      kill "-$2" "${pids[$3]}"
      return 0
    fi
    kill -0 "$job_pid" 2>/dev/null || { fail "$1: the job ended before step 5"; return 1; }
    sleep 0.1
  done
  fail "$1: the job never reached step 5"
  return 1
}

# stopped_with_checkpoint NAME: out-NAME ended "stopped" before its last step, and its newest
# committed checkpoint is of that step.
stopped_with_checkpoint() {
  python3 - "out-$1" <<'PY'
import json, os, sys
out = sys.argv[1]
end = [json.loads(l) for l in open(out + "/metrics.jsonl")][-1]
assert end["type"] == "end" and end["reason"] == "stopped" and end["steps"] < 60, end
steps = sorted(int(d[5:]) for d in os.listdir(out + "/checkpoints") if d[5:].isdigit())
assert steps and steps[-1] == end["steps"], f"checkpoints {steps}, stopped after {end['steps']}"
assert os.path.exists(f"{out}/checkpoints/step-{end['steps']}/manifest.json")
PY
}

"${mpirun[@]}" -np 2 "$ptrain" train --config job.yaml --set output_dir=out-whole >whole.log 2>&1 ||
  { tail -20 whole.log; fail "the uninterrupted run failed"; }

# SIGUSR1 to rank processes' second: exit 4 with a checkpoint, then the requeue finishes the job.
run usr1
signal_rank usr1 USR1 1
wait "$job_pid"
code=$?
[ $code -eq 4 ] || { tail -20 usr1.log; fail "SIGUSR1: exit $code, expected 4 (requeue)"; }
stopped_with_checkpoint usr1 || fail "SIGUSR1: no checkpoint at the stop step"
"${mpirun[@]}" -np 2 "$ptrain" train --config job.yaml --set output_dir=out-usr1 >>usr1.log 2>&1 ||
  { tail -20 usr1.log; fail "SIGUSR1: the requeued run failed"; }
cmp out-whole/final/adapter_model.safetensors out-usr1/final/adapter_model.safetensors ||
  fail "SIGUSR1: the requeued run's adapter differs from the uninterrupted run's"

# SIGTERM to the first: the same requeue.
run term
signal_rank term TERM 0
wait "$job_pid"
code=$?
[ $code -eq 4 ] || { tail -20 term.log; fail "SIGTERM: exit $code, expected 4 (requeue)"; }
stopped_with_checkpoint term || fail "SIGTERM: no checkpoint at the stop step"

# SIGINT once: the checkpoint, then exit 0.
run int
signal_rank int INT 1
wait "$job_pid"
code=$?
[ $code -eq 0 ] || { tail -20 int.log; fail "SIGINT: exit $code, expected 0"; }
stopped_with_checkpoint int || fail "SIGINT: no checkpoint at the stop step"

finish

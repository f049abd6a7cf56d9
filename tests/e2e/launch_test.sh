#!/usr/bin/env bash
# End-to-end checks of ptrain-launch (docs/launch.md): launch_test.sh PTRAIN MPIEXEC REPO MODE
#   kill:   SIGKILL a random rank at a random step of a 2- and a 3-rank job, one pair per seed in
#           PTRAIN_LAUNCH_SEEDS (default "1 2"; `make soak` runs 10): the job restarts, finishes,
#           and its adapter is byte-identical to an uninterrupted run's.
#   faults: SIGSTOP a rank (lost by its heartbeats, restarted, identical adapter); a rank stuck
#           outside collectives while the others' watchdog fires (the summary names it); a kill
#           during a checkpoint save (the restart resumes from the previous committed one);
#           restarts exhausted (exit 3, the coordinator says FAILED with the cause); bad input
#           (exit 2, never retried).
source "$(dirname "$0")/common.sh"
ptrain=$(readlink -f "$1")
mpiexec=${2:-mpirun}
repo=$(readlink -f "${3:-.}")
mode=${4:-kill}
bin=$(dirname "$ptrain")
launch=$bin/ptrain-launch
mpirun=("$mpiexec" --oversubscribe --allow-run-as-root)
signal_rank=(python3 "$repo/tests/e2e/signal_rank.py")
cd "$work" || exit 1

# No resume_from_checkpoint: a restart by ptrain-launch resumes on its own.
tiny_lora_job 400 job.yaml "max_steps: 200" "save_steps: 20" "learning_rate: 0.002" \
  "output_dir: out"

# reference NP: the uninterrupted run at NP ranks, into ref-NP.
reference() {
  "${mpirun[@]}" -np "$1" "$ptrain" train --config job.yaml --set output_dir="ref-$1" \
    >"ref-$1.log" 2>&1 || { tail -20 "ref-$1.log"; fail "the uninterrupted $1-rank run failed"; }
}

# supervise NAME NP [ptrain-launch flags...] [-- extra train flags]: ptrain-launch runs the job
# into out-NAME in the background (its pid in job_pid); state NAME.db, summary NAME.json.
supervise() {
  local name=$1 np=$2 flags=() extra=()
  shift 2
  while [ $# -gt 0 ] && [ "$1" != -- ]; do flags+=("$1"); shift; done
  [ $# -gt 0 ] && shift && extra=("$@")
  "$launch" --state "$name.db" --summary-json "$name.json" --backoff 0.2 "${flags[@]}" -- \
    "${mpirun[@]}" -np "$np" "$ptrain" train --config "${config:-job.yaml}" \
    --set output_dir="out-$name" "${extra[@]}" >"$name.log" 2>&1 &
  job_pid=$!
}

# finished NAME CODE: ptrain-launch ended with CODE.
finished() {
  wait "$job_pid"
  local code=$?
  [ "$code" -eq "$2" ] || { tail -30 "$1.log"; fail "$1: ptrain-launch exit $code, expected $2"; }
}

# summary NAME EXPR...: Python assertions on NAME.json (as `s`; `l` its launches).
summary() {
  local name=$1
  shift
  python3 - "$name.json" "$@" <<'PY' || { tail -30 "$name.log"; fail "$name: the summary"; }
import json, sys
s = json.load(open(sys.argv[1]))
l = s["launches"]
for check in sys.argv[2:]:
    assert eval(check), f"{check}: {json.dumps(s, indent=1)}"
PY
}

same_adapter() {
  cmp "ref-$2/final/adapter_model.safetensors" "out-$1/final/adapter_model.safetensors" ||
    fail "$1: the adapter differs from the uninterrupted $2-rank run's"
}

if [ "$mode" = kill ]; then
  reference 2
  reference 3
  for seed in ${PTRAIN_LAUNCH_SEEDS:-1 2}; do
    for np in 2 3; do
      read -r rank step < <(python3 -c "import random; r = random.Random($seed * 10 + $np); \
print(r.randrange($np), r.randint(3, 150))")
      name=kill-$seed-$np
      supervise "$name" "$np"
      "${signal_rank[@]}" "out-$name" "$step" "$rank" KILL >"$name.kill" ||
        fail "$name: could not kill rank $rank at step $step"
      finished "$name" 0
      killed_at=$(python3 -c "import json; print(json.load(open('$name.kill'))['step'])")
      # The restart resumes from the last checkpoint before the kill (step 0 before the first).
      summary "$name" "len(l) == 2" "l[0]['restart'] and l[0]['cause'] in ('exit', 'signal')" \
        "l[1]['cause'] == 'finished'" \
        "l[1]['first_step'] % 20 == 0 and $killed_at - 20 <= l[1]['first_step'] <= $killed_at" \
        "0 < l[1]['recovery']['total_s'] < 120"
      same_adapter "$name" "$np"
      echo "seed $seed: killed rank $rank of $np at step $step: $(cat "$name.kill")"
    done
  done
  finish
fi

reference 2

# SIGSTOP: the rank's heartbeats stop; the coordinator shows it lost after 2 s and the supervisor
# restarts (the watchdog would take 120 s).
supervise stop 2 --heartbeat-timeout 2 --heartbeat-interval 0.25 -- \
  --set comm.collective_timeout=120
"${signal_rank[@]}" out-stop 40 1 STOP >stop.kill || fail "stop: could not stop rank 1"
finished stop 0
summary stop "len(l) == 2" "l[0]['cause'] == 'rank_lost' and 'rank' in l[0]['message']" \
  "l[1]['cause'] == 'finished'"
same_adapter stop 2

# A rank stuck outside collectives (stopped, with heartbeats that would take 60 s): the others'
# watchdog fires after 4 s, each reports its last collectives, and the summary names the rank
# that never entered the collective they wait in. (The first launch only: 4 s could trip on a
# slow save of a loaded machine.)
cat >hang.sh <<SH
#!/usr/bin/env bash
timeout=600
[ "\$PTRAIN_RESTART" = 0 ] && timeout=4
exec ${mpirun[*]} -np 3 $ptrain train --config job.yaml --set output_dir=out-hang \\
  --set comm.collective_timeout=\$timeout
SH
chmod +x hang.sh
"$launch" --state hang.db --summary-json hang.json --backoff 0.2 --heartbeat-timeout 60 -- \
  ./hang.sh >hang.log 2>&1 &
job_pid=$!
"${signal_rank[@]}" out-hang 30 2 STOP >hang.kill || fail "hang: could not stop rank 2"
finished hang 0
summary hang "len(l) == 2 and l[0]['cause'] == 'hang'" \
  "'rank 2 fell behind: never entered world ' in l[0]['message'] or \
   'rank 2 stopped heartbeating' in l[0]['message']" \
  "any('ranks 0-1 wait in' in t or 'ranks 0-2 wait in' in t for t in l[0]['triage'])" \
  "l[1]['cause'] == 'finished'"

# A kill during the second save (rank 1 dies after writing its file, before the ranks agree):
# the restart resumes from the first save's checkpoint, and the result is the uninterrupted one.
cat >save-kill.sh <<SH
#!/usr/bin/env bash
# The first launch only: rank 1 dies inside the save of step 40.
[ "\$PTRAIN_RESTART" = 0 ] && export PTRAIN_FAILPOINT=checkpoint.before_report@1#2
exec ${mpirun[*]} -np 2 $ptrain train --config job.yaml --set output_dir=out-save
SH
chmod +x save-kill.sh
"$launch" --state save.db --summary-json save.json --backoff 0.2 -- ./save-kill.sh >save.log 2>&1
code=$?
[ $code -eq 0 ] || { tail -30 save.log; fail "save: exit $code"; }
grep -q "failpoint checkpoint.before_report: rank 1" save.log || fail "save: the failpoint never fired"
grep -q "resumed from .*step-20 after step 20" save.log ||
  { grep resumed save.log; fail "save: the restart did not resume from step 20"; }
summary save "len(l) == 2" "l[0]['cause'] == 'exit' and l[0]['exit_code'] == 86" \
  "l[1]['first_step'] == 20"
same_adapter save 2

# wait_steps OUT N: until OUT/metrics.jsonl has logged N steps.
wait_steps() {
  python3 - "$1" "$2" <<'PY'
import sys, time
out, n = sys.argv[1], int(sys.argv[2])
end = time.time() + 300
while time.time() < end:
    try:
        if open(out + "/metrics.jsonl").read().count('"type":"step"') >= n:
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.01)
sys.exit(1)
PY
}

# SIGTERM to ptrain-launch (a preemption) whose command is a wrapper script (a shell that does
# not exec): the ranks checkpoint and exit 4, and so does the supervisor; started again on the
# same state (the requeue), it continues from that checkpoint.
cat >term.sh <<SH
#!/usr/bin/env bash
${mpirun[*]} -np 2 $ptrain train --config job.yaml --set output_dir=out-term
SH
chmod +x term.sh
"$launch" --state term.db --summary-json term.json --backoff 0.2 -- ./term.sh >term.log 2>&1 &
job_pid=$!
wait_steps out-term 10 || fail "term: no step 10"
kill -TERM "$job_pid"
finished term 4
summary term "len(l) == 1 and l[0]['cause'] == 'requeue' and not l[0]['restart']"
[ -f "out-term/checkpoints/step-$(python3 -c "import json; \
print(json.load(open('term.json'))['launches'][0]['last_step'])")/manifest.json" ] ||
  fail "term: no checkpoint at the stop step"
mv term.log term-1.log
"$launch" --state term.db --summary-json term.json --backoff 0.2 -- ./term.sh >term.log 2>&1 &
job_pid=$!
finished term 0
grep -q "the coordinator knows 1 earlier attempt" term.log || fail "term: not continued"
summary term "len(l) == 1 and l[0]['cause'] == 'finished' and l[0]['first_step'] >= 10"
same_adapter term 2

# SIGINT to ptrain-launch: a stop through the coordinator; every rank checkpoints and the job
# ends 0, not restarted.
supervise int 2
wait_steps out-int 10 || fail "int: no step 10"
kill -INT "$job_pid"
finished int 0
summary int "len(l) == 1 and l[0]['cause'] == 'stopped'"
grep -q "the job stopped after a checkpoint (SIGINT)" int.log || fail "int: summary"

# Progress logged rarely (logging_steps 1000) is still progress: the ranks' heartbeats carry
# their steps, so a stall timeout shorter than the run but longer than any step is not a stall.
# (The run must outlast the timeout twice over, or the check proves nothing.)
supervise quiet 2 --stall-timeout 8 -- --set logging_steps=100000 --set max_steps=1000 \
  --set gradient_accumulation_steps=2
finished quiet 0
summary quiet "len(l) == 1 and l[0]['cause'] == 'finished' and l[0]['last_step'] == 1000" \
  "l[0]['ended_unix_s'] - l[0]['started_unix_s'] > 16"

# Restarts exhausted, under a coordinator of its own: every launch dies in its first save.
"$bin/ptrain-coordinator" --listen 127.0.0.1:0 --state shared.db --address-file shared.addr \
  >coordinator.log 2>&1 &
coordinator_pid=$!
for _ in $(seq 200); do [ -s shared.addr ] && break; sleep 0.05; done
address=$(cat shared.addr)
PTRAIN_FAILPOINT=checkpoint.before_report@0 supervise spent 2 --coordinator "$address" \
  --max-restarts 2
finished spent 3
grep -q "gave up after 2 restarts" spent.log || fail "spent: no summary line"
summary spent "len(l) == 3" "all(x['cause'] == 'exit' for x in l)" "not l[-1]['restart']"
"$bin/ptrain-status" --coordinator "$address" --json >spent.status ||
  fail "spent: ptrain-status"
python3 - spent.status <<'PY' || fail "spent: the coordinator's state"
import json, sys
s = json.loads(open(sys.argv[1]).read())
assert s["state"] == "FAILED", s["state"]
a = s["attempts"]
assert len(a) == 3 and a[-1]["cause"] == "exit" and not a[-1].get("restart"), a
assert a[0]["restart"] and "exit code 86" in a[-1]["cause_message"], a
PY
kill "$coordinator_pid"
wait "$coordinator_pid"

# Bad input: never retried.
sed 's#data/alpaca.jsonl#data/missing.jsonl#' job.yaml >bad.yaml
config=bad.yaml supervise bad 2
finished bad 2
summary bad "len(l) == 1" "l[0]['cause'] == 'bad_input' and not l[0]['restart']"
grep -q "bad input (exit 2): a permanent failure, not retried" bad.log || fail "bad: no summary"

finish

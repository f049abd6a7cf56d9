#!/usr/bin/env bash
# End-to-end check of examples/slurm/train.sbatch under a real Slurm:
#   slurm_test.sh PTRAIN MPIEXEC REPO
# Starts munged, slurmctld and slurmd on this machine (one node of 2 CPUs; key, sockets, state,
# spool and logs in the scratch directory; all stopped at exit) and submits train.sbatch with the
# tiny preset, a one-minute time limit and --signal=USR1@20: Slurm's time-limit warning stops the
# job with a checkpoint (exit 4), the batch script requeues it, ptrain-status reaches the requeued
# run's coordinator, and the requeued run resumes from that checkpoint and finishes with an adapter
# byte-identical to an uninterrupted mpirun run's.
# Skips (77) when Slurm is not installed or cannot start here, unless CI=true or
# PTRAIN_REQUIRE_SLURM=1: then that is a failure.
source "$(dirname "$0")/common.sh"
ptrain=$1
mpiexec=${2:-mpirun}
repo=${3:-.}
bin=$(cd "$(dirname "$ptrain")" && pwd)
ptrain=$bin/$(basename "$ptrain")
repo=$(cd "$repo" && pwd)
mpirun=("$mpiexec" --oversubscribe --allow-run-as-root)
cd "$work" || exit 1

# ---------------------------------------------------------------- the private Slurm
skip() {
  if [ "${CI:-}" = true ] || [ "${PTRAIN_REQUIRE_SLURM:-0}" = 1 ]; then
    fail "Slurm must run here (CI=${CI:-} PTRAIN_REQUIRE_SLURM=${PTRAIN_REQUIRE_SLURM:-}): $*"
    finish
  fi
  echo "SKIP: $*"
  exit 77
}

# poll SECONDS COMMAND...: runs COMMAND every 0.2 s until it succeeds; false once SECONDS passed.
poll() {
  local end=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || return 1
    sleep 0.2
  done
}

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
no_jobs() { [ -z "$(squeue -h -o %i)" ]; }
node_idle() { [ "$(sinfo -h -n localhost -o %t)" = idle ]; }

# Ends every job, then the daemons this test started (by the pids in their pid files).
stop_slurm() {
  if [ -s slurm/slurmctld.pid ] && alive slurm/slurmctld.pid; then
    squeue -h -o %i | xargs -r scancel
    poll 30 no_jobs || echo "slurm_test: jobs still listed after scancel: $(squeue -h)"
    scontrol shutdown >/dev/null 2>&1
  fi
  local pidfile
  for pidfile in slurm/slurmctld.pid slurm/slurmd.pid munge/munged.pid; do
    alive "$pidfile" || continue
    poll 20 eval "! alive $pidfile" || kill -TERM "$(cat "$pidfile")" 2>/dev/null
    poll 10 eval "! alive $pidfile" || kill -KILL "$(cat "$pidfile")" 2>/dev/null
  done
}
trap 'stop_slurm; rm -rf "$work"' EXIT

for tool in munged munge slurmctld slurmd sbatch srun scontrol sinfo squeue scancel; do
  command -v "$tool" >/dev/null ||
    skip "$tool not found (scripts/install-deps.sh installs slurm-wlm and munge)"
done
[ "$(id -u)" -eq 0 ] || skip "slurmd runs jobs as root here (SlurmUser=root): run as root"

mkdir -m 711 munge
mkdir -p slurm/state slurm/spool
head -c 1024 /dev/urandom >munge/munge.key && chmod 400 munge/munge.key
# The daemons' own output goes to files: none may hold the test's stdout open.
munged --force --socket="$work/munge/socket" --key-file="$work/munge/munge.key" \
  --pid-file="$work/munge/munged.pid" --seed-file="$work/munge/seed" \
  --log-file="$work/munge/munged.log" </dev/null >munge/munged.out 2>&1 ||
  skip "munged did not start: $(tail -3 munge/munged.out munge/munged.log)"
poll 10 eval "munge -n -S '$work/munge/socket' | unmunge -S '$work/munge/socket'" ||
  skip "munge credentials do not round-trip: $(tail -3 munge/munged.log)"

read -r ctld_port slurmd_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
# Loopback only, no cgroups (linuxproc tracks a job's processes, task/none binds nothing), no
# accounting; the node's CPUs as configured whatever the machine has. cred_expire: how long a
# requeued job waits before it starts again (default 120 s). Debug level logs the warning signals.
export SLURM_CONF=$work/slurm/slurm.conf
cat >"$SLURM_CONF" <<EOF
ClusterName=ptraintest
SlurmctldHost=localhost
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$work/munge/socket,cred_expire=5
StateSaveLocation=$work/slurm/state
SlurmdSpoolDir=$work/slurm/spool
SlurmctldPidFile=$work/slurm/slurmctld.pid
SlurmdPidFile=$work/slurm/slurmd.pid
SlurmctldLogFile=$work/slurm/slurmctld.log
SlurmdLogFile=$work/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
MailProg=/bin/true
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmctldDebug=debug
NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld -f "$SLURM_CONF" </dev/null >slurm/slurmctld.out 2>&1 ||
  skip "slurmctld did not start: $(tail -3 slurm/slurmctld.out slurm/slurmctld.log)"
slurmd -f "$SLURM_CONF" -N localhost </dev/null >slurm/slurmd.out 2>&1 ||
  skip "slurmd did not start: $(tail -3 slurm/slurmd.out slurm/slurmd.log)"
poll 30 scontrol ping || skip "slurmctld does not answer: $(tail -3 slurm/slurmctld.log)"
poll 30 node_idle ||
  skip "the node is not idle: $(sinfo -h -N -o '%t %E'); $(tail -3 slurm/slurmd.log)"
mpi=pmix
srun --mpi=list 2>&1 | grep -qw pmix || mpi=pmi2
echo "slurm_test: $(sinfo -V) on ports $ctld_port/$slurmd_port, srun --mpi=$mpi"

# ---------------------------------------------------------------- the job
# Slurm checks time limits every 30 s and sends the warning at the first check that finds less
# than its time plus 30 s left: with --time=1 --signal=USR1@20, 10 to 40 s into the job (late
# enough for the ranks to be up). However fast this machine, the job must still be running then:
# it is submitted with more steps than it can run in a minute and, once stopped, given its real
# max_steps (the stop step + 500) before the requeue. The learning rate is constant, so that
# max_steps changes no step's arithmetic: the uninterrupted run then trains with the final config.
tiny_lora_job 400 job.yaml "lr_scheduler: constant" "learning_rate: 0.002" \
  "save_steps: 100000" "max_steps: 100000" "output_dir: out"

launch=$bin/ptrain-launch
if [ ! -x "$launch" ]; then
  echo "slurm_test: $launch not built: train.sbatch runs the ranks without it (PTRAIN_LAUNCH=none)"
  launch=none
fi
# Two ranks share two cores with the daemons: they yield when idle (mpirun --oversubscribe does
# that itself).
export OMPI_MCA_mpi_yield_when_idle=1
SECONDS=0
job=$(PTRAIN_BIN=$bin PTRAIN_CONFIG=job.yaml PTRAIN_OUTPUT_DIR=slurm-job PTRAIN_LAUNCH=$launch \
  PTRAIN_SRUN_MPI=$mpi sbatch --parsable --nodes=1 --ntasks-per-node=2 --time=1 \
  --signal=USR1@20 --output=slurm.out "$repo/examples/slurm/train.sbatch") ||
  { fail "sbatch failed"; finish; }

job_field() { scontrol show job -o "$job" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
job_ended() {
  case $(job_field JobState) in
    COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | PREEMPTED | BOOT_FAIL | DEADLINE) ;;
    *) return 1 ;;
  esac
}
stopped() { grep -q '"reason":"stopped"' slurm-job/metrics.jsonl; }
# The job's output and slurmctld's log, then the verdict.
finish_with_logs() {
  if [ "$failures" -ne 0 ]; then
    echo "---- slurm.out (tail)"
    tail -30 slurm.out
    echo "---- slurmctld.log (tail)"
    grep -v "Running job scheduler" slurm/slurmctld.log | tail -15
  fi
  finish
}

# The warning's stop: a checkpoint of the stop step; the requeued run then gets ten minutes, so
# that no second warning stops it.
poll 180 eval 'stopped || job_ended' ||
  { fail "no stop within 180 s: job $job $(job_field JobState)"; finish_with_logs; }
stopped || { fail "job $job ended ($(job_field JobState)) before a stop"; finish_with_logs; }
stop_step=$(grep '"reason":"stopped"' slurm-job/metrics.jsonl | head -1 | python3 -c '
import json, sys
print(json.loads(sys.stdin.readline())["steps"])')
[ -f "slurm-job/checkpoints/step-$stop_step/manifest.json" ] ||
  fail "no committed checkpoint of the stop step $stop_step: $(ls slurm-job/checkpoints)"
max_steps=$((stop_step + 500))
sed -i "s/^max_steps: .*/max_steps: $max_steps/" job.yaml
scontrol update JobId="$job" TimeLimit=10 || fail "scontrol update TimeLimit failed"
echo "slurm_test: stopped after step $stop_step, ${SECONDS}s after sbatch; max_steps now $max_steps"

# A dashboard finds the requeued run's coordinator by the address written next to the checkpoints.
registered() { grep -q "registered with the coordinator at .*: attempt 2" slurm.out; }
# The requeued run may finish first (it has 500 steps): then its coordinator is gone, and the
# state it left is read through a ptrain-coordinator started on it.
status_of_requeued_run() {
  "$bin/ptrain-status" --coordinator "$(cat slurm-job/coordinator.addr)" --json --timeout 2 \
    >status.json 2>status.err && return 0
  job_ended || return 1
  "$bin/ptrain-coordinator" --listen 127.0.0.1:0 --state slurm-job/coordinator.db \
    --address-file after.addr >after.log 2>&1 &
  local reader=$! code=1
  poll 30 test -s after.addr &&
    "$bin/ptrain-status" --coordinator "$(cat after.addr)" --json >status.json && code=0
  kill "$reader"
  wait "$reader"
  return $code
}
if poll 120 eval 'registered || job_ended' && registered; then
  poll 60 status_of_requeued_run ||
    fail "ptrain-status could not reach the requeued run's coordinator: $(cat status.err)"
  python3 - status.json "$stop_step" <<'PY' || fail "ptrain-status (above)"
import json, sys
s = json.load(open(sys.argv[1]))
a = s["attempts"]
assert s["state"] in ("STARTING", "RUNNING", "CHECKPOINTING", "FINISHED"), s["state"]
assert len(a) == 2 and a[0]["end_reason"] == "requeue", a
assert int(a[1].get("first_step", 0)) == int(sys.argv[2]), a[1]
PY
else
  fail "the requeued run never registered with its coordinator"
fi
poll 240 job_ended || fail "job $job did not end within 240 s: $(job_field JobState)"
echo "slurm_test: job $job $(job_field JobState) after ${SECONDS}s"

state="$(job_field JobState) $(job_field ExitCode)"
[ "$state" = "COMPLETED 0:0" ] || { fail "job $job: $state, expected COMPLETED 0:0"; finish_with_logs; }
[ "$(job_field Restarts)" = 1 ] ||
  fail "job $job was requeued $(job_field Restarts) times, expected once"
grep -q "send_job_warn_signal: warning signal 10 to JobId=$job\$" slurm/slurmctld.log ||
  fail "slurmctld logged no time-limit warning (SIGUSR1) to job $job"
grep -q "stopped after step $stop_step (requeue): exit 4" slurm.out ||
  fail "the job's output shows no stop for requeue after step $stop_step"
grep -q "requeueing job $job" slurm.out || fail "the batch script did not requeue the job"
grep -q "resumed from .*step-$stop_step after step" slurm.out ||
  fail "the requeued run did not resume from the stop step's checkpoint"
SECONDS=0
"${mpirun[@]}" -np 2 "$ptrain" train --config job.yaml --set output_dir=slurm-whole \
  >whole.log 2>&1 || { tail -20 whole.log; fail "the uninterrupted run failed"; }
echo "slurm_test: uninterrupted run of $max_steps steps: ${SECONDS}s"
python3 - slurm-job/metrics.jsonl "$stop_step" "$max_steps" <<'PY' || fail "metrics.jsonl (above)"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
stop, total = int(sys.argv[2]), int(sys.argv[3])
ends = [(l["reason"], l["steps"]) for l in lines if l["type"] == "end"]
assert ends == [("stopped", stop), ("finished", total)], f"ends {ends}: stop at {stop}, then finish"
steps = [l["step"] for l in lines if l["type"] == "step"]
assert steps == list(range(1, total + 1)), f"steps {steps[:2]}..{steps[-2:]}: not 1..{total}"
PY
cmp slurm-whole/final/adapter_model.safetensors slurm-job/final/adapter_model.safetensors ||
  fail "the requeued Slurm job's adapter differs from the uninterrupted run's"
finish_with_logs

# shellcheck shell=bash disable=SC2034
# Sourced by coordinator_test.sh and coordinator_security_test.sh, after their arguments
# (PTRAIN MPIEXEC REPO [PTRAIN_COORDINATOR [PTRAIN_STATUS]]; the last two default to PTRAIN's
# directory): the tiny model and data, the job's config, the dashboard (dashboard_client.py with
# its reflection proto compiled here), and servers and jobs started in the background that a trap
# stops on exit. Every wait polls a condition against a deadline.
source "$(dirname "$0")/common.sh"
# Absolute: the checks run in the scratch directory.
ptrain=$(readlink -f "$1")
mpiexec=${2:-mpirun}
repo=$(readlink -f "${3:-.}")
coordinator=$(readlink -f "${4:-$(dirname "$ptrain")/ptrain-coordinator}")
status_bin=$(readlink -f "${5:-$(dirname "$ptrain")/ptrain-status}")
mpirun=("$mpiexec" --oversubscribe --allow-run-as-root)

# Every process started here in the background (servers, mpirun, a dashboard) and not yet waited
# for is stopped on exit: by the shell's own job table, never by name.
stop_started() {
  local pids pid i
  pids=$(jobs -p)
  [ -n "$pids" ] || return 0
  for pid in $pids; do kill -TERM "$pid" 2>/dev/null; done
  for pid in $pids; do
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
  done
}
trap 'stop_started; rm -rf "$work"' EXIT
cd "$work" || exit 1

# A Python with grpcio and protobuf (Debian's python3-grpcio, python3-protobuf): the dashboard
# is written against them, and a missing one is a failure, not a skip.
py=
for candidate in /usr/bin/python3 python3; do
  if "$candidate" -c 'import grpc, google.protobuf' 2>/dev/null; then
    py=$candidate
    break
  fi
done
if [ -z "$py" ]; then
  fail "no python3 with grpcio and protobuf (apt-get install python3-grpcio python3-protobuf)"
  finish
fi
mkdir -p proto
protoc -I"$repo/tests/e2e/grpc_reflection" --python_out=proto \
  "$repo/tests/e2e/grpc_reflection/reflection.proto" || { fail "protoc reflection.proto"; finish; }
export DASHBOARD_PROTO_DIR=$work/proto
dash=("$py" "$repo/tests/e2e/dashboard_client.py")

# wait_for_file FILE SECONDS: until FILE exists and is not empty.
wait_for_file() {
  local end=$((SECONDS + $2))
  while [ ! -s "$1" ]; do
    [ $SECONDS -lt $end ] || return 1
    sleep 0.05
  done
}

# start_coordinator NAME FLAGS...: ptrain-coordinator in the background, logging to NAME.log;
# returns once it wrote its address to NAME.addr (and sets $pid_NAME).
start_coordinator() {
  local name=$1
  shift
  rm -f "$name.addr"
  "$coordinator" --address-file "$name.addr" "$@" >>"$name.log" 2>&1 &
  local pid=$!
  printf -v "pid_$name" %s "$pid"
  local end=$((SECONDS + 20))
  while [ ! -s "$name.addr" ]; do
    if ! kill -0 "$pid" 2>/dev/null || [ $SECONDS -ge $end ]; then
      cat "$name.log"
      return 1
    fi
    sleep 0.05
  done
}

# start_job NAME [--set k=v ...]: `ptrain train` of job.yaml on 2 ranks in the background,
# output in out-NAME, log NAME.log; sets $job_NAME to mpirun's pid.
start_job() {
  local name=$1
  shift
  "${mpirun[@]}" -np 2 "$ptrain" train --config job.yaml --set output_dir="out-$name" "$@" \
    >"$name.log" 2>&1 &
  printf -v "job_$name" %s "$!"
}

# wait_job PID SECONDS: the job's exit code; 124 (and the job killed) when it runs longer.
wait_job() {
  local end=$((SECONDS + $2))
  while kill -0 "$1" 2>/dev/null; do
    if [ $SECONDS -ge $end ]; then
      kill -TERM "$1" 2>/dev/null
      wait "$1" 2>/dev/null
      return 124
    fi
    sleep 0.1
  done
  wait "$1"
}

# stop_server PID: SIGTERM, and its exit.
stop_server() {
  kill -TERM "$1" 2>/dev/null
  wait "$1" 2>/dev/null
}

"$ptrain" init-model --preset tiny --out model >/dev/null || fail "init-model"
python3 "$repo/examples/make_tiny_data.py" data --rows 200 >/dev/null || fail "make_tiny_data"
# Full training of the tiny model: ~30 ms a step on 2 ranks of a small machine; every step
# logged (the reference the coordinator's metrics are compared with).
cat > job.yaml <<'EOF'
base_model: model
datasets:
  - path: data/alpaca.jsonl
    type: alpaca
val_set_size: 0
sequence_len: 256
sample_packing: true
micro_batch_size: 1
gradient_accumulation_steps: 1
max_steps: 200
logging_steps: 1
save_steps: 50
learning_rate: 0.001
warmup_steps: 1
logging:
  console: rank0
coordinator:
  heartbeat_interval: 0.1
  rpc_timeout: 2
  commit_timeout: 2
EOF

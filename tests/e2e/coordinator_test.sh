#!/usr/bin/env bash
# End-to-end checks of the coordinator with real 2-rank jobs:
#   coordinator_test.sh PTRAIN MPIEXEC REPO [PTRAIN_COORDINATOR [PTRAIN_STATUS]]
# A dashboard in Python that knows the service only through server reflection
# (dashboard_client.py) follows real 2-rank jobs; what it sees is compared with the jobs' own
# records (metrics.jsonl, the checkpoint directories on disk), never with the coordinator's
# earlier answers. 1: a job followed to the end, and its Prometheus /metrics; 2: a job that ends
# between two heartbeats still delivers its last steps before its end; 3: the coordinator killed
# and restarted on the same port mid-run; 4: ... and restarted while the job ends; 5: the
# in-process coordinator (no coordinator.address), read by ptrain-status, and its state file
# served again after the job; 6: RequestCheckpoint and RequestStop carried out by the job; 7: a
# stop requested while every step saves.
# Authentication, TLS and malformed requests: coordinator_security_test.sh.
# pid_NAME and job_NAME are set by start_coordinator and start_job (coordinator_common.sh):
# shellcheck disable=SC2154
source "$(dirname "$0")/coordinator_common.sh"

# ---- shared checks (python, reading the dashboard's JSON answers)

# same_metrics OUT METRICS_JSON: the coordinator's GetMetrics points are the logged steps of
# OUT/metrics.jsonl, one each, with the same loss, learning rate and tokens/s.
same_metrics() {
  "$py" - "$@" <<'PY'
import json, sys
out, got = sys.argv[1], json.load(open(sys.argv[2]))
logged = [l for l in map(json.loads, open(out + "/metrics.jsonl")) if l["type"] == "step"]
points = [p for p in got.get("points", []) if p["eval_loss"] == "NaN"]  # not an eval's point
want = [l["step"] for l in logged]
have = [int(p["step"]) for p in points]
assert have == want, f"GetMetrics steps {have[:5]}..{have[-5:]} ({len(have)}), metrics.jsonl {want[:5]}..{want[-5:]} ({len(want)})"
for l, p in zip(logged, points):
    for mine, theirs in (("loss", "loss"), ("lr", "learning_rate"), ("tokens_per_s", "tokens_per_second")):
        a, b = float(l[mine]), float(p[theirs])
        same = abs(a - b) <= 1e-6 * abs(a) or (a != a and b != b)  # NaN: a non-finite step
        assert same, f"step {l['step']} {mine}: metrics.jsonl {a!r}, GetMetrics {b!r}"
PY
}

# same_checkpoints OUT LIST_JSON: the coordinator's ListCheckpoints (newest first) are exactly the
# committed step-N directories under OUT/checkpoints, each once, with the step of its name.
same_checkpoints() {
  "$py" - "$@" <<'PY'
import json, os, re, sys
out, got = sys.argv[1], json.load(open(sys.argv[2]))
root = os.path.join(out, "checkpoints")
disk = {os.path.realpath(os.path.join(root, d)): int(m.group(1))
        for d in os.listdir(root) if (m := re.fullmatch(r"step-(\d+)", d))}
listed = [(os.path.realpath(c["dir"]), int(c["step"])) for c in got.get("checkpoints", [])]
assert len(listed) == len(set(listed)), f"listed twice: {listed}"
assert dict(listed) == disk, f"ListCheckpoints {sorted(dict(listed).values())}, on disk {sorted(disk.values())}"
steps = [s for _, s in listed]
assert steps == sorted(steps, reverse=True), f"not newest first: {steps}"
PY
}

# ---- 1. a dashboard follows a job; Prometheus /metrics beside it
start_coordinator c1 --listen 127.0.0.1:0 --state c1.db --heartbeat-interval 0.1 \
  --metrics-listen 127.0.0.1:0 || fail "1: ptrain-coordinator did not start"
a1=$(cat c1.addr)
m1=$("${dash[@]}" metrics-port c1.log --timeout 10) || fail "1: no metrics address in the log"
start_job j1 --set coordinator.address="$a1" --set coordinator.job_id=dash
"${dash[@]}" poll "$a1" --until-state FINISHED --timeout 150 --job-pid "$job_j1" --record poll1.json \
  >poll1.out 2>&1 &
poller=$!
# /metrics while the job runs: its step lies between two GetJobStatus answers around the scrape.
"${dash[@]}" poll "$a1" --min-step 20 --timeout 120 --job-pid "$job_j1" >/dev/null ||
  fail "1: the job never reached step 20"
"${dash[@]}" scrape "$a1" "http://$m1/metrics" --out scrape1-during.json || fail "1: scrape during the job"
"$py" - "$repo/tests/e2e" scrape1-during.json <<'PY' || fail "1: /metrics during the job"
import json, sys
sys.path.insert(0, sys.argv.pop(1))
from prometheus_samples import samples
scrape = json.load(open(sys.argv[1]))
before, after = int(scrape["before"]["step"]), int(scrape["after"]["step"])
(step,) = samples(scrape["text"], "ptrain_job_step")
assert before <= int(step["value"]) <= after, (before, step, after)
assert after < int(scrape["after"]["total_steps"]), "the job ended before the scrape: too fast to check"
PY
wait_job "$job_j1" 150 || { tail -20 j1.log; fail "1: the job failed"; }
wait "$poller" || { cat poll1.out; fail "1: the dashboard did not see FINISHED"; }
"${dash[@]}" call "$a1" GetJobStatus --out status1.json || fail "1: GetJobStatus"
"${dash[@]}" call "$a1" GetMetrics --out metrics1.json || fail "1: GetMetrics"
"${dash[@]}" call "$a1" ListCheckpoints --out checkpoints1.json || fail "1: ListCheckpoints"
"$py" - <<'PY' || fail "1: what the dashboard saw during and after the job"
import json
record, status = json.load(open("poll1.json")), json.load(open("status1.json"))
logged = [json.loads(l) for l in open("out-j1/metrics.jsonl")]
last = [l for l in logged if l["type"] == "step"][-1]
end = logged[-1]
assert end["type"] == "end" and end["reason"] == "finished" and end["steps"] == 200, end
assert record["last"]["state"] == "FINISHED" and status["state"] == "FINISHED", (record["states"], status["state"])
assert int(record["last"]["step"]) == 200, f"the dashboard saw FINISHED at step {record['last']['step']}"
total = int(status["total_steps"])
assert total == 200 and int(status["step"]) == last["step"] == total, (status["step"], last["step"], total)
assert abs(status["loss"] - last["loss"]) <= 1e-6 * abs(last["loss"]), (status["loss"], last["loss"])
assert abs(status["learning_rate"] - last["lr"]) <= 1e-6 * abs(last["lr"]), (status["learning_rate"], last["lr"])
steps = record["steps"]
assert steps == sorted(steps), f"the step went back: {steps}"
running = [s for s in steps if 0 < s < total]
assert len(running) >= 3, f"the dashboard saw only {running} while the job ran (steps seen: {steps})"
assert "RUNNING" in record["states"], record["states"]
assert status["job_id"] == "dash" and status["world"] == 2, (status["job_id"], status["world"])
(attempt,) = status["attempts"]
assert attempt["end_reason"] == "finished" and attempt["world"] == 2, attempt
assert int(attempt["last_step"]) == total, attempt
assert [r["rank"] for r in status["ranks"]] == [0, 1] and all(r["host"] for r in status["ranks"]), status["ranks"]
assert not any(r["lost"] for r in status["ranks"]), status["ranks"]
assert int(status["last_checkpoint"]["step"]) == total, status["last_checkpoint"]
assert status["pending_commands"] == [], status["pending_commands"]
PY
same_metrics out-j1 metrics1.json || fail "1: GetMetrics differs from metrics.jsonl"
same_checkpoints out-j1 checkpoints1.json || fail "1: ListCheckpoints differs from the checkpoints on disk"
# /metrics after the job: the status's step, state and last checkpoint, HELP and TYPE per family.
"${dash[@]}" scrape "$a1" "http://$m1/metrics" --out scrape1-after.json || fail "1: scrape after the job"
"$py" - "$repo/tests/e2e" scrape1-after.json <<'PY' || fail "1: /metrics after the job"
import json, sys
sys.path.insert(0, sys.argv.pop(1))
from prometheus_samples import samples, declared
scrape = json.load(open(sys.argv[1]))
text, status = scrape["text"], scrape["after"]
assert scrape["content_type"].startswith("text/plain"), scrape["content_type"]
for name in ("ptrain_job_step", "ptrain_job_total_steps", "ptrain_job_loss", "ptrain_job_state",
             "ptrain_rank_step", "ptrain_job_last_checkpoint_step"):
    assert declared(text, name) == "gauge", f"{name}: no HELP and TYPE gauge lines"
def one(name):
    (sample,) = samples(text, name)
    assert "dash" in sample["labels"].values(), f"{name} does not name the job: {sample}"
    return sample["value"]
assert one("ptrain_job_step") == status["step"] == status["total_steps"], (one("ptrain_job_step"), status["step"])
assert one("ptrain_job_total_steps") == status["total_steps"]
assert one("ptrain_job_last_checkpoint_step") == status["last_checkpoint"]["step"]
assert abs(float(one("ptrain_job_loss")) - status["loss"]) <= 1e-9 * abs(status["loss"])
states = {s["labels"]["state"]: s["value"] for s in samples(text, "ptrain_job_state")}
assert states.pop("finished") == "1" and set(states.values()) == {"0"}, states
ranks = {s["labels"]["rank"]: s for s in samples(text, "ptrain_rank_step")}
assert sorted(ranks) == ["0", "1"], ranks
for r in status["ranks"]:
    sample = ranks[str(r["rank"])]
    assert sample["value"] == r["step"] and sample["labels"]["host"] == r["host"], (sample, r)
PY
stop_server "$pid_c1" || fail "1: ptrain-coordinator did not stop cleanly on SIGTERM"

# ---- 2. the end of a job carries its last steps, whatever the heartbeat interval
# The ranks heartbeat every 30 s here, so the job (seconds) ends between two heartbeats: its steps
# since the first heartbeat reach the coordinator only as the attempt ends, and before its end.
start_coordinator c2 --listen 127.0.0.1:0 --state c2.db --heartbeat-interval 30 ||
  fail "2: ptrain-coordinator did not start"
a2=$(cat c2.addr)
start_job j2 --set coordinator.address="$a2" --set max_steps=30 --set save_steps=0
"${dash[@]}" poll "$a2" --until-state FINISHED --timeout 120 --job-pid "$job_j2" \
  --record poll2.json >poll2.out 2>&1 || { cat poll2.out; fail "2: the dashboard did not see FINISHED"; }
wait_job "$job_j2" 60 || { tail -20 j2.log; fail "2: the job failed"; }
"${dash[@]}" call "$a2" GetMetrics --out metrics2.json || fail "2: GetMetrics"
"$py" - <<'PY' || fail "2: the job was FINISHED before its last step"
import json
first_finished = json.load(open("poll2.json"))["last"]
assert int(first_finished["step"]) == 30, f"FINISHED at step {first_finished['step']} of 30"
PY
same_metrics out-j2 metrics2.json || fail "2: GetMetrics lacks steps of the job's end"
stop_server "$pid_c2" || fail "2: ptrain-coordinator did not stop cleanly"

# ---- 3. the coordinator killed mid-run and started again on the same port and state
# The job goes on while it is down (a checkpoint is committed then), its ranks come back to the
# new one and tell it what it missed: the history from before the kill and after the restart is
# one. The job is then stopped (it would run for minutes), so that it ends only once the ranks
# are back, however long they take.
start_coordinator c3 --listen 127.0.0.1:0 --state c3.db --heartbeat-interval 0.1 ||
  fail "3: ptrain-coordinator did not start"
a3=$(cat c3.addr)
start_job j3 --set coordinator.address="$a3" --set max_steps=3000 --set save_steps=25
"${dash[@]}" poll "$a3" --min-step 10 --timeout 120 --job-pid "$job_j3" >/dev/null ||
  fail "3: the job never reached step 10"
{ kill -KILL "$pid_c3" && wait "$pid_c3"; } 2>/dev/null  # bash's "Killed" line too
killed_at=$(date +%s.%N)
# Down until rank 0 noticed and the job committed two checkpoints (manifests written after the
# kill): the ranks' calls have failed a few times by then, as in a real outage.
"$py" - "$killed_at" "$job_j3" <<'PY' || fail "3: no checkpoints committed while the coordinator was down"
import json, os, re, sys, time
killed, job = float(sys.argv[1]), sys.argv[2]
deadline = time.monotonic() + 60
while time.monotonic() < deadline and os.path.exists(f"/proc/{job}"):
    missed = {}
    for d in os.listdir("out-j3/checkpoints"):
        if re.fullmatch(r"step-\d+", d):
            mtime = os.stat(f"out-j3/checkpoints/{d}/manifest.json").st_mtime
            if mtime > killed:
                missed[int(d[5:])] = mtime
    noticed = "does not answer" in open("j3.log", errors="replace").read()
    if len(missed) >= 2 and noticed:
        json.dump(missed, open("missed3.json", "w"))
        raise SystemExit(0)
    time.sleep(0.05)
raise SystemExit("not within 60 s, or the job ended")
PY
start_coordinator c3 --listen "$a3" --state c3.db --heartbeat-interval 0.1 ||
  fail "3: ptrain-coordinator did not start again on $a3"
restarted_at=$(date +%s.%N)
[ "$(cat c3.addr)" = "$a3" ] || fail "3: restarted on $(cat c3.addr), not $a3"
# Back: the job's step and every rank's step move past what the state file kept.
"$py" - "$a3" "$job_j3" "$restarted_at" "${dash[@]}" <<'PY' || fail "3: the ranks did not come back"
import json, os, subprocess, sys, time
addr, job, restarted, dash = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4:]
def status():
    return json.loads(subprocess.run(dash + ["call", addr, "GetJobStatus"], check=True,
                                     capture_output=True, text=True).stdout)
kept = status()
deadline = time.monotonic() + 60
while time.monotonic() < deadline and os.path.exists(f"/proc/{job}"):
    now = status()
    if int(now["step"]) > int(kept["step"]) and all(
            int(r["step"]) > int(k["step"]) for r, k in zip(now["ranks"], kept["ranks"])):
        json.dump({"seconds": time.time() - restarted, "kept": kept["step"]}, open("back3.json", "w"))
        raise SystemExit(0)
    time.sleep(0.1)
raise SystemExit(f"not within 60 s (or the job ended): {kept['step']} -> {now['step']}")
PY
# How soon: the ranks' backoff (0.2 s doubling) after an outage of a second or two, plus a
# connection: a few seconds, not the tens of seconds of a channel that waits out its own backoff.
"$py" - <<'PY' || fail "3: the ranks came back late"
import json
back = json.load(open("back3.json"))
assert back["seconds"] < 8, f"the ranks reached the restarted coordinator {back['seconds']:.1f} s after it was back"
PY
"${dash[@]}" call "$a3" RequestStop '{"reason": "e2e: the restart is checked"}' >/dev/null ||
  fail "3: RequestStop"
wait_job "$job_j3" 60 || { tail -20 j3.log; fail "3: the job failed or did not stop"; }
"${dash[@]}" poll "$a3" --until-state FINISHED --timeout 30 --record poll3.json >poll3.out 2>&1 ||
  { cat poll3.out; fail "3: the restarted coordinator does not show the job FINISHED"; }
"${dash[@]}" call "$a3" GetJobStatus --out status3.json || fail "3: GetJobStatus"
"${dash[@]}" call "$a3" GetMetrics --out metrics3.json || fail "3: GetMetrics"
"${dash[@]}" call "$a3" ListCheckpoints --out checkpoints3.json || fail "3: ListCheckpoints"
"${dash[@]}" call "$a3" ListEvents '{"limit": 1000}' --out events3.json || fail "3: ListEvents"
same_metrics out-j3 metrics3.json || fail "3: GetMetrics differs from metrics.jsonl across the restart"
same_checkpoints out-j3 checkpoints3.json || fail "3: ListCheckpoints differs from the checkpoints on disk"
"$py" - "$killed_at" "$restarted_at" <<'PY' || fail "3: the history across the restart"
import json, sys
killed, restarted = float(sys.argv[1]), float(sys.argv[2])
status = json.load(open("status3.json"))
points = json.load(open("metrics3.json"))["points"]
events = json.load(open("events3.json"))["events"]
missed = {int(step): mtime for step, mtime in json.load(open("missed3.json")).items()}
listed = {int(c["step"]): c for c in json.load(open("checkpoints3.json"))["checkpoints"]}
end = [json.loads(l) for l in open("out-j3/metrics.jsonl")][-1]
assert end["type"] == "end" and end["reason"] == "stopped", end
stop = end["steps"]
assert status["state"] == "FINISHED" and int(status["step"]) == stop, (status["state"], status["step"], stop)
(attempt,) = status["attempts"]  # the restart opened no attempt
assert attempt["end_reason"] == "stopped" and int(attempt["last_step"]) == stop, attempt
before = [p for p in points if p["unix_s"] < killed]
after = [p for p in points if p["unix_s"] > restarted]
assert len(before) >= 10 and len(after) >= 10, (len(before), len(after))
# Committed while it was down: listed once it is back, with the time the job committed it.
for step, mtime in missed.items():
    assert step in listed, f"committed while down: {sorted(missed)}; listed: {sorted(listed)}"
    when = listed[step]["committed_unix_s"]
    assert killed < when < restarted and abs(when - mtime) < 2, (step, killed, when, mtime, restarted)
def first(kind):
    found = [e for e in events if e["kind"] == kind]
    assert found, f"no {kind} event in {[e['kind'] for e in events]}"
    return found
assert first("attempt_started")[0]["unix_s"] < killed
(ended,) = first("attempt_ended")
assert ended["unix_s"] > restarted and "(stopped)" in ended["message"], ended
ids = [int(e["id"]) for e in events]
assert ids == sorted(set(ids)), ids
committed = first("checkpoint_committed")
assert len(committed) == len(listed), (len(committed), sorted(listed))
for step in missed:  # heard of after the restart
    (event,) = [e for e in committed if f"checkpoint of step {step} committed" in e["message"]]
    assert event["unix_s"] > restarted, (event, restarted)
PY
stop_server "$pid_c3" || fail "3: ptrain-coordinator did not stop cleanly"

# ---- 4. the coordinator back while the job ends
# Down from step 10 until the job has trained its last step, then started again: the ranks are
# still sending the end of the attempt (for up to rpc_timeout, 10 s here), which is their cue to
# try now: the coordinator hears the end, with the steps it missed, within a few seconds.
start_coordinator c4 --listen 127.0.0.1:0 --state c4.db --heartbeat-interval 0.1 ||
  fail "4: ptrain-coordinator did not start"
a4=$(cat c4.addr)
start_job j4 --set coordinator.address="$a4" --set max_steps=600 --set save_steps=0 \
  --set coordinator.rpc_timeout=10
"${dash[@]}" poll "$a4" --min-step 10 --timeout 120 --job-pid "$job_j4" >/dev/null ||
  fail "4: the job never reached step 10"
{ kill -KILL "$pid_c4" && wait "$pid_c4"; } 2>/dev/null
"$py" - "$job_j4" <<'PY' || fail "4: the job did not train its last step"
import json, os, sys, time
deadline = time.monotonic() + 150
while time.monotonic() < deadline and os.path.exists(f"/proc/{sys.argv[1]}"):
    # Only whole lines: the last may be half written.
    lines = open("out-j4/metrics.jsonl").read().split("\n")[:-1]
    if lines and json.loads(lines[-1])["type"] == "end":
        raise SystemExit(0)
    time.sleep(0.05)
raise SystemExit("no end line in out-j4/metrics.jsonl")
PY
start_coordinator c4 --listen "$a4" --state c4.db --heartbeat-interval 0.1 ||
  fail "4: ptrain-coordinator did not start again on $a4"
restarted_at=$(date +%s.%N)
wait_job "$job_j4" 60 || { tail -20 j4.log; fail "4: the job failed"; }
"${dash[@]}" poll "$a4" --until-state FINISHED --timeout 5 --record poll4.json >poll4.out 2>&1 ||
  { cat poll4.out; fail "4: the coordinator did not hear the end of the attempt"; }
"${dash[@]}" call "$a4" GetMetrics --out metrics4.json || fail "4: GetMetrics"
"$py" - "$restarted_at" <<'PY' || fail "4: the status after the end"
import json, sys
last = json.load(open("poll4.json"))["last"]
(attempt,) = last["attempts"]
assert int(last["step"]) == 600 and attempt["end_reason"] == "finished", (last["step"], attempt)
late = attempt["ended_unix_s"] - float(sys.argv[1])
assert late < 3, f"the end of the attempt reached the coordinator {late:.1f} s after it was back"
PY
same_metrics out-j4 metrics4.json || fail "4: GetMetrics lacks the steps trained while it was down"
stop_server "$pid_c4" || fail "4: ptrain-coordinator did not stop cleanly"

# ---- 5. the in-process coordinator: rank 0 runs it when the job names none
start_job j5 --set max_steps=300
wait_for_file out-j5/coordinator.addr 60 || { tail -20 j5.log; fail "5: no out-j5/coordinator.addr"; }
a5=$(cat out-j5/coordinator.addr)
# ptrain-status --json while the job runs: both ranks registered, a step done, not the last.
"$py" - "$status_bin" "$a5" "$job_j5" <<'PY' || fail "5: ptrain-status --json during the job"
import json, os, subprocess, sys, time
deadline, seen = time.monotonic() + 60, None
while time.monotonic() < deadline and os.path.exists(f"/proc/{sys.argv[3]}"):
    run = subprocess.run([sys.argv[1], "--coordinator", sys.argv[2], "--json"], capture_output=True, text=True)
    if run.returncode == 0:
        seen = json.loads(run.stdout)
        if seen["world"] == 2 and int(seen["step"]) >= 1 and len(seen["ranks"]) == 2:
            break
    time.sleep(0.1)
else:
    raise SystemExit(f"not seen running within 60 s, or the job ended: {seen}")
assert int(seen["step"]) < 300 and seen["state"] in ("RUNNING", "CHECKPOINTING"), (seen["step"], seen["state"])
assert seen["job_id"] == "out-j5", seen["job_id"]  # output_dir's name
PY
wait_job "$job_j5" 150 || { tail -20 j5.log; fail "5: the job failed"; }
[ -s out-j5/coordinator.db ] || fail "5: no out-j5/coordinator.db"
# The job's state file, served again by a standalone coordinator.
start_coordinator c5 --listen 127.0.0.1:0 --state out-j5/coordinator.db ||
  fail "5: ptrain-coordinator over the job's state file did not start"
a5s=$(cat c5.addr)
"$status_bin" --coordinator "$a5s" --json >status5.json 2>status5.err ||
  { cat status5.err; fail "5: ptrain-status --json of the job's state file"; }
"$status_bin" --coordinator "$a5s" >status5.txt 2>&1 || fail "5: ptrain-status (the table)"
"${dash[@]}" call "$a5s" GetMetrics --out metrics5.json || fail "5: GetMetrics"
"${dash[@]}" call "$a5s" ListCheckpoints --out checkpoints5.json || fail "5: ListCheckpoints"
"$py" - <<'PY' || fail "5: the state file's status after the job"
import json
status = json.load(open("status5.json"))
last = [json.loads(l) for l in open("out-j5/metrics.jsonl") if '"step"' in l][-1]
assert status["state"] == "FINISHED", status["state"]
assert int(status["step"]) == last["step"] == 300, (status["step"], last["step"])
assert abs(status["loss"] - last["loss"]) <= 1e-6 * abs(last["loss"]), (status["loss"], last["loss"])
(attempt,) = status["attempts"]
assert attempt["end_reason"] == "finished" and attempt["world"] == 2, attempt
PY
grep -qi finished status5.txt || fail "5: the status table does not say FINISHED: $(head -5 status5.txt)"
same_metrics out-j5 metrics5.json || fail "5: the state file's metrics differ from metrics.jsonl"
same_checkpoints out-j5 checkpoints5.json || fail "5: the state file's checkpoints differ from disk"
stop_server "$pid_c5" || fail "5: ptrain-coordinator did not stop cleanly"

# ---- 6. commands: a checkpoint on request (at no save_steps step), then a stop
start_coordinator c6 --listen 127.0.0.1:0 --state c6.db --heartbeat-interval 0.1 ||
  fail "6: ptrain-coordinator did not start"
a6=$(cat c6.addr)
# Unstopped it would run 3000 steps (saving only at 1000, 2000, 3000) for minutes.
start_job j6 --set coordinator.address="$a6" --set max_steps=3000 --set save_steps=1000
"${dash[@]}" poll "$a6" --min-step 5 --timeout 120 --job-pid "$job_j6" >/dev/null ||
  fail "6: the job never reached step 5"
"${dash[@]}" call "$a6" RequestCheckpoint '{"reason": "e2e: a checkpoint now"}' >request6.json ||
  fail "6: RequestCheckpoint"
"$py" - "$a6" "$job_j6" "${dash[@]}" <<'PY' || fail "6: no checkpoint on request"
import json, os, subprocess, sys, time
addr, job, dash = sys.argv[1], sys.argv[2], sys.argv[3:]
deadline = time.monotonic() + 60
while time.monotonic() < deadline and os.path.exists(f"/proc/{job}"):
    status = json.loads(subprocess.run(dash + ["call", addr, "GetJobStatus"], check=True,
                                       capture_output=True, text=True).stdout)
    step = int(status["last_checkpoint"]["step"])
    if step > 0 and not status["pending_commands"]:
        json.dump(step, open("requested6.json", "w"))
        assert step % 1000 != 0, step
        raise SystemExit(0)
    time.sleep(0.1)
raise SystemExit(f"none within 60 s (or the job ended): {status['last_checkpoint']}, pending {status['pending_commands']}")
PY
"${dash[@]}" call "$a6" RequestStop '{"reason": "e2e: stop now"}' >/dev/null || fail "6: RequestStop"
wait_job "$job_j6" 60 || { tail -20 j6.log; fail "6: the job did not end (exit 0) after RequestStop"; }
"${dash[@]}" poll "$a6" --until-state FINISHED --timeout 30 >poll6.out 2>&1 ||
  { cat poll6.out; fail "6: the coordinator does not show the stopped job FINISHED"; }
"${dash[@]}" call "$a6" GetJobStatus --out status6.json || fail "6: GetJobStatus"
"${dash[@]}" call "$a6" ListCheckpoints --out checkpoints6.json || fail "6: ListCheckpoints"
"${dash[@]}" call "$a6" ListEvents '{"limit": 1000}' --out events6.json || fail "6: ListEvents"
same_checkpoints out-j6 checkpoints6.json || fail "6: ListCheckpoints differs from the checkpoints on disk"
"$py" - <<'PY' || fail "6: the requested checkpoint and the stop"
import json, os
status = json.load(open("status6.json"))
requested = json.load(open("requested6.json"))
end = [json.loads(l) for l in open("out-j6/metrics.jsonl")][-1]
assert end["type"] == "end" and end["reason"] == "stopped", end
stop = end["steps"]
assert requested < stop < 3000, (requested, stop)
disk = sorted(int(d[5:]) for d in os.listdir("out-j6/checkpoints") if d.startswith("step-") and d[5:].isdigit())
assert disk == [requested, stop], f"checkpoints on disk {disk}: expected the requested {requested} and the stop's {stop}"
assert os.path.exists("out-j6/final/config.json"), "no final/ after the stop"
(attempt,) = status["attempts"]
assert attempt["end_reason"] == "stopped" and int(attempt["last_step"]) == stop, attempt
assert status["state"] == "FINISHED" and int(status["step"]) == stop, (status["state"], status["step"])
assert int(status["last_checkpoint"]["step"]) == stop, status["last_checkpoint"]
assert status["pending_commands"] == [], status["pending_commands"]
kinds = [e["kind"] for e in json.load(open("events6.json"))["events"]]
for kind in ("checkpoint_requested", "stop_requested", "attempt_ended"):
    assert kind in kinds, (kind, kinds)
assert kinds.index("checkpoint_requested") < kinds.index("stop_requested") < kinds.index("attempt_ended"), kinds
PY
# Any rank may hear of it first (and its vote stops them all): each writes its own log.
cat j6.log out-j6/logs/*.log | grep -q "the coordinator asks for a stop" ||
  fail "6: the job's logs do not say the coordinator asked for a stop"
stop_server "$pid_c6" || fail "6: ptrain-coordinator did not stop cleanly"


# ---- 7. a stop heard while every step saves a checkpoint is still carried out (the ranks mark
# handled only the commands some rank had seen when it voted, not those heard during the save)
start_coordinator c7 --listen 127.0.0.1:0 --state c7.db --heartbeat-interval 0.05 ||
  fail "7: ptrain-coordinator did not start"
a7=$(cat c7.addr)
start_job j7 --set coordinator.address="$a7" --set max_steps=3000 --set save_steps=1 \
  --set checkpoint.keep_last=2
"${dash[@]}" poll "$a7" --min-step 3 --timeout 120 --job-pid "$job_j7" >/dev/null ||
  fail "7: the job never reached step 3"
"${dash[@]}" call "$a7" RequestStop '{"reason": "e2e: stop during saves"}' >/dev/null ||
  fail "7: RequestStop"
wait_job "$job_j7" 120 || { tail -20 j7.log; fail "7: the job failed or did not stop"; }
"$py" - <<'PY' || fail "7: the stop was not carried out"
import json
end = [json.loads(l) for l in open("out-j7/metrics.jsonl")][-1]
assert end["type"] == "end" and end["reason"] == "stopped" and end["steps"] < 3000, end
PY
stop_server "$pid_c7" || fail "7: ptrain-coordinator did not stop cleanly"

finish

#!/usr/bin/env bash
# End-to-end checks of the coordinator's boundary:
#   coordinator_security_test.sh PTRAIN MPIEXEC REPO [PTRAIN_COORDINATOR [PTRAIN_STATUS]]
# 1: malformed, oversized and out-of-bounds requests are refused and change nothing; 2: the
# bearer token (every RPC of ptrain.v1.Coordinator needs it, the health check does not), a job
# that carries it and one that carries a wrong one; 3: TLS with a test CA made here (plaintext to
# the TLS port fails fast and harms nothing), mutual TLS, and a job whose ranks dial over mTLS.
# The requests come from dashboard_client.py, which knows the service only through reflection.
# pid_NAME and job_NAME are set by start_coordinator and start_job (coordinator_common.sh):
# shellcheck disable=SC2154
source "$(dirname "$0")/coordinator_common.sh"

# ---- 1. bounds: on a fresh coordinator, so that "changes nothing" is an empty status
start_coordinator b --listen 127.0.0.1:0 --state b.db || fail "1: ptrain-coordinator did not start"
ab=$(cat b.addr)
"${dash[@]}" services "$ab" >services.json || fail "1: reflection"
"$py" - <<'PY' || fail "1: the services reflection lists"
import json
services = json.load(open("services.json"))
assert {"ptrain.v1.Coordinator", "grpc.health.v1.Health"} <= set(services["services"]), services
assert {"RegisterRank", "Heartbeat", "GetJobStatus", "RequestStop"} <= set(services["methods"]), services
PY
"${dash[@]}" check-bounds "$ab" >bounds.out 2>&1 || { cat bounds.out; fail "1: bounds"; }
kill -0 "$pid_b" 2>/dev/null || fail "1: the coordinator died"
stop_server "$pid_b" || fail "1: ptrain-coordinator did not stop cleanly after the bad requests"

# ---- 2. the bearer token
echo "e2e-secret-$RANDOM$RANDOM" >token
echo "not-the-secret" >wrong-token
: >empty-token
"$coordinator" --listen 127.0.0.1:0 --state bad.db --auth-token-file empty-token >bad-token.log 2>&1
[ $? -eq 2 ] && grep -q empty-token bad-token.log ||
  fail "2: an empty token file: expected exit 2 naming it: $(cat bad-token.log)"
start_coordinator t --listen 127.0.0.1:0 --state t.db --heartbeat-interval 0.1 \
  --auth-token-file token || fail "2: ptrain-coordinator with a token did not start"
at=$(cat t.addr)
"${dash[@]}" check-auth "$at" "$(cat token)" >auth.out 2>&1 || { cat auth.out; fail "2: auth"; }
"${dash[@]}" health "$at" >/dev/null || fail "2: the health check without a token"
"$status_bin" --coordinator "$at" --json >/dev/null 2>status-no-token.err
[ $? -eq 3 ] && grep -q UNAUTHENTICATED status-no-token.err ||
  fail "2: ptrain-status without the token: expected exit 3 saying UNAUTHENTICATED"
# A job with a wrong token trains all the same (the coordinator never stops training) and is not
# registered; then one with the right token is.
start_job wrong --set coordinator.address="$at" --set coordinator.auth_token_file=wrong-token \
  --set max_steps=10 --set save_steps=0
wait_job "$job_wrong" 120 || { tail -20 wrong.log; fail "2: the job with a wrong token failed"; }
grep -q "UNAUTHENTICATED" wrong.log || fail "2: the job's log does not say the token was refused"
"${dash[@]}" --token-file token call "$at" GetJobStatus --out status-wrong.json ||
  fail "2: GetJobStatus with the token"
"$py" - <<'PY' || fail "2: a job with a wrong token registered"
import json
status = json.load(open("status-wrong.json"))
assert status["job_id"] == "" and status["attempts"] == [] and status["world"] == 0, status
PY
start_job right --set coordinator.address="$at" --set coordinator.auth_token_file="$work/token" \
  --set max_steps=60 --set save_steps=30
"${dash[@]}" --token-file token poll "$at" --until-state FINISHED --timeout 120 \
  --job-pid "$job_right" --record poll-right.json >poll-right.out 2>&1 ||
  { cat poll-right.out; fail "2: the job with the token is not seen FINISHED"; }
wait_job "$job_right" 60 || { tail -20 right.log; fail "2: the job with the token failed"; }
"$status_bin" --coordinator "$at" --token-file token --json >status-right.json ||
  fail "2: ptrain-status --token-file"
"$py" - <<'PY' || fail "2: the job with the token"
import json
status = json.load(open("status-right.json"))
last = [json.loads(l) for l in open("out-right/metrics.jsonl") if '"step"' in l][-1]
assert status["job_id"] == "out-right" and status["world"] == 2, (status["job_id"], status["world"])
assert [r["rank"] for r in status["ranks"]] == [0, 1] and all(r["host"] for r in status["ranks"]), status["ranks"]
assert status["state"] == "FINISHED" and int(status["step"]) == last["step"] == 60, (status["state"], status["step"])
(attempt,) = status["attempts"]
assert attempt["end_reason"] == "finished", attempt
assert int(status["last_checkpoint"]["step"]) == 60, status["last_checkpoint"]
PY
stop_server "$pid_t" || fail "2: ptrain-coordinator did not stop cleanly"

# ---- 3. TLS: a test CA, a server certificate for 127.0.0.1, client certificates
mkdir -p pki
make_cert() {  # NAME CA_NAME EXTENSIONS: NAME.key and NAME.pem signed by CA_NAME
  openssl req -newkey rsa:2048 -nodes -keyout "pki/$1.key" -out "pki/$1.csr" -subj "/CN=$1" \
    2>/dev/null &&
    printf '%s\n' "$3" >"pki/$1.ext" &&
    openssl x509 -req -in "pki/$1.csr" -CA "pki/$2.pem" -CAkey "pki/$2.key" -CAcreateserial \
      -days 2 -extfile "pki/$1.ext" -out "pki/$1.pem" 2>/dev/null
}
make_ca() {  # NAME: a self-signed CA
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "pki/$1.key" -out "pki/$1.pem" -days 2 \
    -subj "/CN=$1" 2>/dev/null
}
make_ca ca && make_ca rogue-ca &&
  make_cert server ca "$(printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth')" &&
  make_cert client ca "extendedKeyUsage=clientAuth" &&
  make_cert rogue rogue-ca "extendedKeyUsage=clientAuth" || fail "3: openssl could not make the test PKI"

"$coordinator" --listen 127.0.0.1:0 --state bad.db --tls-cert pki/server.pem >bad-tls.log 2>&1
[ $? -eq 2 ] && grep -q tls_key bad-tls.log ||
  fail "3: a certificate without its key: expected exit 2 naming tls_key: $(cat bad-tls.log)"
# Server TLS only.
start_coordinator tls --listen 127.0.0.1:0 --state tls.db --tls-cert pki/server.pem \
  --tls-key pki/server.key || fail "3: ptrain-coordinator with TLS did not start"
atls=$(cat tls.addr)
"${dash[@]}" --deadline 10 --ca pki/ca.pem check-tls "$atls" >tls.out 2>&1 || { cat tls.out; fail "3: TLS"; }
"${dash[@]}" --deadline 10 --ca pki/rogue-ca.pem check-mtls-refused "$atls" >tls-rogue.out 2>&1 ||
  { cat tls-rogue.out; fail "3: a client trusting another CA was not refused"; }
kill -0 "$pid_tls" 2>/dev/null || fail "3: the TLS coordinator died"
stop_server "$pid_tls" || fail "3: the TLS coordinator did not stop cleanly"
# Mutual TLS: a client certificate from the CA is required.
start_coordinator mtls --listen 127.0.0.1:0 --state mtls.db --heartbeat-interval 0.1 \
  --tls-cert pki/server.pem --tls-key pki/server.key --tls-client-ca pki/ca.pem ||
  fail "3: ptrain-coordinator with mTLS did not start"
amtls=$(cat mtls.addr)
mtls=(--ca pki/ca.pem --cert pki/client.pem --key pki/client.key)
"${dash[@]}" --deadline 10 --ca pki/ca.pem check-mtls-refused "$amtls" >mtls-none.out 2>&1 ||
  { cat mtls-none.out; fail "3: mTLS: a client without a certificate was not refused"; }
"${dash[@]}" --deadline 10 --ca pki/ca.pem --cert pki/rogue.pem --key pki/rogue.key \
  check-mtls-refused "$amtls" >mtls-rogue.out 2>&1 ||
  { cat mtls-rogue.out; fail "3: mTLS: a certificate from another CA was not refused"; }
"${dash[@]}" --deadline 10 "${mtls[@]}" check-tls "$amtls" >mtls.out 2>&1 ||
  { cat mtls.out; fail "3: mTLS with the client certificate"; }
# The ranks over mTLS.
start_job mtls --set coordinator.address="$amtls" --set coordinator.tls_ca="$work/pki/ca.pem" \
  --set coordinator.tls_client_cert="$work/pki/client.pem" \
  --set coordinator.tls_client_key="$work/pki/client.key" --set max_steps=60 --set save_steps=30
"${dash[@]}" "${mtls[@]}" poll "$amtls" --until-state FINISHED --timeout 120 \
  --job-pid "$job_mtls" --record poll-mtls.json >poll-mtls.out 2>&1 ||
  { cat poll-mtls.out; fail "3: the job over mTLS is not seen FINISHED"; }
wait_job "$job_mtls" 60 || { tail -20 mtls.log; fail "3: the job over mTLS failed"; }
"$status_bin" --coordinator "$amtls" --tls-ca pki/ca.pem --tls-cert pki/client.pem \
  --tls-key pki/client.key --json >status-mtls.json || fail "3: ptrain-status over mTLS"
"$py" - <<'PY' || fail "3: the job over mTLS"
import json
status = json.load(open("status-mtls.json"))
last = [json.loads(l) for l in open("out-mtls/metrics.jsonl") if '"step"' in l][-1]
assert status["world"] == 2 and len(status["ranks"]) == 2, status["ranks"]
assert status["state"] == "FINISHED" and int(status["step"]) == last["step"] == 60, (status["state"], status["step"])
assert abs(status["loss"] - last["loss"]) <= 1e-6 * abs(last["loss"]), (status["loss"], last["loss"])
PY
kill -0 "$pid_mtls" 2>/dev/null || fail "3: the mTLS coordinator died"
stop_server "$pid_mtls" || fail "3: the mTLS coordinator did not stop cleanly"

finish

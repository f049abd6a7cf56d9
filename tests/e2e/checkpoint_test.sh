#!/usr/bin/env bash
# End-to-end checks of sharded checkpoints: checkpoint_test.sh PTRAIN MPIEXEC REPO
# Every resumed run is compared with an uninterrupted run of the same job (never with the code's
# own earlier output): an exact resume at the same world size (QLoRA with dropout, full bf16 at 3
# ranks), a resume at another world size with the same global batch (fp32, within a tolerance), a
# rank or rank 0 dying in the middle of a save (failpoints), a damaged rank file and a truncated
# manifest, a full disk, the checkpoint's adapter evaluated by `ptrain eval`, a changed config, a
# fresh run over committed checkpoints, checkpoint.keep_last and checkpoint.async.
source "$(dirname "$0")/common.sh"
ptrain=$1
mpiexec=${2:-mpirun}
repo=${3:-.}
mpirun=("$mpiexec" --oversubscribe --allow-run-as-root)
compare=(python3 "$repo/tests/e2e/compare_safetensors.py")
disk="$work/disk"
# The full-disk check mounts a tmpfs inside the scratch directory: unmount it before removing.
trap 'mountpoint -q "$disk" && umount "$disk"; rm -rf "$work"' EXIT
cd "$work" || exit 1

"$ptrain" init-model --preset tiny --out model >/dev/null || fail "init-model"
python3 "$repo/examples/make_tiny_data.py" data --rows 200 >/dev/null || fail "make_tiny_data"

# QLoRA with dropout (the resumed run must draw the same masks), packing and accumulation.
cat > qlora.yaml <<'EOF'
base_model: model
load_in_4bit: true
adapter: qlora
lora_r: 8
lora_alpha: 16
lora_dropout: 0.1
lora_target_linear: true
datasets:
  - path: data/alpaca.jsonl
    type: alpaca
val_set_size: 0.1
eval_steps: 6
sequence_len: 256
sample_packing: true
micro_batch_size: 1
gradient_accumulation_steps: 2
max_steps: 6
save_steps: 3
learning_rate: 0.002
warmup_steps: 1
output_dir: out
logging:
  console: rank0
EOF
# Full training of every weight (no dropout).
cat > full.yaml <<'EOF'
base_model: model
datasets:
  - path: data/alpaca.jsonl
    type: alpaca
val_set_size: 0
sequence_len: 256
sample_packing: true
micro_batch_size: 1
gradient_accumulation_steps: 2
max_steps: 6
save_steps: 3
learning_rate: 0.001
warmup_steps: 1
output_dir: out
logging:
  console: rank0
EOF

# train NP CONFIG LOG [--set k=v ...]: one run; its exit code.
train() {
  local np=$1 config=$2 log=$3
  shift 3
  "${mpirun[@]}" -np "$np" "$ptrain" train --config "$config" "$@" >"$log" 2>&1
}
# steps_match A B FIRST LAST RTOL: the step lines FIRST..LAST of A/metrics.jsonl and
# B/metrics.jsonl have the same loss, grad_norm, lr and tokens (within RTOL; 0: exactly).
steps_match() {
  python3 - "$@" <<'PY'
import json, sys
a, b, first, last, rtol = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
def steps(d):
    return {l["step"]: l for l in map(json.loads, open(d + "/metrics.jsonl")) if l["type"] == "step"}
sa, sb = steps(a), steps(b)
want = list(range(first, last + 1))
assert all(s in sa for s in want), f"{a}: steps {sorted(sa)}, want {want}"
assert all(s in sb for s in want), f"{b}: steps {sorted(sb)}, want {want}"
for s in want:
    assert sa[s]["tokens"] == sb[s]["tokens"], (s, "tokens", sa[s]["tokens"], sb[s]["tokens"])
    for key in ("loss", "grad_norm", "lr"):
        x, y = sa[s][key], sb[s][key]
        assert abs(x - y) <= rtol * abs(y), f"step {s} {key}: {a} {x!r}, {b} {y!r} (rtol {rtol})"
PY
}
# tree_sums DIR: every file under DIR with its checksum (to see that nothing changed).
tree_sums() { (cd "$1" && find . -type f | sort | xargs md5sum); }

# ---- 1. exact resume at the same world size
# QLoRA on 2 ranks: out-a uninterrupted, out-b resumed from out-a's step-3.
train 2 qlora.yaml a.log --set output_dir=out-a || { tail -5 a.log; fail "1: qlora run A"; }
train 2 qlora.yaml b.log --set output_dir=out-b \
  --set resume_from_checkpoint=out-a/checkpoints/step-3 || { tail -5 b.log; fail "1: qlora run B"; }
grep -q "resumed from out-a/checkpoints/step-3 after step 3 (saved by 2 ranks, 2 now)" b.log ||
  fail "1: qlora run B does not say it resumed from step 3"
steps_match out-a out-b 4 6 0 || fail "1: qlora steps 4..6 differ after an exact resume"
python3 - <<'PY' || fail "1: qlora resumed run's metrics (first_step, steps logged, final eval)"
import json
a = [json.loads(l) for l in open("out-a/metrics.jsonl")]
b = [json.loads(l) for l in open("out-b/metrics.jsonl")]
assert b[0]["type"] == "start" and b[0]["first_step"] == 3, b[0]
assert [l["step"] for l in b if l["type"] == "step"] == [4, 5, 6], b
ea = [l for l in a if l["type"] == "eval" and l["step"] == 6]
eb = [l for l in b if l["type"] == "eval" and l["step"] == 6]
assert len(ea) == 1 and ea == eb, (ea, eb)
PY
cmp -s out-a/final/adapter_model.safetensors out-b/final/adapter_model.safetensors ||
  fail "1: qlora final adapters differ after an exact resume"
# Full training in bf16 on 3 ranks (odd), the same way.
train 3 full.yaml fa.log --set bf16=true --set output_dir=out-fa || { tail -5 fa.log; fail "1: full run A"; }
train 3 full.yaml fb.log --set bf16=true --set output_dir=out-fb \
  --set resume_from_checkpoint=out-fa/checkpoints/step-3 || { tail -5 fb.log; fail "1: full run B"; }
steps_match out-fa out-fb 4 6 0 || fail "1: full bf16 steps 4..6 differ after an exact resume"
cmp -s out-fa/final/model.safetensors out-fb/final/model.safetensors ||
  fail "1: full bf16 final weights differ after an exact resume"

# ---- 2. resume at another world size, the same global batch (ranks x micro batch x accumulation)
# fp32, so the only differences are the order of the reductions: losses within 1e-5 relative and
# weights within 1e-5 (both measured ~1e-9 apart; a changed learning rate is ~1e-4 apart).
world_change() {  # NP_SAVE ACCUM_SAVE NP_RESUME ACCUM_RESUME
  local tag="w$1-$3"
  train "$1" full.yaml "$tag-save.log" --set bf16=false --set gradient_accumulation_steps="$2" \
    --set output_dir="out-$tag-save" || { tail -5 "$tag-save.log"; fail "2: $tag: run on $1 ranks"; }
  train "$3" full.yaml "$tag-ref.log" --set bf16=false --set gradient_accumulation_steps="$4" \
    --set output_dir="out-$tag-ref" || { tail -5 "$tag-ref.log"; fail "2: $tag: uninterrupted run on $3 ranks"; }
  train "$3" full.yaml "$tag-resume.log" --set bf16=false --set gradient_accumulation_steps="$4" \
    --set output_dir="out-$tag-resume" --set resume_from_checkpoint="out-$tag-save/checkpoints/step-3" ||
    { tail -5 "$tag-resume.log"; fail "2: $tag: resume on $3 ranks"; }
  grep -q "after step 3 (saved by $1 ranks, $3 now; shards re-sliced" "$tag-resume.log" ||
    fail "2: $tag: the resume does not say it went from $1 to $3 ranks"
  steps_match "out-$tag-resume" "out-$tag-ref" 4 6 1e-5 ||
    fail "2: $tag: steps 4..6 differ from the uninterrupted run on $3 ranks"
  "${compare[@]}" "out-$tag-resume/final/model.safetensors" "out-$tag-ref/final/model.safetensors" \
    --atol 1e-5 || fail "2: $tag: final weights differ from the uninterrupted run on $3 ranks"
}
world_change 2 3 3 2
world_change 4 1 2 2

# ---- 10 (first: its synchronous run is the reference of 3 and 5). checkpoint.async
qsave=(--set save_steps=2 --set val_set_size=0)
train 2 qlora.yaml sync.log "${qsave[@]}" --set output_dir=out-sync || { tail -5 sync.log; fail "10: sync run"; }
train 2 qlora.yaml async.log "${qsave[@]}" --set output_dir=out-async --set checkpoint.async=true ||
  { tail -5 async.log; fail "10: async run"; }
grep -q "checkpoint step 2: writing in the background (training stalled" async.log ||
  fail "10: the async run did not write in the background"
for s in 2 4 6; do
  for f in rank-0.safetensors rank-1.safetensors adapter/adapter_model.safetensors; do
    cmp -s "out-sync/checkpoints/step-$s/$f" "out-async/checkpoints/step-$s/$f" ||
      fail "10: step-$s/$f differs between the async and the sync run"
  done
done
python3 - <<'PY' || fail "10: async manifests list other files, sampler or optimizer state"
import json
for s in (2, 4, 6):
    m = [json.load(open(f"out-{k}/checkpoints/step-{s}/manifest.json")) for k in ("sync", "async")]
    for key in ("files", "sampler", "optimizer", "flat_parameters", "completed_steps"):
        assert m[0][key] == m[1][key], (s, key)
PY
cmp -s out-sync/final/adapter_model.safetensors out-async/final/adapter_model.safetensors ||
  fail "10: final adapters differ between the async and the sync run"

# ---- 3. a process dies in the middle of a save (failpoints); the previous checkpoint stands
# step-2 is committed by a first run of 2 steps (the schedule's first two steps do not depend on
# max_steps); the resumed run to step 6 dies in step 4's save.
train 2 qlora.yaml c1.log "${qsave[@]}" --set output_dir=out-crash --set max_steps=2 ||
  { tail -5 c1.log; fail "3: first run to step 2"; }
cp -r out-crash out-crash2
crash_case() {  # OUT FAILPOINT WHAT_STAGING_HOLDS
  local out=$1 point=$2 staged=$3
  local before
  before=$(tree_sums "$out/checkpoints/step-2")
  PTRAIN_FAILPOINT=$point train 2 qlora.yaml "$out-crash.log" "${qsave[@]}" --set output_dir="$out" \
    --set resume_from_checkpoint=latest
  local rc=$?
  [ $rc -ne 0 ] && grep -q "failpoint ${point%@*}: rank" "$out-crash.log" ||
    { tail -5 "$out-crash.log"; fail "3: $point: the run did not die at the failpoint (exit $rc)"; }
  [ -f "$out/checkpoints/step-4.tmp/$staged" ] ||
    fail "3: $point: step-4.tmp/$staged missing: the failpoint is not where it should be"
  [ ! -e "$out/checkpoints/step-4" ] || fail "3: $point: step-4 was committed by a save that died"
  [ "$(tree_sums "$out/checkpoints/step-2")" = "$before" ] || fail "3: $point: step-2 changed"
  train 2 qlora.yaml "$out-resume.log" "${qsave[@]}" --set output_dir="$out" \
    --set resume_from_checkpoint=latest || { tail -5 "$out-resume.log"; fail "3: $point: resume"; }
  grep -q "resumed from $out/checkpoints/step-2 after step 2" "$out-resume.log" ||
    fail "3: $point: the resume does not say it resumed from step-2"
  grep -q "removed $out/checkpoints/step-4.tmp, left by a save that did not finish" \
    "$out-resume.log" || fail "3: $point: no warning that step-4.tmp was removed"
  [ "$(ls "$out/checkpoints")" = "$(printf 'step-2\nstep-4\nstep-6')" ] ||
    fail "3: $point: checkpoints after the resume: $(ls "$out/checkpoints" | tr '\n' ' ')"
  # The interrupted job ends where the uninterrupted one does.
  cmp -s "$out/final/adapter_model.safetensors" out-sync/final/adapter_model.safetensors &&
    cmp -s "$out/checkpoints/step-6/rank-1.safetensors" out-sync/checkpoints/step-6/rank-1.safetensors ||
    fail "3: $point: the resumed job's adapter or step-6 differs from the uninterrupted run's"
}
crash_case out-crash checkpoint.before_report@1 rank-1.safetensors
crash_case out-crash2 checkpoint.before_publish manifest.json

# ---- 4. a damaged checkpoint is refused, naming the file; latest falls back to an older one
cp -r out-a out-flip
flip_byte out-flip/checkpoints/step-6/rank-1.safetensors 1 2 0xFF || fail "4: could not flip a byte"
train 2 qlora.yaml flip-dir.log --set output_dir=out-flip \
  --set resume_from_checkpoint=out-flip/checkpoints/step-6
rc=$?
[ $rc -eq 2 ] && grep -q "out-flip/checkpoints/step-6.*rank-1.safetensors" flip-dir.log ||
  { tail -3 flip-dir.log; fail "4: a flipped byte: expected exit 2 naming rank-1.safetensors (exit $rc)"; }
train 2 qlora.yaml flip-latest.log --set output_dir=out-flip --set resume_from_checkpoint=latest
rc=$?
grep -q "warn.*out-flip/checkpoints/step-6.*rank-1.safetensors" flip-latest.log &&
  grep -q "resumed from out-flip/checkpoints/step-3 after step 3" flip-latest.log ||
  { tail -3 flip-latest.log; fail "4: latest did not fall back to step-3 warning about rank-1.safetensors"; }
cmp -s out-flip/final/adapter_model.safetensors out-a/final/adapter_model.safetensors ||
  fail "4: the job resumed from the older checkpoint does not end where the uninterrupted one does"
# Having fallen back, the job reaches step 6 again and must be able to save it: the damaged
# step-6 is set aside (step-6.rejected, kept for a look) and a new step-6 committed.
[ $rc -eq 0 ] ||
  { grep "step 6" flip-latest.log | tail -2; fail "4: latest past a damaged step-6: exit $rc, expected 0"; }
[ -f out-flip/checkpoints/step-6.rejected/rank-1.safetensors ] &&
  cmp -s out-flip/checkpoints/step-6/rank-1.safetensors out-a/checkpoints/step-6/rank-1.safetensors ||
  fail "4: latest: the damaged step-6 was not set aside as step-6.rejected and saved again"
# Damaged again after that: set aside under another name (step-6.rejected-2), saved once more.
flip_byte out-flip/checkpoints/step-6/rank-0.safetensors 1 3 || fail "4: could not flip a byte"
train 2 qlora.yaml flip-again.log --set output_dir=out-flip --set resume_from_checkpoint=latest
rc=$?
[ $rc -eq 0 ] && [ -d out-flip/checkpoints/step-6.rejected-2 ] &&
  cmp -s out-flip/checkpoints/step-6/rank-0.safetensors out-a/checkpoints/step-6/rank-0.safetensors ||
  { tail -3 flip-again.log; fail "4: a second damaged step-6: exit $rc, expected 0 with step-6.rejected-2"; }
# A directory that was never committed is never loaded, whatever it holds.
cp -r out-a/checkpoints/step-6 out-flip/checkpoints/step-7.tmp
sed -i 's/"step": 6/"step": 7/' out-flip/checkpoints/step-7.tmp/manifest.json
train 2 qlora.yaml tmpdir.log --set output_dir=out-flip \
  --set resume_from_checkpoint=out-flip/checkpoints/step-7.tmp
rc=$?
[ $rc -eq 2 ] && grep -q "not a committed checkpoint" tmpdir.log ||
  { tail -3 tmpdir.log; fail "4: step-7.tmp was loaded or not refused as uncommitted (exit $rc)"; }
rm -rf out-flip/checkpoints/step-7.tmp
# With the frozen base saved too (verified before any frozen shard is copied), a damaged file no
# rank loads (the adapter) still makes latest fall back rather than fail the job.
train 2 qlora.yaml frozen.log --set output_dir=out-frozen --set checkpoint.save_frozen=true ||
  { tail -3 frozen.log; fail "4: save_frozen run"; }
flip_byte out-frozen/checkpoints/step-6/adapter/adapter_model.safetensors ||
  fail "4: could not flip a byte"
train 2 qlora.yaml frozen-latest.log --set output_dir=out-frozen \
  --set checkpoint.save_frozen=true --set resume_from_checkpoint=latest
rc=$?
[ $rc -eq 0 ] && grep -q "warn.*step-6.*adapter_model.safetensors" frozen-latest.log &&
  grep -q "resumed from out-frozen/checkpoints/step-3 after step 3" frozen-latest.log &&
  cmp -s out-frozen/final/adapter_model.safetensors out-a/final/adapter_model.safetensors ||
  { tail -3 frozen-latest.log; fail "4: save_frozen: latest past a damaged adapter (exit $rc)"; }
cp -r out-a out-trunc
manifest=out-trunc/checkpoints/step-6/manifest.json
truncate -s $(($(stat -c %s $manifest) / 2)) $manifest
train 2 qlora.yaml trunc.log --set output_dir=out-trunc \
  --set resume_from_checkpoint=out-trunc/checkpoints/step-6
rc=$?
[ $rc -eq 2 ] && grep -q "out-trunc/checkpoints/step-6.*manifest.json" trunc.log ||
  { tail -3 trunc.log; fail "4: a truncated manifest.json: expected exit 2 naming it (exit $rc)"; }

# ---- 5. a full disk: the save fails naming the file, the earlier checkpoint stands
# output_dir on a tmpfs that holds the whole job but for all but half a checkpoint: step-2 fits,
# step-4 and step-6 (the last step: exit 3) do not. The size is measured from out-sync, the same
# job on the real disk.
size=$(($(du -sk out-sync | cut -f1) - $(du -sk out-sync/checkpoints/step-4 | cut -f1) -
  $(du -sk out-sync/checkpoints/step-6 | cut -f1) + $(du -sk out-sync/checkpoints/step-4 | cut -f1) / 2))
mkdir -p "$disk"
if mount -t tmpfs -o size=${size}k tmpfs "$disk" 2>mount.log; then
  full=(disk/out "No space left on device")
  train 2 qlora.yaml disk.log "${qsave[@]}" --set output_dir=disk/out
  rc=$?
else
  # No mount (not root, or a container without CAP_SYS_ADMIN): the same failure from a file size
  # limit (RLIMIT_FSIZE: a write past it fails with EFBIG once SIGXFSZ is ignored). It caps each
  # file, not the total, so step-2 is committed first without it, and the resumed run that saves
  # step 4 and 6 runs each rank under a limit between the adapter's and a rank file's size. Only
  # the ranks: mpirun's own shared-memory files would hit it too (so does MPI's shared-memory
  # transport: tcp instead).
  echo "mount: $(cat mount.log); falling back to ulimit -f"
  full=(out-fsize "File too large")
  train 2 qlora.yaml disk.log "${qsave[@]}" --set output_dir=out-fsize --set max_steps=2 ||
    fail "5: run to step 2"
  limit=$((($(stat -c %s out-sync/checkpoints/step-2/rank-1.safetensors) - 1) / 1024))
  "${mpirun[@]}" --mca btl self,tcp -np 2 bash -c 'trap "" XFSZ && ulimit -f "$0" && exec "$@"' \
    "$limit" "$ptrain" train --config qlora.yaml "${qsave[@]}" --set output_dir=out-fsize \
    --set resume_from_checkpoint=latest >disk.log 2>&1
  rc=$?
fi
out=${full[0]}
[ $rc -eq 3 ] || { tail -5 disk.log; fail "5: full disk at the last step's save: exit $rc, expected 3"; }
grep -q "checkpoint step 4 was not saved.*$out/checkpoints/step-4\.tmp/[^ ]*.*${full[1]}" disk.log ||
  { grep -i "error" disk.log | head -3; fail "5: no error naming the file step 4's save could not write"; }
[ "$(ls "$out/checkpoints")" = "step-2" ] ||
  fail "5: after the failed saves: $(ls "$out/checkpoints" | tr '\n' ' '), expected step-2 alone"
for f in rank-0.safetensors rank-1.safetensors adapter/adapter_model.safetensors; do
  cmp -s "$out/checkpoints/step-2/$f" "out-sync/checkpoints/step-2/$f" || fail "5: step-2/$f damaged"
done
# Training went on past the failed saves: the job's own final adapter is the uninterrupted one's.
cmp -s "$out/final/adapter_model.safetensors" out-sync/final/adapter_model.safetensors ||
  fail "5: the final adapter of the job whose saves failed differs from the uninterrupted run's"
train 2 qlora.yaml disk-resume.log "${qsave[@]}" --set output_dir=out-disk-resume \
  --set resume_from_checkpoint="$out/checkpoints/step-2" || fail "5: resume from step-2 of the full disk"
cmp -s out-disk-resume/final/adapter_model.safetensors out-sync/final/adapter_model.safetensors ||
  fail "5: the job resumed from the full disk's step-2 does not end where the uninterrupted one does"
mountpoint -q "$disk" && umount "$disk"

# ---- 6. the checkpoint's adapter/ is the trained adapter: `ptrain eval` of it gives the loss of
# the in-training evaluation at that step. fp32: within 1e-6 relative. bf16 (run A of check 1):
# within 1e-5 (the two agree to 4e-8 before training and drift to ~2e-6 as the adapter grows).
train 2 qlora.yaml eval-train.log --set bf16=false --set eval_steps=3 --set output_dir=out-eval ||
  { tail -5 eval-train.log; fail "6: fp32 training run"; }
eval_matches() {  # RUN STEP DTYPE RTOL
  "$ptrain" eval --model model --adapter "$1/checkpoints/step-$2/adapter" --config qlora.yaml \
    --dtype "$3" >"eval-$1-$2.json" 2>"eval-$1-$2.log" || { cat "eval-$1-$2.log"; return 1; }
  python3 - "$@" <<'PY'
import json, sys
run, step, rtol = sys.argv[1], int(sys.argv[2]), float(sys.argv[4])
train = [l for l in map(json.loads, open(run + "/metrics.jsonl"))
         if l["type"] == "eval" and l["step"] == step]
ev = json.loads(open(f"eval-{run}-{step}.json").read().strip().splitlines()[-1])
assert len(train) == 1, train
assert ev["tokens"] == train[0]["eval_tokens"], (ev, train)
assert abs(ev["loss"] - train[0]["eval_loss"]) <= rtol * train[0]["eval_loss"], \
    f"{run} step {step}: eval {ev['loss']!r}, training {train[0]['eval_loss']!r} (rtol {rtol})"
PY
}
eval_matches out-eval 3 fp32 1e-6 || fail "6: eval of step-3/adapter (fp32)"
eval_matches out-eval 6 fp32 1e-6 || fail "6: eval of step-6/adapter (fp32)"
eval_matches out-a 6 bf16 1e-5 || fail "6: eval of step-6/adapter (bf16)"

# ---- 7. a config that changes the model or the data order is refused; a harmless one is logged
train 2 qlora.yaml bind.log --set output_dir=out-bind --set lora_r=16 --set seed=7 \
  --set resume_from_checkpoint=out-a/checkpoints/step-3
rc=$?
[ $rc -eq 2 ] && grep -q "lora_r" bind.log && grep -q "seed" bind.log ||
  { tail -3 bind.log; fail "7: lora_r and seed changed: expected exit 2 naming both (exit $rc)"; }
[ ! -e out-bind/final ] || fail "7: a refused resume trained"
train 2 qlora.yaml harmless.log --set output_dir=out-harmless --set learning_rate=0.001 \
  --set logging_steps=2 --set resume_from_checkpoint=out-a/checkpoints/step-3 ||
  { tail -5 harmless.log; fail "7: learning_rate and logging_steps changed: refused"; }
grep -q "'learning_rate' changed since the checkpoint: 0.002 -> 0.001" harmless.log &&
  grep -q "'logging_steps' changed since the checkpoint: 1 -> 2" harmless.log ||
  fail "7: the allowed changes are not logged"
python3 - <<'PY' || fail "7: the changed learning rate or logging_steps did not take effect"
import json
def steps(d):
    return {l["step"]: l for l in map(json.loads, open(d + "/metrics.jsonl")) if l["type"] == "step"}
a, h = steps("out-a"), steps("out-harmless")
assert sorted(h) == [4, 6], sorted(h)
for s in h:
    assert abs(h[s]["lr"] - a[s]["lr"] / 2) <= 1e-12 * a[s]["lr"], (s, h[s]["lr"], a[s]["lr"])
PY

# ---- 8. a fresh run into an output_dir holding committed checkpoints: refused, nothing removed
before=$(tree_sums out-a/checkpoints; tree_sums out-a/final)
train 2 qlora.yaml fresh.log --set output_dir=out-a
rc=$?
[ $rc -eq 2 ] && grep -q "resume_from_checkpoint" fresh.log ||
  { tail -3 fresh.log; fail "8: a fresh run over checkpoints: expected exit 2 naming resume_from_checkpoint (exit $rc)"; }
[ "$(tree_sums out-a/checkpoints; tree_sums out-a/final)" = "$before" ] ||
  fail "8: a refused fresh run changed out-a's checkpoints or final/"

# ---- 9. checkpoint.keep_last
train 2 qlora.yaml keep.log --set val_set_size=0 --set save_steps=1 --set max_steps=5 \
  --set checkpoint.keep_last=2 --set output_dir=out-keep || { tail -5 keep.log; fail "9: keep_last run"; }
[ "$(ls -A out-keep/checkpoints)" = "$(printf 'step-4\nstep-5')" ] ||
  fail "9: keep_last 2: $(ls -A out-keep/checkpoints | tr '\n' ' '), expected step-4 step-5"

echo "checkpoint_test.sh: ${SECONDS}s"
finish

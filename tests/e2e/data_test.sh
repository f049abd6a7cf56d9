#!/usr/bin/env bash
# End-to-end checks of `ptrain preprocess` and the prepared-data cache: data_test.sh PTRAIN MPIEXEC
# Python re-reads the cache from the file layout documented in docs/data.md and checks every
# sample against the Alpaca template applied by hand with the byte tokenizer (ids = byte + 3).
source "$(dirname "$0")/common.sh"
ptrain=$1
mpiexec=${2:-mpirun}
mpirun=("$mpiexec" --oversubscribe --allow-run-as-root)
cd "$work" || exit 1

"$ptrain" init-model --preset tiny --out model >/dev/null || fail "init-model"
python3 - <<'PY'
import json, random, struct
r = random.Random(3)
with open("alpaca.jsonl", "w") as f:
    for i in range(300):
        row = {"instruction": f"Count to {i}.", "output": " ".join(map(str, range(r.randint(1, 40))))}
        if i % 3 == 0:
            row["input"] = "x" * r.randint(1, 200)
        f.write(json.dumps(row) + "\n")
ids = []
for d in range(50):
    ids += [r.randrange(3, 259) for _ in range(r.randint(1, 700))] + [2]
open("corpus.bin", "wb").write(struct.pack(f"<{len(ids)}H", *ids))
with open("chat.jsonl", "w") as f:
    for i in range(40):
        conv = [{"from": "system", "value": "Be brief."}] if i % 2 else []
        for t in range(1 + i % 3):
            conv += [{"from": "human", "value": f"What is {i} + {t}?"},
                     {"from": "gpt", "value": f"{i + t}, héé"}]
        f.write(json.dumps({"conversations": conv}) + "\n")
PY
cat > job.yaml <<'EOF'
base_model: model
datasets:
  - path: alpaca.jsonl
    type: alpaca
  - path: corpus.bin
    type: pretokenized
    weight: 0.5
  - path: chat.jsonl
    type: sharegpt
chat_template: chatml
sequence_len: 512
sample_packing: true
val_set_size: 0.1
output_dir: out
EOF

# 1. Three ranks: rank 0 builds, the others wait and map the same directory.
"${mpirun[@]}" -np 3 "$ptrain" preprocess --config job.yaml --json >run1.json 2>run1.err ||
  fail "preprocess under mpirun -np 3: $(tail -3 run1.err)"
grep -q '"built":true' run1.json || fail "first run did not build: $(cat run1.json)"
[ "$(ls out/prepared-data | wc -l)" = 1 ] || fail "expected one cache directory: $(ls out/prepared-data)"
cache=out/prepared-data/$(ls out/prepared-data)
grep -q "prepared data: building" out/logs/rank-0.log || fail "rank 0 did not log its build"
for r in 1 2; do
  if grep -q "prepared data: building" "out/logs/rank-$r.log"; then fail "rank $r built too"; fi
done

# 2. The cache, read by Python from the documented layout.
python3 - "$cache" <<'PY' || fail "cache contents differ from the hand-applied template"
import json, math, struct, sys
d = sys.argv[1]
meta = json.load(open(f"{d}/meta.json"))
arr = lambda name, fmt, size: list(struct.unpack(f"<{len(open(f'{d}/{name}','rb').read())//size}{fmt}", open(f"{d}/{name}", "rb").read()))
tokens = arr("tokens.bin", "I", 4)
offsets = arr("sample_offsets.bin", "q", 8)
origin = arr("sample_origin.bin", "q", 8)
rows = arr("train_row_offsets.bin", "q", 8)
row_samples = arr("train_row_samples.bin", "q", 8)
val = arr("val_samples.bin", "q", 8)
alpaca = [json.loads(l) for l in open("alpaca.jsonl")]
chats = [json.loads(l)["conversations"] for l in open("chat.jsonl")]
roles = {"system": "system", "human": "user", "gpt": "assistant"}
def prompt(r):
    if r.get("input"):
        return ("Below is an instruction that describes a task, paired with an input that provides "
                "further context. Write a response that appropriately completes the request.\n\n"
                f"### Instruction:\n{r['instruction']}\n\n### Input:\n{r['input']}\n\n### Response:\n")
    return ("Below is an instruction that describes a task. Write a response that appropriately "
            f"completes the request.\n\n### Instruction:\n{r['instruction']}\n\n### Response:\n")
n = len(offsets) - 1
checked = 0
for i in range(n):
    src, line = origin[i] >> 40, origin[i] & ((1 << 40) - 1)
    t = tokens[offsets[i]:offsets[i + 1]]
    ids = [x & 0x7FFFFFFF for x in t]
    learned = [x >> 31 for x in t]
    if src == 0:
        r = alpaca[line - 1]
        p, o = prompt(r).encode(), r["output"].encode()
        want = [1] + [b + 3 for b in p] + [b + 3 for b in o] + [2]
        assert ids == want, f"sample {i} (line {line}) ids differ"
        assert learned == [0] * (1 + len(p)) + [1] * (len(o) + 1), f"sample {i} labels differ"
        checked += 1
    elif src == 2:
        # chatml by hand: markers spelled as bytes (byte tokenizer), no bos or eos; learned: each
        # answer and the <|im_end|> after it.
        want, flags = [], []
        for turn in chats[line - 1]:
            head = f"<|im_start|>{roles[turn['from']]}\n".encode()
            body = turn["value"].encode() + b"<|im_end|>"
            want += [b + 3 for b in head + body + b"\n"]
            learn = 1 if turn["from"] == "gpt" else 0
            flags += [0] * len(head) + [learn] * len(body) + [0]
        assert ids == want, f"chat sample {i} (line {line}) ids differ"
        assert learned == flags, f"chat sample {i} (line {line}) labels differ"
        checked += 1
    else:
        assert learned == [0] + [1] * (len(ids) - 1) and len(ids) <= 512, f"chunk {i}"
# Dropped: alpaca rows over 512 tokens.
over = sum(1 for r in alpaca if 2 + len(prompt(r).encode()) + len(r["output"].encode()) > 512)
assert checked == len(alpaca) - over + len(chats), (checked, len(alpaca), over)
assert len(val) == math.ceil(0.1 * n), (len(val), n)
assert not set(val) & set(row_samples), "validation samples are trained on"
for r in range(len(rows) - 1):
    size = sum(offsets[s + 1] - offsets[s] for s in row_samples[rows[r]:rows[r + 1]])
    assert 0 < size <= 512, f"row {r} has {size} tokens"
# Weight 0.5: each training chunk of the corpus at most once, half of them in all.
train_corpus = [i for i in range(n) if origin[i] >> 40 == 1 and i not in set(val)]
used = [s for s in row_samples if origin[s] >> 40 == 1]
assert len(used) == len(set(used)) == round(0.5 * len(train_corpus)), (len(used), len(train_corpus))
open("val_learned.txt", "w").write(str(sum(tokens[t] >> 31 for s in val for t in range(offsets[s], offsets[s + 1]))))
print(f"checked {checked} alpaca and chat samples, {n} samples, {len(rows) - 1} rows")
PY

# 3. eval on the validation split: every learned token of the validation samples is scored, the
# same on 1 and 3 ranks.
want=$(cat val_learned.txt)
"$ptrain" eval --model model --config job.yaml --seq-len 512 >eval1.json 2>/dev/null || fail "eval --config"
"${mpirun[@]}" -np 3 "$ptrain" eval --model model --config job.yaml --seq-len 512 >eval3.json 2>/dev/null ||
  fail "eval --config on 3 ranks"
python3 - "$want" <<'PY' || fail "eval on the validation split: $(cat eval1.json eval3.json)"
import json, sys
one, three = json.load(open("eval1.json")), json.load(open("eval3.json"))
assert one["tokens"] == three["tokens"] == int(sys.argv[1]), (one["tokens"], three["tokens"], sys.argv[1])
assert abs(one["loss"] - three["loss"]) < 1e-6 * max(1.0, one["loss"]), (one["loss"], three["loss"])
PY

# 4. A second run reuses the cache; inspect verifies it.
"$ptrain" preprocess --config job.yaml --json >run2.json 2>/dev/null || fail "second preprocess"
grep -q '"built":false' run2.json || fail "second run rebuilt: $(cat run2.json)"
"$ptrain" inspect "$cache" >inspect.txt 2>&1 || fail "inspect: $(cat inspect.txt)"
grep -q "checksums: OK" inspect.txt || fail "inspect did not verify: $(cat inspect.txt)"

# 5. A damaged cache is detected and rebuilt.
printf '\x01' | dd of="$cache/tokens.bin" bs=1 seek=100 conv=notrunc 2>/dev/null
"$ptrain" inspect "$cache" >inspect.txt 2>&1 && fail "inspect accepted a damaged cache"
grep -q "tokens.bin fails its checksum" inspect.txt || fail "inspect message: $(cat inspect.txt)"
"$ptrain" preprocess --config job.yaml --json >run3.json 2>run3.err || fail "preprocess after damage"
grep -q '"built":true' run3.json || fail "damaged cache was not rebuilt"
grep -q "is damaged: tokens.bin fails its checksum; rebuilding" run3.err ||
  fail "no damage warning: $(cat run3.err)"
"$ptrain" inspect "$cache" >/dev/null 2>&1 || fail "rebuilt cache does not verify"

# 6. Changed data: a new fingerprint directory; a bad row is an error naming file:line, exit 2,
# and the committed cache stays as it was.
sum_before=$(cat "$cache"/*.bin | md5sum)
echo '{"instruction": "x", "output": 5}' >>alpaca.jsonl
"$ptrain" preprocess --config job.yaml >bad.out 2>&1
rc=$?
[ $rc = 2 ] || fail "bad row: exit $rc, expected 2"
grep -q "alpaca.jsonl:301: 'output' must be a string" bad.out || fail "bad row message: $(cat bad.out)"
[ "$(cat "$cache"/*.bin | md5sum)" = "$sum_before" ] || fail "the old cache was changed"
"$ptrain" preprocess --config job.yaml --set skip_invalid_rows=true --json >run4.json 2>/dev/null ||
  fail "skip_invalid_rows"
grep -q '"skipped":{"wrong type":1}' run4.json || fail "skip summary: $(cat run4.json)"
[ "$(ls out/prepared-data | wc -l)" = 2 ] || fail "changed data did not get its own cache"

# 7. --debug shows the learned tokens.
"$ptrain" preprocess --config job.yaml --set skip_invalid_rows=true --debug 2 --color never \
  >debug.txt 2>/dev/null || fail "--debug"
grep -q "^--- sample 0 (alpaca.jsonl:1, " debug.txt || fail "--debug header: $(head -3 debug.txt)"
grep -q "### Response:" debug.txt && grep -q "«0.*</s>»" debug.txt ||
  fail "--debug highlighting: $(cat debug.txt)"

finish

# Sourced by the e2e scripts: a scratch directory removed on exit, failure counting, and the
# closing "N passed, N failed" line ctest and CI read.
set -u
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

finish() {
  if [ $failures -eq 0 ]; then
    echo "1 passed, 0 failed"
    exit 0
  fi
  echo "0 passed, 1 failed ($failures checks)"
  exit 1
}

# flip_byte FILE [NUM DEN [MASK]]: XORs MASK (default 1) into the byte at NUM/DEN of FILE (default
# the middle): a damaged file of unchanged size.
flip_byte() {
  python3 -c '
import sys
path, num, den, mask = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4], 0)
data = bytearray(open(path, "rb").read())
data[len(data) * num // den] ^= mask
open(path, "wb").write(data)
' "$1" "${2:-1}" "${3:-2}" "${4:-1}"
}

# tiny_lora_job ROWS FILE [LINE...]: in the current directory, the tiny model (model/) and ROWS
# alpaca rows (data/), each made once, and FILE: a LoRA job on them (dropout, packing) followed by
# the given YAML lines. Needs $ptrain and $repo.
tiny_lora_job() {
  local rows=$1 file=$2
  shift 2
  [ -d model ] || "$ptrain" init-model --preset tiny --out model >/dev/null || fail "init-model"
  [ -d data ] || python3 "$repo/examples/make_tiny_data.py" data --rows "$rows" >/dev/null ||
    fail "make_tiny_data"
  {
    printf '%s\n' "base_model: model" "adapter: lora" "lora_target_linear: true" \
      "lora_dropout: 0.1" "datasets:" "  - path: data/alpaca.jsonl" "    type: alpaca" \
      "val_set_size: 0" "sequence_len: 256" "sample_packing: true"
    printf '%s\n' "$@"
  } >"$file"
}

#!/usr/bin/env bash
# ctest unit.tokenizer.reference: ptrain's tokenizer.json BPE tokenizers against reference
# implementations on real vocabularies (GPT-2, Llama 2, Mistral, Llama 3), and its chat templates
# (chatml, llama3, llama2) against the real Jinja templates rendered by @huggingface/jinja.
#
#   run.sh WORK_DIR CHECKER
#
# Installs the pinned npm packages of package.json into WORK_DIR (in the build tree; once, again
# when package.json changes), has make_references.mjs build the model directories and reference
# ids, then runs CHECKER (ptrain_tokenizer_reference_check) on them. Without node/npm or the npm
# registry this test fails: it never passes by skipping.
set -euo pipefail
src=$(cd "$(dirname "$0")" && pwd)
work=$1
checker=$2

fail() { echo "FAIL: $*"; echo "0 passed, 1 failed"; exit 1; }
command -v node >/dev/null || fail "node not found (scripts/install-deps.sh installs nodejs)"
command -v npm >/dev/null || fail "npm not found (scripts/install-deps.sh installs nodejs)"
mkdir -p "$work"
# installed.json is written only after a complete install of exactly this package.json.
if ! cmp -s "$src/package.json" "$work/installed.json"; then
  rm -rf "$work/node_modules" "$work/installed.json"
  cp "$src/package.json" "$work/package.json"
  (cd "$work" && npm install --no-audit --no-fund --ignore-scripts --no-package-lock --loglevel=error) ||
    fail "npm install of the reference tokenizers failed (is the npm registry reachable?)"
  cp "$src/package.json" "$work/installed.json"
fi
rm -rf "$work/models"
node "$src/make_references.mjs" "$work" "$work/models" || fail "make_references.mjs failed"
"$checker" "$work"/models/*/

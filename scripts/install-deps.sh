#!/usr/bin/env bash
# Installs every Debian package that ptrain's build, tests and benchmarks need.
# Idempotent: packages already present are skipped; run as root (or with sudo available).
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config clang-format clang libclang-rt-dev python3
  libtorch-dev libopenblas0-pthread libopenblas-dev
  openmpi-bin libopenmpi-dev
  protobuf-compiler libprotobuf-dev libgrpc++-dev protobuf-compiler-grpc
  libspdlog-dev libfmt-dev libgtest-dev libgmock-dev
  libyaml-cpp-dev nlohmann-json3-dev libcli11-dev
  libsqlite3-dev libxxhash-dev libgoogle-perftools-dev
  libpcre2-dev libutf8proc-dev libcpp-httplib-dev
  python3-grpcio python3-protobuf
  sentencepiece
  slurm-wlm munge
)
# sentencepiece: only its spm_train/spm_encode/spm_decode tools, the reference of the
# SentencePiece tokenizer tests; ptrain never links libsentencepiece (its bundled protobuf
# clashes with libprotobuf).
# slurm-wlm (slurmctld, slurmd, the client commands, the PMIx and PMI2 plugins) and munge: the
# private one-node Slurm that tests/e2e/slurm_test.sh starts runs examples/slurm/train.sbatch.
# Node.js and npm run the reference tokenizers of the tokenizer tests (tests/unit/data/
# tokenizer_reference). Machines may already carry a Node.js build that bundles npm; Debian's
# separate npm package would conflict with it, so both are installed only when npm is missing.
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -q
"${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"

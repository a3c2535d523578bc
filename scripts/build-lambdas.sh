#!/usr/bin/env bash
# The deployment build of the three Lambda functions, as `sam build --config-file
# infra/samconfig.toml` makes it: cargo-lambda, the release profile, arm64, each function
# crate with its default features. Installs what it needs (the Rust target
# aarch64-unknown-linux-gnu with rustup; cargo-lambda and ziglang into .venv; the SAM CLI
# into .venv-template) and builds into target/sam. Checks that each bootstrap is an arm64
# executable of at most LAMBDA_MAX_BYTES (default 6,000,000) bytes, and prints last
# `lambda-build: N passed, M failed`, one check per function.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root=$(pwd)

functions=(ApiFunction IngestFunction DeliverFunction)
max_bytes=${LAMBDA_MAX_BYTES:-6000000}
out=target/sam

give_up() {
  echo "$1" >&2
  echo "lambda-build: 0 passed, ${#functions[@]} failed"
  exit 1
}

echo "==> the arm64 Rust target"
rustup target add aarch64-unknown-linux-gnu || give_up "cannot install aarch64-unknown-linux-gnu"

echo "==> cargo-lambda and ziglang (.venv), the SAM CLI (.venv-template)"
python_tools() {
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv || return 1
  fi
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
}
if ! .venv/bin/python -c 'import ziglang' 2>/dev/null || [ ! -x .venv/bin/cargo-lambda ]; then
  python_tools || give_up "cannot install tests/requirements.txt into .venv"
fi
./scripts/template-tools.sh || give_up "cannot install the SAM CLI into .venv-template"
# cargo-lambda links with zig through `python3 -m ziglang`: that Python goes first.
export PATH="$root/.venv/bin:$PATH"
export SAM_CLI_TELEMETRY=0

echo "==> sam build"
.venv-template/bin/sam build --config-file infra/samconfig.toml \
  --build-dir "$out/build" --cache-dir "$out/cache" ||
  give_up "sam build failed"

passed=0
failed=0
for function in "${functions[@]}"; do
  bootstrap="$out/build/$function/bootstrap"
  if [ ! -f "$bootstrap" ]; then
    echo "FAIL $function: no bootstrap at $bootstrap"
    failed=$((failed + 1))
    continue
  fi
  bytes=$(stat -c %s "$bootstrap")
  # ELF e_machine, at byte 18, little-endian: 0xb7 is AArch64.
  machine=$(od -An -tx1 -j18 -N2 "$bootstrap" | tr -d ' ')
  if [ "$machine" != b700 ]; then
    echo "FAIL $function: not an arm64 executable (ELF machine $machine)"
    failed=$((failed + 1))
  elif [ "$bytes" -gt "$max_bytes" ]; then
    echo "FAIL $function: $bytes bytes, over $max_bytes"
    failed=$((failed + 1))
  else
    echo "ok   $function: $bytes bytes, arm64"
    passed=$((passed + 1))
  fi
done
echo "lambda-build: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

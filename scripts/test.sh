#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs the tools the tests use (Python
# packages into .venv: moto, standardwebhooks, cargo-lambda, …), starts moto_server on a
# free loopback port for DynamoDB and SQS, checks formatting and lints, runs every test,
# the end-to-end run of the Lambda binaries and the template checks, and stops moto.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# A from-scratch run gains nothing from incremental compilation: it only writes
# gigabytes of incremental state for the workspace's crates.
export CARGO_INCREMENTAL=0
mkdir -p target
summary="$root/target/test-summary.txt"
: > "$summary"

echo "==> Python test tools (.venv)"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
export PATH="$root/.venv/bin:$PATH"
export HOOKLINE_TEST_PYTHON="$root/.venv/bin/python"

echo "==> Node test tools (tests/mailgun-js)"
npm ci --prefix tests/mailgun-js --no-audit --no-fund --silent

echo "==> moto_server (DynamoDB, SQS) on loopback"
moto_port=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
moto_server -H 127.0.0.1 -p "$moto_port" > target/moto.log 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  if python -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', $moto_port)))"; then
    break
  fi
  sleep 0.2
done
export HOOKLINE_TEST_AWS_ENDPOINT="http://127.0.0.1:$moto_port"

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

echo "==> cargo test"
cargo test --workspace --all-features --locked 2>&1 | tee target/cargo-test.log
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { print p, f, i }' target/cargo-test.log >> "$summary"

echo "==> schemathesis: local mode against its own /openapi.json"
st_status=0
./scripts/schemathesis.sh 2>&1 | tee target/schemathesis.log || st_status=$?
awk '/^schemathesis:/ { print $2, $4, 0 }' target/schemathesis.log >> "$summary"
[ "$st_status" -eq 0 ]

echo "==> fuzz smoke: each cargo-fuzz target for a few seconds on its committed corpus"
fuzz_status=0
FUZZ_SECONDS="${FUZZ_SECONDS:-10}" ./scripts/fuzz-smoke.sh 2>&1 | tee target/fuzz.log || fuzz_status=$?
awk '/^fuzz: .* passed$/ { p++ } /^fuzz: .* failed$/ { f++ } END { print p + 0, f + 0, 0 }' target/fuzz.log >> "$summary"
[ "$fuzz_status" -eq 0 ]

echo "==> benchmark smoke: every measurement path of hookline-bench at tiny scale"
bench_status=0
./scripts/bench-smoke.sh 2>&1 | tee target/bench.log || bench_status=$?
awk '/^bench: smoke passed$/ { p++ } /^bench: smoke failed$/ { f++ } END { print p + 0, f + 0, 0 }' target/bench.log >> "$summary"
[ "$bench_status" -eq 0 ]

echo "==> end to end: the Lambda binaries under cargo lambda watch, against moto"
e2e_status=0
python tests/e2e/lambda_e2e.py | tee target/e2e.log || e2e_status=$?
awk '/^e2e:/ { print $2, $4, 0 }' target/e2e.log >> "$summary"
[ "$e2e_status" -eq 0 ]

echo "==> template: cfn-lint, sam validate --lint, wiring tests"
./scripts/check-template.sh 2>&1 | tee target/template.log
awk '/^template:/ { print $2, $4, 0 }' target/template.log >> "$summary"

# One closing line for the whole run.
awk '{ p += $1; f += $2; s += $3 } END { printf "summary: %d passed, %d failed, %d skipped\n", p, f, s }' "$summary"

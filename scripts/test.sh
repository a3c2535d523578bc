#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs the tools the tests use (Python
# packages into .venv: moto, standardwebhooks, cargo-lambda, …), starts moto on a
# free loopback port for DynamoDB and SQS, checks formatting and lints, runs every test,
# the tenant portal in a headless browser, the end-to-end run of the Lambda binaries, the
# arm64 build that `sam build` makes, the template checks and the CDK construct's, and stops
# moto. Every stage runs whatever the ones before it did; the last line counts all of them
# (scripts/stages.sh), and the exit status is 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root=$(pwd)
# A from-scratch run gains nothing from incremental compilation: it only writes
# gigabytes of incremental state for the workspace's crates.
export CARGO_INCREMENTAL=0
mkdir -p target
# shellcheck source=scripts/stages.sh
. scripts/stages.sh
stages_begin "$root/target/test-summary.txt"

python_tools() {
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv || return 1
  fi
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
}
stage "python test tools (.venv)" - python_tools
export PATH="$root/.venv/bin:$PATH"
export HOOKLINE_TEST_PYTHON="$root/.venv/bin/python"

stage "node test tools (tests/mailgun-js)" - \
  npm ci --prefix tests/mailgun-js --no-audit --no-fund --silent

# moto (DynamoDB, SQS) on a free loopback port, for the whole run, handling DynamoDB
# requests one at a time as DynamoDB isolates conditional writes (tests/moto_atomic.py).
moto_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python tests/moto_atomic.py -H 127.0.0.1 -p "$moto_port" >target/moto.log 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null || true' EXIT
moto_listening() {
  for _ in $(seq 1 100); do
    if python3 -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', $moto_port)))"; then
      return 0
    fi
    sleep 0.2
  done
  cat target/moto.log
  return 1
}
stage "moto_server" - moto_listening
export HOOKLINE_TEST_AWS_ENDPOINT="http://127.0.0.1:$moto_port"

# The stage and summary logic of this script, on stand-in stages.
stage "test command's stages (tests/scripts)" unittest_counts \
  python3 -m unittest discover -s tests/scripts -v

stage "cargo fmt --check" - cargo fmt --all -- --check

stage "cargo clippy" - cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

# Every test binary runs even after one fails, so the counts cover them all.
stage "cargo test" cargo_test_counts \
  cargo test --workspace --all-features --locked --no-fail-fast

# Local mode against its own /openapi.json.
stage "schemathesis" "summary_line schemathesis" ./scripts/schemathesis.sh

# The tenant portal in headless Chromium: Debian's package, driven by Playwright from
# PyPI, against the local-mode binary the schemathesis stage built. Its screenshots go to
# target/portal-shots/ here, so a run leaves the committed ones in docs/portal/ alone (run
# tests/portal/test_portal.py by hand to refresh those).
portal_browser() {
  if [ ! -x /usr/bin/chromium ]; then
    echo "installing chromium"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
      >/dev/null || return 1
  fi
  ./scripts/build-test-bins.sh --quiet || return 1
  HOOKLINE_PORTAL_SHOTS="$root/target/portal-shots" \
    python tests/portal/test_portal.py "$root/target/debug/hookline"
}
stage "portal in a browser" "summary_line portal" portal_browser

# Each cargo-fuzz target for a few seconds on its committed corpus.
stage "fuzz smoke" fuzz_counts env FUZZ_SECONDS="${FUZZ_SECONDS:-10}" ./scripts/fuzz-smoke.sh

# Every measurement path of hookline-bench at tiny scale.
stage "benchmark smoke" bench_counts ./scripts/bench-smoke.sh

# The Lambda binaries under cargo lambda watch, against moto.
stage "end to end" "summary_line e2e" python tests/e2e/lambda_e2e.py

# The three bootstraps as `sam build` makes them: release profile, arm64, default features.
stage "arm64 Lambda build" "summary_line lambda-build" ./scripts/build-lambdas.sh

# cfn-lint, sam validate --lint, wiring tests.
stage "template" "summary_line template" ./scripts/check-template.sh

# The CDK construct: npm ci, its tests (with the parity with template.yaml), cdk synth
# without building the functions, cfn-lint on the synthesized template.
stage "cdk" "summary_line cdk" ./scripts/check-cdk.sh

stages_end

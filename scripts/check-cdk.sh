#!/usr/bin/env bash
# Checks the CDK construct (infra/cdk) offline: installs its Node packages from the lock
# file, runs its tests (assertions, and the parity with template.yaml), synthesizes its app
# without building the functions, and lints what synth wrote with cfn-lint (from
# .venv-template, scripts/template-tools.sh). No AWS account or credentials are needed.
# Prints one line per step; a failing step's full output is printed and the script exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-template
log=$(mktemp)
out=$(mktemp -d)
trap 'rm -rf "$log" "$out"' EXIT

export CDK_DISABLE_VERSION_CHECK=true CDK_DISABLE_CLI_TELEMETRY=true
export AWS_ACCESS_KEY_ID=hookline-check AWS_SECRET_ACCESS_KEY=hookline-check
unset AWS_PROFILE AWS_SESSION_TOKEN

# step NAME COMMAND...: runs COMMAND with its output kept aside; prints it only on failure.
step() {
  local name=$1
  shift
  if "$@" >"$log" 2>&1; then
    echo "check-cdk: $name ok"
  else
    local rc=$?
    cat "$log"
    echo "check-cdk: $name FAILED (exit $rc)" >&2
    exit 1
  fi
}

step "tools ($venv)" ./scripts/template-tools.sh
step "npm ci" npm ci --prefix infra/cdk --no-audit --no-fund
step "npm test" npm test --prefix infra/cdk
# node's test runner closes with "# pass N" and "# fail N".
passed=$(awk '/^# pass / { print $3 }' "$log")
grep -E '^# (tests|pass|fail) ' "$log" | sed 's/^# /check-cdk: npm test: /'
# skipBuild: the CDK's own switch that leaves assets unbundled, so nothing is compiled.
synth() {
  (cd infra/cdk && npx cdk synth --quiet --no-notices -c skipBuild=true -o "$out")
}
step "cdk synth" synth
# W3005: the CDK makes each function depend on its role, which its Role attribute already
# does.
step "cfn-lint (synth output)" "$venv/bin/cfn-lint" --ignore-checks W3005 -- "$out/Hookline.template.json"
echo "cdk: $((passed + 2)) passed, 0 failed"

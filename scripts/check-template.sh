#!/usr/bin/env bash
# Checks the SAM template offline: cfn-lint, `sam validate --lint` and the wiring tests in
# tests/template. Tools come from tests/template/requirements.txt, installed into their own
# venv (.venv-template) by scripts/template-tools.sh.
# Prints one line per step; a failing step's full output is printed and the script exits 1.
# No AWS account or credentials are needed (dummy ones are set so nothing looks for real ones).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-template
log=$(mktemp)
trap 'rm -f "$log"' EXIT

export SAM_CLI_TELEMETRY=0
export AWS_ACCESS_KEY_ID=hookline-check AWS_SECRET_ACCESS_KEY=hookline-check
unset AWS_PROFILE AWS_SESSION_TOKEN

# step NAME COMMAND...: runs COMMAND with its output kept aside; prints it only on failure.
step() {
  local name=$1
  shift
  if "$@" >"$log" 2>&1; then
    echo "check-template: $name ok"
  else
    local rc=$?
    cat "$log"
    echo "check-template: $name FAILED (exit $rc)" >&2
    exit 1
  fi
}

step "tools ($venv)" ./scripts/template-tools.sh
step "cfn-lint" "$venv/bin/cfn-lint" -- template.yaml
step "sam validate --lint" "$venv/bin/sam" validate --lint --region us-east-1 --template-file template.yaml
step "unittest tests/template" "$venv/bin/python" -m unittest discover -s tests/template -v
# The test count, from unittest's own summary ("Ran N tests in ...").
grep -m1 '^Ran ' "$log" | sed 's/^/check-template: unittest: /'
# One closing line for the suite's summary: the two linters and the wiring tests.
ran=$(grep -m1 '^Ran ' "$log" | awk '{ print $2 }')
echo "template: $((ran + 2)) passed, 0 failed"

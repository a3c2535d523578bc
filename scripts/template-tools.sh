#!/usr/bin/env bash
# Installs the template tools of tests/template/requirements.txt (cfn-lint, the SAM CLI)
# into .venv-template, apart from .venv because aws-sam-cli pins many packages. Does
# nothing when the venv already holds exactly these requirements.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-template
req=tests/template/requirements.txt
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/python" -m pip install --quiet -r "$req"
  echo "$want" >"$venv/.requirements.sha256"
fi

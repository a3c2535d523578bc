#!/usr/bin/env bash
# Property-based API tests: schemathesis reads /openapi.json of a local-mode Hookline and
# checks that no request gets a 5xx, and that every status code, body and content type is
# the documented one. Three runs: tenant routes with a tenant key, the operator's routes
# with the operator key, and the Mailgun-compatible routes with HTTP Basic auth.
#
# Endpoint URLs are refused unless https to a public address (HOOKLINE_ALLOW_HTTP=false, no
# allowed networks), and the binary and schemathesis run in a network namespace of their
# own with only loopback up, so no test send, `verify` or delivery can reach any address but
# 127.0.0.1. Where no namespace can be made (unshare needs root), the operations that send
# (publishing, test sends, Mailgun's webhook test call, endpoint create/update with
# `verify`, the operator's endpoints included) are left out instead, and the script says so.
#
# Prints `schemathesis: N passed, M failed` (operations per run, summed) as its last line and
# exits non-zero on any failure. SCHEMATHESIS names the CLI (default .venv/bin/schemathesis).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
st=${SCHEMATHESIS:-$root/.venv/bin/schemathesis}
examples=${SCHEMATHESIS_MAX_EXAMPLES:-50}

if [ -z "${HOOKLINE_ST_INNER:-}" ]; then
  echo "==> building local mode (the test run's build: nothing is compiled twice)"
  ./scripts/build-test-bins.sh --quiet
  if unshare --net true 2>/dev/null && command -v ip >/dev/null; then
    echo "==> running in a network namespace with only loopback"
    exec env HOOKLINE_ST_INNER=isolated unshare --net \
      bash -c 'ip link set lo up && exec "$0"' "$0"
  fi
  echo "==> no network namespace available: leaving out publish_events, test_endpoint,"
  echo "    mailgun_test_webhook, create_endpoint, update_endpoint and their operator"
  echo "    forms (they could make Hookline send)"
  export HOOKLINE_ST_INNER=shared
fi

work=$(mktemp -d)
hl_pid=""
cleanup() {
  if [ -n "$hl_pid" ]; then
    kill "$hl_pid" 2>/dev/null || true
    wait "$hl_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

py=python3
port=$($py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
operator="hkop_st_$($py -c 'import secrets; print(secrets.token_hex(16))')"
base="http://127.0.0.1:$port"

HOOKLINE_LISTEN="127.0.0.1:$port" HOOKLINE_DATA="$work/hookline.db" \
  HOOKLINE_OPERATOR_KEY="$operator" HOOKLINE_ALLOW_HTTP=false HOOKLINE_ALLOWED_NETWORKS= \
  HOOKLINE_RETRY_SCHEDULE=0s HOOKLINE_REQUEST_TIMEOUT=2s HOOKLINE_LOG=warn \
  "$root/target/debug/hookline" > "$work/hookline.log" 2>&1 &
hl_pid=$!
for _ in $(seq 1 100); do
  if $py -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', $port)))"; then
    break
  fi
  sleep 0.1
done

# A tenant with a domain, an endpoint and (when isolated) a message, so that the ids that
# schemathesis finds through the API's answers lead somewhere real.
tenant_key=$(HOOKLINE_ST_BASE="$base" HOOKLINE_ST_OPERATOR="$operator" $py - <<'EOF'
import json, os, urllib.request
base, op = os.environ["HOOKLINE_ST_BASE"], os.environ["HOOKLINE_ST_OPERATOR"]
def call(method, path, key, body):
    req = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {key}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)
key = call("POST", "/v1/tenants", op, {"name": "schemathesis"})["api_key"]
call("POST", "/v1/domains", key, {"name": "mg.schemathesis.example"})
call("POST", "/v1/endpoints", key, {"url": "https://hooks.schemathesis.example/all",
                                    "domain": "mg.schemathesis.example"})
if os.environ.get("HOOKLINE_ST_INNER") == "isolated":
    call("POST", "/v1/events", key, {"type": "delivered", "domain": "mg.schemathesis.example",
                                     "payload": {"event": "delivered"}})
print(key)
EOF
)

checks=not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance
operator_only='create_tenant|create_event_type'
sends='publish_events|test_endpoint|mailgun_test_webhook|create_endpoint|update_endpoint|create_operator_endpoint|update_operator_endpoint'
passed=0
failed=0

# One schemathesis run: a name, operation ids to leave out (alternatives, may be empty), then
# options. Adds its operation counts to the totals.
run() {
  local name=$1 exclude=$2
  shift 2
  local report="$work/$name.ndjson"
  if [ "$HOOKLINE_ST_INNER" = shared ]; then
    exclude="${exclude:+$exclude|}$sends"
  fi
  local extra=()
  if [ -n "$exclude" ]; then
    extra+=(--exclude-operation-id-regex "^($exclude)\$")
  fi
  echo "==> schemathesis: $name"
  local status=0
  # From the scratch directory, where schemathesis keeps its crash cache.
  (cd "$work" && "$st" run "$base/openapi.json" --checks "$checks" --max-examples "$examples" \
    --seed 1 --workers 1 --request-timeout 10 --no-color --generation-database none \
    --report ndjson --report-ndjson-path "$report" "${extra[@]}" "$@") || status=$?
  # Operations that ended with a failure, and those that did not.
  read -r p f < <($py - "$report" <<'EOF'
import json, sys
ops, bad = set(), set()
for line in open(sys.argv[1]):
    event = json.loads(line)
    for kind, body in event.items():
        if kind == "ScenarioFinished":
            label = body.get("recorder", {}).get("label") or body.get("label")
            if label:
                ops.add(label)
                if body.get("status") in ("failure", "error"):
                    bad.add(label)
        if kind == "NonFatalError":
            bad.add(body.get("label", "error"))
print(len(ops - bad), len(bad))
EOF
  )
  if [ "$status" -ne 0 ] && [ "$f" -eq 0 ]; then
    f=1
  fi
  passed=$((passed + p))
  failed=$((failed + f))
}

run tenant "$operator_only" -H "Authorization: Bearer $tenant_key" --exclude-tag mailgun
run operator "" -H "Authorization: Bearer $operator" \
  --include-operation-id-regex '^(create_tenant|create_event_type|get_tenant|list_api_keys|create_api_key|revoke_api_key|list_event_types|list_dead_letters|redrive_dead_letters|create_operator_endpoint|list_operator_endpoints|get_operator_endpoint|update_operator_endpoint|delete_operator_endpoint|get_operator_endpoint_secret)$'
run mailgun "" --auth "api:$tenant_key" --include-tag mailgun

if ! kill -0 "$hl_pid" 2>/dev/null; then
  echo "hookline exited during the run:"
  tail -n 50 "$work/hookline.log"
  failed=$((failed + 1))
fi
if grep -q '"level":"ERROR"\|ERROR' "$work/hookline.log"; then
  echo "hookline logged errors:"
  grep 'ERROR' "$work/hookline.log" | tail -n 20
fi

echo "schemathesis: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

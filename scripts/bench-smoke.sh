#!/usr/bin/env bash
# The benchmark suite at tiny scale: builds the binaries (debug profile), runs each
# measurement path of hookline-bench for a few seconds and checks that the numbers are
# sane (deliveries happened, JSON written); no timing thresholds. The last line is
# `bench: smoke passed` or `bench: smoke failed`. The Lambda paths need moto_server:
# HOOKLINE_TEST_AWS_ENDPOINT (as scripts/test.sh sets it), or .venv/bin/moto_server.
set -uo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
# The build of `cargo test --workspace --all-features` (scripts/test.sh): same packages,
# features (dev-dependencies' included, as `--tests` selects them) and profile, so after
# the test run only hookline-bench's binary is linked and nothing is compiled twice.
if ! ./scripts/build-test-bins.sh; then
    echo "bench: smoke failed"
    exit 1
fi
exec "$target/debug/hookline-bench" smoke --bin-dir "$target/debug" --json "$target/bench-smoke.json" "$@"

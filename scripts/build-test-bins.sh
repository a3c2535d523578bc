#!/usr/bin/env bash
# Builds every binary of the workspace (local mode, the three Lambda functions,
# hookline-bench) into target/debug exactly as `cargo test --workspace --all-features`
# does in scripts/test.sh: the same packages, the same features (with the dev-dependencies'
# features, which `--tests` brings in just as `cargo test` does) and the same profile.
# Cargo then finds everything the test run compiled already fresh, and the scripts that
# run binaries (schemathesis, the benchmark smoke test, the Lambda end-to-end run) compile
# nothing of their own. Without the test targets, Cargo would resolve other features
# (tokio without `test-util`, hookline-core without `contract`, ...) and rebuild most of
# the dependency graph a second time.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo build --workspace --all-features --locked --bins --tests "$@"

#!/usr/bin/env bash
# Fuzz smoke test: builds the cargo-fuzz targets in fuzz/ and runs each for a few seconds on
# its committed corpus. Prints `fuzz: <target> passed|failed` per target and exits non-zero
# if any target fails to build or finds a crash. See docs/fuzzing.md.
#
# Settings (environment):
#   FUZZ_SECONDS         seconds per target (default 15)
#   FUZZ_TOOLCHAIN       "nightly" or "stable" (default: nightly when rustup has it, else
#                        stable with RUSTC_BOOTSTRAP=1)
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FUZZ_DIR="$ROOT/fuzz"
TOOLS="$ROOT/target/tools"
CARGO_FUZZ_VERSION="0.13.2"
SECONDS_PER_TARGET="${FUZZ_SECONDS:-15}"
TARGETS=(envelope urlpolicy mailgun_form)
# Safe Rust: coverage-guided fuzzing without a sanitizer runs several times faster, and
# debug assertions and overflow checks stay on (see fuzz/Cargo.toml).
SANITIZER=(--sanitizer none)

export PATH="$TOOLS/bin:$PATH"

fail_all() {
    for t in "${TARGETS[@]}"; do echo "fuzz: $t failed"; done
    exit 1
}

# cargo-fuzz, pinned, in a project-local root.
if ! cargo-fuzz --version 2>/dev/null | grep -q " $CARGO_FUZZ_VERSION\$"; then
    echo "installing cargo-fuzz $CARGO_FUZZ_VERSION into $TOOLS" >&2
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$TOOLS" >&2 \
        || fail_all
fi

# libFuzzer's instrumentation flags are unstable rustc options: nightly, or stable told to
# accept them.
toolchain="${FUZZ_TOOLCHAIN:-}"
if [ -z "$toolchain" ]; then
    if command -v rustup >/dev/null 2>&1 && rustup run nightly rustc --version >/dev/null 2>&1; then
        toolchain=nightly
    else
        toolchain=stable
    fi
fi
if [ "$toolchain" = nightly ]; then
    CARGO=(cargo +nightly)
else
    CARGO=(cargo)
    command -v rustup >/dev/null 2>&1 && CARGO=(cargo +stable)
    export RUSTC_BOOTSTRAP=1
fi
echo "fuzz toolchain: $toolchain" >&2

cd "$FUZZ_DIR" || fail_all
log="$(mktemp -d)"
trap 'rm -rf "$log"' EXIT

if ! "${CARGO[@]}" fuzz build "${SANITIZER[@]}" >"$log/build.log" 2>&1; then
    tail -n 40 "$log/build.log" >&2
    fail_all
fi

status=0
for t in "${TARGETS[@]}"; do
    # New inputs go to a scratch directory; the committed corpus is only read.
    mkdir -p "$log/$t"
    if "${CARGO[@]}" fuzz run "${SANITIZER[@]}" "$t" "$log/$t" "corpus/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
        >"$log/$t.log" 2>&1; then
        echo "fuzz: $t passed"
    else
        grep -m1 -B2 -A12 -E "panicked|ERROR: libFuzzer|==ERROR" "$log/$t.log" >&2 \
            || tail -n 40 "$log/$t.log" >&2
        echo "fuzz: $t failed"
        status=1
    fi
done
exit "$status"

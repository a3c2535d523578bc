# shellcheck shell=bash
# The stages of the test command and their one summary: every stage runs to its end
# whatever the others did, and a stage that fails without counting a failure (a lint, a
# build error, a crash) counts one, under its name. Sourced by scripts/test.sh, and by
# tests/scripts/test_stages.py with stand-in stages.
#
#   stages_begin FILE              starts a run; one line per stage goes to FILE, each
#                                  stage's output to FILE's folder, in stages/<name>.log
#   stage NAME COUNTER COMMAND...  runs COMMAND, showing its output. COUNTER, given the
#                                  output's file, prints "PASSED FAILED SKIPPED"; `-` makes
#                                  the stage one check, passed or failed by its exit status
#   stages_end                     prints each stage's counts and elapsed seconds (where a
#                                  run's time goes) and the closing line
#                                  `summary: N passed, N failed, N skipped`; returns 1 if
#                                  any stage failed

stages_begin() {
  STAGES_FILE=$1
  STAGES_LOGS="$(dirname "$1")/stages"
  mkdir -p "$STAGES_LOGS"
  : >"$STAGES_FILE"
}

stage() {
  local name=$1 counter=$2
  shift 2
  local log
  log="$STAGES_LOGS/$(printf '%s' "$name" | tr -cs 'A-Za-z0-9' '-').log"
  echo "==> $name"
  local started=$SECONDS
  "$@" 2>&1 | tee "$log"
  local status=${PIPESTATUS[0]}
  local elapsed=$((SECONDS - started))

  local passed=0 failed=0 skipped=0 note=""
  if [ "$counter" = - ]; then
    [ "$status" -eq 0 ] && passed=1
  else
    local counts
    # A counter may take arguments of its own ("summary_line e2e"): split it into words.
    # shellcheck disable=SC2086
    counts=$($counter "$log")
    if [[ "$counts" =~ ^[0-9]+\ [0-9]+\ [0-9]+$ ]]; then
      read -r passed failed skipped <<<"$counts"
    else
      # Whatever happened, nothing shows that the stage's checks ran.
      failed=1
      note="no count reported"
    fi
  fi
  if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
    failed=1
    note="exit $status, no failure counted"
  elif [ "$status" -ne 0 ]; then
    note="${note:-exit $status}"
  fi
  if [ "$failed" -gt 0 ]; then
    echo "==> $name FAILED${note:+ ($note)}"
  fi
  printf '%s\t%d\t%d\t%d\t%s\t%d\n' "$name" "$passed" "$failed" "$skipped" "$note" "$elapsed" \
    >>"$STAGES_FILE"
}

stages_end() {
  echo "==> stages (elapsed seconds)"
  awk -F'\t' '{
    printf "  %-6s %5ds %s: %d passed, %d failed, %d skipped%s\n", ($3 > 0 ? "FAILED" : "ok"),
      $6, $1, $2, $3, $4, ($5 == "" ? "" : " (" $5 ")")
    total += $6
  }
  END { printf "  %-6s %5ds\n", "total", total }' "$STAGES_FILE"
  awk -F'\t' '
    { p += $2; f += $3; s += $4 }
    $3 > 0 { failed = failed (failed == "" ? "" : ", ") $1 }
    END {
      printf "summary: %d passed, %d failed, %d skipped%s\n", p, f, s,
        (failed == "" ? "" : "; failed: " failed)
      exit (f > 0)
    }' "$STAGES_FILE"
}

# ---- counters: each reads one stage's output and prints "PASSED FAILED SKIPPED" --------

# `cargo test --no-fail-fast`: its "test result:" lines, plus one failure for each test
# binary that ended without one (it crashed, or was killed).
cargo_test_counts() {
  awk '
    /^ *(Running|Doc-tests) / { reported = 0 }
    /^test result:/ { p += $4; f += $6; s += $8; reported = 1 }
    /^error: test failed, to rerun pass/ && !reported { f++ }
    END { print p + 0, f + 0, s + 0 }' "$1"
}

# A line "PREFIX: N passed, M failed", as the stage scripts print last; nothing if absent.
summary_line() {
  awk -v prefix="$1:" '$1 == prefix && $3 == "passed," && $5 == "failed" { line = $2 " " $4 " 0" }
    END { if (line != "") print line }' "$2"
}

# Python's unittest: "Ran N tests", then "OK" or "FAILED", maybe with a list such as
# "(failures=1, errors=2, skipped=3, expected failures=4, unexpected successes=5)".
unittest_counts() {
  awk '
    /^Ran [0-9]+ tests?/ { ran = $2 }
    /^(OK|FAILED)( |$)/ {
      list = $0
      sub(/^[A-Z]+ *\(?/, "", list)
      sub(/\)$/, "", list)
      n = split(list, items, /, /)
      for (i = 1; i <= n; i++) {
        split(items[i], kv, "=")
        if (kv[1] == "failures" || kv[1] == "errors" || kv[1] == "unexpected successes") bad += kv[2]
        if (kv[1] == "skipped") skipped += kv[2]
      }
      done = 1
    }
    END { if (done) print ran - bad - skipped, bad + 0, skipped + 0 }' "$1"
}

# `fuzz: TARGET passed|failed`, one line per fuzz target.
fuzz_counts() {
  awk '/^fuzz: .* passed$/ { p++ } /^fuzz: .* failed$/ { f++ } END { print p + 0, f + 0, 0 }' "$1"
}

# `bench: smoke passed|failed`.
bench_counts() {
  awk '/^bench: smoke passed$/ { p++ } /^bench: smoke failed$/ { f++ } END { print p + 0, f + 0, 0 }' "$1"
}

"""The test command's stages and summary (scripts/stages.sh): every stage runs whatever the
others did, the closing `summary:` line counts and names every failure, and the exit status
says whether anything failed. Each test runs a small bash script of stand-in stages."""

import os
import subprocess
import tempfile
import textwrap
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STAGES = os.path.join(ROOT, "scripts", "stages.sh")


def run_stages(body):
    """Runs BODY (bash) between stages_begin and stages_end; returns (exit status, output
    lines, the per-stage file's rows)."""
    with tempfile.TemporaryDirectory() as tmp:
        script = textwrap.dedent(
            """\
            set -uo pipefail
            . "$1"
            stages_begin "$2/summary.txt"
            {body}
            stages_end
            """
        ).format(body=textwrap.dedent(body))
        done = subprocess.run(
            ["bash", "-c", script, "stages-test", STAGES, tmp],
            cwd=tmp, capture_output=True, text=True, timeout=60)
        with open(os.path.join(tmp, "summary.txt"), encoding="utf-8") as f:
            rows = [line.rstrip("\n").split("\t") for line in f]
    return done.returncode, done.stdout.splitlines(), rows


def count(counter, log):
    """Runs one counter of scripts/stages.sh on LOG's text; returns what it printed."""
    with tempfile.NamedTemporaryFile("w", suffix=".log", delete=False) as f:
        f.write(textwrap.dedent(log))
    try:
        done = subprocess.run(
            ["bash", "-c", '. "$1"; ' + counter + ' "$2"', "count", STAGES, f.name],
            capture_output=True, text=True, check=True, timeout=60)
    finally:
        os.unlink(f.name)
    return done.stdout.strip()


class Stages(unittest.TestCase):
    def test_every_stage_runs_after_a_failure_and_the_failure_is_counted_and_named(self):
        status, out, rows = run_stages(
            """\
            stage "tools" - true
            stage "fmt" - bash -c 'echo "Diff in src/lib.rs"; exit 1'
            stage "tests" "summary_line demo" echo "demo: 7 passed, 0 failed"
            """)
        self.assertEqual(status, 1)
        self.assertIn("demo: 7 passed, 0 failed", out, "the stage after the failure ran")
        self.assertEqual(out[-1], "summary: 8 passed, 1 failed, 0 skipped; failed: fmt")
        self.assertEqual([r[:4] for r in rows], [
            ["tools", "1", "0", "0"], ["fmt", "0", "1", "0"], ["tests", "7", "0", "0"]])
        self.assertIn("  FAILED     0s fmt: 0 passed, 1 failed, 0 skipped "
                      "(exit 1, no failure counted)", out)

    def test_all_passing_sums_the_counts_and_exits_zero(self):
        status, out, _ = run_stages(
            """\
            stage "lint" - true
            stage "unit" "summary_line demo" echo "demo: 3 passed, 0 failed"
            stage "more" "summary_line other" printf 'noise\\nother: 4 passed, 0 failed\\n'
            """)
        self.assertEqual(status, 0)
        self.assertEqual(out[-1], "summary: 8 passed, 0 failed, 0 skipped")

    def test_counted_failures_are_kept_as_counted(self):
        status, out, _ = run_stages(
            """\
            stage "suite" "summary_line demo" bash -c 'echo "demo: 2 passed, 3 failed"; exit 1'
            stage "after" - true
            """)
        self.assertEqual(status, 1)
        self.assertEqual(out[-1], "summary: 3 passed, 3 failed, 0 skipped; failed: suite")

    def test_a_crash_before_any_count_is_a_named_failure(self):
        status, out, rows = run_stages(
            """\
            stage "e2e" "summary_line e2e" bash -c 'echo starting; kill -SEGV $$'
            stage "build" - bash -c 'echo "error[E0425]: cannot find value"; exit 101'
            stage "template" "summary_line template" echo "template: 5 passed, 0 failed"
            """)
        self.assertEqual(status, 1)
        self.assertEqual(out[-1],
                         "summary: 5 passed, 2 failed, 0 skipped; failed: e2e, build")
        self.assertEqual(rows[0][2], "1")
        self.assertEqual(rows[0][4], "no count reported")
        self.assertEqual(rows[1][4], "exit 101, no failure counted")

    def test_a_stage_that_succeeds_without_its_count_is_a_failure(self):
        # An exit status of 0 with no "e2e:" line shows nothing about the checks.
        status, out, _ = run_stages('stage "e2e" "summary_line e2e" echo "nothing ran"\n')
        self.assertEqual(status, 1)
        self.assertEqual(out[-1], "summary: 0 passed, 1 failed, 0 skipped; failed: e2e")

    def test_each_stage_reports_its_elapsed_seconds_and_the_run_their_total(self):
        status, out, rows = run_stages(
            """\
            stage "quick" - true
            stage "slow" - sleep 2
            """)
        self.assertEqual(status, 0)
        self.assertEqual([r[0] for r in rows], ["quick", "slow"])
        quick, slow = int(rows[0][5]), int(rows[1][5])
        self.assertGreaterEqual(slow, 2)
        self.assertIn(f"  ok     {slow:5d}s slow: 1 passed, 0 failed, 0 skipped", out)
        self.assertIn(f"  total  {quick + slow:5d}s", out)

    def test_each_stage_keeps_its_output(self):
        with tempfile.TemporaryDirectory() as tmp:
            script = ('. "$1"; stages_begin "$2/summary.txt"; '
                      'stage "cargo fmt --check" - echo "the output"; stages_end')
            subprocess.run(["bash", "-c", script, "t", STAGES, tmp], check=True,
                           capture_output=True, timeout=60)
            with open(os.path.join(tmp, "stages", "cargo-fmt-check.log"),
                      encoding="utf-8") as f:
                self.assertEqual(f.read(), "the output\n")


class Counters(unittest.TestCase):
    def test_cargo_test_counts_results_and_a_test_binary_that_crashed(self):
        log = """\
             Running unittests src/lib.rs (target/debug/deps/nff-682c7c66d8d3d6c3)
        test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s

             Running tests/a.rs (target/debug/deps/a-029a4b6067d194af)
        test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.41s

        error: test failed, to rerun pass `--test a`
             Running tests/b.rs (target/debug/deps/b-95177eeade27ec1e)

        running 1 test
        error: test failed, to rerun pass `--test b`

        Caused by:
          process didn't exit successfully: `target/debug/deps/b-95177eeade27ec1e` (signal: 6, SIGABRT: process abort signal)
             Running tests/c.rs (target/debug/deps/c-5f1796392fac6732)
        test result: ok. 1 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s

           Doc-tests nff
        test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s

        error: 2 targets failed:
            `--test a`
            `--test b`
        """
        self.assertEqual(count("cargo_test_counts", log), "3 2 1")

    def test_cargo_test_counts_nothing_after_a_build_error(self):
        log = """\
           Compiling hookline v0.1.0
        error[E0425]: cannot find value `x` in this scope
        error: could not compile `hookline` (lib) due to 1 previous error
        """
        self.assertEqual(count("cargo_test_counts", log), "0 0 0")

    def test_unittest_counts(self):
        self.assertEqual(count("unittest_counts", "Ran 12 tests in 0.3s\n\nOK\n"), "12 0 0")
        self.assertEqual(
            count("unittest_counts", "Ran 12 tests in 0.3s\n\nFAILED (failures=2, errors=1, "
                  "skipped=3, expected failures=1)\n"), "6 3 3")
        self.assertEqual(count("unittest_counts", "Ran 4 tests in 0.1s\n\nOK (skipped=1)\n"),
                         "3 0 1")
        self.assertEqual(count("unittest_counts", "Traceback (most recent call last):\n"), "")

    def test_summary_line_takes_the_last_line_of_its_prefix(self):
        self.assertEqual(count("summary_line schemathesis",
                               "schemathesis: 2 passed, 0 failed\nnoise\n"
                               "schemathesis: 40 passed, 1 failed\n"), "40 1 0")
        self.assertEqual(count("summary_line e2e", "template: 3 passed, 0 failed\n"), "")

    def test_fuzz_and_bench_counts(self):
        self.assertEqual(count("fuzz_counts", "fuzz: envelope passed\nfuzz: urlpolicy failed\n"),
                         "1 1 0")
        self.assertEqual(count("bench_counts", "bench: smoke failed\n"), "0 1 0")


if __name__ == "__main__":
    unittest.main()

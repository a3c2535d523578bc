# Shortcuts; README.md has the two commands that matter (run, test).
.PHONY: run test fmt lint

run:
	cargo run --release

test:
	./scripts/test.sh

fmt:
	cargo fmt --all

lint:
	cargo clippy --workspace --all-targets -- -D warnings

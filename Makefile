# Shortcuts; README.md has the two commands that matter (run, test).
.PHONY: run test fmt lint build deploy template

run:
	cargo run --release

test:
	./scripts/test.sh

fmt:
	cargo fmt --all

lint:
	cargo clippy --workspace --all-targets --all-features -- -D warnings

# The three Lambda bootstraps (needs cargo-lambda and ziglang, e.g. from .venv).
build:
	sam build --config-file infra/samconfig.toml

deploy:
	sam deploy --guided --config-file infra/samconfig.toml

template:
	./scripts/check-template.sh

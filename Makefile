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

# The three Lambda bootstraps into .aws-sam, for deploy. README.md ("On AWS") lists what
# sam build needs; cargo-lambda and ziglang are taken from .venv.
build:
	rustup target add aarch64-unknown-linux-gnu
	PATH="$(CURDIR)/.venv/bin:$$PATH" sam build --config-file infra/samconfig.toml

deploy:
	sam deploy --guided --config-file infra/samconfig.toml

template:
	./scripts/check-template.sh

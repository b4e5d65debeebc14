#!/usr/bin/env bash
# The project's one test command: checks formatting and lints, then runs every test.
# Needs only Rust (and, once the AWS-backed suites exist, Python 3 for a local moto
# server that this script installs into ./.venv). Nothing here reaches real AWS.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --all-targets --locked -- -D warnings

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --locked --no-fail-fast
    # nextest does not run doctests
    cargo test --locked --doc
else
    cargo test --locked --no-fail-fast
fi

step "all checks passed"

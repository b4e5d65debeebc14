#!/usr/bin/env bash
# The project's one test command: checks formatting and lints, installs and starts a local
# AWS-compatible server (moto, in ./.venv, on 127.0.0.1) for the AWS-backed suites, then
# runs every test. Needs Rust and Python 3; nothing here reaches real AWS.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --all-targets --locked -- -D warnings

step "Prometheus alert rules (promtool)"
mkdir -p target
# promtool comes with Debian's `prometheus` package; install it where we may (CI runs as
# root). Elsewhere tests/deploy.rs still parses the rules and checks their metric names.
if ! command -v promtool >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) >target/apt-prometheus.log 2>&1 \
        || echo "could not install promtool (see target/apt-prometheus.log)"
fi
if command -v promtool >/dev/null 2>&1; then
    promtool check rules deploy/prometheus/alerts.yml
    promtool test rules deploy/prometheus/alerts_test.yml
else
    echo "promtool not available: skipping (tests/deploy.rs still checks the rules)"
fi

step "local AWS: moto[server] in ./.venv"
MOTO_SPEC='moto[server]>=5.2,<5.3'
if [ ! -x .venv/bin/moto_server ]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check "$MOTO_SPEC"
fi
MOTO_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p target
# ECS in moto reports runningCount 0 unless told how many tasks "run". The wrapper is
# moto_server with DynamoDB requests serialized (see scripts/moto_server.py for why).
MOTO_ECS_SERVICE_RUNNING=2 .venv/bin/python scripts/moto_server.py -H 127.0.0.1 -p "$MOTO_PORT" >target/moto.log 2>&1 &
MOTO_PID=$!
trap 'kill "$MOTO_PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$MOTO_PORT/moto-api/" >/dev/null 2>&1; then break; fi
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$MOTO_PORT/moto-api/" >/dev/null || { cat target/moto.log; echo "moto did not start"; exit 1; }
export WPFLEET_TEST_AWS_ENDPOINT="http://127.0.0.1:$MOTO_PORT"
# Dummy credentials: the SDK insists on some; moto accepts any.
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=eu-west-1
echo "moto listening on $WPFLEET_TEST_AWS_ENDPOINT (log: target/moto.log)"

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --locked --no-fail-fast
    # nextest does not run doctests
    cargo test --locked --doc
else
    cargo test --locked --no-fail-fast
fi

step "all checks passed"

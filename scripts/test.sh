#!/usr/bin/env bash
# Runs every check and test of the workspace: formatting, clippy with warnings as errors, and the
# whole test suite (unit tests, integration tests including the SIGKILL crash test, doc tests).
# Keel's tests need no external service: topics, checkpoints and sinks are local files.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is not installed: install Rust from https://rustup.rs (or your distribution's rustup package)" >&2
  exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace --all-targets
cargo test --workspace --doc

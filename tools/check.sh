#!/usr/bin/env bash
# The one check script, the same locally and in CI: module layers, format, lints, tests, docs.
# Usage: tools/check.sh            (from anywhere inside the repository)
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUSTFLAGS="${RUSTFLAGS:-} -D warnings"
export RUSTDOCFLAGS="${RUSTDOCFLAGS:-} -D warnings"

step() { printf '\n==> %s\n' "$*"; }

step "module graph follows the layer order (tools/module_dag.py)"
python3 tools/module_dag.py

step "no function over 120 lines without a reason (tools/fn_lengths.py)"
python3 tools/fn_lengths.py --check src python/src

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

step "the library alone: cargo build/clippy --lib --no-default-features (no CLI, no server)"
cargo build --lib --no-default-features --locked
cargo clippy --lib --no-default-features --locked -- -D warnings

step "cargo nextest run (release-like test profile)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast
else
  cargo test --locked --no-fail-fast
fi
# nextest does not run doctests
cargo test --locked --doc

step "cargo doc"
cargo doc --locked --no-deps

step "criterion benches compile"
cargo bench --locked --no-run

step "Python package: fmt and clippy of python/ (its own crate, not a workspace member)"
# Its own target dir: the extension links the engine without default features, in release.
export PY_TARGET="$PWD/target/python"
cargo fmt --manifest-path python/Cargo.toml -- --check
CARGO_TARGET_DIR="$PY_TARGET" cargo clippy --manifest-path python/Cargo.toml --locked -- -D warnings

step "Python package: venv, maturin build + install (pip install ./python), pytest"
tools/python_check.sh

echo
echo "check.sh: all checks passed"

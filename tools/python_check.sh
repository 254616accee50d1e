#!/usr/bin/env bash
# Builds and tests the Python package (python/): a venv under target/, maturin, numpy and
# pytest from PyPI, `pip install ./python` (release build, --locked), then pytest against the
# `m3` binary the cargo steps built. Called by tools/check.sh; runs alone as well.
# Usage: tools/python_check.sh            (from anywhere inside the repository)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${M3_PY_VENV:-$PWD/target/python-venv}"
export CARGO_TARGET_DIR="${PY_TARGET:-$PWD/target/python}"

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
# Already-installed packages make this a quick no-op on later runs.
# Ray (pinned) for m3.distributed's tests (python/tests/test_distributed.py: a local
# cluster on loopback).
"$VENV/bin/pip" install --quiet --disable-pip-version-check "maturin>=1.7,<2" numpy pytest \
  "ray==2.60.0"

# Exactly what the README says (`pip install ./python`), with the venv's maturin so that the
# build needs no second download, and the lock file enforced.
MATURIN_PEP517_ARGS="--locked" PATH="$VENV/bin:$PATH" \
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-build-isolation \
  --force-reinstall --no-deps ./python

# The tests compare the package with the CLI: the binary of the cargo steps (cli feature).
M3_BIN="${M3_BIN:-$PWD/target/debug/m3}"
if [ ! -x "$M3_BIN" ]; then
  cargo build --locked --bin m3
fi
# Run from the tests' folder so that `import m3` is the installed package, not python/.
(cd python/tests && M3_BIN="$M3_BIN" M3_REQUIRE_CLI=1 "$VENV/bin/python" -m pytest -q -p no:cacheprovider .)

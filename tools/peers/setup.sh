#!/usr/bin/env bash
# Create (or refresh) the Python venv with the peer ANN systems used by tools/peers/*.py.
# Idempotent: re-running only installs what is missing or at a different version.
#   usage: tools/peers/setup.sh            (venv at $REPO/tools/.venv)
#          M3_PEERS_VENV=/some/dir tools/peers/setup.sh
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/../.." && pwd)"
VENV="${M3_PEERS_VENV:-$REPO/tools/.venv}"
REQ="$SCRIPT_DIR/requirements.txt"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup.sh: creating venv at $VENV" >&2
    "$PY" -m venv "$VENV"
else
    echo "setup.sh: reusing venv at $VENV" >&2
fi

VPY="$VENV/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1

# hnswlib 0.8.0 has no wheel: it is compiled from its sdist, which needs a C++ compiler.
# Its setup.py adds -march=native unless HNSWLIB_NO_NATIVE is set; keep native (benchmark box).
if ! command -v g++ >/dev/null 2>&1 && ! command -v c++ >/dev/null 2>&1; then
    echo "setup.sh: warning: no C++ compiler found; hnswlib's build will fail (apt-get install g++)" >&2
fi

"$VPY" -m pip install --quiet -r "$REQ"

# Fail loudly if the resolver drifted (e.g. something pulled numpy 2, which breaks diskannpy).
M3_REQ="$REQ" "$VPY" - <<'PYEOF'
import importlib.metadata as md, os, re, sys
bad = []
for line in open(os.environ["M3_REQ"]):
    line = line.split("#", 1)[0].strip()
    m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
    if not m:
        continue
    name, want = m.groups()
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        have = None
    if have != want:
        bad.append(f"{name}: want {want}, have {have}")
if bad:
    sys.exit("setup.sh: version mismatch:\n  " + "\n  ".join(bad))
PYEOF

# Smoke test: every module imports, and print what is installed.
"$VPY" - <<'PYEOF'
import sys
import numpy, faiss, diskannpy, hnswlib, matplotlib
import importlib.metadata as md
print(f"python      {sys.version.split()[0]}  ({sys.executable})")
for dist in ("numpy", "faiss-cpu", "diskannpy", "hnswlib", "matplotlib"):
    print(f"{dist:<11} {md.version(dist)}")
print(f"faiss.__version__ = {faiss.__version__}")
PYEOF

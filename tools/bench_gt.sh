#!/usr/bin/env bash
# Exact ground truth: `m3 gt` against faiss-cpu's exact IndexFlatIP, same data, same machine,
# one run after the other. Prints one JSON line per system.
# Usage: tools/bench_gt.sh [THREADS]   (needs tools/peers/setup.sh's venv for faiss)
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-2}"
D="${M3_SHARED_DATA:-../shared/data}/glove-50d"
venv="${M3_PEERS_VENV:-tools/.venv}"
cargo build --release --locked --quiet
mkdir -p work
load() { cut -d' ' -f1 /proc/loadavg; }
l0=$(load)
start=$(date +%s%N)
target/release/m3 gt --base "$D/base.390K.fbin" --queries "$D/query.10K.fbin" --k 100 \
  --metric ip --threads "$threads" --out work/m3_gt100.ibin 2>/dev/null
end=$(date +%s%N)
ms=$(( (end - start) / 1000000 ))
printf '{"system":"m3 gt","threads":%s,"total_s":%d.%03d,"load1_before":%s}\n' \
  "$threads" $((ms / 1000)) $((ms % 1000)) "$l0"
target/release/m3 recall --results work/m3_gt100.ibin --gt "$D/gt100.ip.ibin" \
  --gt-dists "$D/gt100.ip.dist.fbin" --k 100 --metric ip
OMP_WAIT_POLICY=PASSIVE "$venv/bin/python" tools/peers/faiss_exact.py --base "$D/base.390K.fbin" \
  --queries "$D/query.10K.fbin" --k 100 --metric ip --threads "$threads" --json

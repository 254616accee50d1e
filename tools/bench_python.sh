#!/usr/bin/env bash
# Issue 15's benchmark: QPS of the Python package against `m3 bench` at the same knobs on
# GloVe-50d, run alternately (Python, CLI, Python, CLI, …) because the machine is shared.
# Needs the package installed in $PY (default target/python-venv/bin/python) and an index
# built from base.390K.fbin with metric ip (m3 build, or m3.build) at $IDX.
# Usage: tools/bench_python.sh IDX [ROUNDS]
#   QB=10000 queries per batch-1,000 measurement, Q1=2000 per batch-1 measurement (env)
set -euo pipefail
cd "$(dirname "$0")/.."
IDX="$1"
ROUNDS="${2:-3}"
D="${M3_SHARED_DATA:-../shared/data}/glove-50d"
PY="${PY:-target/python-venv/bin/python}"
M3="${M3:-target/release/m3}"
KNOBS=(--nprobe 64 --rerank 30)
QB="${QB:-10000}"
Q1="${Q1:-2000}"
for r in $(seq 1 "$ROUNDS"); do
  echo "# round $r, load $(cut -d' ' -f1-3 /proc/loadavg)"
  # batch 1,000 on 2 worker threads (the CLI: all $QB queries in one batch)
  "$PY" tools/bench_python.py --index "$IDX" --queries "$D/query.10K.fbin" --gt "$D/gt100.ip.ibin" \
    --k 10 --threads 2 --max-queries "$QB" --batch 1000 nprobe=64 rerank=30
  "$M3" bench --index "$IDX" --queries "$D/query.10K.fbin" --gt "$D/gt100.ip.ibin" \
    --gt-dists "$D/gt100.ip.dist.fbin" --k 10 --threads 2 --max-queries "$QB" "${KNOBS[@]}" \
    --json 2>/dev/null
  # batch 1 (one query per call, on the calling thread) against the CLI at 1 thread, 1 in flight
  "$PY" tools/bench_python.py --index "$IDX" --queries "$D/query.10K.fbin" --gt "$D/gt100.ip.ibin" \
    --k 10 --threads 1 --max-queries "$Q1" --batch 1 nprobe=64 rerank=30
  "$M3" bench --index "$IDX" --queries "$D/query.10K.fbin" --gt "$D/gt100.ip.ibin" \
    --gt-dists "$D/gt100.ip.dist.fbin" --k 10 --threads 1 --inflight 1 --max-queries "$Q1" \
    "${KNOBS[@]}" --json 2>/dev/null
done

#!/usr/bin/env bash
# `m3 serve` under `m3 loadtest` beside `m3 bench` in process, same index and knobs
# (docs/BENCHMARKS.md, "Serving"). Loopback only; every load level is bounded by --requests
# and --duration-secs.
# Usage: tools/bench_serve.sh [INDEX] [DATA_DIR] [BATCH]
#   defaults: work/bench/xm200k.m3, work/xm200k (query.fbin, gt100.ibin), 1 vector per request
set -euo pipefail
cd "$(dirname "$0")/.."
index="${1:-work/bench/xm200k.m3}"
data="${2:-work/xm200k}"
batch="${3:-1}"
knobs=(--k 10 --nprobe 8 --qprobe 0 --rerank 40)
cargo build --release --locked --quiet
m3="${CARGO_TARGET_DIR:-target}/release/m3"
q=(--queries "$data/query.fbin" --max-queries 2000 --gt "$data/gt100.ibin")

echo "== in process: load $(cat /proc/loadavg)"
"$m3" bench --index "$index" "${q[@]}" "${knobs[@]}" --thread-counts 1,2 --json

err="$(mktemp)"
"$m3" serve --index "$index" --addr 127.0.0.1:0 --threads 2 2> "$err" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true; rm -f "$err"' EXIT
for _ in $(seq 300); do grep -q listening "$err" && break; sleep 0.1; done
url="$(grep -o 'http://[0-9.:]*' "$err")"
echo "== over HTTP ($url), batch $batch: load $(cat /proc/loadavg)"
"$m3" loadtest --url "$url" "${q[@]}" "${knobs[@]}" --batch "$batch" \
  --concurrency 1,4,16,64 --requests 4000 --duration-secs 30
echo "== load after: $(cat /proc/loadavg)"
kill -TERM "$pid"
wait "$pid"
echo "m3 serve exited $?"
trap - EXIT
cat "$err"
rm -f "$err"

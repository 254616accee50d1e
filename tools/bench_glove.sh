#!/usr/bin/env bash
# M³ on the real GloVe-50d set (390K × 50, inner product): build, sweep, best QPS at recall
# targets beside the peers measured by tools/peers/run_peers.py (when their results exist).
# Usage: tools/bench_glove.sh [WORKDIR]     (default work/bench)
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-work/bench}"
D="${M3_SHARED_DATA:-../shared/data}/glove-50d"
cargo build --release --locked --quiet
m3=target/release/m3
mkdir -p "$work"
echo "load before build: $(cat /proc/loadavg)"
"$m3" build --base "$D/base.390K.fbin" --metric ip --out "$work/glove.m3" --threads 2 --json \
  > "$work/glove-build.json"
echo "load before bench: $(cat /proc/loadavg)"
"$m3" bench --index "$work/glove.m3" --queries "$D/query.10K.fbin" --max-queries 2000 \
  --gt "$D/gt100.ip.ibin" --gt-dists "$D/gt100.ip.dist.fbin" --k 10 --thread-counts 1,2 \
  --sweep nprobe=6,8,12,16,20,24,32,48,64,96,128 --sweep rerank=20,30,60 --json \
  > "$work/glove-m3.jsonl"
echo "load after bench: $(cat /proc/loadavg)"
peers=()
[ -f work/peers/glove.jsonl ] && peers+=(work/peers/glove.jsonl)
python3 tools/peers/best_at.py "$work/glove-m3.jsonl" "${peers[@]}"

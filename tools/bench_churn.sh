#!/usr/bin/env bash
# Ten rounds of 10% churn on GloVe-50d (issue 14): an index built from all 390K rows (row-number
# ids); each round upserts a random 10% of the rows (`m3 insert --ids` of the same ids and
# vectors: each is deleted and inserted again), so the live set, its ground truth and its fresh
# build never change. After every round: recall@10 at fixed knobs (2,000 queries, nprobe 64,
# rerank 30), bytes on disk, the insert command's time. With MERGE=1, `m3 merge` (per-cluster
# merge, default thresholds; decision 0012) runs after every round and its report is printed.
# Usage: [MERGE=1] tools/bench_churn.sh [WORKDIR] [ROUNDS]     (default work/bench-updates 10)
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-work/bench-updates}"
rounds="${2:-10}"
D="${M3_SHARED_DATA:-/work/shared/data}/glove-50d"
cargo build --release --locked --quiet
m3=target/release/m3
split="python3 tools/bench_updates_split.py"
mkdir -p "$work"
[ -f "$work/q2k.fbin" ] || $split "$D/base.390K.fbin" "$D/query.10K.fbin" "$work"
[ -f "$work/churn_$((rounds - 1)).fbin" ] || $split churn "$D/base.390K.fbin" "$work" "$rounds"
[ -f "$work/gt.full.ibin" ] || "$m3" gt --base "$D/base.390K.fbin" --queries "$work/q2k.fbin" \
  --k 10 --metric ip --out "$work/gt.full.ibin" --threads 2 2>/dev/null
[ -f "$work/fresh.full/manifest.m3" ] ||
  "$m3" build --base "$D/base.390K.fbin" --metric ip --out "$work/fresh.full" --threads 2 >/dev/null 2>&1
secs() { python3 -c "import time; print(f'{time.time():.3f}')"; }
recall() {
  "$m3" search --index "$1" --queries "$work/q2k.fbin" --nprobe 64 --rerank 30 --k 10 \
    --out "$work/r.ibin" --threads 2 >/dev/null 2>&1
  "$m3" recall --results "$work/r.ibin" --gt "$work/gt.full.ibin" --k 10 --metric ip 2>&1 |
    grep -o 'recall@10 = [0-9.]*'
}
idx="$work/churn.m3"
rm -rf "$idx"; cp -r "$work/fresh.full" "$idx"
echo "round 0 (fresh build): $(recall "$idx"), $(du -sb "$idx" | cut -f1) bytes"
for r in $(seq 0 $((rounds - 1))); do
  t0=$(secs)
  "$m3" insert --index "$idx" --base "$work/churn_$r.fbin" --ids "$work/churn_$r.u64bin" \
    --threads 2 2>/dev/null
  t=$(python3 -c "print(f'{$(secs) - $t0:.2f}')")
  if [ "${MERGE:-0}" = 1 ]; then "$m3" merge --index "$idx" 2>&1 | grep 'm3 merge'; fi
  echo "round $((r + 1)): $(recall "$idx"), $(du -sb "$idx" | cut -f1) bytes, insert of 39,000 $t s (load $(cut -d' ' -f1-3 /proc/loadavg))"
done

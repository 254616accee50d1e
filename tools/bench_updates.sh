#!/usr/bin/env bash
# Live updates on GloVe-50d (issue 14): build from 50% of the base, insert the other 50% in 10
# batches, delete a random 20%, re-insert it, compact; recall@10 (2,000 queries, nprobe 64,
# rerank 30) after every step beside a fresh build of the same live set; insert throughput;
# bytes on disk; QPS and p99 of `m3 bench` idle and while `m3 insert` runs in a loop.
# Usage: tools/bench_updates.sh [WORKDIR]     (default work/bench-updates)
# Another data set: M3_BASE=… M3_QUERIES=… M3_METRIC=… (default GloVe-50d, ip); M3_RECALL_ONLY=1
# stops after step 3 (no bench, no compact); M3_NPROBE: the recall knob (default 64). MERGE=1: after steps 1–3, `m3 merge` (default
# policy) runs on the updated index and its recall and bytes are printed too; the next step
# goes on from the merged index. M3_BUILD_ARGS: more `m3 build` options for every build (e.g.
# "--spill 1 --spill-epsilon 0.1": the index updated is then a spill build, its inserts get
# spill copies, and the fresh builds it is compared with spill too).
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-work/bench-updates}"
D="${M3_SHARED_DATA:-/work/shared/data}/glove-50d"
# M3_BIN: a binary to run instead of building this checkout's (a long run keeps its binary).
[ -n "${M3_BIN:-}" ] || cargo build --release --locked --quiet
m3="${M3_BIN:-target/release/m3}"
split="python3 tools/bench_updates_split.py"
mkdir -p "$work"
knobs=(--nprobe "${M3_NPROBE:-64}" --rerank 30 --k 10)
load() { cut -d' ' -f1-3 /proc/loadavg; }
secs() { python3 -c "import time; print(f'{time.time():.3f}')"; }

base="${M3_BASE:-$D/base.390K.fbin}"
queries="${M3_QUERIES:-$D/query.10K.fbin}"
metric="${M3_METRIC:-ip}"
[ -f "$work/q2k.fbin" ] || $split "$base" "$queries" "$work"
gt() { # gt BASE OUT [IDS]: exact top-10 of the 2,000 queries, in user ids
  "$m3" gt --base "$1" --queries "$work/q2k.fbin" --k 10 --metric "$metric" --out "$2" --threads 2 2>/dev/null
  if [ $# -eq 3 ]; then $split remap "$2" "$3" "$2"; fi
}
[ -f "$work/gt.half1.ibin" ] || gt "$work/half1.fbin" "$work/gt.half1.ibin"
[ -f "$work/gt.full.ibin" ] || gt "$base" "$work/gt.full.ibin"
[ -f "$work/gt.live80.ibin" ] || gt "$work/live80.fbin" "$work/gt.live80.ibin" "$work/live80.u64bin"

recall() { # recall INDEX GT: recall@10 at the fixed knobs
  "$m3" search --index "$1" --queries "$work/q2k.fbin" "${knobs[@]}" --out "$work/r.ibin" \
    --threads 2 >/dev/null 2>&1
  "$m3" recall --results "$work/r.ibin" --gt "$2" --k 10 --metric "$metric" 2>&1 | grep -o 'recall@10 = [0-9.]*'
}
bytes() { du -sb "$1" | cut -f1; }
merged() { # merged GT FRESH: with MERGE=1, merges the updated index and reports it
  [ "${MERGE:-0}" = 1 ] || return 0
  local t0; t0=$(secs)
  "$m3" merge --index "$idx" 2>&1 | grep 'm3 merge' || true
  echo "  merged in $(python3 -c "print(f'{$(secs) - $t0:.1f}')") s: $(recall "$idx" "$1"); bytes $(bytes "$idx") vs fresh $(bytes "$2")"
}

# Fresh builds of each live set.
fresh() { # fresh NAME BASE [IDS]
  [ -f "$work/fresh.$1/manifest.m3" ] && return
  local t0; t0=$(secs)
  # shellcheck disable=SC2086 # M3_BUILD_ARGS is a list of options
  "$m3" build --base "$2" ${3:+--ids "$3"} --metric "$metric" --out "$work/fresh.$1" --threads 2 \
    ${M3_BUILD_ARGS:-} >/dev/null 2>&1
  echo "fresh build $1: $(python3 -c "print(f'{$(secs) - $t0:.1f}')") s (load $(load))"
}
fresh half1 "$work/half1.fbin"
fresh full "$base"
fresh live80 "$work/live80.fbin" "$work/live80.u64bin"

idx="$work/live.m3"
rm -rf "$idx"
cp -r "$work/fresh.half1" "$idx"
echo "step 0 (built from 50%): $(recall "$idx" "$work/gt.half1.ibin"); fresh: $(recall "$work/fresh.half1" "$work/gt.half1.ibin"); bytes $(bytes "$idx")"
t0=$(secs)
for b in 0 1 2 3 4 5 6 7 8 9; do
  tb=$(secs)
  "$m3" insert --index "$idx" --base "$work/half2_$b.fbin" --ids "$work/half2_$b.u64bin" 2>/dev/null
  echo "  insert batch $b: $(python3 -c "print(f'{$(secs) - $tb:.2f}')") s (load $(load))"
done
ins=$(python3 -c "print(f'{$(secs) - $t0:.1f}')")
n2=$(python3 -c "import struct; print(sum(struct.unpack('<I', open(f'$work/half2_{b}.fbin','rb').read(4))[0] for b in range(10)))")
echo "inserted $n2 in 10 batches: $ins s = $(python3 -c "print(round($n2 / $ins))") vectors/s (load $(load))"
echo "step 1 (+50% inserted): $(recall "$idx" "$work/gt.full.ibin"); fresh: $(recall "$work/fresh.full" "$work/gt.full.ibin"); bytes $(bytes "$idx") vs fresh $(bytes "$work/fresh.full")"
merged "$work/gt.full.ibin" "$work/fresh.full"
t0=$(secs)
"$m3" delete --index "$idx" --ids "$work/del.u64bin" 2>/dev/null
echo "deleted 20%: $(python3 -c "print(f'{$(secs) - $t0:.2f}')") s"
echo "step 2 (20% deleted): $(recall "$idx" "$work/gt.live80.ibin"); fresh: $(recall "$work/fresh.live80" "$work/gt.live80.ibin"); bytes $(bytes "$idx") vs fresh $(bytes "$work/fresh.live80")"
merged "$work/gt.live80.ibin" "$work/fresh.live80"
t0=$(secs)
"$m3" insert --index "$idx" --base "$work/reins.fbin" --ids "$work/reins.u64bin" 2>/dev/null
echo "re-inserted the 20%: $(python3 -c "print(f'{$(secs) - $t0:.2f}')") s"
echo "step 3 (re-inserted): $(recall "$idx" "$work/gt.full.ibin"); fresh: $(recall "$work/fresh.full" "$work/gt.full.ibin"); bytes $(bytes "$idx") vs fresh $(bytes "$work/fresh.full")"
merged "$work/gt.full.ibin" "$work/fresh.full"

[ "${M3_RECALL_ONLY:-0}" = 1 ] && exit 0

# QPS and p99 of m3 bench (2 threads, same knobs), idle and during a stream of inserts
# (m3 insert of 19,500 vectors in a loop into a copy; the bench reads its own generation).
bench() {
  "$m3" bench --index "$1" --queries "$work/q2k.fbin" --gt "$work/gt.full.ibin" --threads 2 \
    --nprobe 64 --rerank 30 --k 10 --json 2>/dev/null | python3 -c "
import json, sys
p = json.loads(sys.stdin.readline())
print(f\"QPS {p['qps']:.0f}, p99 {p['lat_p99_us']:.0f} us\")"
}
echo "bench idle: $(bench "$idx") (load $(load))"
cp -r "$idx" "$work/stream.m3"
( b=0; while [ ! -f "$work/stop" ]; do
    "$m3" insert --index "$work/stream.m3" --base "$work/half2_$((b % 10)).fbin" \
      --ids "$work/half2_$((b % 10)).u64bin" 2>/dev/null; b=$((b + 1)); done; echo "$b" > "$work/stream.batches" ) &
streamer=$!
echo "bench during inserts: $(bench "$idx") (load $(load))"
touch "$work/stop"; wait "$streamer"; rm -f "$work/stop"
echo "  (the insert loop committed $(cat "$work/stream.batches") batches of 19,500 meanwhile)"
rm -rf "$work/stream.m3"
echo "bench idle again: $(bench "$idx") (load $(load))"

t0=$(secs)
"$m3" compact --index "$idx" --threads 2 2>/dev/null
echo "compact: $(python3 -c "print(f'{$(secs) - $t0:.1f}')") s; after: $(recall "$idx" "$work/gt.full.ibin"); bytes $(bytes "$idx") vs fresh $(bytes "$work/fresh.full")"

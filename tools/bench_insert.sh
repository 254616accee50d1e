#!/usr/bin/env bash
# Insert throughput of `m3 insert` on GloVe-50d (issue 14): 10 commands of 19,500 vectors each
# into an index built from the first half (195K rows), with `delta_codes.m3` kept (every open
# reads the committed inserts' coding) against removed before every command (every open codes
# every committed insert again: what opening did before the file existed), at 1 and 2 threads
# (`m3 insert --threads`, which codes the new batch). Runs alternate; ROUNDS rounds.
# Usage: tools/bench_insert.sh [WORKDIR] [ROUNDS]     (default work/bench-updates 2)
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-work/bench-updates}"
rounds="${2:-2}"
D="${M3_SHARED_DATA:-/work/shared/data}/glove-50d"
cargo build --release --locked --quiet
m3=target/release/m3
mkdir -p "$work"
[ -f "$work/q2k.fbin" ] || python3 tools/bench_updates_split.py "$D/base.390K.fbin" "$D/query.10K.fbin" "$work"
[ -f "$work/fresh.half1/manifest.m3" ] ||
  "$m3" build --base "$work/half1.fbin" --metric ip --out "$work/fresh.half1" --threads 2 >/dev/null 2>&1
secs() { python3 -c "import time; print(f'{time.time():.3f}')"; }
run() { # run MODE THREADS
  local idx="$work/ins.m3" t0 tb times=""
  rm -rf "$idx"; cp -r "$work/fresh.half1" "$idx"
  t0=$(secs)
  for b in 0 1 2 3 4 5 6 7 8 9; do
    [ "$1" = recoded ] && rm -f "$idx/delta_codes.m3"
    tb=$(secs)
    "$m3" insert --index "$idx" --base "$work/half2_$b.fbin" --ids "$work/half2_$b.u64bin" \
      --threads "$2" 2>/dev/null
    times="$times $(python3 -c "print(f'{$(secs) - $tb:.2f}')")"
  done
  local total; total=$(python3 -c "print(f'{$(secs) - $t0:.1f}')")
  echo "$1 threads=$2: 195,000 in $total s = $(python3 -c "print(round(195000 / $total))") vectors/s; per command:$times (load $(cut -d' ' -f1-3 /proc/loadavg))"
}
for r in $(seq "$rounds"); do
  echo "round $r"
  run kept 1
  run recoded 1
  run kept 2
  run recoded 2
done

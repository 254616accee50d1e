#!/usr/bin/env bash
# Scale test (issue 5): generate sets of growing N (streamed), exact ground truth on 1,000
# queries, build each under a RAM budget, bench, and plot build time and RAM against N.
#
# Usage: tools/scale_test.sh [N ...]        (default: 1000000 2000000 5000000 10000000)
# Environment: M3_SCALE_KIND = xmodal (default: d = 200 f32, ip, 100K training queries; files
#   xm<N>m-*) or gauss (d = 128 u8, SIFT-like, l2, no training queries; files gs<N>m-*),
#   M3_SCALE_DIR (default work/scale), M3_BUDGET_GB (4), M3_THREADS (2),
#   M3_KEEP_DATA=1 keeps the generated base files (10M × 200 f32 is 8 GB), M3_PYTHON (a
#   python with matplotlib; default /work/peers-venv/bin/python, else python3), M3_BIN (run this
#   m3 binary instead of building the tree).
# Outputs, per N: $DIR/xm<N>m-build.json (build summary), -build.log (stderr + /usr/bin/time -v),
#   -bench.jsonl (m3 bench --json), -open.txt (open + 10 queries: wall time, peak RSS),
#   -load.txt; then $DIR/scale.png and $DIR/scale.md (gauss: scale-gs.png, scale-gs.md).
# The machine is shared: runs are niced, and /proc/loadavg is recorded beside every number.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${M3_SCALE_DIR:-work/scale}"
budget="${M3_BUDGET_GB:-4}"
threads="${M3_THREADS:-2}"
py="${M3_PYTHON:-/work/peers-venv/bin/python}"
[ -x "$py" ] || py=python3
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000000 2000000 5000000 10000000)
if [ -n "${M3_BIN:-}" ]; then
  m3="$M3_BIN"   # a binary built beforehand (e.g. copied aside, so rebuilding the tree cannot swap it mid-run)
else
  cargo build --release --locked --quiet
  m3="${CARGO_TARGET_DIR:-target}/release/m3"
fi
mkdir -p "$dir"
run() { nice -n 5 "$@"; }
kind="${M3_SCALE_KIND:-xmodal}"
case "$kind" in
  xmodal) prefix=xm; ext=fbin; metric=ip
    gen_args=(--kind xmodal --preset fashionclip --dim 200 --train-queries 100000)
    sweep=(--sweep nprobe=16,32,64,128 --sweep qprobe=8 --sweep rerank=80,160) ;;
  gauss) prefix=gs; ext=u8bin; metric=l2
    gen_args=(--kind gauss --dim 128 --dtype u8)
    sweep=(--sweep nprobe=16,32,64,128 --sweep rerank=80,160) ;;
  *) echo "M3_SCALE_KIND must be xmodal or gauss, not '$kind'" >&2; exit 2 ;;
esac
for n in "${sizes[@]}"; do
  name="$prefix$((n / 1000000))m"
  data="$dir/$name-data"
  idx="$dir/$name.m3"
  echo "== $name: $(cat /proc/loadavg)" | tee "$dir/$name-load.txt"
  if [ ! -f "$data/base.$ext" ]; then
    run "$m3" gen "${gen_args[@]}" --n "$n" --queries 1000 --threads "$threads" --out "$data"
  fi
  [ -f "$data/gt100.ibin" ] || run "$m3" gt --base "$data/base.$ext" --queries "$data/query.$ext" \
    --k 100 --metric "$metric" --threads "$threads" --out "$data/gt100.ibin"
  train=()
  [ "$kind" = xmodal ] && train=(--train-queries "$data/train_query.$ext")
  echo "build start: $(cat /proc/loadavg)" >> "$dir/$name-load.txt"
  run /usr/bin/time -v "$m3" build --base "$data/base.$ext" --metric "$metric" "${train[@]}" \
    --out "$idx" --threads "$threads" \
    --ram-budget-gb "$budget" --json > "$dir/$name-build.json" 2> "$dir/$name-build.log"
  # Opening the index (manifest, RAM parts, routers) plus 10 queries: the cost of a cold start.
  /usr/bin/time -f "%e s, %M KiB peak RSS" -o "$dir/$name-open.txt" "$m3" search --index "$idx" \
    --queries "$data/query.$ext" --max-queries 10 --k 10 > /dev/null 2>&1
  echo "bench start: $(cat /proc/loadavg)" >> "$dir/$name-load.txt"
  run "$m3" bench --index "$idx" --queries "$data/query.$ext" --gt "$data/gt100.ibin" --k 10 \
    --thread-counts 1,2 "${sweep[@]}" --sweep expand_rounds=0,1 --json > "$dir/$name-bench.jsonl" 2> "$dir/$name-bench.log"
  echo "done: $(cat /proc/loadavg)" >> "$dir/$name-load.txt"
  du -sb "$idx" >> "$dir/$name-load.txt"
  if [ "${M3_KEEP_DATA:-0}" != 1 ]; then
    rm -f "$data/base.$ext"   # keeps queries, training queries and ground truth (small)
    rm -rf "$idx"
  fi
done
"$py" tools/plot_scale.py "$dir" "$prefix"

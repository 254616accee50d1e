#!/usr/bin/env bash
# The main job on generated data: generate a cross-modal set (text-like queries over an
# image-like base, with a disjoint training-query sample), compute exact ground truth, build an
# index, search it from SSD, print recall and speed.
#
# Usage: tools/demo.sh [WORKDIR]        (default WORKDIR: ./work/demo)
# Env:   N (base rows, default 100000), DIM (default 200), THREADS (default: all cores)
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-work/demo}"
n="${N:-100000}"
dim="${DIM:-200}"
threads="${THREADS:-0}"

cargo build --release --locked --quiet
m3=target/release/m3
mkdir -p "$work"

echo "== generate: xmodal ${n} × ${dim}, 1000 queries, 10000 training queries"
"$m3" gen --kind xmodal --n "$n" --dim "$dim" --queries 1000 --train-queries 10000 \
  --seed 42 --threads "$threads" --out "$work/data"

echo "== exact ground truth (k = 100, inner product)"
"$m3" gt --base "$work/data/base.fbin" --queries "$work/data/query.fbin" --k 100 \
  --metric ip --threads "$threads" --out "$work/data/gt100.ibin"

echo "== build the index (training queries enable cross-modal routing)"
"$m3" build --base "$work/data/base.fbin" --metric ip --train-queries "$work/data/train_query.fbin" \
  --threads "$threads" --seed 42 --out "$work/index"

echo "== search: 1 thread, then all threads (recall@10, QPS, reads per query)"
"$m3" search --index "$work/index" --queries "$work/data/query.fbin" --k 10 \
  --gt "$work/data/gt100.ibin" --threads 1 --nprobe 16 --qprobe 4 --out "$work/results.ibin"
"$m3" search --index "$work/index" --queries "$work/data/query.fbin" --k 10 \
  --gt "$work/data/gt100.ibin" --threads "$threads" --nprobe 16 --qprobe 4

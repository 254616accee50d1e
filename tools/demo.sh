#!/usr/bin/env bash
# The main job on generated data: generate a cross-modal set, compute exact ground truth,
# run a search and print its recall and speed.
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

echo "== search: brute force (k = 10) — the index replaces this step"
"$m3" gt --base "$work/data/base.fbin" --queries "$work/data/query.fbin" --k 10 \
  --metric ip --threads "$threads" --out "$work/brute10.ibin"
"$m3" recall --results "$work/brute10.ibin" --gt "$work/data/gt100.ibin" --k 10 --metric ip

#!/usr/bin/env bash
# Exact k-NN and range search (DESIGN §4.5) against m3 gt's brute force on one data set:
# share of data sectors read vs a full scan, and time, on the same queries and threads.
# Usage: tools/bench_exact.sh NAME BASE QUERIES METRIC [WORKDIR]   (default work/exact)
#   e.g. tools/bench_exact.sh glove ../shared/data/glove-50d/base.390K.fbin \
#          ../shared/data/glove-50d/query.10K.fbin ip
# Env: NQ (queries, default 1000), THREADS (default 2), BUILD_ARGS (extra m3 build flags).
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1 base=$2 queries=$3 metric=$4 work="${5:-work/exact}"
nq="${NQ:-1000}" threads="${THREADS:-2}"
cargo build --release --locked --quiet
m3=target/release/m3
mkdir -p "$work"
idx="$work/$name.m3"
if [ ! -f "$idx/manifest.m3" ] || [ ! -f "$idx/keys.m3" ]; then
  # shellcheck disable=SC2086
  "$m3" build --base "$base" --metric "$metric" --out "$idx" --threads "$threads" ${BUILD_ARGS:-}
fi
q="$work/$name-q$nq.${queries##*.}"
python3 - "$queries" "$q" "$nq" <<'PY'
import struct, sys
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
esize = 4 if src.endswith(".fbin") else 1  # .u8bin / .i8bin
with open(src, "rb") as f:
    rows, dim = struct.unpack("<II", f.read(8))
    n = min(n, rows)
    body = f.read(n * dim * esize)
with open(dst, "wb") as f:
    f.write(struct.pack("<II", n, dim)); f.write(body)
PY
echo "# $name: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
t0=$(date +%s.%N)
"$m3" gt --base "$base" --queries "$q" --k 10 --metric "$metric" --threads "$threads" \
  --out "$work/$name-gt10.ibin" 2>/dev/null
t1=$(date +%s.%N)
echo "m3 gt (brute force, $threads threads): $(echo "$t1 - $t0" | bc) s for $nq queries"
"$m3" search --exact --index "$idx" --queries "$q" --k 10 --threads "$threads" \
  --gt "$work/$name-gt10.ibin" 2>&1
# Range: the median over queries of the 10th true distance (natural units), so a query gets
# about ten answers on average.
radius=$(python3 - "$work/$name-gt10.ibin" <<'PY'
import struct, sys, statistics
with open(sys.argv[1], "rb") as f:
    n, k = struct.unpack("<II", f.read(8)); f.read(4 * n * k)
    d = struct.unpack("<%df" % (n * k), f.read(4 * n * k))
print(statistics.median(d[i * k + k - 1] for i in range(n)))
PY
)
"$m3" range --index "$idx" --queries "$q" --radius "$radius" --threads "$threads" 2>&1
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"

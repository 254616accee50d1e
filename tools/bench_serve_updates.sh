#!/usr/bin/env bash
# Searches through `m3 serve` while a client streams inserts into the same server (issue 14),
# against the same server idle: `m3 loadtest` (concurrency 4, one query per request, bounded by
# --requests and --duration-secs) alternately idle and during a stream of POST /v1/upsert
# requests of 100 new GloVe vectors each, sent one after the other by a stdlib Python client.
# Loopback only. Index: a copy of the GloVe-50d 50% build of tools/bench_updates.sh.
# The writer prints vectors/s and the upserts' p99 and maximum latency (a write waiting for a
# merge shows there).
# Usage: [SERVE_ARGS="--writer-nice 0 …"] [M3_BIN=path] tools/bench_serve_updates.sh [WORKDIR] [ROUNDS]
#        (default work/bench-updates 2; SERVE_ARGS: more `m3 serve` options; M3_BIN: another
#        m3 binary, e.g. an older build to compare)
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-work/bench-updates}"
rounds="${2:-2}"
if [ -n "${M3_BIN:-}" ]; then m3="$M3_BIN"; else
  cargo build --release --locked --quiet
  m3=target/release/m3
fi
[ -f "$work/fresh.half1/manifest.m3" ] || { echo "run tools/bench_insert.sh first"; exit 1; }
[ -f "$work/gt.half1.ibin" ] || "$m3" gt --base "$work/half1.fbin" --queries "$work/q2k.fbin" \
  --k 10 --metric ip --out "$work/gt.half1.ibin" --threads 2 2>/dev/null
idx="$work/serve.m3"
rm -rf "$idx"; cp -r "$work/fresh.half1" "$idx"
key="$work/serve.key"; echo "bench-key-0123456789" > "$key"
err="$work/serve.err"
"$m3" serve --index "$idx" --addr 127.0.0.1:0 --threads 2 --api-key-file "$key" ${SERVE_ARGS:-} 2> "$err" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true; touch "$work/stop"' EXIT
for _ in $(seq 300); do grep -q listening "$err" && break; sleep 0.1; done
url="$(grep -o 'http://[0-9.:]*' "$err")"
load() {
  "$m3" loadtest --url "$url" --queries "$work/q2k.fbin" --gt "$work/gt.half1.ibin" --k 10 \
    --nprobe 64 --rerank 30 --batch 1 --concurrency 4 --requests 30000 --duration-secs 15 \
    --api-key-file "$key" --json 2>/dev/null | python3 -c "
import json, sys
p = json.loads(sys.stdin.readline())
print(f\"QPS {p['queries_per_s']:.0f}, p50 {p['lat_p50_us']:.0f} us, p99 {p['lat_p99_us']:.0f} us, recall {p['recall_at_k']:.4f}, load before {p['load1_before']}\")"
}
writer() { # streams upserts of 100 new vectors until $work/stop exists; prints vectors/s
  python3 - "$url" "$key" "$work/half2_0.fbin" "$work/stop" "$1" <<'PY'
import http.client, json, os, struct, sys, time
url, keyf, fbin, stop, first = sys.argv[1:6]
host, port = url.split("//")[1].split(":")
key = open(keyf).read().strip()
with open(fbin, "rb") as f:
    n, d = struct.unpack("<II", f.read(8))
    data = struct.unpack(f"<{n * d}f", f.read(n * d * 4))
conn = http.client.HTTPConnection(host, int(port))
sent, t0, row, nid, lat = 0, time.time(), 0, int(first), []
while not os.path.exists(stop):
    rows = [list(data[(row + i) % n * d:((row + i) % n + 1) * d]) for i in range(100)]
    body = json.dumps({"ids": list(range(nid, nid + 100)), "vectors": rows})
    t = time.time()
    conn.request("POST", "/v1/upsert", body, {"Authorization": f"Bearer {key}",
                                               "content-type": "application/json"})
    r = conn.getresponse(); r.read()
    lat.append(time.time() - t)
    if r.status != 200:
        sys.exit(f"upsert answered {r.status} after {lat[-1]:.1f} s")
    sent += 100; row += 100; nid += 100
lat.sort()
p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else 0
print(f"{sent} vectors upserted in {time.time() - t0:.1f} s = {sent / (time.time() - t0):.0f} vectors/s; "
      f"upsert latency p99 {p99 * 1000:.0f} ms, max {lat[-1] * 1000 if lat else 0:.0f} ms")
PY
}
for r in $(seq "$rounds"); do
  echo "round $r idle:      $(load)"
  rm -f "$work/stop"
  writer $((10000000 + r * 1000000)) > "$work/writer.out" &
  wpid=$!
  sleep 1
  echo "round $r inserting: $(load)"
  touch "$work/stop"; wait "$wpid"
  echo "  writer: $(cat "$work/writer.out")"
done
curl -s -H "Authorization: Bearer $(cat "$key")" "$url/v1/index" | python3 -c "
import json, sys; print('server live state after:', json.load(sys.stdin)['live'])"
curl -s -H "Authorization: Bearer $(cat "$key")" "$url/metrics" | grep -E '^m3_(merges|commits|merge_carried_ops|merge_failures)_total'

kill -TERM "$pid"; wait "$pid" || true
trap - EXIT

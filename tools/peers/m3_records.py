#!/usr/bin/env python3
"""M³'s build summary and `m3 bench --json` points as records of run_peers.py's schema.

    python m3_records.py --dataset NAME --build BUILD.json --points POINTS.jsonl \
        [--load1-before X] [--load1-after Y] > m3.jsonl

The build record: system "m3", record "build", build_s (total_seconds), peak_rss_mb,
index_bytes (the index's SSD bytes), ram_bytes_per_vector, n, dim, params (clusters, PQ bytes,
query anchors, spill) and the per-stage seconds. Search points are passed through with
dataset, nq (= queries) and the 1-minute load average before / after the sweep added
(`m3 bench` measures points back to back; the load is not sampled per point).
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True)
    p.add_argument("--build", required=True, help="`m3 build --json` output")
    p.add_argument("--points", required=True, help="`m3 bench --json` output")
    p.add_argument("--load1-before", type=float)
    p.add_argument("--load1-after", type=float)
    a = p.parse_args(argv)
    with open(a.build) as f:
        b = json.loads(f.read().strip().splitlines()[-1])
    rec = {
        "system": "m3", "record": "build", "dataset": a.dataset, "n": b["n_vectors"],
        "dim": b["dim"], "metric": b["metric"], "build_threads": b.get("threads"),
        "params": {"clusters": b["clusters"], "query_anchors": b["query_anchors"],
                   "pq_bytes": b["pq_subspaces"], "spill_factor": b["spill_factor"],
                   "seed": b.get("seed")},
        "build_s": round(b["total_seconds"], 2),
        "peak_rss_mb": round(b["peak_rss_bytes"] / 2 ** 20, 1),
        "index_bytes": b["ssd_bytes"],
        "ram_bytes_per_vector": round(b["ram_bytes_per_vector"], 2),
        "ram_note": "anchors, query anchors, PQ codebooks and codes",
        "stages_s": {s["stage"]: round(s["seconds"], 2) for s in b.get("stages", [])},
    }
    print(json.dumps(rec))
    with open(a.points) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            r["dataset"] = a.dataset
            r.setdefault("nq", r.get("queries"))
            r["load1_before"] = a.load1_before
            r["load1_after"] = a.load1_after
            print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())

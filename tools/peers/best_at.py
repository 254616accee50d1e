#!/usr/bin/env python3
"""Best QPS at recall targets, as a markdown table, from benchmark JSON lines.

    python best_at.py results.jsonl [more.jsonl ...] [--targets 0.90,0.95,0.99]
                      [--dataset NAME] [--builds] [--all-points]

Reads search-point records in the schema of `m3 bench --json` / run_peers.py (system, params,
recall_at_k, k, qps, threads, mean_ios, ...) from any systems, M³'s included; build records
("record": "build") are skipped, or listed in a second table with --builds. For every
(system, threads) it prints the highest QPS among points with recall_at_k >= each target,
with that point's knobs and mean_ios; "–" when no point reaches the target.

When the same (dataset, system, threads, params) was measured more than once (a re-run
appended to the same file), only the last record counts, unless --all-points.
Lines that are not JSON objects are ignored. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", help="JSONL files ('-' for stdin)")
    p.add_argument("--targets", default="0.90,0.95,0.99", help="comma list of recall targets")
    p.add_argument("--dataset", help="only records whose 'dataset' field equals this")
    p.add_argument("--builds", action="store_true", help="also print the build records")
    p.add_argument("--all-points", action="store_true", help="keep repeated measurements of a point")
    return p.parse_args(argv)


def read_records(files):
    for path in files:
        f = sys.stdin if path == "-" else open(path)
        with f:
            for line in f:
                line = line.strip()
                if not line.startswith("{"):
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(rec, dict):
                    yield rec


def fmt_params(params):
    if not isinstance(params, dict):
        return str(params)
    return ", ".join(f"{k}={v}" for k, v in params.items())


def fmt_qps(q):
    return f"{q:,.0f}" if q >= 100 else f"{q:,.1f}"


def fmt_num(x, nd=1):
    if x is None:
        return "–"
    if isinstance(x, (int, float)):
        return f"{x:,.{nd}f}"
    return str(x)


def main(argv=None):
    args = parse_args(argv)
    targets = [float(t) for t in args.targets.split(",") if t.strip()]
    points, builds = {}, []
    order = 0
    for rec in read_records(args.files):
        if args.dataset and rec.get("dataset") not in (None, args.dataset):
            continue
        if rec.get("record") == "build":
            builds.append(rec)
            continue
        if rec.get("recall_at_k") is None or rec.get("qps") is None or "system" not in rec:
            continue
        key = (rec.get("dataset"), rec["system"], rec.get("threads"),
               json.dumps(rec.get("params"), sort_keys=True))
        if args.all_points:
            key = key + (order,)
        order += 1
        points[key] = rec  # later records replace earlier ones

    groups = {}
    for rec in points.values():
        groups.setdefault((rec["system"], rec.get("threads")), []).append(rec)

    ks = sorted({r.get("k") for r in points.values()} - {None})
    kname = f"@{ks[0]}" if len(ks) == 1 else ""
    head = ["system", "threads"] + [f"best QPS at recall{kname} ≥ {t:.2f}" for t in targets]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for (system, threads) in sorted(groups, key=lambda g: (str(g[0]), g[1] if g[1] is not None else 0)):
        recs = groups[(system, threads)]
        cells = [system, str(threads)]
        for t in targets:
            ok = [r for r in recs if r["recall_at_k"] >= t]
            if not ok:
                top = max(r["recall_at_k"] for r in recs)
                cells.append(f"– (max recall {top:.3f})")
                continue
            b = max(ok, key=lambda r: r["qps"])
            extra = f"recall {b['recall_at_k']:.3f}"
            if b.get("mean_ios") is not None:
                extra += f", ios {b['mean_ios']:.1f}"
            if b.get("lat_p50_us") is not None:
                extra += f", p50 {b['lat_p50_us']:.0f} µs"
            cells.append(f"{fmt_qps(b['qps'])} ({fmt_params(b.get('params'))}; {extra})")
        print("| " + " | ".join(cells) + " |")

    if args.builds and builds:
        last = {}
        for b in builds:
            last[(b.get("dataset"), b.get("system"))] = b
        print()
        head = ["system", "build s", "peak RSS MiB", "index MiB", "RAM B/vector", "params"]
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for (_, system), b in sorted(last.items(), key=lambda kv: str(kv[0][1])):
            ib = b.get("index_bytes")
            print("| " + " | ".join([
                str(system), fmt_num(b.get("build_s")), fmt_num(b.get("peak_rss_mb")),
                fmt_num(ib / 2 ** 20 if isinstance(ib, (int, float)) else None),
                fmt_num(b.get("ram_bytes_per_vector")), fmt_params(b.get("params")),
            ]) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Recall/QPS plot and markdown tables for one data set, written into docs/BENCHMARKS.md.

    python report.py --dataset NAME --title TEXT --results docs/results/NAME.jsonl \
        --expect m3,diskann-ssd,... --png docs/img/bench-NAME.png --doc docs/BENCHMARKS.md \
        [--quality-only 0|1] [--command "tools/bench.sh NAME"] [--targets 0.90,0.95,0.99]

Input: records of run_peers.py's schema (M³'s through m3_records.py): search points and build
records. Output:
  - the PNG: log QPS against recall@k, one line per (system, threads), each line the system's
    Pareto frontier (no other point of that line is both faster and more accurate);
  - a markdown section replacing the text between `<!-- bench:begin NAME -->` and
    `<!-- bench:end NAME -->` in --doc (appended at the end, markers included, when absent):
    best QPS at each recall target per system and thread count, the highest recall reached,
    mean 4 KiB reads and bytes per query for disk indexes at the 0.95 point, the build table
    (build time, peak RSS, index size, RAM per vector) and the load averages seen;
    systems in --expect without results are listed as not measured.
With --quality-only 1 the tables give recall and the knobs reaching each target, no QPS (for
data sets too small for speed to mean anything). When the same (system, threads, params) occurs
more than once, the last record counts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

DISK_SYSTEMS = {"m3", "diskann-ssd"}
NAMES = {
    "m3": "M³ (SSD)",
    "diskann-ssd": "DiskANN SSD",
    "diskann-mem": "DiskANN in-memory",
    "hnswlib": "hnswlib (RAM)",
    "faiss-ivf-flat": "faiss IVF-Flat (RAM)",
    "faiss-ivfpq-refine": "faiss IVF-PQ + refine (RAM)",
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True)
    p.add_argument("--title", required=True)
    p.add_argument("--results", required=True)
    p.add_argument("--expect", default="", help="comma list of systems that should have results")
    p.add_argument("--png", required=True)
    p.add_argument("--doc", required=True)
    p.add_argument("--quality-only", type=int, default=0)
    p.add_argument("--command", default="")
    p.add_argument("--targets", default="0.90,0.95,0.99")
    return p.parse_args(argv)


def read(path):
    points, builds = {}, {}
    if not os.path.exists(path):
        return points, builds
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            if r.get("record") == "build":
                builds[r["system"]] = r
            elif r.get("recall_at_k") is not None and r.get("qps") is not None:
                key = (r["system"], r.get("threads"), json.dumps(r.get("params"), sort_keys=True))
                points[key] = r
    return points, builds


def group(points):
    g = {}
    for r in points.values():
        g.setdefault((r["system"], r["threads"]), []).append(r)
    return g


def order(system):
    keys = list(NAMES)
    return keys.index(system) if system in keys else len(keys)


def varying_knobs(recs):
    """Knob names whose value differs between a system's points (the swept ones)."""
    vals = {}
    for r in recs:
        for k, v in (r.get("params") or {}).items():
            vals.setdefault(k, set()).add(json.dumps(v))
    return [k for k, v in vals.items() if len(v) > 1]


def knobs_text(r, names):
    p = r.get("params") or {}
    return ", ".join(f"{k.replace('_', ' ')} {p[k]}" for k in names if k in p)


def qps_text(q):
    return f"{q:,.0f}" if q >= 100 else f"{q:,.1f}"


def pareto(recs):
    """Points not dominated in (recall up, QPS up), sorted by recall."""
    pts = sorted(recs, key=lambda r: (-r["recall_at_k"], -r["qps"]))
    out, best_q = [], -1.0
    for r in pts:
        if r["qps"] > best_q:
            out.append(r)
            best_q = r["qps"]
    return sorted(out, key=lambda r: r["recall_at_k"])


def plot(groups, args, k):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    colors = {}
    cmap = plt.get_cmap("tab10")
    for (system, threads) in sorted(groups, key=lambda g: (order(g[0]), g[1])):
        if args.quality_only and threads != 1:
            continue
        c = colors.setdefault(system, cmap(len(colors) % 10))
        fr = pareto(groups[(system, threads)])
        ax.plot([r["recall_at_k"] for r in fr], [r["qps"] for r in fr], marker="o", markersize=3,
                color=c, linestyle="-" if threads == 1 else "--",
                label=f"{NAMES.get(system, system)}, {threads} thread{'s' if threads > 1 else ''}")
    ax.set_yscale("log")
    ax.set_xlabel(f"recall@{k}")
    ax.set_ylabel("queries per second (log)")
    lo = min((r["recall_at_k"] for v in groups.values() for r in v), default=0.5)
    ax.set_xlim(max(lo, 0.7) - 0.01, 1.002)
    title = args.title if not args.quality_only else args.title + "\n(QPS on 1,126 vectors says little)"
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.png)), exist_ok=True)
    fig.savefig(args.png, dpi=110)
    plt.close(fig)


def load_range(recs):
    vals = []
    for r in recs:
        for f in ("load1", "load1_before", "load1_after"):
            if isinstance(r.get(f), (int, float)):
                vals.append(r[f])
    if not vals:
        return "–"
    lo, hi = min(vals), max(vals)
    return f"{lo:.1f}" if abs(hi - lo) < 0.05 else f"{lo:.1f}–{hi:.1f}"


def search_table(groups, targets, quality_only):
    lines = []
    if quality_only:
        head = ["system"] + [f"fastest point reaching ≥ {t:.2f}" for t in targets] + ["max recall", "reads/query at max"]
    else:
        head = (["system", "threads"] + [f"QPS @ ≥ {t:.2f}" for t in targets]
                + ["max recall (knobs: QPS, reads)", "reads/query @ 0.95", "KiB read/query @ 0.95",
                   "load avg"])
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for (system, threads) in sorted(groups, key=lambda g: (order(g[0]), g[1])):
        recs = groups[(system, threads)]
        if quality_only and threads != 1:
            continue
        names = varying_knobs(recs)
        cells = [NAMES.get(system, system)] + ([] if quality_only else [str(threads)])
        p95 = None
        for t in targets:
            ok = [r for r in recs if r["recall_at_k"] >= t]
            if not ok:
                cells.append("–")
                continue
            if quality_only:
                b = max(ok, key=lambda r: r["qps"])
                cells.append(f"{knobs_text(b, names)}: {b['recall_at_k']:.3f}")
            else:
                b = max(ok, key=lambda r: r["qps"])
                cells.append(f"{qps_text(b['qps'])} ({knobs_text(b, names)}: {b['recall_at_k']:.3f})")
            if abs(t - 0.95) < 1e-9:
                p95 = b
        top = max(recs, key=lambda r: (r["recall_at_k"], r["qps"]))
        if quality_only:
            cells.append(f"{top['recall_at_k']:.3f}")
        else:
            ios = f", {top['mean_ios']:.0f} reads" if top.get("mean_ios") is not None else ""
            cells.append(f"{top['recall_at_k']:.3f} ({knobs_text(top, names)}: "
                         f"{qps_text(top['qps'])} QPS{ios})")
        if quality_only:
            cells.append(f"{top['mean_ios']:.1f}" if top.get("mean_ios") is not None else "–")
        else:
            if system in DISK_SYSTEMS and p95 is not None and p95.get("mean_ios") is not None:
                cells.append(f"{p95['mean_ios']:.1f}")
                cells.append(f"{p95['mean_read_bytes'] / 1024:.0f}")
            else:
                cells += ["–", "–"]
            cells.append(load_range(recs))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def build_table(builds):
    head = ["system", "build s", "build threads", "peak RSS MiB", "index MiB", "RAM B/vector",
            "load avg at build", "parameters"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for system in sorted(builds, key=order):
        b = builds[system]
        params = b.get("params") or {}
        ptxt = ", ".join(f"{k} {v}" for k, v in params.items()
                         if k not in ("search_memory_maximum", "build_memory_maximum", "pq_disk_bytes"))
        load = b.get("load1")
        lines.append("| " + " | ".join([
            NAMES.get(system, system), f"{b['build_s']:,.1f}", str(b.get("build_threads", "–")),
            f"{b['peak_rss_mb']:,.0f}", f"{b['index_bytes'] / 2 ** 20:,.1f}",
            f"{b['ram_bytes_per_vector']:,.1f}", f"{load:.1f}" if isinstance(load, (int, float)) else "–",
            ptxt]) + " |")
    return lines


def section(args, points, builds):
    targets = [float(t) for t in args.targets.split(",")]
    groups = group(points)
    ks = sorted({r.get("k") for r in points.values()} - {None})
    k = ks[0] if ks else 10
    nqs = sorted({r.get("nq") for r in points.values()} - {None})
    present = {s for s, _ in groups}
    expected = [s for s in args.expect.split(",") if s]
    missing = [s for s in expected if s not in present]
    out = [f"### {args.title}", ""]
    out.append(f"Generated by `{args.command}` from `{args.results}` "
               f"({len(points)} points; queries per point: {', '.join(map(str, nqs)) or '–'}); "
               f"plot: `{args.png}`. recall@{k} with ties at the k-th true distance credited.")
    if not args.quality_only:
        out.append("M³ and DiskANN SSD read with O_DIRECT (the page cache serves none of their "
                   "reads; reads/query are 4 KiB requests, M³ coalesces neighbouring sectors so its "
                   "bytes per request are larger); the other systems are in memory. QPS were "
                   "measured on a 2-core machine shared with other jobs: \"load avg\" is the 1-minute "
                   "load average over that system's sweep, and QPS under load is a lower bound.")
    out.append("")
    if missing:
        out.append("**Not measured** (no results in this run): "
                   + ", ".join(NAMES.get(s, s) for s in missing) + ".")
        out.append("")
    out.append(f"![recall/QPS, {args.dataset}]({os.path.relpath(args.png, os.path.dirname(args.doc))})")
    out.append("")
    if groups:
        out += search_table(groups, targets, args.quality_only)
        out.append("")
    if builds:
        out += build_table(builds)
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def write_doc(doc, dataset, text):
    begin, end = f"<!-- bench:begin {dataset} -->", f"<!-- bench:end {dataset} -->"
    body = open(doc).read() if os.path.exists(doc) else ""
    block = f"{begin}\n{text}{end}"
    pat = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pat.search(body):
        body = pat.sub(lambda _: block, body, count=1)
    else:
        body = body.rstrip("\n") + "\n\n" + block + "\n"
    tmp = doc + ".tmp"
    with open(tmp, "w") as f:
        f.write(body)
    os.replace(tmp, doc)


def main(argv=None):
    args = parse_args(argv)
    points, builds = read(args.results)
    groups = group(points)
    ks = sorted({r.get("k") for r in points.values()} - {None})
    if groups:
        plot(groups, args, ks[0] if ks else 10)
    write_doc(args.doc, args.dataset, section(args, points, builds))
    return 0


if __name__ == "__main__":
    sys.exit(main())

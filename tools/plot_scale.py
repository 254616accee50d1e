#!/usr/bin/env python3
"""Plots build time and peak RSS against N from the scale test's build summaries.

Usage: plot_scale.py DIR [PREFIX]   (PREFIX xm, the default, or gs: reads DIR/PREFIX*m-build.json,
writes DIR/scale.png and DIR/scale.md for xm, DIR/scale-gs.png and DIR/scale-gs.md for gs)

Per build: total seconds, seconds per stage, peak RSS, SSD bytes, RAM bytes per vector. The
markdown table adds per-vector costs (µs and bytes per vector), which stay flat when cost grows
linearly with N.
"""
import glob
import json
import os
import sys


def load(d, prefix):
    rows = []
    for path in glob.glob(os.path.join(d, f"{prefix}*m-build.json")):
        with open(path) as f:
            text = f.read().strip()
        if not text:
            continue  # a build still running or failed
        s = json.loads(text.splitlines()[-1])
        rows.append(s)
    rows.sort(key=lambda s: s["n_vectors"])
    return rows


def table(rows):
    stages = [st["stage"] for st in rows[0]["stages"]] if rows else []
    head = ["N", "K", "total s", "µs/vector"] + [f"{s} s" for s in stages] + [
        "peak RSS MiB", "RSS B/vector", "SSD B/vector", "RAM B/vector (query)"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in rows:
        n = s["n_vectors"]
        per = {st["stage"]: st["seconds"] for st in s["stages"]}
        out.append("| " + " | ".join(
            [f"{n:,}", f"{s['clusters']:,}", f"{s['total_seconds']:.0f}",
             f"{1e6 * s['total_seconds'] / n:.1f}"]
            + [f"{per.get(st, 0):.0f}" for st in stages]
            + [f"{s['peak_rss_bytes'] / 2**20:.0f}", f"{s['peak_rss_bytes'] / n:.0f}",
               f"{s['ssd_bytes'] / n:.0f}", f"{s['ram_bytes_per_vector']:.1f}"]) + " |")
    return "\n".join(out)


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [s["n_vectors"] / 1e6 for s in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    stages = [st["stage"] for st in rows[0]["stages"]]
    bottom = [0.0] * len(rows)
    for st in stages:
        v = [next((x["seconds"] for x in s["stages"] if x["stage"] == st), 0) for s in rows]
        a.bar(ns, v, bottom=bottom, width=0.35, label=st)
        bottom = [p + q for p, q in zip(bottom, v)]
    if len(rows) >= 1:
        slope = rows[-1]["total_seconds"] / ns[-1]
        a.plot([0] + ns, [0] + [slope * n for n in ns], "k--", lw=1,
               label="linear through the largest N")
    a.set_xlabel(f"N (millions of {rows[0]['dim']}-d vectors)")
    a.set_ylabel("build wall time (s), 2 shared cores")
    a.legend(fontsize=7)
    a.set_title("m3 build time by stage")
    b.plot(ns, [s["peak_rss_bytes"] / 2**30 for s in rows], "o-", label="peak RSS (build)")
    b.plot(ns, [s["ram_bytes_per_vector"] * s["n_vectors"] / 2**30 for s in rows], "s-",
           label="RAM at query time")
    b.set_xlabel("N (millions)")
    b.set_ylabel("GiB")
    b.legend(fontsize=8)
    b.set_title("memory")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else "work/scale"
    prefix = sys.argv[2] if len(sys.argv) > 2 else "xm"
    rows = load(d, prefix)
    if not rows:
        sys.exit(f"no {prefix}*m build summaries in {d}")
    md = table(rows)
    suffix = "" if prefix == "xm" else f"-{prefix}"
    with open(os.path.join(d, f"scale{suffix}.md"), "w") as f:
        f.write(md + "\n")
    print(md)
    plot(rows, os.path.join(d, f"scale{suffix}.png"))


if __name__ == "__main__":
    main()

"""m3.build from arrays and files: the same index either way, progress reports, summaries."""

import filecmp
import os

import numpy as np

import m3
from conftest import BUILD, make_data, run_cli, write_bin


def test_array_and_file_and_cli_builds_are_identical(tmp_path, m3_cli):
    base, _ = make_data("uint8", seed=4)
    f = write_bin(tmp_path / "base.u8bin", base)
    s1 = m3.build(base, tmp_path / "a", "l2", **BUILD)
    s2 = m3.build(f, tmp_path / "b", "l2", **BUILD)
    run_cli(m3_cli, "build", "--base", f, "--metric", "l2", "--out", tmp_path / "c",
            "--cluster-size", 200, "--threads", 2)
    assert s1["n_vectors"] == s2["n_vectors"] == base.shape[0]
    assert s1["dim"] == base.shape[1] and s1["metric"] == "l2"
    # every index file but the manifest, which lists build_report.json's checksum (the report
    # holds stage timings, which differ from run to run)
    files = sorted(p for p in os.listdir(tmp_path / "a") if p.endswith(".m3"))
    files.remove("manifest.m3")
    assert "data.m3" in files and "pq.m3" in files
    for d in ("b", "c"):
        same, diff, errors = filecmp.cmpfiles(tmp_path / "a", tmp_path / d, files, shallow=False)
        assert diff == [] and errors == [], (d, diff, errors)
    # the temporary input beside the output is gone
    assert sorted(os.listdir(tmp_path)) == ["a", "b", "base.u8bin", "c"]


def test_progress_callback(tmp_path):
    base, _ = make_data("float32", seed=6)
    seen = []
    m3.build(base, tmp_path / "idx", "ip", progress=lambda s, d, t: seen.append((s, d, t)), **BUILD)
    stages = [s for s, _, _ in seen]
    assert stages[0] == "scan" and "publish" in stages, stages
    assert all(d <= t or t == 0 for _, d, t in seen)


def test_progress_bar_on_stderr(tmp_path, capfd):
    base, _ = make_data("float32", seed=6)
    m3.build(base, tmp_path / "idx", "l2", progress=True, **BUILD)
    err = capfd.readouterr().err
    assert "m3 build" in err and "publish" in err


def test_train_queries_from_an_array(tmp_path):
    base, queries = make_data("float32", seed=8)
    s = m3.build(base, tmp_path / "idx", "cosine", train_queries=queries.astype(np.float64),
                 **BUILD)
    assert s["query_anchors"] > 0
    ids, _ = m3.Index(tmp_path / "idx").search(queries, 10, qprobe=4)
    assert m3.recall(ids, m3.gt(base, queries, 10, "cosine"), 10) >= 0.9

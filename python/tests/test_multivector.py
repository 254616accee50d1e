"""Multi-vector indexes: blocks by name, weights, as `m3 search --query-block --weight`."""

import numpy as np
import pytest

import m3
from conftest import read_results, run_cli, write_bin


def test_block_queries_equal_cli(tmp_path, m3_cli):
    rng = np.random.default_rng(2)
    dims = {"a": 8, "b": 6, "c": 4}
    scale = {"a": 1.0, "b": 10.0, "c": 100.0}
    base = {n: (rng.standard_normal((2000, d)) * scale[n]).astype(np.float32) for n, d in dims.items()}
    qs = {n: (rng.standard_normal((30, d)) * scale[n]).astype(np.float32) for n, d in dims.items()}
    m3.build(base, tmp_path / "idx", "l2", cluster_size=200, threads=2)
    index = m3.Index(tmp_path / "idx")
    assert index.blocks == ["a", "b", "c"] and index.dim == 18
    given = {"a": qs["a"], "c": qs["c"]}
    ids, dists = index.search(given, 10, weights={"a": 2.0}, nprobe=16)
    for n in ("a", "c"):
        write_bin(tmp_path / f"q{n}.fbin", qs[n])
    out = tmp_path / "res.ibin"
    run_cli(m3_cli, "search", "--index", tmp_path / "idx",
            "--query-block", f"a={tmp_path / 'qa.fbin'}", "--query-block", f"c={tmp_path / 'qc.fbin'}",
            "--weight", "a=2", "--k", 10, "--nprobe", 16, "--threads", 2, "--out", out)
    cli_ids, cli_dists = read_results(out)
    np.testing.assert_array_equal(ids, cli_ids)
    np.testing.assert_array_equal(dists, cli_dists)
    # exact: equal to the CLI's exact answers too
    ex_ids, _ = index.search(given, 10, weights={"a": 2.0}, exact=True)
    run_cli(m3_cli, "search", "--exact", "--index", tmp_path / "idx",
            "--query-block", f"a={tmp_path / 'qa.fbin'}", "--query-block", f"c={tmp_path / 'qc.fbin'}",
            "--weight", "a=2", "--k", 10, "--out", out)
    np.testing.assert_array_equal(ex_ids, read_results(out)[0])
    with pytest.raises(m3.InvalidInput, match="queries\\['b'\\]: has dimension 3, block 'b' has 6"):
        index.search({"b": qs["b"][:, :3]}, 10)
    with pytest.raises(m3.InvalidInput, match="unknown|block"):
        index.search({"z": qs["a"]}, 10)
    with pytest.raises(m3.InvalidInput, match="weights"):
        index.search({"a": qs["a"]}, 10, weights={"c": 1.0})

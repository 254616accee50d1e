"""The benchmark-harness adapter (ann-benchmarks / big-ann-benchmarks BaseANN)."""

import numpy as np
import pytest

import m3
from conftest import make_data


def test_ann_benchmarks_protocol(tmp_path):
    base, queries = make_data("float32", seed=9)
    algo = m3.M3ANN("euclidean", {"cluster_size": 200, "threads": 2,
                                   "index_dir": str(tmp_path / "idx")})
    algo.fit(base)
    truth, _ = m3.gt(base, queries, 10, "l2")
    algo.set_query_arguments(16, 80)
    one = algo.query(queries[0], 10)
    assert isinstance(one, list) and len(one) == 10
    algo.batch_query(queries, 10)
    rows = algo.get_batch_results()
    assert len(rows) == queries.shape[0] and rows[0].tolist() == one
    assert m3.recall(np.vstack(rows), truth, 10) >= 0.9
    assert algo.get_memory_usage() > 0
    assert "nprobe" in str(algo)
    with pytest.raises(m3.InvalidInput, match="unknown knobs"):
        algo.set_query_arguments({"nprob": 3})
    algo.done()
    assert (tmp_path / "idx").exists(), "an index_dir given by the caller is kept"


def test_big_ann_benchmarks_protocol():
    base, queries = make_data("float32", seed=11)
    algo = m3.M3ANN("ip", {"cluster_size": 200, "threads": 2})
    assert not algo.load_index()
    algo.fit(base)
    assert algo.load_index()
    algo.set_query_arguments({"nprobe": 32, "rerank": 100})
    algo.query(queries, 10)
    res = algo.get_results()
    assert res.shape == (queries.shape[0], 10)
    truth, td = m3.gt(base, queries, 10, "ip")
    assert m3.recall(res, truth, 10) >= 0.9
    radius = float(np.median(td[:, 4]))
    algo.range_query(queries, radius)
    lims, dists, ids = algo.get_range_results()
    assert lims.shape == (queries.shape[0] + 1,) and ids.size == dists.size == lims[-1]
    assert (dists >= radius).all()
    d = algo.index_dir
    algo.done()
    import os
    assert not os.path.exists(d)

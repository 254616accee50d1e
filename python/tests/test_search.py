"""Index.search against `m3 search` (the CLI) on the same index and queries, for every metric
and dtype; and the shape, dtype and copy behaviour of the results."""

import numpy as np
import pytest

import m3
from conftest import DTYPES, METRICS, read_results, run_cli


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("metric", METRICS)
def test_search_equals_cli(built, m3_cli, tmp_path, dtype, metric):
    path, base, queries, _, qfile = built(dtype, metric)
    index = m3.Index(path)
    assert (len(index), index.dim, index.metric) == (base.shape[0], base.shape[1], metric)
    k = 10
    knobs = dict(nprobe=8, rerank=40)
    ids, dists = index.search(queries, k, **knobs)
    assert ids.shape == (queries.shape[0], k) and dists.shape == ids.shape
    assert ids.dtype == np.int64 and dists.dtype == np.float32
    out = tmp_path / "res.ibin"
    run_cli(m3_cli, "search", "--index", path, "--queries", qfile, "--k", k,
            "--nprobe", 8, "--rerank", 40, "--threads", 2, "--out", out)
    cli_ids, cli_dists = read_results(out)
    np.testing.assert_array_equal(ids, cli_ids)
    np.testing.assert_array_equal(dists, cli_dists)
    # one query at a time (on the calling thread) gives the same rows
    for i in range(0, queries.shape[0], 7):
        one_ids, one_dists = index.search(queries[i], k, **knobs)
        np.testing.assert_array_equal(one_ids[0], ids[i])
        np.testing.assert_array_equal(one_dists[0], dists[i])


@pytest.mark.parametrize("metric", METRICS)
def test_exact_search_equals_cli(built, m3_cli, tmp_path, metric):
    path, _, queries, _, qfile = built("float32", metric)
    ids, dists = m3.Index(path).search(queries, 10, exact=True)
    out = tmp_path / "res.ibin"
    run_cli(m3_cli, "search", "--exact", "--index", path, "--queries", qfile, "--k", 10,
            "--out", out)
    cli_ids, cli_dists = read_results(out)
    np.testing.assert_array_equal(ids, cli_ids)
    np.testing.assert_array_equal(dists, cli_dists)


def test_recall_is_high_at_default_knobs(built):
    path, base, queries, _, _ = built("float32", "l2")
    ids, _ = m3.Index(path).search(queries, 10)
    truth = m3.gt(base, queries, 10, "l2")
    assert m3.recall(ids, truth, 10) >= 0.9


def test_queries_taken_without_copy_when_possible(built):
    path, _, queries, _, _ = built("float32", "l2")
    index = m3.Index(path)
    assert index._borrows(queries)
    assert not index._borrows(np.asfortranarray(queries))
    assert not index._borrows(queries.astype(np.float64))
    # a strided or float64 view gives the same answers as the contiguous float32 array
    a = index.search(queries, 5)
    b = index.search(np.asfortranarray(queries), 5)
    c = index.search(queries.astype(np.float64), 5)
    for x in (b, c):
        np.testing.assert_array_equal(a[0], x[0])
        np.testing.assert_array_equal(a[1], x[1])


def test_user_ids_are_returned(tmp_path):
    from conftest import BUILD, make_data

    base, queries = make_data("float32")
    user = np.arange(base.shape[0], dtype=np.int64) * 7 + 1_000_000_000_000
    m3.build(base, tmp_path / "idx", "l2", ids=user, **BUILD)
    index = m3.Index(tmp_path / "idx")
    ids, _ = index.search(queries, 10, exact=True)
    rows, _ = m3.gt(base, queries, 10, "l2")
    np.testing.assert_array_equal(ids, user[rows])


def test_fewer_than_k_results_are_padded(built):
    path, _, queries, _, _ = built("float32", "l2")
    index = m3.Index(path)
    # one cluster probed, no query anchors, no hints: a small candidate pool, then k = len
    k = len(index)
    ids, dists = index.search(queries[:2], k, nprobe=1, qprobe=0, rerank=k)
    assert ids.shape == (2, k)
    missing = ids == -1
    assert missing.any(), "one cluster cannot hold every vector"
    assert np.isnan(dists[missing]).all() and np.isfinite(dists[~missing]).all()
    # padding comes after the results
    for row in missing:
        assert not row[: np.argmax(row)].any() and row[np.argmax(row):].all()


def test_info_equals_cli_inspect(built, m3_cli):
    import json

    path, _, _, _, _ = built("uint8", "ip")
    cli = json.loads(run_cli(m3_cli, "inspect", path, "--json").stdout)
    assert m3.Index(path).info() == cli


def test_empty_query_batch(built):
    path, _, queries, _, _ = built("float32", "l2")
    ids, dists = m3.Index(path).search(queries[:0], 10)
    assert ids.shape == (0, 10) and dists.shape == (0, 10)


def test_info_and_repr(built):
    path, base, _, _, _ = built("float32", "cosine")
    index = m3.Index(path)
    info = index.info()
    assert info["live"]["live_vectors"] == base.shape[0]
    assert "m3.Index" in repr(index) and "cosine" in repr(index)
    assert index.io in ("io_uring", "pread")
    assert index.blocks == []
    assert str(index.path) == str(path)

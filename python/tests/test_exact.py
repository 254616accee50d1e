"""Exact k-NN, range search and m3.gt against NumPy brute force on small sets."""

import numpy as np
import pytest

import m3
from conftest import METRICS, brute_force


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dtype", ("float32", "uint8"))
def test_exact_equals_brute_force(built, metric, dtype):
    path, base, queries, _, _ = built(dtype, metric)
    ids, dists = m3.Index(path).search(queries, 10, exact=True)
    want_ids, want_d = brute_force(base, queries, 10, metric)
    np.testing.assert_allclose(dists, want_d, rtol=1e-4, atol=1e-3)
    # ids equal wherever distances are not tied
    agree = (ids == want_ids).mean()
    assert agree >= 0.99, agree


@pytest.mark.parametrize("metric", METRICS)
def test_gt_equals_brute_force(metric):
    from conftest import make_data

    base, queries = make_data("float32", seed=3, n=800)
    ids, dists = m3.gt(base, queries, 7, metric)
    want_ids, want_d = brute_force(base, queries, 7, metric)
    assert ids.shape == (queries.shape[0], 7)
    np.testing.assert_allclose(dists, want_d, rtol=1e-4, atol=1e-3)
    assert (ids == want_ids).mean() >= 0.99


@pytest.mark.parametrize("metric", METRICS)
def test_range_equals_brute_force(built, metric):
    path, base, queries, _, _ = built("float32", metric)
    _, d = brute_force(base, queries, base.shape[0], metric)
    # a radius that keeps about the 31 nearest of half the queries (d is best first)
    radius = float(np.median(d[:, 30]))
    lims, ids, dists = m3.Index(path).range(queries, radius)
    assert lims.shape == (queries.shape[0] + 1,) and lims[0] == 0 and lims[-1] == ids.size
    assert ids.dtype == np.int64 and dists.dtype == np.float32
    b = base.astype(np.float64)
    total = 0
    for i, q in enumerate(queries.astype(np.float64)):
        if metric == "l2":
            dd = ((b - q) ** 2).sum(1)
            want = set(np.flatnonzero(dd <= radius))
        else:
            bb, qq = b, q
            if metric == "cosine":
                bb = b / np.linalg.norm(b, axis=1, keepdims=True)
                qq = q / np.linalg.norm(q)
            dd = bb @ qq
            want = set(np.flatnonzero(dd >= radius))
        got = ids[lims[i] : lims[i + 1]]
        assert len(set(got)) == len(got)
        # all of them, allowing only values within float rounding of the radius to differ
        near_edge = {j for j in want ^ set(got) if abs(dd[j] - radius) <= 1e-4 * max(1, abs(radius))}
        assert (want ^ set(got)) <= near_edge, (i, len(want), len(got))
        np.testing.assert_allclose(dists[lims[i] : lims[i + 1]], dd[got], rtol=1e-4, atol=1e-3)
        total += len(got)
    assert total > queries.shape[0], "the radius should keep some vectors"


def test_recall_helper():
    gt = np.array([[1, 2, 3], [4, 5, 6]])
    assert m3.recall(np.array([[1, 2, 3], [4, 5, 6]]), gt, 3) == 1.0
    assert m3.recall(np.array([[3, 9, -1], [6, 4, 0]]), gt, 3) == pytest.approx(3 / 6)
    assert m3.recall(np.array([[1, 9], [9, 9]]), (gt, None), 1) == pytest.approx(0.5)
    with pytest.raises(m3.InvalidInput, match="k"):
        m3.recall(gt, gt, 0)
    with pytest.raises(m3.InvalidInput, match="rows"):
        m3.recall(gt[:1], gt, 1)


def test_recall_credits_ties_with_the_kth_distance_as_the_cli():
    gt = (np.array([[1, 2, 3]]), np.array([[0.1, 0.2, 0.3]], dtype=np.float32))
    res, d = np.array([[1, 2, 7]]), np.array([[0.1, 0.2, 0.3]], dtype=np.float32)
    assert m3.recall(res, gt, 3) == pytest.approx(2 / 3)
    assert m3.recall(res, gt, 3, distances=d, metric="l2") == 1.0
    # Beyond the tolerance, or on the wrong side of the k-th distance: not a tie.
    far = np.array([[0.1, 0.2, 0.31]], dtype=np.float32)
    assert m3.recall(res, gt, 3, distances=far, metric="l2") == pytest.approx(2 / 3)
    # Inner product: higher is better; a repeated id counts once; -1 never.
    ip = (np.array([[1, 2, 3]]), np.array([[0.9, 0.8, 0.7]], dtype=np.float32))
    res = np.array([[1, 7, 7]])
    d = np.array([[0.9, 0.7, 0.7]], dtype=np.float32)
    assert m3.recall(res, ip, 3, distances=d, metric="ip") == pytest.approx(2 / 3)
    pad = np.array([[1, -1, -1]])
    dpad = np.array([[0.9, np.nan, np.nan]], dtype=np.float32)
    assert m3.recall(pad, ip, 3, distances=dpad, metric="ip") == pytest.approx(1 / 3)
    with pytest.raises(m3.InvalidInput, match="metric"):
        m3.recall(res, ip, 3, distances=d)
    with pytest.raises(m3.InvalidInput, match="no distances"):
        m3.recall(res, ip[0], 3, distances=d, metric="ip")
    with pytest.raises(m3.InvalidInput, match="shape"):
        m3.recall(res, ip, 3, distances=d[:, :2], metric="ip")

"""Live updates through m3.IndexWriter: inserts, upserts and deletes seen by indexes opened
after commit()."""

import shutil

import numpy as np
import pytest

import m3


def test_insert_delete_commit(index_copy):
    path, base, queries = index_copy
    rng = np.random.default_rng(5)
    new = (queries[:4] + 0.001 * rng.standard_normal(queries[:4].shape)).astype(np.float32)
    new_ids = np.array([10_000, 10_001, 10_002, 10_003])
    before = m3.Index(path)
    _, _ = before.search(queries[:4], 1, exact=True)
    gone = before.search(queries[4:6], 1, exact=True)[0][:, 0]
    with m3.Index(path).writer() as w:
        w.insert(new_ids, new)
        w.delete(gone)
        assert w.pending == 6
    after = m3.Index(path)
    assert len(after) == base.shape[0] + 4 - 2
    ids, _ = after.search(queries[:4], 1, exact=True)
    np.testing.assert_array_equal(ids[:, 0], new_ids)
    ids, _ = after.search(queries[4:6], 5, exact=True)
    assert not np.isin(gone, ids).any()
    # an index opened before the commit still answers as before
    assert len(before) == base.shape[0]


def test_writer_errors(index_copy):
    path, _, queries = index_copy
    w = m3.IndexWriter(path)
    with pytest.raises(m3.InvalidInput, match="another writer"):
        m3.IndexWriter(path)
    with pytest.raises(m3.InvalidInput, match="ids and vectors: 2 ids but 3 vectors"):
        w.insert([1, 2], queries[:3])
    with pytest.raises(m3.InvalidInput, match="ids\\[0\\] = -1"):
        w.insert([-1], queries[:1])
    with pytest.raises(m3.InvalidInput, match="dimension"):
        w.insert([1], queries[:1, :3])
    assert w.commit() == 0, "nothing pending: no new generation"
    w.insert([123_456], queries[:1])
    assert w.commit() == 1
    w.close()
    with pytest.raises(m3.InvalidInput, match="closed"):
        w.commit()
    m3.IndexWriter(path).close()  # the lock was released


@pytest.mark.parametrize("dtype", ("uint8", "int8"))
def test_insert_on_an_integer_index(built, tmp_path, dtype):
    """A uint8/int8 index takes arrays of its own type and float arrays of integers in range;
    a fraction or a value out of range is refused naming the row and component."""
    src, base, queries, _, _ = built(dtype, "l2")
    path = tmp_path / "idx"
    shutil.copytree(src, path)
    info = np.iinfo(dtype)
    new = queries[:3].copy()
    new_ids = np.array([50_000, 50_001, 50_002])
    with m3.IndexWriter(path) as w:
        w.insert(new_ids[:2], new[:2])  # the index's own dtype
        w.insert(new_ids[2:], new[2:].astype(np.float32))  # floats that are integers
        bad = new[:2].astype(np.float32)
        for x in (1.5, float(info.max) + 1, float(info.min) - 1):
            bad[1, 4] = x
            with pytest.raises(m3.InvalidInput, match="vector 1: component 4"):
                w.insert([1, 2], bad)
        assert w.pending == 3
    after = m3.Index(path)
    assert len(after) == base.shape[0] + 3
    ids, dists = after.search(new.astype(np.float32), 1, exact=True)
    np.testing.assert_array_equal(ids[:, 0], new_ids)
    np.testing.assert_allclose(dists[:, 0], 0.0)

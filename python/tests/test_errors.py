"""Every error path raises the named exception with a message naming the argument."""

import os

import numpy as np
import pytest

import m3


@pytest.fixture()
def index(built):
    path, base, queries, _, _ = built("float32", "l2")
    return m3.Index(path), queries


def test_exception_classes():
    assert issubclass(m3.InvalidInput, ValueError)
    assert issubclass(m3.IoError, OSError)
    assert issubclass(m3.CorruptIndex, Exception)
    assert not issubclass(m3.CorruptIndex, (ValueError, OSError))


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda q: q.astype(np.int64), "queries: dtype int64"),
        (lambda q: q.astype(np.float16), "queries: dtype float16"),
        (lambda q: q[None], r"queries: expected an array of shape"),
        (lambda q: q[:, :5], "queries: have dimension 5, the index has 16"),
        (lambda q: np.where(np.arange(q.size).reshape(q.shape) == 3, np.nan, q).astype(np.float32),
         "queries: query 0: component 3 is not finite"),
        (lambda q: np.zeros((2, 0), np.float32), "queries: has dimension 0"),
        (lambda q: "not an array", "queries"),
    ],
)
def test_bad_queries(index, bad, match):
    idx, q = index
    with pytest.raises(m3.InvalidInput, match=match):
        idx.search(bad(q), 10)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(k=0), "k must be at least 1, got 0"),
        (dict(k=-3), "k must be at least 1, got -3"),
        (dict(k=10**6), "k = 1000000 is larger than the 3000 vectors"),
        (dict(nprobe=-1), "nprobe must be at least 0"),
        (dict(rerank=-5), "rerank must be at least 0"),
        (dict(nprobe=0, qprobe=0, hints=0), "nprobe"),
        (dict(distance="euclid"), "distance must be 'auto', 'native' or 'lccmd'"),
        (dict(alpha=0.5), "alpha and beta are LC-CMD parameters"),
        (dict(threads=-1), "threads must be at least 0"),
        (dict(inflight=0), "inflight must be at least 1"),
        (dict(weights={"a": 1.0}), "weights"),
    ],
)
def test_bad_knobs(index, kwargs, match):
    idx, q = index
    with pytest.raises(m3.InvalidInput, match=match):
        idx.search(q, **kwargs)


def test_bad_range_arguments(index):
    idx, q = index
    with pytest.raises(m3.InvalidInput, match="radius must be finite"):
        idx.range(q, float("nan"))
    with pytest.raises(m3.InvalidInput, match="queries: have dimension"):
        idx.range(q[:, :3], 1.0)
    with pytest.raises(m3.InvalidInput, match="block"):
        idx.search({"a": q}, 5)


def test_open_errors(tmp_path, index_copy):
    with pytest.raises(m3.IoError, match="no index here|No such file"):
        m3.Index(tmp_path / "nothing-here")
    with pytest.raises(m3.InvalidInput, match="io: unknown I/O backend"):
        m3.Index(index_copy[0], io="floppy")


def corrupt_files(path):
    """Index files whose bytes are checked when the index is opened (not data.m3, whose
    sectors are checked as they are read)."""
    return sorted(
        f for f in os.listdir(path)
        if f.endswith(".m3") and f not in ("data.m3", "wal.m3", "delta.m3")
    )


def test_corrupt_index_raises_corrupt_index(index_copy):
    path = index_copy[0]
    files = corrupt_files(path)
    assert "manifest.m3" in files and len(files) >= 3
    for name in files:
        f = path / name
        original = f.read_bytes()
        offsets = (0, 20, len(original) // 2, len(original) - 1)
        if name == "sectors.m3":
            # the per-sector CRC table: its body is read by `m3 verify`, not when opening
            offsets = offsets[:2]
        for offset in offsets:
            flipped = bytearray(original)
            flipped[offset] ^= 0x5A
            f.write_bytes(bytes(flipped))
            with pytest.raises(m3.CorruptIndex, match=name):
                m3.Index(path)
        f.write_bytes(original)
    m3.Index(path)  # whole again


def test_corrupt_data_sector_raises_corrupt_index(index_copy):
    path, _, queries = index_copy
    f = path / "data.m3"
    raw = bytearray(f.read_bytes())
    # every data sector after the header: the exact search reads them all for some query
    for off in range(4096 + 100, len(raw), 4096):
        raw[off] ^= 0xFF
    f.write_bytes(bytes(raw))
    index = m3.Index(path, io="pread")
    with pytest.raises(m3.CorruptIndex):
        index.search(queries, 10, exact=True)


def test_build_errors(tmp_path):
    base = np.random.default_rng(0).standard_normal((500, 8)).astype(np.float32)
    with pytest.raises(m3.InvalidInput, match="metric"):
        m3.build(base, tmp_path / "a", "hamming")
    with pytest.raises(m3.InvalidInput, match="base: dtype float64"):
        m3.build(base.astype(np.float64), tmp_path / "b")
    with pytest.raises(m3.InvalidInput, match="base: expected an array of shape"):
        m3.build(base[0], tmp_path / "c")
    with pytest.raises(m3.InvalidInput, match="unknown build parameter 'clusters_size'"):
        m3.build(base, tmp_path / "d", clusters_size=100)
    with pytest.raises(m3.InvalidInput, match="ram_budget_gb"):
        m3.build(base, tmp_path / "e", ram_budget_gb=-1)
    with pytest.raises(m3.InvalidInput, match="progress"):
        m3.build(base, tmp_path / "f", progress=42)
    with pytest.raises(m3.InvalidInput, match="ids"):
        m3.build(base, tmp_path / "g", ids=-np.arange(500))
    (tmp_path / "file").write_text("not an index")
    with pytest.raises(m3.InvalidInput, match="refusing to write an index here"):
        m3.build(base, tmp_path / "file")
    nan = base.copy()
    nan[7, 3] = np.nan
    with pytest.raises(m3.InvalidInput, match="row 7"):
        m3.build(nan, tmp_path / "h")
    with pytest.raises(m3.IoError):
        m3.build(tmp_path / "missing.fbin", tmp_path / "i")
    # nothing was left beside the outputs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_gt_errors():
    base = np.zeros((10, 4), np.float32)
    with pytest.raises(m3.InvalidInput, match="k must be at least 1"):
        m3.gt(base, base, 0)
    with pytest.raises(m3.InvalidInput, match="k = 11 is larger than the 10 rows"):
        m3.gt(base, base, 11)
    with pytest.raises(m3.InvalidInput, match="queries: have dimension 3, base has 4"):
        m3.gt(base, base[:, :3], 1)


def test_a_rust_panic_becomes_runtime_error(built):
    from m3 import _m3

    for hook, where in ((_m3._panic_inside_fence, "on purpose"), (_m3._panic_on_pool, "worker 1")):
        with pytest.raises(RuntimeError, match=f"m3 internal error \\(a bug.*{where}"):
            hook()
    # the pool and the index still work afterwards
    path, _, queries, _, _ = built("float32", "l2")
    ids, _ = m3.Index(path).search(queries, 5, threads=2)
    assert ids.shape == (queries.shape[0], 5) and (ids >= 0).all()

"""Shared fixtures: small generated data sets, indexes built from them, the `m3` CLI binary,
and readers/writers of the big-ann vector files the CLI takes."""

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import m3

REPO = Path(__file__).resolve().parents[2]

# Small sets: big enough for several clusters, small enough to build in about a second.
N, DIM, NQ = 3000, 16, 50
BUILD = dict(cluster_size=200, threads=2)
DTYPES = ("float32", "uint8", "int8")
METRICS = ("l2", "ip", "cosine")


def cli_binary():
    """The `m3` binary: $M3_BIN, else the newest of target/{debug,release}/m3."""
    env = os.environ.get("M3_BIN")
    if env:
        return Path(env)
    found = [REPO / "target" / p / "m3" for p in ("debug", "release")]
    found = [p for p in found if p.exists()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


@pytest.fixture(scope="session")
def m3_cli():
    path = cli_binary()
    if path is None or not path.exists():
        if os.environ.get("M3_REQUIRE_CLI") == "1":
            pytest.fail("M3_REQUIRE_CLI=1 but no m3 binary (set M3_BIN or build target/*/m3)")
        pytest.skip("no m3 binary: build it with `cargo build --bin m3` or set M3_BIN")
    return path


def run_cli(binary, *args):
    r = subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, f"m3 {' '.join(map(str, args))} failed:\n{r.stderr}"
    return r


_EXT = {"float32": "fbin", "uint8": "u8bin", "int8": "i8bin"}


def write_bin(path, arr):
    """A big-ann vector file (.fbin/.u8bin/.i8bin): u32 rows, u32 dim, then the rows."""
    arr = np.ascontiguousarray(arr)
    with open(path, "wb") as f:
        np.array(arr.shape, dtype="<u4").tofile(f)
        arr.tofile(f)
    return path


def read_results(path):
    """`m3 search --out` (.ibin, big-ann layout): ids then distances; u32::MAX → -1."""
    raw = np.fromfile(path, dtype="<u4")
    n, k = int(raw[0]), int(raw[1])
    ids = raw[2 : 2 + n * k].astype(np.int64).reshape(n, k)
    ids[ids == 0xFFFFFFFF] = -1
    dists = raw[2 + n * k : 2 + 2 * n * k].view("<f4").reshape(n, k)
    return ids, dists


def make_data(dtype, seed=0, n=N, dim=DIM, nq=NQ):
    """Clustered data of `dtype` and queries near it (same dtype)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, dim)) * 3
    base = centres[rng.integers(0, 20, n)] + rng.standard_normal((n, dim))
    queries = centres[rng.integers(0, 20, nq)] + rng.standard_normal((nq, dim))
    if dtype == "float32":
        return base.astype(np.float32), queries.astype(np.float32)
    if dtype == "uint8":
        to = lambda x: np.clip(x * 12 + 128, 0, 255).astype(np.uint8)  # noqa: E731
    else:
        to = lambda x: np.clip(x * 12, -127, 127).astype(np.int8)  # noqa: E731
    return to(base), to(queries)


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """built(dtype, metric) → (index path, base, queries, base file, query file); cached."""
    root = tmp_path_factory.mktemp("indexes")
    cache = {}

    def get(dtype="float32", metric="l2"):
        key = (dtype, metric)
        if key not in cache:
            base, queries = make_data(dtype)
            d = root / f"{dtype}-{metric}"
            d.mkdir()
            bfile = write_bin(d / f"base.{_EXT[dtype]}", base)
            qfile = write_bin(d / f"query.{_EXT[dtype]}", queries)
            m3.build(base, d / "idx", metric, **BUILD)
            cache[key] = (d / "idx", base, queries, bfile, qfile)
        return cache[key]

    return get


@pytest.fixture()
def index_copy(built, tmp_path):
    """A private copy of the float32/l2 index (for tests that write or corrupt it)."""
    path, base, queries, _, _ = built("float32", "l2")
    dst = tmp_path / "idx"
    shutil.copytree(path, dst)
    return dst, base, queries


def brute_force(base, queries, k, metric):
    """NumPy's exact top-k: (ids, natural distances), ties broken by id."""
    b = base.astype(np.float64)
    q = queries.astype(np.float64)
    if metric == "l2":
        d = ((q[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        key = d
    else:
        if metric == "cosine":
            b = b / np.linalg.norm(b, axis=1, keepdims=True)
            q = q / np.linalg.norm(q, axis=1, keepdims=True)
        d = q @ b.T
        key = -d
    order = np.lexsort((np.broadcast_to(np.arange(b.shape[0]), key.shape), key), axis=1)
    ids = order[:, :k]
    return ids, np.take_along_axis(d, ids, 1)

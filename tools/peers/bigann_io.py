"""Readers and writers for the big-ann-benchmarks binary formats (numpy only).

Vector files (.fbin / .u8bin / .i8bin):
    u32 n, u32 d (little endian), then n*d values row-major
    (.fbin float32, .u8bin uint8, .i8bin int8).
Ground truth (.ibin):
    u32 n, u32 k, then n*k ids (int32/uint32), optionally followed by
    n*k float32 distances (the big-ann "gt" layout). The two are told apart by
    the file length: 8 + 4nk (ids only) or 8 + 8nk (ids and distances).
Distance file (.dist.fbin): an ordinary .fbin of shape (n, k), float32.

Readers memory-map by default (mmap=True); pass mmap=False to read into RAM.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

import numpy as np

HEADER_BYTES = 8

_DTYPE_BY_EXT = {
    ".fbin": np.float32,
    ".u8bin": np.uint8,
    ".i8bin": np.int8,
    ".ibin": np.int32,
}


def dtype_for_path(path: str) -> np.dtype:
    """Element type implied by a file name's extension (.dist.fbin -> float32)."""
    for ext, dt in _DTYPE_BY_EXT.items():
        if path.endswith(ext):
            return np.dtype(dt).newbyteorder("<")
    raise ValueError(f"{path}: unknown big-ann extension (want .fbin/.u8bin/.i8bin/.ibin)")


def read_header(path: str) -> Tuple[int, int]:
    """(n, d) of a big-ann file; for .ibin files d is k."""
    hdr = np.fromfile(path, dtype="<u4", count=2)
    if hdr.size != 2:
        raise ValueError(f"{path}: shorter than the 8-byte header")
    return int(hdr[0]), int(hdr[1])


def _load(path: str, dtype, shape, offset: int, mmap: bool) -> np.ndarray:
    if mmap:
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
    count = int(np.prod(shape))
    arr = np.fromfile(path, dtype=dtype, count=count, offset=offset)
    if arr.size != count:
        raise ValueError(f"{path}: truncated (wanted {count} values, got {arr.size})")
    return arr.reshape(shape)


def read_vectors(path: str, dtype=None, mmap: bool = True,
                 start: int = 0, count: Optional[int] = None) -> np.ndarray:
    """Read rows [start, start+count) of a .fbin/.u8bin/.i8bin file as an (m, d) array."""
    dt = np.dtype(dtype).newbyteorder("<") if dtype is not None else dtype_for_path(path)
    n, d = read_header(path)
    expect = HEADER_BYTES + n * d * dt.itemsize
    size = os.path.getsize(path)
    if size != expect:
        raise ValueError(f"{path}: size {size} != 8 + {n}*{d}*{dt.itemsize} = {expect}")
    if start < 0 or start > n:
        raise ValueError(f"start {start} out of range [0, {n}]")
    m = n - start if count is None else min(count, n - start)
    return _load(path, dt, (m, d), HEADER_BYTES + start * d * dt.itemsize, mmap)


def write_vectors(path: str, x: np.ndarray, dtype=None) -> None:
    """Write an (n, d) array in big-ann layout; dtype defaults from the extension."""
    dt = np.dtype(dtype).newbyteorder("<") if dtype is not None else dtype_for_path(path)
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"want a 2-d array, got shape {x.shape}")
    n, d = x.shape
    tmp = path + ".partial"
    with open(tmp, "wb") as f:
        np.array([n, d], dtype="<u4").tofile(f)
        np.ascontiguousarray(x, dtype=dt).tofile(f)
    os.replace(tmp, path)


def read_ibin(path: str, mmap: bool = True, id_dtype=np.int32
              ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Read a ground-truth .ibin: returns (ids (n, k), distances (n, k) or None).

    Distances are present when the file is 8 + 8nk bytes long (big-ann gt layout).
    """
    n, k = read_header(path)
    size = os.path.getsize(path)
    ids_bytes = n * k * 4
    idt = np.dtype(id_dtype).newbyteorder("<")
    if idt.itemsize != 4:
        raise ValueError("ids are 4-byte (int32 or uint32)")
    if size == HEADER_BYTES + ids_bytes:
        has_dist = False
    elif size == HEADER_BYTES + 2 * ids_bytes:
        has_dist = True
    else:
        raise ValueError(f"{path}: size {size} is neither 8+4nk nor 8+8nk (n={n}, k={k})")
    ids = _load(path, idt, (n, k), HEADER_BYTES, mmap)
    dist = _load(path, np.dtype("<f4"), (n, k), HEADER_BYTES + ids_bytes, mmap) if has_dist else None
    return ids, dist


def write_ibin(path: str, ids: np.ndarray, dist: Optional[np.ndarray] = None) -> None:
    """Write ids (n, k) as .ibin, with float32 distances appended when given (gt layout)."""
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"want 2-d ids, got shape {ids.shape}")
    if dist is not None and np.shape(dist) != ids.shape:
        raise ValueError(f"dist shape {np.shape(dist)} != ids shape {ids.shape}")
    n, k = ids.shape
    tmp = path + ".partial"
    with open(tmp, "wb") as f:
        np.array([n, k], dtype="<u4").tofile(f)
        np.ascontiguousarray(ids, dtype="<i4").tofile(f)
        if dist is not None:
            np.ascontiguousarray(dist, dtype="<f4").tofile(f)
    os.replace(tmp, path)


def read_dist(path: str, mmap: bool = True) -> np.ndarray:
    """Read a separate .dist.fbin distance file: float32 (n, k)."""
    return read_vectors(path, dtype=np.float32, mmap=mmap)


def write_dist(path: str, dist: np.ndarray) -> None:
    write_vectors(path, dist, dtype=np.float32)


def read_gt(ids_path: str, dist_path: Optional[str] = None, mmap: bool = True
            ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Ground truth from an .ibin, taking distances from the .ibin itself if it
    carries them, else from dist_path, else from the sibling `<stem>.dist.fbin`
    (e.g. gt100.ip.ibin -> gt100.ip.dist.fbin) when it exists."""
    ids, dist = read_ibin(ids_path, mmap=mmap)
    if dist is None:
        if dist_path is None and ids_path.endswith(".ibin"):
            cand = ids_path[: -len(".ibin")] + ".dist.fbin"
            dist_path = cand if os.path.exists(cand) else None
        if dist_path is not None:
            dist = read_dist(dist_path, mmap=mmap)
            if dist.shape != ids.shape:
                raise ValueError(f"{dist_path}: shape {dist.shape} != ids {ids.shape}")
    return ids, dist


if __name__ == "__main__":  # quick self-test: python bigann_io.py
    import tempfile

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as td:
        for ext, dt in ((".fbin", np.float32), (".u8bin", np.uint8), (".i8bin", np.int8)):
            x = (rng.standard_normal((7, 5)) * 50).astype(dt)
            p = os.path.join(td, "x" + ext)
            write_vectors(p, x)
            assert read_header(p) == (7, 5)
            assert np.array_equal(read_vectors(p), x)
            assert np.array_equal(read_vectors(p, mmap=False, start=2, count=3), x[2:5])
        ids = rng.integers(0, 1000, (4, 3)).astype(np.int32)
        dist = rng.standard_normal((4, 3)).astype(np.float32)
        p = os.path.join(td, "gt.ibin")
        write_ibin(p, ids)
        i2, d2 = read_ibin(p)
        assert np.array_equal(i2, ids) and d2 is None
        write_dist(os.path.join(td, "gt.dist.fbin"), dist)
        i3, d3 = read_gt(p)
        assert np.array_equal(i3, ids) and np.array_equal(d3, dist)
        write_ibin(p, ids, dist)
        i4, d4 = read_ibin(p, mmap=False)
        assert np.array_equal(i4, ids) and np.array_equal(d4, dist)
        assert os.path.getsize(p) == 8 + 2 * 4 * 12
    print("bigann_io self-test ok")

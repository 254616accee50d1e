"""M³: a disk-resident vector index engine, from Python.

Build an index from a NumPy array or a vector file, open it, and search it::

    import numpy as np, m3
    base = np.random.default_rng(0).standard_normal((10_000, 64), dtype=np.float32)
    m3.build(base, "idx", metric="l2")
    index = m3.Index("idx")
    ids, dists = index.search(base[:5], k=10)

The calls are documented in ``m3/__init__.pyi`` and ``docs/PYTHON.md``.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Optional, Union

import numpy as np

from ._m3 import CorruptIndex, Index, IndexWriter, InvalidInput, IoError, ShardRouter
from ._m3 import publish_shards, write_shard
from ._m3 import stage_assign, stage_publish, stage_shard, stage_train
from ._m3 import build as _build
from ._m3 import gt as _gt
from .ann import M3ANN

__all__ = [
    "build",
    "Index",
    "IndexWriter",
    "gt",
    "recall",
    "InvalidInput",
    "CorruptIndex",
    "IoError",
    "M3ANN",
    "ShardRouter",
    "write_shard",
    "publish_shards",
    "stage_train",
    "stage_assign",
    "stage_shard",
    "stage_publish",
]


class _StderrBar:
    """A minimal progress bar on stderr, used when tqdm is not installed."""

    def __init__(self) -> None:
        self.stage: Optional[str] = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage:
            if self.stage is not None:
                sys.stderr.write("\n")
            self.stage = stage
        share = f"{100.0 * done / total:5.1f}%" if total else ""
        sys.stderr.write(f"\rm3 build: {stage:<10} {done:>12,}/{total:,} {share}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.stage is not None:
            sys.stderr.write("\n")


class _TqdmBar:
    """One tqdm bar per build stage."""

    def __init__(self, tqdm: Any) -> None:
        self.tqdm = tqdm
        self.bar: Any = None
        self.stage: Optional[str] = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = self.tqdm(total=total or None, desc=f"m3 build: {stage}", unit="")
        if self.bar is not None:
            self.bar.n = done
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _progress_callback(progress: Any) -> Any:
    if progress is None or progress is False:
        return None
    if progress is True or progress == "tqdm":
        try:
            from tqdm.auto import tqdm  # type: ignore[import-not-found]

            return _TqdmBar(tqdm)
        except ImportError:
            return _StderrBar()
    if callable(progress):
        return progress
    raise InvalidInput(
        f"progress: expected None, True, 'tqdm' or a callable(stage, done, total), got {progress!r}"
    )


def build(
    base: Any,
    out: Union[str, "os.PathLike[str]"],
    metric: str = "l2",
    *,
    train_queries: Any = None,
    ids: Any = None,
    threads: int = 0,
    seed: int = 42,
    ram_budget_gb: Optional[float] = None,
    progress: Union[None, bool, str, Callable[[str, int, int], Any]] = None,
    **params: Any,
) -> dict:
    """Builds an index at ``out`` from ``base`` and returns the build summary (a dict).

    ``base`` is a NumPy array (float32, uint8 or int8, shape ``(n, dim)``; written once to a
    temporary vector file beside ``out``), a path to any vector file ``m3`` reads (``.fbin``,
    ``.u8bin``, ``.i8bin``, ``.fvecs``, ``.bvecs``, ``.npy``), or a dict block name → array or
    path for a multi-vector index. ``metric`` is ``"l2"``, ``"ip"`` or ``"cosine"``.
    ``train_queries`` (array or path) are sample queries of the query modality; ``ids`` are
    ``uint64``-compatible user ids (array or ``.u64bin``/``.ibin``/``.npy`` path), one per base
    row. ``threads=0`` uses one thread per core; the same input, seed and thread count give
    byte-identical files. ``progress=True`` draws a bar (tqdm when installed), or pass a
    callable ``progress(stage, done, total)``. ``**params`` are ``m3 build``'s flags of the same
    names: ``cluster_size``, ``pq_bytes``, ``refine``, ``spill``, ``degree``, …
    """
    callback = _progress_callback(progress)
    if seed < 0:
        raise InvalidInput(f"seed must be ≥ 0, got {seed}")
    try:
        return _build(
            base,
            os.fspath(out),
            metric,
            train_queries=train_queries,
            ids=ids,
            threads=threads,
            seed=seed,
            ram_budget_gb=ram_budget_gb,
            progress=callback,
            params=params or None,
        )
    finally:
        close = getattr(callback, "close", None)
        if close is not None:
            close()


def gt(base: Any, queries: Any, k: int, metric: str = "l2") -> "tuple[np.ndarray, np.ndarray]":
    """Exact k-NN by brute force: ``(ids, distances)``, ``(nq, k)`` each.

    ``ids`` are row numbers of ``base`` (int64); distances are in the metric's natural unit
    (squared L2, inner product, cosine similarity), best first.
    """
    return _gt(base, queries, k, metric)


#: Relative tolerance of a tie with the k-th true distance (the engine's ``TIE_REL_TOL``).
TIE_REL_TOL = 1e-5


def recall(
    ids: Any, gt: Any, k: int, *, distances: Any = None, metric: Optional[str] = None
) -> float:
    """Mean recall@k: the share of each query's true ``k`` nearest found in its first ``k``
    results.

    ``ids`` is ``(nq, ≥k)`` (e.g. ``Index.search``'s ids); ``gt`` is ``(nq, ≥k)`` true ids, or
    the ``(ids, distances)`` pair ``m3.gt`` returns. A repeated id counts once; ``-1`` never
    matches. With the results' ``distances`` (``(nq, ≥k)``, natural units, as ``search``
    returns them), ``gt``'s distances and the ``metric``, a result that ties the k-th true
    distance (within a relative ``TIE_REL_TOL``) is credited too, as ``m3 search --gt
    --gt-dists`` does: among equally distant vectors any is a true neighbour.
    """
    gt_dists = None
    if isinstance(gt, tuple):
        gt, gt_dists = gt[0], gt[1]
    ids = np.asarray(ids)
    gt = np.asarray(gt)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidInput(f"k must be an integer ≥ 1, got {k!r}")
    if ids.ndim != 2 or gt.ndim != 2:
        raise InvalidInput(f"ids and gt must be 2-D, got shapes {ids.shape} and {gt.shape}")
    if ids.shape[0] != gt.shape[0]:
        raise InvalidInput(f"ids has {ids.shape[0]} rows but gt has {gt.shape[0]}")
    if ids.shape[1] < k or gt.shape[1] < k:
        raise InvalidInput(f"k = {k}: ids has {ids.shape[1]} columns and gt {gt.shape[1]}")
    if ids.shape[0] == 0:
        raise InvalidInput("ids: no queries")
    kth = _kth_for_ties(ids, gt_dists, k, distances, metric)
    found = 0
    for q, (row, truth) in enumerate(zip(ids[:, :k], gt[:, :k])):
        hit = np.isin(row, truth) & (row >= 0)
        if kth is not None:
            d = kth[1][q, :k]
            tol = TIE_REL_TOL * np.maximum(np.maximum(np.abs(d), abs(kth[0][q])), 1e-38)
            hit |= (d >= kth[0][q] - tol) if kth[2] else (d <= kth[0][q] + tol)
            hit &= row >= 0
        _, first = np.unique(row, return_index=True)
        found += min(int(hit[first].sum()), k)
    return found / (k * ids.shape[0])


def _kth_for_ties(
    ids: Any, gt_dists: Any, k: int, distances: Any, metric: Optional[str]
) -> "Optional[tuple[Any, Any, bool]]":
    """(k-th true distance per query, result distances, higher is better), or None when ties
    are not to be credited (no result distances given)."""
    if distances is None:
        return None
    if gt_dists is None:
        raise InvalidInput("distances given, but gt has no distances: pass m3.gt's pair")
    if metric not in ("l2", "ip", "cosine"):
        raise InvalidInput(f"metric must be 'l2', 'ip' or 'cosine' to credit ties, got {metric!r}")
    d = np.asarray(distances, dtype=np.float64)
    g = np.asarray(gt_dists, dtype=np.float64)
    if d.shape != ids.shape:
        raise InvalidInput(f"distances has shape {d.shape}, ids {ids.shape}")
    if g.ndim != 2 or g.shape[0] != ids.shape[0] or g.shape[1] < k:
        raise InvalidInput(f"gt distances have shape {g.shape}, need ({ids.shape[0]}, ≥{k})")
    return g[:, k - 1], d, metric != "l2"

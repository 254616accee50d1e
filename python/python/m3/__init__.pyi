"""Type stubs of the Python package ``m3`` (M³, a disk-resident vector index engine)."""

import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

from .ann import M3ANN as M3ANN

_Path = Union[str, "os.PathLike[str]"]
# float32 (searched in place when C-contiguous), float64, uint8 or int8; (n, dim) or (dim,)
_Queries = Union[npt.ArrayLike, Mapping[str, npt.ArrayLike]]

class InvalidInput(ValueError):
    """A bad argument, query, search parameter or input file; the message names it."""

class CorruptIndex(Exception):
    """An index file is corrupt, truncated or of an unsupported version."""

class IoError(OSError):
    """The operating system refused a read or write, or the path holds no index."""

def build(
    base: Union[npt.ArrayLike, _Path, Mapping[str, Union[npt.ArrayLike, _Path]]],
    out: _Path,
    metric: str = "l2",
    *,
    train_queries: Union[npt.ArrayLike, _Path, None] = None,
    ids: Union[npt.ArrayLike, _Path, None] = None,
    threads: int = 0,
    seed: int = 42,
    ram_budget_gb: Optional[float] = None,
    progress: Union[None, bool, str, Callable[[str, int, int], Any]] = None,
    **params: Any,
) -> Dict[str, Any]:
    """Builds an index at ``out`` from a NumPy array (float32/uint8/int8), a vector file, or a
    dict block name → array/path (multi-vector); returns the build summary.

    ``metric``: ``"l2"``, ``"ip"`` or ``"cosine"``. ``train_queries``: sample queries of the
    query modality. ``ids``: one user id (≥ 0) per base row. ``threads=0``: one per core.
    ``progress``: ``True`` for a bar (tqdm when installed) or ``progress(stage, done, total)``.
    ``**params``: ``m3 build`` flags (``cluster_size``, ``max_cluster_factor``, ``pq_bytes``,
    ``refine``, ``spill``, ``spill_epsilon``, ``query_anchors``, ``edges_per_anchor``,
    ``hint_depth``, ``degree``, ``candidates``, ``cross_links``, ``cross_clusters``).
    Raises ``InvalidInput`` for a bad argument or an ``out`` that is not new, empty or an index.
    """

class Index:
    """An index opened for search. Thread-safe: any number of Python threads may search it at
    once (the GIL is released while the engine works)."""

    def __init__(self, path: _Path, io: str = "auto") -> None:
        """Opens the index directory ``path``; ``io``: ``"auto"`` (io_uring, else pread),
        ``"uring"`` or ``"pread"``. Raises ``IoError`` when there is no index,
        ``CorruptIndex`` when a file fails its checks."""
    def search(
        self,
        queries: _Queries,
        k: int = 10,
        *,
        nprobe: Optional[int] = None,
        qprobe: Optional[int] = None,
        edges: Optional[int] = None,
        hints: Optional[int] = None,
        rerank: Optional[int] = None,
        refine: Optional[int] = None,
        expand_rounds: Optional[int] = None,
        distance: str = "auto",
        alpha: Optional[float] = None,
        beta: Optional[float] = None,
        weights: Optional[Mapping[str, float]] = None,
        threads: int = 0,
        inflight: Optional[int] = None,
        exact: bool = False,
    ) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """The ``k`` nearest neighbours of each query: ``(ids, distances)``, ``(nq, k)`` each,
        best first. Ids are user ids (row numbers without ``ids=``); distances are in the
        metric's natural unit (squared L2, inner product, cosine similarity; LC-CMD: D²).
        ``-1`` and NaN fill a row with fewer than ``k`` results.

        Knobs left at ``None`` take the engine's defaults (``m3 search --help``).
        ``distance``: ``"auto"`` (what calibration stored), ``"native"`` or ``"lccmd"``
        (with ``alpha``, ``beta``). ``exact=True``: the true top-k (the knobs are ignored).
        Multi-vector index: ``queries`` may be a dict block name → array (any subset of the
        blocks) and ``weights`` a dict block name → weight ≥ 0. ``threads=0``: one worker per
        core; ``inflight``: queries in flight per worker (default 4). One query runs on the
        calling thread. Raises ``InvalidInput`` naming the argument at fault.
        """
    def range(
        self,
        queries: _Queries,
        radius: float,
        *,
        weights: Optional[Mapping[str, float]] = None,
        threads: int = 0,
    ) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Every vector within ``radius`` of each query (squared L2 ≤ radius; inner product or
        cosine similarity ≥ radius), exactly: faiss's ``(lims, ids, distances)``; query ``i``'s
        results are ``ids[lims[i]:lims[i+1]]``, best first."""
    def info(self) -> Dict[str, Any]:
        """What ``m3 inspect --json`` says about the index."""
    def writer(self) -> "IndexWriter":
        """``IndexWriter(self.path)``."""
    def _borrows(self, queries: npt.ArrayLike) -> bool:
        """Whether ``queries`` would be searched in place, without a copy."""
    def __len__(self) -> int:
        """Vectors a search can return (as of opening)."""
    @property
    def dim(self) -> int: ...
    @property
    def metric(self) -> str:
        """``"l2"``, ``"ip"`` or ``"cosine"``."""
    @property
    def path(self) -> "os.PathLike[str]":
        """The index directory (a ``pathlib.Path``)."""
    @property
    def io(self) -> str:
        """The block reader in use: ``"io_uring"`` or ``"pread"``."""
    @property
    def blocks(self) -> List[str]:
        """Block names of a multi-vector index (empty otherwise)."""

class IndexWriter:
    """The one writer of an index directory: inserts, upserts and deletes by user id, durable
    at ``commit()``; indexes opened afterwards see them. As a context manager it commits on
    a clean exit."""

    def __init__(self, path: _Path) -> None: ...
    def insert(self, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        """Inserts (or replaces) one vector per id (ids ≥ 0): float32, float64, uint8 or
        int8 rows. On a uint8/int8 index every value must be an integer within the type's
        range (nothing is rounded or clamped; otherwise ``InvalidInput`` naming the row and
        component)."""
    def delete(self, ids: npt.ArrayLike) -> None:
        """Deletes these ids."""
    def commit(self) -> int:
        """Makes the pending changes durable; returns the new generation."""
    def close(self) -> None:
        """Releases the directory's lock; uncommitted changes are dropped."""
    @property
    def pending(self) -> int: ...
    def __len__(self) -> int: ...
    def __enter__(self) -> "IndexWriter": ...
    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool: ...

def gt(
    base: npt.ArrayLike, queries: npt.ArrayLike, k: int, metric: str = "l2"
) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Exact k-NN by brute force: ``(ids, distances)``, ``(nq, k)`` each (row numbers of
    ``base``; natural units)."""

TIE_REL_TOL: float

def recall(
    ids: npt.ArrayLike,
    gt: Union[npt.ArrayLike, Tuple[npt.ArrayLike, npt.ArrayLike]],
    k: int,
    *,
    distances: Optional[npt.ArrayLike] = ...,
    metric: Optional[str] = ...,
) -> float:
    """Mean recall@k of ``ids`` against true ids ``gt`` (or ``m3.gt``'s pair); with the
    results' ``distances`` and the ``metric``, ties with the k-th true distance count."""

def write_shard(
    index: _Path, out: _Path, shards: int, shard: int, *, seed: int = 42
) -> Dict[str, Any]:
    """Writes shard ``shard`` of ``shards`` of the built index ``index`` into
    ``out/shard-NNN`` (crash-safely; a retry writes the same bytes); its summary.
    docs/DISTRIBUTED.md."""

def publish_shards(index: _Path, out: _Path, shards: int, *, seed: int = 42) -> None:
    """Checks the shards written in ``out`` and writes ``out/shards.m3`` last."""

def stage_train(
    base: Union[_Path, Sequence[_Path]],
    work: _Path,
    shards: int,
    metric: str = "l2",
    *,
    train_queries: Optional[_Path] = None,
    threads: int = 0,
    seed: int = 42,
    ram_budget_gb: Optional[float] = None,
    progress: Optional[Callable[[str, int, int], None]] = None,
    params: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Staged build, stage 1: trains the model of the base file ``base`` (or of a list of
    files, rows numbered by concatenation) and plans ``shards`` shards into the work directory ``work`` (docs/DISTRIBUTED.md, "Stages")."""

def stage_assign(
    work: _Path,
    start: int,
    end: int,
    *,
    base: Optional[Union[_Path, Sequence[_Path]]] = None,
    threads: int = 0,
    progress: Optional[Callable[[str, int, int], None]] = None,
) -> Dict[str, Any]:
    """Stage 2: assigns base rows ``start..end`` against the model, one sorted run per shard
    (a retry writes the same bytes). ``base``: the base files' paths on this machine."""

def stage_shard(
    work: _Path,
    shard: int,
    *,
    base: Optional[Union[_Path, Sequence[_Path]]] = None,
    threads: int = 0,
    progress: Optional[Callable[[str, int, int], None]] = None,
) -> Dict[str, Any]:
    """Stage 3: builds shard ``shard`` from every range's run (a normal index directory)."""

def stage_publish(work: _Path, out: _Path) -> Dict[str, Any]:
    """Stage 4: moves the shards into ``out`` and writes ``out/shards.m3`` last."""

class ShardRouter:
    """The router of a sharded index (``shards.m3`` and shard 0's global parts): which
    shards each query must go to. ``m3.distributed.Index`` uses it."""

    def __init__(self, path: _Path, io: str = "auto") -> None: ...
    def route(
        self,
        queries: npt.ArrayLike,
        k: int = 10,
        *,
        nprobe: Optional[int] = None,
        qprobe: Optional[int] = None,
        edges: Optional[int] = None,
        hints: Optional[int] = None,
        rerank: Optional[int] = None,
        refine: Optional[int] = None,
        expand_rounds: Optional[int] = None,
    ) -> List[List[int]]:
        """For every query, the shards (ascending) that own a cluster it probes or store an
        answer of one of its nearest training queries."""
    def exact_order(self, queries: npt.ArrayLike) -> List[List[Tuple[int, float]]]:
        """For every query, the shards holding records, best bound first, as ``(shard,
        bound)`` in the metric's natural unit (squared L2: a lower bound on the distance;
        inner product, cosine: an upper bound on the similarity)."""
    def range_route(self, queries: npt.ArrayLike, radius: float) -> List[List[int]]:
        """For every query, the shards (ascending) a range search of ``radius`` must ask."""
    def shard_dir(self, s: int) -> "os.PathLike[str]":
        """The directory of shard ``s``."""
    def __len__(self) -> int: ...
    @property
    def n_shards(self) -> int: ...
    @property
    def metric(self) -> str: ...
    @property
    def dim(self) -> int: ...

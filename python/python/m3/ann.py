"""An adapter for the benchmark harnesses: ann-benchmarks' and big-ann-benchmarks' ``BaseANN``.

Both harnesses wrap an algorithm in a class with ``fit``, ``set_query_arguments``, ``query``,
``batch_query`` / ``get_batch_results`` (ann-benchmarks) and ``query`` / ``get_results`` /
``range_query`` / ``get_range_results`` (big-ann-benchmarks). ``M3ANN`` speaks both;
``docs/PYTHON.md`` shows how to register it in each harness.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Dict, List, Optional

import numpy as np

# Positional query arguments (ann-benchmarks passes a list per run), in this order.
_POSITIONAL_KNOBS = ("nprobe", "rerank", "qprobe", "expand_rounds")
_KNOBS = ("nprobe", "qprobe", "edges", "hints", "rerank", "refine", "expand_rounds",
          "distance", "threads", "inflight", "exact")


class M3ANN:
    """M³ as a ``BaseANN`` of ann-benchmarks and big-ann-benchmarks.

    ``metric``: ``"euclidean"``/``"l2"``, ``"angular"``/``"cosine"`` or ``"ip"``.
    ``index_params``: ``m3.build`` keywords (``cluster_size``, ``pq_bytes``, ``threads``,
    ``seed``, ``ram_budget_gb``, ``train_queries``, …) plus ``index_dir`` (where the index is
    written; default a temporary directory removed by ``done()``) and ``io``.
    """

    def __init__(self, metric: str, index_params: Optional[Dict[str, Any]] = None) -> None:
        from . import Index, InvalidInput  # noqa: F401  (import cycle: m3 imports this module)

        params = dict(index_params or {})
        self.metric = metric
        self._io = params.pop("io", "auto")
        self._own_dir = "index_dir" not in params
        self.index_dir = params.pop("index_dir", None) or os.path.join(
            tempfile.mkdtemp(prefix="m3-ann-"), "index"
        )
        self._build_params = params
        self._query_args: Dict[str, Any] = {}
        self.index: Any = None
        self.res: Optional[np.ndarray] = None
        self._batch: Optional[np.ndarray] = None
        self._range: Optional[tuple] = None
        self.name = f"M3({params})"

    def __str__(self) -> str:
        return f"M3(index={self._build_params}, query={self._query_args})"

    # -- building ---------------------------------------------------------------------------

    def fit(self, X: Any) -> None:
        """Builds the index from an array ``X`` (ann-benchmarks) or a vector file path, then
        opens it."""
        from . import build

        params = dict(self._build_params)
        build(X, self.index_dir, self.metric, **params)
        self.load_index(None)

    def load_index(self, dataset: Any = None) -> bool:
        """Opens the index at ``index_dir`` when it exists (big-ann-benchmarks)."""
        from . import Index

        if not os.path.exists(os.path.join(self.index_dir, "manifest.m3")):
            return False
        self.index = Index(self.index_dir, io=self._io)
        return True

    def index_files_to_store(self, dataset: Any = None) -> List[str]:
        return [self.index_dir]

    # -- query arguments --------------------------------------------------------------------

    def set_query_arguments(self, *args: Any) -> None:
        """``set_query_arguments({"nprobe": 32, "rerank": 80})`` (big-ann-benchmarks) or
        positional ``set_query_arguments(nprobe, rerank, qprobe, expand_rounds)``
        (ann-benchmarks; any prefix)."""
        from . import InvalidInput

        if len(args) == 1 and isinstance(args[0], dict):
            knobs = dict(args[0])
        else:
            if len(args) > len(_POSITIONAL_KNOBS):
                raise InvalidInput(
                    f"set_query_arguments: at most {len(_POSITIONAL_KNOBS)} positional "
                    f"arguments {_POSITIONAL_KNOBS}, got {len(args)}"
                )
            knobs = dict(zip(_POSITIONAL_KNOBS, args))
        unknown = sorted(set(knobs) - set(_KNOBS))
        if unknown:
            raise InvalidInput(f"set_query_arguments: unknown knobs {unknown} (known: {_KNOBS})")
        self._query_args = knobs

    # -- k-NN -------------------------------------------------------------------------------

    def _search(self, X: Any, k: int) -> np.ndarray:
        from . import InvalidInput

        if self.index is None:
            raise InvalidInput("call fit() or load_index() before querying")
        ids, _ = self.index.search(X, k, **self._query_args)
        return ids

    def query(self, q: Any, n: int) -> Any:
        """ann-benchmarks: ``q`` one vector → a list of ``n`` ids. big-ann-benchmarks: ``q``
        a 2-D array → results kept for ``get_results()``."""
        q = np.asarray(q)
        if q.ndim == 1:
            ids = self._search(q, n)[0]
            return [int(i) for i in ids if i >= 0]
        self.res = self._search(q, n)
        return None

    def batch_query(self, X: Any, n: int) -> None:
        """ann-benchmarks: searches every row of ``X`` in one call (the engine's threads)."""
        self._batch = self._search(X, n)

    def get_batch_results(self) -> List[np.ndarray]:
        if self._batch is None:
            return []
        return [row[row >= 0] for row in self._batch]

    def get_results(self) -> np.ndarray:
        """big-ann-benchmarks: the ``(nq, k)`` ids of the last ``query``."""
        return self.res

    # -- range ------------------------------------------------------------------------------

    def range_query(self, X: Any, radius: float) -> None:
        """big-ann-benchmarks: every vector within ``radius`` (exact, pruned by metric
        bounds)."""
        from . import InvalidInput

        if self.index is None:
            raise InvalidInput("call fit() or load_index() before querying")
        threads = self._query_args.get("threads", 0)
        self._range = self.index.range(X, radius, threads=threads)

    def get_range_results(self) -> tuple:
        """``(lims, distances, ids)``, the order big-ann-benchmarks expects."""
        lims, ids, dists = self._range
        return lims, dists, ids

    # -- bookkeeping ------------------------------------------------------------------------

    def get_memory_usage(self) -> Optional[float]:
        """Resident set size in KiB (what ann-benchmarks records)."""
        try:
            import resource

            return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        except ImportError:
            return None

    def done(self) -> None:
        """Closes the index; removes it when it lives in the adapter's temporary directory."""
        self.index = None
        if self._own_dir:
            shutil.rmtree(os.path.dirname(self.index_dir), ignore_errors=True)

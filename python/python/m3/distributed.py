"""Sharded indexes on Ray (docs/DISTRIBUTED.md).

``build`` runs the staged build as Ray tasks: the model is trained by one task, each row
range is assigned by its own task, each shard is built from its runs by its own task (every
task retried from its inputs when it fails: every stage is idempotent and writes
crash-safely), then ``shards.m3`` is published last.
``Index`` opens a sharded index on a running Ray cluster: one actor per shard (each opening
its directory from local disk) and a router in the caller's process that sends each query
only to the shards that own one of its probed clusters, then merges the top k::

    import ray, m3.distributed as md
    ray.init()
    md.build("base.fbin", "sharded", shards=4, metric="l2")
    index = md.Index("sharded")
    ids, dists = index.search(queries, k=10)

Paths are local paths that every Ray node sees (one machine, or a shared file system).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _m3

__all__ = ["build", "Index", "ShardError"]

_Path = Union[str, "os.PathLike[str]"]

# The knobs of m3.Index.search that also decide where a query goes.
_ROUTING_KNOBS = ("nprobe", "qprobe", "edges", "hints", "rerank", "refine", "expand_rounds")


class ShardError(RuntimeError):
    """A shard did not answer (its actor died, or it did not answer in time)."""

    def __init__(self, shard: int, cause: BaseException) -> None:
        super().__init__(f"shard {shard} did not answer: {type(cause).__name__}: {cause}")
        self.shard = shard
        self.cause = cause


# Ray on Linux takes the machine's address as its node address and then listens on every
# interface, even with `_node_ip_address="127.0.0.1"`; with this variable off it runs as a
# single loopback node (its servers bind 127.0.0.1). It is read when Ray is first imported.
_RAY_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _ray() -> Any:
    if "ray" not in sys.modules and not os.environ.get("RAY_ADDRESS"):
        os.environ.setdefault(_RAY_LOOPBACK_ENV, "0")
    try:
        import ray
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("m3.distributed needs Ray: pip install 'ray[default]'") from e
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init()  # the cluster the caller named
        else:
            # A new local instance: loopback only, no dashboard.
            ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1")
    return ray


def _stderr_progress(stage: str, done: int, total: int) -> None:
    sys.stderr.write(f"m3.distributed.build: {stage} {done}/{total}\n")
    sys.stderr.flush()


def _build_task(base: str, out: str, metric: str, options: Dict[str, Any]) -> Dict[str, Any]:
    from m3 import _m3 as native

    return dict(native.build(base, out, metric, **options))


def _shard_task(
    index: str, out: str, shards: int, shard: int, seed: int, kill_once: Optional[str]
) -> Dict[str, Any]:
    from m3 import _m3 as native

    if kill_once is not None and not os.path.exists(kill_once):
        # Test hook: the first attempt dies mid-way, leaving the temporary directory a kill
        # during the publication leaves; the retry must clean it up and finish.
        open(kill_once, "w").close()
        stray = os.path.join(out, f"shard-{shard:03d}.tmp-{2**22 + 7}")
        os.makedirs(stray, exist_ok=True)
        with open(os.path.join(stray, "data.m3"), "wb") as f:
            f.write(b"half written")
        os._exit(1)
    return dict(native.write_shard(index, out, shards, shard, seed=seed))


def _publish_task(index: str, out: str, shards: int, seed: int) -> None:
    from m3 import _m3 as native

    native.publish_shards(index, out, shards, seed=seed)


def _wait(ray: Any, refs: List[Any], stage: str, progress: Optional[Callable]) -> List[Any]:
    """Results of `refs` in order, reporting each completion."""
    pending = list(refs)
    done = 0
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        done += len(ready)
        if progress is not None:
            progress(stage, done, len(refs))
    return ray.get(refs)


def _base_list(base_paths: Union[_Path, Sequence[_Path]]) -> List[str]:
    if isinstance(base_paths, (str, os.PathLike)):
        base_paths = [base_paths]
    if len(base_paths) == 0:
        raise _m3.InvalidInput("base_paths: no base file given")
    return [os.path.abspath(os.fspath(p)) for p in base_paths]


def _one_base(base_paths: Union[_Path, Sequence[_Path]]) -> str:
    bases = _base_list(base_paths)
    if len(bases) != 1:
        raise _m3.InvalidInput(
            f"base_paths: {len(bases)} files given; method='cut' reads one base file "
            "(the staged build takes several)"
        )
    return bases[0]


def _die_once(marker: Optional[str], stray: str) -> None:
    """Test hook: the first attempt of a task leaves what a kill mid-write leaves (`stray`)
    and dies; `marker` records that it ran."""
    if marker is None or os.path.exists(marker):
        return
    open(marker, "w").close()
    if stray.endswith("/"):
        os.makedirs(stray, exist_ok=True)
        stray = os.path.join(stray, "data.m3")
    with open(stray, "wb") as f:
        f.write(b"half written")
    os._exit(1)


def _train_stage(base: List[str], work: str, shards: int, metric: str, options: Dict[str, Any]):
    from m3 import _m3 as native

    return dict(native.stage_train(base, work, shards, metric, **options))


def _assign_stage(
    work: str, start: int, end: int, base: List[str], threads: int, kill: Optional[str]
) -> Dict[str, Any]:
    from m3 import _m3 as native

    stray = os.path.join(work, "runs", "shard-000", f"rows-{start}-{end}.run.tmp-{2**22 + 7}")
    if kill is not None:
        os.makedirs(os.path.dirname(stray), exist_ok=True)
    _die_once(kill, stray)
    return dict(native.stage_assign(work, start, end, base=base, threads=threads))


def _shard_stage(work: str, shard: int, base: List[str], threads: int, kill: Optional[str]):
    from m3 import _m3 as native

    _die_once(kill, os.path.join(work, "shards", f"shard-{shard:03d}.tmp-{2**22 + 7}/"))
    return dict(native.stage_shard(work, shard, base=base, threads=threads))


def _publish_stage(work: str, out: str) -> Dict[str, Any]:
    from m3 import _m3 as native

    return dict(native.stage_publish(work, out))


def row_ranges(rows: int, ranges: int) -> List[Tuple[int, int]]:
    """``ranges`` contiguous row ranges covering ``0..rows`` (sizes differ by at most one)."""
    ranges = max(1, min(ranges, rows))
    return [(rows * i // ranges, rows * (i + 1) // ranges) for i in range(ranges)]


def build(
    base_paths: Union[_Path, Sequence[_Path]],
    out: _Path,
    shards: int,
    *,
    metric: str = "l2",
    train_queries: Optional[_Path] = None,
    seed: int = 42,
    threads: int = 0,
    ram_budget_gb: float = 4.0,
    params: Optional[Dict[str, Any]] = None,
    max_retries: int = 3,
    ranges: int = 0,
    keep_work: bool = False,
    method: str = "staged",
    progress: Union[bool, Callable[[str, int, int], None]] = True,
    _kill_once: Sequence[Tuple[str, int, str]] = (),
    **cut_options: Any,
) -> Dict[str, Any]:
    """Builds a sharded index of ``shards`` shards at ``out`` with Ray tasks; returns a dict
    with each stage's summaries and wall time (``seconds``).

    The staged build (docs/DISTRIBUTED.md, "Stages"), one task per stage and part, with
    files between them in ``<out>.work`` (removed at the end unless ``keep_work``):
    ``train`` (one task: the model and the shard plan; ``threads`` CPUs, ``ram_budget_gb``
    of memory), ``assign`` (one task per row range, ``ranges`` of them, default one per
    shard, in parallel), ``shard`` (one task per shard, in parallel), ``publish`` (one task:
    ``shards.m3`` last). Every task declares its CPUs and memory, is retried up to
    ``max_retries`` times from its inputs (each stage writes crash-safely and the same bytes
    again), and ``progress(stage, done, total)`` is called as each finishes. The shards are
    the same bytes as the same stages run in one process. ``base_paths``: one base file or
    a list, read as one base whose rows are numbered by concatenation (a row range may span
    files; every file needs the first's dimension and element type). ``method="cut"``: the
    earlier path (the whole index built by one task, then cut into shards; one base file)."""
    if method == "cut":
        return _build_by_cutting(
            base_paths, out, shards, metric=metric, train_queries=train_queries, seed=seed,
            threads=threads, ram_budget_gb=ram_budget_gb, params=params,
            max_retries=max_retries, progress=progress, **cut_options,
        )
    if method != "staged":
        raise _m3.InvalidInput(f"method: {method!r} (staged or cut)")
    ray = _ray()
    base = _base_list(base_paths)
    out = os.path.abspath(os.fspath(out))
    work = out + ".work"
    report = progress if callable(progress) else (_stderr_progress if progress else None)
    kills = {(stage, i): marker for stage, i, marker in _kill_once}
    cpus = threads if threads > 0 else 1
    memory = int(ram_budget_gb * (1 << 30))
    heavy = dict(num_cpus=cpus, memory=memory, max_retries=max_retries)
    options: Dict[str, Any] = dict(
        train_queries=None if train_queries is None else os.fspath(train_queries),
        threads=threads, seed=seed, ram_budget_gb=ram_budget_gb, params=params,
    )
    times: Dict[str, float] = {}

    t = time.perf_counter()
    train = ray.remote(**heavy)(_train_stage)
    model = _wait(ray, [train.remote(base, work, shards, metric, options)], "train", report)[0]
    times["train"] = time.perf_counter() - t

    t = time.perf_counter()
    assign = ray.remote(**heavy)(_assign_stage)
    parts = row_ranges(int(model["rows"]), ranges if ranges > 0 else shards)
    refs = [
        assign.remote(work, a, b, base, threads, kills.get(("assign", i)))
        for i, (a, b) in enumerate(parts)
    ]
    assigned = _wait(ray, refs, "assign", report)
    times["assign"] = time.perf_counter() - t

    t = time.perf_counter()
    shard = ray.remote(**heavy)(_shard_stage)
    refs = [shard.remote(work, s, base, threads, kills.get(("shard", s))) for s in range(shards)]
    built = _wait(ray, refs, "shard", report)
    times["shard"] = time.perf_counter() - t

    t = time.perf_counter()
    publish = ray.remote(num_cpus=1, max_retries=max_retries)(_publish_stage)
    _wait(ray, [publish.remote(work, out)], "publish", report)
    times["publish"] = time.perf_counter() - t
    if not keep_work:
        shutil.rmtree(work)
    return {"train": model, "assign": assigned, "shards": built, "seconds": times}


def _build_by_cutting(
    base_paths: Union[_Path, Sequence[_Path]],
    out: _Path,
    shards: int,
    *,
    metric: str = "l2",
    train_queries: Optional[_Path] = None,
    seed: int = 42,
    threads: int = 0,
    ram_budget_gb: float = 4.0,
    params: Optional[Dict[str, Any]] = None,
    max_retries: int = 3,
    keep_unsharded: bool = False,
    progress: Union[bool, Callable[[str, int, int], None]] = True,
    _kill_shard_once: Optional[Tuple[int, str]] = None,
    **_: Any,
) -> Dict[str, Any]:
    """``build(..., method="cut")``: the whole index built by one task, then cut into
    shards by one task per shard."""
    ray = _ray()
    base = _one_base(base_paths)
    out = os.path.abspath(os.fspath(out))
    unsharded = out + ".unsharded"
    report = progress if callable(progress) else (_stderr_progress if progress else None)
    cpus = threads if threads > 0 else 1
    options: Dict[str, Any] = dict(
        train_queries=None if train_queries is None else os.fspath(train_queries),
        threads=threads,
        seed=seed,
        ram_budget_gb=ram_budget_gb,
        params=params,
    )
    memory = int(ram_budget_gb * (1 << 30))
    times: Dict[str, float] = {}

    t = time.perf_counter()
    task = ray.remote(num_cpus=cpus, memory=memory, max_retries=max_retries)(_build_task)
    summary = _wait(ray, [task.remote(base, unsharded, metric, options)], "build", report)[0]
    times["build"] = time.perf_counter() - t

    t = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    # A shard task holds the index's codes and one shard's: declare a bound from the files.
    codes = sum(
        os.path.getsize(os.path.join(unsharded, f))
        for f in ("pq.m3", "refine.m3", "hints.m3", "ids.m3")
        if os.path.exists(os.path.join(unsharded, f))
    )
    shard_task = ray.remote(num_cpus=1, memory=3 * codes + (256 << 20), max_retries=max_retries)(
        _shard_task
    )
    refs = []
    for s in range(shards):
        kill = None
        if _kill_shard_once is not None and _kill_shard_once[0] == s:
            kill = os.fspath(_kill_shard_once[1])
        refs.append(shard_task.remote(unsharded, out, shards, s, seed, kill))
    shard_summaries = _wait(ray, refs, "shard", report)
    times["shard"] = time.perf_counter() - t

    t = time.perf_counter()
    publish = ray.remote(num_cpus=1, max_retries=max_retries)(_publish_task)
    _wait(ray, [publish.remote(unsharded, out, shards, seed)], "publish", report)
    times["publish"] = time.perf_counter() - t
    if not keep_unsharded:
        shutil.rmtree(unsharded)
    return {"build": summary, "shards": shard_summaries, "seconds": times}


class _ShardActor:
    """One shard, opened from its directory on this node's disk."""

    def __init__(self, path: str, io: str) -> None:
        from m3 import _m3 as native

        self.index = native.Index(path, io)

    def search(self, queries: np.ndarray, k: int, knobs: Dict[str, Any]) -> Tuple[Any, Any]:
        return self.index.search(queries, k, **knobs)

    def range(self, queries: np.ndarray, radius: float) -> Tuple[Any, Any, Any]:
        return self.index.range(queries, radius)

    def info(self) -> Dict[str, Any]:
        return self.index.info()

    def pid(self) -> int:
        return os.getpid()


class Index:
    """A sharded index on Ray: the same ``search`` / ``range`` / ``info`` as ``m3.Index``.

    ``num_cpus``: what each shard actor reserves (default: 1, or an equal share of the
    cluster's CPUs when it has fewer than one per shard). ``on_shard_error``: ``"raise"`` (a shard that does not answer within ``timeout_s`` raises
    ``ShardError``) or ``"partial"`` (``search`` and ``range`` return one more array, a bool
    per query, True where a shard the query needed did not answer). Never silent."""

    def __init__(
        self,
        path: _Path,
        *,
        io: str = "auto",
        num_cpus: Optional[float] = None,
        on_shard_error: str = "raise",
        timeout_s: float = 60.0,
    ) -> None:
        if on_shard_error not in ("raise", "partial"):
            raise _m3.InvalidInput(
                f"on_shard_error must be 'raise' or 'partial', got {on_shard_error!r}"
            )
        ray = _ray()
        self._ray = ray
        self._path = os.path.abspath(os.fspath(path))
        self._router = _m3.ShardRouter(self._path, io)
        self.on_shard_error = on_shard_error
        self.timeout_s = timeout_s
        if num_cpus is None:
            # One CPU per shard where the cluster has them, else an equal share (the actors
            # must all fit, or the index never opens).
            cpus = float(ray.cluster_resources().get("CPU", 1.0))
            num_cpus = min(1.0, cpus / (self._router.n_shards + 1))
        actor = ray.remote(num_cpus=num_cpus, max_restarts=0, max_task_retries=0)(_ShardActor)
        self.actors = [
            actor.remote(os.fspath(self._router.shard_dir(s)), io)
            for s in range(self._router.n_shards)
        ]
        ray.get([a.pid.remote() for a in self.actors], timeout=timeout_s)
        #: Per query of the last ``search``: shards asked and payload bytes moved.
        self.last_stats: Dict[str, np.ndarray] = {}

    def _gather(self, calls: List[Tuple[int, np.ndarray, Any]], mode: str) -> Tuple[dict, set]:
        """Each call's answer by shard; failed shards (mode partial) in the set."""
        ray = self._ray
        answers, failed = {}, set()
        deadline = time.monotonic() + self.timeout_s
        for s, rows, ref in calls:
            try:
                answers[s] = ray.get(ref, timeout=max(0.0, deadline - time.monotonic()))
            except Exception as e:  # actor death, task error or timeout: never silent
                if isinstance(e, _m3.InvalidInput):
                    raise
                if mode == "raise":
                    raise ShardError(s, e) from e
                failed.add(s)
        return answers, failed

    def _merge(self, lists: List[List[Tuple[np.ndarray, np.ndarray]]], k: int) -> Tuple[Any, Any]:
        larger_is_better = self._router.metric != "l2"
        nq = len(lists)
        ids = np.full((nq, k), -1, dtype=np.int64)
        dists = np.full((nq, k), np.nan, dtype=np.float32)
        for i, parts in enumerate(lists):
            if not parts:
                continue
            pid = np.concatenate([p[0] for p in parts])
            pd = np.concatenate([p[1] for p in parts])
            keep = pid >= 0
            pid, pd = pid[keep], pd[keep]
            order = np.lexsort((pid, -pd if larger_is_better else pd))
            pid, pd = pid[order], pd[order]
            _, first = np.unique(pid, return_index=True)
            first.sort()
            pid, pd = pid[first][:k], pd[first][:k]
            ids[i, : len(pid)] = pid
            dists[i, : len(pd)] = pd
        return ids, dists

    def _ask(
        self, q: np.ndarray, routes: List[List[int]], call: Callable[[Any, np.ndarray], Any],
        mode: str,
    ) -> Tuple[Dict[int, Tuple[np.ndarray, Any]], np.ndarray]:
        """``call(actor, rows)`` on every shard some query's route names, with the rows of
        the queries that name it; each answering shard's (rows, answer), and a bool per query
        that is True where a shard of its route failed (mode partial)."""
        calls = []
        for s in range(len(self.actors)):
            rows = np.array([i for i, r in enumerate(routes) if s in r], dtype=np.int64)
            if len(rows):
                calls.append((s, rows, call(self.actors[s], rows)))
        answers, failed = self._gather(calls, mode)
        partial = np.zeros(q.shape[0], dtype=bool)
        got = {}
        for s, rows, _ in calls:
            if s in failed:
                partial[rows] = True
            else:
                got[s] = (rows, answers[s])
        return got, partial

    def _knn_round(
        self, q: np.ndarray, k: int, routes: List[List[int]], knobs: Dict[str, Any],
        mode: str, lists: List[list], moved: np.ndarray,
    ) -> np.ndarray:
        """One round of k-NN calls along ``routes``; answers appended to ``lists``."""
        got, partial = self._ask(
            q, routes, lambda a, rows: a.search.remote(q[rows], k, knobs), mode
        )
        for rows, (sid, sd) in got.values():
            for j, i in enumerate(rows):
                lists[i].append((sid[j], sd[j]))
                moved[i] += 4 * q.shape[1] + 64 + 8 * int((sid[j] >= 0).sum())
        return partial

    def search(
        self,
        queries: Any,
        k: int = 10,
        *,
        exact: bool = False,
        on_shard_error: Optional[str] = None,
        **knobs: Any,
    ) -> Tuple[np.ndarray, ...]:
        """k nearest neighbours of every row of ``queries``: ``(ids, distances)``, both
        ``(nq, k)`` (``(ids, distances, partial)`` with ``on_shard_error="partial"``).
        ``exact=True`` asks each query's shard of best bound first, then only the shards
        whose bound can beat the k-th distance it returned (``ShardRouter.exact_order``)."""
        mode = on_shard_error or self.on_shard_error
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        nq = q.shape[0]
        lists: List[list] = [[] for _ in range(nq)]
        moved = np.zeros(nq, dtype=np.int64)
        sub = dict(knobs, exact=exact)
        if exact:
            orders = self._router.exact_order(q)
            first = [[o[0][0]] if o else [] for o in orders]
            partial = self._knn_round(q, k, first, sub, mode, lists, moved)
            higher = self._router.metric != "l2"
            second = []
            for i, o in enumerate(orders):
                kth = np.inf
                if lists[i] and int((lists[i][0][0] >= 0).sum()) >= k:
                    kth = float(lists[i][0][1][k - 1]) * (-1.0 if higher else 1.0)
                # Bounds in internal units (smaller is better): a shard can beat the k-th
                # distance only if its bound is at most it.
                second.append([s for s, b in o[1:] if (-b if higher else b) <= kth])
            partial |= self._knn_round(q, k, second, sub, mode, lists, moved)
            routes = [f + r for f, r in zip(first, second)]
        else:
            routing = {n: knobs[n] for n in _ROUTING_KNOBS if n in knobs}
            routes = self._router.route(q, k, **routing)
            partial = self._knn_round(q, k, routes, sub, mode, lists, moved)
        self.last_stats = {
            "shards_touched": np.array([len(r) for r in routes], dtype=np.int64),
            "bytes_moved": moved,
        }
        ids, dists = self._merge(lists, k)
        return (ids, dists, partial) if mode == "partial" else (ids, dists)

    def range(
        self, queries: Any, radius: float, *, on_shard_error: Optional[str] = None
    ) -> Tuple[np.ndarray, ...]:
        """Every vector within ``radius`` of each query, from the shards with a cluster
        whose bound is within the radius (``ShardRouter.range_route``): faiss's
        ``(lims, ids, distances)`` (and ``partial`` with ``on_shard_error="partial"``)."""
        mode = on_shard_error or self.on_shard_error
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        nq = q.shape[0]
        routes = self._router.range_route(q, radius)
        got, partial = self._ask(q, routes, lambda a, rows: a.range.remote(q[rows], radius), mode)
        lists: List[list] = [[] for _ in range(nq)]
        for rows, (lims, sid, sd) in got.values():
            for j, i in enumerate(rows):
                lists[i].append((sid[lims[j] : lims[j + 1]], sd[lims[j] : lims[j + 1]]))
        self.last_stats = {
            "shards_touched": np.array([len(r) for r in routes], dtype=np.int64),
        }
        sizes = [sum(len(p[0]) for p in parts) for parts in lists]
        ids, dists = self._merge(lists, max(sizes + [1]))
        lims = np.zeros(nq + 1, dtype=np.int64)
        out_ids, out_d = [], []
        for i in range(nq):
            keep = ids[i] >= 0
            out_ids.append(ids[i][keep])
            out_d.append(dists[i][keep])
            lims[i + 1] = lims[i] + int(keep.sum())
        triple = (lims, np.concatenate(out_ids), np.concatenate(out_d).astype(np.float32))
        return triple + (partial,) if mode == "partial" else triple

    def info(self) -> Dict[str, Any]:
        """The shard table and every shard's ``m3 inspect --json``."""
        infos = self._ray.get([a.info.remote() for a in self.actors], timeout=self.timeout_s)
        return {
            "sharded": True,
            "path": self._path,
            "n_shards": len(self.actors),
            "n_vectors": len(self._router),
            "dim": self._router.dim,
            "metric": self._router.metric,
            "shards": infos,
        }

    def __len__(self) -> int:
        return len(self._router)

    @property
    def dim(self) -> int:
        return self._router.dim

    @property
    def metric(self) -> str:
        return self._router.metric

    @property
    def path(self) -> str:
        return self._path

    def close(self) -> None:
        """Stops the shard actors."""
        for a in self.actors:
            self._ray.kill(a)
        self.actors = []

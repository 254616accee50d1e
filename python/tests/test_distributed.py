"""m3.distributed on a local Ray cluster (loopback only, bounded in time): a sharded build as
Ray tasks (the staged build, and the earlier cut of a built index) gives the same files as
the same stages run in this process, answers as the unsharded index does, survives an assign,
shard or cut task killed on its first attempt, and a shard actor stopped during search gives
an error or a partial flag, never a silent answer."""

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import m3
from conftest import make_data, run_cli

# Before Ray is imported: a single loopback node whose servers bind 127.0.0.1 only (see
# m3.distributed._RAY_LOOPBACK_ENV).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ray = pytest.importorskip("ray")
import m3.distributed as md  # noqa: E402

SHARDS = 3
BUILD = dict(cluster_size=100)
SEED = 5


@pytest.fixture(scope="module")
def local_ray():
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        object_store_memory=80 * 1024 * 1024,
        log_to_driver=False,
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base, queries = make_data("float32", seed=3, n=4000)
    d = tmp_path_factory.mktemp("dist")
    np.save(d / "base.npy", base)
    return d, base, queries


def tree(root: Path):
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def recall(ids, truth):
    return np.mean([len(set(a) & set(t)) / len(t) for a, t in zip(ids, truth)])


def sharded_build(local_ray, data, name, **kw):
    d, _, _ = data
    out = d / name
    md.build(d / "base.npy", out, SHARDS, metric="l2", seed=SEED, threads=1,
             params=BUILD, progress=False, **kw)
    return out


def test_ray_build_equals_steps_in_one_process_and_answers_like_the_index(local_ray, data):
    d, base, queries = data
    out = sharded_build(local_ray, data, "ray", method="cut", keep_unsharded=True)
    # The same steps in this process, into another directory: the same bytes.
    here = d / "here"
    m3.build(d / "base.npy", d / "here.unsharded", "l2", threads=1, seed=SEED,
             ram_budget_gb=4.0, progress=False, **BUILD)
    for s in range(SHARDS):
        m3.write_shard(d / "here.unsharded", here, SHARDS, s, seed=SEED)
    m3.publish_shards(d / "here.unsharded", here, SHARDS, seed=SEED)
    assert tree(out) == tree(here)

    truth, _ = m3.gt(base, queries, k=10, metric="l2")
    single = m3.Index(str(out) + ".unsharded")
    ids1, d1 = single.search(queries, k=10, nprobe=4)
    index = md.Index(out, timeout_s=60)
    try:
        ids, dists = index.search(queries, k=10, nprobe=4)
        assert ids.shape == (len(queries), 10)
        assert recall(ids, truth) >= recall(ids1, truth) - 0.01
        touched = index.last_stats["shards_touched"]
        assert touched.min() >= 1 and touched.max() <= SHARDS
        exact_ids, _ = index.search(queries[:10], k=10, exact=True)
        assert (exact_ids == truth[:10]).all()
        radius = float(np.median(d1[:5, -1]))
        lims, rids, _ = index.range(queries[:5], radius=radius)
        lims1, rids1, _ = single.range(queries[:5], radius=radius)
        for i in range(5):
            assert set(rids[lims[i]:lims[i + 1]]) == set(rids1[lims1[i]:lims1[i + 1]])
        assert index.info()["n_shards"] == SHARDS and len(index) == len(base)
    finally:
        index.close()


def test_a_shard_task_killed_on_its_first_attempt_is_retried(local_ray, data, m3_cli):
    d, _, _ = data
    marker = d / "killed-once"
    out = sharded_build(local_ray, data, "retried", method="cut",
                        _kill_shard_once=(1, str(marker)))
    assert marker.exists(), "the first attempt ran and died"
    assert not list(out.glob("shard-001.tmp-*")), "the retry removed what the kill left"
    run_cli(m3_cli, "verify", out)


def test_a_stopped_shard_gives_an_error_or_a_partial_flag(local_ray, data):
    d, _, queries = data
    out = d / "ray"
    if not (out / "shards.m3").exists():
        sharded_build(local_ray, data, "ray")
    index = md.Index(out, timeout_s=30)
    try:
        routes = index._router.route(queries, 10, nprobe=4)
        victim = max(range(SHARDS), key=lambda s: sum(s in r for r in routes))
        ray.kill(index.actors[victim])
        with pytest.raises(md.ShardError) as e:
            index.search(queries, k=10, nprobe=4)
        assert e.value.shard == victim
        ids, _, partial = index.search(queries, k=10, nprobe=4, on_shard_error="partial")
        needed = np.array([victim in r for r in routes])
        assert (partial == needed).all() and needed.any()
        assert (ids[~needed] >= 0).all()
    finally:
        index.close()


def test_ray_staged_build_equals_the_stages_in_one_process_and_recalls_like_the_index(
        local_ray, data, m3_cli):
    d, base, queries = data
    seen = []
    out = d / "staged"
    result = md.build(d / "base.npy", out, SHARDS, metric="l2", seed=SEED, threads=1,
                      params=BUILD, ranges=3, progress=lambda *a: seen.append(a))
    assert [a for a in seen if a[0] == "assign"][-1] == ("assign", 3, 3)
    assert set(result["seconds"]) == {"train", "assign", "shard", "publish"}
    assert not (d / "staged.work").exists()
    # The same stages in this process (one row range, in another order): the same bytes.
    here, work = d / "staged-here", d / "staged-here.work"
    m3.stage_train(d / "base.npy", work, SHARDS, "l2", threads=1, seed=SEED,
                   ram_budget_gb=4.0, params=BUILD)
    m3.stage_assign(work, 0, len(base), threads=1)
    for s in reversed(range(SHARDS)):
        m3.stage_shard(work, s, threads=1)
    m3.stage_publish(work, here)
    assert tree(out) == tree(here)
    run_cli(m3_cli, "verify", out)

    truth, _ = m3.gt(base, queries, k=10, metric="l2")
    m3.build(d / "base.npy", d / "single", "l2", threads=1, seed=SEED, progress=False, **BUILD)
    ids1, _ = m3.Index(str(d / "single")).search(queries, k=10, nprobe=2)
    index = md.Index(out, timeout_s=60)
    try:
        ids, _ = index.search(queries, k=10, nprobe=2)
        assert recall(ids, truth) >= recall(ids1, truth) - 0.01
        exact_ids, _ = index.search(queries[:10], k=10, exact=True)
        assert (exact_ids == truth[:10]).all()
    finally:
        index.close()


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_exact_and_range_ask_the_shards_their_bounds_allow_and_answer_like_brute_force(
        local_ray, data, metric):
    d, base, queries = data
    out = d / f"bounds-{metric}"
    md.build(d / "base.npy", out, SHARDS, metric=metric, seed=SEED, threads=1, params=BUILD,
             progress=False)
    truth, tdist = m3.gt(base, queries, k=10, metric=metric)
    router = m3.ShardRouter(out)
    orders = router.exact_order(queries)
    assert all(sorted(s for s, _ in o) == sorted(set(s for s, _ in o)) for o in orders)
    index = md.Index(out, timeout_s=60)
    try:
        ids, dists = index.search(queries, k=10, exact=True)
        assert (ids == truth).all()
        asked = index.last_stats["shards_touched"]
        assert asked.min() >= 1 and asked.max() <= SHARDS
        # The brute-force range answer at each query's 10th distance, from the same routes.
        radius = float(np.median(tdist[:, -1]))
        lims, rids, _ = index.range(queries, radius=radius)
        routes = router.range_route(queries, radius)
        assert [len(r) for r in routes] == list(index.last_stats["shards_touched"])
        if metric == "l2":
            full = ((queries[:, None, :] - base[None, :, :]) ** 2).sum(-1)
            inside = full <= radius
        else:
            full = queries @ base.T
            inside = full >= radius
        border = np.abs(full - radius) <= 1e-4 * max(1.0, abs(radius))
        for i in range(len(queries)):
            got = set(rids[lims[i]:lims[i + 1]].tolist())
            sure = set(np.flatnonzero(inside[i] & ~border[i]).tolist())
            maybe = set(np.flatnonzero(inside[i] | border[i]).tolist())
            assert sure <= got <= maybe, i
        print(f"{metric}: shards asked per query, exact {asked.mean():.2f}, range "
              f"{np.mean([len(r) for r in routes]):.2f} of {SHARDS}")
    finally:
        index.close()


def test_several_base_files_build_the_shards_of_their_concatenation(local_ray, data):
    d, base, _ = data
    np.save(d / "part-a.npy", base[:1500])
    np.save(d / "part-b.npy", base[1500:])
    one, two = d / "from-one", d / "from-two"
    md.build(d / "base.npy", one, SHARDS, metric="l2", seed=SEED, threads=1, params=BUILD,
             ranges=1, progress=False)
    # Three row ranges over two files: the middle one spans their border.
    md.build([d / "part-a.npy", d / "part-b.npy"], two, SHARDS, metric="l2", seed=SEED,
             threads=1, params=BUILD, ranges=3, progress=False)
    assert tree(one) == tree(two)
    np.save(d / "narrow.npy", base[:10, :-1])
    with pytest.raises(m3.InvalidInput, match="narrow.npy"):
        m3.stage_train([d / "base.npy", d / "narrow.npy"], d / "bad.work", SHARDS, "l2")
    with pytest.raises(m3.InvalidInput, match="cut"):
        md.build([d / "part-a.npy", d / "part-b.npy"], d / "cut2", SHARDS, method="cut",
                 progress=False)


def test_a_killed_assign_task_and_a_killed_shard_task_are_retried(local_ray, data, m3_cli):
    d, _, _ = data
    kills = [("assign", 1, str(d / "assign-killed")), ("shard", 2, str(d / "shard-killed"))]
    out = d / "staged-retried"
    md.build(d / "base.npy", out, SHARDS, metric="l2", seed=SEED, threads=1, params=BUILD,
             ranges=3, progress=False, _kill_once=kills)
    assert all(os.path.exists(marker) for _, _, marker in kills), "first attempts ran and died"
    run_cli(m3_cli, "verify", out)
    if (d / "staged").exists():  # the previous test's build: the retries wrote its bytes
        assert tree(out) == tree(d / "staged")


def test_a_ray_started_by_m3_listens_on_loopback_only(monkeypatch):
    """Without a running Ray and without RAY_ADDRESS, m3.distributed starts a local instance
    bound to 127.0.0.1 (no dashboard), never on the machine's other addresses."""
    if ray.is_initialized():
        ray.shutdown()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_DISABLE_USAGE_STATS", "1")
    try:
        md._ray()
        nodes = ray.nodes()
        assert nodes and all(n["NodeManagerAddress"] == "127.0.0.1" for n in nodes), nodes
    finally:
        ray.shutdown()

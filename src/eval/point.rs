//! One measured point of a parameter sweep: recall, speed and I/O of a query set (the
//! numbers `m3 bench` and `m3 tune` print; DESIGN §7 names the fields).

use crate::data::{GroundTruth, MatrixView};
use crate::exact::recall_at_k;
use crate::search::{
    BatchOptions, Index, QueryStats, RerankDistance, SearchError, SearchParams, ShardedIndex,
    ShardedStats, results_table, search_batch, search_sharded_batch,
};
use crate::stats::percentile;

/// A measured point; serialises to the JSON of `m3 bench --json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchPoint {
    /// The system measured (`m3`).
    pub system: String,
    /// The knobs.
    pub params: SearchParams,
    /// Mean recall@k (ties with the k-th true distance count).
    pub recall_at_k: f64,
    /// The k of recall@k.
    pub k: usize,
    /// Queries per second over the whole batch.
    pub qps: f64,
    /// Worker threads.
    pub threads: usize,
    /// Queries in flight per worker thread (`--inflight`).
    pub inflight: usize,
    /// Median latency, microseconds.
    pub lat_p50_us: f64,
    /// 99th-percentile latency, microseconds.
    pub lat_p99_us: f64,
    /// Read requests per query.
    pub mean_ios: f64,
    /// Bytes read per query.
    pub mean_read_bytes: f64,
    /// I/O rounds per query.
    pub mean_io_rounds: f64,
    /// Exact distance computations per query.
    pub mean_dist_comps: f64,
    /// PQ codes scored per query.
    pub mean_pq_scored: f64,
    /// Clusters probed per query.
    pub mean_clusters: f64,
    /// Anchors scored per query while routing (coarse centres included).
    pub mean_anchors_scored: f64,
    /// The block reader (`io_uring` or `pread`).
    pub io_backend: String,
    /// Queries measured.
    pub queries: usize,
    /// Sharded index: shards asked per query (absent for one index).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_shards_touched: Option<f64>,
    /// Sharded index: payload bytes between router and shards per query.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_bytes_moved: Option<f64>,
}

/// Searches `queries` with `params` on `pool` (`options`: queries in flight per thread) and
/// measures the point against `gt`.
pub fn evaluate(
    index: &Index,
    queries: MatrixView<'_, f32>,
    gt: &GroundTruth,
    params: &SearchParams,
    pool: &rayon::ThreadPool,
    options: &BatchOptions,
) -> Result<BenchPoint, SearchError> {
    let res = search_batch(index, queries, params, pool, options)?;
    let k = params.k;
    let metric = index.metric();
    let lccmd = matches!(params.distance, RerankDistance::LcCmd { .. });
    let nq = res.results.len();
    let table = results_table(&res.results, params, metric)?;
    let dists = table.dists.as_ref().expect("results_table sets distances");
    // Ties are judged in the metric's units, which LC-CMD distances are not.
    let tie_dists = (!lccmd).then(|| dists.view());
    let recall = recall_at_k(table.ids.view(), tie_dists, gt, k, metric)?;
    let mean = |f: &dyn Fn(&QueryStats) -> u64| {
        res.stats.iter().map(f).sum::<u64>() as f64 / nq.max(1) as f64
    };
    Ok(BenchPoint {
        system: "m3".into(),
        params: params.clone(),
        recall_at_k: recall.mean,
        k,
        qps: nq as f64 / res.seconds,
        threads: pool.current_num_threads(),
        inflight: options.inflight_per_thread.max(1),
        lat_p50_us: percentile(&res.latencies_us, 50.0),
        lat_p99_us: percentile(&res.latencies_us, 99.0),
        mean_ios: mean(&|s| s.reads),
        mean_read_bytes: mean(&|s| s.bytes),
        mean_io_rounds: mean(&|s| s.io_rounds),
        mean_dist_comps: mean(&|s| s.dist_comps),
        mean_pq_scored: mean(&|s| s.pq_scored),
        mean_clusters: mean(&|s| s.clusters_probed),
        mean_anchors_scored: mean(&|s| s.anchors_scored),
        io_backend: index.reader_info().backend.to_string(),
        queries: nq,
        mean_shards_touched: None,
        mean_bytes_moved: None,
    })
}

/// [`evaluate`] on a sharded index with every shard local ([`search_sharded_batch`]: each
/// worker thread routes a query and asks its shards), with the shards touched and the bytes
/// moved per query; `exact` measures exact k-NN instead (the knobs are then unused).
pub fn evaluate_sharded(
    index: &ShardedIndex,
    queries: MatrixView<'_, f32>,
    gt: &GroundTruth,
    params: &SearchParams,
    exact: bool,
    pool: &rayon::ThreadPool,
) -> Result<BenchPoint, SearchError> {
    let k = params.k;
    let what = exact.then_some(crate::search::ExactQuery::Knn(k));
    let res = search_sharded_batch(index, queries, params, what, pool)?;
    let router = index.shard(0);
    let metric = router.metric();
    let nq = res.results.len();
    let table = results_table(&res.results, params, metric)?;
    let lccmd = matches!(params.distance, RerankDistance::LcCmd { .. });
    let tie_dists = table.dists.as_ref().filter(|_| !lccmd).map(|d| d.view());
    let recall = recall_at_k(table.ids.view(), tie_dists, gt, k, metric)?;
    let mean = |f: &dyn Fn(&ShardedStats) -> u64| {
        res.stats.iter().map(f).sum::<u64>() as f64 / nq.max(1) as f64
    };
    Ok(BenchPoint {
        system: if exact {
            "m3-sharded-exact"
        } else {
            "m3-sharded"
        }
        .into(),
        params: params.clone(),
        recall_at_k: recall.mean,
        k,
        qps: nq as f64 / res.seconds,
        threads: pool.current_num_threads(),
        inflight: 1,
        lat_p50_us: percentile(&res.latencies_us, 50.0),
        lat_p99_us: percentile(&res.latencies_us, 99.0),
        mean_ios: mean(&|s| s.query.reads),
        mean_read_bytes: mean(&|s| s.query.bytes),
        mean_io_rounds: mean(&|s| s.query.io_rounds),
        mean_dist_comps: mean(&|s| s.query.dist_comps),
        mean_pq_scored: mean(&|s| s.query.pq_scored),
        mean_clusters: mean(&|s| s.query.clusters_probed),
        mean_anchors_scored: mean(&|s| s.query.anchors_scored),
        io_backend: router.reader_info().backend.to_string(),
        queries: nq,
        mean_shards_touched: Some(mean(&|s| s.shards_touched)),
        mean_bytes_moved: Some(mean(&|s| s.bytes_moved)),
    })
}

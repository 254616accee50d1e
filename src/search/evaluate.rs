//! One measured point of a parameter sweep: recall, speed and I/O of a query set (the
//! numbers `m3 bench` and `m3 tune` print; DESIGN §7 names the fields).

use super::{BatchOptions, Index, SearchError, SearchParams, search_batch};
use crate::data::{GroundTruth, Matrix, MatrixView};
use crate::exact::recall_at_k;

/// A measured point; serialises to the JSON of `m3 bench --json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchPoint {
    pub system: String,
    pub params: SearchParams,
    pub recall_at_k: f64,
    pub k: usize,
    pub qps: f64,
    pub threads: usize,
    /// Queries in flight per worker thread (`--inflight`).
    pub inflight: usize,
    pub lat_p50_us: f64,
    pub lat_p99_us: f64,
    pub mean_ios: f64,
    pub mean_read_bytes: f64,
    pub mean_io_rounds: f64,
    pub mean_dist_comps: f64,
    pub mean_pq_scored: f64,
    pub mean_clusters: f64,
    pub io_backend: String,
    pub queries: usize,
}

/// Percentile (0..=100) by nearest rank of unsorted values.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
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
    let lccmd = matches!(params.distance, super::RerankDistance::LcCmd { .. });
    let natural = |d: f32| if lccmd { d } else { metric.to_natural(d) };
    let nq = res.results.len();
    let mut ids = Vec::with_capacity(nq * k);
    let mut dists = Vec::with_capacity(nq * k);
    for r in &res.results {
        for j in 0..k {
            let n = r.get(j).copied();
            ids.push(n.map_or(u32::MAX, |n| n.id));
            dists.push(n.map_or(f32::NAN, |n| natural(n.dist)));
        }
    }
    let ids = Matrix::from_vec(ids, k)?;
    let dists = Matrix::from_vec(dists, k)?;
    // Ties are judged in the metric's units, which LC-CMD distances are not.
    let tie_dists = (!lccmd).then(|| dists.view());
    let recall = recall_at_k(ids.view(), tie_dists, gt, k, metric)?;
    let mean = |f: &dyn Fn(&super::QueryStats) -> u64| {
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
        io_backend: index.reader_info().backend.to_string(),
        queries: nq,
    })
}

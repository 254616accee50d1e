//! One measured point of a parameter sweep: recall, speed and I/O of a query set (the
//! numbers `m3 bench` and `m3 tune` print; DESIGN §7 names the fields).

use super::{BatchOptions, Index, SearchError, SearchParams, search_batch};
use crate::data::{GroundTruth, Matrix, MatrixView};
use crate::distance::Metric;
use crate::exact::{Neighbor, recall_at_k};

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

/// Results as a table of ids and distances, `k` per query (big-ann layout): natural units
/// of the metric, or LC-CMD's D² when the rerank used it. A query with fewer than `k` results
/// (only possible when the probed clusters hold fewer than `k` vectors; the engine itself never
/// pads) is padded with id `u32::MAX` and distance NaN, the fixed-width files' mark of a missing
/// result.
pub fn results_table(
    results: &[Vec<Neighbor>],
    params: &SearchParams,
    metric: Metric,
) -> Result<GroundTruth, SearchError> {
    let k = params.k;
    let lccmd = matches!(params.distance, super::RerankDistance::LcCmd { .. });
    let mut ids = Vec::with_capacity(results.len() * k);
    let mut dists = Vec::with_capacity(results.len() * k);
    for r in results {
        for j in 0..k {
            let n = r.get(j).copied();
            ids.push(n.map_or(u32::MAX, |n| n.id));
            dists.push(n.map_or(f32::NAN, |n| {
                if lccmd {
                    n.dist
                } else {
                    metric.to_natural(n.dist)
                }
            }));
        }
    }
    Ok(GroundTruth {
        ids: Matrix::from_vec(ids, k)?,
        dists: Some(Matrix::from_vec(dists, k)?),
    })
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
    let nq = res.results.len();
    let table = results_table(&res.results, params, metric)?;
    let dists = table.dists.as_ref().expect("results_table sets distances");
    // Ties are judged in the metric's units, which LC-CMD distances are not.
    let tie_dists = (!lccmd).then(|| dists.view());
    let recall = recall_at_k(table.ids.view(), tie_dists, gt, k, metric)?;
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
        mean_anchors_scored: mean(&|s| s.anchors_scored),
        io_backend: index.reader_info().backend.to_string(),
        queries: nq,
    })
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn search_percentile_by_nearest_rank() {
        assert_eq!(percentile(&[], 50.0), 0.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        let v: Vec<f64> = (1..=101).rev().map(f64::from).collect(); // unsorted
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 50.0), 51.0);
        assert_eq!(percentile(&v, 99.0), 100.0);
        assert_eq!(percentile(&v, 100.0), 101.0);
        // Out-of-range p is clamped to the largest value, not a panic.
        assert_eq!(percentile(&v, 150.0), 101.0);
    }
}

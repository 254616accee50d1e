//! Tuning: the cheapest knob setting that reaches a recall target (`m3 tune`).
//!
//! For each setting of the secondary knobs (rerank, query anchors, hints, rounds), a search
//! over `nprobe` (recall rises with it: doubling from 1, then bisecting) finds the smallest
//! value reaching the target; the setting with the highest measured QPS wins. Measured on the
//! given queries, so hold out a query set that resembles production traffic.

use super::{BenchPoint, QuerySet, evaluate};
use crate::data::GroundTruth;
use crate::search::{BatchOptions, Index, SearchError, SearchParams};

/// What to tune for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TuneParams {
    /// Results per query.
    pub k: usize,
    /// recall@k to reach.
    pub target_recall: f64,
    /// Largest nprobe tried (capped at the index's cluster count).
    pub max_nprobe: usize,
}

impl TuneParams {
    /// The largest nprobe tried on `index`: `max_nprobe`, at most the clusters, at least 1.
    pub fn max_nprobe_for(&self, index: &Index) -> usize {
        self.max_nprobe.min(index.n_clusters()).max(1)
    }

    /// The secondary settings tried, in order: `(rerank, qprobe, hints, expand_rounds)`.
    /// With hints (`hints.m3`) the training queries' answers carry OOD recall and query
    /// anchors add little for their cost (docs/decisions/0007): fewer qprobe values, two hint
    /// counts.
    pub fn grid(&self, index: &Index) -> Vec<(usize, usize, usize, usize)> {
        let k = self.k;
        let (qprobes, hint_counts): (Vec<usize>, Vec<usize>) =
            match (index.n_query_anchors() > 0, index.n_hint_queries() > 0) {
                (_, true) => (vec![0, 4], vec![16, 32]),
                (true, false) => (vec![0, 4, 8], vec![0]),
                (false, false) => (vec![0], vec![0]),
            };
        let mut grid = Vec::new();
        for rerank in [2 * k.max(10), 3 * k.max(10), 5 * k.max(10)] {
            for &qprobe in &qprobes {
                for &hints in &hint_counts {
                    for rounds in [0usize, 1] {
                        grid.push((rerank, qprobe, hints, rounds));
                    }
                }
            }
        }
        grid
    }
}

/// Tunes `index` on `queries` against `gt` (see the module doc): every measured point is
/// passed to `on_point` as it is measured; returns the fastest point that reaches the
/// target, `None` when no setting does up to [`TuneParams::max_nprobe_for`].
pub fn tune(
    index: &Index,
    queries: &QuerySet,
    gt: &GroundTruth,
    params: &TuneParams,
    pool: &rayon::ThreadPool,
    options: &BatchOptions,
    mut on_point: impl FnMut(&BenchPoint),
) -> Result<Option<BenchPoint>, SearchError> {
    let max_nprobe = params.max_nprobe_for(index);
    let target = params.target_recall;
    let mut best: Option<BenchPoint> = None;
    for (rerank, qprobe, hints, rounds) in params.grid(index) {
        let mut p = SearchParams::new(params.k);
        p.block_weights = queries.block_weights.clone();
        p.rerank = rerank;
        p.qprobe = qprobe;
        p.hints = hints;
        p.expand_rounds = rounds;
        let mut eval = |nprobe: usize| -> Result<BenchPoint, SearchError> {
            p.nprobe = nprobe;
            let point = evaluate(index, queries.view(), gt, &p, pool, options)?;
            on_point(&point);
            Ok(point)
        };
        // Smallest nprobe reaching the target: double, then bisect.
        let (mut lo, mut hi) = (0usize, 1usize);
        let mut at_hi = eval(hi)?;
        while at_hi.recall_at_k < target && hi < max_nprobe {
            lo = hi;
            hi = (hi * 2).min(max_nprobe);
            at_hi = eval(hi)?;
        }
        if at_hi.recall_at_k < target {
            continue;
        }
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            let at_mid = eval(mid)?;
            if at_mid.recall_at_k >= target {
                hi = mid;
                at_hi = at_mid;
            } else {
                lo = mid;
            }
        }
        if best.as_ref().is_none_or(|b| at_hi.qps > b.qps) {
            best = Some(at_hi);
        }
    }
    Ok(best)
}

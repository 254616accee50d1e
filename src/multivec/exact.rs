//! The weighted multi-vector ground truth by brute force (`m3 gt --block …`).
//!
//! With `t(v)_b = sqrt(w_b) / σ_b · v_b` (block b normalised first under cosine), the weighted
//! distance of [`super::scale`] is the plain squared L2 distance (l2) or inner product (ip,
//! cosine) of `t(q)` and `t(x)`, so the exact search of [`crate::exact`] runs unchanged on
//! transformed chunks, and its distances are the weighted distance in natural units.

use super::scale::{block_spreads, normalize_blocks, scale_blocks, scale_row};
use super::{BlockError, BlockFiles, BlockQueries};
use crate::data::Matrix;
use crate::distance::Metric;
use crate::exact::{ExactSearch, Neighbor};
use crate::stats::Welford;

/// Rows per streamed chunk of the statistics pass (the build's scan uses the same).
const STATS_CHUNK_ROWS: usize = 1 << 14;

/// `σ_b` of every block of `base` (definition in [`super::scale`]), by one streaming pass
/// (none under cosine, where σ_b = 1). Equal, bit for bit, to the spreads a build of the same
/// files stores in `blocks.m3`.
pub fn base_spreads(base: &BlockFiles, metric: Metric) -> Result<Vec<f32>, BlockError> {
    let layout = base.layout();
    if metric == Metric::Cosine {
        return Ok(vec![1.0; layout.len()]);
    }
    let mut w = Welford::new(base.dim());
    for item in base.chunks_f32(STATS_CHUNK_ROWS) {
        let (_, chunk) = item?;
        w.add_rows(chunk.view());
    }
    Ok(block_spreads(layout, metric, &w.variance()))
}

/// What [`weighted_exact_knn`] computes.
#[derive(Debug, Clone, Copy)]
pub struct WeightedKnnParams<'a> {
    /// One weight per block of the base (blocks absent from the queries count as 0).
    pub weights: &'a [f32],
    /// σ_b per block ([`base_spreads`]).
    pub spreads: &'a [f32],
    /// The metric of every block.
    pub metric: Metric,
    /// Neighbours per query.
    pub k: usize,
    /// Base rows per streamed chunk.
    pub chunk_rows: usize,
}

/// Exact top-`k` of every query under the weighted distance with block `weights` (one per
/// block of `base`; blocks absent from `queries` count as 0) and spreads. Distances in
/// internal units (smaller is better; [`Metric::to_natural`] of [`internal_metric`] gives the
/// natural ones). Runs on the current rayon pool; `progress` gets base rows done.
pub fn weighted_exact_knn(
    base: &BlockFiles,
    queries: &BlockQueries,
    params: &WeightedKnnParams<'_>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<Vec<Neighbor>>, BlockError> {
    let WeightedKnnParams {
        weights,
        spreads,
        metric,
        k,
        chunk_rows,
    } = *params;
    let layout = base.layout();
    if weights.len() != layout.len() || spreads.len() != layout.len() {
        return Err(BlockError::NoBlocks("one weight and one spread per block"));
    }
    for (blk, &w) in layout.blocks().iter().zip(weights) {
        super::check_weight(&blk.name, w, false)?;
    }
    crate::exact::check_k(k, base.rows())?;
    let factors: Vec<f32> = (0..layout.len())
        .map(|b| {
            if queries.present[b] {
                weights[b].sqrt() / spreads[b]
            } else {
                0.0
            }
        })
        .collect();
    if factors.iter().all(|&f| f == 0.0) {
        return Err(BlockError::NoBlocks(
            "a query needs at least one given block with a positive weight",
        ));
    }
    let mut q = queries.rows.clone();
    for i in 0..q.rows() {
        let row = q.row_mut(i);
        for (b, blk) in layout.blocks().iter().enumerate() {
            let part = &mut row[blk.range()];
            if metric == Metric::Cosine && factors[b] > 0.0 {
                let n = crate::distance::dot(part, part).sqrt();
                if n == 0.0 {
                    return Err(BlockError::ZeroQueryBlock {
                        query: i,
                        block: blk.name.clone(),
                    });
                }
                part.iter_mut().for_each(|v| *v /= n);
            }
        }
        scale_row(layout, row, &factors);
    }
    let inner = internal_metric(metric);
    let mut search = ExactSearch::new(q.view(), k, inner)?;
    for item in base.chunks_f32(chunk_rows.max(1)) {
        let (first, mut chunk) = item?;
        prepare_base_chunk(base, metric, first, &mut chunk, &factors)?;
        search.add_chunk(first, &mut chunk)?;
        progress(first + chunk.rows() as u64);
    }
    Ok(search.finish())
}

/// The single-vector metric the transformed search runs with: L2 for l2, inner product for
/// ip and cosine (blocks are normalised separately).
pub fn internal_metric(metric: Metric) -> Metric {
    match metric {
        Metric::L2 => Metric::L2,
        _ => Metric::InnerProduct,
    }
}

fn prepare_base_chunk(
    base: &BlockFiles,
    metric: Metric,
    first: u64,
    chunk: &mut Matrix<f32>,
    factors: &[f32],
) -> Result<(), BlockError> {
    if metric == Metric::Cosine {
        normalize_blocks(base.layout(), chunk, first, &|b| base.path(b).to_path_buf())?;
    }
    scale_blocks(base.layout(), chunk, factors);
    Ok(())
}

//! Search results as a fixed-width table (what `m3 search --out` writes).

use super::{RerankDistance, SearchError, SearchParams};
use crate::data::{GroundTruth, Matrix};
use crate::distance::Metric;
use crate::exact::Neighbor;

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
    let lccmd = matches!(params.distance, RerankDistance::LcCmd { .. });
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

//! recall@k against exact ground truth, fair to ties.
//!
//! recall@k = |returned top-k ∩ true top-k| / k, averaged over queries, where a returned id
//! that is not in the true top-k still counts as a hit when its distance ties the k-th true
//! distance: when several base rows share the k-th distance, the ground truth could have
//! listed any of them. Ties are judged in natural units with a relative tolerance of
//! [`TIE_REL_TOL`], because the ground truth and the engine may sum the same distance in a
//! different order. Hits per query never exceed k.

use std::collections::HashSet;

use crate::data::{DataError, GroundTruth, MatrixView};
use crate::distance::Metric;

/// Relative tolerance under which two distances are a tie (a few f32 ulps of reordered sums).
pub const TIE_REL_TOL: f32 = 1e-5;

/// Recall of a result table against ground truth.
#[derive(Debug, Clone, PartialEq)]
pub struct Recall {
    /// The k of recall@k.
    pub k: usize,
    /// Mean over queries, in `[0, 1]`.
    pub mean: f64,
    /// Per-query hits (0..=k).
    pub hits: Vec<u32>,
}

/// Returns whether `value` is at least as good as `kth` (natural units), up to ties.
fn within_kth(metric: Metric, value: f32, kth: f32) -> bool {
    let tol = TIE_REL_TOL * kth.abs().max(value.abs()).max(f32::MIN_POSITIVE);
    if metric.higher_is_better() {
        value >= kth - tol
    } else {
        value <= kth + tol
    }
}

/// recall@k of `ids` (queries × ≥k, best first) with their natural-unit `dists` (optional;
/// without them ties cannot be credited) against `gt` (queries × ≥k).
pub fn recall_at_k(
    ids: MatrixView<'_, u32>,
    dists: Option<MatrixView<'_, f32>>,
    gt: &GroundTruth,
    k: usize,
    metric: Metric,
) -> Result<Recall, DataError> {
    if k == 0 {
        return Err(DataError::KZero);
    }
    if ids.rows() != gt.queries() {
        return Err(DataError::Param(format!(
            "results have {} queries, ground truth has {}",
            ids.rows(),
            gt.queries()
        )));
    }
    if ids.dim() < k || gt.k() < k {
        return Err(DataError::Param(format!(
            "recall@{k} needs k columns: results have {}, ground truth has {}",
            ids.dim(),
            gt.k()
        )));
    }
    if let Some(d) = dists
        && (d.rows() != ids.rows() || d.dim() != ids.dim())
    {
        return Err(DataError::Param(
            "result distances and ids differ in shape".into(),
        ));
    }
    let mut hits = Vec::with_capacity(ids.rows());
    let mut truth: HashSet<u32> = HashSet::with_capacity(k);
    for q in 0..ids.rows() {
        truth.clear();
        truth.extend(&gt.ids.row(q)[..k]);
        let kth = gt.dists.as_ref().map(|d| d.row(q)[k - 1]);
        let mut seen: HashSet<u32> = HashSet::with_capacity(k);
        let mut h = 0u32;
        for (j, &id) in ids.row(q)[..k].iter().enumerate() {
            if !seen.insert(id) {
                continue; // a duplicated id is one answer
            }
            let tie = match (kth, dists) {
                (Some(kth), Some(d)) => within_kth(metric, d.row(q)[j], kth),
                _ => false,
            };
            if truth.contains(&id) || tie {
                h += 1;
            }
        }
        hits.push(h.min(k as u32));
    }
    let mean = if hits.is_empty() {
        0.0
    } else {
        hits.iter().map(|&h| h as f64).sum::<f64>() / (hits.len() as f64 * k as f64)
    };
    Ok(Recall { k, mean, hits })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Matrix;

    fn gt(ids: Vec<u32>, dists: Vec<f32>, k: usize) -> GroundTruth {
        GroundTruth {
            ids: Matrix::from_vec(ids, k).unwrap(),
            dists: Some(Matrix::from_vec(dists, k).unwrap()),
        }
    }

    #[test]
    fn exact_match_is_one_and_disjoint_is_zero() {
        let g = gt(vec![1, 2, 3], vec![0.1, 0.2, 0.3], 3);
        let ids = [1u32, 2, 3];
        let r = recall_at_k(MatrixView::new(&ids, 3).unwrap(), None, &g, 3, Metric::L2).unwrap();
        assert_eq!(r.mean, 1.0);
        let ids = [7u32, 8, 9];
        let d = [0.5f32, 0.6, 0.7];
        let r = recall_at_k(
            MatrixView::new(&ids, 3).unwrap(),
            Some(MatrixView::new(&d, 3).unwrap()),
            &g,
            3,
            Metric::L2,
        )
        .unwrap();
        assert_eq!(r.mean, 0.0);
    }

    #[test]
    fn a_tie_with_the_kth_distance_counts() {
        // True top-2 is {1, 2} with the 2nd distance 0.2; id 5 also sits at 0.2.
        let g = gt(vec![1, 2], vec![0.1, 0.2], 2);
        let ids = [1u32, 5];
        let d = [0.1f32, 0.2];
        let r = recall_at_k(
            MatrixView::new(&ids, 2).unwrap(),
            Some(MatrixView::new(&d, 2).unwrap()),
            &g,
            2,
            Metric::L2,
        )
        .unwrap();
        assert_eq!(r.mean, 1.0);
        // Without distances the tie cannot be credited.
        let r = recall_at_k(MatrixView::new(&ids, 2).unwrap(), None, &g, 2, Metric::L2).unwrap();
        assert_eq!(r.mean, 0.5);
        // Under ip, larger is better: 0.25 > kth 0.2 is not a "tie" for L2 but is for IP.
        let g = gt(vec![1, 2], vec![0.9, 0.2], 2);
        let d = [0.9f32, 0.2];
        let r = recall_at_k(
            MatrixView::new(&ids, 2).unwrap(),
            Some(MatrixView::new(&d, 2).unwrap()),
            &g,
            2,
            Metric::InnerProduct,
        )
        .unwrap();
        assert_eq!(r.mean, 1.0);
        let d = [0.9f32, 0.19];
        let r = recall_at_k(
            MatrixView::new(&ids, 2).unwrap(),
            Some(MatrixView::new(&d, 2).unwrap()),
            &g,
            2,
            Metric::InnerProduct,
        )
        .unwrap();
        assert_eq!(r.mean, 0.5);
    }

    #[test]
    fn duplicates_do_not_inflate() {
        let g = gt(vec![1, 2], vec![0.1, 0.2], 2);
        let ids = [1u32, 1];
        let d = [0.1f32, 0.1];
        let r = recall_at_k(
            MatrixView::new(&ids, 2).unwrap(),
            Some(MatrixView::new(&d, 2).unwrap()),
            &g,
            2,
            Metric::L2,
        )
        .unwrap();
        assert_eq!(r.mean, 0.5);
    }

    #[test]
    fn shape_errors() {
        let g = gt(vec![1, 2], vec![0.1, 0.2], 2);
        let ids = [1u32, 2, 3, 4];
        assert!(recall_at_k(MatrixView::new(&ids, 2).unwrap(), None, &g, 2, Metric::L2).is_err());
        assert!(
            recall_at_k(
                MatrixView::new(&ids[..2], 2).unwrap(),
                None,
                &g,
                3,
                Metric::L2
            )
            .is_err()
        );
        assert!(
            recall_at_k(
                MatrixView::new(&ids[..2], 2).unwrap(),
                None,
                &g,
                0,
                Metric::L2
            )
            .is_err()
        );
    }
}

//! Exact k nearest neighbours of every row among the other rows of one matrix (a cluster or a
//! sample), by blocked matrix products.
//!
//! A block of rows is scored against all rows with one product, `|x|² + |y|² − 2 x·y`, which
//! selects the k best; their distances are then recomputed with the direct kernel, so the
//! returned distances are exact kernel values (the selection itself can differ from the exact
//! one only among candidates whose distances agree to within the expanded form's rounding).

use rayon::prelude::*;

use crate::data::MatrixView;
use crate::distance;
use crate::linalg;
use crate::neighbor::{Neighbor, TopK};

/// Rows per matrix-product block: 128 × 5,000 rows × 4 B = 2.5 MB of scratch for a large cluster.
const BLOCK_ROWS: usize = 128;

/// For every row i: up to k rows j with `original_ids[j] != original_ids[i]` (so never i
/// itself nor another copy of the same vector), by squared L2, nearest first, ties by index.
/// `parallel` spreads the blocks over the current rayon pool; the result does not depend on it.
pub(crate) fn knn_within(
    vectors: MatrixView<'_, f32>,
    original_ids: &[u32],
    k: usize,
    parallel: bool,
) -> Vec<Vec<Neighbor>> {
    let n = vectors.rows();
    assert_eq!(original_ids.len(), n, "knn_within: one original id per row");
    if n == 0 || k == 0 {
        return vec![Vec::new(); n];
    }
    let norms = linalg::row_norms_sq(vectors);
    let block = |start: usize| {
        let mut scratch = Vec::new();
        knn_block(vectors, original_ids, &norms, k, start, &mut scratch)
    };
    let starts: Vec<usize> = (0..n).step_by(BLOCK_ROWS).collect();
    let blocks: Vec<Vec<Vec<Neighbor>>> = if parallel {
        starts.into_par_iter().map(block).collect()
    } else {
        starts.into_iter().map(block).collect()
    };
    blocks.into_iter().flatten().collect()
}

fn knn_block(
    vectors: MatrixView<'_, f32>,
    original_ids: &[u32],
    norms: &[f32],
    k: usize,
    start: usize,
    scratch: &mut Vec<f32>,
) -> Vec<Vec<Neighbor>> {
    let n = vectors.rows();
    let end = (start + BLOCK_ROWS).min(n);
    linalg::dot_products(vectors.slice_rows(start, end), vectors, scratch);
    (start..end)
        .map(|i| {
            let dots = &scratch[(i - start) * n..(i - start + 1) * n];
            let mut top = TopK::new(k);
            for (j, &dot) in dots.iter().enumerate() {
                if original_ids[j] == original_ids[i] {
                    continue;
                }
                let dist = (norms[i] + norms[j] - 2.0 * dot).max(0.0);
                if dist <= top.threshold() {
                    top.push(Neighbor { id: j as u32, dist });
                }
            }
            let mut found = top.into_sorted();
            let row = vectors.row(i);
            for nb in &mut found {
                nb.dist = distance::l2_sq(row, vectors.row(nb.id as usize));
            }
            found.sort_by(Neighbor::cmp_total);
            found
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Matrix;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn matches_brute_force_and_skips_copies() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (n, dim, k) = (300, 7, 10);
        let mut data: Vec<f32> = (0..n * dim).map(|_| rng.random_range(-1.0..1.0)).collect();
        // Rows 5 and 6 are copies of row 4 (same original id); row 7 is a distinct duplicate.
        let row4: Vec<f32> = data[4 * dim..5 * dim].to_vec();
        for r in [5, 6, 7] {
            data[r * dim..(r + 1) * dim].copy_from_slice(&row4);
        }
        let m = Matrix::from_vec(data, dim).unwrap();
        let mut ids: Vec<u32> = (0..n as u32).collect();
        ids[5] = 4;
        ids[6] = 4;
        let got = knn_within(m.view(), &ids, k, false);
        assert_eq!(got, knn_within(m.view(), &ids, k, true));
        for i in 0..n {
            let mut all: Vec<Neighbor> = (0..n)
                .filter(|&j| ids[j] != ids[i])
                .map(|j| Neighbor {
                    id: j as u32,
                    dist: distance::l2_sq(m.row(i), m.row(j)),
                })
                .collect();
            all.sort_by(Neighbor::cmp_total);
            all.truncate(k);
            assert_eq!(got[i], all, "row {i}");
        }
        assert!(got[4].iter().all(|nb| ![4, 5, 6].contains(&nb.id)));
        assert_eq!(got[4][0], Neighbor { id: 7, dist: 0.0 });
    }
}

//! The `t` nearest centroids of many rows at once (one matrix product per block of rows):
//! the primitive behind balanced assignment, spilling and routing edges.

use rayon::prelude::*;

use crate::data::MatrixView;
use crate::linalg;

/// For every row of `data`, the ids and squared L2 distances of its `t` nearest centroids,
/// nearest first (ties to the lower id): row `i` owns `ids[i·t..(i+1)·t]`. `t` is capped at
/// the number of centroids. Runs on the current rayon pool; deterministic.
pub fn nearest_centroids(
    data: MatrixView<'_, f32>,
    centroids: MatrixView<'_, f32>,
    t: usize,
) -> (Vec<u32>, Vec<f32>) {
    assert_eq!(
        data.dim(),
        centroids.dim(),
        "nearest_centroids: dimension mismatch"
    );
    let k = centroids.rows();
    let t = t.min(k).max(1);
    let c_norms = linalg::row_norms_sq(centroids);
    let n = data.rows();
    let mut ids = vec![0u32; n * t];
    let mut dists = vec![0f32; n * t];
    const BLOCK: usize = 512;
    ids.par_chunks_mut(BLOCK * t)
        .zip(dists.par_chunks_mut(BLOCK * t))
        .enumerate()
        .for_each(|(b, (ids, dists))| {
            let start = b * BLOCK;
            let rows = ids.len() / t;
            let block = data.slice_rows(start, start + rows);
            let x_norms = linalg::row_norms_sq(block);
            let mut dots = Vec::new();
            linalg::dot_products(block, centroids, &mut dots);
            // A sorted top-t list with a threshold: O(k) compares per row for small t.
            let mut best: Vec<(f32, u32)> = Vec::with_capacity(t + 1);
            for i in 0..rows {
                best.clear();
                let row = &dots[i * k..(i + 1) * k];
                let xn = x_norms[i];
                let mut worst = f32::INFINITY;
                for (j, (&d, &cn)) in row.iter().zip(&c_norms).enumerate() {
                    let dist = (xn + cn - 2.0 * d).max(0.0);
                    if best.len() == t && dist >= worst {
                        continue; // ties keep the lower id, which came first
                    }
                    let pos = best.partition_point(|e| e.0 <= dist);
                    best.insert(pos, (dist, j as u32));
                    if best.len() > t {
                        best.pop();
                    }
                    if best.len() == t {
                        worst = best[t - 1].0;
                    }
                }
                for (j, &(d, c)) in best.iter().enumerate() {
                    ids[i * t + j] = c;
                    dists[i * t + j] = d;
                }
            }
        });
    (ids, dists)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_direct_sort() {
        let data: Vec<f32> = (0..40 * 3)
            .map(|i| ((i * 37) % 101) as f32 / 10.0)
            .collect();
        let cents: Vec<f32> = (0..7 * 3).map(|i| ((i * 53) % 97) as f32 / 10.0).collect();
        let dv = MatrixView::new(&data, 3).unwrap();
        let cv = MatrixView::new(&cents, 3).unwrap();
        let (ids, dists) = nearest_centroids(dv, cv, 3);
        for i in 0..40 {
            let mut all: Vec<(f32, u32)> = (0..7)
                .map(|j| {
                    (
                        crate::distance::reference::l2_sq_f32(dv.row(i), cv.row(j)),
                        j as u32,
                    )
                })
                .collect();
            all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            for j in 0..3 {
                assert!((dists[i * 3 + j] - all[j].0).abs() <= 1e-3 * (1.0 + all[j].0));
                // ids agree unless the two distances are (nearly) tied
                if ids[i * 3 + j] != all[j].1 {
                    let other = all.iter().find(|e| e.1 == ids[i * 3 + j]).unwrap().0;
                    assert!((other - all[j].0).abs() <= 1e-3 * (1.0 + all[j].0));
                }
            }
        }
    }
}

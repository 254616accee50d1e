//! Exact k-NN by brute force, blocked for cache: for each chunk of the base and each block of
//! queries, the dot products come from one matrix product (`|q − x|² = |q|² + |x|² − 2 q·x`
//! for L2), which screens candidates against the current k-th distance; only candidates that
//! pass the screen get their distance recomputed with the direct kernel, so every reported
//! distance is the exact kernel value and cancellation in the expanded form cannot reorder
//! results beyond the screen's slack.
//!
//! The base is streamed ([`VectorFile::chunks_f32`]) while the previous chunk is scored, so a
//! base larger than RAM works; memory is `O(chunk_rows · dim + queries · (dim + k))`.

use std::sync::mpsc;

use rayon::prelude::*;

use crate::data::{DataError, GroundTruth, Matrix, MatrixView, VectorFile, validate};
use crate::distance::{self, Metric};
use crate::neighbor::{Neighbor, TopK};

/// Base rows per matrix-product tile: 4096 × 4 B = 16 KiB of distances per query row.
const TILE_ROWS: usize = 4096;
/// Relative slack of the matrix-product screen. The expanded and direct forms differ by
/// rounding of order `dim · ε_f32 · (|q|² + |x|²)` in the worst case and far less in practice;
/// a candidate within the slack is recomputed exactly, never dropped.
const SCREEN_SLACK: f32 = 3e-5;

/// Parameters of an exact k-NN run.
#[derive(Debug, Clone)]
pub struct ExactParams {
    /// Neighbours per query.
    pub k: usize,
    /// The metric.
    pub metric: Metric,
    /// Base rows read per streamed chunk.
    pub chunk_rows: usize,
}

impl ExactParams {
    /// `k` neighbours under `metric`, reading 65,536 base rows per chunk.
    pub fn new(k: usize, metric: Metric) -> Self {
        Self {
            k,
            metric,
            chunk_rows: 1 << 16,
        }
    }
}

/// Running state of an exact search: prepared queries and one top-k heap per query. Feed it base
/// chunks in any order with [`ExactSearch::add_chunk`]; results do not depend on the order or
/// the thread count (ties resolve by id).
#[derive(Debug)]
pub struct ExactSearch {
    metric: Metric,
    queries: Matrix<f32>,
    query_norms_sq: Vec<f32>,
    heaps: Vec<TopK>,
    query_block: usize,
}

impl ExactSearch {
    /// Prepares the queries (normalised under cosine). Errors: k = 0, zero query under cosine.
    pub fn new(queries: MatrixView<'_, f32>, k: usize, metric: Metric) -> Result<Self, DataError> {
        if k == 0 {
            return Err(DataError::KZero);
        }
        let mut queries = Matrix::from_vec(queries.as_slice().to_vec(), queries.dim())?;
        if metric == Metric::Cosine {
            normalize_rows(&mut queries, "queries")?;
        }
        let query_norms_sq = crate::linalg::row_norms_sq(queries.view());
        let nq = queries.rows();
        // Enough blocks to keep every thread busy, few enough rows per block to amortise
        // packing the base tile in the matrix product.
        let query_block = (nq / (4 * rayon::current_num_threads().max(1))).clamp(8, 256);
        Ok(Self {
            metric,
            heaps: (0..nq).map(|_| TopK::new(k)).collect(),
            queries,
            query_norms_sq,
            query_block,
        })
    }

    /// Scores one chunk of base rows whose first row has id `first_id`. Under cosine the chunk
    /// is normalised in place (hence `&mut`). Runs on the current rayon pool.
    pub fn add_chunk(&mut self, first_id: u64, chunk: &mut Matrix<f32>) -> Result<(), DataError> {
        if chunk.dim() != self.queries.dim() {
            return Err(DataError::DimMismatch {
                expected_what: "queries".into(),
                expected: self.queries.dim(),
                found_what: "base chunk".into(),
                found: chunk.dim(),
            });
        }
        let last = first_id + chunk.rows() as u64;
        if last > u32::MAX as u64 + 1 {
            return Err(DataError::Overflow {
                what: "base row id (ids are u32)",
            });
        }
        if self.metric == Metric::Cosine {
            normalize_rows(chunk, "base")?;
        }
        let chunk = chunk.view();
        let chunk_norms = crate::linalg::row_norms_sq(chunk);
        let metric = self.metric;
        let dim = self.queries.dim();
        let qb = self.query_block;
        self.heaps
            .par_chunks_mut(qb)
            .zip(self.queries.as_slice().par_chunks(qb * dim))
            .zip(self.query_norms_sq.par_chunks(qb))
            .for_each(|((heaps, qrows), qnorms)| {
                let qview = MatrixView::new(qrows, dim).expect("whole query rows");
                scan_block(
                    metric,
                    qview,
                    qnorms,
                    heaps,
                    chunk,
                    &chunk_norms,
                    first_id as u32,
                );
            });
        Ok(())
    }

    /// The best `k` neighbours of every query, best first.
    pub fn finish(self) -> Vec<Vec<Neighbor>> {
        self.heaps.into_iter().map(TopK::into_sorted).collect()
    }
}

fn scan_block(
    metric: Metric,
    queries: MatrixView<'_, f32>,
    query_norms_sq: &[f32],
    heaps: &mut [TopK],
    chunk: MatrixView<'_, f32>,
    chunk_norms_sq: &[f32],
    first_id: u32,
) {
    let mut dots = Vec::new();
    let mut tile_start = 0;
    while tile_start < chunk.rows() {
        let tile_end = (tile_start + TILE_ROWS).min(chunk.rows());
        let tile = chunk.slice_rows(tile_start, tile_end);
        let tile_norms = &chunk_norms_sq[tile_start..tile_end];
        let max_norm = tile_norms.iter().copied().fold(0.0f32, f32::max);
        crate::linalg::dot_products(queries, tile, &mut dots);
        let n = tile.rows();
        for (qi, heap) in heaps.iter_mut().enumerate() {
            let q = queries.row(qi);
            let qn = query_norms_sq[qi];
            let row = &dots[qi * n..(qi + 1) * n];
            let id0 = first_id + tile_start as u32;
            match metric {
                Metric::L2 => {
                    // Screen on |x|² − 2 q·x against threshold − |q|².
                    let slack = SCREEN_SLACK * (qn + max_norm);
                    let mut bound = heap.threshold() - qn + slack;
                    for (j, (&dot, &xn)) in row.iter().zip(tile_norms).enumerate() {
                        if xn - 2.0 * dot <= bound {
                            let dist = distance::l2_sq(q, tile.row(j));
                            if heap.push(Neighbor {
                                id: id0 + j as u32,
                                dist,
                            }) {
                                bound = heap.threshold() - qn + slack;
                            }
                        }
                    }
                }
                Metric::InnerProduct | Metric::Cosine => {
                    let slack = SCREEN_SLACK * (qn * max_norm).sqrt();
                    let mut bound = heap.threshold() + slack;
                    for (j, &dot) in row.iter().enumerate() {
                        if -dot <= bound {
                            let dist = -distance::dot(q, tile.row(j));
                            if heap.push(Neighbor {
                                id: id0 + j as u32,
                                dist,
                            }) {
                                bound = heap.threshold() + slack;
                            }
                        }
                    }
                }
            }
        }
        tile_start = tile_end;
    }
}

fn normalize_rows(m: &mut Matrix<f32>, what: &str) -> Result<(), DataError> {
    for i in 0..m.rows() {
        let row = m.row_mut(i);
        let norm = distance::dot(row, row).sqrt();
        if norm == 0.0 {
            return Err(DataError::ZeroVector {
                path: what.into(),
                row: i as u64,
            });
        }
        row.iter_mut().for_each(|v| *v /= norm);
    }
    Ok(())
}

/// Exact k-NN of `queries` over a base file, streamed in chunks on the current rayon pool.
/// `progress` is called with the number of base rows done after each chunk.
///
/// Errors: k = 0 or k larger than the base, dimension mismatch, non-finite components (named
/// by file and row), zero vectors under cosine, I/O.
pub fn exact_knn_file(
    base: &VectorFile,
    queries: MatrixView<'_, f32>,
    params: &ExactParams,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<Vec<Neighbor>>, DataError> {
    check_k(params.k, base.rows())?;
    if base.dim() != queries.dim() {
        return Err(DataError::DimMismatch {
            expected_what: format!("base {}", base.path().display()),
            expected: base.dim(),
            found_what: "queries".into(),
            found: queries.dim(),
        });
    }
    let mut search = ExactSearch::new(queries, params.k, params.metric)?;
    let chunk_rows = params.chunk_rows.max(1);
    // One reader thread stays a chunk ahead of the scoring, so reading overlaps compute.
    std::thread::scope(|scope| -> Result<(), DataError> {
        let (tx, rx) = mpsc::sync_channel::<Result<(u64, Matrix<f32>), DataError>>(1);
        scope.spawn(move || {
            for item in base.chunks_f32(chunk_rows) {
                let stop = item.is_err();
                if tx.send(item).is_err() || stop {
                    break;
                }
            }
        });
        let mut done = 0u64;
        for item in rx {
            let (first, mut chunk) = item?;
            if params.metric == Metric::Cosine {
                validate::check_nonzero(base.path(), first, chunk.view())?;
            }
            search.add_chunk(first, &mut chunk)?;
            done += chunk.rows() as u64;
            progress(done);
        }
        Ok(())
    })?;
    Ok(search.finish())
}

/// Exact k-NN over an in-memory base (ids are row numbers), on the current rayon pool.
pub fn exact_knn(
    base: MatrixView<'_, f32>,
    queries: MatrixView<'_, f32>,
    k: usize,
    metric: Metric,
) -> Result<Vec<Vec<Neighbor>>, DataError> {
    check_k(k, base.rows() as u64)?;
    let mut search = ExactSearch::new(queries, k, metric)?;
    let mut start = 0;
    while start < base.rows() {
        let end = (start + (1 << 16)).min(base.rows());
        let mut chunk =
            Matrix::from_vec(base.slice_rows(start, end).as_slice().to_vec(), base.dim())?;
        search.add_chunk(start as u64, &mut chunk)?;
        start = end;
    }
    Ok(search.finish())
}

/// Checks `1 <= k <= n`.
pub fn check_k(k: usize, n: u64) -> Result<(), DataError> {
    if k == 0 {
        return Err(DataError::KZero);
    }
    if k as u64 > n {
        return Err(DataError::KTooLarge { k, n });
    }
    Ok(())
}

/// Converts results (internal distances) to a ground-truth table in natural units.
pub fn to_ground_truth(
    results: &[Vec<Neighbor>],
    k: usize,
    metric: Metric,
) -> Result<GroundTruth, DataError> {
    let mut ids = Vec::with_capacity(results.len() * k);
    let mut dists = Vec::with_capacity(results.len() * k);
    for (q, r) in results.iter().enumerate() {
        if r.len() != k {
            return Err(DataError::Param(format!(
                "query {q} has {} results, expected k = {k}",
                r.len()
            )));
        }
        ids.extend(r.iter().map(|n| n.id));
        dists.extend(r.iter().map(|n| metric.to_natural(n.dist)));
    }
    Ok(GroundTruth {
        ids: Matrix::from_vec(ids, k)?,
        dists: Some(Matrix::from_vec(dists, k)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(
        base: &[f32],
        queries: &[f32],
        dim: usize,
        k: usize,
        metric: Metric,
    ) -> Vec<Vec<Neighbor>> {
        let norm = |v: &[f32]| -> Vec<f32> {
            let n = crate::distance::reference::dot_f32(v, v).sqrt();
            v.iter().map(|x| x / n).collect()
        };
        queries
            .chunks_exact(dim)
            .map(|q| {
                let mut all: Vec<Neighbor> = base
                    .chunks_exact(dim)
                    .enumerate()
                    .map(|(i, x)| {
                        let dist = match metric {
                            Metric::L2 => crate::distance::reference::l2_sq_f32(q, x),
                            Metric::InnerProduct => -crate::distance::reference::dot_f32(q, x),
                            Metric::Cosine => {
                                -crate::distance::reference::dot_f32(&norm(q), &norm(x))
                            }
                        };
                        Neighbor { id: i as u32, dist }
                    })
                    .collect();
                all.sort_by(Neighbor::cmp_total);
                all.truncate(k);
                all
            })
            .collect()
    }

    /// Same ids up to ties (a differing id must sit at the k-th distance) and distances equal
    /// to 1e-4 relative.
    fn assert_same(got: &[Vec<Neighbor>], want: &[Vec<Neighbor>]) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g.len(), w.len());
            let kth = w.last().unwrap().dist;
            // Rank by rank, the distances agree (two near-equal distances may swap ranks, which
            // leaves the sorted distance lists equal). The tolerance is relative to 10 rather
            // than 1 near zero: an inner product of ±10-valued rows sums terms of up to 100
            // that cancel, and two f32 summation orders then differ by ~1e-4 absolute
            // (seen: −0.71190 vs −0.71201, dim 35; proptest-regressions/exact/brute.txt).
            for (a, b) in g.iter().zip(w) {
                let tol = 1e-4 * (a.dist.abs().max(b.dist.abs()).max(10.0));
                assert!(
                    (a.dist - b.dist).abs() <= tol,
                    "dist {} vs {}",
                    a.dist,
                    b.dist
                );
            }
            // As sets, an id missing from the reference must tie the k-th distance.
            let want_ids: std::collections::HashSet<u32> = w.iter().map(|n| n.id).collect();
            for a in g.iter().filter(|a| !want_ids.contains(&a.id)) {
                let tol = 1e-4 * (a.dist.abs().max(kth.abs()).max(10.0));
                assert!(
                    (a.dist - kth).abs() <= tol,
                    "id {} (dist {}) not in the reference and not a tie with {kth}",
                    a.id,
                    a.dist
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        #[test]
        fn matches_naive_for_every_metric(
            n in 1usize..300,
            nq in 1usize..20,
            dim in 1usize..40,
            k_frac in 0.0f64..1.0,
            seed in any::<u64>(),
            metric_ix in 0usize..3,
        ) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let base: Vec<f32> = (0..n * dim).map(|_| rng.random_range(-10.0f32..10.0)).collect();
            let queries: Vec<f32> = (0..nq * dim).map(|_| rng.random_range(-10.0f32..10.0)).collect();
            let k = ((n as f64 * k_frac) as usize).clamp(1, n);
            let metric = [Metric::L2, Metric::InnerProduct, Metric::Cosine][metric_ix];
            let got = exact_knn(
                MatrixView::new(&base, dim).unwrap(),
                MatrixView::new(&queries, dim).unwrap(),
                k,
                metric,
            ).unwrap();
            assert_same(&got, &naive(&base, &queries, dim, k, metric));
        }
    }

    #[test]
    fn chunk_order_does_not_change_results() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let dim = 16;
        let base: Vec<f32> = (0..5000 * dim)
            .map(|_| rng.random_range(0.0f32..1.0))
            .collect();
        let queries: Vec<f32> = (0..30 * dim)
            .map(|_| rng.random_range(0.0f32..1.0))
            .collect();
        let bv = MatrixView::new(&base, dim).unwrap();
        let qv = MatrixView::new(&queries, dim).unwrap();
        let whole = exact_knn(bv, qv, 10, Metric::L2).unwrap();
        let mut s = ExactSearch::new(qv, 10, Metric::L2).unwrap();
        for (start, end) in [(3000, 5000), (0, 1234), (1234, 3000)] {
            let mut c =
                Matrix::from_vec(bv.slice_rows(start, end).as_slice().to_vec(), dim).unwrap();
            s.add_chunk(start as u64, &mut c).unwrap();
        }
        assert_eq!(s.finish(), whole);
    }

    #[test]
    fn bad_k_and_zero_vectors_are_errors() {
        let base = [1.0f32, 0.0, 0.0, 1.0];
        let bv = MatrixView::new(&base, 2).unwrap();
        assert!(matches!(
            exact_knn(bv, bv, 0, Metric::L2),
            Err(DataError::KZero)
        ));
        assert!(matches!(
            exact_knn(bv, bv, 3, Metric::L2),
            Err(DataError::KTooLarge { k: 3, n: 2 })
        ));
        let zero = [0.0f32, 0.0];
        assert!(matches!(
            exact_knn(bv, MatrixView::new(&zero, 2).unwrap(), 1, Metric::Cosine),
            Err(DataError::ZeroVector { .. })
        ));
        let q3 = [1.0f32, 2.0, 3.0];
        assert!(exact_knn(bv, MatrixView::new(&q3, 3).unwrap(), 1, Metric::L2).is_err());
    }
}

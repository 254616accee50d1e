//! Training-query hints at query time (decision 0007, step 2b of a query): which training
//! queries are nearest to the query, and the records they answered.
//!
//! Finding the nearest training queries by exact dot products reads every candidate's full
//! vector: with 10,000 training queries × 384 dimensions and a two-level router, about 1,700
//! rows × 1.5 KiB = 2.6 MB per query, which made the step memory-bound and costlier than the
//! rest of the query together (docs/decisions/0007-training-query-hints.md, "Cost"). So the
//! training queries are also held in the index's own PQ representation ([`HintCodes`]: the
//! nearest base centroid, the PQ code of the residual, the L2 correction — exactly what a base
//! record has), built at open from `hints.m3` and the PQ codebooks. A query then ranks the
//! router's candidates by the same asymmetric distance it uses for records (64 bytes each,
//! with the query's PQ table already computed), and rescores only the best
//! [`HINT_REFINE`]` × hints` of them exactly.

use crate::data::Matrix;
use crate::distance::{self, Metric};
use crate::exact::{Neighbor, TopK};
use crate::pq::{ProductQuantizer, adc_score};
use crate::route::{AnchorScores, Router, best_first};

/// Candidates kept by the PQ ranking of training queries, per training query asked for: the
/// best `HINT_REFINE · hints` are rescored with their full vectors. Two, not four: on
/// passages-ood the exact rescoring of `4 · 32` training queries (196 KB of f32 rows per query)
/// cost ~12% of a query for +0.0006 of recall@10 (decision 0011).
pub const HINT_REFINE: usize = 2;

/// The training queries of `hints.m3` encoded like base records: for each, its nearest base
/// centroid (L2), the PQ code of the residual and the L2 correction `|r̂|² + 2 c·r̂`. Stored in
/// the hint router's layout order (group after group), so that a query's candidates, which
/// come group by group, are read in runs.
#[derive(Debug, Clone)]
pub struct HintCodes {
    /// Position of each training query in the arrays below.
    position: Vec<u32>,
    clusters: Vec<u32>,
    codes: Vec<u8>,
    corrections: Vec<f32>,
    subspaces: usize,
}

impl HintCodes {
    /// Encodes `queries` against `centroids` with `pq`, laid out in `router`'s order (rows
    /// in parallel on the current rayon pool; the result does not depend on the thread count).
    pub fn encode(
        queries: &Matrix<f32>,
        router: &Router,
        centroids: &Matrix<f32>,
        pq: &ProductQuantizer,
    ) -> Self {
        let order = router.layout_order();
        assert_eq!(
            order.len(),
            queries.rows(),
            "HintCodes: one position per query"
        );
        let mut position = vec![0u32; order.len()];
        for (pos, &id) in order.iter().enumerate() {
            position[id as usize] = pos as u32;
        }
        let dim = queries.dim();
        let mut ordered = Vec::with_capacity(queries.rows() * dim);
        for &id in &order {
            ordered.extend_from_slice(queries.row(id as usize));
        }
        let ordered = Matrix::from_vec(ordered, dim).expect("dim ≥ 1");
        let (nearest, _) = crate::kmeans::nearest_centroids(ordered.view(), centroids.view(), 1);
        let mut residuals = Vec::with_capacity(queries.rows() * dim);
        for (q, &c) in ordered.view().iter_rows().zip(&nearest) {
            let c = centroids.row(c as usize);
            residuals.extend(q.iter().zip(c).map(|(x, y)| x - y));
        }
        let residuals = Matrix::from_vec(residuals, dim).expect("dim ≥ 1");
        let codes = pq.encode_all(residuals.view());
        let mut decoded = vec![0f32; dim];
        let corrections = codes
            .view()
            .iter_rows()
            .zip(&nearest)
            .map(|(code, &c)| {
                pq.decode(code, &mut decoded);
                distance::dot(&decoded, &decoded)
                    + 2.0 * distance::dot(centroids.row(c as usize), &decoded)
            })
            .collect();
        Self {
            position,
            clusters: nearest,
            subspaces: pq.subspaces(),
            codes: codes.as_slice().to_vec(),
            corrections,
        }
    }

    /// Bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.position.len() * 4
            + self.clusters.len() * 4
            + self.codes.len()
            + self.corrections.len() * 4
    }

    fn code(&self, i: usize) -> &[u8] {
        &self.codes[i * self.subspaces..(i + 1) * self.subspaces]
    }
}

/// What [`nearest_training_queries`] needs of the index and of the query.
pub(super) struct HintQuery<'a> {
    pub metric: Metric,
    /// The training queries (`hints.m3`) and their router.
    pub queries: &'a Matrix<f32>,
    pub router: &'a Router,
    pub codes: &'a HintCodes,
    /// The base anchors, their router and the query's scores of them (filled on demand).
    pub centroids: &'a Matrix<f32>,
    pub base_router: &'a Router,
    /// The query (prepared), its PQ inner-product table and `|q|²`.
    pub q: &'a [f32],
    pub table: &'a [f32],
    pub qn: f32,
}

/// Scratch of [`nearest_training_queries`], kept per search slot.
#[derive(Debug, Default)]
pub(super) struct HintScratch {
    candidates: Vec<u32>,
}

/// The `n` training queries nearest to the query as (score, id), best first, in the order of
/// the hint router (`−q·t` or `|q − t|²`): the router's candidates (`groups` coarse groups),
/// ranked by PQ, the best `HINT_REFINE · n` rescored exactly. Returns (candidates scored by
/// PQ, vectors scored exactly, coarse centres scored).
pub(super) fn nearest_training_queries(
    h: &HintQuery<'_>,
    n: usize,
    groups: usize,
    centroid_scores: &mut AnchorScores,
    scratch: &mut HintScratch,
    out: &mut Vec<(f32, u32)>,
) -> (u64, u64, u64) {
    let coarse = h
        .router
        .candidates(h.q, h.qn, n, groups, &mut scratch.candidates);
    let keep = n.saturating_mul(HINT_REFINE).max(1);
    let mut best = TopK::new(keep);
    let codes = h.codes;
    for &id in &scratch.candidates {
        let i = codes.position[id as usize] as usize;
        let cs = centroid_scores.get(h.base_router, h.centroids, h.q, codes.clusters[i] as usize);
        let approx = super::query::approx_dist(
            h.metric,
            cs,
            adc_score(h.table, codes.code(i)),
            codes.corrections[i],
        );
        best.push(Neighbor { id, dist: approx });
    }
    out.clear();
    let survivors = best.into_sorted();
    for nb in &survivors {
        let s = h
            .router
            .score_one(h.queries.view(), h.q, h.qn, nb.id as usize);
        out.push((s, nb.id));
    }
    best_first(out, n);
    (
        scratch.candidates.len() as u64,
        survivors.len() as u64,
        coarse,
    )
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};

    use super::*;
    use crate::pq::PqParams;
    use crate::route::AnchorOrder;

    /// Clustered rows (so that k-means routing has structure), `dim` wide.
    fn clustered(rows: usize, dim: usize, seed: u64) -> Matrix<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let centres: Vec<Vec<f32>> = (0..20)
            .map(|_| (0..dim).map(|_| StandardNormal.sample(&mut rng)).collect())
            .collect();
        let mut v = Vec::with_capacity(rows * dim);
        for i in 0..rows {
            let c = &centres[i % centres.len()];
            for &x in c {
                let z: f32 = StandardNormal.sample(&mut rng);
                v.push(x + 0.5 * z);
            }
        }
        Matrix::from_vec(v, dim).unwrap()
    }

    fn exact_top(tq: &Matrix<f32>, q: &[f32], metric: Metric, n: usize) -> Vec<u32> {
        let mut all: Vec<(f32, u32)> = tq
            .view()
            .iter_rows()
            .enumerate()
            .map(|(j, t)| {
                let s = match metric {
                    Metric::L2 => distance::l2_sq(q, t),
                    _ => -distance::dot(q, t),
                };
                (s, j as u32)
            })
            .collect();
        best_first(&mut all, n);
        all.into_iter().map(|(_, j)| j).collect()
    }

    /// The PQ first pass with an exact rescoring finds almost all of the exact top-n training
    /// queries, reports exact scores best first, and every candidate the router proposes is
    /// scored once; with the two-level router and with the exact one, under L2 and ip.
    #[test]
    fn pq_first_pass_finds_the_nearest_training_queries() {
        let dim = 32;
        let tq = clustered(6000, dim, 1);
        let centroids = clustered(64, dim, 2);
        let queries = clustered(60, dim, 3);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        // The PQ of an index is trained on residuals to the nearest centroid; so here. Two
        // dimensions per subspace: these Gaussian clusters put a query's nearest training
        // queries at nearly equal distances (with four per subspace the first pass keeps 0.86
        // of the top-16 under L2; on passages-ood, six per subspace keep recall unchanged).
        let (nearest, _) =
            pool.install(|| crate::kmeans::nearest_centroids(tq.view(), centroids.view(), 1));
        let residuals: Vec<f32> = tq
            .view()
            .iter_rows()
            .zip(&nearest)
            .flat_map(|(t, &c)| {
                t.iter()
                    .zip(centroids.row(c as usize))
                    .map(|(x, y)| x - y)
                    .collect::<Vec<_>>()
            })
            .collect();
        let residuals = Matrix::from_vec(residuals, dim).unwrap();
        let pq = PqParams::new(16).train(residuals.view(), &pool).unwrap();
        let n = 16;
        for metric in [Metric::L2, Metric::InnerProduct] {
            let order = AnchorOrder::training_queries(metric);
            for min_k in [usize::MAX, 2] {
                let router = Router::new_in(tq.view(), order, min_k, &pool);
                let codes = pool.install(|| HintCodes::encode(&tq, &router, &centroids, &pq));
                let base_router = Router::new_in(
                    centroids.view(),
                    AnchorOrder::base_anchors(metric),
                    usize::MAX,
                    &pool,
                );
                let mut found = 0usize;
                let mut scratch = HintScratch::default();
                let mut out = Vec::new();
                let mut table = Vec::new();
                for q in queries.view().iter_rows() {
                    pq.ip_table(q, &mut table);
                    let qn = distance::dot(q, q);
                    let mut cs = AnchorScores::new(centroids.rows());
                    cs.reset(qn);
                    let h = HintQuery {
                        metric,
                        queries: &tq,
                        router: &router,
                        codes: &codes,
                        centroids: &centroids,
                        base_router: &base_router,
                        q,
                        table: &table,
                        qn,
                    };
                    // Every group searched: the candidates are all training queries.
                    let (by_pq, exact, _) = nearest_training_queries(
                        &h,
                        n,
                        usize::MAX,
                        &mut cs,
                        &mut scratch,
                        &mut out,
                    );
                    assert_eq!(by_pq, tq.rows() as u64, "{metric:?}, min_k {min_k}");
                    assert_eq!(exact, (n * HINT_REFINE) as u64);
                    assert_eq!(out.len(), n);
                    assert!(out.windows(2).all(|w| w[0].0 <= w[1].0), "best first");
                    for &(s, id) in &out {
                        let want = router.score_one(tq.view(), q, qn, id as usize);
                        assert_eq!(s.to_bits(), want.to_bits(), "exact scores reported");
                    }
                    let truth = exact_top(&tq, q, metric, n);
                    found += out.iter().filter(|(_, id)| truth.contains(id)).count();
                }
                let share = found as f64 / (queries.rows() * n) as f64;
                assert!(
                    share >= 0.97,
                    "{metric:?}, min_k {min_k}: {share:.3} of the exact top-{n}"
                );
            }
        }
    }
}

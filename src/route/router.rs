//! The query side of routing, DESIGN §3 step 2: which anchors are nearest to a query, without
//! scoring all of them when there are many.
//!
//! A [`Router`] ranks the rows of an anchor matrix (base centroids, or query-modality anchors)
//! by a query score: `|c|² − 2 q·c` (L2 order) or `−q·c` (inner-product order). With fewer
//! than `two_level_min_k` anchors it scores every anchor (exact). Above, it keeps the
//! two-level structure of the build ([`crate::kmeans::TwoLevel`], ≈ √K coarse groups):
//! a query scores the G coarse centres, then only the anchors of its `groups` best groups,
//! about `(G + groups · K/G) · d` multiply-adds instead of `K · d`. The anchors found are
//! returned best first, ties by lower id. The build stores the base anchors' coarse level in
//! `coarse.m3` ([`Router::coarse_level`], [`Router::from_stored`]); an index without it
//! rebuilds the level at open from the centroids (deterministic; 2–3 s at K = 39,000 on two
//! cores, and it grows as K^1.5).
//!
//! [`AnchorScores`] keeps one query's anchor scores, computed on demand: clusters reached
//! through query anchors or neighbour lists get their score when first needed.

use crate::data::{Matrix, MatrixView};
use crate::distance::{self, Metric};
use crate::format::CoarseLevel;
use crate::kmeans::GroupIndex;

/// How a router orders anchors for a query `q` (smaller first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnchorOrder {
    /// `|q|² + |c|² − 2 q·c` (one dot product per anchor, norms kept).
    L2Expanded,
    /// `|q − c|²` by the direct kernel.
    L2,
    /// `−q·c`.
    InnerProduct,
}

impl AnchorOrder {
    /// The order of the base anchors: squared L2 distance under L2, `−q·c` otherwise.
    pub fn base_anchors(metric: Metric) -> Self {
        match metric {
            Metric::L2 => AnchorOrder::L2Expanded,
            _ => AnchorOrder::InnerProduct,
        }
    }

    /// How training queries are ranked for a query (`hints.m3`): by inner product under ip
    /// and cosine (both sides normalised under cosine), by L2 under L2.
    pub fn training_queries(metric: Metric) -> Self {
        match metric {
            Metric::L2 => AnchorOrder::L2Expanded,
            _ => AnchorOrder::InnerProduct,
        }
    }
}

/// Default anchor count from which routing uses two levels. Below it the exact scan is as
/// fast (docs/BENCHMARKS.md, "Routing with two levels").
pub const DEFAULT_ROUTE_MIN_K: usize = 4096;

/// Ranks anchors for queries: exact, or in two levels when there are many.
#[derive(Debug, Clone)]
pub struct Router {
    order: AnchorOrder,
    norms: Vec<f32>,
    /// The two-level grouping by ids: a group's anchors are scored from the anchor matrix the
    /// caller passes to [`Router::nearest`], so the router holds no copy of the anchors.
    two_level: Option<GroupIndex>,
    coarse_norms: Vec<f32>,
}

impl Router {
    /// A router over `anchors`, two-level when they are at least `min_k` (and more than 1).
    /// Under [`AnchorOrder::InnerProduct`] the coarse level is built over the anchors
    /// augmented to `[c, √(M² − |c|²)]` (M the largest anchor norm, DESIGN §4.1), where the
    /// order of `|q' − c'|²` with `q' = [q, 0]` is the order of `−q·c`: groups are then chosen
    /// by a distance that agrees with the inner product, not by `−q·g` of a group mean.
    /// The coarse k-means runs on a pool of every available core (its result does not depend
    /// on the thread count); [`Router::new_in`] takes the pool.
    pub fn new(anchors: MatrixView<'_, f32>, order: AnchorOrder, min_k: usize) -> Self {
        if anchors.rows() < min_k.max(2) {
            return Self {
                order,
                norms: crate::linalg::row_norms_sq(anchors),
                two_level: None,
                coarse_norms: Vec::new(),
            };
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a thread pool for the coarse k-means");
        Self::new_in(anchors, order, min_k, &pool)
    }

    /// [`Router::new`] with the coarse k-means (when two-level) on `pool`.
    pub fn new_in(
        anchors: MatrixView<'_, f32>,
        order: AnchorOrder,
        min_k: usize,
        pool: &rayon::ThreadPool,
    ) -> Self {
        let norms = crate::linalg::row_norms_sq(anchors);
        let two_level = (anchors.rows() >= min_k.max(2))
            .then(|| GroupIndex::for_routing(anchors, order == AnchorOrder::InnerProduct, pool));
        let coarse_norms = two_level
            .as_ref()
            .map(|tl| crate::linalg::row_norms_sq(tl.coarse()))
            .unwrap_or_default();
        Self {
            order,
            norms,
            two_level,
            coarse_norms,
        }
    }

    /// A two-level router from a stored coarse level (`coarse.m3`, made by [`Router::new`] at
    /// build time): the same router `new` would build, without the coarse k-means.
    pub fn from_stored(
        anchors: MatrixView<'_, f32>,
        order: AnchorOrder,
        coarse: Matrix<f32>,
        labels: &[u32],
        probe: usize,
    ) -> Self {
        let norms = crate::linalg::row_norms_sq(anchors);
        let augmented = usize::from(order == AnchorOrder::InnerProduct);
        assert_eq!(labels.len(), anchors.rows(), "Router: one label per anchor");
        assert_eq!(
            coarse.dim(),
            anchors.dim() + augmented,
            "Router: coarse dimension"
        );
        let tl = GroupIndex::from_labels(coarse, labels, probe);
        Self {
            order,
            norms,
            coarse_norms: crate::linalg::row_norms_sq(tl.coarse()),
            two_level: Some(tl),
        }
    }

    /// The router over an index's base anchors (`centroids`, ranked in
    /// [`AnchorOrder::base_anchors`] of `metric`): the stored coarse level (`coarse.m3`) when
    /// there is one and K reaches `min_k`, else [`Router::new`] (exact below `min_k`, a coarse
    /// level built now above).
    pub fn for_base_anchors(
        centroids: &Matrix<f32>,
        metric: Metric,
        coarse: Option<&CoarseLevel>,
        min_k: usize,
    ) -> Self {
        let order = AnchorOrder::base_anchors(metric);
        match coarse {
            Some(c) if centroids.rows() >= min_k.max(2) => Router::from_stored(
                centroids.view(),
                order,
                c.coarse.clone(),
                &c.labels,
                c.probe as usize,
            ),
            _ => Router::new(centroids.view(), order, min_k),
        }
    }

    /// The coarse level to store: (coarse centres, each anchor's group, probe), `None` for
    /// an exact router. Centres are over augmented anchors under inner product.
    #[cfg(test)]
    pub fn coarse_level(&self) -> Option<(Matrix<f32>, Vec<u32>, usize)> {
        self.two_level.as_ref().map(|tl| {
            let c = tl.coarse();
            (
                Matrix::from_vec(c.as_slice().to_vec(), c.dim()).expect("dim ≥ 1"),
                tl.labels(),
                tl.probe(),
            )
        })
    }

    /// Bytes the router holds: anchor norms and, when two-level, the grouping (coarse centres
    /// and one id per anchor), never a copy of the anchors.
    pub fn heap_bytes(&self) -> usize {
        self.norms.len() * 4
            + self.coarse_norms.len() * 4
            + self.two_level.as_ref().map_or(0, GroupIndex::heap_bytes)
    }

    pub fn is_two_level(&self) -> bool {
        self.two_level.is_some()
    }

    /// Coarse groups searched when the caller asks for `groups = 0` (auto) and `n` anchors:
    /// 16, or n/4 when that is larger (measured on xmodal, docs/BENCHMARKS.md "Routing
    /// with two levels").
    pub fn auto_groups(n: usize) -> usize {
        (n / 4).max(16)
    }

    /// `qn` is `|q|²`; `c` may be longer than `q` (an augmented anchor).
    fn score(&self, q: &[f32], qn: f32, c: &[f32], c_norm: f32) -> f32 {
        let c = &c[..q.len()];
        match self.order {
            AnchorOrder::L2Expanded => qn + c_norm - 2.0 * distance::dot(q, c),
            AnchorOrder::L2 => distance::l2_sq(q, c),
            AnchorOrder::InnerProduct => -distance::dot(q, c),
        }
    }

    /// Score of coarse centre `g` (norm `g_norm`): the fine order's, except under inner
    /// product, where it is `|q' − g'|² − |q|²` in the augmented space.
    fn coarse_score(&self, q: &[f32], qn: f32, g: &[f32], g_norm: f32) -> f32 {
        match self.order {
            AnchorOrder::InnerProduct => g_norm - 2.0 * distance::dot(q, &g[..q.len()]),
            _ => self.score(q, qn, g, g_norm),
        }
    }

    /// The `n` best anchors for `q` as (score, id), best first; `groups` coarse groups are
    /// searched (0 = [`Router::auto_groups`]). Adds every computed score to `scores` (which
    /// must have been [`AnchorScores::reset`] for `q`) and returns how many anchors (coarse
    /// centres included) were scored.
    pub fn nearest(
        &self,
        anchors: MatrixView<'_, f32>,
        q: &[f32],
        n: usize,
        groups: usize,
        scores: &mut AnchorScores,
        out: &mut Vec<(f32, u32)>,
    ) -> u64 {
        let qn = scores.q_norm;
        let mut ids = std::mem::take(&mut scores.candidates);
        let coarse = self.candidates(q, qn, n, groups, &mut ids);
        out.clear();
        for &id in &ids {
            let s = self.score(q, qn, anchors.row(id as usize), self.norms[id as usize]);
            scores.set(id as usize, s);
            out.push((s, id));
        }
        let scored = coarse + ids.len() as u64;
        scores.candidates = ids;
        best_first(out, n);
        scored
    }

    /// Every anchor id in the order [`Router::candidates`] lists them: group after group for a
    /// two-level router, `0..K` for an exact one. Data kept per anchor in this order is read in
    /// runs rather than at scattered places.
    pub fn layout_order(&self) -> Vec<u32> {
        match &self.two_level {
            Some(tl) => tl.ids_by_group().to_vec(),
            None => (0..self.norms.len() as u32).collect(),
        }
    }

    /// The anchors [`Router::nearest`] would score for `q` (`qn` = `|q|²`), in the order it
    /// scores them, into `ids`: every anchor of an exact router; the anchors of the `groups`
    /// best coarse groups (0 = [`Router::auto_groups`] of `n`), and of further groups in order
    /// until there are at least `n`, of a two-level one. Returns the coarse centres scored.
    /// A caller with a cheaper score than the exact one (PQ codes of the anchors) ranks the
    /// candidates itself and rescores only the best few with [`Router::score_one`].
    pub fn candidates(
        &self,
        q: &[f32],
        qn: f32,
        n: usize,
        groups: usize,
        ids: &mut Vec<u32>,
    ) -> u64 {
        ids.clear();
        let Some(tl) = &self.two_level else {
            ids.extend(0..self.norms.len() as u32);
            return 0;
        };
        let by = |a: &(f32, u32), b: &(f32, u32)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
        let g = tl.groups();
        let mut coarse: Vec<(f32, u32)> = tl
            .coarse()
            .iter_rows()
            .enumerate()
            .map(|(j, g)| (self.coarse_score(q, qn, g, self.coarse_norms[j]), j as u32))
            .collect();
        let want = if groups == 0 {
            Self::auto_groups(n)
        } else {
            groups
        };
        let p = want.clamp(1, g);
        if p < g {
            coarse.select_nth_unstable_by(p - 1, by);
        }
        coarse[..p].sort_unstable_by(by);
        // Search further groups, in order, until they hold at least n anchors.
        let mut sorted_all = p == g;
        let mut pos = 0;
        while pos < g && (pos < p || ids.len() < n) {
            if pos == p && !sorted_all {
                coarse[p..].sort_unstable_by(by);
                sorted_all = true;
            }
            ids.extend_from_slice(tl.group_ids(coarse[pos].1 as usize));
            pos += 1;
        }
        g as u64
    }

    /// The score of anchor `c` for `q` (`qn` = `|q|²`), computed now.
    pub fn score_one(&self, anchors: MatrixView<'_, f32>, q: &[f32], qn: f32, c: usize) -> f32 {
        self.score(q, qn, anchors.row(c), self.norms[c])
    }
}

/// Keeps the `n` best of `out` (smaller score first, ties by lower id), sorted.
pub fn best_first(out: &mut Vec<(f32, u32)>, n: usize) {
    let by = |a: &(f32, u32), b: &(f32, u32)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
    let n = n.min(out.len());
    if n > 0 && n < out.len() {
        out.select_nth_unstable_by(n - 1, by);
    }
    out.truncate(n);
    out.sort_unstable_by(by);
}

/// One query's anchor scores, filled on demand (an epoch stamp per anchor, so a new query
/// costs nothing to reset).
#[derive(Debug, Default)]
pub struct AnchorScores {
    values: Vec<f32>,
    stamp: Vec<u32>,
    epoch: u32,
    /// `|q|²` of the current query.
    q_norm: f32,
    /// Scratch: the candidate ids of the last [`Router::nearest`].
    candidates: Vec<u32>,
}

impl AnchorScores {
    pub fn new(anchors: usize) -> Self {
        Self {
            values: vec![0.0; anchors],
            stamp: vec![0; anchors],
            epoch: 1,
            q_norm: 0.0,
            candidates: Vec::new(),
        }
    }

    /// Forgets every score: a new query with `|q|² = q_norm`.
    pub fn reset(&mut self, q_norm: f32) {
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.stamp.iter_mut().for_each(|s| *s = 0);
            self.epoch = 1;
        }
        self.q_norm = q_norm;
    }

    /// Sets anchor `c`'s score for the current query (e.g. a weighted multi-vector score).
    pub fn insert(&mut self, c: usize, score: f32) {
        self.set(c, score);
    }

    fn set(&mut self, c: usize, score: f32) {
        self.values[c] = score;
        self.stamp[c] = self.epoch;
    }

    /// The score of anchor `c`, computing it when not known yet.
    pub fn get(&mut self, router: &Router, anchors: &Matrix<f32>, q: &[f32], c: usize) -> f32 {
        if self.stamp[c] != self.epoch {
            let s = router.score_one(anchors.view(), q, self.q_norm, c);
            self.set(c, s);
        }
        self.values[c]
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};

    use super::*;

    fn gaussian(rows: usize, dim: usize, seed: u64, scale_rows: bool) -> Matrix<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut v = Vec::with_capacity(rows * dim);
        for i in 0..rows {
            // Norms that vary by row (as inner-product data does) when asked.
            let s = if scale_rows {
                0.5 + (i % 7) as f32 * 0.25
            } else {
                1.0
            };
            for _ in 0..dim {
                let z: f32 = StandardNormal.sample(&mut rng);
                v.push(s * z);
            }
        }
        Matrix::from_vec(v, dim).unwrap()
    }

    fn brute(anchors: &Matrix<f32>, q: &[f32], order: AnchorOrder, n: usize) -> Vec<u32> {
        let mut all: Vec<(f32, u32)> = anchors
            .view()
            .iter_rows()
            .enumerate()
            .map(|(j, c)| {
                let s = match order {
                    AnchorOrder::InnerProduct => -distance::dot(q, c),
                    _ => distance::l2_sq(q, c),
                };
                (s, j as u32)
            })
            .collect();
        all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        all.into_iter().take(n).map(|(_, j)| j).collect()
    }

    /// Share of the true top-n found, over `queries`.
    fn overlap(
        router: &Router,
        anchors: &Matrix<f32>,
        queries: &Matrix<f32>,
        order: AnchorOrder,
        n: usize,
        groups: usize,
    ) -> f64 {
        let mut scores = AnchorScores::new(anchors.rows());
        let mut out = Vec::new();
        let mut hit = 0usize;
        for q in queries.view().iter_rows() {
            scores.reset(distance::dot(q, q));
            router.nearest(anchors.view(), q, n, groups, &mut scores, &mut out);
            assert_eq!(out.len(), n);
            assert!(out.windows(2).all(|w| w[0].0 <= w[1].0), "best first");
            let truth = brute(anchors, q, order, n);
            hit += out.iter().filter(|(_, c)| truth.contains(c)).count();
            // Scores handed out on demand agree with the ranking's.
            for &(s, c) in &out {
                assert_eq!(
                    scores.get(router, anchors, q, c as usize).to_bits(),
                    s.to_bits()
                );
            }
        }
        hit as f64 / (queries.rows() * n) as f64
    }

    #[test]
    fn exact_router_is_brute_force() {
        let anchors = gaussian(500, 16, 1, true);
        let queries = gaussian(50, 16, 2, false);
        for order in [
            AnchorOrder::L2,
            AnchorOrder::L2Expanded,
            AnchorOrder::InnerProduct,
        ] {
            let r = Router::new(anchors.view(), order, usize::MAX);
            assert!(!r.is_two_level());
            let o = overlap(&r, &anchors, &queries, order, 10, 0);
            assert!(o >= 0.998, "{order:?}: {o}");
        }
    }

    /// A router rebuilt from its stored coarse level (what `coarse.m3` holds) answers every
    /// query exactly as the router that made the level.
    #[test]
    fn router_from_stored_level_equals_the_built_one() {
        let anchors = gaussian(900, 12, 5, true);
        let queries = gaussian(40, 12, 6, false);
        for order in [AnchorOrder::L2Expanded, AnchorOrder::InnerProduct] {
            let built = Router::new(anchors.view(), order, 2);
            let (coarse, labels, probe) = built.coarse_level().expect("two levels");
            let extra = usize::from(order == AnchorOrder::InnerProduct);
            assert_eq!(coarse.dim(), 12 + extra, "{order:?}: augmented under ip");
            assert_eq!(labels.len(), 900);
            assert!(labels.iter().all(|&g| (g as usize) < coarse.rows()));
            let stored = Router::from_stored(anchors.view(), order, coarse, &labels, probe);
            assert!(stored.is_two_level());
            // The routers index the caller's anchors rather than copying them.
            for r in [&built, &stored] {
                assert!(
                    r.heap_bytes() < anchors.as_slice().len() * 4 / 2,
                    "{order:?}: {} bytes for {} bytes of anchors",
                    r.heap_bytes(),
                    anchors.as_slice().len() * 4
                );
            }
            let (mut sa, mut sb) = (AnchorScores::new(900), AnchorScores::new(900));
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for q in queries.view().iter_rows() {
                for groups in [0, 3, 40] {
                    sa.reset(distance::dot(q, q));
                    sb.reset(distance::dot(q, q));
                    let na = built.nearest(anchors.view(), q, 10, groups, &mut sa, &mut a);
                    let nb = stored.nearest(anchors.view(), q, 10, groups, &mut sb, &mut b);
                    assert_eq!(na, nb, "{order:?}: anchors scored");
                    let bits = |v: &[(f32, u32)]| -> Vec<(u32, u32)> {
                        v.iter().map(|&(s, c)| (s.to_bits(), c)).collect()
                    };
                    assert_eq!(bits(&a), bits(&b), "{order:?}, {groups} groups");
                }
            }
        }
        assert!(
            Router::new(anchors.view(), AnchorOrder::L2, usize::MAX)
                .coarse_level()
                .is_none()
        );
    }

    #[test]
    fn two_level_router_finds_most_of_the_top_anchors() {
        let anchors = gaussian(3000, 16, 3, true);
        let queries = gaussian(100, 16, 4, false);
        for order in [AnchorOrder::L2Expanded, AnchorOrder::InnerProduct] {
            let r = Router::new(anchors.view(), order, 2);
            assert!(r.is_two_level());
            // Every group searched: exact.
            let all = overlap(&r, &anchors, &queries, order, 10, usize::MAX);
            assert!(all >= 0.998, "{order:?}: all groups {all}");
            // A third of the groups: most of the top 10, and more groups never find fewer.
            let few = overlap(&r, &anchors, &queries, order, 10, 6);
            let more = overlap(&r, &anchors, &queries, order, 10, 18);
            assert!(
                more >= few && more >= 0.8,
                "{order:?}: 6 groups {few}, 18 groups {more}"
            );
        }
    }

    /// The build stores the coarse level of `GroupIndex::for_routing` (`coarse.m3`); an index
    /// without it gets `Router::new`'s at open. Both must be the same level, or an index would
    /// route differently depending on whether it stored the level.
    #[test]
    fn stored_coarse_level_is_the_one_the_router_builds() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (rows, dim) = (300, 12);
        let v: Vec<f32> = (0..rows * dim)
            .map(|i| {
                // Norms that vary by row, as inner-product anchors' do.
                let x: f32 = StandardNormal.sample(&mut rng);
                x * (0.5 + (i / dim % 5) as f32 * 0.3)
            })
            .collect();
        let anchors = Matrix::from_vec(v, dim).unwrap();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for metric in [Metric::L2, Metric::InnerProduct, Metric::Cosine] {
            let router =
                Router::new_in(anchors.view(), AnchorOrder::base_anchors(metric), 2, &pool);
            let stored =
                GroupIndex::for_routing(anchors.view(), metric != Metric::L2, &pool).into_parts();
            assert_eq!(router.coarse_level(), Some(stored), "{metric:?}");
        }
    }
}

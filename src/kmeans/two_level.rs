//! Two-level nearest-centroid search: which of K centroids are nearest to a row, without
//! scoring all K when K is large (DESIGN §4.2, "two levels when K is large").
//!
//! The K fine centroids are themselves clustered into G ≈ √K groups by a small balanced
//! k-means (the coarse quantiser, as in FAISS's two-level IVF training). A row is scored
//! against the G coarse centres, then only against the fine centroids of its `probe` nearest
//! groups (more groups when those hold fewer than `t` centroids). The cost per row falls from
//! `K·d` to about `(G + probe·K/G)·d`; with G = √K and probe = 8 that is 9√K instead of K
//! (24× fewer at K = 39,000). The answer is approximate: a row whose true nearest centroid sits
//! in an unprobed group gets its best centroid among the probed ones (see [`TwoLevel::nearest`]
//! and the measurements in `docs/BENCHMARKS.md`, "Two-level assignment").
//!
//! Both steps are matrix products: rows are taken in fixed blocks; within a block, the rows
//! probing group g are gathered and multiplied with g's centroids at once. Every choice is
//! ordered by (distance, id), and blocks are fixed row ranges, so the result does not depend
//! on the thread count.

use std::borrow::Cow;

use rayon::prelude::*;

use super::{BalancedKMeansParams, nearest_centroids};
use crate::data::{Matrix, MatrixView};
use crate::linalg;

/// Rows per block of the two-level search.
const BLOCK_ROWS: usize = 2048;

/// When and how to use two levels.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NearestParams {
    /// Use two levels when there are at least this many centroids (below it, the exact scan
    /// of [`nearest_centroids`] is as fast; measured in `docs/BENCHMARKS.md`).
    pub two_level_min_k: usize,
    /// Coarse groups G (`None`: ⌈√K⌉).
    pub groups: Option<usize>,
    /// Coarse groups whose centroids are scored per row.
    pub probe: usize,
    /// Seed of the coarse k-means.
    pub seed: u64,
}

impl NearestParams {
    /// Default `two_level_min_k` (`m3 build --two-level-min-k`).
    pub const DEFAULT_TWO_LEVEL_MIN_K: usize = 4096;
    /// Default `probe` (`m3 build --two-level-probe`).
    pub const DEFAULT_PROBE: usize = 8;
}

impl Default for NearestParams {
    fn default() -> Self {
        Self {
            two_level_min_k: Self::DEFAULT_TWO_LEVEL_MIN_K,
            groups: None,
            probe: Self::DEFAULT_PROBE,
            seed: 0x2_1E7E1,
        }
    }
}

impl NearestParams {
    /// Always the exact scan.
    pub fn exact() -> Self {
        Self {
            two_level_min_k: usize::MAX,
            ..Self::default()
        }
    }

    /// Groups for `k` centroids.
    pub fn groups_for(&self, k: usize) -> usize {
        self.groups
            .unwrap_or_else(|| (k as f64).sqrt().ceil() as usize)
            .clamp(1, k.max(1))
    }
}

/// A two-level grouping by ids only (what [`TwoLevel::into_index`] keeps): coarse centres,
/// and for each group the ids of its centroids, which the caller scores from its own matrix.
/// Holds `G × d` floats and one id per centroid, not a second copy of the centroids.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupIndex {
    coarse: Matrix<f32>,
    ids: Vec<u32>,
    start: Vec<usize>,
    probe: usize,
}

impl GroupIndex {
    /// The grouping from stored parts (`coarse.m3`): coarse centres, each centroid's group
    /// (`labels[j] < coarse.rows()`, checked by the reader) and the probe. Members are in id
    /// order within each group, as [`TwoLevel`] orders them.
    pub fn from_labels(coarse: Matrix<f32>, labels: &[u32], probe: usize) -> Self {
        let g = coarse.rows();
        let members = super::members_by_label(labels, g);
        let mut start = Vec::with_capacity(g + 1);
        let mut ids = Vec::with_capacity(labels.len());
        start.push(0);
        for list in &members {
            ids.extend_from_slice(list);
            start.push(ids.len());
        }
        Self {
            coarse,
            ids,
            start,
            probe: probe.max(1),
        }
    }

    /// The coarse level of anchor routing (what `coarse.m3` stores, and what the query side
    /// rebuilds at open for an index without it): [`TwoLevel::build`] with the default
    /// [`NearestParams`] over `anchors`, or, when `inner_product` (anchors ranked by `−q·c`),
    /// over [`augment_for_inner_product`] of them, where the L2 order of `[q, 0]` is the order
    /// of `−q·c`: groups are then chosen by a distance that agrees with the inner product,
    /// not by `−q·g` of a group mean. Needs at least 2 anchors. Deterministic for any thread
    /// count.
    pub fn for_routing(
        anchors: MatrixView<'_, f32>,
        inner_product: bool,
        pool: &rayon::ThreadPool,
    ) -> Self {
        if inner_product {
            let aug = augment_for_inner_product(anchors, &linalg::row_norms_sq(anchors));
            TwoLevel::build(aug.view(), &NearestParams::default(), pool)
        } else {
            TwoLevel::build(anchors, &NearestParams::default(), pool)
        }
        .into_index()
    }

    /// The parts `coarse.m3` stores: coarse centres, each centroid's group, the probe.
    pub fn into_parts(self) -> (Matrix<f32>, Vec<u32>, usize) {
        let labels = labels_of(&self.ids, &self.start);
        (self.coarse, labels, self.probe)
    }

    pub fn groups(&self) -> usize {
        self.coarse.rows()
    }

    /// `G × d` coarse centres.
    pub fn coarse(&self) -> MatrixView<'_, f32> {
        self.coarse.view()
    }

    /// Ids of group `g`'s centroids.
    pub fn group_ids(&self, g: usize) -> &[u32] {
        &self.ids[self.start[g]..self.start[g + 1]]
    }

    /// Every centroid id, group after group (each group's ids as [`Self::group_ids`] lists
    /// them).
    pub fn ids_by_group(&self) -> &[u32] {
        &self.ids
    }

    /// Each centroid's group.
    pub fn labels(&self) -> Vec<u32> {
        labels_of(&self.ids, &self.start)
    }

    pub fn probe(&self) -> usize {
        self.probe
    }

    /// Bytes held (coarse centres, ids, group starts).
    pub fn heap_bytes(&self) -> usize {
        self.coarse.as_slice().len() * 4 + self.ids.len() * 4 + self.start.len() * 8
    }
}

/// `[c, √(M² − |c|²)]` for every row `c` (`norms[i] = |c_i|²`, M² the largest), DESIGN §4.1:
/// rows of equal norm M, on which the L2 order of a query `[q, 0]` is the order of `−q·c`.
pub fn augment_for_inner_product(rows: MatrixView<'_, f32>, norms: &[f32]) -> Matrix<f32> {
    let max = norms.iter().copied().fold(0.0f32, f32::max);
    let dim = rows.dim() + 1;
    let mut v = Vec::with_capacity(rows.rows() * dim);
    for (c, &n) in rows.iter_rows().zip(norms) {
        v.extend_from_slice(c);
        v.push((max - n).max(0.0).sqrt());
    }
    Matrix::from_vec(v, dim).expect("dim ≥ 1")
}

fn labels_of(ids: &[u32], start: &[usize]) -> Vec<u32> {
    let mut labels = vec![0u32; ids.len()];
    for g in 0..start.len().saturating_sub(1) {
        for &id in &ids[start[g]..start[g + 1]] {
            labels[id as usize] = g as u32;
        }
    }
    labels
}

/// The coarse quantiser over a set of fine centroids.
#[derive(Debug, Clone, PartialEq)]
pub struct TwoLevel {
    /// `G × d` coarse centres.
    coarse: Matrix<f32>,
    coarse_norms: Vec<f32>,
    /// Fine centroids reordered group by group: group g is rows `start[g]..start[g + 1]`.
    grouped: Matrix<f32>,
    grouped_norms: Vec<f32>,
    /// Original id of every row of `grouped`.
    ids: Vec<u32>,
    start: Vec<usize>,
    probe: usize,
}

impl TwoLevel {
    /// Groups `centroids` under ⌈√K⌉ (or `params.groups`) coarse centres: balanced k-means of
    /// the centroids (cap 2× the mean group), each centroid in the group of its nearest coarse
    /// centre. Deterministic for a seed and any thread count.
    pub fn build(
        centroids: MatrixView<'_, f32>,
        params: &NearestParams,
        pool: &rayon::ThreadPool,
    ) -> Self {
        let k = centroids.rows();
        let g = params.groups_for(k);
        let mut km = BalancedKMeansParams::new(g);
        km.kmeans.iters = 8;
        km.kmeans.seed = params.seed;
        km.max_size_factor = 2.0;
        km.nearest = NearestParams::exact();
        let coarse = km
            .train(centroids, pool)
            .expect("1 ≤ groups ≤ k and finite centroids")
            .centroids;
        let (labels, _) = pool
            .install(|| super::assign_capped(centroids, coarse.view(), km.cap(k), km.candidates));
        Self::from_labels(centroids, coarse, &labels, params.probe)
    }

    /// The level from stored parts (`coarse.m3`): coarse centres, each centroid's group
    /// (`labels[j] < coarse.rows()`, checked by the reader) and the probe.
    pub fn from_parts(
        centroids: MatrixView<'_, f32>,
        coarse: Matrix<f32>,
        labels: &[u32],
        probe: usize,
    ) -> Self {
        assert_eq!(
            labels.len(),
            centroids.rows(),
            "TwoLevel: one label per centroid"
        );
        assert_eq!(coarse.dim(), centroids.dim(), "TwoLevel: coarse dimension");
        Self::from_labels(centroids, coarse, labels, probe)
    }

    /// Bytes held: coarse centres, the grouped copy of the fine centroids, their norms, ids
    /// and group starts.
    pub fn heap_bytes(&self) -> usize {
        (self.coarse.as_slice().len()
            + self.coarse_norms.len()
            + self.grouped.as_slice().len()
            + self.grouped_norms.len()
            + self.ids.len())
            * 4
            + self.start.len() * 8
    }

    /// Each centroid's group (the inverse of the grouping; what `coarse.m3` stores).
    pub fn labels(&self) -> Vec<u32> {
        labels_of(&self.ids, &self.start)
    }

    /// The grouping without the grouped copy of the centroids: for a caller that keeps the
    /// centroids itself and scores a group's members through their ids (query routing).
    pub fn into_index(self) -> GroupIndex {
        GroupIndex {
            coarse: self.coarse,
            ids: self.ids,
            start: self.start,
            probe: self.probe,
        }
    }

    /// Coarse groups scored per row.
    pub fn probe(&self) -> usize {
        self.probe
    }

    fn from_labels(
        centroids: MatrixView<'_, f32>,
        coarse: Matrix<f32>,
        labels: &[u32],
        probe: usize,
    ) -> Self {
        let g = coarse.rows();
        let members = super::members_by_label(labels, g);
        let mut start = Vec::with_capacity(g + 1);
        let mut ids = Vec::with_capacity(labels.len());
        let mut grouped = Vec::with_capacity(centroids.as_slice().len());
        start.push(0);
        for list in &members {
            for &j in list {
                ids.push(j);
                grouped.extend_from_slice(centroids.row(j as usize));
            }
            start.push(ids.len());
        }
        let grouped = Matrix::from_vec(grouped, centroids.dim()).expect("dim ≥ 1");
        let grouped_norms = linalg::row_norms_sq(grouped.view());
        Self {
            coarse_norms: linalg::row_norms_sq(coarse.view()),
            coarse,
            grouped,
            grouped_norms,
            ids,
            start,
            probe: probe.max(1),
        }
    }

    pub fn groups(&self) -> usize {
        self.coarse.rows()
    }

    /// `G × d` coarse centres.
    pub fn coarse(&self) -> MatrixView<'_, f32> {
        self.coarse.view()
    }

    /// Group `g`'s fine centroids (rows) and their original ids.
    pub fn group(&self, g: usize) -> (MatrixView<'_, f32>, &[u32]) {
        let (lo, hi) = (self.start[g], self.start[g + 1]);
        (self.grouped.view().slice_rows(lo, hi), &self.ids[lo..hi])
    }

    /// Fine centroids.
    pub fn k(&self) -> usize {
        self.ids.len()
    }

    /// The `t` nearest fine centroids (ids, squared L2 distances, nearest first, ties to the
    /// lower id) of every row of `data`, among the centroids of the row's `probe` nearest
    /// groups (or more groups, until they hold at least `t` centroids). Same layout as
    /// [`nearest_centroids`]. Runs on the current rayon pool.
    pub fn nearest(&self, data: MatrixView<'_, f32>, t: usize) -> (Vec<u32>, Vec<f32>) {
        assert_eq!(
            data.dim(),
            self.grouped.dim(),
            "TwoLevel: dimension mismatch"
        );
        let t = t.clamp(1, self.k().max(1));
        let n = data.rows();
        let mut ids = vec![0u32; n * t];
        let mut dists = vec![0f32; n * t];
        ids.par_chunks_mut(BLOCK_ROWS * t)
            .zip(dists.par_chunks_mut(BLOCK_ROWS * t))
            .enumerate()
            .for_each(|(b, (ids, dists))| {
                let first = b * BLOCK_ROWS;
                let rows = ids.len() / t;
                self.nearest_block(data.slice_rows(first, first + rows), t, ids, dists);
            });
        (ids, dists)
    }

    fn nearest_block(
        &self,
        block: MatrixView<'_, f32>,
        t: usize,
        ids: &mut [u32],
        dists: &mut [f32],
    ) {
        let rows = block.rows();
        let dim = block.dim();
        let x_norms = linalg::row_norms_sq(block);
        // 1. The groups each row probes: its `probe` nearest, more while they hold < t.
        let g = self.groups();
        let mut coarse_dots = Vec::new();
        linalg::dot_products(block, self.coarse.view(), &mut coarse_dots);
        let mut by_group: Vec<Vec<u32>> = vec![Vec::new(); g];
        let mut order: Vec<(f32, u32)> = Vec::with_capacity(g);
        let by = |a: &(f32, u32), b: &(f32, u32)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
        for i in 0..rows {
            order.clear();
            order.extend(
                coarse_dots[i * g..(i + 1) * g]
                    .iter()
                    .zip(&self.coarse_norms)
                    .enumerate()
                    .map(|(j, (&d, &cn))| (cn - 2.0 * d, j as u32)),
            );
            let p = self.probe.min(g);
            if p < g {
                order.select_nth_unstable_by(p - 1, by);
            }
            order[..p].sort_unstable_by(by);
            let mut sorted_all = p == g;
            let mut held = 0usize;
            let mut pos = 0usize;
            while pos < g && (pos < p || held < t) {
                if pos == p && !sorted_all {
                    order[p..].sort_unstable_by(by);
                    sorted_all = true;
                }
                let grp = order[pos].1 as usize;
                by_group[grp].push(i as u32);
                held += self.start[grp + 1] - self.start[grp];
                pos += 1;
            }
        }
        // 2. Per group, one product of its probing rows with its centroids; merge into each
        // row's sorted top-t list, ordered by (distance, id).
        let mut best: Vec<Vec<(f32, u32)>> = vec![Vec::with_capacity(t + 1); rows];
        let mut gathered: Vec<f32> = Vec::new();
        let mut dots: Vec<f32> = Vec::new();
        for (grp, members) in by_group.iter().enumerate() {
            let (lo, hi) = (self.start[grp], self.start[grp + 1]);
            if members.is_empty() || lo == hi {
                continue;
            }
            gathered.clear();
            for &i in members {
                gathered.extend_from_slice(block.row(i as usize));
            }
            let xs = MatrixView::new(&gathered, dim).expect("dim ≥ 1");
            let cs = self.grouped.view().slice_rows(lo, hi);
            linalg::dot_products(xs, cs, &mut dots);
            let width = hi - lo;
            for (r, &i) in members.iter().enumerate() {
                let list = &mut best[i as usize];
                let xn = x_norms[i as usize];
                for (j, &d) in dots[r * width..(r + 1) * width].iter().enumerate() {
                    let dist = (xn + self.grouped_norms[lo + j] - 2.0 * d).max(0.0);
                    let id = self.ids[lo + j];
                    if list.len() == t {
                        let w = list[t - 1];
                        if dist.total_cmp(&w.0).then(id.cmp(&w.1)).is_ge() {
                            continue;
                        }
                    }
                    let pos =
                        list.partition_point(|e| e.0.total_cmp(&dist).then(e.1.cmp(&id)).is_lt());
                    list.insert(pos, (dist, id));
                    list.truncate(t);
                }
            }
        }
        for (i, list) in best.iter().enumerate() {
            for (j, &(d, c)) in list.iter().enumerate() {
                ids[i * t + j] = c;
                dists[i * t + j] = d;
            }
        }
    }
}

/// Nearest centroids of many rows, exact or two-level by the number of centroids: the one
/// entry point of the build for "which anchors are nearest to these rows".
#[derive(Debug, Clone)]
pub struct CentroidSearch<'a> {
    centroids: MatrixView<'a, f32>,
    /// Borrowed when the caller keeps the level (the build's trained model), so searching
    /// does not copy its grouped centroids.
    two_level: Option<Cow<'a, TwoLevel>>,
}

impl<'a> CentroidSearch<'a> {
    /// Builds the coarse level when `centroids` has at least `params.two_level_min_k` rows.
    pub fn new(
        centroids: MatrixView<'a, f32>,
        params: &NearestParams,
        pool: &rayon::ThreadPool,
    ) -> Self {
        let two_level = (centroids.rows() >= params.two_level_min_k.max(2))
            .then(|| Cow::Owned(TwoLevel::build(centroids, params, pool)));
        Self {
            centroids,
            two_level,
        }
    }

    /// From an already built coarse level (`None`: exact scan), borrowed. Panics when
    /// `two_level` was built over a different number of centroids.
    pub fn from_parts(centroids: MatrixView<'a, f32>, two_level: Option<&'a TwoLevel>) -> Self {
        if let Some(tl) = two_level {
            assert_eq!(
                tl.k(),
                centroids.rows(),
                "CentroidSearch: two levels of other centroids"
            );
        }
        Self {
            centroids,
            two_level: two_level.map(Cow::Borrowed),
        }
    }

    /// Always the exact scan.
    pub fn exact(centroids: MatrixView<'a, f32>) -> Self {
        Self {
            centroids,
            two_level: None,
        }
    }

    pub fn centroids(&self) -> MatrixView<'a, f32> {
        self.centroids
    }

    pub fn two_level(&self) -> Option<&TwoLevel> {
        self.two_level.as_deref()
    }

    /// Takes the level out (built by [`CentroidSearch::new`], or copied when borrowed).
    pub fn into_two_level(self) -> Option<TwoLevel> {
        self.two_level.map(Cow::into_owned)
    }

    /// See [`nearest_centroids`] / [`TwoLevel::nearest`]. Runs on the current rayon pool.
    pub fn nearest(&self, data: MatrixView<'_, f32>, t: usize) -> (Vec<u32>, Vec<f32>) {
        match self.two_level.as_deref() {
            Some(tl) => tl.nearest(data, t),
            None => nearest_centroids(data, self.centroids, t),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};

    use super::*;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    /// `rows` points around `blobs` Gaussian centres (spread `spread`, unit noise).
    fn clustered(rows: usize, blobs: usize, dim: usize, spread: f32, seed: u64) -> Matrix<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let centres: Vec<f32> = (0..blobs * dim)
            .map(|_| {
                let z: f32 = StandardNormal.sample(&mut rng);
                spread * z
            })
            .collect();
        let mut v = Vec::with_capacity(rows * dim);
        for i in 0..rows {
            let b = (i * 7919) % blobs;
            for d in 0..dim {
                let z: f32 = StandardNormal.sample(&mut rng);
                v.push(centres[b * dim + d] + z);
            }
        }
        Matrix::from_vec(v, dim).unwrap()
    }

    #[test]
    fn probing_every_group_is_the_exact_scan() {
        let data = clustered(3000, 40, 12, 4.0, 1);
        let cents = clustered(300, 40, 12, 4.0, 2);
        let p = pool(2);
        let params = NearestParams {
            probe: usize::MAX,
            ..NearestParams::default()
        };
        let tl = TwoLevel::build(cents.view(), &params, &p);
        assert_eq!(tl.k(), 300);
        assert_eq!(tl.groups(), 18); // ⌈√300⌉
        let (ids, dists) = p.install(|| tl.nearest(data.view(), 5));
        let (eids, edists) = nearest_centroids(data.view(), cents.view(), 5);
        let mut differ = 0;
        for i in 0..ids.len() {
            assert!(
                (dists[i] - edists[i]).abs() <= 1e-3 * (1.0 + edists[i]),
                "row {}",
                i / 5
            );
            differ += usize::from(ids[i] != eids[i]);
        }
        // Ids may differ only on floating-point near-ties.
        assert!(
            differ * 1000 <= ids.len(),
            "{differ} of {} ids differ",
            ids.len()
        );
    }

    #[test]
    fn probing_a_few_groups_finds_almost_every_nearest_centroid() {
        // Centroids trained on the data, as in the build (400 blobs, 1024 anchors).
        let data = clustered(20_000, 400, 32, 3.0, 3);
        let p = pool(2);
        let mut km = BalancedKMeansParams::new(1024);
        km.kmeans.iters = 4;
        km.nearest = NearestParams::exact();
        let cents = km.train(data.view(), &p).unwrap().centroids;
        let (truth, truth_d) = nearest_centroids(data.view(), cents.view(), 1);
        let mut last = 0.0;
        for probe in [1, 4, 16] {
            let params = NearestParams {
                probe,
                ..NearestParams::default()
            };
            let tl = TwoLevel::build(cents.view(), &params, &p);
            let (ids, d) = p.install(|| tl.nearest(data.view(), 1));
            let acc =
                ids.iter().zip(&truth).filter(|(a, b)| a == b).count() as f64 / truth.len() as f64;
            // More probes never find fewer (the probed groups are nested).
            assert!(acc >= last, "probe {probe}: {acc} < {last}");
            last = acc;
            // A miss is a near miss: Σ distances to the found centroids is within 2% of Σ to
            // the true nearest ones.
            let ratio = d.iter().map(|&a| a as f64).sum::<f64>()
                / truth_d.iter().map(|&b| b as f64).sum::<f64>();
            assert!(
                ratio >= 1.0 - 1e-5,
                "probe {probe}: ratio {ratio} below the exact scan"
            );
            if probe >= 4 {
                assert!(ratio <= 1.02, "probe {probe}: distance ratio {ratio}");
            }
        }
        assert!(last >= 0.97, "probe 16: accuracy {last}");
    }

    #[test]
    fn deterministic_for_any_thread_count() {
        let data = clustered(5000, 50, 16, 3.0, 5);
        let cents = clustered(900, 50, 16, 3.0, 6);
        let params = NearestParams::default();
        let (a, b) = (pool(1), pool(3));
        let ta = TwoLevel::build(cents.view(), &params, &a);
        let tb = TwoLevel::build(cents.view(), &params, &b);
        assert_eq!(ta, tb);
        let ra = a.install(|| ta.nearest(data.view(), 8));
        let rb = b.install(|| tb.nearest(data.view(), 8));
        assert_eq!(ra.0, rb.0);
        assert_eq!(
            ra.1.iter().map(|d| d.to_bits()).collect::<Vec<_>>(),
            rb.1.iter().map(|d| d.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn balanced_training_with_two_levels_respects_the_cap() {
        let data = clustered(12_000, 30, 8, 2.0, 7);
        let p = pool(2);
        let mut km = BalancedKMeansParams::new(400);
        km.kmeans.iters = 5;
        km.max_size_factor = 1.5;
        km.nearest = NearestParams {
            two_level_min_k: 2,
            probe: 4,
            ..NearestParams::default()
        };
        let trained = km.train(data.view(), &p).unwrap();
        let cap = km.cap(data.rows());
        let search = CentroidSearch::new(trained.centroids.view(), &km.nearest, &p);
        assert!(search.two_level().is_some());
        let (labels, inertia) =
            p.install(|| crate::kmeans::assign_capped_with(data.view(), &search, cap, 8));
        let mut sizes = vec![0usize; 400];
        for &l in &labels {
            sizes[l as usize] += 1;
        }
        assert!(
            sizes.iter().all(|&s| s <= cap),
            "cap {cap}, max {:?}",
            sizes.iter().max()
        );
        // Two-level training is not much worse than exact training.
        let mut exact = km.clone();
        exact.nearest = NearestParams::exact();
        let e = exact.train(data.view(), &p).unwrap();
        let (_, e_inertia) =
            p.install(|| crate::kmeans::assign_capped(data.view(), e.centroids.view(), cap, 8));
        assert!(
            inertia <= 1.05 * e_inertia,
            "{inertia} vs exact {e_inertia}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn returns_t_distinct_sorted_candidates(
            seed in 0u64..1000,
            k in 2usize..200,
            t in 1usize..12,
            probe in 1usize..4,
        ) {
            let data = clustered(300, 7, 5, 3.0, seed);
            let cents = clustered(k, 7, 5, 3.0, seed + 1);
            let p = pool(2);
            let params = NearestParams { probe, ..NearestParams::default() };
            let tl = TwoLevel::build(cents.view(), &params, &p);
            let t_eff = t.min(k);
            let (ids, dists) = p.install(|| tl.nearest(data.view(), t));
            prop_assert_eq!(ids.len(), 300 * t_eff);
            for i in 0..300 {
                let row = &ids[i * t_eff..(i + 1) * t_eff];
                let mut s = row.to_vec();
                s.sort_unstable();
                s.dedup();
                prop_assert_eq!(s.len(), t_eff, "duplicate candidates");
                prop_assert!(row.iter().all(|&c| (c as usize) < k));
                let d = &dists[i * t_eff..(i + 1) * t_eff];
                prop_assert!(d.windows(2).all(|w| w[0] <= w[1]));
                // Every reported distance is the true distance to that centroid.
                for (&c, &dc) in row.iter().zip(d) {
                    let exact = crate::distance::reference::l2_sq_f32(
                        data.row(i), cents.row(c as usize));
                    prop_assert!((dc - exact).abs() <= 1e-3 * (1.0 + exact));
                }
            }
        }
    }
}

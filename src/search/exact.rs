//! Exact k-NN and range search with metric pruning (DESIGN §4.5, after the M-Index).
//!
//! Every record has two lower bounds on its distance to the query that cost no I/O:
//! - the **key bound**, from the record's key `k = |x − c|` (its distance to its cluster's
//!   centroid, `keys.m3`) and the query's distance to the centroid: `|q − x| ≥ |D − k|` for L2
//!   (triangle inequality), `−q·x ≥ −q·c − |q|·k` for inner product (Cauchy–Schwarz on the
//!   residual: the tightest bound a ball of radius k around c allows, so no norm augmentation
//!   is needed). Members are stored in key order, so the records whose key can still hold an
//!   answer are one contiguous range per cluster, found by binary search, and a whole cluster
//!   goes when even its `[r_min, r_max]` cannot;
//! - the **PQ bound**, from the PQ reconstruction `x̂` and the stored error `e = |x − x̂|`:
//!   `|q − x| ≥ |q − x̂| − e`, `−q·x ≥ −q·x̂ − |q|·e`.
//!
//! The same quantities give an upper bound (`|q − x̂| + e`), so before any read the
//! `k·(1 + spill_max)`-th smallest upper bound is a radius that must hold the k nearest distinct
//! vectors (a vector is stored at most `1 + spill_max` times). Clusters are visited by their
//! lower bound and the visit stops when the next bound exceeds that radius. Then the surviving
//! candidates are read, best PQ estimate first: a first small batch makes the k-th exact
//! distance tight, and the following batches read only the candidates whose lower bound is
//! still below it. Range search is the same with the radius fixed.
//!
//! Multi-vector indexes (DESIGN §4.6, module [`super::blocks`]): with the build weights the
//! stored coordinates already give the weighted distance, so nothing changes. With other query
//! weights (factors `ω_b` on stored coordinates, 0 for an absent block), inner product and
//! cosine become a plain inner-product query `ω ⊙ q`, so every bound above holds as written;
//! weighted L2 `Σ_b ω_b |q_b − x_b|²` keeps its own centroid distances and PQ corrections, and
//! its key and error bounds scale by `√ω_max` (a distance in the weighted space is at most
//! `√ω_max` times the plain one) and, for the far side of a key range, by `√ω_min` (0 when a
//! block is absent, which only stops that side from pruning).
//!
//! Every bound is loosened by a small relative slack (`SLACK`, 1e-4, ≥ 100× the f32 rounding
//! of the quantities involved), so rounding can cost a little pruning but never an answer.

use std::collections::HashSet;

use super::SearchError;
use super::blocks::Weighting;
use super::index::Index;
use super::params::QueryStats;
use super::read::{ReadPlan, record_vector};
use crate::distance::{self, Metric};
use crate::exact::{Neighbor, TopK};
use crate::io::AlignedBuf;
use crate::pq::{adc_scan, adc_score};

/// Relative slack on every bound (see the module docs).
const SLACK: f32 = 1e-4;
/// Absolute slack, for bounds near zero.
const SLACK_ABS: f32 = 1e-6;

/// Knobs of exact search; the defaults suit every index (they change cost, never results).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExactParams {
    /// Records read in the first batch (best PQ estimates), which sets the radius for the rest.
    pub first_batch: usize,
    /// Most records per later batch (bounds the read buffer); when more candidates than this
    /// survive the bounds, they are read in record order rather than best estimate first.
    pub max_batch: usize,
    /// Clusters (nearest by bound) whose candidates feed the first batch.
    pub warm_clusters: usize,
}

impl Default for ExactParams {
    fn default() -> Self {
        Self {
            first_batch: 64,
            max_batch: 4096,
            warm_clusters: 8,
        }
    }
}

/// A record that may hold an answer: its lower bound, its PQ estimate, and its index.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    lower: f32,
    approx: f32,
    record: u32,
}

/// Per-thread scratch for exact and range queries on one index.
pub struct ExactSearcher<'a> {
    index: &'a Index,
    params: ExactParams,
    query: Vec<f32>,
    table: Vec<f32>,
    /// Per cluster: the query's internal distance to the centroid (`|q − c|²` or `−q·c`).
    centroid_dist: Vec<f32>,
    order: Vec<(f32, u32)>,
    scores: Vec<f32>,
    candidates: Vec<Candidate>,
    batch: Vec<u32>,
    plan: ReadPlan,
    buf: AlignedBuf,
    scratch: Vec<f32>,
    /// Multi-vector indexes: the query block weights (`None`: the build weights).
    block_weights: Option<Vec<f32>>,
    /// The current query's weighting when it needs weighted L2 (module docs); `None` on every
    /// other path.
    weighted_l2: Option<Weighting>,
    /// `√ω_min`, `√ω_max` of the current query under weighted L2 (1, 1 otherwise).
    key_scale: (f32, f32),
    /// `ω ⊙ q` under weighted L2 (its inner products with residuals give the PQ table).
    weighted_query: Vec<f32>,
}

impl<'a> ExactSearcher<'a> {
    /// An exact searcher over `index` with the default [`ExactParams`].
    pub fn new(index: &'a Index) -> Self {
        Self::with_params(index, ExactParams::default())
    }

    /// An exact searcher over `index` with `params`.
    pub fn with_params(index: &'a Index, params: ExactParams) -> Self {
        Self {
            index,
            params,
            query: Vec::with_capacity(index.dim),
            table: Vec::new(),
            centroid_dist: vec![0.0; index.n_clusters()],
            order: Vec::new(),
            scores: Vec::new(),
            candidates: Vec::new(),
            batch: Vec::new(),
            plan: ReadPlan::default(),
            buf: AlignedBuf::new(),
            scratch: vec![0.0; index.dim],
            block_weights: None,
            weighted_l2: None,
            key_scale: (1.0, 1.0),
            weighted_query: Vec::new(),
        }
    }

    /// Multi-vector indexes: the block weights of the following queries, one per block of the
    /// index (0 = the query does not give the block), in the units of
    /// [`super::SearchParams::block_weights`]; `None` = the build weights.
    pub fn set_block_weights(&mut self, weights: Option<&[f32]>) -> Result<(), SearchError> {
        match (&self.index.blocks, weights) {
            (None, Some(_)) => {
                return Err(SearchError::Param {
                    name: "block_weights",
                    what: "the index has no blocks (built from a single --base)".into(),
                });
            }
            (Some(b), Some(w)) => b.check_weights(w)?,
            _ => {}
        }
        self.block_weights = weights.map(<[f32]>::to_vec);
        Ok(())
    }

    /// The true `k` nearest vectors of `q` (ids and internal distances, best first; equal
    /// distances may resolve to either id) and what finding them cost.
    pub fn knn(&mut self, q: &[f32], k: usize) -> Result<(Vec<Neighbor>, QueryStats), SearchError> {
        self.knn_within(q, k, f32::INFINITY)
    }

    /// [`Self::knn`] of the vectors within `radius` (internal units) only: the true `k`
    /// nearest among them, fewer when fewer are that near. Every bound prunes against the
    /// radius from the start (the second round of a sharded exact query passes the k-th
    /// distance another shard already found).
    pub fn knn_within(
        &mut self,
        q: &[f32],
        k: usize,
        radius: f32,
    ) -> Result<(Vec<Neighbor>, QueryStats), SearchError> {
        let idx = self.index;
        idx.check_query_as(0, q, exact_scoring(self.block_weights.as_deref()))?;
        if k == 0 {
            return Err(SearchError::KZero);
        }
        if k as u64 > idx.live_vectors() {
            return Err(SearchError::KTooLarge {
                k,
                n: idx.live_vectors(),
            });
        }
        let mut stats = QueryStats::default();
        self.prepare(q)?;
        self.order_clusters();
        // Upper bounds per record: each id may hold up to 1 + spill_max of the best (never
        // more than there are records).
        let copies = 1 + idx.meta.spill_max as usize;
        let upper_k = k
            .saturating_mul(copies)
            .min(usize::try_from(idx.meta.n_records).unwrap_or(usize::MAX))
            .max(1);
        let mut upper = TopK::new(upper_k);
        let mut results = TopK::new(k);
        let mut ids = HashSet::new();
        // Phase 1: the nearest clusters by bound, then one small batch of the best PQ
        // estimates, which makes the k-th exact distance tight.
        let visited = self.collect(
            0,
            self.params.warm_clusters,
            &mut upper,
            radius,
            None,
            &mut stats,
        );
        self.sort_candidates_by_estimate();
        let first = self
            .params
            .first_batch
            .max(2 * k)
            .min(self.candidates.len());
        self.batch.clear();
        self.batch
            .extend(self.candidates[..first].iter().map(|c| c.record));
        self.candidates.drain(..first);
        self.read_offer(&mut stats, &mut results, &mut ids)?;
        // Phase 2: the other clusters against the exact radius, then what is left: best
        // estimate first, or, when the bounds left more than a batch (weak pruning: high
        // intrinsic dimension, absent blocks), in record order, so that every sector is read
        // once, in long runs, instead of again for each record it holds.
        let tight = results.threshold().min(radius);
        self.collect(visited, usize::MAX, &mut upper, tight, None, &mut stats);
        if self.candidates.len() > self.params.max_batch.max(1) {
            self.candidates.sort_unstable_by_key(|c| c.record);
        } else {
            self.sort_candidates_by_estimate();
        }
        let mut next = 0;
        loop {
            let bound = upper.threshold().min(results.threshold()).min(radius);
            self.batch.clear();
            while next < self.candidates.len() && self.batch.len() < self.params.max_batch.max(1) {
                let c = self.candidates[next];
                next += 1;
                if c.lower <= bound {
                    self.batch.push(c.record);
                }
            }
            if self.batch.is_empty() {
                break;
            }
            self.read_offer(&mut stats, &mut results, &mut ids)?;
        }
        let mut found = results.into_sorted();
        found.retain(|n| n.dist <= radius);
        Ok((found, stats))
    }

    /// Per cluster of the index, a lower bound (internal units) on the distance of `q` to
    /// every vector within `radii[c] = [r_min, r_max]` of centroid `c`, the same bound the
    /// cluster order of [`Self::knn`] and [`Self::range`] prunes by; `+∞` where `radii[c]` is
    /// `None` (the cluster holds nothing). The router of a sharded index ranks shards with it:
    /// the centroids are global, the radii come from the shard owning each cluster.
    pub fn cluster_bounds(
        &mut self,
        q: &[f32],
        radii: &[Option<[f32; 2]>],
    ) -> Result<Vec<f32>, SearchError> {
        let idx = self.index;
        idx.check_query_as(0, q, exact_scoring(self.block_weights.as_deref()))?;
        if radii.len() != idx.n_clusters() {
            return Err(SearchError::Param {
                name: "radii",
                what: format!(
                    "{} radii for an index of {} clusters",
                    radii.len(),
                    idx.n_clusters()
                ),
            });
        }
        self.prepare(q)?;
        let bound = self.bounds();
        Ok(radii
            .iter()
            .enumerate()
            .map(|(c, r)| match r {
                Some([r_min, r_max]) => {
                    bound.cluster(self.centroid_dist[c], idx.centroid_norms[c], *r_min, *r_max)
                }
                None => f32::INFINITY,
            })
            .collect())
    }

    fn sort_candidates_by_estimate(&mut self) {
        self.candidates
            .sort_unstable_by(|a, b| a.approx.total_cmp(&b.approx).then(a.record.cmp(&b.record)));
    }

    /// Reads `self.batch` and offers every distinct id to `results`.
    fn read_offer(
        &mut self,
        stats: &mut QueryStats,
        results: &mut TopK,
        ids: &mut HashSet<u32>,
    ) -> Result<(), SearchError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.read_batch(stats, |n| {
            if ids.insert(n.id) {
                results.push(n);
            }
        })
    }

    /// Every vector within `radius` of `q`, in the metric's natural unit (squared L2 ≤ radius;
    /// inner product or cosine similarity ≥ radius), best first (ids and internal distances).
    pub fn range(
        &mut self,
        q: &[f32],
        radius: f32,
    ) -> Result<(Vec<Neighbor>, QueryStats), SearchError> {
        let idx = self.index;
        idx.check_query_as(0, q, exact_scoring(self.block_weights.as_deref()))?;
        if radius.is_nan() {
            return Err(SearchError::Param {
                name: "radius",
                what: "radius is NaN".into(),
            });
        }
        let r = idx.metric.from_natural(radius);
        let mut stats = QueryStats::default();
        self.prepare(q)?;
        self.order_clusters();
        let mut unused = TopK::new(1);
        self.collect(0, usize::MAX, &mut unused, r, Some(r), &mut stats);
        self.candidates.sort_unstable_by_key(|c| c.record);
        let mut found = Vec::new();
        let mut ids = HashSet::new();
        let mut next = 0;
        let limit = self.params.max_batch.max(1);
        while next < self.candidates.len() {
            let end = (next + limit).min(self.candidates.len());
            self.batch.clear();
            self.batch
                .extend(self.candidates[next..end].iter().map(|c| c.record));
            next = end;
            self.read_batch(&mut stats, |n| {
                if n.dist <= r && ids.insert(n.id) {
                    found.push(n);
                }
            })?;
        }
        found.sort_by(Neighbor::cmp_total);
        Ok((found, stats))
    }

    /// Query transform (cosine: unit norm; blocks: stored coordinates and weights), PQ table
    /// and centroid distances.
    fn prepare(&mut self, q: &[f32]) -> Result<(), SearchError> {
        let idx = self.index;
        idx.exact_aux()?;
        // The previous query's candidates (their bounds were for another query).
        self.candidates.clear();
        self.query.clear();
        self.query.extend_from_slice(q);
        self.weighted_l2 = None;
        self.key_scale = (1.0, 1.0);
        if let Some(b) = &idx.blocks {
            let w = b.weighting(self.block_weights.as_deref());
            b.prepare(&mut self.query, &w, idx.metric)
                .map_err(|()| SearchError::ZeroQuery { query: 0 })?;
            if !w.unit {
                if idx.metric == Metric::L2 {
                    let lo = w.omega.iter().copied().fold(f32::INFINITY, f32::min);
                    self.key_scale = (lo.sqrt(), w.omega_max.sqrt());
                    w.weighted_query(&b.layout, &self.query, &mut self.weighted_query);
                    self.weighted_l2 = Some(w);
                } else {
                    // −Σ_b ω_b q_b·x_b = −(ω ⊙ q)·x: a plain inner-product query.
                    let mut wq = Vec::with_capacity(self.query.len());
                    w.weighted_query(&b.layout, &self.query, &mut wq);
                    self.query = wq;
                }
            }
        } else if idx.metric == Metric::Cosine {
            let n = distance::dot(q, q).sqrt();
            self.query.iter_mut().for_each(|v| *v /= n);
        }
        let q = &self.query;
        match (&self.weighted_l2, &idx.blocks) {
            (Some(w), Some(b)) => {
                idx.pq.ip_table(&self.weighted_query, &mut self.table);
                for (c, d) in self.centroid_dist.iter_mut().enumerate() {
                    *d = w.distance(&b.layout, Metric::L2, q, idx.centroids.row(c));
                }
            }
            _ => {
                idx.pq.ip_table(q, &mut self.table);
                for (c, d) in self.centroid_dist.iter_mut().enumerate() {
                    let centroid = idx.centroids.row(c);
                    *d = match idx.metric {
                        // Direct, not |q|² + |c|² − 2q·c: the bounds need it without
                        // cancellation.
                        Metric::L2 => distance::l2_sq(q, centroid),
                        _ => -distance::dot(q, centroid),
                    };
                }
            }
        }
        Ok(())
    }

    /// Lists the non-empty clusters by the lower bound of their members' distances.
    fn order_clusters(&mut self) {
        let idx = self.index;
        let bound = self.bounds();
        self.order.clear();
        for (c, e) in idx.entries.iter().enumerate() {
            if e.records > 0 || !idx.live.in_cluster(c).is_empty() {
                let cd = self.centroid_dist[c];
                // Radii over base and live inserted records alike.
                let [r_min, r_max] = idx.live.radii.get(c).copied().unwrap_or([e.r_min, e.r_max]);
                let lower = bound.cluster(cd, idx.centroid_norms[c], r_min, r_max);
                self.order.push((lower, c as u32));
            }
        }
        self.order
            .sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    }

    fn bounds(&self) -> Bounds {
        Bounds {
            metric: self.index.metric,
            q_norm: distance::dot(&self.query, &self.query).sqrt(),
            key_lo: self.key_scale.0,
            key_hi: self.key_scale.1,
        }
    }

    /// Visits at most `max_visits` clusters of `self.order`, starting at `from`, and adds to
    /// `self.candidates` every record whose lower bound is within the radius: `fixed` (range
    /// search), or else the smaller of `exact` (the k-th exact distance so far) and the
    /// `upper.k()`-th smallest upper bound seen (kept in `upper`). Stops at the first cluster
    /// whose bound exceeds the radius (the order is by bound) and drops the candidates a
    /// tightened radius excludes. Returns where it stopped (`self.order.len()` when no
    /// cluster is left to visit).
    fn collect(
        &mut self,
        from: usize,
        max_visits: usize,
        upper: &mut TopK,
        exact: f32,
        fixed: Option<f32>,
        stats: &mut QueryStats,
    ) -> usize {
        let idx = self.index;
        let aux = idx.exact.get().expect("prepare loaded it");
        let bound = self.bounds();
        let m = idx.pq.subspaces();
        let radius_now = |upper: &TopK| fixed.unwrap_or_else(|| upper.threshold().min(exact));
        let mut pos = from;
        while pos < self.order.len() && pos - from < max_visits {
            let (cluster_lower, c) = self.order[pos];
            let radius = radius_now(upper);
            if cluster_lower > radius {
                stats.clusters_skipped += (self.order.len() - pos) as u64;
                pos = self.order.len();
                break;
            }
            pos += 1;
            stats.clusters_probed += 1;
            let e = &idx.entries[c as usize];
            let first = e.first_record as usize;
            let n = e.records as usize;
            let cd = self.centroid_dist[c as usize];
            let c_norm_sq = idx.centroid_norms[c as usize];
            // Records whose key can hold an answer: one contiguous range.
            let (lo, hi) = match &aux.keys {
                Some(keys) => {
                    bound.key_range(&keys[first..first + n], cd, c_norm_sq, e.r_max, radius)
                }
                None => (0, n),
            };
            self.collect_inserted(c as usize, cd, upper, radius_now(upper), fixed);
            if lo >= hi {
                continue;
            }
            let (a, b) = (first + lo, first + hi);
            self.scores.resize(b - a, 0.0);
            adc_scan(
                &self.table,
                &idx.codes.as_slice()[a * m..b * m],
                m,
                &mut self.scores,
            );
            stats.pq_scored += (b - a) as u64;
            let mut radius = radius;
            let corrections = idx.blocks.as_ref().and_then(|b| b.corrections.as_ref());
            for (j, &table_sum) in self.scores.iter().enumerate() {
                let r = a + j;
                let correction = match (&self.weighted_l2, corrections) {
                    (Some(w), Some(corr)) => w.correction(corr, r),
                    _ => idx.correction[r],
                };
                if idx.live.base_record_dead(r as u32) {
                    continue; // deleted: no bound, no read
                }
                let (lower, approx, up) = bound.record(cd, table_sum, correction, aux.error[r]);
                if lower > radius {
                    continue;
                }
                self.candidates.push(Candidate {
                    lower,
                    approx,
                    record: r as u32,
                });
                if fixed.is_none()
                    && upper.push(Neighbor {
                        id: r as u32,
                        dist: up,
                    })
                {
                    radius = radius_now(upper);
                }
            }
        }
        let radius = radius_now(upper);
        self.candidates.retain(|c| c.lower <= radius);
        pos
    }

    /// [`Self::collect`] for the live inserts of cluster `c` (centroid distance `cd`): every
    /// one whose PQ bound is within `radius` becomes a candidate (and an upper bound).
    fn collect_inserted(
        &mut self,
        c: usize,
        cd: f32,
        upper: &mut TopK,
        radius: f32,
        fixed: Option<f32>,
    ) {
        let idx = self.index;
        let live = &idx.live;
        let delta = live.in_cluster(c);
        if delta.is_empty() {
            return;
        }
        let bound = self.bounds();
        let mut radius = radius;
        for &r in delta {
            let d = (u64::from(r) - idx.meta.n_records) as usize;
            let table_sum = adc_score(&self.table, live.codes.row(d));
            let (lower, approx, up) =
                bound.record(cd, table_sum, live.correction[d], live.error[d]);
            if lower > radius {
                continue;
            }
            self.candidates.push(Candidate {
                lower,
                approx,
                record: r,
            });
            if fixed.is_none() && upper.push(Neighbor { id: r, dist: up }) {
                radius = upper.threshold().min(radius);
            }
        }
    }

    /// Reads the records of `self.batch` in one batch and offers each one's exact distance.
    fn read_batch(
        &mut self,
        stats: &mut QueryStats,
        mut offer: impl FnMut(Neighbor),
    ) -> Result<(), SearchError> {
        let idx = self.index;
        self.plan.plan(idx, &self.batch);
        let rs = idx.reader.read_batch(&self.plan.reqs, &mut self.buf)?;
        stats.reads += rs.reads;
        stats.sectors += rs.sectors;
        stats.bytes += rs.bytes;
        stats.io_rounds += rs.rounds;
        self.plan.verify_sectors(idx, &self.buf)?;
        for i in 0..self.plan.locs.len() {
            let (rec, _) = self.plan.record(idx, &self.buf, i)?;
            let v = record_vector(idx, &rec, &mut self.scratch)?;
            let dist = match (&self.weighted_l2, &idx.blocks) {
                (Some(w), Some(b)) => w.distance(&b.layout, Metric::L2, &self.query, v),
                _ => match idx.metric {
                    Metric::L2 => distance::l2_sq(&self.query, v),
                    _ => -distance::dot(&self.query, v),
                },
            };
            stats.dist_comps += 1;
            let dist = super::read::checked_distance(idx, &self.plan, i, dist)?;
            offer(Neighbor { id: rec.id(), dist });
        }
        Ok(())
    }
}

/// How exact and range search score a query (native metric, `block_weights`), for
/// [`Index::check_query_as`].
fn exact_scoring(block_weights: Option<&[f32]>) -> super::QueryScoring<'_> {
    super::QueryScoring {
        block_weights,
        lccmd: None,
        any_lccmd: false,
    }
}

/// The lower and upper bounds of one query, in internal distance units.
struct Bounds {
    metric: Metric,
    q_norm: f32,
    /// L2: `√ω_min` and `√ω_max`, the factors from a plain distance (key, radius, PQ error) to
    /// a weighted one (1 and 1 for an unweighted query; module docs).
    key_lo: f32,
    key_hi: f32,
}

impl Bounds {
    /// Lower bound of every member of a cluster with centroid distance `cd` (internal units)
    /// and radii `[r_min, r_max]`.
    fn cluster(&self, cd: f32, c_norm_sq: f32, r_min: f32, r_max: f32) -> f32 {
        match self.metric {
            Metric::L2 => {
                let d = cd.max(0.0).sqrt();
                let (near, far) = (self.key_hi * r_max, self.key_lo * r_min);
                let slack = SLACK * (d + near) + SLACK_ABS;
                let gap = ((d - near).max(far - d) - slack).max(0.0);
                gap * gap
            }
            _ => cd - self.q_norm * r_max - self.ip_slack(c_norm_sq, r_max),
        }
    }

    fn ip_slack(&self, c_norm_sq: f32, r_max: f32) -> f32 {
        SLACK * self.q_norm * (c_norm_sq.sqrt() + r_max) + SLACK_ABS
    }

    /// The records `[lo, hi)` of a cluster (keys ascending) whose key bound is within `radius`.
    fn key_range(
        &self,
        keys: &[f32],
        cd: f32,
        c_norm_sq: f32,
        r_max: f32,
        radius: f32,
    ) -> (usize, usize) {
        if radius == f32::INFINITY {
            return (0, keys.len());
        }
        match self.metric {
            Metric::L2 => {
                // Lower bounds d − k_hi·k and k_lo·k − d, each ≤ the radius.
                let d = cd.max(0.0).sqrt();
                let reach = radius.max(0.0).sqrt() + SLACK * (d + self.key_hi * r_max) + SLACK_ABS;
                let lo = keys.partition_point(|&k| self.key_hi * k < d - reach);
                let hi = if self.key_lo > 0.0 {
                    keys.partition_point(|&k| self.key_lo * k <= d + reach)
                } else {
                    keys.len()
                };
                (lo, hi.max(lo))
            }
            _ => {
                // −q·c − |q|·k ≤ radius  ⇔  k ≥ (−q·c − radius) / |q|
                if self.q_norm == 0.0 {
                    return if cd <= radius {
                        (0, keys.len())
                    } else {
                        (0, 0)
                    };
                }
                let slack = self.ip_slack(c_norm_sq, r_max);
                let min_key = (cd - radius - slack) / self.q_norm;
                (keys.partition_point(|&k| k < min_key), keys.len())
            }
        }
    }

    /// (lower bound, PQ estimate, upper bound) of a record from its ADC table sum, L2
    /// correction and PQ error.
    fn record(&self, cd: f32, table_sum: f32, correction: f32, error: f32) -> (f32, f32, f32) {
        let error = error * self.key_hi * (1.0 + SLACK) + SLACK_ABS;
        match self.metric {
            Metric::L2 => {
                // |q − x̂|² = |q − c|² + (|r̂|² + 2c·r̂) − 2q·r̂
                let approx = cd + correction - 2.0 * table_sum;
                let eps = SLACK * (cd + correction.abs() + 2.0 * table_sum.abs()) + SLACK_ABS;
                let lo = ((approx - eps).max(0.0).sqrt() - error).max(0.0);
                let hi = (approx + eps).max(0.0).sqrt() + error;
                (lo * lo, approx, hi * hi)
            }
            _ => {
                let approx = cd - table_sum;
                let eps = SLACK * (cd.abs() + table_sum.abs()) + SLACK_ABS;
                let spread = self.q_norm * error + eps;
                (approx - spread, approx, approx + spread)
            }
        }
    }
}

/// What an exact batch asks of every query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ExactQuery {
    /// The true `k` nearest.
    Knn(usize),
    /// Everything within a radius, in the metric's natural unit (see [`ExactSearcher::range`]).
    Range(f32),
}

/// Runs `what` for every row of `queries` on `pool` (one [`ExactSearcher`] per worker), with
/// the multi-vector `block_weights` of [`ExactSearcher::set_block_weights`]. Fails on the first
/// bad query (checked up front) or, after the batch, with the first query error.
pub fn exact_batch(
    index: &Index,
    queries: crate::data::MatrixView<'_, f32>,
    what: ExactQuery,
    block_weights: Option<&[f32]>,
    params: ExactParams,
    pool: &rayon::ThreadPool,
) -> Result<super::BatchResult, SearchError> {
    use rayon::prelude::*;
    // Checks the weights once, up front, then every query with them.
    ExactSearcher::new(index).set_block_weights(block_weights)?;
    for (i, q) in queries.iter_rows().enumerate() {
        index.check_query_as(i, q, exact_scoring(block_weights))?;
    }
    index.exact_aux()?;
    let start = std::time::Instant::now();
    type Outcome = Result<(Vec<Neighbor>, QueryStats, f64), SearchError>;
    let outcomes: Vec<Outcome> = pool.install(|| {
        (0..queries.rows())
            .into_par_iter()
            .map_init(
                || {
                    let mut s = ExactSearcher::with_params(index, params);
                    s.set_block_weights(block_weights).expect("checked above");
                    s
                },
                |s, i| {
                    let t0 = std::time::Instant::now();
                    let r = match what {
                        ExactQuery::Knn(k) => s.knn(queries.row(i), k),
                        ExactQuery::Range(radius) => s.range(queries.row(i), radius),
                    };
                    r.map(|(n, st)| (n, st, t0.elapsed().as_secs_f64() * 1e6))
                },
            )
            .collect()
    });
    let seconds = start.elapsed().as_secs_f64();
    let mut res = super::BatchResult {
        results: Vec::with_capacity(outcomes.len()),
        stats: Vec::with_capacity(outcomes.len()),
        latencies_us: Vec::with_capacity(outcomes.len()),
        seconds,
    };
    for o in outcomes {
        let (r, st, us) = o?;
        res.results.push(r);
        res.stats.push(st);
        res.latencies_us.push(us);
    }
    Ok(res)
}

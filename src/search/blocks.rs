//! The multi-vector side of a query (DESIGN §4.6; definitions in [`crate::multivec::scale`]):
//! what an index keeps about its blocks, and how a query's block weights turn into factors on
//! stored coordinates, present subspaces and weighted PQ corrections.
//!
//! A query against a multi-vector index is the concatenation of its blocks in raw units
//! (absent blocks: any finite values, ignored). Prepare multiplies block b by the stored scale
//! c_b (after normalising it under cosine); with the build weights (or weights proportional to
//! them on every block) the rest of the query is the single-vector path unchanged. Otherwise
//! each present block b gets the factor ω_b = w_b / (σ_b² c_b²) and an absent block costs
//! nothing: routing, the PQ table, the scan and the rerank visit only the present blocks'
//! dimensions and subspaces.
//!
//! Weighted L2 with residual PQ codes: `Σ_b ω_b |q_b − c_b − r̂_b|² = Σ_b ω_b |q_b − c_b|²
//! − 2 Σ_b ω_b q_b·r̂_b + Σ_b ω_b (|r̂_b|² + 2 c_b·r̂_b)`; the last term needs the correction
//! per block, which [`IndexBlocks`] computes from the codes when the index is opened
//! (records × blocks floats, L2 only).

use std::ops::Range;

use super::SearchError;
use crate::data::Matrix;
use crate::distance::{self, Metric};
use crate::format::{BlockTable, ClusterEntry, FormatError};
use crate::multivec::BlockLayout;
use crate::pq::ProductQuantizer;

/// What an open multi-vector index keeps about its blocks.
#[derive(Debug)]
pub struct IndexBlocks {
    /// The index's block table (`blocks.m3`).
    pub table: BlockTable,
    /// Names, dimensions and offsets of the blocks.
    pub layout: BlockLayout,
    /// Spread of each block, measured at build.
    pub spreads: Vec<f32>,
    /// Factor each block is multiplied by when standardised.
    pub scales: Vec<f32>,
    /// PQ subspaces of each block.
    pub subspaces: Vec<Range<usize>>,
    /// L2 only: `records × blocks` corrections `|r̂_b|² + 2 c_b·r̂_b`.
    pub corrections: Option<Matrix<f32>>,
}

impl IndexBlocks {
    /// Checks the table against the quantizer (every block a whole number of subspaces) and
    /// computes the per-block corrections for L2.
    pub(super) fn new(
        table: BlockTable,
        path: &std::path::Path,
        metric: Metric,
        pq: &ProductQuantizer,
        codes: &Matrix<u8>,
        centroids: &Matrix<f32>,
        entries: &[ClusterEntry],
    ) -> Result<Self, SearchError> {
        let layout = table.layout();
        let bounds = pq.bounds();
        let mut subspaces = Vec::with_capacity(layout.len());
        for blk in layout.blocks() {
            let r = blk.range();
            let (Ok(lo), Ok(hi)) = (bounds.binary_search(&r.start), bounds.binary_search(&r.end))
            else {
                return Err(FormatError::corrupt(
                    path,
                    0,
                    format!(
                        "block '{}' does not start and end on PQ subspace bounds",
                        blk.name
                    ),
                )
                .into());
            };
            subspaces.push(lo..hi);
        }
        let corrections = (metric == Metric::L2).then(|| {
            let nb = layout.len();
            let m = pq.subspaces();
            let mut out = vec![0f32; codes.rows() * nb];
            let mut rhat = vec![0f32; pq.dim()];
            for (c, e) in entries.iter().enumerate() {
                let cen = centroids.row(c);
                for rec in e.first_record as usize..(e.first_record + e.records as u64) as usize {
                    pq.decode(&codes.as_slice()[rec * m..(rec + 1) * m], &mut rhat);
                    for (b, blk) in layout.blocks().iter().enumerate() {
                        let r = blk.range();
                        let rh = &rhat[r.clone()];
                        out[rec * nb + b] =
                            distance::dot(rh, rh) + 2.0 * distance::dot(&cen[r], rh);
                    }
                }
            }
            Matrix::from_vec(out, nb).expect("blocks ≥ 1")
        });
        Ok(Self {
            spreads: table.spreads(),
            scales: table.scales(),
            table,
            layout,
            subspaces,
            corrections,
        })
    }

    /// Checks query block weights: one per block, finite, ≥ 0, at least one positive.
    pub(super) fn check_weights(&self, w: &[f32]) -> Result<(), SearchError> {
        let bad = |what: String| SearchError::Param {
            name: "block_weights",
            what,
        };
        if w.len() != self.layout.len() {
            return Err(bad(format!(
                "{} weights for the {} blocks of the index",
                w.len(),
                self.layout.len()
            )));
        }
        for (blk, &v) in self.layout.blocks().iter().zip(w) {
            crate::multivec::check_weight(&blk.name, v, false).map_err(|e| bad(e.to_string()))?;
        }
        if w.iter().all(|&v| v == 0.0) {
            return Err(bad(
                "every block weight is 0: a query needs at least one block".into(),
            ));
        }
        Ok(())
    }

    /// The weighting of a query with block `weights` (`None`: the build weights).
    pub(crate) fn weighting(&self, weights: Option<&[f32]>) -> Weighting {
        // Standardised: ω_b = w_b / W_b exactly (1 for the build weights, the plain path);
        // otherwise the general w_b / (σ_b² c_b²).
        let build = self.table.weights();
        let w = weights.unwrap_or(&build);
        let omega: Vec<f32> = if self.table.standardized {
            w.iter().zip(&build).map(|(&w, &wb)| w / wb).collect()
        } else {
            crate::multivec::scale::query_factors(&self.spreads, &self.scales, w)
        };
        let unit = omega.iter().all(|&o| o == omega[0]) && omega[0] == 1.0;
        let present: Vec<usize> = (0..omega.len()).filter(|&b| omega[b] > 0.0).collect();
        // Subspace spans of the present blocks, neighbours merged.
        let mut spans: Vec<Range<usize>> = Vec::new();
        for &b in &present {
            let r = self.subspaces[b].clone();
            match spans.last_mut() {
                Some(last) if last.end == r.start => last.end = r.end,
                _ => spans.push(r),
            }
        }
        Weighting {
            omega_max: omega.iter().copied().fold(0.0, f32::max),
            omega,
            present,
            spans,
            unit,
        }
    }

    /// Brings a raw query into stored coordinates in place: absent blocks zeroed, present ones
    /// normalised under cosine, then multiplied by c_b. `Err(())` when a present block is zero
    /// under cosine.
    pub(super) fn prepare(&self, q: &mut [f32], w: &Weighting, metric: Metric) -> Result<(), ()> {
        for (b, blk) in self.layout.blocks().iter().enumerate() {
            let part = &mut q[blk.range()];
            if w.omega[b] == 0.0 {
                part.iter_mut().for_each(|v| *v = 0.0);
                continue;
            }
            let mut f = self.scales[b];
            if metric == Metric::Cosine {
                let n = distance::dot(part, part).sqrt();
                if n == 0.0 {
                    return Err(());
                }
                f /= n;
            }
            part.iter_mut().for_each(|v| *v *= f);
        }
        Ok(())
    }
}

/// One query's block factors.
#[derive(Debug, Clone, PartialEq)]
pub struct Weighting {
    /// ω_b per block (0 = absent).
    pub omega: Vec<f32>,
    /// The largest ω_b.
    pub omega_max: f32,
    /// Blocks with ω_b > 0.
    pub present: Vec<usize>,
    /// PQ subspaces of the present blocks (contiguous runs).
    pub spans: Vec<Range<usize>>,
    /// Every ω_b = 1: the plain single-vector path applies.
    pub unit: bool,
}

impl Weighting {
    /// `Σ_b ω_b D_b(q_b, x_b)` over the present blocks (`D_b`: squared L2, or −dot).
    #[inline]
    pub fn distance(&self, layout: &BlockLayout, metric: Metric, q: &[f32], x: &[f32]) -> f32 {
        let blocks = layout.blocks();
        let mut d = 0.0f32;
        for &b in &self.present {
            let r = blocks[b].range();
            let part = match metric {
                Metric::L2 => distance::l2_sq(&q[r.clone()], &x[r]),
                _ => -distance::dot(&q[r.clone()], &x[r]),
            };
            d += self.omega[b] * part;
        }
        d
    }

    /// `Σ_b ω_b Σ_{k∈b} u_k (q_k − x_k)²` over the present blocks: per-dimension weights `u`
    /// (LC-CMD's, DESIGN §4.3) composed with the query's block factors.
    #[inline]
    pub fn weighted_l2_dims(&self, layout: &BlockLayout, q: &[f32], x: &[f32], u: &[f32]) -> f32 {
        let blocks = layout.blocks();
        self.present
            .iter()
            .map(|&b| {
                let r = blocks[b].range();
                self.omega[b] * distance::weighted_l2_sq(&q[r.clone()], &x[r.clone()], &u[r])
            })
            .sum()
    }

    /// `ω ⊙ q` (zeros on absent blocks): the vector whose inner products give the weighted
    /// ones.
    pub fn weighted_query(&self, layout: &BlockLayout, q: &[f32], out: &mut Vec<f32>) {
        out.clear();
        out.resize(q.len(), 0.0);
        for &b in &self.present {
            let r = layout.blocks()[b].range();
            for (o, &v) in out[r.clone()].iter_mut().zip(&q[r]) {
                *o = self.omega[b] * v;
            }
        }
    }

    /// `Σ_b ω_b corr_b` of one record.
    #[inline]
    pub fn correction(&self, corrections: &Matrix<f32>, record: usize) -> f32 {
        let row = corrections.row(record);
        self.present.iter().map(|&b| self.omega[b] * row[b]).sum()
    }
}

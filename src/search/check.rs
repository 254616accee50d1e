//! Is a query safe to score? [`Index::check_query_as`]: the dimension, finite components, a
//! direction under cosine, and a norm for which no distance can overflow f32, derived from a
//! bound on the norms of everything the index stores ([`Index::norm_bound`], computed at
//! open). `docs/FORMAT.md`, "Checks", states the bound.

use super::SearchError;
use super::index::Index;
use crate::data::Matrix;
use crate::distance::Metric;
use crate::format::{CoarseLevel, Hints, Routing, Stats};
use crate::pq::ProductQuantizer;

impl Index {
    /// Checks a query vector against the index for any way of scoring it (native metric or
    /// LC-CMD at any α, β; the build's block weights): see [`Index::check_query_as`]. `qi`
    /// names the query in errors.
    pub fn check_query(&self, qi: usize, q: &[f32]) -> Result<(), SearchError> {
        self.check_query_as(qi, q, QueryScoring::ANY)
    }

    /// Checks a query vector against the index, scored as `scoring` says: dimension, finite
    /// components, under cosine a direction that f32 can normalise, and a norm small enough
    /// that no distance overflows.
    ///
    /// The bound: with `|q'|` the norm of the query in stored coordinates (`|q|`; 1 under
    /// cosine; for blocks the block scales applied), `B` a bound on the norm of every vector
    /// it is compared with ([`Index::norm_bound`]) and `F` the largest factor on a squared
    /// distance (the largest LC-CMD weight, times the largest block factor ω_b), every squared
    /// distance is at most `F · (|q'| + B)²` (triangle inequality; `|q·x| ≤ |q||x|` for inner
    /// products), and the query is refused unless that is at most `f32::MAX / 64` — the
    /// headroom for the few distances a score or bound adds up. Under cosine each normalised
    /// part needs `f32::MIN_POSITIVE ≤ |q_b|² ≤ f32::MAX / 64` to be normalised in f32.
    pub fn check_query_as(
        &self,
        qi: usize,
        q: &[f32],
        scoring: QueryScoring<'_>,
    ) -> Result<(), SearchError> {
        if q.len() != self.dim {
            return Err(SearchError::QueryDim {
                expected: self.dim,
                found: q.len(),
            });
        }
        if let Some((col, &value)) = q.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(SearchError::NonFinite {
                query: qi,
                col,
                value,
            });
        }
        let cosine = self.metric == Metric::Cosine;
        if cosine && q.iter().all(|&v| v == 0.0) {
            return Err(SearchError::ZeroQuery { query: qi });
        }
        let sq = |v: &[f32]| v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>();
        let norm = sq(q).sqrt();
        let refuse = |min: f64, max: f64| SearchError::QueryNorm {
            query: qi,
            norm,
            min,
            max,
            data_norm: self.norm_bound,
        };
        // Parts normalised in f32 (the whole query, or each present block, under cosine).
        let (lo, hi) = (f64::from(f32::MIN_POSITIVE).sqrt(), MAX_DIST_SQ.sqrt());
        let normalisable = |part: &[f32]| {
            let n = sq(part).sqrt();
            if n == 0.0 {
                Err(SearchError::ZeroQuery { query: qi })
            } else if n < lo || n > hi {
                Err(refuse(lo, hi))
            } else {
                Ok(())
            }
        };
        if let (Some(b), Some(w)) = (&self.blocks, scoring.block_weights) {
            b.check_weights(w)?;
        }
        let mut factor = 1.0f64;
        match scoring.lccmd {
            Some((alpha, beta)) => {
                let w = super::params::lccmd_weights(&self.stats, alpha, beta)?;
                factor *= w.iter().fold(0.0f64, |m, &v| m.max(f64::from(v)));
            }
            // Each weight is (1 − β) + β·w_k/mean(w) ≤ dim, for any α, β in [0, 1].
            None if scoring.any_lccmd && self.stats.has_query_stats => factor *= self.dim as f64,
            None => {}
        }
        // The query's norm in stored coordinates, as a multiple of |q| (`per_norm`) or fixed.
        let (per_norm, fixed) = match &self.blocks {
            Some(b) => {
                let w = b.weighting(scoring.block_weights);
                factor *= f64::from(w.omega_max);
                let (mut scaled, mut unit) = (0.0f64, 0.0f64);
                for &i in &w.present {
                    let part = &q[b.layout.blocks()[i].range()];
                    let c = f64::from(b.scales[i]);
                    if cosine {
                        normalisable(part)?;
                        unit += c * c;
                    } else {
                        scaled = scaled.max(c);
                    }
                }
                (scaled, unit.sqrt())
            }
            None if cosine => {
                normalisable(q)?;
                (0.0, 1.0)
            }
            None => (1.0, 0.0),
        };
        // F · (per_norm·|q| + fixed + B)² ≤ MAX_DIST_SQ.
        let room = (MAX_DIST_SQ / factor).sqrt() - fixed - self.norm_bound;
        let max = if per_norm > 0.0 {
            (room / per_norm).min(hi)
        } else if room >= 0.0 {
            hi
        } else {
            0.0
        };
        let min = if cosine && self.blocks.is_none() {
            lo
        } else {
            0.0
        };
        if !(room >= 0.0 && norm <= max && norm * norm <= MAX_DIST_SQ) {
            return Err(refuse(min, max.max(0.0)));
        }
        Ok(())
    }

    /// A bound on the norm of every vector a query is compared with, in stored coordinates
    /// (see [`Index::check_query_as`]).
    pub fn norm_bound(&self) -> f64 {
        self.norm_bound
    }
}

/// Largest squared distance a query may produce ([`Index::check_query_as`]): f32's largest
/// value with a factor 64 of headroom for the few distances a score or a bound adds.
const MAX_DIST_SQ: f64 = f32::MAX as f64 / 64.0;

/// How a query will be scored, for [`Index::check_query_as`].
#[derive(Debug, Clone, Copy)]
pub struct QueryScoring<'a> {
    /// The query's block weights (multi-vector indexes; `None`: the build weights).
    pub block_weights: Option<&'a [f32]>,
    /// The LC-CMD (α, β) of the rerank, if it uses LC-CMD.
    pub lccmd: Option<(f32, f32)>,
    /// Without `lccmd`: allow for LC-CMD at any (α, β) (the largest weight is at most `dim`).
    pub any_lccmd: bool,
}

impl QueryScoring<'_> {
    /// Any scoring the index supports, with the build's block weights.
    pub const ANY: QueryScoring<'static> = QueryScoring {
        block_weights: None,
        lccmd: None,
        any_lccmd: true,
    };
}

/// The bound on stored norms of [`Index::norm_bound`]: the largest of `max_base_norm`, every
/// query anchor and coarse centre, and every PQ reconstruction (a centroid plus one codeword
/// per subspace of each quantizer — the first and, if any, the refinement codes: at most the
/// largest centroid plus the largest codeword of each subspace of each).
/// Computed in f64, so huge stored values give a huge bound rather than an overflow.
pub(super) fn norm_bound(
    stats: &Stats,
    centroids: &Matrix<f32>,
    routing: &Routing,
    coarse: Option<&CoarseLevel>,
    hints: Option<&Hints>,
    pqs: &[&ProductQuantizer],
) -> f64 {
    let row_norm = |r: &[f32]| {
        r.iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            .sqrt()
    };
    let max_row = |m: &Matrix<f32>| {
        (0..m.rows())
            .map(|i| row_norm(m.row(i)))
            .fold(0.0, f64::max)
    };
    let cw = crate::format::pq::PQ_CODEWORDS as usize;
    let codewords: f64 = pqs
        .iter()
        .map(|pq| {
            let codebooks = pq.codebooks();
            pq.bounds()
                .windows(2)
                .map(|b| {
                    let width = b[1] - b[0];
                    codebooks[b[0] * cw..b[1] * cw]
                        .chunks_exact(width)
                        .map(row_norm)
                        .fold(0.0, f64::max)
                })
                .sum::<f64>()
        })
        .sum();
    [
        f64::from(stats.max_base_norm),
        max_row(centroids) + codewords,
        max_row(&routing.anchors),
        coarse.map_or(0.0, |c| max_row(&c.coarse)),
        hints.map_or(0.0, |h| max_row(&h.queries)),
    ]
    .into_iter()
    .fold(0.0, f64::max)
}

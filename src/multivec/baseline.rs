//! The comparison system for multi-vector queries, as Milvus- or VBase-style engines answer
//! them: one single-vector index per block; each present block's index returns its top `k′`
//! for that block's query vector; the candidates are unioned and ranked by the exact weighted
//! distance; the best `k` are the answer.
//!
//! The final distances are computed from the raw block vectors held in RAM
//! ([`BlockVectors`]), which spares the baseline the I/O of fetching its candidates' vectors:
//! a favourable assumption for it.

use std::collections::HashSet;
use std::time::Instant;

use super::{BlockError, BlockFiles, BlockQueries};
use crate::data::Matrix;
use crate::distance::{self, Metric};
use crate::exact::{Neighbor, TopK};
use crate::search::{BatchOptions, Index, QueryStats, SearchError, SearchParams, search_batch};

/// Every block of a base in RAM, raw (normalised per block under cosine).
#[derive(Debug)]
pub struct BlockVectors {
    pub blocks: Vec<Matrix<f32>>,
}

impl BlockVectors {
    pub fn load(files: &BlockFiles, metric: Metric) -> Result<Self, BlockError> {
        let mut blocks = Vec::with_capacity(files.layout().len());
        for b in 0..files.layout().len() {
            let mut m = files.file(b).read_all_f32()?;
            if metric == Metric::Cosine {
                for i in 0..m.rows() {
                    let r = m.row_mut(i);
                    let n = distance::dot(r, r).sqrt();
                    if n > 0.0 {
                        r.iter_mut().for_each(|v| *v /= n);
                    }
                }
            }
            blocks.push(m);
        }
        Ok(Self { blocks })
    }
}

/// What one run of the baseline measured.
#[derive(Debug)]
pub struct BaselineRun {
    /// Best first; internal distances (smaller is better).
    pub results: Vec<Vec<Neighbor>>,
    /// Wall time of all the per-block searches plus the merge.
    pub seconds: f64,
    /// Per query, summed over the per-block searches.
    pub stats: Vec<QueryStats>,
    /// Mean candidates (union) per query.
    pub mean_candidates: f64,
}

/// The comparison system: `indexes[b]` is block b's single-vector index (`None`: block b has
/// no index, which is only allowed when its weight is 0); `vectors` the raw blocks the merge
/// ranks candidates with; `weights` the query weight and `spreads` the spread σ_b of each
/// block (the distance is `Σ_b w_b / σ_b² · D_b`); `metric` the blocks' metric.
#[derive(Debug, Clone, Copy)]
pub struct Baseline<'a> {
    pub indexes: &'a [Option<&'a Index>],
    pub vectors: &'a BlockVectors,
    pub weights: &'a [f32],
    pub spreads: &'a [f32],
    pub metric: Metric,
}

/// Each present block's answers: the block and its top `k′` per query.
type BlockAnswers = Vec<(usize, Vec<Vec<Neighbor>>)>;

impl Baseline<'_> {
    /// Runs the baseline on `queries`: `params` are the knobs of each per-block search with
    /// `params.k = k′`, `k` the answer size.
    pub fn run(
        &self,
        queries: &BlockQueries,
        params: &SearchParams,
        k: usize,
        pool: &rayon::ThreadPool,
        options: &BatchOptions,
    ) -> Result<BaselineRun, SearchError> {
        let nq = queries.rows.rows();
        let present: Vec<usize> = (0..self.vectors.blocks.len())
            .filter(|&b| queries.present[b] && self.weights[b] > 0.0)
            .collect();
        if present.is_empty() {
            return Err(BlockError::NoBlocks("no block with a query and a positive weight").into());
        }
        let start = Instant::now();
        let (per_block, stats) = self.search_blocks(queries, &present, params, pool, options)?;
        let (results, candidates) = self.merge(queries, &present, &per_block, k);
        Ok(BaselineRun {
            results,
            seconds: start.elapsed().as_secs_f64(),
            stats,
            mean_candidates: candidates as f64 / nq.max(1) as f64,
        })
    }

    /// First dimension of every block in a full row, and the total at the end.
    fn offsets(&self) -> Vec<usize> {
        let mut offsets = vec![0usize];
        for m in &self.vectors.blocks {
            offsets.push(offsets.last().expect("non-empty") + m.dim());
        }
        offsets
    }

    /// Each present block's index searched with that block's part of the queries, and the
    /// cost per query summed over the blocks.
    fn search_blocks(
        &self,
        queries: &BlockQueries,
        present: &[usize],
        params: &SearchParams,
        pool: &rayon::ThreadPool,
        options: &BatchOptions,
    ) -> Result<(BlockAnswers, Vec<QueryStats>), SearchError> {
        let nq = queries.rows.rows();
        let offsets = self.offsets();
        let mut per_block: BlockAnswers = Vec::new();
        let mut stats = vec![QueryStats::default(); nq];
        for &b in present {
            let index = self.indexes[b].ok_or_else(|| SearchError::Param {
                name: "indexes",
                what: format!("block {b} has a query but no index"),
            })?;
            let (lo, hi) = (offsets[b], offsets[b + 1]);
            let mut q = Vec::with_capacity(nq * (hi - lo));
            for r in queries.rows.view().iter_rows() {
                q.extend_from_slice(&r[lo..hi]);
            }
            let q = Matrix::from_vec(q, hi - lo)?;
            let res = search_batch(index, q.view(), params, pool, options)?;
            for (s, r) in stats.iter_mut().zip(&res.stats) {
                *s += *r;
            }
            per_block.push((b, res.results));
        }
        Ok((per_block, stats))
    }

    /// The best `k` of each query's candidates (the union over the blocks) by the exact
    /// weighted distance, computed from RAM; and the number of candidates.
    fn merge(
        &self,
        queries: &BlockQueries,
        present: &[usize],
        per_block: &BlockAnswers,
        k: usize,
    ) -> (Vec<Vec<Neighbor>>, usize) {
        let (metric, weights, spreads) = (self.metric, self.weights, self.spreads);
        let nq = queries.rows.rows();
        let offsets = self.offsets();
        let factors: Vec<f32> = (0..self.vectors.blocks.len())
            .map(|b| {
                if present.contains(&b) {
                    weights[b] / (spreads[b] * spreads[b])
                } else {
                    0.0
                }
            })
            .collect();
        let mut results = Vec::with_capacity(nq);
        let mut candidates = 0usize;
        let mut qbuf = vec![0f32; queries.rows.dim()];
        let mut seen: HashSet<u32> = HashSet::new();
        for qi in 0..nq {
            qbuf.copy_from_slice(queries.rows.row(qi));
            if metric == Metric::Cosine {
                for &b in present {
                    let part = &mut qbuf[offsets[b]..offsets[b + 1]];
                    let n = distance::dot(part, part).sqrt();
                    if n > 0.0 {
                        part.iter_mut().for_each(|v| *v /= n);
                    }
                }
            }
            seen.clear();
            let mut top = TopK::new(k);
            for (_, res) in per_block {
                for n in &res[qi] {
                    if !seen.insert(n.id) {
                        continue;
                    }
                    let mut d = 0.0f32;
                    for &b in present {
                        let q = &qbuf[offsets[b]..offsets[b + 1]];
                        let x = self.vectors.blocks[b].row(n.id as usize);
                        d += factors[b]
                            * match metric {
                                Metric::L2 => distance::l2_sq(q, x),
                                _ => -distance::dot(q, x),
                            };
                    }
                    top.push(Neighbor { id: n.id, dist: d });
                }
            }
            candidates += seen.len();
            results.push(top.into_sorted());
        }
        (results, candidates)
    }
}

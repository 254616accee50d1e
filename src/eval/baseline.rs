//! The comparison system for multi-vector queries, as Milvus- or VBase-style engines answer
//! them: one single-vector index per block; each present block's index returns its top `k′`
//! for that block's query vector; the candidates are unioned and ranked by the exact weighted
//! distance; the best `k` are the answer.
//!
//! The final distances are computed from the raw block vectors held in RAM
//! ([`BlockVectors`]), which spares the baseline the I/O of fetching its candidates' vectors:
//! a favourable assumption for it. [`Baseline::measure`] runs it at one candidate factor
//! `c` (k′ = c·k) and measures recall against the weighted ground truth (`m3 baseline`).

use std::collections::HashSet;
use std::time::Instant;

use crate::data::{GroundTruth, Matrix};
use crate::distance::{self, Metric};
use crate::exact::recall_at_k;
use crate::multivec::{BlockError, BlockFiles, BlockQueries, internal_metric};
use crate::neighbor::{Neighbor, TopK};
use crate::search::{
    BatchOptions, Index, QueryStats, RerankDistance, SearchError, SearchParams, results_table,
    search_batch,
};

/// Every block of a base in RAM, raw (normalised per block under cosine).
#[derive(Debug)]
pub struct BlockVectors {
    /// One matrix per block, in block order.
    pub blocks: Vec<Matrix<f32>>,
}

impl BlockVectors {
    /// Reads every block file whole (normalising rows per block under cosine).
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

/// One point of `m3 baseline`: serialises to the JSON of `m3 baseline --json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BaselinePoint {
    /// Name of the system measured (`per-block-baseline`).
    pub system: &'static str,
    /// Candidates per block as a multiple of k.
    pub factor: usize,
    /// Candidates per block, k′ = factor · k.
    pub k_prime: usize,
    /// Mean recall@k against the weighted ground truth.
    pub recall_at_k: f64,
    /// Queries per second over the whole batch.
    pub qps: f64,
    /// Threads of the pool that ran it.
    pub threads: usize,
    /// Read requests per query, all block searches together.
    pub mean_ios: f64,
    /// Bytes read per query, all block searches together.
    pub mean_read_bytes: f64,
    /// Union of the per-block candidates, per query.
    pub mean_candidates: f64,
    /// The per-block searches' distance computations plus one exact weighted distance per
    /// candidate.
    pub mean_dist_comps: f64,
    /// Queries measured.
    pub queries: usize,
}

/// The knobs of each per-block search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaselineKnobs {
    /// Clusters probed per block search.
    pub nprobe: usize,
    /// Records reranked per block search (`None`: the search default for k′, 4·max(k′, 10));
    /// never below k′.
    pub rerank: Option<usize>,
}

/// The baseline over one multi-vector query set: `indexes[b]` is block b's single-vector
/// index (`None`: block b has no index, which is only allowed when its weight is 0),
/// `weights[b]` and `spreads[b]` block b's query weight and spread ([`crate::multivec::scale`]).
#[derive(Debug, Clone, Copy)]
pub struct Baseline<'a> {
    /// Block b's single-vector index, `None` when its weight is 0.
    pub indexes: &'a [Option<&'a Index>],
    /// The base's blocks in RAM, for the exact weighted rerank.
    pub vectors: &'a BlockVectors,
    /// The multi-vector queries.
    pub queries: &'a BlockQueries,
    /// Query weight of each block.
    pub weights: &'a [f32],
    /// Spread of each block (its standardisation).
    pub spreads: &'a [f32],
    /// The metric of every block.
    pub metric: Metric,
}

impl Baseline<'_> {
    /// Runs the baseline at candidate factor `factor` (k′ = factor · k per block) and measures
    /// the answers' recall@k against `gt` (the weighted ground truth).
    pub fn measure(
        &self,
        factor: usize,
        knobs: BaselineKnobs,
        k: usize,
        gt: &GroundTruth,
        pool: &rayon::ThreadPool,
        options: &BatchOptions,
    ) -> Result<BaselinePoint, SearchError> {
        let kp = (factor * k).max(1);
        let mut p = SearchParams::new(kp);
        p.nprobe = knobs.nprobe;
        p.qprobe = 0;
        if let Some(r) = knobs.rerank {
            p.rerank = r.max(kp);
        }
        let run = self.run(&p, k, pool, options)?;
        let mut sp = SearchParams::new(k);
        sp.distance = RerankDistance::Native;
        let table = results_table(&run.results, &sp, self.metric)?;
        let recall = recall_at_k(
            table.ids.view(),
            table.dists.as_ref().map(|d| d.view()),
            gt,
            k,
            internal_metric(self.metric),
        )?;
        let nq = run.results.len() as f64;
        let mean =
            |f: &dyn Fn(&QueryStats) -> u64| run.stats.iter().map(f).sum::<u64>() as f64 / nq;
        Ok(BaselinePoint {
            system: "per-block-baseline",
            factor,
            k_prime: kp,
            recall_at_k: recall.mean,
            qps: nq / run.seconds,
            threads: pool.current_num_threads(),
            mean_ios: mean(&|s| s.reads),
            mean_read_bytes: mean(&|s| s.bytes),
            mean_candidates: run.mean_candidates,
            mean_dist_comps: mean(&|s| s.dist_comps) + run.mean_candidates,
            queries: run.results.len(),
        })
    }

    /// Runs the baseline: `params` are the knobs of each per-block search with
    /// `params.k = k′`, `k` the answer size.
    pub fn run(
        &self,
        params: &SearchParams,
        k: usize,
        pool: &rayon::ThreadPool,
        options: &BatchOptions,
    ) -> Result<BaselineRun, SearchError> {
        let Self {
            indexes,
            vectors,
            queries,
            weights,
            spreads,
            metric,
        } = *self;
        let nb = vectors.blocks.len();
        let nq = queries.rows.rows();
        let dim_total = queries.rows.dim();
        let present: Vec<usize> = (0..nb)
            .filter(|&b| queries.present[b] && weights[b] > 0.0)
            .collect();
        if present.is_empty() {
            return Err(BlockError::NoBlocks("no block with a query and a positive weight").into());
        }
        let mut offsets = vec![0usize];
        for m in &vectors.blocks {
            offsets.push(offsets.last().expect("non-empty") + m.dim());
        }
        let start = Instant::now();
        let mut per_block: Vec<(usize, Vec<Vec<Neighbor>>)> = Vec::new();
        let mut stats = vec![QueryStats::default(); nq];
        for &b in &present {
            let index = indexes[b].ok_or_else(|| SearchError::Param {
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
        // Merge: exact weighted distance of every candidate, from RAM.
        let factors: Vec<f32> = (0..nb)
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
        let mut qbuf = vec![0f32; dim_total];
        let mut seen: HashSet<u32> = HashSet::new();
        for qi in 0..nq {
            qbuf.copy_from_slice(queries.rows.row(qi));
            if metric == Metric::Cosine {
                for &b in &present {
                    let part = &mut qbuf[offsets[b]..offsets[b + 1]];
                    let n = distance::dot(part, part).sqrt();
                    if n > 0.0 {
                        part.iter_mut().for_each(|v| *v /= n);
                    }
                }
            }
            seen.clear();
            let mut top = TopK::new(k);
            for (_, res) in &per_block {
                for n in &res[qi] {
                    if !seen.insert(n.id) {
                        continue;
                    }
                    let mut d = 0.0f32;
                    for &b in &present {
                        let q = &qbuf[offsets[b]..offsets[b + 1]];
                        let x = vectors.blocks[b].row(n.id as usize);
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
        Ok(BaselineRun {
            results,
            seconds: start.elapsed().as_secs_f64(),
            stats,
            mean_candidates: candidates as f64 / nq.max(1) as f64,
        })
    }
}

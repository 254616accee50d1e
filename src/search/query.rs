//! One query, DESIGN §3: prepare → route (base anchors ∪ cross-modal edges) → PQ scan in RAM →
//! one batch of sector reads → exact rerank → optional rounds along neighbour lists.
//!
//! A query is a small state machine so that one thread can keep several queries' reads in
//! flight (DESIGN §3, "batch search overlaps the I/O of many queries on one thread"): a
//! [`Searcher`] has `slots`, each holding one query in progress. [`Searcher::start`] runs the
//! CPU phases (prepare, route, PQ scan) until the query needs sectors, submits them
//! ([`crate::io::BlockReader::submit`]) and returns [`QueryStep::Parked`];
//! [`Searcher::is_ready`] says without blocking whether the parked query's read has
//! completed; [`Searcher::resume`] reranks what was read and either parks again on the next
//! neighbour-list round or returns [`QueryStep::Done`]. Every decision depends only on the
//! query's own state, so results and stats do not depend on how queries are interleaved.
//! [`Searcher::search`] drives one query through the same steps, blocking on each read.

use super::SearchError;
use super::candidates;
use super::index::Index;
use super::params::{QueryStats, SearchParams};
use crate::distance::Metric;
use crate::exact::{Neighbor, TopK};
use crate::io::PendingRead;
use crate::pq::{adc_score, adc_score_spans};

use super::read::{rerank, submit_records};
use super::task::Task;

/// What a query did when started or resumed.
#[derive(Debug)]
pub enum QueryStep {
    /// The query waits for a batch of sectors; [`Searcher::resume`] it (at once, blocking, or
    /// once [`Searcher::is_ready`] says the read has completed).
    Parked,
    /// The query is over: its `k` nearest (best first) and its cost, or its error. The slot is
    /// free for the next query.
    Done(Result<(Vec<Neighbor>, QueryStats), SearchError>),
}

/// Where a query goes ([`Searcher::route_plan`]): the clusters it probes, in routing order,
/// and the training queries whose answers it scores (empty without hints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePlan {
    /// Probed clusters, distinct.
    pub clusters: Vec<u32>,
    /// Nearest training queries (rows of `hints.m3`).
    pub hint_queries: Vec<u32>,
}

/// Per-thread scratch for searching one index; reuse it across queries. Holds `slots`
/// queries in progress at once (see the module docs).
pub struct Searcher<'a> {
    index: &'a Index,
    slots: Vec<Task<'a>>,
    scores: Vec<f32>,
    vec_scratch: Vec<f32>,
    /// LC-CMD weights and the (α, β) they were computed for.
    weights: Option<((f32, f32), Vec<f32>)>,
}

impl<'a> Searcher<'a> {
    /// A searcher with one slot: [`Searcher::search`] one query at a time.
    pub fn new(index: &'a Index) -> Self {
        Self::with_slots(index, 1)
    }

    /// A searcher that can hold `slots` (at least 1) queries in progress at once.
    pub fn with_slots(index: &'a Index, slots: usize) -> Self {
        Self {
            index,
            slots: (0..slots.max(1)).map(|_| Task::new(index)).collect(),
            scores: Vec::new(),
            vec_scratch: vec![0.0; index.dim],
            weights: None,
        }
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// LC-CMD weights for (α, β) from the index's per-modality variances (DESIGN §4.3).
    fn lccmd_weights(&mut self, alpha: f32, beta: f32) -> Result<(), SearchError> {
        if self
            .weights
            .as_ref()
            .is_some_and(|(ab, _)| *ab == (alpha, beta))
        {
            return Ok(());
        }
        let w = super::params::lccmd_weights(&self.index.stats, alpha, beta)?;
        self.weights = Some(((alpha, beta), w));
        Ok(())
    }

    /// Checks a query and the parameters against the index.
    pub fn check(&self, qi: usize, q: &[f32], params: &SearchParams) -> Result<(), SearchError> {
        let idx = self.index;
        if q.len() != idx.dim {
            return Err(SearchError::QueryDim {
                expected: idx.dim,
                found: q.len(),
            });
        }
        params.validate(idx)?;
        let lccmd = match params.distance {
            super::RerankDistance::LcCmd { alpha, beta } => Some((alpha, beta)),
            super::RerankDistance::Native => None,
        };
        let scoring = super::QueryScoring {
            block_weights: params.block_weights.as_deref(),
            lccmd,
            any_lccmd: false,
        };
        idx.check_query_as(qi, q, scoring)
    }

    /// The `k` nearest vectors of `q` (ids and internal distances, best first) and the cost.
    /// Runs the query in slot 0, blocking on each of its reads. At most `k` results, each id
    /// below `n_vectors` and each distance finite; fewer only when the probed clusters hold
    /// fewer distinct vectors (a record that breaks this is an error, never a result).
    pub fn search(
        &mut self,
        qi: usize,
        q: &[f32],
        params: &SearchParams,
    ) -> Result<(Vec<Neighbor>, QueryStats), SearchError> {
        let mut step = self.start(0, qi, q, params);
        loop {
            match step {
                QueryStep::Done(r) => return r,
                QueryStep::Parked => step = self.resume(0, params),
            }
        }
    }

    /// The router's part of a query on a sharded index (docs/DISTRIBUTED.md): the clusters
    /// query `qi` probes and the training queries whose answers it scores, exactly as
    /// [`Searcher::search`] chooses them (steps 1–2), without scanning or reading anything.
    /// Uses slot 0.
    pub fn route_plan(
        &mut self,
        qi: usize,
        q: &[f32],
        params: &SearchParams,
    ) -> Result<RoutePlan, SearchError> {
        self.check(qi, q, params)?;
        let idx = self.index;
        let t = &mut self.slots[0];
        t.pending = None;
        t.end();
        t.begin(params);
        let plan = candidates::prepare(idx, t, qi, q, params).map(|qn| {
            candidates::route(idx, t, params);
            let clusters = t.clusters.clone();
            let hint_queries = candidates::hint_training_queries(idx, t, params, qn)
                .map(|_| t.ranked.iter().map(|&(_, tq)| tq).collect())
                .unwrap_or_default();
            RoutePlan {
                clusters,
                hint_queries,
            }
        });
        t.end();
        plan
    }

    /// Starts query `qi` (`q`) in `slot` (< [`Searcher::slots`]): checks it, runs prepare,
    /// route and PQ scan, and submits its first batch of reads. A query still parked in the
    /// slot is abandoned (its read is waited for and dropped).
    pub fn start(&mut self, slot: usize, qi: usize, q: &[f32], params: &SearchParams) -> QueryStep {
        self.slots[slot].pending = None;
        self.slots[slot].end();
        match self.start_inner(slot, qi, q, params) {
            Ok(step) => step,
            Err(e) => {
                self.slots[slot].end();
                QueryStep::Done(Err(e))
            }
        }
    }

    /// Whether the query parked in `slot` can be resumed without blocking (its read has
    /// completed). Makes progress on the read (see [`PendingRead::try_complete`]); `true` for
    /// a slot without a pending read.
    pub fn is_ready(&mut self, slot: usize) -> bool {
        self.slots[slot]
            .pending
            .as_mut()
            .is_none_or(PendingRead::try_complete)
    }

    /// Continues the query parked in `slot`: waits for its read if it is not complete yet,
    /// reranks, and parks on the next neighbour-list round or finishes.
    pub fn resume(&mut self, slot: usize, params: &SearchParams) -> QueryStep {
        match self.resume_inner(slot, params) {
            Ok(step) => step,
            Err(e) => {
                self.slots[slot].pending = None;
                self.slots[slot].end();
                QueryStep::Done(Err(e))
            }
        }
    }

    fn start_inner(
        &mut self,
        slot: usize,
        qi: usize,
        q: &[f32],
        params: &SearchParams,
    ) -> Result<QueryStep, SearchError> {
        self.check(qi, q, params)?;
        if let super::RerankDistance::LcCmd { alpha, beta } = params.distance {
            self.lccmd_weights(alpha, beta)?;
        }
        let idx = self.index;
        let scores = &mut self.scores;
        let t = &mut self.slots[slot];
        t.begin(params);
        let qn = candidates::prepare(idx, t, qi, q, params)?;
        candidates::route(idx, t, params);
        // The candidate list and the read list are the slot's scratch, kept across queries.
        let mut cands = std::mem::take(&mut t.cands);
        let read = params.rerank.max(params.k);
        let refine = candidates::refines(idx, t, params);
        cands.reset(if refine { params.refine } else { read });
        candidates::score_hints(idx, t, params, qn, &mut cands);
        candidates::scan_clusters(idx, t, params, qn, scores, &mut cands);
        if refine {
            candidates::refine(idx, t, read, &mut cands);
        }

        // 4. Read the best candidates (rerank when they are in).
        cands.drain_sorted_into(&mut t.sorted);
        t.cands = cands;
        let mut to_read = std::mem::take(&mut t.to_read);
        to_read.clear();
        to_read.extend(t.sorted.iter().map(|n| n.id));
        t.seen.extend(&to_read);
        let parked = submit_records(idx, t, &to_read);
        t.to_read = to_read;
        if parked? {
            return Ok(QueryStep::Parked);
        }
        self.next_round(slot, params)
    }

    fn resume_inner(
        &mut self,
        slot: usize,
        params: &SearchParams,
    ) -> Result<QueryStep, SearchError> {
        let idx = self.index;
        let t = &mut self.slots[slot];
        let Some(pending) = t.pending.take() else {
            return Err(SearchError::Param {
                name: "slot",
                what: format!("no query is parked in slot {slot}"),
            });
        };
        let (buf, r) = pending.finish();
        t.buf = buf;
        let rs = r?;
        t.stats.reads += rs.reads;
        t.stats.sectors += rs.sectors;
        t.stats.bytes += rs.bytes;
        t.stats.io_rounds += rs.rounds;
        rerank(idx, t, params, &mut self.vec_scratch, self.weights.as_ref())?;
        self.next_round(slot, params)
    }

    /// Step 5, rounds along the neighbour lists of the best results: parks on the next
    /// round's read, or ends the query. A round's candidates and read list are the slot's
    /// scratch (the first pass's, free by then).
    fn next_round(&mut self, slot: usize, params: &SearchParams) -> Result<QueryStep, SearchError> {
        let idx = self.index;
        let t = &mut self.slots[slot];
        while t.rounds_done < params.expand_rounds {
            t.rounds_done += 1;
            t.best.sort_by(|a, b| a.result.cmp_total(&b.result));
            let mut fresh = std::mem::take(&mut t.cands);
            fresh.reset(params.expand_read.max(1));
            let any = round_candidates(idx, t, params.expand_from, &mut fresh);
            fresh.drain_sorted_into(&mut t.sorted);
            t.cands = fresh;
            if !any {
                break;
            }
            let mut next = std::mem::take(&mut t.to_read);
            next.clear();
            next.extend(t.sorted.iter().map(|n| n.id));
            let parked = submit_records(idx, t, &next);
            t.to_read = next;
            if parked? {
                return Ok(QueryStep::Parked);
            }
        }
        Ok(QueryStep::Done(Ok(t.end())))
    }
}

/// One round's candidates into `fresh`: the records on the neighbour lists of the
/// `expand_from` best results that were neither read nor in a probed cluster (scored by PQ
/// already and not among the best), scored by PQ. Whether there was any.
fn round_candidates(idx: &Index, t: &mut Task<'_>, expand_from: usize, fresh: &mut TopK) -> bool {
    let m = idx.pq.subspaces();
    let mut any = false;
    for r in t.best.iter().take(expand_from) {
        for &nb in &t.list_ids[r.list.clone()] {
            if nb as u64 >= idx.meta.n_records
                || idx.live.base_record_dead(nb)
                || !t.seen.insert(nb)
            {
                continue;
            }
            let c = idx.cluster_of(nb);
            if t.probed[c] {
                continue;
            }
            let code = &idx.codes.as_slice()[nb as usize * m..(nb as usize + 1) * m];
            let weighted = t.weighting.as_ref().filter(|w| !w.unit);
            let (s, corr) = match (weighted, idx.blocks.as_ref()) {
                (Some(w), Some(b)) => (
                    adc_score_spans(&t.table, code, &w.spans),
                    b.corrections
                        .as_ref()
                        .map_or(0.0, |bc| w.correction(bc, nb as usize)),
                ),
                _ => (adc_score(&t.table, code), idx.correction[nb as usize]),
            };
            t.stats.pq_scored += 1;
            let cs = t
                .centroid_scores
                .get(&idx.router, &idx.centroids, &t.query, c);
            fresh.push(Neighbor {
                id: nb,
                dist: approx_dist(idx.metric, cs, s, corr),
            });
            any = true;
        }
    }
    any
}

#[inline]
pub(super) fn approx_dist(
    metric: Metric,
    centroid_score: f32,
    table_sum: f32,
    correction: f32,
) -> f32 {
    match metric {
        // |q − c − r̂|² = |q − c|² + (|r̂|² + 2c·r̂) − 2 q·r̂
        Metric::L2 => centroid_score + correction - 2.0 * table_sum,
        // −q·(c + r̂)
        _ => centroid_score - table_sum,
    }
}

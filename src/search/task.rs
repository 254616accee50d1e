//! One query in progress in a [`super::Searcher`]'s slot: its state between steps and its
//! scratch space, kept across queries so that once the slot's buffers have grown a query
//! allocates little beyond its answer (DiskANN's scratch types). `candidates` fills it in the first pass,
//! `read` plans, reads and reranks into it, `query` moves it from step to step.

use std::collections::HashSet;
use std::ops::Range;

use super::blocks::Weighting;
use super::hints::HintScratch;
use super::index::Index;
use super::params::{QueryStats, SearchParams};
use super::read::ReadPlan;
use crate::exact::{Neighbor, TopK};
use crate::io::{AlignedBuf, PendingRead};
use crate::route::AnchorScores;

/// A record the query has reranked: its result and where the record's neighbour list is in
/// [`Task::list_ids`] (empty when the query runs no rounds).
#[derive(Debug, Clone)]
pub(super) struct Reranked {
    pub(super) result: Neighbor,
    pub(super) list: Range<usize>,
}

/// One query in progress, and its scratch space (kept across queries for reuse).
pub(super) struct Task<'a> {
    pub(super) query: Vec<f32>,
    /// Multi-vector indexes: the query's block factors.
    pub(super) weighting: Option<Weighting>,
    /// `ω ⊙ query` of a weighted multi-vector query (its PQ table is built from it).
    pub(super) weighted_query: Vec<f32>,
    /// Scores of the base anchors the query has needed so far.
    pub(super) centroid_scores: AnchorScores,
    pub(super) anchor_scores: AnchorScores,
    /// Scratch of the search for the nearest training queries (`hints.m3`).
    pub(super) hint_scratch: HintScratch,
    /// Records named by the nearest training queries' answers, sorted, distinct.
    pub(super) hint_records: Vec<u32>,
    pub(super) ranked: Vec<(f32, u32)>,
    /// Scratch of the first pass: the PQ candidates, their sorted copy, the records to read
    /// and the probed clusters in scan order (kept across queries, never reallocated per
    /// query once grown).
    pub(super) cands: TopK,
    pub(super) sorted: Vec<Neighbor>,
    pub(super) to_read: Vec<u32>,
    pub(super) scan_order: Vec<(f32, u32)>,
    /// Clusters probed by the current query (reset when it ends).
    pub(super) probed: Vec<bool>,
    pub(super) table: Vec<f32>,
    /// The query's inner-product table of the refinement codes (built only when used).
    pub(super) refine_table: Vec<f32>,
    pub(super) clusters: Vec<u32>,
    /// `None` when no query runs in the slot.
    pub(super) results: Option<TopK>,
    pub(super) result_ids: HashSet<u32>,
    /// Records read (or being read) by the current query.
    pub(super) seen: HashSet<u32>,
    /// Everything reranked, in rerank order until a round sorts it.
    pub(super) best: Vec<Reranked>,
    /// The neighbour lists of the reranked records, back to back ([`Reranked::list`]).
    pub(super) list_ids: Vec<u32>,
    pub(super) stats: QueryStats,
    pub(super) rounds_done: usize,
    /// The batch being read.
    pub(super) plan: ReadPlan,
    /// The read buffer; moved into `pending` while a read is in flight.
    pub(super) buf: AlignedBuf,
    pub(super) pending: Option<PendingRead<'a>>,
}

impl Task<'_> {
    pub(super) fn new(index: &Index) -> Self {
        Self {
            query: Vec::with_capacity(index.dim),
            weighting: None,
            weighted_query: Vec::new(),
            centroid_scores: AnchorScores::new(index.n_clusters()),
            anchor_scores: AnchorScores::new(index.n_query_anchors()),
            hint_scratch: HintScratch::default(),
            hint_records: Vec::new(),
            ranked: Vec::new(),
            cands: TopK::default(),
            sorted: Vec::new(),
            to_read: Vec::new(),
            scan_order: Vec::new(),
            probed: vec![false; index.n_clusters()],
            table: Vec::new(),
            refine_table: Vec::new(),
            clusters: Vec::new(),
            results: None,
            result_ids: HashSet::new(),
            seen: HashSet::new(),
            best: Vec::new(),
            list_ids: Vec::new(),
            stats: QueryStats::default(),
            rounds_done: 0,
            plan: ReadPlan::default(),
            buf: AlignedBuf::new(),
            pending: None,
        }
    }

    /// Starts a query with `params` in this slot: its counters, results and the records it
    /// has seen start empty (the buffers keep their allocations).
    pub(super) fn begin(&mut self, params: &SearchParams) {
        self.stats = QueryStats::default();
        self.rounds_done = 0;
        self.results = Some(TopK::new(params.k));
        self.result_ids.clear();
        self.seen.clear();
        self.best.clear();
        self.list_ids.clear();
    }

    /// Ends the query in this slot: clears the probed marks and returns the results.
    pub(super) fn end(&mut self) -> (Vec<Neighbor>, QueryStats) {
        for &c in &self.clusters {
            self.probed[c as usize] = false;
        }
        self.clusters.clear();
        let results = self
            .results
            .take()
            .map(TopK::into_sorted)
            .unwrap_or_default();
        (results, std::mem::take(&mut self.stats))
    }
}

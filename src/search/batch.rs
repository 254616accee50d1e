//! Many queries on a thread pool, several in flight per thread: results come back in query
//! order.
//!
//! Every worker of the pool keeps one [`Searcher`] with `inflight_per_thread` slots and runs
//! this loop until the queries are used up (workers take the next query index from a shared
//! counter, so a slow query does not hold up a fixed share of the batch):
//!
//! 1. resume every parked query whose read has completed ([`Searcher::is_ready`], which does
//!    not block), oldest first: it reranks and either finishes or parks on its next round;
//! 2. start new queries in the free slots: each runs its CPU phases (prepare, route, PQ scan)
//!    and parks on its first batch of reads;
//! 3. when neither step did anything, every slot waits for the device: block on the oldest
//!    parked query's read ([`Searcher::resume`]) — a thread sleeps only when none of its
//!    queries can progress.
//!
//! With one slot this is the plain one-query-at-a-time loop. A query's latency is measured
//! from its start (step 2) to its completion, so it includes the time it spent parked behind
//! other queries' CPU work on the same thread.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use super::query::QueryStep;
use super::{Index, QueryStats, SearchError, SearchParams, Searcher};
use crate::data::MatrixView;
use crate::exact::Neighbor;

/// Default queries in flight per worker thread (`--inflight`); see
/// `docs/decisions/0006-pipelined-batch-search.md`.
pub const DEFAULT_INFLIGHT: usize = 4;

/// How a batch is run (independent of the per-query [`SearchParams`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOptions {
    /// Queries in progress per worker thread: while some wait for their sectors, the thread
    /// computes others. 1 = one query at a time.
    pub inflight_per_thread: usize,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            inflight_per_thread: DEFAULT_INFLIGHT,
        }
    }
}

/// Results, per-query cost and per-query latency of a batch.
#[derive(Debug)]
pub struct BatchResult {
    /// The answers of every query, in query order (ids and internal distances, best first).
    pub results: Vec<Vec<Neighbor>>,
    /// What each query cost.
    pub stats: Vec<QueryStats>,
    /// Each query's latency, microseconds.
    pub latencies_us: Vec<f64>,
    /// Wall time of the whole batch.
    pub seconds: f64,
}

type Outcome = Result<(Vec<Neighbor>, QueryStats, f64), SearchError>;

/// Searches every row of `queries` on `pool`, `options.inflight_per_thread` queries in flight
/// per worker. Fails on the first bad query (checked up front, so no work is wasted on a batch
/// that cannot complete); on a read error, returns the error of the first failed query.
pub fn search_batch(
    index: &Index,
    queries: MatrixView<'_, f32>,
    params: &SearchParams,
    pool: &rayon::ThreadPool,
    options: &BatchOptions,
) -> Result<BatchResult, SearchError> {
    let checker = Searcher::new(index);
    for (i, q) in queries.iter_rows().enumerate() {
        checker.check(i, q, params)?;
    }
    drop(checker);
    let n = queries.rows();
    let window = options.inflight_per_thread.max(1);
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    let per_worker: Vec<Vec<(usize, Outcome)>> =
        pool.broadcast(|_| run_worker(index, queries, params, window, &next));
    let seconds = start.elapsed().as_secs_f64();
    let mut out: Vec<Option<Outcome>> = (0..n).map(|_| None).collect();
    for (i, o) in per_worker.into_iter().flatten() {
        out[i] = Some(o);
    }
    let mut res = BatchResult {
        results: Vec::with_capacity(n),
        stats: Vec::with_capacity(n),
        latencies_us: Vec::with_capacity(n),
        seconds,
    };
    for (i, o) in out.into_iter().enumerate() {
        let Some(o) = o else {
            // Unreachable: every index below `n` is taken by exactly one worker.
            return Err(SearchError::Param {
                name: "batch",
                what: format!("query {i} was not run"),
            });
        };
        let (r, st, l) = o?;
        res.results.push(r);
        res.stats.push(st);
        res.latencies_us.push(l);
    }
    Ok(res)
}

/// One worker's loop (see the module docs): returns (query index, outcome) of the queries it
/// ran.
fn run_worker(
    index: &Index,
    queries: MatrixView<'_, f32>,
    params: &SearchParams,
    window: usize,
    next: &AtomicUsize,
) -> Vec<(usize, Outcome)> {
    let n = queries.rows();
    let mut searcher = Searcher::with_slots(index, window);
    let mut out = Vec::new();
    let mut free: Vec<usize> = (0..window).rev().collect();
    // (slot, query, start) of the parked queries, oldest park first.
    let mut parked: VecDeque<(usize, usize, Instant)> = VecDeque::with_capacity(window);
    let mut exhausted = false;
    let done = |out: &mut Vec<(usize, Outcome)>, qi: usize, t0: Instant, r: Result<_, _>| {
        let us = t0.elapsed().as_secs_f64() * 1e6;
        out.push((qi, r.map(|(res, st)| (res, st, us))));
    };
    loop {
        let mut progressed = false;
        // 1. Resume the queries whose reads have completed.
        let mut k = 0;
        while k < parked.len() {
            let (slot, qi, t0) = parked[k];
            if !searcher.is_ready(slot) {
                k += 1;
                continue;
            }
            progressed = true;
            let _ = parked.remove(k);
            match searcher.resume(slot, params) {
                QueryStep::Parked => parked.push_back((slot, qi, t0)),
                QueryStep::Done(r) => {
                    done(&mut out, qi, t0, r);
                    free.push(slot);
                }
            }
        }
        // 2. Start new queries in the free slots.
        while !exhausted && let Some(slot) = free.pop() {
            let qi = next.fetch_add(1, Ordering::Relaxed);
            if qi >= n {
                exhausted = true;
                free.push(slot);
                break;
            }
            progressed = true;
            let t0 = Instant::now();
            match searcher.start(slot, qi, queries.row(qi), params) {
                QueryStep::Parked => parked.push_back((slot, qi, t0)),
                QueryStep::Done(r) => {
                    done(&mut out, qi, t0, r);
                    free.push(slot);
                }
            }
        }
        if parked.is_empty() && exhausted {
            return out;
        }
        // 3. Nothing can progress without the device: wait on the oldest read.
        if !progressed && let Some((slot, qi, t0)) = parked.pop_front() {
            match searcher.resume(slot, params) {
                QueryStep::Parked => parked.push_back((slot, qi, t0)),
                QueryStep::Done(r) => {
                    done(&mut out, qi, t0, r);
                    free.push(slot);
                }
            }
        }
    }
}

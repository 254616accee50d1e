//! Many queries on a thread pool, several in flight per thread: results come back in query
//! order.
//!
//! Every worker of the pool runs the loop of `search::inflight` on one [`Searcher`] with
//! `inflight_per_thread` slots until the queries are used up: workers take the next query
//! index from a shared counter, so a slow query does not hold up a fixed share of the batch.
//! A query's latency is measured from its start to its completion, so it includes the time it
//! spent parked behind other queries' CPU work on the same thread.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use super::inflight::{Inflight, Jobs, Next, Step};
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
    let mut jobs = BatchJobs {
        queries,
        params,
        next,
        exhausted: false,
        out: Vec::new(),
    };
    Inflight::new(index, window).run(&mut jobs);
    jobs.out
}

/// One worker's share of a batch: query indexes from the shared counter, outcomes kept with
/// their latency.
struct BatchJobs<'q> {
    queries: MatrixView<'q, f32>,
    params: &'q SearchParams,
    next: &'q AtomicUsize,
    exhausted: bool,
    out: Vec<(usize, Outcome)>,
}

impl Jobs for BatchJobs<'_> {
    /// The query's index and start.
    type Job = (usize, Instant);
    type Failure = Infallible;

    fn next(&mut self, _idle: bool) -> Next<Self::Job> {
        if self.exhausted {
            return Next::End;
        }
        let qi = self.next.fetch_add(1, Ordering::Relaxed);
        if qi >= self.queries.rows() {
            self.exhausted = true;
            return Next::End;
        }
        Next::Start((qi, Instant::now()))
    }

    fn step(
        &mut self,
        searcher: &mut Searcher<'_>,
        slot: usize,
        &(qi, _): &Self::Job,
        step: Step,
    ) -> Result<QueryStep, Infallible> {
        Ok(match step {
            Step::Start => searcher.start(slot, qi, self.queries.row(qi), self.params),
            Step::Resume => searcher.resume(slot, self.params),
        })
    }

    fn finish(
        &mut self,
        (qi, t0): Self::Job,
        result: Result<(Vec<Neighbor>, QueryStats), SearchError>,
    ) {
        let us = t0.elapsed().as_secs_f64() * 1e6;
        self.out.push((qi, result.map(|(res, st)| (res, st, us))));
    }

    fn fail(&mut self, _: Self::Job, failure: Infallible) {
        match failure {}
    }

    fn restart(&mut self, _: Self::Job) {
        unreachable!("a batch's steps cannot fail, so its searcher is never replaced")
    }
}

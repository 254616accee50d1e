//! The search workers: a fixed set of threads, each with one [`Searcher`] holding several
//! queries in flight, fed one query vector at a time by a bounded queue from the async
//! handlers, answering through a oneshot channel per query.
//!
//! The handlers never block: they `await` a place in the queue and then the answers. The
//! workers never wait on a client: a query's answer is handed to its channel and the worker
//! moves on, whatever the client's connection does. Each worker runs the loop that
//! `search_batch` runs (`search::Inflight`: resume queries whose reads completed, start new
//! ones in free slots, block on the oldest read only when nothing else can progress), with
//! jobs from the queue ([`WorkerJobs`]): a worker with nothing in flight sleeps on it.
//! Queries of many requests and connections so share the block reader and keep
//! `workers × inflight` reads batches in flight.
//!
//! A query whose request has ended (its receiver dropped: the handler answered with an error,
//! hit its deadline, or the client went away) is dropped unstarted.
//!
//! A panic while a worker runs a query is caught (`catch_unwind` around every step of every
//! query): that query is answered [`JobError::Panicked`] (500), the worker replaces its
//! `Searcher` (which may have stopped half-way through its bookkeeping) and starts its other
//! queries in flight again from the beginning, so their answers are unchanged. A panic outside
//! a query step restarts the worker's loop (its queries in flight then end with 500). Either
//! way the pool keeps its size.

use std::any::Any;
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::oneshot;

use super::api::QueryKind;
use super::{Metrics, QueryHook, ServeError};
use crate::exact::Neighbor;
use crate::search::{
    ExactSearcher, Index, Inflight, Jobs, LiveIndex, Next, QueryStats, QueryStep, SearchError,
    Searcher, ShardedIndex, Step,
};

/// A query's answer: its neighbours (best first, internal distances), cost, and the generation
/// of the index that answered (its vids name vectors of that generation).
pub(super) type JobResult = Result<(Vec<Neighbor>, QueryStats, Arc<Index>), JobError>;

/// Why a query has no answer.
#[derive(Debug, thiserror::Error)]
pub(super) enum JobError {
    #[error(transparent)]
    Search(#[from] SearchError),
    /// The worker panicked while running this query (a bug); the message of the panic.
    #[error("the search worker panicked on this query: {0}")]
    Panicked(String),
}

/// One query vector of a request.
pub(super) struct Job {
    pub qi: usize,
    pub vector: Vec<f32>,
    pub kind: Arc<QueryKind>,
    pub deadline: Instant,
    pub reply: oneshot::Sender<JobResult>,
}

/// The worker threads and the sending side of their queue.
pub(super) struct WorkerPool {
    queue: async_channel::Sender<Job>,
    threads: Vec<JoinHandle<()>>,
}

impl WorkerPool {
    pub fn start(
        live: Arc<LiveIndex>,
        workers: usize,
        inflight: usize,
        capacity: usize,
        metrics: Arc<Metrics>,
        hook: Option<QueryHook>,
    ) -> Result<Self, ServeError> {
        if workers == 0 || inflight == 0 || capacity == 0 {
            return Err(ServeError::Config {
                name: "workers",
                what: format!(
                    "workers ({workers}), queries in flight per worker ({inflight}) and queue \
                     capacity ({capacity}) must all be at least 1"
                ),
            });
        }
        let (tx, rx) = async_channel::bounded(capacity);
        let mut threads = Vec::with_capacity(workers);
        for i in 0..workers {
            let (live, rx, metrics, hook) =
                (live.clone(), rx.clone(), metrics.clone(), hook.clone());
            let t = std::thread::Builder::new()
                .name(format!("m3-serve-{i}"))
                .spawn(move || {
                    // Query steps catch their own panics; this restarts the loop after one
                    // anywhere else, so the thread lives as long as the queue. Each round
                    // runs on one generation of the index: when a newer one is installed,
                    // the round starts no more queries, lets those in flight finish on their
                    // generation, and the next round takes the new one (with the job that
                    // noticed it).
                    let mut carried = VecDeque::new();
                    loop {
                        let index = live.current();
                        let mut searcher = Inflight::new(&index, inflight);
                        let mut jobs = WorkerJobs::new(&index, &live, &rx, &metrics, hook.as_ref());
                        jobs.restart = std::mem::take(&mut carried);
                        match catch_unwind(AssertUnwindSafe(|| searcher.run(&mut jobs))) {
                            Ok(()) if jobs.stale => carried = std::mem::take(&mut jobs.restart),
                            Ok(()) => return,
                            Err(_) => metrics.worker_panicked(),
                        }
                    }
                })
                .map_err(ServeError::Runtime)?;
            threads.push(t);
        }
        Ok(Self { queue: tx, threads })
    }

    /// The workers of a sharded index with every shard local: each routes a query, asks the
    /// shards it needs on its own searchers (concurrently on the index's fan-out pool when
    /// it has one, `ShardedIndex::set_fanout_threads`) and merges their answers
    /// (`ShardedIndex::search`, `exact`, `range`). One query at a time per worker; a panic
    /// fails that query and the worker goes on with new searchers.
    pub fn start_sharded(
        sharded: Arc<ShardedIndex>,
        workers: usize,
        capacity: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ServeError> {
        if workers == 0 || capacity == 0 {
            return Err(ServeError::Config {
                name: "workers",
                what: format!(
                    "workers ({workers}) and queue capacity ({capacity}) must be at least 1"
                ),
            });
        }
        let (tx, rx) = async_channel::bounded::<Job>(capacity);
        let mut threads = Vec::with_capacity(workers);
        for i in 0..workers {
            let (sharded, rx, metrics) = (sharded.clone(), rx.clone(), metrics.clone());
            let t = std::thread::Builder::new()
                .name(format!("m3-serve-{i}"))
                .spawn(move || sharded_worker(&sharded, &rx, &metrics))
                .map_err(ServeError::Runtime)?;
            threads.push(t);
        }
        Ok(Self { queue: tx, threads })
    }

    pub fn queue(&self) -> async_channel::Sender<Job> {
        self.queue.clone()
    }

    /// Closes the queue and, on a thread of its own, waits until the workers have finished
    /// what was queued; the receiver hears when they have. The caller may stop waiting for it
    /// (a worker inside a long exact query is then left to finish on its own).
    pub fn close_and_join(self) -> oneshot::Receiver<()> {
        self.queue.close();
        let (done, joined) = oneshot::channel();
        let threads = self.threads;
        let joiner = std::thread::Builder::new()
            .name("m3-serve-join".into())
            .spawn(move || {
                for t in threads {
                    // Workers catch their panics; a join error cannot carry anything useful.
                    let _ = t.join();
                }
                let _ = done.send(());
            });
        // If no thread could be started, `done` went with the closure: the receiver hears at
        // once and the caller does not wait (the workers still stop once the queue is empty).
        drop(joiner);
        joined
    }
}

/// One worker of [`WorkerPool::start_sharded`]: answers the queue's jobs until it closes.
fn sharded_worker(
    sharded: &Arc<ShardedIndex>,
    rx: &async_channel::Receiver<Job>,
    metrics: &Metrics,
) {
    let router = sharded.shard_arc(0);
    let mut searchers = sharded.searchers();
    while let Ok(job) = rx.recv_blocking() {
        if job.reply.is_closed() || Instant::now() >= job.deadline {
            metrics.query_abandoned();
            continue;
        }
        let r = catch_unwind(AssertUnwindSafe(|| {
            sharded_query(sharded, &mut searchers, &job)
        }));
        let answer = match r {
            Ok(r) => r
                .map(|(n, s)| (n, s, router.clone()))
                .map_err(JobError::Search),
            Err(panic) => {
                metrics.worker_panicked();
                searchers = sharded.searchers();
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".into());
                Err(JobError::Panicked(what))
            }
        };
        let _ = job.reply.send(answer);
    }
}

/// One query of `job` on the sharded index; its cost is the sum over the shards asked.
fn sharded_query(
    sharded: &ShardedIndex,
    searchers: &mut [Searcher<'_>],
    job: &Job,
) -> Result<(Vec<Neighbor>, QueryStats), SearchError> {
    let no_weights = |w: &Option<Vec<f32>>| match w {
        Some(_) => Err(SearchError::Param {
            name: "block_weights",
            what: "not supported on a sharded index".into(),
        }),
        None => Ok(()),
    };
    let (n, st) = match job.kind.as_ref() {
        QueryKind::Approx(p) => sharded.search(searchers, job.qi, &job.vector, p)?,
        QueryKind::Exact { k, block_weights } => {
            no_weights(block_weights)?;
            sharded.exact(&job.vector, *k)?
        }
        QueryKind::Range {
            radius,
            block_weights,
            ..
        } => {
            no_weights(block_weights)?;
            sharded.range(&job.vector, *radius)?
        }
    };
    Ok((n, st.query))
}

/// One worker's jobs: approximate queries from the queue go to its [`Inflight`] searcher,
/// each step under `catch_unwind`; exact and range queries run on the spot on an
/// `ExactSearcher` made at the first of them.
struct WorkerJobs<'a> {
    index: &'a Arc<Index>,
    live: &'a LiveIndex,
    /// A newer generation than `index` is installed: start no more queries on this one.
    stale: bool,
    queue: &'a async_channel::Receiver<Job>,
    /// Whether the queue may still give jobs.
    open: bool,
    metrics: &'a Metrics,
    hook: Option<&'a QueryHook>,
    exact: Option<ExactSearcher<'a>>,
    /// Queries to start before taking new ones from the queue: those that were in flight in
    /// a searcher replaced after a panic.
    restart: VecDeque<Job>,
}

impl<'a> WorkerJobs<'a> {
    fn new(
        index: &'a Arc<Index>,
        live: &'a LiveIndex,
        queue: &'a async_channel::Receiver<Job>,
        metrics: &'a Metrics,
        hook: Option<&'a QueryHook>,
    ) -> Self {
        Self {
            index,
            live,
            stale: false,
            queue,
            open: true,
            metrics,
            hook,
            exact: None,
            restart: VecDeque::new(),
        }
    }
}

impl Jobs for WorkerJobs<'_> {
    type Job = Job;
    /// The payload of a panic caught in a step.
    type Failure = Box<dyn Any + Send>;

    /// A restarted query first, else the queue's next job (sleeping on the queue when nothing
    /// is in flight). A job whose request has ended is dropped unstarted; an exact or range
    /// job runs now.
    fn next(&mut self, idle: bool) -> Next<Job> {
        if self.stale {
            return Next::End;
        }
        let next = if let Some(job) = self.restart.pop_front() {
            Some(job)
        } else if !self.open {
            return Next::End;
        } else if idle {
            self.queue.recv_blocking().ok()
        } else {
            match self.queue.try_recv() {
                Ok(job) => Some(job),
                Err(async_channel::TryRecvError::Empty) => return Next::Later,
                Err(async_channel::TryRecvError::Closed) => None,
            }
        };
        let Some(job) = next else {
            self.open = false;
            return Next::End;
        };
        if job.reply.is_closed() || Instant::now() >= job.deadline {
            self.metrics.query_abandoned();
            return Next::Handled;
        }
        if !Arc::ptr_eq(self.index, &self.live.current()) {
            // Started on the newer generation by the next round.
            self.stale = true;
            self.restart.push_front(job);
            return Next::End;
        }
        match job.kind.as_ref() {
            QueryKind::Approx(_) => Next::Start(job),
            QueryKind::Exact { .. } | QueryKind::Range { .. } => {
                self.run_exact(job);
                Next::Handled
            }
        }
    }

    /// Starts or resumes the approximate query of `job` in `slot` under `catch_unwind`.
    fn step(
        &mut self,
        searcher: &mut Searcher<'_>,
        slot: usize,
        job: &Job,
        step: Step,
    ) -> Result<QueryStep, Self::Failure> {
        let QueryKind::Approx(params) = job.kind.as_ref() else {
            // Never started ([`Jobs::next`] runs exact jobs itself).
            return Ok(QueryStep::Done(Err(SearchError::Param {
                name: "kind",
                what: "an exact query reached the approximate searcher".into(),
            })));
        };
        let hook = self.hook;
        catch_unwind(AssertUnwindSafe(|| match step {
            Step::Start => {
                if let Some(h) = hook {
                    h.call(&job.vector);
                }
                searcher.start(slot, job.qi, &job.vector, params)
            }
            Step::Resume => searcher.resume(slot, params),
        }))
    }

    fn finish(&mut self, job: Job, result: Result<(Vec<Neighbor>, QueryStats), SearchError>) {
        // The receiver may be gone (request ended); the answer is then dropped.
        let index = self.index.clone();
        let _ = job
            .reply
            .send(result.map(|(n, s)| (n, s, index)).map_err(JobError::Search));
    }

    fn fail(&mut self, job: Job, panic: Self::Failure) {
        self.answer_panic(job, panic.as_ref());
    }

    fn restart(&mut self, job: Job) {
        self.restart.push_back(job);
    }
}

impl WorkerJobs<'_> {
    /// Exact k-NN or range search of one vector, blocking this worker until it is done (its
    /// reads are waited for one batch at a time; the worker's parked approximate queries
    /// resume after it).
    fn run_exact(&mut self, job: Job) {
        let (index, hook, exact) = (&**self.index, self.hook, &mut self.exact);
        let r = catch_unwind(AssertUnwindSafe(|| {
            if let Some(h) = hook {
                h.call(&job.vector);
            }
            let ex = exact.get_or_insert_with(|| ExactSearcher::new(index));
            exact_query(ex, &job)
        }));
        match r {
            Ok(r) => {
                let index = self.index.clone();
                let _ = job
                    .reply
                    .send(r.map(|(n, s)| (n, s, index)).map_err(JobError::Search));
            }
            Err(panic) => {
                self.answer_panic(job, panic.as_ref());
                self.exact = None;
            }
        }
    }

    fn answer_panic(&self, job: Job, panic: &(dyn Any + Send)) {
        self.metrics.worker_panicked();
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        let _ = job.reply.send(Err(JobError::Panicked(what)));
    }
}

fn exact_query(
    exact: &mut ExactSearcher<'_>,
    job: &Job,
) -> Result<(Vec<Neighbor>, QueryStats), SearchError> {
    match &*job.kind {
        QueryKind::Exact { k, block_weights } => {
            exact.set_block_weights(block_weights.as_deref())?;
            exact.knn(&job.vector, *k)
        }
        QueryKind::Range {
            radius,
            block_weights,
            ..
        } => {
            exact.set_block_weights(block_weights.as_deref())?;
            exact.range(&job.vector, *radius)
        }
        QueryKind::Approx(_) => Err(SearchError::Param {
            name: "kind",
            what: "an approximate query reached the exact searcher".into(),
        }),
    }
}

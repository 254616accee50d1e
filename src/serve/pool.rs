//! The search workers: a fixed set of threads, each with one [`Searcher`] holding several
//! queries in flight, fed one query vector at a time by a bounded queue from the async
//! handlers, answering through a oneshot channel per query.
//!
//! The handlers never block: they `await` a place in the queue and then the answers. The
//! workers never wait on a client: a query's answer is handed to its channel and the worker
//! moves on, whatever the client's connection does. Each worker runs the loop of
//! `search::batch` (resume queries whose reads completed, start new ones in free slots, block
//! on the oldest read only when nothing else can progress), except that new queries come from
//! the queue and a worker with nothing in flight sleeps on it. Queries of many requests and
//! connections so share the block reader and keep `workers × inflight` reads batches in
//! flight.
//!
//! A query whose request has ended (its receiver dropped: the handler answered with an error,
//! hit its deadline, or the client went away) is dropped unstarted.

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::oneshot;

use super::api::QueryKind;
use super::{Metrics, ServeError};
use crate::exact::Neighbor;
use crate::search::{ExactSearcher, Index, QueryStats, QueryStep, SearchError, Searcher};

/// A query's answer: its neighbours (best first, internal distances) and cost.
pub(super) type JobResult = Result<(Vec<Neighbor>, QueryStats), SearchError>;

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
        index: Arc<Index>,
        workers: usize,
        inflight: usize,
        capacity: usize,
        metrics: Arc<Metrics>,
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
            let (index, rx, metrics) = (index.clone(), rx.clone(), metrics.clone());
            let t = std::thread::Builder::new()
                .name(format!("m3-serve-{i}"))
                .spawn(move || run_worker(&index, &rx, inflight, &metrics))
                .map_err(ServeError::Runtime)?;
            threads.push(t);
        }
        Ok(Self { queue: tx, threads })
    }

    pub fn queue(&self) -> async_channel::Sender<Job> {
        self.queue.clone()
    }

    /// Closes the queue and waits until the workers have finished what was queued.
    pub fn close_and_join(self) {
        self.queue.close();
        for t in self.threads {
            // A worker that panicked has dropped its queries' reply channels, which their
            // handlers answered as 500; nothing more to do here.
            let _ = t.join();
        }
    }
}

/// A query in progress in one of the worker's slots.
struct Parked {
    slot: usize,
    job: Job,
}

fn run_worker(
    index: &Index,
    queue: &async_channel::Receiver<Job>,
    slots: usize,
    metrics: &Metrics,
) {
    let mut searcher = Searcher::with_slots(index, slots);
    // Made on the first exact or range job (it holds per-cluster scratch).
    let mut exact: Option<ExactSearcher<'_>> = None;
    let mut free: Vec<usize> = (0..slots).rev().collect();
    let mut parked: VecDeque<Parked> = VecDeque::with_capacity(slots);
    let mut open = true;
    loop {
        let mut progressed = false;
        // 1. Resume the queries whose reads have completed.
        let mut i = 0;
        while i < parked.len() {
            if !searcher.is_ready(parked[i].slot) {
                i += 1;
                continue;
            }
            progressed = true;
            if let Some(p) = parked.remove(i) {
                step(&mut searcher, p, &mut parked, &mut free, Resume);
            }
        }
        // 2. Start new queries in the free slots; with nothing in flight, sleep on the queue.
        while open && let Some(&slot) = free.last() {
            let next = if parked.is_empty() {
                queue.recv_blocking().ok()
            } else {
                match queue.try_recv() {
                    Ok(job) => Some(job),
                    Err(async_channel::TryRecvError::Empty) => break,
                    Err(async_channel::TryRecvError::Closed) => None,
                }
            };
            let Some(job) = next else {
                open = false;
                break;
            };
            progressed = true;
            if job.reply.is_closed() || Instant::now() >= job.deadline {
                metrics.query_abandoned();
                continue;
            }
            match job.kind.as_ref() {
                QueryKind::Approx(_) => {
                    free.pop();
                    step(
                        &mut searcher,
                        Parked { slot, job },
                        &mut parked,
                        &mut free,
                        Start,
                    );
                }
                QueryKind::Exact { .. } | QueryKind::Range { .. } => {
                    let exact = exact.get_or_insert_with(|| ExactSearcher::new(index));
                    let r = run_exact(exact, &job);
                    let _ = job.reply.send(r);
                }
            }
        }
        if parked.is_empty() && !open {
            return;
        }
        // 3. Nothing can progress without the device: wait on the oldest read.
        if !progressed && let Some(p) = parked.pop_front() {
            step(&mut searcher, p, &mut parked, &mut free, Resume);
        }
    }
}

use Action::{Resume, Start};
enum Action {
    Start,
    Resume,
}

/// Starts or resumes the query in `p.slot`; parks it again or sends its answer.
fn step(
    searcher: &mut Searcher<'_>,
    p: Parked,
    parked: &mut VecDeque<Parked>,
    free: &mut Vec<usize>,
    action: Action,
) {
    let QueryKind::Approx(params) = p.job.kind.as_ref() else {
        return;
    };
    let r = match action {
        Start => searcher.start(p.slot, p.job.qi, &p.job.vector, params),
        Resume => searcher.resume(p.slot, params),
    };
    match r {
        QueryStep::Parked => parked.push_back(p),
        QueryStep::Done(r) => {
            free.push(p.slot);
            // The receiver may be gone (request ended); the answer is then dropped.
            let _ = p.job.reply.send(r);
        }
    }
}

/// Exact k-NN or range search of one vector, blocking this worker until it is done (its
/// reads are waited for one batch at a time; the worker's parked approximate queries resume
/// after it).
fn run_exact(exact: &mut ExactSearcher<'_>, job: &Job) -> JobResult {
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

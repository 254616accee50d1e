//! `POST /v1/upsert`, `POST /v1/delete` and `POST /v1/compact`: one writer thread with group
//! commit (a compaction runs a per-cluster merge after the writes queued with it).
//!
//! The handlers check a request (ids, dimensions, finite values: 400 before anything is
//! queued) and queue it to the writer thread, then await its answer. The thread takes the
//! first request waiting, then every other one already waiting (at most
//! [`super::ServeConfig::max_write_batch`]), applies them all to its [`IndexWriter`] and
//! commits once: one `fsync` of `delta.m3` and one of `wal.m3` for the whole group. Only then
//! does it install the new generation for the searchers ([`LiveIndex::refresh`]) and answer
//! every request of the group: a 200 means the write is durable and visible to every search
//! that starts after it. Searches keep running on the generation they took meanwhile.
//!
//! The writer is opened at the first write (so that a server that is only searched never
//! creates `wal.m3` or takes the directory's writer lock) and reopened after a failed commit
//! (replay then decides what of that batch is in; its requests were answered 500).
//!
//! Merges run beside the writer (decision 0016): the writer thread picks the clusters from the
//! generation it just committed and starts [`m3_update::prepare_merge`] on a merge thread (a
//! pool of [`ServeConfig::merge_threads`] at the writer's nice value), then goes on committing.
//! When the merge is written, the thread carries the commits made meanwhile into it
//! ([`PreparedMerge::catch_up`], a few rounds) and queues it to the writer thread, which
//! publishes it between two commits ([`IndexWriter::publish_merge`]: the commits made since
//! the last catch-up are carried into the merged generation's log) and installs it. A write waits at most for one such
//! publication, never for a whole merge. One merge runs at a time; a shutdown waits for a
//! running merge and drops it unpublished.

use std::sync::Arc;
use std::thread::JoinHandle;

use axum::http::StatusCode;
use tokio::sync::oneshot;

use super::{ApiError, Metrics, ServeConfig};
use crate::data::MatrixView;
use crate::search::Index;
use crate::search::LiveIndex;
use crate::update::{self as m3_update, IndexWriter, MergePolicy, PreparedMerge, UpdateError};

/// What one write request asks for (checked by its handler).
pub(super) enum WriteOp {
    /// Insert or replace `ids` with the rows of `vectors` (row-major, the index's dimension).
    Upsert {
        ids: Vec<u64>,
        vectors: Vec<f32>,
    },
    Delete {
        ids: Vec<u64>,
    },
    /// A merge now: every cluster, or what the default policy chooses.
    Compact {
        all: bool,
    },
    /// A merge thread's result, queued by the thread itself (never by a handler).
    MergeWritten(Box<Result<PreparedMerge, UpdateError>>),
}

/// A write request's answer: the generation that holds it, and how many requests shared its
/// commit.
#[derive(Debug, Clone, Copy)]
pub(super) struct WriteAck {
    pub generation: u64,
    pub group: usize,
    /// For a compaction: what the merge did (`None`: nothing to merge).
    pub merge: Option<MergeAck>,
}

/// What a merge run for `POST /v1/compact` did.
#[derive(Debug, Clone, Copy)]
pub(super) struct MergeAck {
    pub clusters: usize,
    pub records_written: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

pub(super) struct WriteJob {
    pub op: WriteOp,
    pub reply: oneshot::Sender<Result<WriteAck, ApiError>>,
}

/// The writer thread and the sending side of its queue.
pub(super) struct WriterThread {
    queue: async_channel::Sender<WriteJob>,
    thread: Option<JoinHandle<()>>,
}

impl WriterThread {
    pub fn start(
        live: Arc<LiveIndex>,
        config: &ServeConfig,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = async_channel::bounded::<WriteJob>(config.write_queue_capacity.max(1));
        let (max_batch, hook) = (config.max_write_batch, config.write_hook.clone());
        let (nice, merge_min_change) = (config.writer_nice, config.merge_min_change);
        let merge_pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.merge_threads.max(1))
            .thread_name(|i| format!("m3-serve-merge-{i}"))
            // As the writer: a merge that cannot lower its priority runs at the one it has.
            .start_handler(move |_| {
                let _ = crate::io::lower_current_thread_priority(nice);
            })
            .build()
            .map_err(std::io::Error::other)?;
        let merges = Merges {
            pool: Arc::new(merge_pool),
            queue: tx.clone(),
            hook: config.merge_hook.clone(),
            running: None,
            waiting: Vec::new(),
            retry_after: 0,
        };
        let thread = std::thread::Builder::new()
            .name("m3-serve-writer".into())
            .spawn(move || {
                // A thread that cannot lower its priority still takes writes, at the
                // priority it has.
                let _ = crate::io::lower_current_thread_priority(nice);
                let mut state = Writer {
                    live,
                    writer: None,
                    metrics,
                    merge_min_change,
                    merges,
                };
                while let Ok(first) = rx.recv_blocking() {
                    if let Some(h) = &hook {
                        let queued = || rx.len();
                        h.call(&queued);
                    }
                    let mut group = vec![first];
                    while group.len() < max_batch.max(1) {
                        match rx.try_recv() {
                            Ok(j) => group.push(j),
                            Err(_) => break,
                        }
                    }
                    state.commit_group(group);
                }
                state.merges.shut_down();
            })?;
        Ok(Self {
            queue: tx,
            thread: Some(thread),
        })
    }

    pub fn queue(&self) -> async_channel::Sender<WriteJob> {
        self.queue.clone()
    }

    /// Closes the queue; the thread answers what was queued and ends. Waits for it.
    pub fn close_and_join(mut self) {
        self.queue.close();
        if let Some(t) = self.thread.take() {
            // The thread catches nothing: a panic there already failed its requests (their
            // senders dropped: 500).
            let _ = t.join();
        }
    }
}

struct Writer {
    live: Arc<LiveIndex>,
    writer: Option<IndexWriter>,
    metrics: Arc<Metrics>,
    /// See [`ServeConfig::merge_min_change`].
    merge_min_change: f64,
    merges: Merges,
}

/// The merge running beside the writer, and what waits for it.
struct Merges {
    pool: Arc<rayon::ThreadPool>,
    /// The writer's own queue: a merge thread queues its result there.
    queue: async_channel::Sender<WriteJob>,
    hook: Option<super::MergeHook>,
    running: Option<Running>,
    /// Compactions asked while a merge ran: the next merge is theirs.
    waiting: Vec<WriteJob>,
    /// After a failed merge, no merge is started after a commit until the log's inserts plus
    /// tombstones reach this (a merge that failed for want of disk is not retried at once).
    retry_after: u64,
}

/// A merge thread catches up with the writer's commits at most this many times…
const CATCH_UP_ROUNDS: usize = 4;
/// …and stops once a round carried at most this many operations.
const CATCH_UP_ENOUGH: usize = 256;

struct Running {
    thread: JoinHandle<()>,
    /// The compactions answered when this merge is published.
    compacts: Vec<WriteJob>,
}

impl Merges {
    /// Starts merging `chosen` clusters of `snapshot` on the merge pool; `compacts` are
    /// answered when it is published.
    fn start(&mut self, snapshot: Arc<Index>, chosen: Vec<u32>, compacts: Vec<WriteJob>) {
        let (pool, queue, hook) = (self.pool.clone(), self.queue.clone(), self.hook.clone());
        let spawned = std::thread::Builder::new()
            .name("m3-serve-merge".into())
            .spawn(move || {
                let prepared = pool.install(|| {
                    let mut p = m3_update::prepare_merge(&snapshot, &chosen, None)?;
                    // Carry what was committed meanwhile here, so that the publication on
                    // the writer thread has only the last few commits left to carry.
                    for _ in 0..CATCH_UP_ROUNDS {
                        if p.catch_up(&snapshot)? <= CATCH_UP_ENOUGH {
                            break;
                        }
                    }
                    Ok(p)
                });
                drop(snapshot);
                if let Some(h) = &hook {
                    h.call();
                }
                // After a shutdown closed the queue the merge is dropped unpublished (its
                // temporary directory is removed).
                let _ = queue.send_blocking(WriteJob {
                    op: WriteOp::MergeWritten(Box::new(prepared)),
                    reply: oneshot::channel().0,
                });
            });
        match spawned {
            Ok(thread) => self.running = Some(Running { thread, compacts }),
            Err(e) => answer_all(
                compacts,
                Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("could not start the merge: {e}"),
                )),
            ),
        }
    }

    /// At the writer thread's end: waits for a running merge (which then finds the queue
    /// closed and drops itself) and answers the compactions still waiting.
    fn shut_down(&mut self) {
        let mut unanswered = std::mem::take(&mut self.waiting);
        if let Some(r) = self.running.take() {
            let _ = r.thread.join();
            unanswered.extend(r.compacts);
        }
        answer_all(
            unanswered,
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server shut down before the merge was published",
            )),
        );
    }
}

fn answer_all(jobs: Vec<WriteJob>, result: Result<WriteAck, ApiError>) {
    for j in jobs {
        let _ = j.reply.send(result.clone());
    }
}

impl Writer {
    /// The writer, opened if it is not yet (taken out: put back after a good commit).
    fn take(&mut self) -> Result<IndexWriter, ApiError> {
        match self.writer.take() {
            Some(w) => Ok(w),
            None => IndexWriter::open(self.live.current().dir()).map_err(update_error),
        }
    }

    /// Commits the writes of `group`, then publishes a merge that is written (carrying those
    /// writes), then starts its compactions.
    fn commit_group(&mut self, group: Vec<WriteJob>) {
        let mut writes = Vec::with_capacity(group.len());
        let (mut compacts, mut written) = (Vec::new(), Vec::new());
        for j in group {
            match j.op {
                WriteOp::Compact { .. } => compacts.push(j),
                WriteOp::MergeWritten(_) => written.push(j),
                _ => writes.push(j),
            }
        }
        if !writes.is_empty() {
            self.commit_writes(writes);
        }
        for j in written {
            if let WriteOp::MergeWritten(prepared) = j.op {
                self.publish(*prepared);
            }
        }
        if !compacts.is_empty() {
            self.compact(compacts);
        }
    }

    /// `POST /v1/compact` requests (after the writes queued with them are committed): one
    /// merge for all of them, of every cluster if any asks for it, beside the writer; each is
    /// answered once the merged generation is installed. While a merge runs they wait for
    /// the next one (the running one was chosen before they were asked).
    fn compact(&mut self, jobs: Vec<WriteJob>) {
        if self.merges.running.is_some() {
            self.merges.waiting.extend(jobs);
            return;
        }
        let all = jobs
            .iter()
            .any(|j| matches!(j.op, WriteOp::Compact { all: true }));
        let current = self.live.current();
        let chosen: Vec<u32> = if all {
            let churn = current.cluster_churn();
            (0..churn.len() as u32)
                .filter(|&c| churn[c as usize].records + churn[c as usize].inserts > 0)
                .collect()
        } else {
            m3_update::choose_clusters(&current, &MergePolicy::default())
        };
        if chosen.is_empty() {
            let ack = WriteAck {
                generation: current.live_info().generation,
                group: jobs.len(),
                merge: None,
            };
            answer_all(jobs, Ok(ack));
            return;
        }
        self.merges.start(current, chosen, jobs);
    }

    /// Publishes a merge the merge thread wrote (with the commits made since it started),
    /// installs it for the searchers and answers its compactions; then starts the merge the
    /// compactions asked meanwhile wait for.
    fn publish(&mut self, prepared: Result<PreparedMerge, UpdateError>) {
        let Some(running) = self.merges.running.take() else {
            return; // not ours (cannot happen: only `Merges::start` queues one)
        };
        // The thread queued its result last: it is ending.
        let _ = running.thread.join();
        let result = prepared
            .and_then(|p| {
                let writer = self
                    .writer
                    .take()
                    .map_or_else(|| IndexWriter::open(self.live.current().dir()), Ok)?;
                writer.publish_merge(p)
            })
            .map_err(update_error)
            .and_then(|(report, writer)| {
                self.writer = Some(writer);
                self.metrics.merged(report.carried);
                self.merges.retry_after = 0;
                let generation = self.live.refresh().map_err(|e| {
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("the merge is published but the searchers could not load it: {e}"),
                    )
                })?;
                Ok((generation, report))
            });
        if result.is_err() {
            self.metrics.merge_failed();
            let info = self.live.current().live_info();
            let floor = self.merge_floor(&self.live.current());
            self.merges.retry_after = info.inserted + info.tombstones + floor as u64;
        }
        let group = running.compacts.len();
        let ack = result.map(|(generation, r)| WriteAck {
            generation,
            group,
            merge: Some(MergeAck {
                clusters: r.clusters,
                records_written: r.records_written,
                bytes_before: r.bytes_before,
                bytes_after: r.bytes_after,
            }),
        });
        answer_all(running.compacts, ack);
        let waiting = std::mem::take(&mut self.merges.waiting);
        if !waiting.is_empty() {
            self.compact(waiting);
        }
    }

    /// Applies every write of `group` (a request refused by the writer is answered at once
    /// and left out), commits once, installs the new generation and answers the rest.
    fn commit_writes(&mut self, group: Vec<WriteJob>) {
        let mut writer = match self.take() {
            Ok(w) => w,
            Err(e) => {
                answer_all(group, Err(e));
                return;
            }
        };
        let dim = self.live.current().dim();
        let mut applied = Vec::with_capacity(group.len());
        for j in group {
            let r = match &j.op {
                WriteOp::Upsert { ids, vectors } => MatrixView::new(vectors, dim)
                    .map_err(|e| UpdateError::Input {
                        what: e.to_string(),
                    })
                    .and_then(|v| writer.insert(ids, v)),
                WriteOp::Delete { ids } => {
                    writer.delete(ids);
                    Ok(())
                }
                WriteOp::Compact { .. } | WriteOp::MergeWritten(_) => Ok(()),
            };
            match r {
                Ok(()) => applied.push(j),
                Err(e) => {
                    let _ = j.reply.send(Err(update_error(e)));
                }
            }
        }
        if applied.is_empty() {
            self.writer = Some(writer);
            return;
        }
        let committed = writer.commit();
        self.metrics.writes_committed(applied.len());
        let result = match committed {
            Ok(_) => {
                self.writer = Some(writer);
                self.live.refresh().map_err(|e| {
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!(
                            "the write is durable but the searchers could not load it: {e}; \
                             it is visible after a restart"
                        ),
                    )
                })
            }
            // Replay decides what of the batch is in: the writer (dropped here) is opened
            // again at the next write. (A republished index is refused before any write;
            // reopening then writes to the new index, which the searchers pick up.)
            Err(e) => Err(update_error(e)),
        };
        let group = applied.len();
        let merge = result.is_ok();
        for j in applied {
            let r = result.clone().map(|generation| WriteAck {
                generation,
                group,
                merge: None,
            });
            let _ = j.reply.send(r);
        }
        if merge {
            self.merge_if_due();
        }
    }

    /// Changes (live inserts plus dead records) the chosen clusters must hold for a merge
    /// after a commit: [`ServeConfig::merge_min_change`] of the index's records, at least 1.
    fn merge_floor(&self, index: &Index) -> f64 {
        (self.merge_min_change * index.meta().n_records as f64).max(1.0)
    }

    /// After a commit, when no merge runs and the default [`MergePolicy`] chooses clusters
    /// whose changes reach [`ServeConfig::merge_min_change`] of the index: starts a
    /// per-cluster merge (decision 0012) of them beside the writer.
    fn merge_if_due(&mut self) {
        if self.merges.running.is_some() {
            return;
        }
        let policy = MergePolicy::default();
        let current = self.live.current();
        let info = current.live_info();
        let floor = self.merge_floor(&current);
        // The log's inserts and tombstones bound the chosen clusters' changes: below the
        // floor no choice can reach it, and the per-cluster count (O(records)) is skipped.
        let logged = info.inserted + info.tombstones;
        if (logged as f64) < floor || logged < self.merges.retry_after {
            return;
        }
        let chosen = m3_update::choose_clusters(&current, &policy);
        let churn = current.cluster_churn();
        let change: u64 = chosen
            .iter()
            .map(|&c| u64::from(churn[c as usize].inserts + churn[c as usize].dead))
            .sum();
        if chosen.is_empty() || (change as f64) < floor {
            return;
        }
        self.merges.start(current, chosen, Vec::new());
    }
}

/// The status of a writer's error: the client's input (400), an index that takes no updates,
/// is held by another writer or was replaced on disk (409), anything else (500).
fn update_error(e: UpdateError) -> ApiError {
    match e {
        UpdateError::Input { what } => ApiError::new(StatusCode::BAD_REQUEST, what),
        UpdateError::Locked { .. }
        | UpdateError::Busy { .. }
        | UpdateError::Unsupported { .. }
        | UpdateError::Republished { .. } => ApiError::new(StatusCode::CONFLICT, e.to_string()),
        _ => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the write failed: {e}"),
        ),
    }
}

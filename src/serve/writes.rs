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

use std::sync::Arc;
use std::thread::JoinHandle;

use axum::http::StatusCode;
use tokio::sync::oneshot;

use super::{ApiError, Metrics, ServeConfig};
use crate::data::MatrixView;
use crate::search::LiveIndex;
use crate::update::{self as m3_update, IndexWriter, MergePolicy, UpdateError};

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
}

impl Writer {
    /// The writer, opened if it is not yet (taken out: put back after a good commit).
    fn take(&mut self) -> Result<IndexWriter, ApiError> {
        match self.writer.take() {
            Some(w) => Ok(w),
            None => IndexWriter::open(self.live.current().dir()).map_err(update_error),
        }
    }

    /// Commits the writes of `group`, then runs its compactions.
    fn commit_group(&mut self, group: Vec<WriteJob>) {
        let (compacts, group): (Vec<WriteJob>, Vec<WriteJob>) = group
            .into_iter()
            .partition(|j| matches!(j.op, WriteOp::Compact { .. }));
        if !group.is_empty() {
            self.commit_writes(group);
        }
        if !compacts.is_empty() {
            self.compact(compacts);
        }
    }

    /// `POST /v1/compact` requests (after the writes queued with them are committed): one
    /// merge for all of them, of every cluster if any asks for it, with the writer closed;
    /// each is answered once the merged generation is installed.
    fn compact(&mut self, jobs: Vec<WriteJob>) {
        let all = jobs
            .iter()
            .any(|j| matches!(j.op, WriteOp::Compact { all: true }));
        let dir = self.live.current().dir().to_path_buf();
        self.writer = None;
        let merged = if all {
            m3_update::merge_all(&dir, None)
        } else {
            m3_update::merge(&dir, &MergePolicy::default())
        };
        let result = merged.map_err(update_error).and_then(|report| {
            if report.is_some() {
                self.metrics.merged();
            }
            let generation = self.live.refresh().map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the merge is published but the searchers could not load it: {e}"),
                )
            })?;
            Ok(WriteAck {
                generation,
                group: jobs.len(),
                merge: report.map(|r| MergeAck {
                    clusters: r.clusters,
                    records_written: r.records_written,
                    bytes_before: r.bytes_before,
                    bytes_after: r.bytes_after,
                }),
            })
        });
        for j in jobs {
            let _ = j.reply.send(result.clone());
        }
    }

    /// Applies every write of `group` (a request refused by the writer is answered at once
    /// and left out), commits once, installs the new generation and answers the rest.
    fn commit_writes(&mut self, group: Vec<WriteJob>) {
        let mut writer = match self.take() {
            Ok(w) => w,
            Err(e) => {
                for j in group {
                    let _ = j.reply.send(Err(e.clone()));
                }
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
                WriteOp::Compact { .. } => Ok(()),
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

    /// After a commit, when the default [`MergePolicy`] chooses clusters whose changes reach
    /// [`ServeConfig::merge_min_change`] of the index: a per-cluster merge (decision 0012)
    /// with the writer closed (it is reopened at the next write), then the searchers get the
    /// merged generation. Searches keep running on the generation they hold; writes wait in
    /// the queue. A failed merge changes nothing on disk that a reader sees.
    fn merge_if_due(&mut self) {
        let policy = MergePolicy::default();
        let current = self.live.current();
        let info = current.live_info();
        let records = current.meta().n_records as f64;
        let floor = (self.merge_min_change * records).max(1.0);
        // The log's inserts and tombstones bound the chosen clusters' changes: below the
        // floor no choice can reach it, and the per-cluster count (O(records)) is skipped.
        if ((info.inserted + info.tombstones) as f64) < floor {
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
        let dir = current.dir().to_path_buf();
        drop(current);
        self.writer = None;
        if m3_update::merge(&dir, &policy).is_ok() {
            self.metrics.merged();
            let _ = self.live.refresh();
        }
    }
}

/// The status of a writer's error: the client's input (400), an index that takes no updates,
/// is held by another writer or was replaced on disk (409), anything else (500).
fn update_error(e: UpdateError) -> ApiError {
    match e {
        UpdateError::Input { what } => ApiError::new(StatusCode::BAD_REQUEST, what),
        UpdateError::Locked { .. }
        | UpdateError::Unsupported { .. }
        | UpdateError::Republished { .. } => ApiError::new(StatusCode::CONFLICT, e.to_string()),
        _ => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the write failed: {e}"),
        ),
    }
}

//! Per-cluster merge (decision 0012, `docs/UPDATES.md`): rewrites only the clusters whose
//! updates passed a threshold into a new data segment, keeps every other segment (hard
//! links), and publishes the next generation crash-safely with the build's publication
//! (`format::IndexDirWriter`): temporary sibling directory, files fsynced, manifest last,
//! the inserts of clusters not merged inserted again into the new directory's log (durable
//! before the rename), rename. A kill before the rename leaves the old index with its log;
//! searchers holding the old generation keep their descriptors, so a segment no generation
//! lists is freed when the last of them ends.
//!
//! Disk stays bounded by the policy: a cluster is merged when its live inserts plus dead
//! records reach [`MergePolicy::change_fraction`] of its records; a segment whose live
//! records (after this merge) fall below [`MergePolicy::segment_live_fraction`] of what it
//! holds has all its clusters merged out, so it is no longer listed.

use std::fs::File;
use std::path::Path;
use std::time::Instant;

use super::{IndexWriter, UpdateError, dir_bytes, lock_dir};
use crate::data::MatrixView;
use crate::format::files::WAL_FILE;
use crate::format::{FormatError, IndexDirWriter, WalOp, read_wal_from};
use crate::io::{IoBackend, ReaderOptions};
use crate::search::Index;
use crate::search::merge::MergeOutput;

/// When a cluster or a segment is merged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MergePolicy {
    /// A cluster is merged when its live inserts or its dead records (the larger of the two)
    /// reach this fraction of the records it holds (and at least one): an upsert whose new
    /// vector stays in the cluster of its old one counts once.
    pub change_fraction: f64,
    /// A segment whose live records fall below this fraction of what it holds has all its
    /// clusters merged out; a merge that would leave more than `1 − segment_live_fraction`
    /// of the record numbers as holes takes every cluster (numbering starts again at 0).
    pub segment_live_fraction: f64,
    /// A merged cluster with more live records than this is split in two (LIRE; 2-means of
    /// its members, decision 0012); `None`: never split.
    pub max_cluster_records: Option<u32>,
}

impl Default for MergePolicy {
    fn default() -> Self {
        Self {
            change_fraction: 0.2,
            segment_live_fraction: 0.8,
            max_cluster_records: None,
        }
    }
}

/// What a merge did.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeReport {
    /// Clusters rewritten (the chosen ones and, for a split, its nearest clusters).
    pub clusters: usize,
    /// Vectors LIRE's reassignment moved to a nearer cluster after a split.
    pub reassigned: usize,
    /// The clusters LIRE's reassignment involved (split halves and their nearest clusters).
    pub lire_clusters: Vec<u32>,
    /// Records written into the new segment.
    pub records_written: u64,
    /// Bytes written: the new segment and the RAM-sized files.
    pub bytes_written: u64,
    /// Segments no longer listed (freed once no searcher holds them).
    pub segments_dropped: usize,
    /// Live inserts of clusters not merged, inserted again into the new log.
    pub reinserted: usize,
    /// Operations committed while the merge ran beside a writer, carried into the new log
    /// ([`IndexWriter::publish_merge`]).
    pub carried: usize,
    /// Bytes of the index directory before.
    pub bytes_before: u64,
    /// Bytes of the index directory after.
    pub bytes_after: u64,
    /// Wall time.
    pub seconds: f64,
}

/// The clusters `policy` merges in `index` (sorted).
pub fn choose_clusters(index: &Index, policy: &MergePolicy) -> Vec<u32> {
    let churn = index.cluster_churn();
    let mut chosen: Vec<bool> = churn
        .iter()
        .map(|c| {
            let changes = f64::from(c.inserts.max(c.dead));
            changes >= 1.0 && changes >= policy.change_fraction * f64::from(c.records.max(1))
        })
        .collect();
    let held = index.segment_liveness(&churn);
    let mut live_after = vec![0u64; held.len()];
    for (_, ch) in churn.iter().enumerate().filter(|(c, _)| !chosen[*c]) {
        live_after[ch.segment as usize] += u64::from(ch.records - ch.dead);
    }
    for (k, &(records, _)) in held.iter().enumerate() {
        if (live_after[k] as f64) < policy.segment_live_fraction * records as f64 {
            for (c, ch) in churn.iter().enumerate() {
                if ch.segment as usize == k && ch.records > 0 {
                    chosen[c] = true;
                }
            }
        }
    }
    let mut out: Vec<u32> = (0..churn.len() as u32)
        .filter(|&c| chosen[c as usize])
        .collect();
    if !out.is_empty() {
        // Holes bounded: past the limit, every cluster holding anything is merged.
        let (numbers, records) = index.records_after_merge(&out);
        if (numbers - records) as f64 > (1.0 - policy.segment_live_fraction) * numbers as f64 {
            out = (0..churn.len() as u32)
                .filter(|&c| churn[c as usize].records + churn[c as usize].inserts > 0)
                .collect();
        }
    }
    out
}

/// Merges the clusters `policy` chooses in the index at `dir` (module doc); `None` when it
/// chooses none. Takes the writer lock ([`UpdateError::Locked`] while a writer is open).
pub fn merge(dir: &Path, policy: &MergePolicy) -> Result<Option<MergeReport>, UpdateError> {
    let dir = crate::format::index_dir::normalize_target(dir)?;
    let _lock = lock_dir(&dir)?;
    let index = open_updatable(&dir)?;
    let chosen = choose_clusters(&index, policy);
    if chosen.is_empty() {
        return Ok(None);
    }
    merge_locked(&dir, &index, &chosen, policy.max_cluster_records).map(Some)
}

/// Merges exactly `clusters` of the index at `dir` (each below its cluster count; repeats
/// ignored). Takes the writer lock.
pub fn merge_clusters(dir: &Path, clusters: &[u32]) -> Result<MergeReport, UpdateError> {
    let dir = crate::format::index_dir::normalize_target(dir)?;
    let _lock = lock_dir(&dir)?;
    let index = open_updatable(&dir)?;
    merge_locked(&dir, &index, clusters, None)
}

/// Merges every cluster that holds records or live inserts of the index at `dir` (the
/// records are numbered from 0 again, dead vids are dropped; LIRE's split past
/// `max_cluster_records`); `None` when the index holds nothing. Takes the writer lock.
pub fn merge_all(
    dir: &Path,
    max_cluster_records: Option<u32>,
) -> Result<Option<MergeReport>, UpdateError> {
    let dir = crate::format::index_dir::normalize_target(dir)?;
    let _lock = lock_dir(&dir)?;
    let index = open_updatable(&dir)?;
    let chosen: Vec<u32> = index
        .cluster_churn()
        .iter()
        .enumerate()
        .filter(|(_, c)| c.records + c.inserts > 0)
        .map(|(c, _)| c as u32)
        .collect();
    if chosen.is_empty() {
        return Ok(None);
    }
    merge_locked(&dir, &index, &chosen, max_cluster_records).map(Some)
}

fn open_updatable(dir: &Path) -> Result<Index, UpdateError> {
    let index = Index::open(dir, IoBackend::Pread, &ReaderOptions::default())?;
    index
        .check_updatable()
        .map_err(|what| UpdateError::Unsupported {
            dir: dir.to_path_buf(),
            what,
        })?;
    Ok(index)
}

fn merge_locked(
    dir: &Path,
    index: &Index,
    chosen: &[u32],
    max_records: Option<u32>,
) -> Result<MergeReport, UpdateError> {
    debug_assert_eq!(
        crate::format::index_dir::normalize_target(index.dir())?,
        dir
    );
    // The lock is held: nothing is committed between the generation merged and the
    // publication, so nothing is carried.
    let prepared = prepare_merge(index, chosen, max_records)?;
    let (report, _published_lock) = publish_prepared(prepared, Vec::new())?;
    Ok(report)
}

/// A merge written beside its index and not published yet ([`prepare_merge`]): the next
/// generation's files in a temporary sibling directory, made from one generation of the
/// index. [`IndexWriter::publish_merge`] publishes it with the commits made since; dropped
/// unpublished, its directory is removed.
pub struct PreparedMerge {
    /// The staged directory's writer: its log holds the live inserts of the clusters not
    /// merged (committed by `prepare_merge`); the commits carried over go on top.
    staged: IndexWriter,
    staging: IndexDirWriter,
    /// Held until the merge is published or dropped (after `staging`: dropped later).
    _claim: super::StagingClaim,
    out: MergeOutput,
    /// Live inserts of the clusters not merged, committed into the staged log.
    reinserted: usize,
    /// Operations carried by [`PreparedMerge::catch_up`] so far.
    carried: usize,
    /// The log position of the generation merged (`None`: it had no commit).
    from: Option<(u64, u64)>,
    /// The publication merged (the CRC32C of its manifest).
    source_manifest: u32,
    dim: usize,
    bytes_before: u64,
    started: Instant,
}

impl std::fmt::Debug for PreparedMerge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedMerge")
            .field("staging", &self.staging.dir())
            .field("clusters", &self.out.clusters)
            .field("from_generation", &self.from.map_or(0, |(_, g)| g))
            .finish()
    }
}

impl PreparedMerge {
    /// The generation of the index the merge holds: the one it was made from, or the last one
    /// [`PreparedMerge::catch_up`] carried.
    pub fn generation(&self) -> u64 {
        self.from.map_or(0, |(_, g)| g)
    }
}

/// An operation committed after the generation a merge was made from, carried into the
/// merged generation's log.
enum Carried {
    Insert { user_id: u64, vector: Vec<f32> },
    Delete { user_id: u64 },
}

/// Writes the merge of `clusters` (repeats ignored, each below the cluster count) of `index`,
/// one generation held for the whole merge, into a temporary sibling of its directory
/// (`<dir>.tmp-<pid>`: one merge or compaction per index and process at a time, else
/// [`UpdateError::Busy`]), with that directory's log holding the live inserts of the clusters
/// not merged. It takes no lock on the index and changes nothing a searcher or the writer
/// sees, so the index keeps taking commits while it runs: [`PreparedMerge::catch_up`] and
/// [`IndexWriter::publish_merge`] carry them over. Runs on the current rayon pool.
pub fn prepare_merge(
    index: &Index,
    clusters: &[u32],
    max_records: Option<u32>,
) -> Result<PreparedMerge, UpdateError> {
    let started = Instant::now();
    let mut chosen = clusters.to_vec();
    chosen.sort_unstable();
    chosen.dedup();
    if let Some(&c) = chosen.iter().find(|&&c| c as usize >= index.n_clusters()) {
        return Err(UpdateError::Input {
            what: format!("cluster {c}: the index has {} clusters", index.n_clusters()),
        });
    }
    index
        .check_updatable()
        .map_err(|what| UpdateError::Unsupported {
            dir: index.dir().to_path_buf(),
            what,
        })?;
    let claim = super::StagingClaim::take(index.dir())?;
    let bytes_before = dir_bytes(index.dir())?;
    let staging = IndexDirWriter::create(index.dir())?;
    let mut out = index.write_merged(&chosen, max_records, staging.dir())?;
    // The staged log: the inserts of the clusters not merged, committed now (on this thread,
    // not the writer's at publication).
    staging.write_manifest(&out.manifest)?;
    let mut staged = IndexWriter::open_locked(staging.dir(), lock_dir(staging.dir())?)?;
    let unmerged = std::mem::take(&mut out.unmerged);
    if !unmerged.is_empty() {
        let ids: Vec<u64> = unmerged.iter().map(|(id, _)| *id).collect();
        let flat: Vec<f32> = unmerged
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        staged.insert(&ids, MatrixView::new(&flat, index.dim())?)?;
        staged.commit()?;
    }
    Ok(PreparedMerge {
        staged,
        staging,
        _claim: claim,
        out,
        reinserted: unmerged.len(),
        carried: 0,
        from: index.wal_position(),
        source_manifest: index.manifest_crc32c(),
        dim: index.dim(),
        bytes_before,
        started,
    })
}

/// Commits `carried` into the staged directory's log on top of what [`prepare_merge`]
/// committed there (durable before the rename) and publishes it. Returns the report and the
/// writer lock of the published directory, taken on the staging directory before its rename:
/// no other writer can get in between.
fn publish_prepared(
    p: PreparedMerge,
    carried: Vec<Carried>,
) -> Result<(MergeReport, File), UpdateError> {
    let PreparedMerge {
        mut staged,
        staging,
        _claim,
        out,
        reinserted,
        carried: carried_before,
        dim,
        bytes_before,
        started,
        ..
    } = p;
    let carried_ops = carried_before + carried.len();
    apply(&mut staged, carried, dim)?;
    staged.commit()?;
    let lock = staged.into_lock();
    let target = staging.target().to_path_buf();
    staging.publish(&out.manifest)?;
    let report = MergeReport {
        clusters: out.clusters,
        reassigned: out.reassigned,
        lire_clusters: out.lire_clusters,
        records_written: out.records_written,
        bytes_written: out.bytes_written,
        segments_dropped: out.segments_dropped,
        reinserted,
        carried: carried_ops,
        bytes_before,
        bytes_after: dir_bytes(&target)?,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((report, lock))
}

impl IndexWriter {
    /// Publishes `merge`, prepared from a generation of this writer's index
    /// ([`prepare_merge`], typically on another thread while this writer kept committing):
    /// the operations committed since that generation are read back from this log (each
    /// inserted record checked against its CRC32C) and committed into the merged generation's
    /// log after the inserts it carries, then the merged directory is published (crash-safe:
    /// a kill before the rename leaves this index with its whole log). Returns what the merge
    /// did and the writer of the published index; this writer is consumed (its lock passes to
    /// the new one without a gap). Nothing may be queued: commit first.
    pub fn publish_merge(
        self,
        merge: PreparedMerge,
    ) -> Result<(MergeReport, IndexWriter), UpdateError> {
        if self.poisoned {
            return Err(UpdateError::Poisoned);
        }
        if !self.pending.is_empty() {
            return Err(UpdateError::Input {
                what: format!(
                    "{} queued operations: commit them before publishing a merge",
                    self.pending.len()
                ),
            });
        }
        let dir = crate::format::index_dir::normalize_target(self.index.dir())?;
        if merge.staging.target() != dir
            || merge.source_manifest != self.index.manifest_crc32c()
            || merge.generation() > self.wal.generation()
        {
            return Err(UpdateError::Input {
                what: format!(
                    "{}: the merge was prepared from another index or publication",
                    merge.staging.target().display()
                ),
            });
        }
        self.check_still_published()?;
        let carried = self.committed_since(merge.from)?;
        let (report, lock) = publish_prepared(merge, carried)?;
        drop(self);
        let writer = IndexWriter::open_locked(&dir, lock)?;
        Ok((report, writer))
    }

    /// The operations this log committed after position `from` (`None`: all): all of them,
    /// up to the writer's last commit.
    fn committed_since(&self, from: Option<(u64, u64)>) -> Result<Vec<Carried>, UpdateError> {
        let wal_path = self.index.dir().join(WAL_FILE);
        let Some(read) = read_committed(&self.index, from)? else {
            return Ok(Vec::new());
        };
        if read.to.1 != self.wal.generation() {
            return Err(FormatError::corrupt(
                &wal_path,
                read.to.0,
                format!(
                    "the log ends at generation {}, its writer committed {}",
                    read.to.1,
                    self.wal.generation()
                ),
            )
            .into());
        }
        Ok(read.ops)
    }
}

/// Operations a log committed after a position, read back.
struct Committed {
    ops: Vec<Carried>,
    /// Where the last of them ends: (byte offset, generation).
    to: (u64, u64),
    /// The CRC32C of the manifest the log belongs to.
    manifest_crc32c: u32,
}

/// The operations the log of `index`'s directory committed after position `from` (`None`:
/// all; `None` returned when there is no log), inserts with their stored vectors read back from
/// `delta.m3` and checked against their log records' CRC32C. The committed part of a log never
/// changes under one manifest, so this may run while the writer appends (what follows its
/// last complete commit is not read).
fn read_committed(
    index: &Index,
    from: Option<(u64, u64)>,
) -> Result<Option<Committed>, UpdateError> {
    let wal_path = index.dir().join(WAL_FILE);
    let Some(replay) = read_wal_from(&wal_path, from)? else {
        return Ok(None);
    };
    let mut ops = Vec::new();
    for op in replay.batches.iter().flatten() {
        ops.push(match *op {
            WalOp::Insert {
                user_id,
                slot,
                record_crc32c,
            } => Carried::Insert {
                user_id,
                vector: index.read_delta_vector(slot, record_crc32c)?,
            },
            WalOp::Delete { user_id } => Carried::Delete { user_id },
            WalOp::Commit { .. } => continue,
        });
    }
    Ok(Some(Committed {
        ops,
        to: (replay.valid_bytes, replay.generation()),
        manifest_crc32c: replay.header.manifest_crc32c,
    }))
}

impl PreparedMerge {
    /// Carries the operations committed since the merged generation (or the last catch-up)
    /// into the staged log now, beside the writer, so that its publication has only what is
    /// committed after this to carry: a merge thread calls it until little is left. `index`
    /// is any open generation of the same publication (the one merged will do); nothing the
    /// index's readers or writer see changes. Returns how many operations it carried.
    pub fn catch_up(&mut self, index: &Index) -> Result<usize, UpdateError> {
        let dir = crate::format::index_dir::normalize_target(index.dir())?;
        let other = || UpdateError::Input {
            what: format!(
                "{}: the merge was prepared from another index or publication",
                dir.display()
            ),
        };
        if self.staging.target() != dir || index.manifest_crc32c() != self.source_manifest {
            return Err(other());
        }
        let Some(read) = read_committed(index, self.from)? else {
            return Ok(0);
        };
        if read.manifest_crc32c != self.source_manifest {
            return Err(other());
        }
        if read.ops.is_empty() {
            return Ok(0);
        }
        let n = read.ops.len();
        apply(&mut self.staged, read.ops, self.dim)?;
        self.staged.commit()?;
        self.from = Some(read.to);
        self.carried += n;
        Ok(n)
    }
}

/// Queues `ops` on `writer` in order.
fn apply(writer: &mut IndexWriter, ops: Vec<Carried>, dim: usize) -> Result<(), UpdateError> {
    for op in ops {
        match op {
            Carried::Insert { user_id, vector } => {
                writer.insert(&[user_id], MatrixView::new(&vector, dim)?)?
            }
            Carried::Delete { user_id } => writer.delete(&[user_id]),
        }
    }
    Ok(())
}

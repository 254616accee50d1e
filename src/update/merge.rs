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

use std::path::Path;
use std::time::Instant;

use super::{IndexWriter, UpdateError, dir_bytes, lock_dir};
use crate::data::MatrixView;
use crate::format::IndexDirWriter;
use crate::io::{IoBackend, ReaderOptions};
use crate::search::Index;

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
    let mut chosen = clusters.to_vec();
    chosen.sort_unstable();
    chosen.dedup();
    if let Some(&c) = chosen.iter().find(|&&c| c as usize >= index.n_clusters()) {
        return Err(UpdateError::Input {
            what: format!("cluster {c}: the index has {} clusters", index.n_clusters()),
        });
    }
    merge_locked(&dir, &index, &chosen, None)
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
    let t0 = Instant::now();
    let bytes_before = dir_bytes(dir)?;
    let w = IndexDirWriter::create(dir)?;
    let out = index.write_merged(chosen, max_records, w.dir())?;
    w.write_manifest(&out.manifest)?;
    if !out.unmerged.is_empty() {
        // Durable in the new directory before it is published (its log names its manifest).
        let mut writer = IndexWriter::open(w.dir())?;
        let ids: Vec<u64> = out.unmerged.iter().map(|(id, _)| *id).collect();
        let flat: Vec<f32> = out
            .unmerged
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        writer.insert(&ids, MatrixView::new(&flat, index.dim())?)?;
        writer.commit()?;
    }
    w.publish(&out.manifest)?;
    Ok(MergeReport {
        clusters: out.clusters,
        reassigned: out.reassigned,
        lire_clusters: out.lire_clusters,
        records_written: out.records_written,
        bytes_written: out.bytes_written,
        segments_dropped: out.segments_dropped,
        reinserted: out.unmerged.len(),
        bytes_before,
        bytes_after: dir_bytes(dir)?,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

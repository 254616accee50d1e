//! Live updates of a published index (`docs/UPDATES.md`): an [`IndexWriter`] takes inserts,
//! upserts and deletes by user id and makes them durable with [`IndexWriter::commit`]. A
//! commit writes the inserted vectors' records into `delta.m3` (whole new sectors, never one
//! that holds committed records) and fsyncs it, then appends the batch and its commit record to
//! `wal.m3` and fsyncs that: when `commit` returns, the batch survives a crash, and an
//! [`Index`] opened from then on answers with it (approximate and exact search alike). One
//! writer per index directory at a time (an exclusive lock on the directory); any number of
//! readers, each seeing the commits made before it was opened.

mod compact;
mod merge;

use std::fs::File;
use std::path::{Path, PathBuf};

pub use compact::{CompactReport, compact, dir_bytes};
pub use merge::{
    MergePolicy, MergeReport, PreparedMerge, choose_clusters, merge, merge_all, merge_clusters,
    prepare_merge,
};

use crate::data::MatrixView;
use crate::format::delta::{DeltaFile, DeltaHeader, batch_start, slot_location};
use crate::format::delta_codes::{DeltaCodesHeader, DeltaCodesWriter};
use crate::format::files::{DELTA_CODES_FILE, DELTA_FILE, MANIFEST_FILE, WAL_FILE};
use crate::format::{FormatError, SECTOR_BYTES, WalHeader, WalOp, WalTail, WalWriter, read_wal};
use crate::search::live::LiveIds;
use crate::search::{Index, SearchError};

/// What can go wrong updating an index.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// Opening or reading the index.
    #[error(transparent)]
    Search(#[from] SearchError),
    /// Writing or reading the log or the delta file.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// Another writer holds the index.
    #[error("{dir}: another writer is updating this index")]
    Locked {
        /// The index directory.
        dir: PathBuf,
    },
    /// The index cannot take updates (multi-vector).
    #[error("{dir}: {what}")]
    Unsupported {
        /// The index directory.
        dir: PathBuf,
        /// Why.
        what: String,
    },
    /// An input is wrong: ids and vectors of different counts, a vector of another dimension,
    /// a non-finite component, on a u8 or i8 index a component that is not an integer of the
    /// type's range.
    #[error("{what}")]
    Input {
        /// What is wrong, naming the row.
        what: String,
    },
    /// Building the compacted index failed.
    #[error(transparent)]
    Build(#[from] crate::build::BuildError),
    /// Exporting the live set failed.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// Another index was published at the writer's path since it was opened (a rebuild or a
    /// compaction in place): its commits would go to the replaced files. Nothing was written.
    #[error("{dir}: another index was published here since the writer was opened; open it again")]
    Republished {
        /// The index directory.
        dir: PathBuf,
    },
    /// A merge or a compaction of this index is already running in this process (they would
    /// share its staging directory).
    #[error("{dir}: a merge or compaction of this index is already running in this process")]
    Busy {
        /// The index directory.
        dir: PathBuf,
    },
    /// A commit failed part way: what reached the disk is decided by replay when the index
    /// is opened again; this writer takes no more commits.
    #[error("an earlier commit failed; open the writer again")]
    Poisoned,
}

enum Pending {
    Insert { user_id: u64, vector: Vec<f32> },
    Delete { user_id: u64 },
}

/// The one writer of an index directory (module doc).
pub struct IndexWriter {
    index: Index,
    wal: WalWriter,
    delta: DeltaFile,
    ids: LiveIds,
    /// `delta_codes.m3`, holding one entry per committed insert; `None` after a failed
    /// append (the file is derived: opens code the missing inserts again).
    codes: Option<DeltaCodesWriter>,
    /// Committed inserts (= entries of `delta_codes.m3` while `codes` is there).
    inserted: u64,
    /// The first slot after every committed record.
    next_slot: u64,
    pending: Vec<Pending>,
    recovered: Option<WalTail>,
    poisoned: bool,
    /// Held for the writer's life: the directory's exclusive lock.
    _lock: File,
}

impl std::fmt::Debug for IndexWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexWriter")
            .field("dir", &self.index.dir())
            .field("generation", &self.wal.generation())
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl IndexWriter {
    /// Whether the directory at the writer's path is still the one it locked (a publication
    /// renames directories: the path then names another one). A publication between this check
    /// and the writes is not caught: publish over an index only while no writer is open.
    fn check_still_published(&self) -> Result<(), UpdateError> {
        use std::os::unix::fs::MetadataExt;
        let dir = self.index.dir();
        let at_path = std::fs::metadata(dir).map_err(|e| FormatError::io(dir, e))?;
        let locked = self._lock.metadata().map_err(|e| FormatError::io(dir, e))?;
        if (at_path.dev(), at_path.ino()) != (locked.dev(), locked.ino()) {
            return Err(UpdateError::Republished {
                dir: dir.to_path_buf(),
            });
        }
        Ok(())
    }
}

/// Opens `delta_codes.m3` for appending with one entry per committed insert of `index`
/// (whose record CRC32Cs, in log order, are `record_crcs`): the entries the index took from
/// the file are kept, the rest written from the index's live state.
fn open_codes(
    dir: &Path,
    index: &Index,
    manifest_crc32c: u32,
    record_crcs: &[u32],
) -> Result<DeltaCodesWriter, UpdateError> {
    let header = DeltaCodesHeader::new(manifest_crc32c, index.code_bytes());
    let keep = index.codes_stored().min(record_crcs.len() as u64);
    let (codes, kept) = DeltaCodesWriter::open(&dir.join(DELTA_CODES_FILE), &header, keep)?;
    let mut bytes = Vec::new();
    for (d, &crc) in record_crcs.iter().enumerate().skip(kept as usize) {
        index.encode_delta_code(d, crc, &mut bytes);
    }
    codes.write_entries(kept, &bytes)?;
    Ok(codes)
}

/// A claim on an index directory's staging (its `<dir>.tmp-<pid>` sibling, named after the
/// process): a merge or a compaction of the directory holds it while it writes there, so a
/// second one in this process is refused instead of removing the first one's files. A merge
/// prepared without the writer lock ([`prepare_merge`]) is not kept out by the lock.
#[derive(Debug)]
pub(crate) struct StagingClaim(PathBuf);

impl StagingClaim {
    pub(crate) fn take(dir: &Path) -> Result<Self, UpdateError> {
        let dir = crate::format::index_dir::normalize_target(dir)?;
        if !claimed().insert(dir.clone()) {
            return Err(UpdateError::Busy { dir });
        }
        Ok(Self(dir))
    }
}

impl Drop for StagingClaim {
    fn drop(&mut self) {
        claimed().remove(&self.0);
    }
}

fn claimed() -> std::sync::MutexGuard<'static, std::collections::BTreeSet<PathBuf>> {
    static CLAIMED: std::sync::Mutex<std::collections::BTreeSet<PathBuf>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    // The set is whole after any panic: insert and remove do not unwind part way.
    CLAIMED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes the exclusive writer lock of the index directory (held while the file is open).
fn lock_dir(dir: &Path) -> Result<File, UpdateError> {
    let lock = File::open(dir).map_err(|e| FormatError::io(dir, e))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => Err(UpdateError::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(FormatError::io(dir, e).into()),
    }
}

impl IndexWriter {
    /// Opens the index in `dir` for updates: takes the directory's lock, creates `wal.m3`
    /// and `delta.m3` if they do not exist yet, replays the log, and cuts what follows its
    /// last commit ([`IndexWriter::recovered`] says what).
    pub fn open(dir: &Path) -> Result<Self, UpdateError> {
        Self::open_locked(dir, lock_dir(dir)?)
    }

    /// [`IndexWriter::open`] with the directory's lock already taken (`lock`).
    fn open_locked(dir: &Path, lock: File) -> Result<Self, UpdateError> {
        // The index as published, checked, to learn its shape before touching anything.
        let index = Index::open_for_writer(dir)?;
        index
            .check_updatable()
            .map_err(|what| UpdateError::Unsupported {
                dir: dir.to_path_buf(),
                what,
            })?;
        let (_, manifest_crc32c) = crate::format::file_crc32c(&dir.join(MANIFEST_FILE))?;
        let meta = *index.meta();
        let wal_path = dir.join(WAL_FILE);
        let replay = match read_wal(&wal_path)? {
            Some(r) => r,
            None => {
                let header = WalHeader {
                    n_vectors: meta.n_vectors,
                    manifest_crc32c,
                    dim: meta.dim,
                    record_bytes: meta.record_bytes,
                    reserved: 0,
                };
                drop(WalWriter::create(&wal_path, &header)?);
                read_wal(&wal_path)?.expect("just created")
            }
        };
        let delta = DeltaFile::open_or_create(
            &dir.join(DELTA_FILE),
            &DeltaHeader {
                manifest_crc32c,
                dim: meta.dim,
                record_bytes: meta.record_bytes,
                dtype: u32::from(meta.dtype),
            },
        )?;
        let wal = WalWriter::open(&wal_path, &replay)?;
        // The index opened above replayed the same committed batches (the lock keeps them).
        let index = if index.live_info().generation == wal.generation() {
            index
        } else {
            Index::open_for_writer(dir)?
        };
        let ids = index
            .live_ids()
            .cloned()
            .unwrap_or_else(|| LiveIds::new(meta.n_vectors, index.base_user_ids()));
        let next_slot = index.live_slot_end();
        let record_crcs: Vec<u32> = replay
            .batches
            .iter()
            .flatten()
            .filter_map(|op| match *op {
                WalOp::Insert { record_crc32c, .. } => Some(record_crc32c),
                _ => None,
            })
            .collect();
        let codes = open_codes(dir, &index, manifest_crc32c, &record_crcs)?;
        Ok(Self {
            index,
            wal,
            delta,
            ids,
            codes: Some(codes),
            inserted: record_crcs.len() as u64,
            next_slot,
            pending: Vec::new(),
            recovered: replay.tail,
            poisoned: false,
            _lock: lock,
        })
    }

    /// The writer's lock on its directory, the rest of it dropped.
    fn into_lock(self) -> File {
        self._lock
    }

    /// What opening cut from the end of the log (a batch never committed, a torn or corrupt
    /// tail), if anything.
    pub fn recovered(&self) -> Option<&WalTail> {
        self.recovered.as_ref()
    }

    /// Committed inserts that opening coded again from `delta.m3` because `delta_codes.m3`
    /// did not hold them (missing, damaged or behind the log); the writer wrote them back.
    pub fn coded_again(&self) -> u64 {
        self.index.live_info().coded_again
    }

    /// The element type the index stores (f32, u8 or i8): what [`IndexWriter::insert`]'s
    /// values must fit.
    pub fn element_type(&self) -> crate::data::DType {
        self.index.element_type()
    }

    /// The generation of the last commit (0: none).
    pub fn generation(&self) -> u64 {
        self.wal.generation()
    }

    /// Vectors live after the last commit.
    pub fn live_vectors(&self) -> u64 {
        self.ids.live_count()
    }

    /// The id that continues the row numbers (the next vid) on an index without user ids;
    /// `None` on an index built with ids.
    pub fn next_row_id(&self) -> Option<u64> {
        match self.index.base_user_ids() {
            Some(_) => None,
            None => Some(self.ids.next_vid()),
        }
    }

    /// Whether `user_id` is live after the last commit.
    pub fn contains(&self, user_id: u64) -> bool {
        self.ids
            .lookup(self.index.base_user_ids(), user_id)
            .is_some()
    }

    /// Queues the insert of `vectors` (one row per id) under `ids`; an id that is live is
    /// replaced (upsert), and the last of repeated ids wins. Nothing is visible or durable
    /// before [`IndexWriter::commit`]. Refuses the whole call, naming the row, on a count,
    /// dimension or value that is wrong: not finite, or on a u8 or i8 index
    /// ([`IndexWriter::element_type`]) not an integer within the type's range (values are
    /// never rounded or clamped).
    pub fn insert(&mut self, ids: &[u64], vectors: MatrixView<'_, f32>) -> Result<(), UpdateError> {
        if ids.len() != vectors.rows() {
            return Err(UpdateError::Input {
                what: format!("{} ids for {} vectors", ids.len(), vectors.rows()),
            });
        }
        let mut prepared = Vec::with_capacity(ids.len());
        for (row, v) in vectors.iter_rows().enumerate() {
            let mut out = Vec::with_capacity(v.len());
            self.index
                .prepare_stored(v, &mut out)
                .map_err(|what| UpdateError::Input {
                    what: format!("vector {row}: {what}"),
                })?;
            prepared.push(out);
        }
        self.pending.extend(
            ids.iter()
                .zip(prepared)
                .map(|(&user_id, vector)| Pending::Insert { user_id, vector }),
        );
        Ok(())
    }

    /// Queues the delete of `ids` (ids that are not live are ignored).
    pub fn delete(&mut self, ids: &[u64]) {
        self.pending
            .extend(ids.iter().map(|&user_id| Pending::Delete { user_id }));
    }

    /// Operations queued since the last commit.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Makes the queued operations durable and visible to indexes opened from now on, and
    /// returns the new generation (the current one when nothing was queued). On an error the
    /// writer takes no more commits ([`UpdateError::Poisoned`]): open it again, and replay
    /// decides whether the batch is in.
    pub fn commit(&mut self) -> Result<u64, UpdateError> {
        if self.poisoned
            || self
                .index
                .live_vids_exhausted(&self.ids, self.pending.len())
        {
            return Err(if self.poisoned {
                UpdateError::Poisoned
            } else {
                UpdateError::Input {
                    what: "the index would hold more than 2^32 − 1 vectors or records".into(),
                }
            });
        }
        if self.pending.is_empty() {
            return Ok(self.wal.generation());
        }
        self.check_still_published()?;
        self.poisoned = true; // until this commit is through
        let pending = std::mem::take(&mut self.pending);
        let layout = self.index.record_layout();
        let codec = self.index.record_codec();
        let rb = codec.record_bytes() as usize;
        let start = batch_start(layout, self.next_slot);
        let inserts = pending
            .iter()
            .filter(|p| matches!(p, Pending::Insert { .. }))
            .count() as u64;
        let (_, first_sector, _) = slot_location(layout, start);
        let sectors = layout.sectors_for(inserts) as usize;
        let mut bytes = vec![0u8; sectors * SECTOR_BYTES];
        let base_ids = self.index.base_user_ids();
        let mut slot = start;
        let mut coded = Vec::with_capacity(inserts as usize);
        for p in &pending {
            let op = match p {
                Pending::Insert { user_id, vector } => {
                    let vid = self.ids.insert(base_ids, *user_id);
                    let (offset, _, _) = slot_location(layout, slot);
                    let at = (offset - first_sector * SECTOR_BYTES as u64) as usize;
                    codec.encode_f32(vector, vid, &[], &mut bytes[at..at + rb])?;
                    let record_crc32c = crc32c::crc32c(&bytes[at..at + rb]);
                    coded.push((slot, record_crc32c, vector.as_slice()));
                    let op = WalOp::Insert {
                        user_id: *user_id,
                        slot,
                        record_crc32c,
                    };
                    slot += 1;
                    op
                }
                Pending::Delete { user_id } => {
                    self.ids.delete(base_ids, *user_id);
                    WalOp::Delete { user_id: *user_id }
                }
            };
            self.wal.push(op);
        }
        if !bytes.is_empty() {
            self.delta.write_sectors(first_sector, &bytes)?;
        }
        let generation = self.wal.commit()?;
        self.next_slot = slot;
        self.poisoned = false;
        self.append_codes(&coded);
        Ok(generation)
    }

    /// Codes a committed batch's inserts (`(slot, record CRC32C, stored vector)`, in log
    /// order; on the current rayon pool) and appends their `delta_codes.m3` entries. The
    /// batch is durable already: a failed append only stops the file here (opens code the
    /// missing inserts again), it does not fail the commit.
    fn append_codes(&mut self, batch: &[(u64, u32, &[f32])]) {
        use rayon::prelude::*;
        let first = self.inserted;
        self.inserted += batch.len() as u64;
        let Some(codes) = &self.codes else {
            return;
        };
        let index = &self.index;
        let parts: Vec<Vec<u8>> = batch
            .par_chunks(256)
            .map(|chunk| {
                let mut out = Vec::new();
                for &(slot, crc, v) in chunk {
                    index.code_vector(v).encode_entry(slot, crc, &mut out);
                }
                out
            })
            .collect();
        if codes.write_entries(first, &parts.concat()).is_err() {
            self.codes = None;
        }
    }
}

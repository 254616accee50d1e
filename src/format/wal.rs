//! `wal.m3`: the write-ahead log of an index's live updates (inserts, deletes, commits), beside
//! the published files and not listed in the manifest (it grows after publication). Every
//! record carries a CRC32C; a commit record ends a batch and is fsynced before `commit()`
//! returns. Replay ([`read_wal`]) keeps the operations up to the last valid commit record and
//! reports everything after it: operations of a batch that was never committed, and a torn or
//! corrupt tail (a short record, a bad checksum, an unknown kind), which is cut and never
//! trusted. Byte layout: `docs/FORMAT.md`, "wal.m3".

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytemuck::{Pod, Zeroable};

use super::FormatError;
use super::file::LayoutTable;
use super::header::{COMMON_HEADER_BYTES, FileKind, decode_header, encode_header};

pub const WAL_KIND: FileKind = FileKind {
    magic: *b"M3WAL\0\0\0",
    name: "wal",
    version_major: 1,
    version_minor: 0,
};

/// The kind-specific header of `wal.m3`: which index the log extends.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct WalHeader {
    /// Base vectors of the index (`n_vectors` of its manifest).
    pub n_vectors: u64,
    /// CRC32C of the index's whole `manifest.m3`: a log is replayed only onto its own index.
    pub manifest_crc32c: u32,
    /// Dimension of the vectors.
    pub dim: u32,
    /// Bytes of a record in `delta.m3` (= the manifest's `record_bytes`).
    pub record_bytes: u32,
    pub reserved: u32,
}

const _: () = assert!(size_of::<WalHeader>() == 24);

/// Bytes of the whole header (common + [`WalHeader`]); the first record starts here.
pub const WAL_HEADER_BYTES: u64 = (COMMON_HEADER_BYTES + size_of::<WalHeader>()) as u64;
/// Bytes of a record's frame before its payload.
pub const WAL_FRAME_BYTES: u64 = 16;

impl WalHeader {
    pub fn layout_table() -> LayoutTable {
        crate::layout_table!(
            COMMON_HEADER_BYTES,
            WalHeader,
            n_vectors,
            manifest_crc32c,
            dim,
            record_bytes,
            reserved
        )
    }
}

/// The frame of one record: `crc32c` covers bytes `[4, 16 + payload_bytes)` of the record.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct WalFrame {
    pub crc32c: u32,
    pub payload_bytes: u32,
    pub kind: u32,
    pub reserved: u32,
}

const _: () = assert!(size_of::<WalFrame>() == WAL_FRAME_BYTES as usize);

impl WalFrame {
    pub fn layout_table() -> LayoutTable {
        crate::layout_table!(0, WalFrame, crc32c, payload_bytes, kind, reserved)
    }
}

/// One logged operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalOp {
    /// A vector with user id `user_id` whose record is slot `slot` of `delta.m3`; the
    /// record's bytes have CRC32C `record_crc32c`. An id already live is replaced (upsert).
    Insert {
        user_id: u64,
        slot: u64,
        record_crc32c: u32,
    },
    /// The vector with user id `user_id` is deleted (nothing happens if there is none).
    Delete { user_id: u64 },
    /// The operations since the previous commit are durable; the index is now at
    /// `generation` (1 for the first commit, then one more each time).
    Commit { generation: u64 },
}

const KIND_INSERT: u32 = 1;
const KIND_DELETE: u32 = 2;
const KIND_COMMIT: u32 = 3;

impl WalOp {
    /// The record: frame, then the payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut payload = Vec::with_capacity(24);
        let kind = match *self {
            WalOp::Insert {
                user_id,
                slot,
                record_crc32c,
            } => {
                payload.extend_from_slice(&user_id.to_le_bytes());
                payload.extend_from_slice(&slot.to_le_bytes());
                payload.extend_from_slice(&record_crc32c.to_le_bytes());
                payload.extend_from_slice(&0u32.to_le_bytes());
                KIND_INSERT
            }
            WalOp::Delete { user_id } => {
                payload.extend_from_slice(&user_id.to_le_bytes());
                KIND_DELETE
            }
            WalOp::Commit { generation } => {
                payload.extend_from_slice(&generation.to_le_bytes());
                KIND_COMMIT
            }
        };
        let start = out.len();
        out.extend_from_slice(&[0u8; 4]);
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&payload);
        let crc = crc32c::crc32c(&out[start + 4..]);
        out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    }

    /// Decodes the record at the start of `bytes`: the operation and the record's length, or
    /// why the bytes are not a whole valid record.
    fn decode(bytes: &[u8]) -> Result<(WalOp, usize), String> {
        if bytes.len() < WAL_FRAME_BYTES as usize {
            return Err(format!("a torn record frame ({} bytes)", bytes.len()));
        }
        let frame: WalFrame = bytemuck::pod_read_unaligned(&bytes[..WAL_FRAME_BYTES as usize]);
        let expected = match frame.kind {
            KIND_INSERT => 24,
            KIND_DELETE | KIND_COMMIT => 8,
            k => return Err(format!("unknown record kind {k}")),
        };
        if frame.payload_bytes != expected {
            return Err(format!(
                "a kind {} record with {} payload bytes (expected {expected})",
                frame.kind, frame.payload_bytes
            ));
        }
        let len = WAL_FRAME_BYTES as usize + expected as usize;
        if bytes.len() < len {
            return Err(format!(
                "a torn record ({} of its {len} bytes)",
                bytes.len()
            ));
        }
        let crc = crc32c::crc32c(&bytes[4..len]);
        if crc != frame.crc32c {
            return Err(format!(
                "record checksum mismatch (stored {:#010x}, computed {crc:#010x})",
                frame.crc32c
            ));
        }
        let p = &bytes[WAL_FRAME_BYTES as usize..len];
        let u64_at = |i: usize| u64::from_le_bytes(p[i..i + 8].try_into().expect("8 bytes"));
        let op = match frame.kind {
            KIND_INSERT => WalOp::Insert {
                user_id: u64_at(0),
                slot: u64_at(8),
                record_crc32c: u32::from_le_bytes(p[16..20].try_into().expect("4 bytes")),
            },
            KIND_DELETE => WalOp::Delete { user_id: u64_at(0) },
            _ => WalOp::Commit {
                generation: u64_at(0),
            },
        };
        Ok((op, len))
    }
}

/// What replay left out after the last commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalTail {
    /// Where the first byte not replayed is (the end of the last commit record).
    pub offset: u64,
    /// Bytes from there to the end of the file.
    pub bytes: u64,
    /// Intact operations after the last commit (a batch that was never committed).
    pub uncommitted_ops: usize,
    /// Why the log stops being readable before its end, if it does: a torn or corrupt record
    /// at byte `.0`.
    pub corrupt: Option<(u64, String)>,
}

/// A replayed log: its header and every committed batch in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalReplay {
    pub header: WalHeader,
    /// Commits before the first batch read: 0 for a whole log, the generation a reader had
    /// when it read only what followed ([`read_wal_from`]).
    pub first_generation: u64,
    /// The operations of each committed batch read (commit records excluded), oldest first;
    /// batch `i` made generation `first_generation + i + 1`.
    pub batches: Vec<Vec<WalOp>>,
    /// Bytes of the log up to the end of its last commit record.
    pub valid_bytes: u64,
    /// What follows the last commit, if anything (`None`: the file ends there).
    pub tail: Option<WalTail>,
}

impl WalReplay {
    /// The generation the committed batches make (0: none).
    pub fn generation(&self) -> u64 {
        self.first_generation + self.batches.len() as u64
    }
}

/// Reads and replays the log at `path`: `None` when there is none. The header must be intact
/// (it is written once, fsynced, before the log is renamed into place); after it, every
/// record up to the last valid commit is kept and the rest is described in
/// [`WalReplay::tail`], never replayed.
pub fn read_wal(path: &Path) -> Result<Option<WalReplay>, FormatError> {
    read_wal_from(path, None)
}

/// [`read_wal`] of only what follows a commit already replayed: `after` = (the byte where
/// that commit record ends, its generation), e.g. a previous replay's `valid_bytes` and
/// generation. The header is read and checked as always; the records before `after.0` are
/// not read again (the committed part of a log is never rewritten: a writer cuts only what
/// follows the last commit). A log shorter than `after.0` is corrupt.
pub fn read_wal_from(
    path: &Path,
    after: Option<(u64, u64)>,
) -> Result<Option<WalReplay>, FormatError> {
    let hb = WAL_HEADER_BYTES as usize;
    let (start, first_generation) = after.unwrap_or((hb as u64, 0));
    let Some(bytes) = read_header_and_rest(path, start.max(hb as u64))? else {
        return Ok(None);
    };
    // The header records its own length as the file length (records follow it).
    let (common, header) =
        decode_header::<WalHeader>(path, &WAL_KIND, &bytes[..bytes.len().min(hb)], hb as u64)?;
    if common.header_bytes as usize != hb {
        return Err(FormatError::corrupt(
            path,
            12,
            format!("header_bytes {} (expected {hb})", common.header_bytes),
        ));
    }
    // `bytes` holds the header, then the file from `skipped + hb` on.
    let skipped = start.max(hb as u64) - hb as u64;
    let mut batches = Vec::new();
    let mut batch = Vec::new();
    let mut pos = hb;
    let mut valid = hb;
    let mut corrupt = None;
    while pos < bytes.len() {
        match WalOp::decode(&bytes[pos..]) {
            Ok((op, len)) => {
                pos += len;
                if let WalOp::Commit { generation } = op {
                    let before = first_generation + batches.len() as u64;
                    if generation != before + 1 {
                        corrupt = Some((
                            skipped + (pos - len) as u64,
                            format!("commit of generation {generation} after generation {before}"),
                        ));
                        break;
                    }
                    batches.push(std::mem::take(&mut batch));
                    valid = pos;
                } else {
                    batch.push(op);
                }
            }
            Err(why) => {
                corrupt = Some((skipped + pos as u64, why));
                break;
            }
        }
    }
    let tail = (valid < bytes.len()).then(|| WalTail {
        offset: skipped + valid as u64,
        bytes: (bytes.len() - valid) as u64,
        uncommitted_ops: batch.len(),
        corrupt,
    });
    Ok(Some(WalReplay {
        header,
        first_generation,
        batches,
        valid_bytes: skipped + valid as u64,
        tail,
    }))
}

/// The log's header bytes followed by its bytes from `start` on (`start` ≥ the header's
/// length); `None` when there is no log. A log that ends before `start` is corrupt: its
/// committed records are gone.
fn read_header_and_rest(path: &Path, start: u64) -> Result<Option<Vec<u8>>, FormatError> {
    use std::io::{Read, Seek, SeekFrom};
    let hb = WAL_HEADER_BYTES;
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FormatError::io(path, e)),
    };
    let len = file.metadata().map_err(|e| FormatError::io(path, e))?.len();
    if start > hb && len < start {
        return Err(FormatError::corrupt(
            path,
            len,
            format!("the log ends at byte {len}, before its last replayed commit (byte {start})"),
        ));
    }
    let mut bytes = Vec::with_capacity((hb.min(len) + len.saturating_sub(start)) as usize);
    (&mut file)
        .take(hb)
        .read_to_end(&mut bytes)
        .map_err(|e| FormatError::io(path, e))?;
    if start > hb {
        file.seek(SeekFrom::Start(start))
            .map_err(|e| FormatError::io(path, e))?;
    }
    file.read_to_end(&mut bytes)
        .map_err(|e| FormatError::io(path, e))?;
    Ok(Some(bytes))
}

/// Appends to a log: operations are buffered by [`WalWriter::push`] and written with their
/// commit record, then fsynced, by [`WalWriter::commit`].
#[derive(Debug)]
pub struct WalWriter {
    path: PathBuf,
    file: File,
    /// End of the last commit record: where the next batch is written.
    end: u64,
    generation: u64,
    pending: Vec<u8>,
    /// Set when a write or fsync failed: what is on disk is unknown until the log is reopened.
    poisoned: bool,
}

impl WalWriter {
    /// Creates a new, empty log at `path` (written beside it, fsynced, renamed into place, the
    /// directory fsynced). Fails if `path` exists.
    pub fn create(path: &Path, header: &WalHeader) -> Result<Self, FormatError> {
        if path.exists() {
            return Err(FormatError::invalid(format!(
                "{}: a write-ahead log exists already",
                path.display()
            )));
        }
        let bytes = encode_header(&WAL_KIND, WAL_HEADER_BYTES, header);
        let tmp = path.with_extension("m3.new");
        super::write_whole_file(&tmp, &bytes)?;
        std::fs::rename(&tmp, path).map_err(|e| FormatError::io(path, e))?;
        if let Some(dir) = path.parent() {
            super::publish::sync_dir(dir)?;
        }
        Self::open(path, &read_wal(path)?.expect("just created"))
    }

    /// Opens the log at `path` for appending after `replay` (its [`read_wal`]): the tail
    /// after the last commit is cut (truncated and fsynced) first.
    pub fn open(path: &Path, replay: &WalReplay) -> Result<Self, FormatError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| FormatError::io(path, e))?;
        if replay.tail.is_some() {
            file.set_len(replay.valid_bytes)
                .and_then(|()| file.sync_all())
                .map_err(|e| FormatError::io(path, e))?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            end: replay.valid_bytes,
            generation: replay.generation(),
            pending: Vec::new(),
            poisoned: false,
        })
    }

    /// The generation of the last commit (0: none yet).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Bytes of the log up to its last commit.
    pub fn len_bytes(&self) -> u64 {
        self.end
    }

    /// Buffers `op` (an insert or a delete) for the next commit.
    pub fn push(&mut self, op: WalOp) {
        debug_assert!(
            !matches!(op, WalOp::Commit { .. }),
            "commit() writes commits"
        );
        op.encode(&mut self.pending);
    }

    /// Drops the buffered operations.
    pub fn discard(&mut self) {
        self.pending.clear();
    }

    /// Writes the buffered operations and a commit record of the next generation, and
    /// fsyncs: durable when this returns `Ok`. On an error nothing is known about what reached
    /// the disk; the writer refuses further commits (reopen the log: replay decides).
    pub fn commit(&mut self) -> Result<u64, FormatError> {
        if self.poisoned {
            return Err(FormatError::invalid(format!(
                "{}: an earlier commit failed; reopen the log",
                self.path.display()
            )));
        }
        let generation = self.generation + 1;
        WalOp::Commit { generation }.encode(&mut self.pending);
        let r = self
            .file
            .write_all_at(&self.pending, self.end)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = r {
            self.poisoned = true;
            return Err(FormatError::io(&self.path, e));
        }
        self.end += self.pending.len() as u64;
        self.pending.clear();
        self.generation = generation;
        Ok(generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> WalHeader {
        WalHeader {
            n_vectors: 10,
            manifest_crc32c: 0xdead_beef,
            dim: 4,
            record_bytes: 32,
            reserved: 0,
        }
    }

    fn ins(user_id: u64, slot: u64) -> WalOp {
        WalOp::Insert {
            user_id,
            slot,
            record_crc32c: user_id as u32 ^ 0x5555,
        }
    }

    /// Two committed batches and one pending: replay returns exactly the committed ones.
    fn sample(path: &Path) -> Vec<Vec<WalOp>> {
        let mut w = WalWriter::create(path, &header()).unwrap();
        let b1 = vec![ins(1, 0), ins(2, 1), WalOp::Delete { user_id: 7 }];
        let b2 = vec![WalOp::Delete { user_id: 1 }, ins(1, 12)];
        for op in &b1 {
            w.push(*op);
        }
        assert_eq!(w.commit().unwrap(), 1);
        for op in &b2 {
            w.push(*op);
        }
        assert_eq!(w.commit().unwrap(), 2);
        w.push(ins(99, 13));
        drop(w); // never committed, never written
        vec![b1, b2]
    }

    #[test]
    fn replays_committed_batches() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("wal.m3");
        assert_eq!(read_wal(&p).unwrap(), None);
        let batches = sample(&p);
        let r = read_wal(&p).unwrap().unwrap();
        assert_eq!(r.header, header());
        assert_eq!(r.batches, batches);
        assert_eq!(r.generation(), 2);
        assert_eq!(r.tail, None);
        assert_eq!(r.valid_bytes, std::fs::metadata(&p).unwrap().len());
        assert!(WalWriter::create(&p, &header()).is_err(), "exists already");
    }

    /// Every cut of the file and every flipped byte after the header: replay never returns
    /// an operation that was not committed, keeps every batch whose commit record is intact,
    /// and reports the rest.
    #[test]
    fn a_torn_or_corrupt_tail_is_cut_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("wal.m3");
        let batches = sample(&p);
        let full = std::fs::read(&p).unwrap();
        let r = read_wal(&p).unwrap().unwrap();
        // Where each batch's commit record ends.
        let mut ends = Vec::new();
        let mut buf = Vec::new();
        for b in &batches {
            for op in b {
                op.encode(&mut buf);
            }
            WalOp::Commit {
                generation: ends.len() as u64 + 1,
            }
            .encode(&mut buf);
            ends.push(WAL_HEADER_BYTES + buf.len() as u64);
        }
        assert_eq!(*ends.last().unwrap(), r.valid_bytes);
        let q = dir.path().join("cut.m3");
        for cut in WAL_HEADER_BYTES as usize..full.len() {
            std::fs::write(&q, &full[..cut]).unwrap();
            let r = read_wal(&q).unwrap().unwrap();
            let kept = ends.iter().filter(|&&e| e <= cut as u64).count();
            assert_eq!(r.batches, batches[..kept], "cut at {cut}");
            let at_boundary = cut as u64 == WAL_HEADER_BYTES || ends.contains(&(cut as u64));
            match r.tail {
                None => assert!(at_boundary, "cut at {cut}: nothing reported"),
                Some(tail) => {
                    assert!(!at_boundary, "cut at {cut}");
                    assert_eq!(tail.offset + tail.bytes, cut as u64);
                }
            }
        }
        for flip in WAL_HEADER_BYTES as usize..full.len() {
            let mut b = full.clone();
            b[flip] ^= 0x40;
            std::fs::write(&q, &b).unwrap();
            let r = read_wal(&q).unwrap().unwrap();
            // The batches wholly before the flipped byte survive; no batch at or after it does.
            let kept = ends.iter().filter(|&&e| e <= flip as u64).count();
            assert_eq!(r.batches, batches[..kept], "flip at {flip}");
            let tail = r.tail.expect("the damaged batch is cut");
            assert!(
                tail.corrupt.is_some(),
                "flip at {flip}: reported as corrupt"
            );
        }
        // A corrupt header is an error, not a tail.
        let mut b = full.clone();
        b[40] ^= 1;
        std::fs::write(&q, &b).unwrap();
        assert!(read_wal(&q).is_err());
    }

    /// Reading on from a replayed commit gives the batches after it, numbered on from its
    /// generation, with absolute offsets; every flipped byte after it is cut and reported as
    /// a full read would; a log cut before that commit is corrupt.
    #[test]
    fn reading_on_from_a_commit_gives_the_later_batches() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("wal.m3");
        let batches = sample(&p);
        let full = read_wal(&p).unwrap().unwrap();
        let first = {
            let mut buf = Vec::new();
            batches[0].iter().for_each(|op| op.encode(&mut buf));
            WalOp::Commit { generation: 1 }.encode(&mut buf);
            WAL_HEADER_BYTES + buf.len() as u64
        };
        let on = read_wal_from(&p, Some((first, 1))).unwrap().unwrap();
        assert_eq!(on.header, full.header);
        assert_eq!(on.first_generation, 1);
        assert_eq!(on.batches, batches[1..]);
        assert_eq!(on.generation(), 2);
        assert_eq!(on.valid_bytes, full.valid_bytes);
        // Nothing new after the last commit.
        let none = read_wal_from(&p, Some((full.valid_bytes, 2)))
            .unwrap()
            .unwrap();
        assert!(none.batches.is_empty() && none.tail.is_none());
        assert_eq!(none.generation(), 2);
        // A damaged record after the commit read from: cut, reported at its absolute offset.
        let bytes = std::fs::read(&p).unwrap();
        let q = dir.path().join("flip.m3");
        for flip in first as usize..bytes.len() {
            let mut b = bytes.clone();
            b[flip] ^= 0x40;
            std::fs::write(&q, &b).unwrap();
            let r = read_wal_from(&q, Some((first, 1))).unwrap().unwrap();
            let whole = read_wal(&q).unwrap().unwrap();
            assert_eq!(r.batches, whole.batches[1..], "flip at {flip}");
            assert_eq!(r.tail, whole.tail, "flip at {flip}");
        }
        // The log lost committed bytes: an error, not an empty replay.
        std::fs::write(&q, &bytes[..first as usize - 8]).unwrap();
        assert!(read_wal_from(&q, Some((first, 1))).is_err());
    }

    /// Reopening cuts the tail for good and appends after the last commit.
    #[test]
    fn reopening_cuts_the_tail_and_appends() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("wal.m3");
        let batches = sample(&p);
        let mut bytes = std::fs::read(&p).unwrap();
        let good = bytes.len();
        ins(50, 20).encode(&mut bytes); // a batch without its commit
        bytes.extend_from_slice(&[0xAB; 7]); // and garbage
        std::fs::write(&p, &bytes).unwrap();
        let r = read_wal(&p).unwrap().unwrap();
        let tail = r.tail.clone().unwrap();
        assert_eq!(tail.offset, good as u64);
        assert_eq!(tail.uncommitted_ops, 1);
        assert!(tail.corrupt.is_some());
        let mut w = WalWriter::open(&p, &r).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), good as u64);
        assert_eq!(w.generation(), 2);
        w.push(WalOp::Delete { user_id: 2 });
        assert_eq!(w.commit().unwrap(), 3);
        let r = read_wal(&p).unwrap().unwrap();
        assert_eq!(r.tail, None);
        assert_eq!(r.batches[..2], batches[..]);
        assert_eq!(r.batches[2], vec![WalOp::Delete { user_id: 2 }]);
    }
}

//! `delta_codes.m3`: what opening an index would otherwise compute again for every committed
//! insert (its cluster, PQ code, L2 correction, PQ error and key), appended by the writer after
//! each commit. It is *derived* data: an entry is used only when its own CRC32C holds and the
//! slot and record CRC32C it names are those the log (`wal.m3`) gives for the same insert, so a
//! missing, stale or damaged file costs time (the inserts are coded again from `delta.m3`),
//! never a wrong answer. Byte layout: `docs/FORMAT.md`, "delta_codes.m3".

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytemuck::{Pod, Zeroable};

use super::FormatError;
use super::file::LayoutTable;
use super::header::{COMMON_HEADER_BYTES, FileKind, decode_header, encode_header};

pub const DELTA_CODES_KIND: FileKind = FileKind {
    magic: *b"M3DCODES",
    name: "delta codes",
    version_major: 1,
    version_minor: 0,
};

/// The kind-specific header of `delta_codes.m3`: which index the entries were coded for.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct DeltaCodesHeader {
    /// CRC32C of the `manifest.m3` of the index whose centroids and codebooks coded the entries.
    pub manifest_crc32c: u32,
    /// Bytes of a PQ code (the index's subspaces).
    pub code_bytes: u32,
    /// Bytes of an entry: [`DeltaCodeEntry`] + the code, rounded up to a multiple of 8.
    pub entry_bytes: u32,
    pub reserved: u32,
}

const _: () = assert!(size_of::<DeltaCodesHeader>() == 16);

/// Bytes of the whole header (common + [`DeltaCodesHeader`]); the first entry starts here.
pub const DELTA_CODES_HEADER_BYTES: u64 =
    (COMMON_HEADER_BYTES + size_of::<DeltaCodesHeader>()) as u64;

impl DeltaCodesHeader {
    pub fn new(manifest_crc32c: u32, code_bytes: usize) -> Self {
        Self {
            manifest_crc32c,
            code_bytes: code_bytes as u32,
            entry_bytes: entry_bytes(code_bytes) as u32,
            reserved: 0,
        }
    }

    pub fn layout_table() -> LayoutTable {
        crate::layout_table!(
            COMMON_HEADER_BYTES,
            DeltaCodesHeader,
            manifest_crc32c,
            code_bytes,
            entry_bytes,
            reserved
        )
    }
}

/// The fixed part of an entry; the PQ code follows it, then zeros up to `entry_bytes`.
/// `crc32c` covers the entry's bytes `[4, entry_bytes)`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct DeltaCodeEntry {
    pub crc32c: u32,
    /// The cluster the insert was routed to.
    pub cluster: u32,
    /// The insert's slot in `delta.m3` (as the log names it).
    pub slot: u64,
    /// CRC32C of the insert's record bytes (as the log names it).
    pub record_crc32c: u32,
    /// `|r̂|² + 2 c·r̂`.
    pub correction: f32,
    /// `|r − r̂|`.
    pub error: f32,
    /// `|r|`.
    pub key: f32,
}

const _: () = assert!(size_of::<DeltaCodeEntry>() == 32);

impl DeltaCodeEntry {
    pub fn layout_table() -> LayoutTable {
        crate::layout_table!(
            0,
            DeltaCodeEntry,
            crc32c,
            cluster,
            slot,
            record_crc32c,
            correction,
            error,
            key
        )
    }
}

/// Bytes of an entry whose code has `code_bytes` bytes.
pub fn entry_bytes(code_bytes: usize) -> usize {
    (size_of::<DeltaCodeEntry>() + code_bytes).div_ceil(8) * 8
}

/// Appends the bytes of one entry (its CRC32C filled in) to `out`.
pub fn encode_entry(entry: &DeltaCodeEntry, code: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(bytemuck::bytes_of(entry));
    out.extend_from_slice(code);
    out.resize(start + entry_bytes(code.len()), 0);
    let crc = crc32c::crc32c(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// The entries of a `delta_codes.m3` read from one entry on: `bytes` holds whole entries from
/// there (a torn last one is left out by [`DeltaCodes::entry`]).
#[derive(Debug)]
pub struct DeltaCodes {
    pub header: DeltaCodesHeader,
    first: u64,
    bytes: Vec<u8>,
}

impl DeltaCodes {
    /// Reads the entries from number `first` on. `Ok(None)`: no file, or one made for another
    /// index or code size (`manifest_crc32c`, `code_bytes`), or whose header is damaged: the
    /// caller codes every insert again. I/O errors other than a missing file are errors.
    pub fn read(
        path: &Path,
        manifest_crc32c: u32,
        code_bytes: usize,
        first: u64,
    ) -> Result<Option<Self>, FormatError> {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(FormatError::io(path, e)),
        };
        let hb = DELTA_CODES_HEADER_BYTES as usize;
        let mut head = vec![0u8; hb];
        let len = file.metadata().map_err(|e| FormatError::io(path, e))?.len();
        if len < hb as u64 {
            return Ok(None);
        }
        file.read_exact_at(&mut head, 0)
            .map_err(|e| FormatError::io(path, e))?;
        let Ok((common, header)) =
            decode_header::<DeltaCodesHeader>(path, &DELTA_CODES_KIND, &head, hb as u64)
        else {
            return Ok(None);
        };
        let want = DeltaCodesHeader::new(manifest_crc32c, code_bytes);
        if common.header_bytes as usize != hb || header != want {
            return Ok(None);
        }
        let eb = header.entry_bytes as u64;
        let from = DELTA_CODES_HEADER_BYTES.saturating_add(first.saturating_mul(eb));
        let mut bytes = Vec::new();
        if from < len {
            use std::io::{Seek, SeekFrom};
            file.seek(SeekFrom::Start(from))
                .and_then(|_| file.read_to_end(&mut bytes))
                .map_err(|e| FormatError::io(path, e))?;
        }
        Ok(Some(Self {
            header,
            first,
            bytes,
        }))
    }

    /// Entry number `i` (counted from the file's first entry) and its code, if it is whole and
    /// its CRC32C holds; `None` otherwise (before the first entry read, past the end, torn or
    /// damaged).
    pub fn entry(&self, i: u64) -> Option<(DeltaCodeEntry, &[u8])> {
        let eb = self.header.entry_bytes as usize;
        let k = usize::try_from(i.checked_sub(self.first)?).ok()?;
        let bytes = self
            .bytes
            .get(k.checked_mul(eb)?..(k + 1).checked_mul(eb)?)?;
        let entry: DeltaCodeEntry = bytemuck::pod_read_unaligned(&bytes[..32]);
        if crc32c::crc32c(&bytes[4..]) != entry.crc32c {
            return None;
        }
        Some((entry, &bytes[32..32 + self.header.code_bytes as usize]))
    }
}

/// `delta_codes.m3` open for appending (one writer: the index's [`crate::update::IndexWriter`]).
#[derive(Debug)]
pub struct DeltaCodesWriter {
    path: PathBuf,
    file: File,
    entry_bytes: u64,
}

impl DeltaCodesWriter {
    /// Opens `path` for appending after its first `keep` entries (the file is cut there), or
    /// creates it (written beside it and renamed into place) when it is missing or its header
    /// is not `header` (then nothing is kept: the returned count says how many entries it
    /// holds, `keep` or 0). Not fsynced: the file is derived, and a lost or torn end only
    /// makes the next open code those inserts again.
    pub fn open(
        path: &Path,
        header: &DeltaCodesHeader,
        keep: u64,
    ) -> Result<(Self, u64), FormatError> {
        let valid = matches!(
            DeltaCodes::read(
                path,
                header.manifest_crc32c,
                header.code_bytes as usize,
                u64::MAX
            ),
            Ok(Some(_))
        );
        let kept = if valid {
            keep
        } else {
            let bytes = encode_header(&DELTA_CODES_KIND, DELTA_CODES_HEADER_BYTES, header);
            let tmp = path.with_extension("m3.new");
            super::write_whole_file(&tmp, &bytes)?;
            std::fs::rename(&tmp, path).map_err(|e| FormatError::io(path, e))?;
            0
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| FormatError::io(path, e))?;
        let eb = u64::from(header.entry_bytes);
        file.set_len(DELTA_CODES_HEADER_BYTES + kept * eb)
            .map_err(|e| FormatError::io(path, e))?;
        Ok((
            Self {
                path: path.to_path_buf(),
                file,
                entry_bytes: eb,
            },
            kept,
        ))
    }

    /// Writes `bytes` (whole entries from [`encode_entry`]) as entries `at, at + 1, …`.
    pub fn write_entries(&self, at: u64, bytes: &[u8]) -> Result<(), FormatError> {
        self.file
            .write_all_at(bytes, DELTA_CODES_HEADER_BYTES + at * self.entry_bytes)
            .map_err(|e| FormatError::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u64) -> DeltaCodeEntry {
        DeltaCodeEntry {
            crc32c: 0,
            cluster: i as u32 * 3,
            slot: i + 12,
            record_crc32c: 0xdead_0000 + i as u32,
            correction: 0.5,
            error: 0.25,
            key: i as f32,
        }
    }

    #[test]
    fn entries_round_trip_and_damage_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("delta_codes.m3");
        let h = DeltaCodesHeader::new(7, 5);
        assert_eq!(h.entry_bytes, 40);
        assert!(DeltaCodes::read(&p, 7, 5, 0).unwrap().is_none(), "missing");
        let (w, kept) = DeltaCodesWriter::open(&p, &h, 9).unwrap();
        assert_eq!(kept, 0, "a new file keeps nothing");
        let mut bytes = Vec::new();
        for i in 0..4 {
            encode_entry(&entry(i), &[i as u8; 5], &mut bytes);
        }
        w.write_entries(0, &bytes).unwrap();
        drop(w);
        let r = DeltaCodes::read(&p, 7, 5, 1).unwrap().unwrap();
        assert!(r.entry(0).is_none(), "before the first read");
        let (e, code) = r.entry(2).unwrap();
        assert_eq!((e.slot, e.cluster, code), (14, 6, &[2u8; 5][..]));
        assert!(r.entry(4).is_none(), "past the end");
        // Another index or code size: not used.
        assert!(DeltaCodes::read(&p, 8, 5, 0).unwrap().is_none());
        assert!(DeltaCodes::read(&p, 7, 6, 0).unwrap().is_none());
        // A flipped byte in entry 1 and a torn entry 3.
        let mut raw = std::fs::read(&p).unwrap();
        raw[48 + 40 + 20] ^= 1;
        raw.truncate(raw.len() - 3);
        std::fs::write(&p, &raw).unwrap();
        let r = DeltaCodes::read(&p, 7, 5, 0).unwrap().unwrap();
        assert!(r.entry(0).is_some() && r.entry(1).is_none() && r.entry(2).is_some());
        assert!(r.entry(3).is_none(), "torn");
        // Reopening keeps the first 1 and appends after it.
        let (w, kept) = DeltaCodesWriter::open(&p, &h, 1).unwrap();
        assert_eq!(kept, 1);
        let mut one = Vec::new();
        encode_entry(&entry(9), &[9; 5], &mut one);
        w.write_entries(1, &one).unwrap();
        let r = DeltaCodes::read(&p, 7, 5, 0).unwrap().unwrap();
        assert_eq!(r.entry(1).unwrap().0.slot, 21);
        assert!(r.entry(2).is_none());
        // A damaged header: rewritten from nothing.
        let mut raw = std::fs::read(&p).unwrap();
        raw[3] ^= 1;
        std::fs::write(&p, &raw).unwrap();
        assert!(DeltaCodes::read(&p, 7, 5, 0).unwrap().is_none());
        assert_eq!(DeltaCodesWriter::open(&p, &h, 2).unwrap().1, 0);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 48);
    }
}

//! `delta.m3`: the records of vectors inserted into a published index (live updates), in the
//! record layout of `data.m3` so that the query engine reads and decodes them with the same
//! block reader and codec. Slot `s` is at data sector `locate(s).sector` of the file (sector 0
//! is the header sector); which slots hold live records, and their checksums, is in
//! `wal.m3`. Byte layout: `docs/FORMAT.md`, "delta.m3".

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytemuck::{Pod, Zeroable};

use super::file::LayoutTable;
use super::header::{COMMON_HEADER_BYTES, FileKind, decode_header, encode_header};
use super::{FormatError, RecordLayout, SECTOR_BYTES};

pub const DELTA_KIND: FileKind = FileKind {
    magic: *b"M3DELTA\0",
    name: "delta",
    version_major: 1,
    version_minor: 0,
};

/// The kind-specific header of `delta.m3` (in its first sector, zero after it).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct DeltaHeader {
    /// CRC32C of the `manifest.m3` of the index the records extend.
    pub manifest_crc32c: u32,
    /// Dimension of the vectors.
    pub dim: u32,
    /// Bytes per record (= the manifest's `record_bytes`).
    pub record_bytes: u32,
    /// Element type code of the vectors (= the manifest's `dtype`).
    pub dtype: u32,
}

const _: () = assert!(size_of::<DeltaHeader>() == 16);

impl DeltaHeader {
    pub fn layout_table() -> LayoutTable {
        crate::layout_table!(
            COMMON_HEADER_BYTES,
            DeltaHeader,
            manifest_crc32c,
            dim,
            record_bytes,
            dtype
        )
    }
}

/// The file byte where slot `slot` starts, and the sectors its record spans (from the file's
/// sector `file_sector`).
pub fn slot_location(layout: RecordLayout, slot: u64) -> (u64, u64, u32) {
    let loc = layout.locate(slot);
    let file_sector = 1 + loc.sector;
    (
        file_sector * SECTOR_BYTES as u64 + loc.offset_bytes as u64,
        file_sector,
        loc.sectors,
    )
}

/// The first slot of the next batch after `next_slot`: batches start on a sector boundary, so
/// writing one never rewrites a sector that holds committed records.
pub fn batch_start(layout: RecordLayout, next_slot: u64) -> u64 {
    match layout.records_per_sector() {
        0 => next_slot,
        rps => next_slot.div_ceil(rps as u64) * rps as u64,
    }
}

/// `delta.m3` open for reading and writing.
#[derive(Debug)]
pub struct DeltaFile {
    path: PathBuf,
    file: File,
    pub header: DeltaHeader,
}

impl DeltaFile {
    /// Opens `path`, creating it (header sector written beside it, fsynced, renamed into
    /// place, directory fsynced) when it does not exist; an existing file's header must equal
    /// `header`.
    pub fn open_or_create(path: &Path, header: &DeltaHeader) -> Result<Self, FormatError> {
        if !path.exists() {
            let mut bytes = encode_header(&DELTA_KIND, SECTOR_BYTES as u64, header);
            bytes.resize(SECTOR_BYTES, 0);
            let tmp = path.with_extension("m3.new");
            super::write_whole_file(&tmp, &bytes)?;
            std::fs::rename(&tmp, path).map_err(|e| FormatError::io(path, e))?;
            if let Some(dir) = path.parent() {
                super::publish::sync_dir(dir)?;
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| FormatError::io(path, e))?;
        let found = Self::read_header(path, &file)?;
        if found != *header {
            return Err(FormatError::corrupt(
                path,
                32,
                format!("header {found:?} is not that of this index ({header:?})"),
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            header: found,
        })
    }

    /// The header of an existing `delta.m3`.
    pub fn read_header(path: &Path, file: &File) -> Result<DeltaHeader, FormatError> {
        let mut bytes = vec![0u8; SECTOR_BYTES];
        let len = file.metadata().map_err(|e| FormatError::io(path, e))?.len();
        let n = (len as usize).min(SECTOR_BYTES);
        file.read_exact_at(&mut bytes[..n], 0)
            .map_err(|e| FormatError::io(path, e))?;
        let (_, h) =
            decode_header::<DeltaHeader>(path, &DELTA_KIND, &bytes[..n], SECTOR_BYTES as u64)?;
        Ok(h)
    }

    /// Writes `bytes` (whole sectors) from file sector `file_sector` on and fsyncs.
    pub fn write_sectors(&self, file_sector: u64, bytes: &[u8]) -> Result<(), FormatError> {
        debug_assert!(bytes.len().is_multiple_of(SECTOR_BYTES));
        self.file
            .write_all_at(bytes, file_sector * SECTOR_BYTES as u64)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| FormatError::io(&self.path, e))
    }

    /// Reads `out.len()` bytes at file byte `offset`.
    pub fn read_at(&self, out: &mut [u8], offset: u64) -> Result<(), FormatError> {
        self.file
            .read_exact_at(out, offset)
            .map_err(|e| FormatError::io(&self.path, e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_and_batches_follow_the_record_layout() {
        // 336-byte records: 12 per sector (docs/FORMAT.md's worked example).
        let l = RecordLayout::new(336).unwrap();
        assert_eq!(slot_location(l, 0), (4096, 1, 1));
        assert_eq!(slot_location(l, 13), (2 * 4096 + 336, 2, 1));
        assert_eq!(batch_start(l, 0), 0);
        assert_eq!(batch_start(l, 1), 12);
        assert_eq!(batch_start(l, 12), 12);
        // 4,104-byte records: 2 sectors each, every slot starts a sector.
        let l = RecordLayout::new(4104).unwrap();
        assert_eq!(slot_location(l, 3), (7 * 4096, 7, 2));
        assert_eq!(batch_start(l, 5), 5);
    }

    #[test]
    fn header_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("delta.m3");
        let h = DeltaHeader {
            manifest_crc32c: 7,
            dim: 8,
            record_bytes: 72,
            dtype: 0,
        };
        let f = DeltaFile::open_or_create(&p, &h).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), SECTOR_BYTES as u64);
        f.write_sectors(1, &[1u8; SECTOR_BYTES]).unwrap();
        drop(f);
        DeltaFile::open_or_create(&p, &h).unwrap();
        let other = DeltaHeader {
            manifest_crc32c: 8,
            ..h
        };
        assert!(DeltaFile::open_or_create(&p, &other).is_err());
    }
}

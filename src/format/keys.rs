//! `keys.m3`: every record's M-Index key, the L2 distance (not squared) of its stored vector to
//! its cluster's centroid, in record order (so ascending within each cluster). Exact and range
//! search (DESIGN §4.5) use it to read only the records whose key can hold an answer. Added in
//! format 1.1; an index without it is still searchable (exact search then bounds whole
//! clusters). Byte layout: `docs/FORMAT.md`, "keys.m3".

use std::path::Path;

use bytemuck::{Pod, Zeroable};

use super::file::{FileEntry, LayoutTable, ListedFile, SectionReader, SectionWriter, align8};
use super::header::{COMMON_HEADER_BYTES, FileKind};
use super::streamed::StreamedSections;
use super::{ClusterEntry, FormatError, IndexMeta};

pub const KEYS_KIND: FileKind = FileKind {
    magic: *b"M3KEYS\0\0",
    name: "keys",
    version_major: 1,
    version_minor: 0,
};

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct KeysHeader {
    pub n_records: u64,
    pub keys_offset: u64,
}

const _: () = assert!(size_of::<KeysHeader>() == 16);

impl KeysHeader {
    pub fn layout_table() -> LayoutTable {
        crate::layout_table!(COMMON_HEADER_BYTES, KeysHeader, n_records, keys_offset)
    }
}

/// `keys.m3` written key by key ([`RecordKeys::writer`]).
pub struct RecordKeysWriter {
    w: StreamedSections,
    header: KeysHeader,
}

impl RecordKeysWriter {
    pub fn push(&mut self, key: f32) -> Result<(), FormatError> {
        self.w.append(0, &[key])
    }

    /// Fails unless exactly `n_records` keys were pushed.
    pub fn finish(self) -> Result<FileEntry, FormatError> {
        self.w.finish(&KEYS_KIND, &self.header, &[])
    }
}

/// The contents of `keys.m3`: `keys[r]` is record `r`'s distance to its centroid.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordKeys {
    pub keys: Vec<f32>,
}

impl RecordKeys {
    pub fn write(&self, path: &Path) -> Result<FileEntry, FormatError> {
        let header_bytes = COMMON_HEADER_BYTES + size_of::<KeysHeader>();
        let mut w = SectionWriter::new(header_bytes);
        let keys_offset = w.push(&self.keys);
        let header = KeysHeader {
            n_records: self.keys.len() as u64,
            keys_offset,
        };
        w.finish(path, &KEYS_KIND, &header, &[])
    }

    /// A writer that takes the `n_records` keys one at a time and writes the same bytes as
    /// [`Self::write`] without holding them (the build streams them out of its sort).
    pub fn writer(path: &Path, n_records: u64) -> Result<RecordKeysWriter, FormatError> {
        let header_bytes = COMMON_HEADER_BYTES + size_of::<KeysHeader>();
        let (w, offsets) = StreamedSections::create(path, header_bytes, &[4 * n_records])?;
        Ok(RecordKeysWriter {
            w,
            header: KeysHeader {
                n_records,
                keys_offset: offsets[0],
            },
        })
    }

    pub fn read(path: &Path) -> Result<Self, FormatError> {
        let (r, h) = SectionReader::open::<KeysHeader>(path, &KEYS_KIND)?;
        Self::parse(&r, h)
    }

    /// [`Self::read`] of a listed file, with its length and CRC32C checked against the
    /// manifest.
    pub fn read_listed(f: &ListedFile) -> Result<Self, FormatError> {
        let (r, h) = f.reader::<KeysHeader>(&KEYS_KIND)?;
        f.checked(&r, Self::parse(&r, h))
    }

    /// [`Self::read`] of a listed file already checked whole when the index was opened (its
    /// CRC is not computed again).
    pub fn reread_listed(f: &ListedFile) -> Result<Self, FormatError> {
        let (r, h) = f.reader::<KeysHeader>(&KEYS_KIND)?;
        Self::parse(&r, h)
    }

    fn parse(r: &SectionReader, h: KeysHeader) -> Result<Self, FormatError> {
        if h.keys_offset < align8(r.common.header_bytes as u64) {
            return Err(r.corrupt(40, "keys section overlaps the header"));
        }
        Ok(Self {
            keys: r.section(h.keys_offset, h.n_records, "keys")?,
        })
    }

    /// Checks the keys against the manifest and the cluster table: one finite, non-negative
    /// key per record, ascending within every cluster, from the cluster's `r_min` to its
    /// `r_max`.
    pub fn check_against(
        &self,
        meta: &IndexMeta,
        clusters: &[ClusterEntry],
        path: &Path,
    ) -> Result<(), FormatError> {
        if self.keys.len() as u64 != meta.n_records {
            return Err(FormatError::corrupt(
                path,
                32,
                format!(
                    "{} keys; the manifest has {} records",
                    self.keys.len(),
                    meta.n_records
                ),
            ));
        }
        for (c, e) in clusters.iter().enumerate() {
            let first = e.first_record as usize;
            let Some(keys) = self.keys.get(first..first + e.records as usize) else {
                return Err(FormatError::corrupt(
                    path,
                    32,
                    format!("cluster {c} past the keys"),
                ));
            };
            let bad = |what: String| Err(FormatError::corrupt(path, 32, what));
            if let Some(i) = keys.iter().position(|k| !k.is_finite() || *k < 0.0) {
                return bad(format!(
                    "record {}: key {} is not a distance",
                    first + i,
                    keys[i]
                ));
            }
            if let Some(i) = keys.windows(2).position(|w| w[0] > w[1]) {
                return bad(format!(
                    "cluster {c}: keys not ascending at record {}",
                    first + i
                ));
            }
            // The radii are the smallest and largest key (the build takes them from the keys).
            if let (Some(&lo), Some(&hi)) = (keys.first(), keys.last())
                && (lo != e.r_min || hi != e.r_max)
            {
                return bad(format!(
                    "cluster {c}: keys span [{lo}, {hi}], the cluster table says [r_min, r_max] = [{}, {}]",
                    e.r_min, e.r_max
                ));
            }
        }
        Ok(())
    }
}

//! `ids.m3`: the user id (`u64`) of every base vector, in base-row order. Optional: an index
//! without it reports row numbers as ids. Present exactly when manifest flag bit 3 is set, so
//! a reader that does not know user ids refuses the index instead of answering with row
//! numbers. Byte layout: `docs/FORMAT.md`, "ids.m3".

use std::collections::HashSet;
use std::path::Path;

use bytemuck::{Pod, Zeroable};

use super::file::{FileEntry, LayoutTable, ListedFile, SectionReader, SectionWriter, align8};
use super::header::{COMMON_HEADER_BYTES, FileKind};
use super::{FormatError, IndexMeta};

pub const IDS_KIND: FileKind = FileKind {
    magic: *b"M3IDS\0\0\0",
    name: "ids",
    version_major: 1,
    version_minor: 0,
};

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct IdsHeader {
    pub n_vectors: u64,
    pub ids_offset: u64,
}

const _: () = assert!(size_of::<IdsHeader>() == 16);

impl IdsHeader {
    pub fn layout_table() -> LayoutTable {
        crate::layout_table!(COMMON_HEADER_BYTES, IdsHeader, n_vectors, ids_offset)
    }
}

/// The contents of `ids.m3`: `ids[row]` is the user id of base row `row`; all distinct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserIds {
    pub ids: Vec<u64>,
}

impl UserIds {
    pub fn write(&self, path: &Path) -> Result<FileEntry, FormatError> {
        let header_bytes = COMMON_HEADER_BYTES + size_of::<IdsHeader>();
        let mut w = SectionWriter::new(header_bytes);
        let ids_offset = w.push(&self.ids);
        let header = IdsHeader {
            n_vectors: self.ids.len() as u64,
            ids_offset,
        };
        w.finish(path, &IDS_KIND, &header, &[])
    }

    pub fn read(path: &Path) -> Result<Self, FormatError> {
        let (r, h) = SectionReader::open::<IdsHeader>(path, &IDS_KIND)?;
        Self::parse(&r, h)
    }

    /// [`Self::read`] of a listed file, with its length and CRC32C checked against the
    /// manifest.
    pub fn read_listed(f: &ListedFile) -> Result<Self, FormatError> {
        let (r, h) = f.reader::<IdsHeader>(&IDS_KIND)?;
        f.checked(&r, Self::parse(&r, h))
    }

    fn parse(r: &SectionReader, h: IdsHeader) -> Result<Self, FormatError> {
        if h.ids_offset < align8(r.common.header_bytes as u64) {
            return Err(r.corrupt(40, "ids section overlaps the header"));
        }
        Ok(Self {
            ids: r.section(h.ids_offset, h.n_vectors, "ids")?,
        })
    }

    /// The first row whose id an earlier row already has.
    pub fn first_duplicate(ids: &[u64]) -> Option<(usize, u64)> {
        let mut seen = HashSet::with_capacity(ids.len());
        ids.iter()
            .enumerate()
            .find(|(_, id)| !seen.insert(**id))
            .map(|(row, &id)| (row, id))
    }

    /// Checks the ids against the manifest: one per base vector, all distinct.
    pub fn check_against(&self, meta: &IndexMeta, path: &Path) -> Result<(), FormatError> {
        if self.ids.len() as u64 != meta.n_vectors {
            return Err(FormatError::corrupt(
                path,
                32,
                format!(
                    "{} ids; the manifest has {} vectors",
                    self.ids.len(),
                    meta.n_vectors
                ),
            ));
        }
        // A merged index (format 2.0) may repeat the id of a dead vid: checked against its
        // dead vids by IndexParts::open.
        let merged = meta.flags & super::manifest::META_FLAG_SEGMENTS != 0;
        if let Some((row, id)) = Self::first_duplicate(&self.ids).filter(|_| !merged) {
            return Err(FormatError::corrupt(
                path,
                48 + 8 * row as u64,
                format!("row {row} repeats the id {id} of an earlier row"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ids.m3");
        let ids = UserIds {
            ids: vec![10, 1 << 50, 3],
        };
        ids.write(&p).unwrap();
        let back = UserIds::read(&p).unwrap();
        assert_eq!(back, ids);
        let mut meta: IndexMeta = Zeroable::zeroed();
        meta.n_vectors = 3;
        back.check_against(&meta, &p).unwrap();
        meta.n_vectors = 4;
        assert!(back.check_against(&meta, &p).is_err());
        meta.n_vectors = 3;
        let dup = UserIds {
            ids: vec![10, 3, 10],
        };
        let e = dup.check_against(&meta, &p).unwrap_err().to_string();
        assert!(e.contains("row 2 repeats the id 10"), "{e}");
    }
}

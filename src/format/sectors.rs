//! `sectors.m3`: the CRC32C of every data sector of `data.m3`, in sector order, starting at
//! `header_bytes` (48 in v1.0). Byte layout: `docs/FORMAT.md`, "sectors.m3".

use std::path::Path;

use bytemuck::{Pod, Zeroable};

use super::FormatError;
use super::file::{FileEntry, LayoutTable, ListedFile, SectionReader, SectionWriter, align8};
use super::header::{COMMON_HEADER_BYTES, FileKind};

pub const SECTORS_KIND: FileKind = FileKind {
    magic: *b"M3SECCRC",
    name: "sectors",
    version_major: 1,
    version_minor: 0,
};

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct SectorsHeader {
    pub data_sectors: u64,
    pub reserved: u64,
}

const _: () = assert!(size_of::<SectorsHeader>() == 16);

impl SectorsHeader {
    pub fn layout_table() -> LayoutTable {
        crate::layout_table!(COMMON_HEADER_BYTES, SectorsHeader, data_sectors, reserved)
    }
}

/// The contents of `sectors.m3`: `crcs[i]` is the CRC32C of data sector `i`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectorCrcs {
    pub crcs: Vec<u32>,
}

impl SectorCrcs {
    pub fn write(&self, path: &Path) -> Result<FileEntry, FormatError> {
        let mut w = SectionWriter::new(COMMON_HEADER_BYTES + size_of::<SectorsHeader>());
        w.push(&self.crcs);
        let header = SectorsHeader {
            data_sectors: self.crcs.len() as u64,
            reserved: 0,
        };
        w.finish(path, &SECTORS_KIND, &header, &[])
    }

    pub fn read(path: &Path) -> Result<Self, FormatError> {
        let (r, h) = SectionReader::open::<SectorsHeader>(path, &SECTORS_KIND)?;
        Self::parse(&r, h)
    }

    /// [`Self::read`] of a listed file, with its length and CRC32C checked against the
    /// manifest.
    pub fn read_listed(f: &ListedFile) -> Result<Self, FormatError> {
        let (r, h) = f.reader::<SectorsHeader>(&SECTORS_KIND)?;
        f.checked(&r, Self::parse(&r, h))
    }

    fn parse(r: &SectionReader, h: SectorsHeader) -> Result<Self, FormatError> {
        let offset = align8(r.common.header_bytes as u64);
        Ok(Self {
            crcs: r.section(offset, h.data_sectors, "sector CRCs")?,
        })
    }
}

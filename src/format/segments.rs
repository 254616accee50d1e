//! `segments.m3`: the data segments of a merged (format 2.0) index, in the order their sectors
//! are concatenated, and the bitmap of dead vids (decision 0012). Byte layout:
//! `docs/FORMAT.md`, "segments.m3".

use std::path::Path;

use bytemuck::{Pod, Zeroable};

use super::file::{FileEntry, LayoutTable, ListedFile, SectionReader, SectionWriter, align8};
use super::header::{COMMON_HEADER_BYTES, FileKind};
use super::{FormatError, IndexMeta};

pub const SEGMENTS_KIND: FileKind = FileKind {
    magic: *b"M3SEGMNT",
    name: "segments",
    version_major: 1,
    version_minor: 0,
};

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct SegmentsHeader {
    pub n_segments: u32,
    pub reserved: u32,
    pub n_vids: u64,
    pub next_segment: u64,
    pub table_offset: u64,
    pub dead_offset: u64,
}

const _: () = assert!(size_of::<SegmentsHeader>() == 40);

impl SegmentsHeader {
    pub fn layout_table() -> LayoutTable {
        crate::layout_table!(
            COMMON_HEADER_BYTES,
            SegmentsHeader,
            n_segments,
            reserved,
            n_vids,
            next_segment,
            table_offset,
            dead_offset
        )
    }
}

/// One segment file: its name, data sectors (header excluded) and records.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct SegmentEntry {
    pub name: [u8; 32],
    pub data_sectors: u64,
    pub records: u64,
}

const _: () = assert!(size_of::<SegmentEntry>() == 48);

impl SegmentEntry {
    pub fn layout_table() -> LayoutTable {
        crate::layout_table!(0, SegmentEntry, name, data_sectors, records)
    }

    /// An entry for the segment file `name` (a plain file name of at most 32 bytes).
    pub fn new(name: &str, data_sectors: u64, records: u64) -> Result<Self, FormatError> {
        let e = FileEntry::new(name, 0, 0)?;
        Ok(Self {
            name: e.name,
            data_sectors,
            records,
        })
    }

    /// The file name, or `None` when the stored bytes are not a plain file name.
    pub fn name_str(&self) -> Option<&str> {
        let e = FileEntry {
            name: self.name,
            bytes: 0,
            crc32c: 0,
            reserved: 0,
        };
        e.name_str().map(|_| {
            let len = self.name.iter().position(|&b| b == 0).unwrap_or(32);
            std::str::from_utf8(&self.name[..len]).unwrap_or_default()
        })
    }
}

/// The contents of `segments.m3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segments {
    pub segments: Vec<SegmentEntry>,
    pub n_vids: u64,
    pub next_segment: u64,
    /// Bit `v % 64` of word `v / 64`: vid v is dead.
    pub dead: Vec<u64>,
}

impl Segments {
    /// The name of segment file number `n`.
    pub fn file_name(n: u64) -> String {
        format!("seg-{n}.m3")
    }

    pub fn write(&self, path: &Path) -> Result<FileEntry, FormatError> {
        let header_bytes = COMMON_HEADER_BYTES + size_of::<SegmentsHeader>();
        let mut w = SectionWriter::new(header_bytes);
        let table_offset = w.push(&self.segments);
        let dead_offset = w.push(&self.dead);
        let header = SegmentsHeader {
            n_segments: u32::try_from(self.segments.len())
                .map_err(|_| FormatError::invalid("too many segments"))?,
            reserved: 0,
            n_vids: self.n_vids,
            next_segment: self.next_segment,
            table_offset,
            dead_offset,
        };
        w.finish(path, &SEGMENTS_KIND, &header, &[])
    }

    pub fn read(path: &Path) -> Result<Self, FormatError> {
        let (r, h) = SectionReader::open::<SegmentsHeader>(path, &SEGMENTS_KIND)?;
        Self::parse(&r, h)
    }

    /// [`Self::read`] of a listed file, with its length and CRC32C checked against the
    /// manifest.
    pub fn read_listed(f: &ListedFile) -> Result<Self, FormatError> {
        let (r, h) = f.reader::<SegmentsHeader>(&SEGMENTS_KIND)?;
        f.checked(&r, Self::parse(&r, h))
    }

    fn parse(r: &SectionReader, h: SegmentsHeader) -> Result<Self, FormatError> {
        let hb = align8(r.common.header_bytes as u64);
        if h.table_offset < hb || h.dead_offset < hb {
            return Err(r.corrupt(56, "a section overlaps the header"));
        }
        if h.n_segments == 0 {
            return Err(r.corrupt(32, "no segments"));
        }
        let words = h.n_vids.div_ceil(64);
        let table_bytes = u64::from(h.n_segments) * size_of::<SegmentEntry>() as u64;
        if h.table_offset < h.dead_offset.saturating_add(words * 8)
            && h.dead_offset < h.table_offset.saturating_add(table_bytes)
        {
            return Err(r.corrupt(64, "the segment table and the dead vids overlap"));
        }
        let segments: Vec<SegmentEntry> =
            r.section(h.table_offset, u64::from(h.n_segments), "segment table")?;
        let dead: Vec<u64> = r.section(h.dead_offset, words, "dead vids")?;
        let s = Self {
            segments,
            n_vids: h.n_vids,
            next_segment: h.next_segment,
            dead,
        };
        s.check_self(r)?;
        Ok(s)
    }

    fn check_self(&self, r: &SectionReader) -> Result<(), FormatError> {
        let mut seen = std::collections::HashSet::new();
        for (k, e) in self.segments.iter().enumerate() {
            let name = e
                .name_str()
                .ok_or_else(|| r.corrupt(0, format!("segment {k}: bad name")))?;
            if !seen.insert(name.to_string()) {
                return Err(r.corrupt(0, format!("segment {name} listed twice")));
            }
        }
        let tail = self.n_vids % 64;
        if tail != 0 && self.dead.last().is_some_and(|w| w >> tail != 0) {
            return Err(r.corrupt(64, "a dead bit past n_vids"));
        }
        Ok(())
    }

    /// Checks the segments against the manifest: flag bit 5, as many vids as vectors, the
    /// concatenated sectors equal to `data_sectors`, every segment listed.
    pub fn check_against(
        &self,
        meta: &IndexMeta,
        listed: &dyn Fn(&str) -> bool,
        path: &Path,
    ) -> Result<(), FormatError> {
        if self.n_vids != meta.n_vectors {
            return Err(FormatError::corrupt(
                path,
                40,
                format!(
                    "{} vids; the manifest has {} vectors",
                    self.n_vids, meta.n_vectors
                ),
            ));
        }
        let total = self.starts().last().copied().unwrap_or(0);
        if total.checked_sub(1) != Some(meta.data_sectors) {
            return Err(FormatError::corrupt(
                path,
                56,
                format!(
                    "segments end at data sector {total} − 1; the manifest has {} data sectors",
                    meta.data_sectors
                ),
            ));
        }
        for e in &self.segments {
            let name = e.name_str().unwrap_or_default();
            if !listed(name) {
                return Err(FormatError::corrupt(
                    path,
                    56,
                    format!("segment {name} is not listed in the manifest"),
                ));
            }
        }
        Ok(())
    }

    /// `B_k` of every segment and, last, `B_K`: segment k's data sector j is data sector
    /// `B_k + j` (its header sector is `B_k − 1`). Saturating: an absurd count cannot wrap.
    pub fn starts(&self) -> Vec<u64> {
        let mut out = Vec::with_capacity(self.segments.len() + 1);
        let mut b = 0u64;
        out.push(b);
        for e in &self.segments {
            b = b.saturating_add(1).saturating_add(e.data_sectors);
            out.push(b);
        }
        out
    }

    #[inline]
    pub fn is_dead(&self, vid: u64) -> bool {
        self.dead
            .get((vid / 64) as usize)
            .is_some_and(|w| w & (1 << (vid % 64)) != 0)
    }

    /// Dead vids.
    pub fn dead_count(&self) -> u64 {
        self.dead.iter().map(|w| u64::from(w.count_ones())).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Segments {
        Segments {
            segments: vec![
                SegmentEntry::new("data.m3", 10, 100).unwrap(),
                SegmentEntry::new("seg-3.m3", 4, 30).unwrap(),
            ],
            n_vids: 70,
            next_segment: 4,
            dead: vec![1 << 5, 1 << 2],
        }
    }

    #[test]
    fn round_trips_and_checks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("segments.m3");
        let s = sample();
        s.write(&p).unwrap();
        let back = Segments::read(&p).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.starts(), vec![0, 11, 16]);
        assert!(back.is_dead(5) && back.is_dead(66) && !back.is_dead(6));
        assert_eq!(back.dead_count(), 2);
        assert_eq!(back.segments[1].name_str(), Some("seg-3.m3"));
        let mut meta: IndexMeta = Zeroable::zeroed();
        meta.n_vectors = 70;
        meta.data_sectors = 15;
        let all = |_: &str| true;
        back.check_against(&meta, &all, &p).unwrap();
        meta.data_sectors = 16;
        assert!(back.check_against(&meta, &all, &p).is_err());
        meta.data_sectors = 15;
        let none = |n: &str| n != "seg-3.m3";
        let e = back
            .check_against(&meta, &none, &p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("seg-3.m3 is not listed"), "{e}");
    }

    #[test]
    fn every_flipped_or_cut_byte_is_a_typed_error_or_the_same_contents() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("segments.m3");
        let s = sample();
        s.write(&p).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x41;
            std::fs::write(&p, &b).unwrap();
            // The header is covered by its CRC; the sections by the manifest's CRC32C of the
            // whole file (read_listed). Here: never a panic, and a bad dead bit is refused.
            if let Ok(back) = Segments::read(&p) {
                assert!(i >= 72, "header byte {i} flipped and accepted");
                assert_eq!(back.segments.len(), 2);
            }
        }
        for cut in 0..bytes.len() {
            std::fs::write(&p, &bytes[..cut]).unwrap();
            assert!(Segments::read(&p).is_err(), "cut at {cut} accepted");
        }
        let mut bad = sample();
        bad.dead[1] |= 1 << 10; // vid 74 ≥ n_vids 70
        bad.write(&p).unwrap();
        assert!(Segments::read(&p).is_err());
    }
}

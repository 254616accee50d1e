//! `shards.m3`: the top-level file of a sharded index (docs/DISTRIBUTED.md): the list of its
//! shards (each a normal index directory beside it, named by its entry, with the length and
//! CRC32C of the shard's `manifest.m3` when the sharded index was published), which shard owns
//! each cluster, and for each training query of `hints.m3` the shards that hold one of its
//! answers. Written last when a sharded index is published, so a directory without a valid
//! `shards.m3` is not a sharded index. Byte layout: `docs/FORMAT.md`, "shards.m3".

use std::path::Path;

use bytemuck::{Pod, Zeroable};

use super::FormatError;
use super::file::{FileEntry, LayoutTable, SectionReader, SectionWriter, align8};
use super::header::{COMMON_HEADER_BYTES, FileKind};

pub const SHARDS_KIND: FileKind = FileKind {
    magic: *b"M3SHARDS",
    name: "shards",
    version_major: 1,
    version_minor: 0,
};

/// The file name of the top-level file of a sharded index.
pub const SHARDS_FILE: &str = "shards.m3";

/// Most shards a sharded index may have (the hint masks are 64-bit).
pub const MAX_SHARDS: usize = 64;

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct ShardsHeader {
    pub n_shards: u32,
    pub n_clusters: u32,
    pub n_vectors: u64,
    pub n_hint_queries: u32,
    pub body_crc32c: u32,
    pub shards_offset: u64,
    pub owners_offset: u64,
    pub hint_masks_offset: u64,
}

const _: () = assert!(size_of::<ShardsHeader>() == 48);

impl ShardsHeader {
    pub fn layout_table() -> LayoutTable {
        crate::layout_table!(
            COMMON_HEADER_BYTES,
            ShardsHeader,
            n_shards,
            n_clusters,
            n_vectors,
            n_hint_queries,
            body_crc32c,
            shards_offset,
            owners_offset,
            hint_masks_offset
        )
    }
}

/// The contents of `shards.m3`.
///
/// - `shards`: one entry per shard, in shard order: the shard's directory name (beside
///   `shards.m3`) and the length and CRC32C of its `manifest.m3`;
/// - `owners`: the shard of each cluster, in cluster order;
/// - `hint_masks`: per training query, bit `s` set when shard `s` holds one of its answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardTable {
    pub n_vectors: u64,
    pub shards: Vec<FileEntry>,
    pub owners: Vec<u32>,
    pub hint_masks: Vec<u64>,
}

/// The body: the three sections, each starting at an 8-byte boundary (zero padding), and
/// their offsets relative to the body's start.
fn body(shards: &[FileEntry], owners: &[u32], masks: &[u64]) -> (Vec<u8>, [u64; 3]) {
    let mut b = Vec::new();
    let mut offsets = [0u64; 3];
    for (i, part) in [
        bytemuck::cast_slice::<FileEntry, u8>(shards),
        bytemuck::cast_slice(owners),
        bytemuck::cast_slice(masks),
    ]
    .into_iter()
    .enumerate()
    {
        b.resize(align8(b.len() as u64) as usize, 0);
        offsets[i] = b.len() as u64;
        b.extend_from_slice(part);
    }
    (b, offsets)
}

impl ShardTable {
    /// The name of shard `s`'s directory.
    pub fn shard_dir_name(s: usize) -> String {
        format!("shard-{s:03}")
    }

    pub fn n_shards(&self) -> usize {
        self.shards.len()
    }

    /// Writes the file at `path` (through `path.partial`, fsynced, renamed into place, the
    /// parent directory fsynced): a reader sees the old file or the new one, never a part.
    pub fn write(&self, path: &Path) -> Result<FileEntry, FormatError> {
        self.check().map_err(FormatError::invalid)?;
        let mut w = SectionWriter::new(COMMON_HEADER_BYTES + size_of::<ShardsHeader>());
        let (bytes, rel) = body(&self.shards, &self.owners, &self.hint_masks);
        let first = w.push(&bytes);
        let header = ShardsHeader {
            n_shards: self.shards.len() as u32,
            n_clusters: self.owners.len() as u32,
            n_vectors: self.n_vectors,
            n_hint_queries: u32::try_from(self.hint_masks.len())
                .map_err(|_| FormatError::invalid("too many training queries"))?,
            body_crc32c: crc32c::crc32c(&bytes),
            shards_offset: first + rel[0],
            owners_offset: first + rel[1],
            hint_masks_offset: first + rel[2],
        };
        let partial = path.with_extension("m3.partial");
        let entry = w.finish(&partial, &SHARDS_KIND, &header, &[])?;
        std::fs::rename(&partial, path).map_err(|e| FormatError::io(path, e))?;
        if let Some(parent) = path.parent() {
            std::fs::File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(|e| FormatError::io(parent, e))?;
        }
        Ok(entry)
    }

    /// What [`Self::read`] refuses, as a message.
    fn check(&self) -> Result<(), String> {
        let s = self.shards.len();
        if s == 0 || s > MAX_SHARDS {
            return Err(format!("{s} shards; 1 to {MAX_SHARDS} are allowed"));
        }
        if let Some(i) = self.shards.iter().position(|e| e.name_str().is_none()) {
            return Err(format!("shard {i}: its name is not a plain file name"));
        }
        if let Some(c) = self.owners.iter().position(|&o| o as usize >= s) {
            return Err(format!(
                "cluster {c}: owner {} is not one of the {s} shards",
                self.owners[c]
            ));
        }
        let outside = if s == 64 { 0 } else { !0u64 << s };
        if let Some(q) = self.hint_masks.iter().position(|&m| m & outside != 0) {
            return Err(format!("training query {q}: its shard mask names no shard"));
        }
        Ok(())
    }

    /// Reads and checks the file: header, the body's CRC32C (every byte after the header),
    /// sections exactly where the writer puts them, shard names, owners below the shard count,
    /// masks naming shards only.
    pub fn read(path: &Path) -> Result<Self, FormatError> {
        let (r, h) = SectionReader::open::<ShardsHeader>(path, &SHARDS_KIND)?;
        let first = align8(r.common.header_bytes as u64);
        let whole = std::fs::read(path).map_err(|e| FormatError::io(path, e))?;
        if whole.len() as u64 != r.file_bytes || first > r.file_bytes {
            return Err(r.corrupt(16, "the file changed while it was read"));
        }
        if crc32c::crc32c(&whole[first as usize..]) != h.body_crc32c {
            return Err(r.corrupt(52, "the body's CRC32C does not match"));
        }
        let shards: Vec<FileEntry> = r.section(h.shards_offset, h.n_shards as u64, "shards")?;
        let owners: Vec<u32> = r.section(h.owners_offset, h.n_clusters as u64, "owners")?;
        let hint_masks: Vec<u64> =
            r.section(h.hint_masks_offset, h.n_hint_queries as u64, "hint masks")?;
        let (bytes, rel) = body(&shards, &owners, &hint_masks);
        let want = [first + rel[0], first + rel[1], first + rel[2]];
        if [h.shards_offset, h.owners_offset, h.hint_masks_offset] != want
            || first + bytes.len() as u64 != r.file_bytes
        {
            return Err(r.corrupt(56, "sections are not where the writer puts them"));
        }
        let table = Self {
            n_vectors: h.n_vectors,
            shards,
            owners,
            hint_masks,
        };
        table.check().map_err(|what| r.corrupt(32, what))?;
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> ShardTable {
        ShardTable {
            n_vectors: 1000,
            shards: (0..3)
                .map(|s| FileEntry::new(&ShardTable::shard_dir_name(s), 100 + s as u64, 7).unwrap())
                .collect(),
            owners: vec![0, 2, 1, 1, 0],
            hint_masks: vec![1, 6, 7],
        }
    }

    #[test]
    fn round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(SHARDS_FILE);
        table().write(&p).unwrap();
        assert_eq!(ShardTable::read(&p).unwrap(), table());
        assert!(!dir.path().join("shards.m3.partial").exists());
    }

    #[test]
    fn every_flipped_or_cut_byte_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(SHARDS_FILE);
        table().write(&p).unwrap();
        let good = std::fs::read(&p).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x41;
            std::fs::write(&p, &bad).unwrap();
            assert!(
                ShardTable::read(&p).is_err(),
                "flipped byte {i} was accepted"
            );
        }
        for len in 0..good.len() {
            std::fs::write(&p, &good[..len]).unwrap();
            assert!(ShardTable::read(&p).is_err(), "cut at {len} was accepted");
        }
    }

    #[test]
    fn refuses_owners_and_masks_outside_the_shards() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(SHARDS_FILE);
        let mut t = table();
        t.owners[1] = 3;
        assert!(t.write(&p).is_err());
        let mut t = table();
        t.hint_masks[0] = 8;
        assert!(t.write(&p).is_err());
    }
}

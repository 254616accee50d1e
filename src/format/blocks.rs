//! `blocks.m3`: the blocks of a multi-vector index (DESIGN §4.6): name, dimensions, spread σ_b,
//! build weight W_b and the scale c_b by which the stored vectors' block b was multiplied
//! (definitions in [`crate::multivec::scale`]). Present only in multi-vector indexes (manifest
//! flag bit 2). Byte layout: `docs/FORMAT.md`, "blocks.m3".

use std::path::Path;

use bytemuck::{Pod, Zeroable};

use super::FormatError;
use super::file::{FileEntry, LayoutTable, ListedFile, SectionReader, SectionWriter};
use super::header::{COMMON_HEADER_BYTES, FileKind};
use super::manifest::IndexMeta;
use crate::multivec::{BLOCK_NAME_BYTES, BlockLayout, check_block_name};

pub const BLOCKS_KIND: FileKind = FileKind {
    magic: *b"M3BLOCKS",
    name: "blocks",
    version_major: 1,
    version_minor: 0,
};

/// `flags` bit 0: the scales include the standardisation `1 / σ_b`.
pub const BLOCKS_FLAG_STANDARDIZED: u32 = 1;

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct BlocksHeader {
    pub n_blocks: u32,
    pub dim: u32,
    pub flags: u32,
    pub reserved: u32,
    pub table_offset: u64,
}

const _: () = assert!(size_of::<BlocksHeader>() == 24);

/// One block of the table.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct BlockEntry {
    /// ASCII name (letters, digits, `_`, `-`, `.`), zero padded.
    pub name: [u8; BLOCK_NAME_BYTES],
    pub first_dim: u32,
    pub dim: u32,
    pub spread: f32,
    pub weight: f32,
    pub scale: f32,
    pub reserved: u32,
}

const _: () = assert!(size_of::<BlockEntry>() == 56);

impl BlocksHeader {
    pub fn layout_table() -> LayoutTable {
        crate::layout_table!(
            COMMON_HEADER_BYTES,
            BlocksHeader,
            n_blocks,
            dim,
            flags,
            reserved,
            table_offset
        )
    }
}

impl BlockEntry {
    pub fn layout_table() -> LayoutTable {
        crate::layout_table!(
            0, BlockEntry, name, first_dim, dim, spread, weight, scale, reserved
        )
    }
}

/// One block of a multi-vector index.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BlockInfo {
    pub name: String,
    pub dim: usize,
    /// σ_b, > 0.
    pub spread: f32,
    /// Build weight W_b, > 0.
    pub weight: f32,
    /// c_b, > 0: stored block = c_b · raw block (after per-block normalisation under cosine).
    pub scale: f32,
}

/// The contents of `blocks.m3`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BlockTable {
    pub standardized: bool,
    pub blocks: Vec<BlockInfo>,
}

fn positive(v: f32) -> bool {
    v.is_finite() && v > 0.0
}

impl BlockTable {
    pub fn dim(&self) -> usize {
        self.blocks.iter().map(|b| b.dim).sum()
    }

    pub fn layout(&self) -> BlockLayout {
        let pairs: Vec<(&str, usize)> = self
            .blocks
            .iter()
            .map(|b| (b.name.as_str(), b.dim))
            .collect();
        BlockLayout::new(&pairs).expect("checked when written or read")
    }

    pub fn spreads(&self) -> Vec<f32> {
        self.blocks.iter().map(|b| b.spread).collect()
    }
    pub fn scales(&self) -> Vec<f32> {
        self.blocks.iter().map(|b| b.scale).collect()
    }
    pub fn weights(&self) -> Vec<f32> {
        self.blocks.iter().map(|b| b.weight).collect()
    }

    /// The reason a table is not valid, if any: names valid and distinct, dims ≥ 1, positive
    /// finite spread, weight and scale, the scale `√W_b / σ_b` (standardised) or `√W_b`.
    fn problem(&self) -> Option<String> {
        if self.blocks.is_empty() {
            return Some("no blocks".into());
        }
        let pairs: Vec<(&str, usize)> = self
            .blocks
            .iter()
            .map(|b| (b.name.as_str(), b.dim))
            .collect();
        if let Err(e) = BlockLayout::new(&pairs) {
            return Some(e.to_string());
        }
        self.blocks.iter().find_map(|b| {
            if !(positive(b.spread) && positive(b.weight) && positive(b.scale)) {
                return Some(format!(
                    "block '{}': spread {}, weight {}, scale {} must be finite and > 0",
                    b.name, b.spread, b.weight, b.scale
                ));
            }
            // c_b = √W_b / σ_b (standardised) or √W_b, as the build computes it.
            let want = if self.standardized {
                b.weight.sqrt() / b.spread
            } else {
                b.weight.sqrt()
            };
            ((b.scale - want).abs() > 1e-5 * want).then(|| {
                format!(
                    "block '{}': scale {} is not √weight{} = {want} (weight {}, spread {})",
                    b.name,
                    b.scale,
                    if self.standardized { " / spread" } else { "" },
                    b.weight,
                    b.spread
                )
            })
        })
    }

    pub fn write(&self, path: &Path) -> Result<FileEntry, FormatError> {
        if let Some(p) = self.problem() {
            return Err(FormatError::invalid(format!("blocks.m3: {p}")));
        }
        let mut entries = Vec::with_capacity(self.blocks.len());
        let mut first = 0u32;
        for b in &self.blocks {
            let mut name = [0u8; BLOCK_NAME_BYTES];
            name[..b.name.len()].copy_from_slice(b.name.as_bytes());
            let dim = u32::try_from(b.dim).map_err(|_| FormatError::invalid("block dim"))?;
            entries.push(BlockEntry {
                name,
                first_dim: first,
                dim,
                spread: b.spread,
                weight: b.weight,
                scale: b.scale,
                reserved: 0,
            });
            first = first
                .checked_add(dim)
                .ok_or_else(|| FormatError::invalid("block dims overflow"))?;
        }
        let mut w = SectionWriter::new(COMMON_HEADER_BYTES + size_of::<BlocksHeader>());
        let table_offset = w.push(&entries);
        let header = BlocksHeader {
            n_blocks: entries.len() as u32,
            dim: first,
            flags: if self.standardized {
                BLOCKS_FLAG_STANDARDIZED
            } else {
                0
            },
            reserved: 0,
            table_offset,
        };
        w.finish(path, &BLOCKS_KIND, &header, &[])
    }

    /// Reads and checks the file: names, contiguous dims, positive finite spreads, weights
    /// and scales.
    pub fn read(path: &Path) -> Result<Self, FormatError> {
        let (r, h) = SectionReader::open::<BlocksHeader>(path, &BLOCKS_KIND)?;
        Self::parse(&r, h)
    }

    /// [`Self::read`] of a listed file, with its length and CRC32C checked against the
    /// manifest.
    pub fn read_listed(f: &ListedFile) -> Result<Self, FormatError> {
        let (r, h) = f.reader::<BlocksHeader>(&BLOCKS_KIND)?;
        f.checked(&r, Self::parse(&r, h))
    }

    fn parse(r: &SectionReader, h: BlocksHeader) -> Result<Self, FormatError> {
        if h.n_blocks == 0 || h.dim == 0 {
            return Err(r.corrupt(32, "n_blocks or dim is 0"));
        }
        if h.flags & !BLOCKS_FLAG_STANDARDIZED != 0 {
            return Err(r.corrupt(40, format!("unknown flags {:#x}", h.flags)));
        }
        if h.n_blocks > h.dim {
            return Err(r.corrupt(32, "more blocks than dimensions"));
        }
        let entries: Vec<BlockEntry> =
            r.section(h.table_offset, h.n_blocks as u64, "block table")?;
        let mut blocks = Vec::with_capacity(entries.len());
        let mut first = 0u64;
        for (i, e) in entries.iter().enumerate() {
            let at = h.table_offset + (i * size_of::<BlockEntry>()) as u64;
            let len = e
                .name
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(BLOCK_NAME_BYTES);
            let name = std::str::from_utf8(&e.name[..len])
                .ok()
                .filter(|n| check_block_name(n).is_ok() && e.name[len..].iter().all(|&b| b == 0))
                .ok_or_else(|| r.corrupt(at, format!("block {i}: bad name")))?;
            if e.first_dim as u64 != first {
                return Err(r.corrupt(
                    at + 32,
                    format!("block {i}: first_dim {} but expected {first}", e.first_dim),
                ));
            }
            first += e.dim as u64;
            blocks.push(BlockInfo {
                name: name.to_owned(),
                dim: e.dim as usize,
                spread: e.spread,
                weight: e.weight,
                scale: e.scale,
            });
        }
        if first != h.dim as u64 {
            return Err(r.corrupt(
                36,
                format!("block dims add up to {first}, header says {}", h.dim),
            ));
        }
        let table = Self {
            standardized: h.flags & BLOCKS_FLAG_STANDARDIZED != 0,
            blocks,
        };
        if let Some(p) = table.problem() {
            return Err(r.corrupt(h.table_offset, p));
        }
        Ok(table)
    }

    pub fn check_against(&self, meta: &IndexMeta, path: &Path) -> Result<(), FormatError> {
        if self.dim() != meta.dim as usize {
            return Err(FormatError::corrupt(
                path,
                36,
                format!(
                    "blocks cover {} dims but manifest says {}",
                    self.dim(),
                    meta.dim
                ),
            ));
        }
        Ok(())
    }
}

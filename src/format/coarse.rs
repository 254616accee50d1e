//! `coarse.m3`: the coarse level of two-level routing over the base anchors (DESIGN §3 step 2,
//! `search::Router`): G coarse centres and the group of every anchor. Written by the
//! build when K is at least its two-level threshold, so opening an index does not rerun the
//! coarse k-means (seconds at K = 39,000, minutes at the K of a billion vectors). Optional,
//! an additive manifest entry like `keys.m3`: an index without it builds the level at open.
//! Byte layout: `docs/FORMAT.md`, "coarse.m3".

use std::path::Path;

use bytemuck::{Pod, Zeroable};

use super::file::{FileEntry, LayoutTable, ListedFile, SectionReader, SectionWriter, align8, mul};
use super::header::{COMMON_HEADER_BYTES, FileKind};
use super::{FormatError, IndexMeta};
use crate::data::Matrix;

pub const COARSE_KIND: FileKind = FileKind {
    magic: *b"M3COARSE",
    name: "coarse",
    version_major: 1,
    version_minor: 0,
};

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct CoarseHeader {
    pub n_anchors: u64,
    pub n_groups: u32,
    pub dim: u32,
    pub probe: u32,
    pub augmented: u32,
    pub coarse_offset: u64,
    pub labels_offset: u64,
}

const _: () = assert!(size_of::<CoarseHeader>() == 40);

impl CoarseHeader {
    pub fn layout_table() -> LayoutTable {
        crate::layout_table!(
            COMMON_HEADER_BYTES,
            CoarseHeader,
            n_anchors,
            n_groups,
            dim,
            probe,
            augmented,
            coarse_offset,
            labels_offset
        )
    }
}

/// The contents of `coarse.m3`. `coarse` is `G × dim`: `dim` is the index's dimension, plus one
/// when `augmented` (inner product and cosine, where the groups are made over the anchors
/// augmented to `[c, √(M² − |c|²)]`); `labels[j] < G` is anchor j's group.
#[derive(Debug, Clone, PartialEq)]
pub struct CoarseLevel {
    pub coarse: Matrix<f32>,
    pub labels: Vec<u32>,
    pub probe: u32,
    pub augmented: bool,
}

impl CoarseLevel {
    pub fn write(&self, path: &Path) -> Result<FileEntry, FormatError> {
        let header_bytes = COMMON_HEADER_BYTES + size_of::<CoarseHeader>();
        let mut w = SectionWriter::new(header_bytes);
        let coarse_offset = w.push(self.coarse.as_slice());
        let labels_offset = w.push(&self.labels);
        let header = CoarseHeader {
            n_anchors: self.labels.len() as u64,
            n_groups: self.coarse.rows() as u32,
            dim: self.coarse.dim() as u32,
            probe: self.probe,
            augmented: self.augmented as u32,
            coarse_offset,
            labels_offset,
        };
        w.finish(path, &COARSE_KIND, &header, &[])
    }

    /// Reads and checks the file: sections after the header, counts ≥ 1, centres finite,
    /// every anchor's group `< G`.
    pub fn read(path: &Path) -> Result<Self, FormatError> {
        let (r, h) = SectionReader::open::<CoarseHeader>(path, &COARSE_KIND)?;
        Self::parse(&r, h)
    }

    /// [`Self::read`] of a listed file, with its length and CRC32C checked against the
    /// manifest.
    pub fn read_listed(f: &ListedFile) -> Result<Self, FormatError> {
        let (r, h) = f.reader::<CoarseHeader>(&COARSE_KIND)?;
        f.checked(&r, Self::parse(&r, h))
    }

    fn parse(r: &SectionReader, h: CoarseHeader) -> Result<Self, FormatError> {
        let header_end = align8(r.common.header_bytes as u64);
        if h.coarse_offset < header_end || h.labels_offset < header_end {
            return Err(r.corrupt(56, "a section overlaps the header"));
        }
        if h.n_groups == 0 || h.dim == 0 || h.probe == 0 {
            return Err(r.corrupt(
                40,
                format!(
                    "{} groups of dimension {}, probe {}: each must be ≥ 1",
                    h.n_groups, h.dim, h.probe
                ),
            ));
        }
        if h.augmented > 1 {
            return Err(r.corrupt(52, format!("augmented flag {}", h.augmented)));
        }
        let count = mul(r, h.n_groups as u64, h.dim as u64, "coarse centres")?;
        let coarse: Vec<f32> = r.section(h.coarse_offset, count, "coarse centres")?;
        let labels: Vec<u32> = r.section(h.labels_offset, h.n_anchors, "anchor groups")?;
        if let Some(i) = coarse.iter().position(|v| !v.is_finite()) {
            return Err(r.corrupt(
                h.coarse_offset + 4 * i as u64,
                "a coarse centre is not finite",
            ));
        }
        if let Some(j) = labels.iter().position(|&g| g >= h.n_groups) {
            return Err(r.corrupt(
                h.labels_offset + 4 * j as u64,
                format!(
                    "anchor {j} in group {}, of {} groups",
                    labels[j], h.n_groups
                ),
            ));
        }
        Ok(Self {
            coarse: Matrix::from_vec(coarse, h.dim as usize)
                .map_err(|e| r.corrupt(44, e.to_string()))?,
            labels,
            probe: h.probe,
            augmented: h.augmented == 1,
        })
    }

    /// Checks the level against the manifest: one group per base anchor, the index's
    /// dimension (plus one when augmented, which inner product and cosine need and L2 must
    /// not have).
    pub fn check_against(&self, meta: &IndexMeta, path: &Path) -> Result<(), FormatError> {
        let bad = |at: u64, what: String| Err(FormatError::corrupt(path, at, what));
        if self.labels.len() as u64 != meta.n_clusters as u64 {
            return bad(
                32,
                format!(
                    "{} anchor groups; the manifest has {} clusters",
                    self.labels.len(),
                    meta.n_clusters
                ),
            );
        }
        let want_aug = meta.metric != 0;
        if self.augmented != want_aug {
            return bad(
                52,
                format!(
                    "augmented = {} for metric code {}",
                    self.augmented, meta.metric
                ),
            );
        }
        let want_dim = meta.dim as usize + usize::from(want_aug);
        if self.coarse.dim() != want_dim {
            return bad(
                44,
                format!(
                    "coarse dimension {}; the index needs {want_dim}",
                    self.coarse.dim()
                ),
            );
        }
        Ok(())
    }
}

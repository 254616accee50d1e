//! `stats.m3`: per-modality mean and variance (the LC-CMD calibration of DESIGN §4.3) and the
//! LID statistics of the base. Byte layout: `docs/FORMAT.md`, "stats.m3".

use std::path::Path;

use bytemuck::{Pod, Zeroable};

use super::FormatError;
use super::file::{FileEntry, LayoutTable, ListedFile, SectionReader, SectionWriter};
use super::header::{COMMON_HEADER_BYTES, FileKind};
use super::manifest::IndexMeta;

pub const STATS_KIND: FileKind = FileKind {
    magic: *b"M3STATS\0",
    name: "stats",
    version_major: 1,
    version_minor: 0,
};

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct StatsHeader {
    pub dim: u32,
    /// 1 when the query statistics were computed, 0 when they are zeros.
    pub has_query_stats: u32,
    pub base_count: u64,
    pub query_count: u64,
    pub lid_mean: f32,
    pub lid_std: f32,
    pub max_base_norm: f32,
    pub reserved: u32,
    pub base_mean_offset: u64,
    pub base_var_offset: u64,
    pub query_mean_offset: u64,
    pub query_var_offset: u64,
}

const _: () = assert!(size_of::<StatsHeader>() == 72);

impl StatsHeader {
    pub fn layout_table() -> LayoutTable {
        crate::layout_table!(
            COMMON_HEADER_BYTES,
            StatsHeader,
            dim,
            has_query_stats,
            base_count,
            query_count,
            lid_mean,
            lid_std,
            max_base_norm,
            reserved,
            base_mean_offset,
            base_var_offset,
            query_mean_offset,
            query_var_offset
        )
    }
}

/// The contents of `stats.m3`. The four vectors have `dim` elements; the query ones are zeros
/// when `has_query_stats` is false.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    pub base_count: u64,
    pub query_count: u64,
    pub has_query_stats: bool,
    pub lid_mean: f32,
    pub lid_std: f32,
    pub max_base_norm: f32,
    pub base_mean: Vec<f32>,
    pub base_var: Vec<f32>,
    pub query_mean: Vec<f32>,
    pub query_var: Vec<f32>,
}

impl Stats {
    pub fn dim(&self) -> usize {
        self.base_mean.len()
    }

    pub fn write(&self, path: &Path) -> Result<FileEntry, FormatError> {
        let d = self.base_mean.len();
        if d == 0
            || [&self.base_var, &self.query_mean, &self.query_var]
                .iter()
                .any(|v| v.len() != d)
        {
            return Err(FormatError::invalid(
                "stats vectors must all have dim ≥ 1 elements",
            ));
        }
        let mut w = SectionWriter::new(COMMON_HEADER_BYTES + size_of::<StatsHeader>());
        let base_mean_offset = w.push(&self.base_mean);
        let base_var_offset = w.push(&self.base_var);
        let query_mean_offset = w.push(&self.query_mean);
        let query_var_offset = w.push(&self.query_var);
        let header = StatsHeader {
            dim: u32::try_from(d).map_err(|_| FormatError::invalid("dim too large"))?,
            has_query_stats: self.has_query_stats as u32,
            base_count: self.base_count,
            query_count: self.query_count,
            lid_mean: self.lid_mean,
            lid_std: self.lid_std,
            max_base_norm: self.max_base_norm,
            reserved: 0,
            base_mean_offset,
            base_var_offset,
            query_mean_offset,
            query_var_offset,
        };
        w.finish(path, &STATS_KIND, &header, &[])
    }

    /// Reads and checks the file: every statistic finite, variances and norms ≥ 0.
    pub fn read(path: &Path) -> Result<Self, FormatError> {
        let (r, h) = SectionReader::open::<StatsHeader>(path, &STATS_KIND)?;
        Self::parse(&r, h)
    }

    /// [`Self::read`] of a listed file, with its length and CRC32C checked against the
    /// manifest.
    pub fn read_listed(f: &ListedFile) -> Result<Self, FormatError> {
        let (r, h) = f.reader::<StatsHeader>(&STATS_KIND)?;
        f.checked(&r, Self::parse(&r, h))
    }

    fn parse(r: &SectionReader, h: StatsHeader) -> Result<Self, FormatError> {
        if h.dim == 0 || h.has_query_stats > 1 {
            return Err(r.corrupt(32, "dim is 0 or has_query_stats is not 0/1"));
        }
        for (at, name, v, min) in [
            (56, "lid_mean", h.lid_mean, f32::MIN),
            (60, "lid_std", h.lid_std, 0.0),
            (64, "max_base_norm", h.max_base_norm, 0.0),
        ] {
            if !(v.is_finite() && v >= min) {
                return Err(r.corrupt(at, format!("{name} is {v}")));
            }
        }
        let d = h.dim as u64;
        let mut sections = Vec::with_capacity(4);
        for (offset, name, non_negative) in [
            (h.base_mean_offset, "base mean", false),
            (h.base_var_offset, "base variance", true),
            (h.query_mean_offset, "query mean", false),
            (h.query_var_offset, "query variance", true),
        ] {
            let v: Vec<f32> = r.section(offset, d, name)?;
            if let Some(i) = v
                .iter()
                .position(|x| !x.is_finite() || (non_negative && *x < 0.0))
            {
                return Err(r.corrupt(
                    offset + 4 * i as u64,
                    format!("{name} of dimension {i} is {}", v[i]),
                ));
            }
            sections.push(v);
        }
        let [base_mean, base_var, query_mean, query_var] =
            <[Vec<f32>; 4]>::try_from(sections).expect("four sections");
        Ok(Self {
            base_count: h.base_count,
            query_count: h.query_count,
            has_query_stats: h.has_query_stats == 1,
            lid_mean: h.lid_mean,
            lid_std: h.lid_std,
            max_base_norm: h.max_base_norm,
            base_mean,
            base_var,
            query_mean,
            query_var,
        })
    }

    pub fn check_against(&self, meta: &IndexMeta, path: &Path) -> Result<(), FormatError> {
        if self.dim() != meta.dim as usize {
            return Err(FormatError::corrupt(
                path,
                32,
                format!("dim {} but manifest says {}", self.dim(), meta.dim),
            ));
        }
        Ok(())
    }
}

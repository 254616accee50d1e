//! `hints.m3`: the training queries and, for each, the records of its exact top-`depth`
//! answers over the whole base (best first). A query's nearest training queries name, at
//! record resolution, where answers to queries like it live: the union of their answer lists
//! is a small candidate set that holds most of an out-of-distribution query's true
//! neighbours, wherever the clusters put them (docs/decisions/0007-training-query-hints.md).
//! Optional, an additive manifest entry like `coarse.m3`: an index built without training
//! queries (or with `--hint-depth 0`) has none. Byte layout: `docs/FORMAT.md`, "hints.m3".

use std::path::Path;

use bytemuck::{Pod, Zeroable};

use super::clusters::NO_ID;
use super::file::{FileEntry, LayoutTable, ListedFile, SectionReader, SectionWriter, align8, mul};
use super::header::{COMMON_HEADER_BYTES, FileKind};
use super::{FormatError, IndexMeta};
use crate::data::Matrix;

pub const HINTS_KIND: FileKind = FileKind {
    magic: *b"M3HINTS\0",
    name: "hints",
    version_major: 1,
    version_minor: 0,
};

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct HintsHeader {
    pub n_queries: u32,
    pub dim: u32,
    pub depth: u32,
    pub reserved: u32,
    pub queries_offset: u64,
    pub answers_offset: u64,
}

const _: () = assert!(size_of::<HintsHeader>() == 32);

impl HintsHeader {
    pub fn layout_table() -> LayoutTable {
        crate::layout_table!(
            COMMON_HEADER_BYTES,
            HintsHeader,
            n_queries,
            dim,
            depth,
            reserved,
            queries_offset,
            answers_offset
        )
    }
}

/// The contents of `hints.m3`: `queries` is `n × dim` (training queries in the index's
/// coordinates: normalised under cosine, block-scaled for multi-vector bases), `answers` is
/// `n × depth` record ids, nearest first, [`NO_ID`] padding when the base has fewer rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Hints {
    pub queries: Matrix<f32>,
    pub answers: Matrix<u32>,
}

impl Hints {
    pub fn write(&self, path: &Path) -> Result<FileEntry, FormatError> {
        if self.queries.rows() != self.answers.rows() {
            return Err(FormatError::invalid(format!(
                "{} training queries but {} answer lists",
                self.queries.rows(),
                self.answers.rows()
            )));
        }
        let mut w = SectionWriter::new(COMMON_HEADER_BYTES + size_of::<HintsHeader>());
        let queries_offset = w.push(self.queries.as_slice());
        let answers_offset = w.push(self.answers.as_slice());
        let header = HintsHeader {
            n_queries: u32::try_from(self.queries.rows())
                .map_err(|_| FormatError::invalid("too many training queries"))?,
            dim: self.queries.dim() as u32,
            depth: self.answers.dim() as u32,
            reserved: 0,
            queries_offset,
            answers_offset,
        };
        w.finish(path, &HINTS_KIND, &header, &[])
    }

    pub fn read(path: &Path) -> Result<Self, FormatError> {
        let (r, h) = SectionReader::open::<HintsHeader>(path, &HINTS_KIND)?;
        Self::parse(&r, h)
    }

    /// [`Self::read`] of a listed file, with its length and CRC32C checked against the
    /// manifest.
    pub fn read_listed(f: &ListedFile) -> Result<Self, FormatError> {
        let (r, h) = f.reader::<HintsHeader>(&HINTS_KIND)?;
        f.checked(&r, Self::parse(&r, h))
    }

    fn parse(r: &SectionReader, h: HintsHeader) -> Result<Self, FormatError> {
        if h.dim == 0 || h.depth == 0 {
            return Err(r.corrupt(36, "dim and depth must be ≥ 1"));
        }
        let n = h.n_queries as u64;
        // The layout is the writer's, exactly: the queries right after the header, the answers
        // right after them, nothing after. So a count changed with every checksum recomputed
        // (fewer training queries, a shorter depth) cannot read as a smaller valid file.
        let queries_bytes = mul(
            r,
            mul(r, n, h.dim as u64, "training queries")?,
            4,
            "queries",
        )?;
        let answers_bytes = mul(r, mul(r, n, h.depth as u64, "answer lists")?, 4, "answers")?;
        let want_queries = align8(r.common.header_bytes as u64);
        let want_answers = align8(want_queries.saturating_add(queries_bytes));
        if h.queries_offset != want_queries || h.answers_offset != want_answers {
            return Err(r.corrupt(
                48,
                format!(
                    "sections at {} and {}; {} training queries of dim {} are at {want_queries} \
                     and {want_answers}",
                    h.queries_offset, h.answers_offset, n, h.dim
                ),
            ));
        }
        if want_answers.saturating_add(answers_bytes) != r.file_bytes {
            return Err(r.corrupt(
                40,
                format!(
                    "{n} answer lists of depth {} end at byte {}, the file has {}",
                    h.depth,
                    want_answers.saturating_add(answers_bytes),
                    r.file_bytes
                ),
            ));
        }
        let queries: Vec<f32> = r.section(
            h.queries_offset,
            mul(r, n, h.dim as u64, "training queries")?,
            "training queries",
        )?;
        if let Some(i) = queries.iter().position(|v| !v.is_finite()) {
            return Err(r.corrupt(
                h.queries_offset + 4 * i as u64,
                format!("training query {} is not finite", i / h.dim as usize),
            ));
        }
        let answers: Vec<u32> = r.section(
            h.answers_offset,
            mul(r, n, h.depth as u64, "answer lists")?,
            "answer lists",
        )?;
        let to_err = |e| r.corrupt(32, format!("{e}"));
        Ok(Self {
            queries: Matrix::from_vec(queries, h.dim as usize).map_err(to_err)?,
            answers: Matrix::from_vec(answers, h.depth as usize).map_err(to_err)?,
        })
    }

    /// Checks against the manifest: the index's dimension, and every answer a record id
    /// `< n_records` (or [`NO_ID`]).
    pub fn check_against(&self, meta: &IndexMeta, path: &Path) -> Result<(), FormatError> {
        if self.queries.dim() != meta.dim as usize {
            return Err(FormatError::corrupt(
                path,
                36,
                format!(
                    "training queries of dim {}, the index has dim {}",
                    self.queries.dim(),
                    meta.dim
                ),
            ));
        }
        let answers = self.answers.as_slice();
        if let Some(i) = answers
            .iter()
            .position(|&r| r != NO_ID && r as u64 >= meta.n_records)
        {
            return Err(FormatError::corrupt(
                path,
                32,
                format!(
                    "answer {i}: record {} ≥ n_records {}",
                    answers[i], meta.n_records
                ),
            ));
        }
        Ok(())
    }

    /// Training queries held.
    pub fn len(&self) -> usize {
        self.queries.rows()
    }

    pub fn is_empty(&self) -> bool {
        self.queries.rows() == 0
    }

    /// Answers stored per training query.
    pub fn depth(&self) -> usize {
        self.answers.dim()
    }

    /// Bytes this holds in RAM.
    pub fn heap_bytes(&self) -> usize {
        self.queries.as_slice().len() * 4 + self.answers.as_slice().len() * 4
    }
}

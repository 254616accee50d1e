//! `pq.m3`: product-quantisation codebooks over variable-width subspaces, one code per stored
//! record (record order), and per-record correction and error terms. Byte layout:
//! `docs/FORMAT.md`, "pq.m3".
//!
//! `refine.m3` (the refinement codes, decision 0008) has the same layout under its own kind:
//! a second quantizer over the same subspaces, whose codes encode what the first one left,
//! `x − c − r̂₁`. Every function here takes the kind it reads or writes.

use std::path::Path;

use bytemuck::{Pod, Zeroable};

use super::FormatError;
use super::file::{FileEntry, LayoutTable, ListedFile, SectionReader, SectionWriter, mul};
use super::header::{COMMON_HEADER_BYTES, FileKind};
use super::manifest::IndexMeta;
use super::streamed::StreamedSections;
use crate::data::Matrix;

pub const PQ_KIND: FileKind = FileKind {
    magic: *b"M3PQ\0\0\0\0",
    name: "pq",
    version_major: 1,
    version_minor: 0,
};

/// `refine.m3`: the same layout as `pq.m3` (docs/FORMAT.md, "refine.m3").
pub const REFINE_KIND: FileKind = FileKind {
    magic: *b"M3REFINE",
    name: "refine",
    version_major: 1,
    version_minor: 0,
};

/// Codewords per subspace (codes are one byte).
pub const PQ_CODEWORDS: u32 = 256;
/// `flags` bit 0: codes encode the residual to the record's cluster centroid.
pub const PQ_FLAG_RESIDUAL: u32 = 1;

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct PqHeader {
    pub dim: u32,
    pub subspaces: u32,
    pub codewords: u32,
    pub flags: u32,
    pub n_records: u64,
    pub bounds_offset: u64,
    pub codebooks_offset: u64,
    pub codes_offset: u64,
    pub correction_offset: u64,
    pub error_offset: u64,
}

const _: () = assert!(size_of::<PqHeader>() == 64);

impl PqHeader {
    pub fn layout_table() -> LayoutTable {
        crate::layout_table!(
            COMMON_HEADER_BYTES,
            PqHeader,
            dim,
            subspaces,
            codewords,
            flags,
            n_records,
            bounds_offset,
            codebooks_offset,
            codes_offset,
            correction_offset,
            error_offset
        )
    }
}

/// `pq.m3` written record by record ([`PqFile::writer`]).
pub struct PqFileWriter {
    w: StreamedSections,
    header: PqHeader,
    kind: &'static FileKind,
}

impl PqFileWriter {
    /// Appends the next record's code (`subspaces` bytes), correction and error.
    pub fn push(&mut self, code: &[u8], correction: f32, error: f32) -> Result<(), FormatError> {
        if code.len() != self.header.subspaces as usize {
            return Err(FormatError::invalid(format!(
                "pq code of {} bytes; the file has {} subspaces",
                code.len(),
                self.header.subspaces
            )));
        }
        self.w.append(2, code)?;
        self.w.append(3, &[correction])?;
        self.w.append(4, &[error])
    }

    /// Fails unless exactly `n_records` records were pushed.
    pub fn finish(self) -> Result<FileEntry, FormatError> {
        self.w.finish(self.kind, &self.header, &[])
    }
}

/// The contents of `pq.m3`.
///
/// - `bounds`: `subspaces + 1` dimension boundaries, `0 = b₀ < b₁ < … = dim`;
/// - `codebooks`: for each subspace `m`, `256 × (b_{m+1} − b_m)` floats (256·dim in all);
/// - `codes`: `n_records × subspaces`;
/// - `correction`, `error`: one float per record.
#[derive(Debug, Clone, PartialEq)]
pub struct PqFile {
    pub bounds: Vec<u32>,
    pub codebooks: Vec<f32>,
    pub codes: Matrix<u8>,
    pub correction: Vec<f32>,
    pub error: Vec<f32>,
    pub residual: bool,
}

/// The per-record errors of `r`: N distances (finite, ≥ 0).
fn read_error_section(r: &SectionReader, h: &PqHeader) -> Result<Vec<f32>, FormatError> {
    let error: Vec<f32> = r.section(h.error_offset, h.n_records, "error")?;
    if let Some(i) = error.iter().position(|e| !e.is_finite() || *e < 0.0) {
        return Err(r.corrupt(
            h.error_offset + 4 * i as u64,
            format!("record {i}: error {} is not a distance", error[i]),
        ));
    }
    Ok(error)
}

/// Checks `bounds` and returns `dim`.
fn check_bounds(bounds: &[u32]) -> Result<u32, String> {
    if bounds.len() < 2 || bounds[0] != 0 || bounds.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!(
            "subspace bounds {bounds:?} are not 0 = b0 < b1 < … "
        ));
    }
    Ok(bounds[bounds.len() - 1])
}

impl PqFile {
    pub fn dim(&self) -> usize {
        self.bounds.last().copied().unwrap_or(0) as usize
    }

    pub fn subspaces(&self) -> usize {
        self.bounds.len().saturating_sub(1)
    }

    pub fn n_records(&self) -> usize {
        self.codes.rows()
    }

    /// Codebook of subspace `m`: 256 rows of `b_{m+1} − b_m` floats.
    pub fn codebook(&self, m: usize) -> &[f32] {
        let cw = PQ_CODEWORDS as usize;
        let start = self.bounds[m] as usize * cw;
        &self.codebooks[start..self.bounds[m + 1] as usize * cw]
    }

    pub fn write(&self, path: &Path) -> Result<FileEntry, FormatError> {
        self.write_as(path, &PQ_KIND)
    }

    /// [`Self::write`] under `kind` (`pq.m3` or `refine.m3`).
    pub fn write_as(&self, path: &Path, kind: &FileKind) -> Result<FileEntry, FormatError> {
        let dim = check_bounds(&self.bounds).map_err(FormatError::invalid)?;
        let n = self.codes.rows();
        if self.codes.dim() != self.subspaces()
            || self.codebooks.len() != dim as usize * PQ_CODEWORDS as usize
            || self.correction.len() != n
            || self.error.len() != n
        {
            return Err(FormatError::invalid(
                "pq codes, codebooks, correction or error do not match the bounds",
            ));
        }
        let mut w = SectionWriter::new(COMMON_HEADER_BYTES + size_of::<PqHeader>());
        let bounds_offset = w.push(&self.bounds);
        let codebooks_offset = w.push(&self.codebooks);
        let codes_offset = w.push(self.codes.as_slice());
        let correction_offset = w.push(&self.correction);
        let error_offset = w.push(&self.error);
        let header = PqHeader {
            dim,
            subspaces: self.subspaces() as u32,
            codewords: PQ_CODEWORDS,
            flags: if self.residual { PQ_FLAG_RESIDUAL } else { 0 },
            n_records: n as u64,
            bounds_offset,
            codebooks_offset,
            codes_offset,
            correction_offset,
            error_offset,
        };
        w.finish(path, kind, &header, &[])
    }

    /// A writer that takes the `n_records` codes, corrections and errors record by record and
    /// writes the same bytes as [`Self::write`] without holding them (the build streams them
    /// out of its sort).
    pub fn writer(
        path: &Path,
        bounds: &[u32],
        codebooks: &[f32],
        n_records: u64,
        residual: bool,
    ) -> Result<PqFileWriter, FormatError> {
        Self::writer_as(path, &PQ_KIND, bounds, codebooks, n_records, residual)
    }

    /// [`Self::writer`] under `kind` (`pq.m3` or `refine.m3`).
    pub fn writer_as(
        path: &Path,
        kind: &'static FileKind,
        bounds: &[u32],
        codebooks: &[f32],
        n_records: u64,
        residual: bool,
    ) -> Result<PqFileWriter, FormatError> {
        let dim = check_bounds(bounds).map_err(FormatError::invalid)?;
        if codebooks.len() != dim as usize * PQ_CODEWORDS as usize {
            return Err(FormatError::invalid("pq codebooks do not match the bounds"));
        }
        let subspaces = bounds.len() as u64 - 1;
        let (mut w, offsets) = StreamedSections::create(
            path,
            COMMON_HEADER_BYTES + size_of::<PqHeader>(),
            &[
                4 * bounds.len() as u64,
                4 * codebooks.len() as u64,
                n_records * subspaces,
                4 * n_records,
                4 * n_records,
            ],
        )?;
        w.append(0, bounds)?;
        w.append(1, codebooks)?;
        Ok(PqFileWriter {
            w,
            kind,
            header: PqHeader {
                dim,
                subspaces: subspaces as u32,
                codewords: PQ_CODEWORDS,
                flags: if residual { PQ_FLAG_RESIDUAL } else { 0 },
                n_records,
                bounds_offset: offsets[0],
                codebooks_offset: offsets[1],
                codes_offset: offsets[2],
                correction_offset: offsets[3],
                error_offset: offsets[4],
            },
        })
    }

    /// Reads and checks the file: bounds, section sizes, codebooks and per-record corrections
    /// finite, errors finite and ≥ 0 (every code byte names one of the 256 codewords).
    pub fn read(path: &Path) -> Result<Self, FormatError> {
        let (r, h) = SectionReader::open::<PqHeader>(path, &PQ_KIND)?;
        Self::parse(&r, h)
    }

    /// [`Self::read`] of a listed file, with its length and CRC32C checked against the
    /// manifest.
    pub fn read_listed(f: &ListedFile) -> Result<Self, FormatError> {
        Self::read_listed_as(f, &PQ_KIND)
    }

    /// [`Self::read_listed`] of a file of `kind` (`pq.m3` or `refine.m3`).
    pub fn read_listed_as(f: &ListedFile, kind: &FileKind) -> Result<Self, FormatError> {
        let (r, h) = f.reader::<PqHeader>(kind)?;
        f.checked(&r, Self::parse(&r, h))
    }

    /// [`Self::read`] of a file of `kind`.
    pub fn read_as(path: &Path, kind: &FileKind) -> Result<Self, FormatError> {
        let (r, h) = SectionReader::open::<PqHeader>(path, kind)?;
        Self::parse(&r, h)
    }

    fn parse(r: &SectionReader, h: PqHeader) -> Result<Self, FormatError> {
        if h.codewords != PQ_CODEWORDS || h.flags & !PQ_FLAG_RESIDUAL != 0 {
            return Err(r.corrupt(40, "codewords must be 256 and flags ⊆ {residual}"));
        }
        if h.subspaces == 0 || h.subspaces > h.dim {
            return Err(r.corrupt(36, format!("{} subspaces for dim {}", h.subspaces, h.dim)));
        }
        let bounds = r.section::<u32>(h.bounds_offset, h.subspaces as u64 + 1, "bounds")?;
        match check_bounds(&bounds) {
            Ok(d) if d == h.dim => {}
            Ok(d) => return Err(r.corrupt(h.bounds_offset, format!("bounds end at {d} ≠ dim"))),
            Err(e) => return Err(r.corrupt(h.bounds_offset, e)),
        }
        let n = h.n_records;
        let codebook_len = mul(r, PQ_CODEWORDS as u64, h.dim as u64, "codebooks")?;
        let codes_len = mul(r, n, h.subspaces as u64, "codes")?;
        // Check every section before allocating any of them.
        r.check_section::<f32>(h.codebooks_offset, codebook_len, "codebooks")?;
        r.check_section::<u8>(h.codes_offset, codes_len, "codes")?;
        r.check_section::<f32>(h.correction_offset, n, "correction")?;
        r.check_section::<f32>(h.error_offset, n, "error")?;
        let codebooks: Vec<f32> = r.section(h.codebooks_offset, codebook_len, "codebooks")?;
        if let Some(i) = codebooks.iter().position(|v| !v.is_finite()) {
            return Err(r.corrupt(
                h.codebooks_offset + 4 * i as u64,
                format!(
                    "codebook value {i} is {}, not a finite number",
                    codebooks[i]
                ),
            ));
        }
        let codes = r.section::<u8>(h.codes_offset, codes_len, "codes")?;
        let correction: Vec<f32> = r.section(h.correction_offset, n, "correction")?;
        if let Some(i) = correction.iter().position(|v| !v.is_finite()) {
            return Err(r.corrupt(
                h.correction_offset + 4 * i as u64,
                format!("record {i}: correction {} is not finite", correction[i]),
            ));
        }
        let error = read_error_section(r, &h)?;
        Ok(Self {
            codebooks,
            codes: Matrix::from_vec(codes, h.subspaces as usize)
                .map_err(|e| r.corrupt(36, format!("{e}")))?,
            correction,
            error,
            residual: h.flags & PQ_FLAG_RESIDUAL != 0,
            bounds,
        })
    }

    /// Only the per-record quantisation errors (`|x − x̂|`), without loading the codes: what
    /// exact search needs besides what an open index holds.
    pub fn read_error(path: &Path) -> Result<Vec<f32>, FormatError> {
        let (r, h) = SectionReader::open::<PqHeader>(path, &PQ_KIND)?;
        read_error_section(&r, &h)
    }

    /// [`Self::read_error`] of a listed file (already checked whole when the index was opened,
    /// so its CRC is not computed again).
    pub fn read_error_listed(f: &ListedFile) -> Result<Vec<f32>, FormatError> {
        let (r, h) = f.reader::<PqHeader>(&PQ_KIND)?;
        read_error_section(&r, &h)
    }

    /// A `refine.m3` against the index's `pq.m3`: same records, dimension and subspace
    /// bounds (a query's block spans and tables line up), residual codes.
    pub fn check_refines(&self, pq: &PqFile, path: &Path) -> Result<(), FormatError> {
        if self.bounds != pq.bounds || self.n_records() != pq.n_records() || !self.residual {
            return Err(FormatError::corrupt(
                path,
                32,
                format!(
                    "refinement codes for {} records over bounds of {} subspaces (residual {}); \
                     pq.m3 has {} records over {} subspaces",
                    self.n_records(),
                    self.subspaces(),
                    self.residual,
                    pq.n_records(),
                    pq.subspaces()
                ),
            ));
        }
        Ok(())
    }

    pub fn check_against(&self, meta: &IndexMeta, path: &Path) -> Result<(), FormatError> {
        if self.dim() != meta.dim as usize
            || self.subspaces() != meta.pq_subspaces as usize
            || self.n_records() as u64 != meta.n_records
        {
            return Err(FormatError::corrupt(
                path,
                32,
                format!(
                    "dim {}, {} subspaces, {} records; manifest says {}, {}, {}",
                    self.dim(),
                    self.subspaces(),
                    self.n_records(),
                    meta.dim,
                    meta.pq_subspaces,
                    meta.n_records
                ),
            ));
        }
        Ok(())
    }
}

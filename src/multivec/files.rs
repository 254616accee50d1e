//! A base (or query set) given as one file per block: [`BlockFiles`] reads the same row range
//! from every file and returns the rows concatenated, so a multi-block base is streamed exactly
//! like a single file and never written out concatenated.

use std::path::{Path, PathBuf};

use super::{BlockError, BlockLayout};
use crate::data::{DataError, Matrix, VectorFile};

/// Open block files with equal row counts, in block order.
#[derive(Debug)]
pub struct BlockFiles {
    layout: BlockLayout,
    files: Vec<VectorFile>,
    rows: u64,
}

impl BlockFiles {
    /// Opens `(name, path)` pairs in block order. Errors: a file that cannot be opened (the
    /// error names it), row counts that differ (names both files), bad or repeated names.
    pub fn open(blocks: &[(String, PathBuf)]) -> Result<Self, BlockError> {
        let files: Vec<VectorFile> = blocks
            .iter()
            .map(|(_, p)| VectorFile::open(p))
            .collect::<Result<_, _>>()?;
        let dims: Vec<(&str, usize)> = blocks
            .iter()
            .zip(&files)
            .map(|((n, _), f)| (n.as_str(), f.dim()))
            .collect();
        let layout = BlockLayout::new(&dims)?;
        let rows = files[0].rows();
        for (b, f) in files.iter().enumerate().skip(1) {
            if f.rows() != rows {
                return Err(BlockError::RowCount {
                    block: blocks[b].0.clone(),
                    path: f.path().to_path_buf(),
                    found: f.rows(),
                    first_block: blocks[0].0.clone(),
                    first_path: files[0].path().to_path_buf(),
                    expected: rows,
                });
            }
        }
        Ok(Self {
            layout,
            files,
            rows,
        })
    }

    /// Names and dimension ranges of the blocks.
    pub fn layout(&self) -> &BlockLayout {
        &self.layout
    }
    /// Rows (the same in every file).
    pub fn rows(&self) -> u64 {
        self.rows
    }
    /// Dimension of a concatenated row.
    pub fn dim(&self) -> usize {
        self.layout.dim()
    }
    /// The file of block `b`.
    pub fn file(&self, b: usize) -> &VectorFile {
        &self.files[b]
    }
    /// The path of block `b`'s file.
    pub fn path(&self, b: usize) -> &Path {
        self.files[b].path()
    }

    /// Rows `first .. first + count` of every block, concatenated (f32; checked finite).
    pub fn read_rows_f32(&self, first: u64, count: usize) -> Result<Matrix<f32>, DataError> {
        let dim = self.dim();
        let mut out = vec![0f32; count * dim];
        let mut buf = Vec::new();
        for (b, f) in self.files.iter().enumerate() {
            f.read_rows_f32(first, count, &mut buf)?;
            let r = self.layout.range(b);
            for (dst, src) in out.chunks_exact_mut(dim).zip(buf.chunks_exact(r.len())) {
                dst[r.clone()].copy_from_slice(src);
            }
        }
        Matrix::from_vec(out, dim)
    }

    /// Every row in chunks of at most `rows_per_chunk`: `(first_row, rows)`.
    pub fn chunks_f32(
        &self,
        rows_per_chunk: usize,
    ) -> impl Iterator<Item = Result<(u64, Matrix<f32>), DataError>> + '_ {
        let step = rows_per_chunk.max(1) as u64;
        let mut next = 0u64;
        let mut failed = false;
        std::iter::from_fn(move || {
            if failed || next >= self.rows {
                return None;
            }
            let first = next;
            let count = (self.rows - first).min(step) as usize;
            next += count as u64;
            let r = self.read_rows_f32(first, count);
            failed = r.is_err();
            Some(r.map(|m| (first, m)))
        })
    }
}

/// Query rows given per block for a subset of an index's blocks: the rows concatenated in the
/// index's block order (absent blocks are zeros) and which blocks are present.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockQueries {
    /// One row per query: the given blocks' values, zeros for the others.
    pub rows: Matrix<f32>,
    /// `present[b]`: block b was given.
    pub present: Vec<bool>,
}

impl BlockQueries {
    /// Reads `(name, path)` query files against `layout`: every name must be a block of the
    /// layout (once), every file must have that block's dimension, all the same rows.
    /// `max_rows` keeps the first rows only.
    pub fn read(
        layout: &BlockLayout,
        given: &[(String, PathBuf)],
        max_rows: Option<u64>,
    ) -> Result<Self, BlockError> {
        if given.is_empty() {
            return Err(BlockError::NoBlocks("give at least one --query-block"));
        }
        let mut present = vec![false; layout.len()];
        let mut parts: Vec<(usize, Matrix<f32>, PathBuf)> = Vec::with_capacity(given.len());
        for (name, path) in given {
            let b = layout.position(name)?;
            if std::mem::replace(&mut present[b], true) {
                return Err(BlockError::DuplicateBlock { name: name.clone() });
            }
            let f = VectorFile::open(path)?;
            if f.dim() != layout.blocks()[b].dim {
                return Err(BlockError::BlockDim {
                    block: name.clone(),
                    what: format!("query file {}", path.display()),
                    expected: layout.blocks()[b].dim,
                    found: f.dim(),
                });
            }
            let n = max_rows.map_or(f.rows(), |m| m.min(f.rows()));
            if let Some((b0, m0, _)) = parts.first()
                && m0.rows() as u64 != n
            {
                return Err(BlockError::QueryRows {
                    block: name.clone(),
                    path: path.clone(),
                    found: n,
                    first_block: layout.blocks()[*b0].name.clone(),
                    expected: m0.rows() as u64,
                });
            }
            let mut v = Vec::new();
            f.read_rows_f32(0, n as usize, &mut v)?;
            parts.push((b, Matrix::from_vec(v, f.dim())?, path.clone()));
        }
        let nq = parts[0].1.rows();
        let dim = layout.dim();
        let mut rows = vec![0f32; nq * dim];
        for (b, m, _) in &parts {
            let r = layout.range(*b);
            for (dst, src) in rows.chunks_exact_mut(dim).zip(m.view().iter_rows()) {
                dst[r.clone()].copy_from_slice(src);
            }
        }
        Ok(Self {
            rows: Matrix::from_vec(rows, dim)?,
            present,
        })
    }
}

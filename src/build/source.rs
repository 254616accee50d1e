//! Where the build's base rows come from: one vector file, or one file per block of a
//! multi-vector base ([`crate::multivec::BlockFiles`], read as concatenated rows). Either way
//! the rows are streamed in chunks and handed to the stages in the build's coordinates:
//! normalised under cosine (per block for a multi-vector base) and, once the statistics pass
//! has fixed them, multiplied by the block scales (DESIGN §4.6, [`crate::multivec::scale`]).

use std::path::{Path, PathBuf};

use super::{BuildError, BuildParams};
use crate::data::{DType, Element, Matrix, VectorFile, validate};
use crate::distance::Metric;
use crate::multivec::scale::{normalize_blocks, scale_blocks};
use crate::multivec::{BlockFiles, BlockLayout};

/// The base of a build.
#[doc(hidden)]
#[derive(Debug)]
pub enum BaseSource {
    Single(VectorFile),
    /// Several files read as one, rows numbered by concatenation (`params.more_base`).
    Concat(ConcatFiles),
    Blocks {
        files: BlockFiles,
        /// Block scales c_b, once known (after the statistics pass).
        scales: Option<Vec<f32>>,
    },
}

impl BaseSource {
    /// Opens `params.blocks` when set, else `params.base`.
    pub fn open(params: &BuildParams) -> Result<Self, BuildError> {
        match &params.blocks {
            None if !params.more_base.is_empty() => {
                let mut paths = vec![params.base.as_path()];
                paths.extend(params.more_base.iter().map(PathBuf::as_path));
                Ok(Self::Concat(ConcatFiles::open(&paths)?))
            }
            None => Ok(Self::Single(VectorFile::open(&params.base)?)),
            Some(_) if !params.more_base.is_empty() => Err(BuildError::param(
                "base",
                "several base files and --block do not go together",
            )),
            Some(b) => {
                let pairs: Vec<(String, PathBuf)> = b
                    .blocks
                    .iter()
                    .map(|i| (i.name.clone(), i.path.clone()))
                    .collect();
                if pairs.is_empty() {
                    return Err(BuildError::param(
                        "blocks",
                        "a multi-vector build needs at least one block",
                    ));
                }
                for i in &b.blocks {
                    crate::multivec::check_weight(&i.name, i.weight, true)?;
                }
                Ok(Self::Blocks {
                    files: BlockFiles::open(&pairs)?,
                    scales: None,
                })
            }
        }
    }

    /// Rows of the base.
    pub fn rows(&self) -> u64 {
        match self {
            Self::Single(f) => f.rows(),
            Self::Concat(c) => c.rows(),
            Self::Blocks { files, .. } => files.rows(),
        }
    }

    /// Dimension of a row (all blocks together for a multi-vector base).
    pub fn dim(&self) -> usize {
        match self {
            Self::Single(f) => f.dim(),
            Self::Concat(c) => c.files[0].dim(),
            Self::Blocks { files, .. } => files.dim(),
        }
    }

    /// The blocks of a multi-vector base.
    pub fn layout(&self) -> Option<&BlockLayout> {
        match self {
            Self::Single(_) | Self::Concat(_) => None,
            Self::Blocks { files, .. } => Some(files.layout()),
        }
    }

    /// The base file (the first block's for a multi-vector base), for messages.
    pub fn path(&self) -> &Path {
        match self {
            Self::Single(f) => f.path(),
            Self::Concat(c) => c.files[0].path(),
            Self::Blocks { files, .. } => files.path(0),
        }
    }

    /// Sets the block scales applied by [`Self::prepare_rows`] from now on.
    pub fn set_scales(&mut self, s: Vec<f32>) {
        if let Self::Blocks { scales, .. } = self {
            *scales = Some(s);
        }
    }

    /// The element type stored in records: the base's own, except under cosine and for
    /// multi-vector bases (scaled blocks), where f32 vectors are stored.
    pub fn stored_dtype(&self, metric: Metric) -> DType {
        match self {
            Self::Single(f) if metric != Metric::Cosine => f.dtype(),
            Self::Concat(c) if metric != Metric::Cosine => c.files[0].dtype(),
            _ => DType::F32,
        }
    }

    /// Brings raw rows (`first` is the id of row 0) into the build's coordinates: normalised
    /// under cosine (per block for blocks; a zero row or block is an error naming `file`, or
    /// the base file of that block when `file` is `None`), then block-scaled.
    pub fn prepare_rows(
        &self,
        rows: &mut Matrix<f32>,
        first: u64,
        metric: Metric,
        file: Option<&Path>,
    ) -> Result<(), BuildError> {
        match self {
            Self::Single(f) => {
                if metric == Metric::Cosine {
                    validate::check_nonzero(file.unwrap_or(f.path()), first, rows.view())?;
                    super::normalize_rows(rows);
                }
            }
            Self::Concat(c) => {
                if metric == Metric::Cosine {
                    for (f, local, at, n) in c.segments(first, rows.rows()) {
                        let part = rows.view().slice_rows(at, at + n);
                        match file {
                            Some(p) => validate::check_nonzero(p, first + at as u64, part)?,
                            None => validate::check_nonzero(c.files[f].path(), local, part)?,
                        }
                    }
                    super::normalize_rows(rows);
                }
            }
            Self::Blocks { files, scales } => {
                if metric == Metric::Cosine {
                    let path_of = |b: usize| file.unwrap_or(files.path(b)).to_path_buf();
                    normalize_blocks(files.layout(), rows, first, &path_of)?;
                }
                if let Some(s) = scales {
                    scale_blocks(files.layout(), rows, s);
                }
            }
        }
        Ok(())
    }

    /// Rows `first .. first + count` in the build's coordinates.
    pub fn read_prepared(
        &self,
        first: u64,
        count: usize,
        metric: Metric,
    ) -> Result<Matrix<f32>, BuildError> {
        let mut m = match self {
            Self::Single(f) => {
                let mut v = Vec::new();
                f.read_rows_f32(first, count, &mut v)?;
                Matrix::from_vec(v, f.dim())?
            }
            Self::Concat(c) => c.read(first, count, VectorFile::read_rows_f32)?,
            Self::Blocks { files, .. } => files.read_rows_f32(first, count)?,
        };
        self.prepare_rows(&mut m, first, metric, None)?;
        Ok(m)
    }

    /// Every row in the build's coordinates, in chunks of at most `rows_per_chunk`.
    pub fn chunks_prepared(
        &self,
        rows_per_chunk: usize,
        metric: Metric,
    ) -> impl Iterator<Item = Result<(u64, Matrix<f32>), BuildError>> + '_ {
        self.range_prepared(0..self.rows(), rows_per_chunk, metric)
    }

    /// Rows `rows` (within the base) in the build's coordinates, in chunks of at most
    /// `rows_per_chunk`.
    pub fn range_prepared(
        &self,
        rows: std::ops::Range<u64>,
        rows_per_chunk: usize,
        metric: Metric,
    ) -> impl Iterator<Item = Result<(u64, Matrix<f32>), BuildError>> + '_ {
        let step = rows_per_chunk.max(1) as u64;
        let total = rows.end.min(self.rows());
        let mut next = rows.start;
        let mut failed = false;
        std::iter::from_fn(move || {
            if failed || next >= total {
                return None;
            }
            let first = next;
            let count = (total - first).min(step) as usize;
            next += count as u64;
            let r = self.read_prepared(first, count, metric);
            failed = r.is_err();
            Some(r.map(|m| (first, m)))
        })
    }

    /// Rows in the file's own element type (single-file bases stored natively only).
    pub fn read_native<T: Element>(
        &self,
        first: u64,
        count: usize,
    ) -> Result<Matrix<T>, BuildError> {
        match self {
            Self::Single(f) => {
                let mut v = Vec::new();
                f.read_rows::<T>(first, count, &mut v)?;
                Ok(Matrix::from_vec(v, f.dim())?)
            }
            Self::Concat(c) => c.read(first, count, VectorFile::read_rows::<T>),
            Self::Blocks { .. } => Err(BuildError::param(
                "blocks",
                "multi-vector bases are stored as f32",
            )),
        }
    }
}

/// Several vector files read as one base: the rows of each follow the rows of the one
/// before (row `r` of file `i` is base row `starts[i] + r`). Every file has the first's
/// dimension and element type.
#[doc(hidden)]
#[derive(Debug)]
pub struct ConcatFiles {
    files: Vec<VectorFile>,
    /// First base row of each file, and the total rows last.
    starts: Vec<u64>,
}

impl ConcatFiles {
    /// Opens `paths` in order; a file whose dimension or element type differs from the
    /// first's is refused by name.
    pub fn open(paths: &[&Path]) -> Result<Self, BuildError> {
        let mut files: Vec<VectorFile> = Vec::with_capacity(paths.len());
        let mut starts = vec![0u64];
        for p in paths {
            let f = VectorFile::open(p)?;
            if let Some(first) = files.first()
                && (f.dim(), f.dtype()) != (first.dim(), first.dtype())
            {
                return Err(BuildError::param(
                    "base",
                    format!(
                        "{} holds {}-d {} vectors, but {} holds {}-d {}: every base file \
                             must have the same dimension and element type",
                        p.display(),
                        f.dim(),
                        f.dtype(),
                        first.path().display(),
                        first.dim(),
                        first.dtype()
                    ),
                ));
            }
            starts.push(starts[starts.len() - 1] + f.rows());
            files.push(f);
        }
        if files.is_empty() {
            return Err(BuildError::param("base", "no base file given"));
        }
        Ok(Self { files, starts })
    }

    /// Rows of all files together.
    pub fn rows(&self) -> u64 {
        self.starts[self.files.len()]
    }

    /// The parts of base rows `first .. first + count`: (file, its first row there, position
    /// in the range, rows), in order.
    fn segments(&self, first: u64, count: usize) -> Vec<(usize, u64, usize, usize)> {
        let end = first + count as u64;
        let mut out = Vec::new();
        for (i, w) in self.starts.windows(2).enumerate() {
            let (a, b) = (w[0].max(first), w[1].min(end));
            if a < b {
                out.push((i, a - w[0], (a - first) as usize, (b - a) as usize));
            }
        }
        out
    }

    /// Base rows `first .. first + count`, read file by file with `read`; a range past the
    /// end is refused by the last file.
    fn read<T: Element>(
        &self,
        first: u64,
        count: usize,
        read: impl Fn(&VectorFile, u64, usize, &mut Vec<T>) -> Result<(), crate::data::DataError>,
    ) -> Result<Matrix<T>, BuildError> {
        let dim = self.files[0].dim();
        let last = self.files.len() - 1;
        if first + count as u64 > self.rows() {
            // Let the last file name the bad range in its own rows.
            let local = first.saturating_sub(self.starts[last]);
            let mut v = Vec::new();
            read(&self.files[last], local, count, &mut v)?;
        }
        let mut all = Vec::with_capacity(count * dim);
        let mut part = Vec::new();
        for (f, local, _, n) in self.segments(first, count) {
            read(&self.files[f], local, n, &mut part)?;
            all.extend_from_slice(&part);
        }
        Ok(Matrix::from_vec(all, dim)?)
    }
}

/// PQ subspace boundaries that never straddle a block boundary: `m` subspaces shared among the
/// blocks in proportion to their dimensions (largest remainder; at least one and at most `dim`
/// per block, so the result has `max(m, blocks)` subspaces when `m` is too small), split
/// evenly inside each block.
pub fn block_pq_bounds(layout: &BlockLayout, m: usize) -> Vec<usize> {
    let d = layout.dim() as f64;
    let blocks = layout.blocks();
    let m = m.max(blocks.len()).min(layout.dim());
    let exact: Vec<f64> = blocks.iter().map(|b| m as f64 * b.dim as f64 / d).collect();
    let mut share: Vec<usize> = exact
        .iter()
        .zip(blocks)
        .map(|(&e, b)| (e.floor() as usize).clamp(1, b.dim))
        .collect();
    // Hand out the rest by largest remainder (ties: lower block), respecting dims.
    while share.iter().sum::<usize>() < m {
        let pick = (0..blocks.len())
            .filter(|&i| share[i] < blocks[i].dim)
            .max_by(|&a, &b| {
                let ra = exact[a] - share[a] as f64;
                let rb = exact[b] - share[b] as f64;
                ra.total_cmp(&rb).then(b.cmp(&a))
            })
            .expect("m ≤ dim leaves room");
        share[pick] += 1;
    }
    while share.iter().sum::<usize>() > m {
        let pick = (0..blocks.len())
            .filter(|&i| share[i] > 1)
            .min_by(|&a, &b| {
                let ra = exact[a] - share[a] as f64;
                let rb = exact[b] - share[b] as f64;
                ra.total_cmp(&rb).then(b.cmp(&a))
            })
            .expect("m ≥ blocks leaves room");
        share[pick] -= 1;
    }
    let mut bounds = vec![0usize];
    for (b, &s) in blocks.iter().zip(&share) {
        let inner = crate::pq::even_bounds(b.dim, s).expect("1 ≤ share ≤ dim");
        bounds.extend(inner[1..].iter().map(|x| x + b.first_dim));
    }
    bounds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pq_bounds_follow_blocks_in_proportion() {
        let l = BlockLayout::new(&[("a", 128), ("b", 64), ("c", 8)]).unwrap();
        let b = block_pq_bounds(&l, 50);
        assert_eq!(b.len() - 1, 50);
        for edge in [128, 192] {
            assert!(b.contains(&edge), "{b:?}");
        }
        let per = |lo: usize, hi: usize| b.iter().filter(|&&x| x > lo && x <= hi).count();
        assert_eq!((per(0, 128), per(128, 192), per(192, 200)), (32, 16, 2));
        // Fewer subspaces than blocks: one each.
        assert_eq!(block_pq_bounds(&l, 1), vec![0, 128, 192, 200]);
        // More than dims: capped at one dimension each.
        let tiny = BlockLayout::new(&[("a", 2), ("b", 1)]).unwrap();
        assert_eq!(block_pq_bounds(&tiny, 10), vec![0, 1, 2, 3]);
    }
}

//! Synthetic data sets, seeded and streamed: what `m3 gen` writes.
//!
//! Two kinds, described with their formulas and measured against real data in
//! `docs/GENERATOR.md`:
//!
//! - [`gauss`]: in-distribution, a mixture of anisotropic Gaussians (metric l2); queries are
//!   held-out draws from the same mixture.
//! - [`xmodal`]: cross-modal, an 'image' base and 'text' queries in one unit-norm space with a
//!   modality gap and per-dimension variances that differ between the modalities; every query
//!   is generated from a true partner row of the base (metric ip / cosine).
//! - [`multiblock`]: multi-vector objects, one file per block, blocks at different scales
//!   (DESIGN §4.6).
//!
//! # Determinism and streaming
//!
//! Every row is drawn from its own ChaCha8 generator whose 256-bit key is
//! `(seed, split, row, kind)`, so any row, and therefore any chunk of [`CHUNK_ROWS`] rows, can be
//! produced alone, in any order, on any number of threads, with the same result. A model
//! ([`gauss::GaussModel`], [`xmodal::XmodalModel`]) holds only O(clusters · dim) numbers;
//! a 100M-row base is written chunk by chunk ([`write_dataset`]) and never held in RAM.

pub mod gauss;
pub mod multiblock;
mod perm;
// The statistics GENERATOR.md compares (examples/synth_stats.rs, examples/ood_stats.rs): not
// part of the API.
#[doc(hidden)]
pub mod stats;
pub mod xmodal;

use std::ops::Range;
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::data::{DType, DataError, GroundTruth, Matrix, MatrixView, VectorWriter};

/// Rows per chunk: the unit of parallel generation and of writing.
pub const CHUNK_ROWS: usize = 4096;

/// Which part of a data set a row belongs to. Each split is an independent random stream, so
/// the queries and the training queries never share a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// The base (the indexed vectors).
    Base,
    /// The queries (cross-modal generators: from the query modality).
    Queries,
    /// The training-query sample (query modality, for learning query anchors).
    Training,
}

impl Split {
    fn tag(self) -> u64 {
        match self {
            Split::Base => 1,
            Split::Queries => 2,
            Split::Training => 3,
        }
    }
}

/// How many rows each split has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitSizes {
    /// Base rows.
    pub base: u64,
    /// Query rows.
    pub queries: u64,
    /// Training-query rows (0 for none).
    pub training: u64,
}

impl SplitSizes {
    /// Rows of `split`.
    pub fn rows(&self, split: Split) -> u64 {
        match split {
            Split::Base => self.base,
            Split::Queries => self.queries,
            Split::Training => self.training,
        }
    }
}

/// Generated rows of one split.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// First row (within its split) of `vectors`.
    pub first_row: u64,
    /// The rows, `rows × dim`.
    pub vectors: Matrix<f32>,
    /// For cross-modal query rows: the base row each query was generated from.
    pub partners: Option<Vec<u32>>,
}

/// A synthetic data set: rows of every split on demand.
pub trait SynthModel: Sync {
    /// Dimension of every row.
    fn dim(&self) -> usize;
    /// Rows of each split.
    fn sizes(&self) -> SplitSizes;
    /// Whether query rows carry partner ids ([`Chunk::partners`]).
    fn has_partners(&self) -> bool;
    /// Rows `range` of `split`. Panics when the range is outside the split.
    fn rows(&self, split: Split, range: Range<u64>) -> Chunk;

    /// Chunk `chunk` of `split`: rows `chunk·CHUNK_ROWS ..` up to `CHUNK_ROWS` rows, fewer for
    /// the last chunk. Panics when the chunk is outside the split.
    fn chunk(&self, split: Split, chunk: u64) -> Chunk {
        let total = self.sizes().rows(split);
        let start = chunk * CHUNK_ROWS as u64;
        assert!(
            start < total,
            "chunk {chunk} is outside the {total} rows of {split:?}"
        );
        self.rows(split, start..(start + CHUNK_ROWS as u64).min(total))
    }

    /// Number of chunks of `split`.
    fn chunks(&self, split: Split) -> u64 {
        self.sizes().rows(split).div_ceil(CHUNK_ROWS as u64)
    }
}

/// Errors of the generators: bad parameters, or the files they write.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// A parameter is out of range.
    #[error("invalid generator parameter {name}: {what}")]
    Param {
        /// The parameter's name.
        name: &'static str,
        /// What is wrong with it.
        what: String,
    },
    /// Writing the data set's files failed.
    #[error(transparent)]
    Data(#[from] DataError),
}

pub(crate) fn param_error(name: &'static str, what: impl Into<String>) -> SynthError {
    SynthError::Param {
        name,
        what: what.into(),
    }
}

/// Kind tags that keep the two generators' random streams apart for the same seed.
pub(crate) const KIND_GAUSS: u64 = 1;
pub(crate) const KIND_XMODAL: u64 = 2;
/// Split tag of the model's own draws (centres, scales, ...).
pub(crate) const TAG_MODEL: u64 = 0;

/// The generator of one row: a ChaCha8 key made of the four words, so distinct
/// `(seed, tag, row, kind)` give distinct, independent streams (no hashing, no collisions).
pub(crate) fn row_rng(seed: u64, tag: u64, row: u64, kind: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    for (i, w) in [seed, tag, row, kind].iter().enumerate() {
        key[i * 8..(i + 1) * 8].copy_from_slice(&w.to_le_bytes());
    }
    ChaCha8Rng::from_seed(key)
}

/// Maps generated f32 values to u8 the SIFT way: `round(clamp((x − offset) · scale, 0, 255))`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct U8Quantizer {
    /// Value mapped to 0.
    pub offset: f32,
    /// Steps per unit: `x` maps to `(x − offset) · scale`.
    pub scale: f32,
}

impl U8Quantizer {
    /// Fits `offset` and `scale` so that the `tail` and `1 − tail` quantiles of all values of
    /// `sample` map to 0 and 255 (values beyond are clamped). `tail` in `[0, 0.5)`.
    pub fn fit(sample: MatrixView<'_, f32>, tail: f64) -> Self {
        let mut v: Vec<f32> = sample.as_slice().to_vec();
        assert!(!v.is_empty(), "U8Quantizer::fit: empty sample");
        v.sort_unstable_by(f32::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        let (lo, hi) = (at(tail), at(1.0 - tail));
        let span = if hi > lo { hi - lo } else { 1.0 };
        Self {
            offset: lo,
            scale: 255.0 / span,
        }
    }

    /// One value, quantized.
    #[inline]
    pub fn quantize_value(&self, x: f32) -> u8 {
        ((x - self.offset) * self.scale).clamp(0.0, 255.0).round() as u8
    }

    /// Every value of `m`, quantized (same shape).
    pub fn quantize(&self, m: MatrixView<'_, f32>) -> Matrix<u8> {
        let data = m
            .as_slice()
            .iter()
            .map(|&x| self.quantize_value(x))
            .collect();
        Matrix::from_vec(data, m.dim()).expect("same shape as a valid view")
    }
}

/// The quantizer used for u8 output of `model`: fitted on its first base chunk with 0.05%
/// tails, and applied to every split (so base and queries share one scale).
pub fn u8_quantizer(model: &dyn SynthModel) -> U8Quantizer {
    U8Quantizer::fit(model.chunk(Split::Base, 0).vectors.view(), 0.0005)
}

/// Where and how [`write_dataset`] writes.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteSpec {
    /// Directory the files are written into (created when missing).
    pub out_dir: PathBuf,
    /// f32 (`.fbin`) or u8 (`.u8bin`, quantized with [`u8_quantizer`]).
    pub dtype: DType,
    /// Chunks generated in parallel before being written in order (bounds memory:
    /// `batch_chunks · CHUNK_ROWS · dim` floats).
    pub batch_chunks: usize,
}

/// The files [`write_dataset`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct WrittenFiles {
    /// The base file.
    pub base: PathBuf,
    /// The query file.
    pub queries: PathBuf,
    /// The training-query file, when there are training queries.
    pub training: Option<PathBuf>,
    /// `.ibin` with one partner id per query (cross-modal sets only).
    pub query_partners: Option<PathBuf>,
    /// `.ibin` with one partner id per training query (cross-modal sets only).
    pub training_partners: Option<PathBuf>,
    /// The u8 quantizer applied to every split, when written as u8.
    pub quantizer: Option<U8Quantizer>,
}

/// File names of the splits in `out_dir`: `base.<ext>`, `query.<ext>`, `train_query.<ext>`,
/// `query.partners.ibin`, `train_query.partners.ibin`.
pub fn file_name(split: Split, dtype: DType) -> String {
    let ext = match dtype {
        DType::F32 => "fbin",
        DType::U8 => "u8bin",
        DType::I8 => "i8bin",
    };
    let stem = match split {
        Split::Base => "base",
        Split::Queries => "query",
        Split::Training => "train_query",
    };
    format!("{stem}.{ext}")
}

/// Streams every split of `model` into `spec.out_dir`, generating `spec.batch_chunks` chunks
/// at a time on `pool` and writing them in order. The files are byte-identical for any pool
/// size. Empty splits (training = 0) are not written.
pub fn write_dataset(
    model: &dyn SynthModel,
    spec: &WriteSpec,
    pool: &rayon::ThreadPool,
) -> Result<WrittenFiles, SynthError> {
    let quantizer = match spec.dtype {
        DType::F32 => None,
        DType::U8 => Some(u8_quantizer(model)),
        DType::I8 => return Err(param_error("dtype", "the generators write f32 or u8")),
    };
    std::fs::create_dir_all(&spec.out_dir).map_err(|e| DataError::io(&spec.out_dir, e))?;
    let mut files = WrittenFiles {
        base: PathBuf::new(),
        queries: PathBuf::new(),
        training: None,
        query_partners: None,
        training_partners: None,
        quantizer,
    };
    for split in [Split::Base, Split::Queries, Split::Training] {
        if model.sizes().rows(split) == 0 {
            continue;
        }
        let path = spec.out_dir.join(file_name(split, spec.dtype));
        let partners = write_split(model, split, &path, spec, quantizer, pool)?;
        let partner_path = partners
            .map(|ids| -> Result<PathBuf, SynthError> {
                let stem = if split == Split::Training {
                    "train_query"
                } else {
                    "query"
                };
                let p = spec.out_dir.join(format!("{stem}.partners.ibin"));
                let ids = Matrix::from_vec(ids, 1).expect("dim 1");
                GroundTruth { ids, dists: None }.write(&p)?;
                Ok(p)
            })
            .transpose()?;
        match split {
            Split::Base => files.base = path,
            Split::Queries => {
                files.queries = path;
                files.query_partners = partner_path;
            }
            Split::Training => {
                files.training = Some(path);
                files.training_partners = partner_path;
            }
        }
    }
    Ok(files)
}

fn write_split(
    model: &dyn SynthModel,
    split: Split,
    path: &Path,
    spec: &WriteSpec,
    quantizer: Option<U8Quantizer>,
    pool: &rayon::ThreadPool,
) -> Result<Option<Vec<u32>>, SynthError> {
    let mut writer = VectorWriter::create(path, spec.dtype, model.dim())?;
    let mut partners = (model.has_partners() && split != Split::Base).then(Vec::new);
    let chunks = model.chunks(split);
    let batch = spec.batch_chunks.max(1) as u64;
    let mut next = 0u64;
    while next < chunks {
        let end = (next + batch).min(chunks);
        let generated: Vec<Chunk> = pool.install(|| {
            (next..end)
                .into_par_iter()
                .map(|c| model.chunk(split, c))
                .collect()
        });
        for chunk in generated {
            match quantizer {
                None => writer.write_rows(chunk.vectors.view())?,
                Some(q) => writer.write_rows(q.quantize(chunk.vectors.view()).view())?,
            }
            if let (Some(all), Some(p)) = (partners.as_mut(), chunk.partners) {
                all.extend(p);
            }
        }
        next = end;
    }
    writer.finish()?;
    Ok(partners)
}

/// Normalises `v` to unit L2 norm in place (left unchanged when it is zero).
pub(crate) fn normalize(v: &mut [f32]) {
    let n = v
        .iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt();
    if n > 0.0 {
        let inv = (1.0 / n) as f32;
        v.iter_mut().for_each(|x| *x *= inv);
    }
}

/// A random unit vector (Gaussian direction).
pub(crate) fn random_unit(rng: &mut ChaCha8Rng, dim: usize) -> Vec<f32> {
    use rand_distr::{Distribution, StandardNormal};
    let mut v: Vec<f32> = (0..dim).map(|_| StandardNormal.sample(rng)).collect();
    normalize(&mut v);
    v
}

/// Cumulative weights for drawing a cluster with probability proportional to `weights`.
pub(crate) fn cumulative(weights: &[f64]) -> Vec<f64> {
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    weights
        .iter()
        .map(|w| {
            acc += w / total;
            acc
        })
        .collect()
}

/// The index drawn from a cumulative table with a uniform `u ∈ [0, 1)`.
pub(crate) fn draw(cum: &[f64], u: f64) -> usize {
    cum.partition_point(|&c| c <= u).min(cum.len() - 1)
}

#[cfg(test)]
mod tests;

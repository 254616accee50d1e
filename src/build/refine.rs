//! The refinement codes, `refine.m3` (decision 0008): a second product quantizer, over the
//! same subspaces as `pq.m3`, of what the first one leaves, `e = x − c − r̂₁`. A query ranks its
//! candidates by the first codes, re-ranks the best few hundred by both (`r̂₁ + r̂₂`, twice
//! the bits) in RAM, and reads only the best of those from SSD.
//!
//! The codes are computed from an index directory's own files, after `data.m3` is complete:
//! the records' vectors in record order (one sequential pass to sample `e` for training, one
//! to encode), their clusters' centroids and their first codes. So the same function serves
//! the build (on its temporary directory, before publishing) and `m3 refine` (on a published
//! index, through [`crate::format::update_published`]'s rules).

use std::os::unix::fs::FileExt;
use std::path::Path;

use rayon::prelude::*;

use super::BuildError;
use crate::data::{Matrix, MatrixView};
use crate::distance;
use crate::format::data::DataFileHeader;
use crate::format::pq::REFINE_KIND;
use crate::format::{ClusterEntry, FileEntry, FormatError, PqFile, SECTOR_BYTES};
use crate::pq::{PqParams, ProductQuantizer};

/// How the refinement quantizer is trained.
#[derive(Debug, Clone)]
pub struct RefineParams {
    /// Lloyd iterations of each subspace's k-means.
    pub iters: usize,
    /// At most this many records (every ⌈N / rows⌉-th, in record order) train the codebooks.
    pub train_rows: usize,
    /// Seed of the codebooks' k-means.
    pub seed: u64,
}

/// The first codes' defaults (`BuildParams::new`): 10 iterations on 32,768 rows. With 15 on
/// 65,536 the stage took 4× longer for +0.001 recall@10 on passages-ood (decision 0008).
impl Default for RefineParams {
    fn default() -> Self {
        Self {
            iters: 10,
            train_rows: 32_768,
            seed: 42,
        }
    }
}

/// What [`write_refinement`] needs of an index directory: its data file, the cluster table's
/// entries and centroids, and its first codes.
pub struct RefineInputs<'a> {
    /// `data.m3` (complete: header and records written).
    pub data_path: &'a Path,
    /// Its header (record codec and layout).
    pub data_header: &'a DataFileHeader,
    /// The cluster table's entries (`clusters.m3`).
    pub entries: &'a [ClusterEntry],
    /// The base anchors (`clusters.m3`), one row per entry.
    pub centroids: MatrixView<'a, f32>,
    /// The first codes (`pq.m3`, residual codes).
    pub pq: &'a PqFile,
}

/// Records decoded per call of the visitor (one encoding block).
const CHUNK_RECORDS: usize = 8192;

/// Computes the refinement codes of the index described by `inputs` and writes them to
/// `out` (a `refine.m3`), on `pool`. The result depends on the inputs and `params` only.
pub fn write_refinement(
    inputs: &RefineInputs<'_>,
    params: &RefineParams,
    out: &Path,
    pool: &rayon::ThreadPool,
) -> Result<FileEntry, BuildError> {
    let pq1 = first_quantizer(inputs.pq)?;
    let n = inputs.pq.n_records();
    let dim = pq1.dim();
    // Pass 1: a regular sample of the leftovers trains the second codebooks.
    let stride = n.div_ceil(params.train_rows.max(1)).max(1);
    let mut sample = Vec::with_capacity(n.div_ceil(stride) * dim);
    for_each_chunk(inputs, &pq1, pool, |first, leftovers| {
        for (i, e) in leftovers.iter_rows().enumerate() {
            if (first + i) % stride == 0 {
                sample.extend_from_slice(e);
            }
        }
        Ok(())
    })?;
    let sample = Matrix::from_vec(sample, dim).expect("dim ≥ 1");
    let mut pqp = PqParams::new(pq1.subspaces());
    pqp.bounds = Some(pq1.bounds().to_vec());
    pqp.iters = params.iters;
    pqp.sample = params.train_rows.max(1);
    pqp.seed = params.seed;
    let pq2 = pqp.train(sample.view(), pool)?;
    drop(sample);
    // Pass 2: every record's second code, its correction |r̂|² + 2c·r̂ and error |x − c − r̂|
    // for r̂ = r̂₁ + r̂₂.
    let bounds: Vec<u32> = pq2.bounds().iter().map(|&b| b as u32).collect();
    let mut w = PqFile::writer_as(out, &REFINE_KIND, &bounds, pq2.codebooks(), n as u64, true)?;
    for_each_chunk(inputs, &pq1, pool, |first, leftovers| {
        let (codes, terms) = pool.install(|| {
            let codes = pq2.encode_all(leftovers);
            let terms: Vec<(f32, f32)> = (0..leftovers.rows())
                .into_par_iter()
                .map_init(
                    || (vec![0f32; dim], vec![0f32; dim]),
                    |(r1, r2), i| {
                        let rec = first + i;
                        pq1.decode(inputs.pq.codes.row(rec), r1);
                        pq2.decode(codes.row(i), r2);
                        let e = leftovers.row(i);
                        let err = distance::l2_sq(e, r2).sqrt();
                        r1.iter_mut().zip(r2.iter()).for_each(|(a, b)| *a += b);
                        let c = inputs.centroids.row(cluster_of(inputs.entries, rec));
                        let corr = distance::dot(r1, r1) + 2.0 * distance::dot(c, r1);
                        (corr, err)
                    },
                )
                .collect();
            (codes, terms)
        });
        for (code, &(corr, err)) in codes.view().iter_rows().zip(&terms) {
            w.push(code, corr, err)?;
        }
        Ok(())
    })?;
    Ok(w.finish()?)
}

/// The first quantizer of `pq.m3`.
fn first_quantizer(pq: &PqFile) -> Result<ProductQuantizer, BuildError> {
    let bounds: Vec<usize> = pq.bounds.iter().map(|&b| b as usize).collect();
    Ok(ProductQuantizer::from_parts(
        pq.dim(),
        bounds,
        pq.codebooks.clone(),
    )?)
}

/// The cluster holding record `rec` (the last entry starting at or before it).
fn cluster_of(entries: &[ClusterEntry], rec: usize) -> usize {
    entries.partition_point(|e| e.first_record <= rec as u64) - 1
}

/// Streams `data.m3` in record order and calls `visit(first_record, leftovers)` with the
/// leftovers `x − c − r̂₁` of up to [`CHUNK_RECORDS`] consecutive records at a time.
fn for_each_chunk(
    inputs: &RefineInputs<'_>,
    pq1: &ProductQuantizer,
    pool: &rayon::ThreadPool,
    mut visit: impl FnMut(usize, MatrixView<'_, f32>) -> Result<(), BuildError>,
) -> Result<(), BuildError> {
    let path = inputs.data_path;
    let io = |e| FormatError::io(path, e);
    let file = std::fs::File::open(path).map_err(io)?;
    let codec = inputs.data_header.codec()?;
    let layout = inputs.data_header.layout();
    let dim = pq1.dim();
    let sb = SECTOR_BYTES as u64;
    let mut vectors: Vec<f32> = Vec::with_capacity(CHUNK_RECORDS * dim);
    let mut first = 0usize;
    let mut buf = Vec::new();
    let mut flush = |vectors: &mut Vec<f32>, first: &mut usize| -> Result<(), BuildError> {
        let rows = vectors.len() / dim;
        pool.install(|| {
            vectors.par_chunks_mut(dim).enumerate().for_each_init(
                || vec![0f32; dim],
                |r1, (i, v)| {
                    let rec = *first + i;
                    pq1.decode(inputs.pq.codes.row(rec), r1);
                    let c = inputs.centroids.row(cluster_of(inputs.entries, rec));
                    for ((x, &c), &r) in v.iter_mut().zip(c).zip(r1.iter()) {
                        *x = *x - c - r;
                    }
                },
            );
        });
        visit(*first, MatrixView::new(vectors, dim).expect("dim ≥ 1"))?;
        *first += rows;
        vectors.clear();
        Ok(())
    };
    for (c, e) in inputs.entries.iter().enumerate() {
        if e.records == 0 {
            continue;
        }
        let sectors = layout.sectors_for(u64::from(e.records));
        buf.resize((sectors * sb) as usize, 0);
        file.read_exact_at(&mut buf, (1 + e.first_sector) * sb)
            .map_err(io)?;
        for j in 0..u64::from(e.records) {
            let loc = layout.locate(j);
            let at = (loc.sector * sb) as usize + loc.offset_bytes as usize;
            let offset = (1 + e.first_sector + loc.sector) * sb + u64::from(loc.offset_bytes);
            let place = format!("record {} (cluster {c})", e.first_record + j);
            let rec = codec
                .decode(&buf[at..], path, offset)
                .map_err(|err| err.within(&place))?;
            if let Some(k) = rec.first_non_finite() {
                return Err(FormatError::corrupt(
                    path,
                    offset + 4 * k as u64,
                    format!("{place}: component {k} is not finite"),
                )
                .into());
            }
            push_vector(&rec, &mut vectors);
            if vectors.len() == CHUNK_RECORDS * dim {
                flush(&mut vectors, &mut first)?;
            }
        }
    }
    if !vectors.is_empty() {
        flush(&mut vectors, &mut first)?;
    }
    Ok(())
}

/// Appends a record's vector as f32, as the query engine reads it.
fn push_vector(rec: &crate::format::record::RecordView<'_>, out: &mut Vec<f32>) {
    use crate::data::DType;
    let b = rec.vector_bytes();
    match rec.dtype() {
        DType::F32 => out.extend(
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))),
        ),
        DType::U8 => out.extend(b.iter().map(|&v| f32::from(v))),
        DType::I8 => out.extend(b.iter().map(|&v| f32::from(v as i8))),
    }
}

//! Stage 3, assign: a second streaming pass gives every base vector its primary cluster (the
//! nearest anchor with room under the size cap, in file order, so the result is deterministic),
//! spill copies (SPANN's rule: also cluster j when `d(x, c_j) ≤ (1 + ε)·d(x, c_1)`, Euclidean,
//! at most `max_copies` extra), and for each stored record the PQ code of its residual to the
//! anchor, the L2 correction term `|r̂|² + 2 c·r̂` and the reconstruction error `|x − x̂|`.
//! Records are then ordered cluster by cluster, members by distance to their anchor (the
//! M-Index key of DESIGN §4.5), ties by id, and streamed out of the sort into `pq.m3`,
//! `keys.m3` and a scratch file of record ids: the stage holds the sort buffer, never the
//! sorted columns.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use rayon::prelude::*;

use super::extsort::{RecordSorter, SpillReport};
use super::source::BaseSource;
use super::train::Trained;
use super::{BuildError, BuildParams};
use crate::data::{Matrix, MatrixView};
use crate::distance;
use crate::format::{FileEntry, PqFile, RecordKeys};
use crate::pq::ProductQuantizer;
use crate::route::SpillRule;

/// Where the assign stage writes its sorted records: the index's `pq.m3` and `keys.m3`
/// (final files, inside the index's temporary directory) and a scratch file of record ids.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct AssignOutputs {
    pub pq: PathBuf,
    pub keys: PathBuf,
    pub ids: PathBuf,
}

/// What the assign stage produced. The records themselves (final (cluster, key, id) order)
/// are on disk: PQ codes, corrections and errors in `pq.m3`, keys in `keys.m3`, the base row
/// of each record in the scratch file [`RecordIds`].
#[doc(hidden)]
#[derive(Debug)]
pub struct Assignment {
    pub cluster_sizes: Vec<u32>,
    /// The smallest and largest key of each cluster (its r_min and r_max; 0 when empty).
    pub key_ranges: Vec<[f32; 2]>,
    /// Original base row of each record.
    pub ids: RecordIds,
    /// Stored records (base rows plus spill copies).
    pub records: u64,
    pub pq_entry: FileEntry,
    pub keys_entry: FileEntry,
    /// Records that are spill copies (records − base rows).
    pub spilled: u64,
    /// Largest norm of a base vector as stored (scaled blocks included).
    pub max_norm: f32,
    /// What the external sort of the records wrote to disk (zero when it fit the budget).
    pub sort: SpillReport,
}

impl Assignment {
    /// First record of every cluster, plus the total at the end.
    pub fn cluster_starts(&self) -> Vec<u64> {
        let mut v = Vec::with_capacity(self.cluster_sizes.len() + 1);
        let mut acc = 0u64;
        v.push(0);
        for &s in &self.cluster_sizes {
            acc += s as u64;
            v.push(acc);
        }
        v
    }
}

/// The base row of every record, a scratch file of little-endian u32 in record order, read a
/// cluster at a time by the layout stage and removed before the index is published.
#[derive(Debug)]
pub struct RecordIds {
    path: PathBuf,
    file: File,
}

impl RecordIds {
    /// Ids of records `first..first + count`.
    pub fn read(&self, first: u64, count: usize) -> Result<Vec<u32>, BuildError> {
        let mut ids = vec![0u32; count];
        self.file
            .read_exact_at(bytemuck::cast_slice_mut(&mut ids), 4 * first)
            .map_err(|source| BuildError::Io {
                path: self.path.clone(),
                source,
            })?;
        for id in &mut ids {
            *id = u32::from_le(*id);
        }
        Ok(ids)
    }

    /// A scratch file holding `ids` (record order), for tests of the stages that read it.
    #[cfg(test)]
    pub(crate) fn write_for_test(path: &std::path::Path, ids: &[u32]) -> Self {
        let bytes: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
        std::fs::write(path, bytes).expect("scratch ids");
        Self {
            path: path.to_path_buf(),
            file: File::open(path).expect("scratch ids"),
        }
    }

    /// Deletes the scratch file.
    pub fn remove(self) -> Result<(), BuildError> {
        drop(self.file);
        std::fs::remove_file(&self.path).map_err(|source| BuildError::Io {
            path: self.path,
            source,
        })
    }
}

/// One record waiting for its code: its cluster, its base row's id and the row in the chunk.
struct Pending {
    cluster: u32,
    id: u32,
    row: usize,
}

/// The assign stage (module doc): places every base row, codes its records and streams them,
/// sorted, into `out`.
#[doc(hidden)]
pub fn assign(
    base: &BaseSource,
    params: &BuildParams,
    trained: &Trained,
    out: &AssignOutputs,
    pool: &rayon::ThreadPool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Assignment, BuildError> {
    let n = base.rows();
    let m = trained.pq.subspaces();
    let mut sorter = RecordSorter::new(
        m,
        params.sort_run_records(n, m, trained.model_bytes()),
        sort_dir(&params.out),
    );
    let pass = assign_rows(
        base,
        0..n,
        params,
        trained,
        true,
        &mut sorter,
        pool,
        progress,
    )?;
    let (sizes, records, max_norm_sq) = (pass.sizes, pass.records, pass.max_norm_sq);
    check_record_count(records)?;
    let sorted = write_sorted(|sink| sorter.finish_into(sink), trained, out, records)?;
    Ok(Assignment {
        cluster_sizes: sizes.iter().map(|&s| s as u32).collect(),
        key_ranges: sorted.key_ranges,
        ids: sorted.ids,
        records,
        pq_entry: sorted.pq_entry,
        keys_entry: sorted.keys_entry,
        spilled: records - n,
        max_norm: max_norm_sq.sqrt(),
        sort: sorted.sort,
    })
}

/// Record indices (neighbour lists, the sort) are u32, NO_ID = u32::MAX excluded.
pub(super) fn check_record_count(records: u64) -> Result<(), BuildError> {
    if records >= u32::MAX as u64 {
        return Err(BuildError::param(
            "spill",
            format!(
                "{records} records (spill copies included) exceed the u32 record ids; lower --spill"
            ),
        ));
    }
    Ok(())
}

/// What one pass over base rows placed.
pub(super) struct AssignPass {
    /// Records per cluster.
    pub sizes: Vec<u64>,
    /// Records pushed.
    pub records: u64,
    /// The largest squared norm of a row.
    pub max_norm_sq: f32,
}

/// Places and codes base rows `rows` into `sorter` (module doc). `capped`: with the size cap
/// of the single-machine build (placement depends on the rows before) or without it (a row's
/// records depend on the row and the model alone, the rule of the staged build, whose row
/// ranges are assigned independently).
#[allow(clippy::too_many_arguments)]
pub(super) fn assign_rows(
    base: &BaseSource,
    rows: std::ops::Range<u64>,
    params: &BuildParams,
    trained: &Trained,
    capped: bool,
    sorter: &mut RecordSorter,
    pool: &rayon::ThreadPool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<AssignPass, BuildError> {
    let centroids = trained.anchors.centroids.view();
    let mut placement = Placement::new(params, centroids, base.rows());
    if !capped {
        placement.cap = u64::MAX;
    }
    let search = trained.centroid_search();
    let mut sizes = vec![0u64; centroids.rows()];
    let mut records = 0u64;
    let mut max_norm_sq = 0f32;
    for item in base.range_prepared(rows, 1 << 14, params.metric) {
        let (first, chunk) = item?;
        for row in chunk.view().iter_rows() {
            max_norm_sq = max_norm_sq.max(distance::dot(row, row));
        }
        let (cand, dists) = pool.install(|| search.nearest(chunk.view(), placement.t));
        let pending = placement.place(&chunk, first, &cand, &dists, &mut sizes);
        let coded = Coded::of(&trained.pq, centroids, &chunk, &pending, pool);
        for (i, p) in pending.iter().enumerate() {
            sorter.push(
                p.cluster,
                coded.keys[i],
                p.id,
                coded.correction[i],
                coded.error[i],
                coded.codes.row(i),
            )?;
        }
        records += pending.len() as u64;
        progress(first + chunk.rows() as u64);
    }
    Ok(AssignPass {
        sizes,
        records,
        max_norm_sq,
    })
}

/// Where a base row's records go: its primary cluster, the nearest anchor with room under
/// the size cap, and spill copies by SPANN's rule (module doc).
struct Placement<'a> {
    centroids: MatrixView<'a, f32>,
    /// Most records a cluster takes.
    cap: u64,
    /// Nearest anchors looked up per row.
    t: usize,
    /// Where the copies go (shared with the live inserts' coding).
    spill: SpillRule,
}

impl<'a> Placement<'a> {
    fn new(params: &BuildParams, centroids: MatrixView<'a, f32>, n: u64) -> Self {
        let k = centroids.rows();
        let max_copies = params.spill.max_copies;
        Self {
            centroids,
            cap: ((n as f64 * params.clusters.max_size_factor.max(1.0) as f64) / k as f64).ceil()
                as u64,
            t: (max_copies + 1).max(8).min(k),
            spill: SpillRule::new(max_copies, params.spill.epsilon),
        }
    }

    /// The records of a chunk's rows (base rows from `first` on), given each row's `t`
    /// nearest anchors `cand` and their distances `dists`, counted into the cluster `sizes`.
    /// Sequential, in file order: the cap makes placement order-dependent.
    fn place(
        &self,
        chunk: &Matrix<f32>,
        first: u64,
        cand: &[u32],
        dists: &[f32],
        sizes: &mut [u64],
    ) -> Vec<Pending> {
        let (t, cap, k) = (self.t, self.cap, self.centroids.rows());
        let mut pending: Vec<Pending> = Vec::with_capacity(chunk.rows() * 2);
        for row in 0..chunk.rows() {
            let c = &cand[row * t..(row + 1) * t];
            let d = &dists[row * t..(row + 1) * t];
            let id = (first + row as u64) as u32;
            let primary = match c.iter().position(|&j| sizes[j as usize] < cap) {
                Some(p) => (c[p], d[p]),
                None => {
                    let x = chunk.row(row);
                    (0..k)
                        .filter(|&j| sizes[j] < cap)
                        .map(|j| (j as u32, distance::l2_sq(x, self.centroids.row(j))))
                        .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))
                        .expect("cap · k ≥ n leaves room")
                }
            };
            sizes[primary.0 as usize] += 1;
            pending.push(Pending {
                cluster: primary.0,
                id,
                row,
            });
            for j in self.spill.copies(c, d, primary.0) {
                sizes[j as usize] += 1;
                pending.push(Pending {
                    cluster: j,
                    id,
                    row,
                });
            }
        }
        pending
    }
}

/// The pending records of a chunk, coded: PQ codes of their residuals to their anchor, the
/// L2 correction `|r̂|² + 2 c·r̂`, the reconstruction error `|r − r̂|` and the key `|r|`.
struct Coded {
    codes: Matrix<u8>,
    correction: Vec<f32>,
    error: Vec<f32>,
    keys: Vec<f32>,
}

impl Coded {
    /// Codes `pending` (rows of `chunk`) in parallel: residuals encoded in blocks by matrix
    /// products.
    fn of(
        pq: &ProductQuantizer,
        centroids: MatrixView<'_, f32>,
        chunk: &Matrix<f32>,
        pending: &[Pending],
        pool: &rayon::ThreadPool,
    ) -> Self {
        let dim = pq.dim();
        let mut correction = vec![0f32; pending.len()];
        let mut error = vec![0f32; pending.len()];
        let mut keys = vec![0f32; pending.len()];
        let codes = pool.install(|| {
            let mut residuals = vec![0f32; pending.len() * dim];
            residuals
                .par_chunks_mut(dim)
                .zip(pending.par_iter())
                .for_each(|(r, p)| {
                    let c = centroids.row(p.cluster as usize);
                    for ((r, &x), &c) in r.iter_mut().zip(chunk.row(p.row)).zip(c) {
                        *r = x - c;
                    }
                });
            let residuals = Matrix::from_vec(residuals, dim).expect("dim >= 1");
            let codes = pq.encode_all(residuals.view());
            correction
                .par_iter_mut()
                .zip(error.par_iter_mut())
                .zip(keys.par_iter_mut())
                .zip(pending.par_iter().enumerate())
                .for_each_init(
                    || vec![0f32; dim],
                    |rhat, (((corr, err), key), (i, p))| {
                        let c = centroids.row(p.cluster as usize);
                        pq.decode(codes.row(i), rhat);
                        *corr = distance::dot(rhat, rhat) + 2.0 * distance::dot(c, rhat);
                        *err = distance::l2_sq(residuals.row(i), rhat).sqrt();
                        // The key from the residual itself, not from the matrix-product
                        // distance above: exact search bounds rely on it (DESIGN §4.5).
                        *key = distance::dot(residuals.row(i), residuals.row(i)).sqrt();
                    },
                );
            codes
        });
        Self {
            codes,
            correction,
            error,
            keys,
        }
    }
}

/// What streaming the sorted records wrote.
pub(super) struct Sorted {
    pub key_ranges: Vec<[f32; 2]>,
    pub ids: RecordIds,
    pub pq_entry: FileEntry,
    pub keys_entry: FileEntry,
    pub sort: SpillReport,
}

/// The records in their final order, cluster, then key, then id (an external sort when over
/// the budget), streamed into `pq.m3`, `keys.m3` and the scratch file of record ids.
pub(super) fn write_sorted(
    feed: impl FnOnce(
        &mut dyn FnMut(super::extsort::SortedRecord<'_>) -> Result<(), BuildError>,
    ) -> Result<SpillReport, BuildError>,
    trained: &Trained,
    out: &AssignOutputs,
    records: u64,
) -> Result<Sorted, BuildError> {
    let bounds: Vec<u32> = trained.pq.bounds().iter().map(|&b| b as u32).collect();
    let mut pq = PqFile::writer(&out.pq, &bounds, trained.pq.codebooks(), records, true)?;
    let mut keys = RecordKeys::writer(&out.keys, records)?;
    let ids_io = |source| BuildError::Io {
        path: out.ids.clone(),
        source,
    };
    let ids_file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&out.ids)
        .map_err(ids_io)?;
    let mut ids = BufWriter::with_capacity(1 << 20, ids_file);
    let mut key_ranges = vec![[0f32; 2]; trained.anchors.centroids.rows()];
    let mut last_cluster = None;
    let sort = feed(&mut |r| {
        pq.push(r.code, r.correction, r.error)?;
        keys.push(r.key)?;
        ids.write_all(&r.id.to_le_bytes()).map_err(ids_io)?;
        let range = &mut key_ranges[r.cluster as usize];
        if last_cluster != Some(r.cluster) {
            range[0] = r.key;
            last_cluster = Some(r.cluster);
        }
        range[1] = r.key;
        Ok(())
    })?;
    let ids = ids.into_inner().map_err(|e| ids_io(e.into_error()))?;
    Ok(Sorted {
        key_ranges,
        ids: RecordIds {
            path: out.ids.clone(),
            file: ids,
        },
        pq_entry: pq.finish()?,
        keys_entry: keys.finish()?,
        sort,
    })
}

/// Scratch directory of the sort runs: a sibling of the output, like its temporary directory.
pub(super) fn sort_dir(out: &std::path::Path) -> std::path::PathBuf {
    let name = out
        .file_name()
        .map_or_else(|| "index".into(), |n| n.to_string_lossy().into_owned());
    out.with_file_name(format!("{name}.sort-{}", std::process::id()))
}

//! Stage 3, assign: a second streaming pass gives every base vector its primary cluster (the
//! nearest anchor with room under the size cap, in file order, so the result is deterministic),
//! spill copies (SPANN's rule: also cluster j when `d(x, c_j) ≤ (1 + ε)·d(x, c_1)`, Euclidean,
//! at most `max_copies` extra), and for each stored record the PQ code of its residual to the
//! anchor, the L2 correction term `|r̂|² + 2 c·r̂` and the reconstruction error `|x − x̂|`.
//! Records are then ordered cluster by cluster, members by distance to their anchor (the
//! M-Index key of DESIGN §4.5), ties by id.

use rayon::prelude::*;

use super::source::BaseSource;
use super::train::Trained;
use super::{BuildError, BuildParams};
use crate::data::Matrix;
use crate::distance;

/// Every stored record, in final (cluster, key, id) order.
#[derive(Debug)]
pub struct Assignment {
    pub cluster_sizes: Vec<u32>,
    /// Original base row of each record.
    pub ids: Vec<u32>,
    /// Euclidean distance of each record to its anchor.
    pub keys: Vec<f32>,
    /// `records × M` PQ codes of the residuals.
    pub codes: Matrix<u8>,
    pub correction: Vec<f32>,
    pub error: Vec<f32>,
    /// Records that are spill copies (records − base rows).
    pub spilled: u64,
    /// Largest norm of a base vector as stored (scaled blocks included).
    pub max_norm: f32,
}

impl Assignment {
    pub fn records(&self) -> usize {
        self.ids.len()
    }

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

struct Pending {
    cluster: u32,
    id: u32,
    row: usize,
    key: f32,
}

pub fn assign(
    base: &BaseSource,
    params: &BuildParams,
    trained: &Trained,
    pool: &rayon::ThreadPool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Assignment, BuildError> {
    let centroids = trained.anchors.centroids.view();
    let k = centroids.rows();
    let n = base.rows();
    let m = trained.pq.subspaces();
    let cap =
        ((n as f64 * params.clusters.max_size_factor.max(1.0) as f64) / k as f64).ceil() as u64;
    let max_copies = params.spill.max_copies;
    let t = (max_copies + 1).max(8).min(k);
    let ratio_sq = (1.0 + params.spill.epsilon.max(0.0)).powi(2);

    let search = trained.centroid_search();
    let mut sizes = vec![0u64; k];
    let mut clusters: Vec<u32> = Vec::with_capacity(n as usize);
    let mut ids: Vec<u32> = Vec::with_capacity(n as usize);
    let mut keys: Vec<f32> = Vec::with_capacity(n as usize);
    let mut codes: Vec<u8> = Vec::with_capacity(n as usize * m);
    let mut correction: Vec<f32> = Vec::with_capacity(n as usize);
    let mut error: Vec<f32> = Vec::with_capacity(n as usize);

    let mut max_norm_sq = 0f32;
    for item in base.chunks_prepared(1 << 14, params.metric) {
        let (first, chunk) = item?;
        for row in chunk.view().iter_rows() {
            max_norm_sq = max_norm_sq.max(distance::dot(row, row));
        }
        let (cand, dists) = pool.install(|| search.nearest(chunk.view(), t));
        // Sequential, in file order: the cap makes placement order-dependent.
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
                        .map(|j| (j as u32, distance::l2_sq(x, centroids.row(j))))
                        .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))
                        .expect("cap · k ≥ n leaves room")
                }
            };
            sizes[primary.0 as usize] += 1;
            pending.push(Pending {
                cluster: primary.0,
                id,
                row,
                key: primary.1.max(0.0).sqrt(),
            });
            let mut copies = 0;
            for (&j, &dj) in c.iter().zip(d) {
                if copies >= max_copies || dj > ratio_sq * d[0] {
                    break;
                }
                if j == primary.0 {
                    continue;
                }
                sizes[j as usize] += 1;
                pending.push(Pending {
                    cluster: j,
                    id,
                    row,
                    key: dj.max(0.0).sqrt(),
                });
                copies += 1;
            }
        }
        // Codes of the residuals, in parallel.
        let start = clusters.len();
        clusters.extend(pending.iter().map(|p| p.cluster));
        ids.extend(pending.iter().map(|p| p.id));
        keys.extend(pending.iter().map(|p| p.key));
        codes.resize(codes.len() + pending.len() * m, 0);
        correction.resize(correction.len() + pending.len(), 0.0);
        error.resize(error.len() + pending.len(), 0.0);
        let pq = &trained.pq;
        let dim = pq.dim();
        pool.install(|| {
            // Residuals of every pending record, encoded in blocks by matrix products.
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
            let chunk_codes = pq.encode_all(residuals.view());
            codes[start * m..].copy_from_slice(chunk_codes.as_slice());
            correction[start..]
                .par_iter_mut()
                .zip(error[start..].par_iter_mut())
                .zip(keys[start..].par_iter_mut())
                .zip(pending.par_iter().enumerate())
                .for_each_init(
                    || vec![0f32; dim],
                    |rhat, (((corr, err), key), (i, p))| {
                        let c = centroids.row(p.cluster as usize);
                        pq.decode(chunk_codes.row(i), rhat);
                        *corr = distance::dot(rhat, rhat) + 2.0 * distance::dot(c, rhat);
                        *err = distance::l2_sq(residuals.row(i), rhat).sqrt();
                        // The key from the residual itself, not from the matrix-product
                        // distance above: exact search bounds rely on it (DESIGN §4.5).
                        *key = distance::dot(residuals.row(i), residuals.row(i)).sqrt();
                    },
                );
        });
        progress(first + chunk.rows() as u64);
    }

    // Record indices (neighbour lists, the sort below) are u32, NO_ID = u32::MAX excluded.
    if ids.len() as u64 >= u32::MAX as u64 {
        return Err(BuildError::param(
            "spill",
            format!(
                "{} records (spill copies included) exceed the u32 record ids; lower --spill",
                ids.len()
            ),
        ));
    }
    // Final order: cluster, then key, then id.
    let mut order: Vec<u32> = (0..ids.len() as u32).collect();
    order.par_sort_unstable_by(|&a, &b| {
        let (a, b) = (a as usize, b as usize);
        clusters[a]
            .cmp(&clusters[b])
            .then(keys[a].total_cmp(&keys[b]))
            .then(ids[a].cmp(&ids[b]))
    });
    let permute_f32 = |v: &[f32]| order.iter().map(|&i| v[i as usize]).collect::<Vec<f32>>();
    let mut sorted_codes = Vec::with_capacity(codes.len());
    for &i in &order {
        sorted_codes.extend_from_slice(&codes[i as usize * m..(i as usize + 1) * m]);
    }
    let records = ids.len() as u64;
    Ok(Assignment {
        cluster_sizes: sizes.iter().map(|&s| s as u32).collect(),
        ids: order.iter().map(|&i| ids[i as usize]).collect(),
        keys: permute_f32(&keys),
        codes: Matrix::from_vec(sorted_codes, m)?,
        correction: permute_f32(&correction),
        error: permute_f32(&error),
        spilled: records - n,
        max_norm: max_norm_sq.sqrt(),
    })
}

//! k-means clustering: what are the anchors of a set of vectors?
//!
//! Plain L2 k-means (Lloyd, 1982) with k-means++ seeding (Arthur & Vassilvitskii, 2007) on a
//! seeded sample of the rows. The two steps are kept apart on purpose:
//!
//! - **assignment** ([`assign_blocks`]) labels every row with its nearest centroid, computed as
//!   matrix products: `argmin_j |c_j|² − 2 x·c_j` on blocks of rows (one sgemm per block),
//!   parallel over blocks on the caller's pool;
//! - **update** ([`update_centroids`]) recomputes each centroid as the f64 mean of its members,
//!   summed in row order, parallel over centroids.
//!
//! Because the update sums each cluster's members in row order from the label vector, the
//! result does not depend on how rayon splits the work: the same input, parameters and seed give
//! bitwise the same centroids for any thread count. A capacity-constrained (balanced) variant
//! only has to replace the assignment step.
//!
//! Empty clusters are re-seeded deterministically by splitting the largest cluster: its
//! centroid `c` becomes `c ± ε·s` (the FAISS rule) with `s` a per-dimension sign pattern drawn
//! from the seed, and the two halves keep half of the members each until the next assignment.

mod balanced;
mod nearest;
mod two_level;

pub use balanced::{BalancedKMeansParams, assign_capped, assign_capped_with};
pub use nearest::nearest_centroids;
pub use two_level::{
    CentroidSearch, GroupIndex, NearestParams, TwoLevel, augment_for_inner_product,
};

use rand::seq::index;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::data::{Matrix, MatrixView};
use crate::{distance, linalg};

/// Rows per matrix-product block in the assignment step.
pub const DEFAULT_BLOCK_ROWS: usize = 1024;

/// Relative perturbation used when an empty cluster is re-seeded by splitting the largest one.
const SPLIT_EPS: f32 = 1.0 / 1024.0;

/// RNG streams derived from [`KMeansParams::seed`], one per purpose, so that changing one
/// choice (e.g. the sample size) does not shift the random numbers of another.
const STREAM_SAMPLE: u64 = 1;
const STREAM_INIT: u64 = 2;
const STREAM_SPLIT: u64 = 3;

/// Errors of k-means training: all of them are bad input the caller can fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KMeansError {
    #[error("k must be at least 1")]
    KZero,
    #[error("k = {k} is larger than the {rows} training rows")]
    KTooLarge { k: usize, rows: usize },
    #[error("the training data is empty")]
    Empty,
    #[error("iters must be at least 1")]
    ZeroIters,
    #[error("the training data holds a non-finite value at row {row}")]
    NonFinite { row: usize },
}

/// Parameters of [`KMeansParams::train`].
#[derive(Debug, Clone, PartialEq)]
pub struct KMeansParams {
    /// Number of centroids.
    pub k: usize,
    /// Maximum number of Lloyd iterations (an iteration = one assignment + one update).
    /// Training stops earlier when no label changes.
    pub iters: usize,
    /// Seed of every random choice (sample, k-means++ draws, splits of empty clusters).
    pub seed: u64,
    /// At most this many rows, drawn without replacement, are used for training (`None`: all).
    /// Raised to `k` when smaller.
    pub sample: Option<usize>,
    /// At most this many of the training rows seed the centroids with k-means++ (`None`: all).
    /// k-means++ costs `O(init_sample · k · dim)`; raised to `k` when smaller.
    pub init_sample: Option<usize>,
    /// Rows per assignment block (one matrix product each).
    pub block_rows: usize,
    /// Seed with k-means++ (true) or with `k` distinct random training rows (false: much
    /// cheaper for many small problems, e.g. PQ codebooks, where Lloyd iterations do the work).
    pub plus_plus: bool,
}

impl KMeansParams {
    /// `k` centroids, 20 iterations, seed 0, all rows, k-means++ on at most `max(64·k, 16384)`
    /// rows.
    pub fn new(k: usize) -> Self {
        Self {
            k,
            iters: 20,
            seed: 0,
            sample: None,
            init_sample: Some((64 * k).max(16_384)),
            block_rows: DEFAULT_BLOCK_ROWS,
            plus_plus: true,
        }
    }

    /// Trains on `data` using `pool`. Deterministic: the same data, parameters and seed give
    /// bitwise-identical centroids for any size of `pool`.
    pub fn train(
        &self,
        data: MatrixView<'_, f32>,
        pool: &rayon::ThreadPool,
    ) -> Result<KMeans, KMeansError> {
        self.validate(data)?;
        let block_rows = self.block_rows.max(1);

        // The training rows: a seeded sample without replacement, kept in file order.
        let sampled: Option<Matrix<f32>> = match self.sample {
            Some(s) if s.max(self.k) < data.rows() => {
                let mut rng = rng_for(self.seed, STREAM_SAMPLE);
                Some(gather(
                    data,
                    sorted_sample(&mut rng, data.rows(), s.max(self.k)),
                ))
            }
            _ => None,
        };
        let train = sampled.as_ref().map_or(data, |m| m.view());

        let mut centroids = if self.plus_plus {
            self.init_plus_plus(train, pool)
        } else {
            let mut rng = rng_for(self.seed, STREAM_INIT);
            gather(train, sorted_sample(&mut rng, train.rows(), self.k))
        };
        let norms = linalg::row_norms_sq(train);
        let mut labels = vec![u32::MAX; train.rows()];
        let mut report = TrainReport::default();
        let mut split_rng = rng_for(self.seed, STREAM_SPLIT);

        for _ in 0..self.iters {
            let (new_labels, inertia) =
                assign_blocks(train, Some(&norms), centroids.view(), block_rows, pool);
            report.inertia.push(inertia);
            let changed = new_labels.iter().zip(&labels).any(|(a, b)| a != b);
            labels = new_labels;
            if !changed {
                report.converged = true;
                break;
            }
            let counts = update_centroids(train, &labels, &mut centroids, pool);
            report.splits += split_empty(&mut centroids, counts, &mut split_rng);
        }
        report.iterations = report.inertia.len();
        Ok(KMeans { centroids, report })
    }

    fn validate(&self, data: MatrixView<'_, f32>) -> Result<(), KMeansError> {
        if self.k == 0 {
            return Err(KMeansError::KZero);
        }
        if self.iters == 0 {
            return Err(KMeansError::ZeroIters);
        }
        if data.is_empty() {
            return Err(KMeansError::Empty);
        }
        if self.k > data.rows() {
            return Err(KMeansError::KTooLarge {
                k: self.k,
                rows: data.rows(),
            });
        }
        if let Some(row) = data
            .iter_rows()
            .position(|r| r.iter().any(|v| !v.is_finite()))
        {
            return Err(KMeansError::NonFinite { row });
        }
        Ok(())
    }

    /// k-means++ seeding on at most `init_sample` of the training rows: the first centre
    /// uniformly, each next one with probability proportional to the squared distance to the
    /// nearest chosen centre. The distance update is parallel (element-wise, so deterministic);
    /// the draw is a sequential f64 prefix scan.
    fn init_plus_plus(&self, train: MatrixView<'_, f32>, pool: &rayon::ThreadPool) -> Matrix<f32> {
        let mut rng = rng_for(self.seed, STREAM_INIT);
        let limit = self.init_sample.unwrap_or(usize::MAX).max(self.k);
        let sub: Option<Matrix<f32>> = (limit < train.rows())
            .then(|| gather(train, sorted_sample(&mut rng, train.rows(), limit)));
        let pts = sub.as_ref().map_or(train, |m| m.view());
        let (n, dim) = (pts.rows(), pts.dim());

        let mut centroids = Matrix::zeros(self.k, dim).expect("dim ≥ 1 (checked by the view)");
        let first = rng.random_range(0..n);
        centroids.row_mut(0).copy_from_slice(pts.row(first));
        let mut min_d = vec![f32::INFINITY; n];
        for c in 1..=self.k {
            let last = centroids.row(c - 1).to_vec();
            pool.install(|| {
                min_d
                    .par_chunks_mut(4096)
                    .enumerate()
                    .for_each(|(ci, chunk)| {
                        for (i, m) in chunk.iter_mut().enumerate() {
                            let d = distance::l2_sq(pts.row(ci * 4096 + i), &last);
                            if d < *m {
                                *m = d;
                            }
                        }
                    })
            });
            if c == self.k {
                break;
            }
            let total: f64 = min_d.iter().map(|&d| d as f64).sum();
            let pick = if total > 0.0 {
                let target = rng.random::<f64>() * total;
                let mut acc = 0.0f64;
                let mut pick = n - 1;
                for (i, &d) in min_d.iter().enumerate() {
                    acc += d as f64;
                    if acc > target && d > 0.0 {
                        pick = i;
                        break;
                    }
                }
                pick
            } else {
                // Fewer distinct points than k: duplicates; empty clusters get split later.
                rng.random_range(0..n)
            };
            centroids.row_mut(c).copy_from_slice(pts.row(pick));
        }
        centroids
    }
}

/// What happened during training.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainReport {
    /// Sum of squared distances of the training rows to their assigned centroid, measured at
    /// each assignment step (so `inertia[t]` belongs to the centroids after `t` updates).
    pub inertia: Vec<f64>,
    /// Assignment steps run.
    pub iterations: usize,
    /// Whether training stopped because no label changed.
    pub converged: bool,
    /// Empty clusters re-seeded by splitting the largest one.
    pub splits: usize,
}

/// A trained k-means model.
#[derive(Debug, Clone, PartialEq)]
pub struct KMeans {
    /// `k × dim`, row j is centroid j.
    pub centroids: Matrix<f32>,
    pub report: TrainReport,
}

impl KMeans {
    pub fn k(&self) -> usize {
        self.centroids.rows()
    }

    pub fn dim(&self) -> usize {
        self.centroids.dim()
    }

    /// The nearest centroid (L2) of every row of `data`. Ties go to the lower id.
    /// Panics when `data.dim() != self.dim()`.
    pub fn assign(&self, data: MatrixView<'_, f32>, pool: &rayon::ThreadPool) -> Vec<u32> {
        assert_eq!(data.dim(), self.dim(), "KMeans::assign: dimension mismatch");
        assign_blocks(data, None, self.centroids.view(), DEFAULT_BLOCK_ROWS, pool).0
    }

    /// Ids of the `n` centroids nearest to `x` by L2, nearest first (ties by lower id);
    /// `n` is capped at `k`. Panics when `x.len() != self.dim()`.
    pub fn nearest_n(&self, x: &[f32], n: usize) -> Vec<u32> {
        assert_eq!(x.len(), self.dim(), "KMeans::nearest_n: dimension mismatch");
        let mut d: Vec<(f32, u32)> = self
            .centroids
            .view()
            .iter_rows()
            .enumerate()
            .map(|(j, c)| (distance::l2_sq(x, c), j as u32))
            .collect();
        let n = n.min(d.len());
        let by = |a: &(f32, u32), b: &(f32, u32)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
        if n < d.len() && n > 0 {
            d.select_nth_unstable_by(n - 1, by);
        }
        d.truncate(n);
        d.sort_unstable_by(by);
        d.into_iter().map(|(_, j)| j).collect()
    }
}

/// Labels every row of `data` with its nearest centroid (ties to the lower id) and returns the
/// labels with the inertia (Σ squared distances; `|x|²` taken from `norms` when given, else
/// computed). One sgemm per block of `block_rows` rows, blocks in parallel on `pool`.
pub fn assign_blocks(
    data: MatrixView<'_, f32>,
    norms: Option<&[f32]>,
    centroids: MatrixView<'_, f32>,
    block_rows: usize,
    pool: &rayon::ThreadPool,
) -> (Vec<u32>, f64) {
    let c_norms = linalg::row_norms_sq(centroids);
    let k = centroids.rows();
    let block_rows = block_rows.max(1);
    let mut labels = vec![0u32; data.rows()];
    let partial: Vec<f64> = pool.install(|| {
        labels
            .par_chunks_mut(block_rows)
            .enumerate()
            .map(|(b, out)| {
                let start = b * block_rows;
                let block = data.slice_rows(start, start + out.len());
                let mut dots = Vec::new();
                linalg::dot_products(block, centroids, &mut dots);
                let mut inertia = 0.0f64;
                for (i, label) in out.iter_mut().enumerate() {
                    let row = &dots[i * k..(i + 1) * k];
                    let (mut best, mut best_d) = (0usize, f32::INFINITY);
                    for (j, (&dot, &cn)) in row.iter().zip(&c_norms).enumerate() {
                        let d = cn - 2.0 * dot;
                        if d < best_d {
                            best = j;
                            best_d = d;
                        }
                    }
                    *label = best as u32;
                    let x_norm = match norms {
                        Some(n) => n[start + i],
                        None => distance::dot(block.row(i), block.row(i)),
                    };
                    inertia += (x_norm + best_d).max(0.0) as f64;
                }
                inertia
            })
            .collect()
    });
    // Fixed-order reduction, so the inertia does not depend on the thread count either.
    (labels, partial.iter().sum())
}

/// Replaces each centroid by the mean of its members (f64 sums in row order) and returns the
/// member counts. Centroids of empty clusters are left unchanged.
pub fn update_centroids(
    data: MatrixView<'_, f32>,
    labels: &[u32],
    centroids: &mut Matrix<f32>,
    pool: &rayon::ThreadPool,
) -> Vec<usize> {
    assert_eq!(
        labels.len(),
        data.rows(),
        "update_centroids: one label per row"
    );
    let members = members_by_label(labels, centroids.rows());
    let dim = data.dim();
    pool.install(|| {
        centroids
            .as_mut_slice()
            .par_chunks_mut(dim)
            .zip(members.par_iter())
            .for_each(|(c, rows)| {
                if rows.is_empty() {
                    return;
                }
                let mut sum = vec![0.0f64; dim];
                for &r in rows {
                    for (s, &v) in sum.iter_mut().zip(data.row(r as usize)) {
                        *s += v as f64;
                    }
                }
                let inv = 1.0 / rows.len() as f64;
                for (c, s) in c.iter_mut().zip(&sum) {
                    *c = (s * inv) as f32;
                }
            })
    });
    members.iter().map(Vec::len).collect()
}

/// Row ids per label, each list in increasing row order (a counting sort).
pub fn members_by_label(labels: &[u32], k: usize) -> Vec<Vec<u32>> {
    let mut counts = vec![0usize; k];
    for &l in labels {
        counts[l as usize] += 1;
    }
    let mut members: Vec<Vec<u32>> = counts.iter().map(|&c| Vec::with_capacity(c)).collect();
    for (i, &l) in labels.iter().enumerate() {
        members[l as usize].push(i as u32);
    }
    members
}

/// Re-seeds every empty cluster (in id order) by splitting the currently largest cluster
/// (ties to the lower id): `c_empty = c + ε·|c|·s`, `c_largest = c − ε·|c|·s`, with `s` a
/// ±1 pattern. Returns the number of splits.
fn split_empty(centroids: &mut Matrix<f32>, mut counts: Vec<usize>, rng: &mut ChaCha8Rng) -> usize {
    let mut splits = 0;
    for e in 0..counts.len() {
        if counts[e] != 0 {
            continue;
        }
        let (big, &big_count) = counts
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0)))
            .expect("k ≥ 1");
        if big_count < 2 {
            break; // nothing left to split
        }
        let src = centroids.row(big).to_vec();
        let scale = SPLIT_EPS * distance::dot(&src, &src).sqrt().max(f32::MIN_POSITIVE);
        let signs: Vec<f32> = (0..src.len())
            .map(|_| if rng.random::<bool>() { scale } else { -scale })
            .collect();
        for (a, (&c, &s)) in centroids.row_mut(e).iter_mut().zip(src.iter().zip(&signs)) {
            *a = c + s;
        }
        for (a, (&c, &s)) in centroids
            .row_mut(big)
            .iter_mut()
            .zip(src.iter().zip(&signs))
        {
            *a = c - s;
        }
        counts[e] = big_count / 2;
        counts[big] = big_count - big_count / 2;
        splits += 1;
    }
    splits
}

fn rng_for(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

fn sorted_sample(rng: &mut ChaCha8Rng, n: usize, amount: usize) -> Vec<usize> {
    let mut ids = index::sample(rng, n, amount).into_vec();
    ids.sort_unstable();
    ids
}

fn gather(data: MatrixView<'_, f32>, ids: Vec<usize>) -> Matrix<f32> {
    let mut out = Vec::with_capacity(ids.len() * data.dim());
    for i in ids {
        out.extend_from_slice(data.row(i));
    }
    Matrix::from_vec(out, data.dim()).expect("rows of a valid view")
}

#[cfg(test)]
mod tests;

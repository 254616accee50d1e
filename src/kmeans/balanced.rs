//! Balanced k-means: Lloyd iterations whose assignment step respects a cap on cluster size.
//!
//! An index reads and scores whole clusters, so one oversized cluster makes every query that
//! probes it slow. Each assignment step computes every row's `t` nearest centroids and fills
//! clusters greedily: rows whose second choice is much worse than their first (largest
//! regret `d₂ − d₁`) are placed first; a row whose `t` choices are all full goes to the
//! nearest centroid that still has room. The update step is the plain mean
//! ([`super::update_centroids`]), so the result stays deterministic for a seed and thread count.

use rand::SeedableRng;
use rand::seq::index;
use rand_chacha::ChaCha8Rng;

use super::two_level::{CentroidSearch, NearestParams};
use super::{KMeans, KMeansError, KMeansParams, TrainReport, update_centroids};
use crate::data::{Matrix, MatrixView};
use crate::distance;

/// Parameters of balanced k-means.
#[derive(Debug, Clone, PartialEq)]
pub struct BalancedKMeansParams {
    /// k, iterations, seed, training sample.
    pub kmeans: KMeansParams,
    /// Cap on cluster size as a multiple of the mean size `n / k` (≥ 1).
    pub max_size_factor: f32,
    /// Candidate centroids per row in the capacity-constrained assignment.
    pub candidates: usize,
    /// How the candidates are found: exact scan, or two levels when k is large.
    pub nearest: NearestParams,
}

impl BalancedKMeansParams {
    pub fn new(k: usize) -> Self {
        Self {
            kmeans: KMeansParams::new(k),
            max_size_factor: 1.5,
            candidates: 8,
            nearest: NearestParams::default(),
        }
    }

    /// The cap for `n` rows.
    pub fn cap(&self, n: usize) -> usize {
        let k = self.kmeans.k.max(1);
        // The factor is rounded to 1e-4 so that an f32 like 1.2 means 1.2, not 1.2000000477.
        let factor = (self.max_size_factor.max(1.0) as f64 * 1e4).round() / 1e4;
        ((n as f64 * factor) / k as f64).ceil() as usize
    }

    /// Trains on `data` (or its seeded sample, see [`KMeansParams::sample`]) on `pool`.
    /// Initial centroids are a seeded random choice of rows (k-means++ costs `O(n·k·d)`
    /// sequential steps, too slow for the thousands of clusters an index uses); the
    /// iterations then do the work. Every cluster of the training rows ends at most at
    /// [`Self::cap`] rows.
    pub fn train(
        &self,
        data: MatrixView<'_, f32>,
        pool: &rayon::ThreadPool,
    ) -> Result<KMeans, KMeansError> {
        let p = &self.kmeans;
        if p.k == 0 {
            return Err(KMeansError::KZero);
        }
        if p.iters == 0 {
            return Err(KMeansError::ZeroIters);
        }
        if data.is_empty() {
            return Err(KMeansError::Empty);
        }
        if p.k > data.rows() {
            return Err(KMeansError::KTooLarge {
                k: p.k,
                rows: data.rows(),
            });
        }
        if let Some(row) = data
            .iter_rows()
            .position(|r| r.iter().any(|v| !v.is_finite()))
        {
            return Err(KMeansError::NonFinite { row });
        }
        let mut rng = ChaCha8Rng::seed_from_u64(p.seed ^ 0xBA1A_4CED);
        let sampled: Option<Matrix<f32>> = match p.sample {
            Some(s) if s.max(p.k) < data.rows() => {
                let mut rows = index::sample(&mut rng, data.rows(), s.max(p.k)).into_vec();
                rows.sort_unstable();
                Some(gather(data, &rows))
            }
            _ => None,
        };
        let train = sampled.as_ref().map_or(data, |m| m.view());
        let mut init_rows = index::sample(&mut rng, train.rows(), p.k).into_vec();
        init_rows.sort_unstable();
        let mut centroids = gather(train, &init_rows);
        let cap = self.cap(train.rows());
        let mut labels = vec![u32::MAX; train.rows()];
        let mut report = TrainReport::default();
        for it in 0..p.iters {
            let mut np = self.nearest;
            np.seed = np.seed.wrapping_add(it as u64);
            let search = CentroidSearch::new(centroids.view(), &np, pool);
            let (new_labels, inertia) =
                pool.install(|| assign_capped_with(train, &search, cap, self.candidates));
            report.inertia.push(inertia);
            let changed = new_labels != labels;
            labels = new_labels;
            if !changed {
                report.converged = true;
                break;
            }
            let counts = update_centroids(train, &labels, &mut centroids, pool);
            report.splits += counts.iter().filter(|&&c| c == 0).count();
        }
        report.iterations = report.inertia.len();
        Ok(KMeans { centroids, report })
    }
}

/// Capacity-constrained assignment of every row (see the module doc), candidates by an exact
/// scan. Returns the labels and the inertia (Σ squared distances to the assigned centroid).
/// Runs on the current pool.
pub fn assign_capped(
    data: MatrixView<'_, f32>,
    centroids: MatrixView<'_, f32>,
    cap: usize,
    candidates: usize,
) -> (Vec<u32>, f64) {
    assign_capped_with(data, &CentroidSearch::exact(centroids), cap, candidates)
}

/// [`assign_capped`] with the candidates found by `search` (exact or two-level).
pub fn assign_capped_with(
    data: MatrixView<'_, f32>,
    search: &CentroidSearch<'_>,
    cap: usize,
    candidates: usize,
) -> (Vec<u32>, f64) {
    let centroids = search.centroids();
    let k = centroids.rows();
    let n = data.rows();
    assert!(cap.saturating_mul(k) >= n, "assign_capped: cap × k < n");
    let t = candidates.clamp(1, k);
    let (ids, dists) = search.nearest(data, t);
    let regret = |i: usize| {
        if t >= 2 {
            dists[i * t + 1] - dists[i * t]
        } else {
            0.0
        }
    };
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_unstable_by(|&a, &b| {
        regret(b as usize)
            .total_cmp(&regret(a as usize))
            .then(a.cmp(&b))
    });
    let mut sizes = vec![0usize; k];
    let mut labels = vec![0u32; n];
    let mut inertia = 0.0f64;
    for &i in &order {
        let i = i as usize;
        let choice = (0..t).find(|&j| sizes[ids[i * t + j] as usize] < cap);
        let (c, d) = match choice {
            Some(j) => (ids[i * t + j] as usize, dists[i * t + j]),
            None => {
                // All t candidates are full: the nearest centroid with room.
                let x = data.row(i);
                (0..k)
                    .filter(|&c| sizes[c] < cap)
                    .map(|c| (c, distance::l2_sq(x, centroids.row(c))))
                    .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))
                    .expect("cap × k ≥ n leaves room")
            }
        };
        sizes[c] += 1;
        labels[i] = c as u32;
        inertia += d as f64;
    }
    (labels, inertia)
}

fn gather(data: MatrixView<'_, f32>, rows: &[usize]) -> Matrix<f32> {
    let mut out = Vec::with_capacity(rows.len() * data.dim());
    for &r in rows {
        out.extend_from_slice(data.row(r));
    }
    Matrix::from_vec(out, data.dim()).expect("dim >= 1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn skewed(n: usize, dim: usize) -> Matrix<f32> {
        // 70% of the rows in one tight blob, the rest spread out: plain k-means would give
        // the blob few centroids and the spread rows large clusters.
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut v = Vec::with_capacity(n * dim);
        for i in 0..n {
            let spread = if i % 10 < 7 { 0.1 } else { 5.0 };
            for _ in 0..dim {
                v.push(rng.random_range(-1.0f32..1.0) * spread);
            }
        }
        Matrix::from_vec(v, dim).unwrap()
    }

    #[test]
    fn respects_the_cap_and_is_deterministic() {
        let data = skewed(4000, 8);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let mut p = BalancedKMeansParams::new(40);
        p.kmeans.iters = 8;
        p.max_size_factor = 1.2;
        let km = p.train(data.view(), &pool).unwrap();
        let cap = p.cap(4000);
        assert_eq!(cap, 120);
        let (labels, _) = pool.install(|| assign_capped(data.view(), km.centroids.view(), cap, 8));
        let mut sizes = vec![0usize; 40];
        for &l in &labels {
            sizes[l as usize] += 1;
        }
        assert!(sizes.iter().all(|&s| s <= cap), "sizes {sizes:?}");
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        assert_eq!(p.train(data.view(), &one).unwrap().centroids, km.centroids);
    }

    #[test]
    fn rows_go_to_their_nearest_centroid_when_there_is_room() {
        let data = skewed(500, 4);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let km = BalancedKMeansParams::new(5)
            .train(data.view(), &pool)
            .unwrap();
        let (capped, _) = pool.install(|| assign_capped(data.view(), km.centroids.view(), 500, 4));
        let plain = km.assign(data.view(), &pool);
        assert_eq!(capped, plain);
    }

    #[test]
    fn errors() {
        let data = skewed(10, 2);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        assert_eq!(
            BalancedKMeansParams::new(0)
                .train(data.view(), &pool)
                .unwrap_err(),
            KMeansError::KZero
        );
        assert!(matches!(
            BalancedKMeansParams::new(11).train(data.view(), &pool),
            Err(KMeansError::KTooLarge { .. })
        ));
    }
}

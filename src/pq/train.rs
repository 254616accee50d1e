//! Training the codebooks: one k-means with 256 centroids per subspace.

use rand::SeedableRng;
use rand::seq::index;
use rand_chacha::ChaCha8Rng;

use super::{CODEWORDS, PqError, ProductQuantizer, check_bounds, even_bounds};
use crate::data::{Matrix, MatrixView};
use crate::kmeans::KMeansParams;

/// Parameters of PQ training.
#[derive(Debug, Clone, PartialEq)]
pub struct PqParams {
    /// Number of subspaces `M` (bytes per code). Ignored when `bounds` is given.
    pub subspaces: usize,
    /// Explicit subspace boundaries (`0 = b_0 < … < b_M = dim`), e.g. aligned to the blocks of
    /// multi-vector objects.
    pub bounds: Option<Vec<usize>>,
    /// k-means iterations per subspace.
    pub iters: usize,
    /// At most this many training rows (a seeded sample).
    pub sample: usize,
    pub seed: u64,
}

impl PqParams {
    pub fn new(subspaces: usize) -> Self {
        Self {
            subspaces,
            bounds: None,
            iters: 15,
            sample: 65_536,
            seed: 0,
        }
    }

    /// Learns codebooks from `data` (typically residuals to cluster centroids) on `pool`.
    /// With fewer than 256 distinct training rows, unused codewords repeat the last trained
    /// one (they are never the unique nearest, so codes stay well defined).
    pub fn train(
        &self,
        data: MatrixView<'_, f32>,
        pool: &rayon::ThreadPool,
    ) -> Result<ProductQuantizer, PqError> {
        let dim = data.dim();
        let bounds = match &self.bounds {
            Some(b) => {
                check_bounds(b, dim)?;
                b.clone()
            }
            None => even_bounds(dim, self.subspaces)?,
        };
        if data.is_empty() {
            return Err(PqError::Empty);
        }
        let rows: Vec<usize> = if data.rows() > self.sample.max(CODEWORDS) {
            let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x5051_5051);
            let mut v = index::sample(&mut rng, data.rows(), self.sample.max(CODEWORDS)).into_vec();
            v.sort_unstable();
            v
        } else {
            (0..data.rows()).collect()
        };
        let mut codebooks = Vec::with_capacity(CODEWORDS * dim);
        for m in 0..bounds.len() - 1 {
            let (lo, hi) = (bounds[m], bounds[m + 1]);
            let mut sub = Vec::with_capacity(rows.len() * (hi - lo));
            for &r in &rows {
                sub.extend_from_slice(&data.row(r)[lo..hi]);
            }
            let sub = Matrix::from_vec(sub, hi - lo).expect("hi > lo");
            let k = CODEWORDS.min(sub.rows());
            let mut params = KMeansParams::new(k);
            params.iters = self.iters;
            params.seed = self.seed.wrapping_add(m as u64);
            params.plus_plus = false;
            let km = params
                .train(sub.view(), pool)
                .map_err(|source| PqError::KMeans {
                    subspace: m,
                    source,
                })?;
            codebooks.extend_from_slice(km.centroids.as_slice());
            let last = km.centroids.row(k - 1).to_vec();
            for _ in k..CODEWORDS {
                codebooks.extend_from_slice(&last);
            }
        }
        ProductQuantizer::from_parts(dim, bounds, codebooks)
    }
}

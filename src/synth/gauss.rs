//! In-distribution data: a mixture of anisotropic Gaussians (metric l2).
//!
//! Model (all draws from the seed, see `docs/GENERATOR.md`):
//! - cluster centres `c_k ~ N(0, centre_spread² I)`;
//! - per-cluster, per-dimension scales `s_{k,d} = within_spread · 10^(anisotropy · z)`,
//!   `z ~ N(0,1)`, so each cluster is stretched along its own axes;
//! - unequal cluster weights `w_k ∝ 10^(weight_skew · z)`;
//! - a row: `k ~ w`, `x = c_k + s_k ⊙ z`, `z ~ N(0, I)`.
//!
//! Base rows, queries and training queries are independent draws from the same mixture (three
//! random streams), so queries are held out, never copies of base rows.

use std::ops::Range;

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use super::{
    Chunk, KIND_GAUSS, Split, SplitSizes, SynthError, SynthModel, TAG_MODEL, cumulative, draw,
    param_error, row_rng,
};
use crate::data::Matrix;

/// Parameters of the Gaussian-mixture generator.
#[derive(Debug, Clone, PartialEq)]
pub struct GaussParams {
    /// Dimension.
    pub dim: usize,
    /// Mixture components.
    pub clusters: usize,
    /// Seed of every random draw.
    pub seed: u64,
    /// Standard deviation of the centre coordinates.
    pub centre_spread: f32,
    /// Typical within-cluster standard deviation per dimension.
    pub within_spread: f32,
    /// log10 standard deviation of the per-cluster, per-dimension scales (0 = isotropic).
    pub anisotropy: f32,
    /// log10 standard deviation of the cluster weights (0 = equal weights).
    pub weight_skew: f32,
}

impl Default for GaussParams {
    /// 128-d (SIFT-like), 256 clusters whose within-cluster spread is half the spread of the
    /// centres, scales varying ×2 (one log10 sd of 0.3) between axes, weights varying ×3.
    fn default() -> Self {
        Self {
            dim: 128,
            clusters: 256,
            seed: 0,
            centre_spread: 1.0,
            within_spread: 0.5,
            anisotropy: 0.3,
            weight_skew: 0.5,
        }
    }
}

/// A built Gaussian mixture: O(clusters · dim) numbers.
#[derive(Debug, Clone)]
pub struct GaussModel {
    params: GaussParams,
    sizes: SplitSizes,
    centres: Matrix<f32>,
    scales: Matrix<f32>,
    cum_weights: Vec<f64>,
}

impl GaussModel {
    /// The model for `params` and split sizes `sizes`; fails on parameters out of range.
    pub fn new(params: GaussParams, sizes: SplitSizes) -> Result<Self, SynthError> {
        if params.dim == 0 {
            return Err(param_error("dim", "must be at least 1"));
        }
        if params.clusters == 0 {
            return Err(param_error("clusters", "must be at least 1"));
        }
        for (name, v) in [
            ("centre_spread", params.centre_spread),
            ("within_spread", params.within_spread),
            ("anisotropy", params.anisotropy),
            ("weight_skew", params.weight_skew),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(param_error(name, format!("{v} must be finite and ≥ 0")));
            }
        }
        let (k, dim) = (params.clusters, params.dim);
        let mut rng = row_rng(params.seed, TAG_MODEL, 0, KIND_GAUSS);
        let mut normal = || -> f32 { StandardNormal.sample(&mut rng) };
        let centres: Vec<f32> = (0..k * dim)
            .map(|_| params.centre_spread * normal())
            .collect();
        let scales: Vec<f32> = (0..k * dim)
            .map(|_| params.within_spread * 10f32.powf(params.anisotropy * normal()))
            .collect();
        let weights: Vec<f64> = (0..k)
            .map(|_| 10f64.powf((params.weight_skew * normal()) as f64))
            .collect();
        Ok(Self {
            centres: Matrix::from_vec(centres, dim).expect("k·dim values"),
            scales: Matrix::from_vec(scales, dim).expect("k·dim values"),
            cum_weights: cumulative(&weights),
            params,
            sizes,
        })
    }

    /// The parameters it was made with.
    pub fn params(&self) -> &GaussParams {
        &self.params
    }

    /// The mixture component of `row` of `split` and the row itself, written into `out`.
    fn row_into(&self, split: Split, row: u64, out: &mut [f32]) -> usize {
        let mut rng = row_rng(self.params.seed, split.tag(), row, KIND_GAUSS);
        let k = draw(&self.cum_weights, rng.random::<f64>());
        let (c, s) = (self.centres.row(k), self.scales.row(k));
        for ((o, &c), &s) in out.iter_mut().zip(c).zip(s) {
            let z: f32 = StandardNormal.sample(&mut rng);
            *o = c + s * z;
        }
        k
    }

    /// The mixture component each row of `range` was drawn from (for tests and statistics).
    pub fn components(&self, split: Split, range: Range<u64>) -> Vec<u32> {
        let mut buf = vec![0.0; self.params.dim];
        range
            .map(|r| self.row_into(split, r, &mut buf) as u32)
            .collect()
    }
}

impl SynthModel for GaussModel {
    fn dim(&self) -> usize {
        self.params.dim
    }

    fn sizes(&self) -> SplitSizes {
        self.sizes
    }

    fn has_partners(&self) -> bool {
        false
    }

    fn rows(&self, split: Split, range: Range<u64>) -> Chunk {
        let total = self.sizes.rows(split);
        assert!(
            range.start <= range.end && range.end <= total,
            "rows {range:?} outside the {total} rows of {split:?}"
        );
        let dim = self.params.dim;
        let mut m = Matrix::zeros((range.end - range.start) as usize, dim).expect("dim ≥ 1");
        for (i, r) in range.clone().enumerate() {
            self.row_into(split, r, m.row_mut(i));
        }
        Chunk {
            first_row: range.start,
            vectors: m,
            partners: None,
        }
    }
}

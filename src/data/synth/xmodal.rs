//! Cross-modal data: an 'image' base and 'text' queries in one unit-norm space, imitating
//! CLIP-style pairs (metric ip / cosine). The numbers it imitates were measured on the real
//! FashionCLIP fixture `shared/data/shopsphere-xmodal`; `docs/GENERATOR.md` has the formulas
//! and the measured comparison.
//!
//! Model, before normalisation (`⊙` is the element-wise product, every `z ~ N(0, I)` fresh):
//! - per-dimension variance ratio image/text `ρ_d`: bulk `10^(log10 median + spread · z)`
//!   clamped to the range, plus `round(ratio_outlier_fraction · dim)` outlier dimensions
//!   log-uniform over the range (the first two at its ends);
//! - image per-dimension variance `v_d = V_I · g_d / Σ g`,
//!   `g_d = 10^(image_dim_spread · z) · sqrt(ρ_d)`, `V_I = 1 − image_mean_norm²` (so raw rows
//!   have norm ≈ 1; the `sqrt(ρ_d)` splits an extreme ratio evenly between the modalities);
//! - image mixture in an r-dimensional latent space (r = `latent_dim`): centres
//!   `c_k = sqrt(cluster_share) · z`, within-cluster scales
//!   `s_{k,j} = sqrt(1 − cluster_share) · 10^(anisotropy · z) / m` (`m` keeps the mean
//!   variance), weights `∝ 10^(weight_skew · z)`; loadings `L` (`dim × r`, Gaussian rows scaled
//!   to norm `sqrt(λ · v_d)`, λ = `latent_share`) and a residual sd `e_d = sqrt((1 − λ) v_d)`;
//! - image row: `k ~ w`, `y = c_k + s_k ⊙ z_r`, `x_c = L y + e ⊙ z_D`, `x = normalise(μ_I + x_c)`;
//! - text row from partner row `p` (its draws `y_p`, `z_p`), η = `query_noise`:
//!   `ỹ = sqrt(1 − η) y_p + sqrt(η) z'_r`, `z̃ = sqrt(1 − η) z_p + sqrt(η) z'_D`,
//!   `t = normalise(μ_T + ρ^(−1/2) ⊙ (L ỹ + e ⊙ z̃))`; so `Var(t_d) ≈ v_d / ρ_d` and the
//!   partner shares a fraction `1 − η` of the text's variation;
//! - means: `|μ_I| = image_mean_norm`, `|μ_T| = sqrt(1 − Σ v_d/ρ_d)`, and the angle between
//!   them chosen so that `|μ_I − μ_T| = modality_gap`.
//!
//! Queries and training queries take their partners from one keyed permutation of the base
//! rows (queries at positions `0..queries`, training at the following ones), so no two queries
//! share a partner and the two splits never do.

use std::ops::Range;

use rand::seq::index;
use rand::{Rng, RngCore};
use rand_distr::{Distribution, StandardNormal};

use super::perm::{Permutation, splitmix64};
use super::{
    Chunk, KIND_XMODAL, Split, SplitSizes, SynthError, SynthModel, TAG_MODEL, cumulative, draw,
    normalize, param_error, random_unit, row_rng,
};
use crate::data::Matrix;
use crate::distance;

/// Parameters of the cross-modal generator. Defaults imitate the FashionCLIP fixture.
#[derive(Debug, Clone, PartialEq)]
pub struct XmodalParams {
    pub dim: usize,
    /// Mixture components of the image modality.
    pub clusters: usize,
    pub seed: u64,
    /// Target `|mean(image) − mean(text)|` of the unit-normalised clouds (real: 0.877).
    pub modality_gap: f32,
    /// Target `|mean(image)|` of the unit-normalised image cloud (real: 0.742). Fixes the image
    /// variance budget `V_I = 1 − image_mean_norm²`.
    pub image_mean_norm: f32,
    /// log10 standard deviation of the image per-dimension variances.
    pub image_dim_spread: f32,
    /// Dimension r of the latent space the image mixture lives in (its intrinsic dimension).
    pub latent_dim: usize,
    /// Share of each dimension's image variance carried by the latent mixture; the rest is
    /// independent per-dimension noise.
    pub latent_share: f32,
    /// Share of the latent variance that lies between mixture centres (the rest is within).
    pub cluster_share: f32,
    /// log10 standard deviation of the per-cluster, per-dimension within-cluster scales.
    pub anisotropy: f32,
    /// log10 standard deviation of the mixture weights.
    pub weight_skew: f32,
    /// Median of the per-dimension variance ratio image/text (real: 0.73).
    pub variance_ratio_median: f32,
    /// log10 standard deviation of the bulk of the ratios.
    pub variance_ratio_spread: f32,
    /// Smallest and largest ratio (real: 0.005 and 21.6): bulk ratios are clamped to it, and
    /// when there are at least two outlier dimensions, one sits at each end.
    pub variance_ratio_range: (f32, f32),
    /// Fraction of dimensions whose ratio is drawn log-uniformly over the whole range
    /// (`round(fraction · dim)` of them: 5 of 512, 2 of 200, none below 150 at 0.01).
    pub ratio_outlier_fraction: f32,
    /// η ∈ [0, 1): the share of each text dimension's variance that is noise independent of
    /// the partner. Larger η: the partner is less often the nearest base row, and a query's
    /// neighbours spread over more clusters.
    pub query_noise: f32,
}

impl Default for XmodalParams {
    fn default() -> Self {
        Self {
            dim: 512,
            clusters: 256,
            seed: 0,
            modality_gap: 0.877,
            image_mean_norm: 0.742,
            image_dim_spread: 0.3,
            latent_dim: 48,
            latent_share: 0.95,
            cluster_share: 0.8,
            anisotropy: 0.2,
            weight_skew: 0.3,
            variance_ratio_median: 0.73,
            variance_ratio_spread: 0.1,
            variance_ratio_range: (0.005, 21.6),
            ratio_outlier_fraction: 0.01,
            query_noise: 0.6,
        }
    }
}

/// A built cross-modal model: O(clusters · dim) numbers.
#[derive(Debug, Clone)]
pub struct XmodalModel {
    params: XmodalParams,
    sizes: SplitSizes,
    image_mean: Vec<f32>,
    text_mean: Vec<f32>,
    /// Latent mixture centres and within-cluster scales, `clusters × latent_dim`.
    centres: Matrix<f32>,
    scales: Matrix<f32>,
    /// `dim × latent_dim`: row d maps the latent vector to dimension d.
    loadings: Matrix<f32>,
    /// Standard deviation of the diagonal residual per dimension.
    residual: Vec<f32>,
    cum_weights: Vec<f64>,
    /// Per-dimension target variance ratio image/text, ρ_d.
    ratio: Vec<f32>,
    /// `1/sqrt(ρ_d)`: the text's per-dimension gain over the image.
    text_gain: Vec<f32>,
    partners: Permutation,
}

impl XmodalModel {
    pub fn new(params: XmodalParams, sizes: SplitSizes) -> Result<Self, SynthError> {
        let p = &params;
        if p.dim < 2 {
            return Err(param_error("dim", "must be at least 2"));
        }
        if p.clusters == 0 {
            return Err(param_error("clusters", "must be at least 1"));
        }
        if sizes.base == 0 || sizes.base > u64::from(u32::MAX) {
            return Err(param_error("base rows", "must be in 1..=u32::MAX"));
        }
        if sizes.queries + sizes.training > sizes.base {
            return Err(param_error(
                "queries + training",
                format!(
                    "{} + {} queries need as many distinct partner rows, the base has {}",
                    sizes.queries, sizes.training, sizes.base
                ),
            ));
        }
        let unit = |name, v: f32, max_inclusive: bool| {
            let ok = v.is_finite() && v >= 0.0 && (v < 1.0 || (max_inclusive && v == 1.0));
            if ok {
                Ok(())
            } else {
                Err(param_error(name, format!("{v} is outside [0, 1)")))
            }
        };
        unit("image_mean_norm", p.image_mean_norm, false)?;
        unit("cluster_share", p.cluster_share, true)?;
        unit("latent_share", p.latent_share, true)?;
        if p.latent_dim == 0 {
            return Err(param_error("latent_dim", "must be at least 1"));
        }
        unit("query_noise", p.query_noise, false)?;
        unit("ratio_outlier_fraction", p.ratio_outlier_fraction, true)?;
        for (name, v) in [
            ("image_dim_spread", p.image_dim_spread),
            ("anisotropy", p.anisotropy),
            ("weight_skew", p.weight_skew),
            ("variance_ratio_spread", p.variance_ratio_spread),
            ("modality_gap", p.modality_gap),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(param_error(name, format!("{v} must be finite and ≥ 0")));
            }
        }
        let (lo, hi) = p.variance_ratio_range;
        if !(lo.is_finite() && hi.is_finite() && 0.0 < lo && lo <= hi) {
            return Err(param_error(
                "variance_ratio_range",
                format!("({lo}, {hi}) must satisfy 0 < min ≤ max"),
            ));
        }
        if !(lo <= p.variance_ratio_median && p.variance_ratio_median <= hi) {
            return Err(param_error(
                "variance_ratio_median",
                format!("{} is outside the range", p.variance_ratio_median),
            ));
        }

        let (dim, k) = (p.dim, p.clusters);
        let mut rng = row_rng(p.seed, TAG_MODEL, 0, KIND_XMODAL);
        let normal = |rng: &mut rand_chacha::ChaCha8Rng| -> f64 {
            let z: f64 = StandardNormal.sample(rng);
            z
        };

        // Variance ratios image/text.
        let (llo, lhi) = ((lo as f64).log10(), (hi as f64).log10());
        let lmed = (p.variance_ratio_median as f64).log10();
        let mut log_ratio: Vec<f64> = (0..dim)
            .map(|_| (lmed + p.variance_ratio_spread as f64 * normal(&mut rng)).clamp(llo, lhi))
            .collect();
        // round(fraction · dim) outlier dimensions (none for small dim, where a single extreme
        // dimension would dominate the text variance); the first two take the range's ends.
        let outliers = (p.ratio_outlier_fraction as f64 * dim as f64).round() as usize;
        let outlier_dims = index::sample(&mut rng, dim, outliers).into_vec();
        for (i, &d) in outlier_dims.iter().enumerate() {
            log_ratio[d] = match i {
                0 => llo,
                1 => lhi,
                _ => llo + (lhi - llo) * rng.random::<f64>(),
            };
        }
        let ratio: Vec<f64> = log_ratio.iter().map(|l| 10f64.powf(*l)).collect();

        // Image per-dimension variances: a log-normal profile, tilted by sqrt(ρ_d) so that a
        // dimension's ratio is split evenly between the two modalities (as measured on the
        // fixture: where the ratio is extreme, the image variance is as far below the median
        // as the text variance is above it), then scaled to the budget V_I.
        let a = p.image_mean_norm as f64;
        let v_image = 1.0 - a * a;
        let g: Vec<f64> = ratio
            .iter()
            .map(|r| 10f64.powf(p.image_dim_spread as f64 * normal(&mut rng)) * r.sqrt())
            .collect();
        let g_sum: f64 = g.iter().sum();
        let var: Vec<f64> = g.iter().map(|gd| v_image * gd / g_sum).collect();

        // Image mixture in an r-dimensional latent space (unit variance per latent axis),
        // mapped to the D dimensions by loadings whose rows carry latent_share · v_d, plus a
        // diagonal residual carrying the rest.
        let r = p.latent_dim;
        let share = p.cluster_share as f64;
        let aniso_ln = p.anisotropy as f64 * std::f64::consts::LN_10;
        // E[10^(2·anisotropy·z)] = exp(2·(anisotropy·ln 10)²): divide it out of the variance.
        let aniso_norm = (2.0 * aniso_ln * aniso_ln).exp().sqrt();
        let mut centres = Vec::with_capacity(k * r);
        let mut scales = Vec::with_capacity(k * r);
        for _ in 0..k {
            for _ in 0..r {
                centres.push((share.sqrt() * normal(&mut rng)) as f32);
            }
            for _ in 0..r {
                let s = (1.0 - share).sqrt() * (aniso_ln * normal(&mut rng)).exp();
                scales.push((s / aniso_norm) as f32);
            }
        }
        let lambda = p.latent_share as f64;
        let mut loadings = Vec::with_capacity(dim * r);
        for vd in &var {
            let row: Vec<f64> = (0..r).map(|_| normal(&mut rng)).collect();
            let norm = row
                .iter()
                .map(|x| x * x)
                .sum::<f64>()
                .sqrt()
                .max(f64::MIN_POSITIVE);
            let target = (lambda * vd).sqrt();
            loadings.extend(row.iter().map(|x| (x / norm * target) as f32));
        }
        let residual: Vec<f32> = var
            .iter()
            .map(|vd| ((1.0 - lambda) * vd).sqrt() as f32)
            .collect();
        let weights: Vec<f64> = (0..k)
            .map(|_| 10f64.powf(p.weight_skew as f64 * normal(&mut rng)))
            .collect();

        // Text variance budget and the two means.
        let v_text: f64 = var.iter().zip(&ratio).map(|(v, r)| v / r).sum();
        if v_text >= 1.0 {
            return Err(param_error(
                "variance_ratio_median",
                format!(
                    "the ratios give the text a total variance of {v_text:.3} ≥ 1, which unit \
                     vectors cannot hold; raise the ratios or image_mean_norm"
                ),
            ));
        }
        let b = (1.0 - v_text).sqrt();
        let gap = p.modality_gap as f64;
        let cos = (a * a + b * b - gap * gap) / (2.0 * a * b);
        if !(-1.0..=1.0).contains(&cos) {
            return Err(param_error(
                "modality_gap",
                format!(
                    "{gap} is not reachable with |mean(image)| = {a:.3} and |mean(text)| = \
                     {b:.3} (possible: {:.3}..={:.3})",
                    (a - b).abs(),
                    a + b
                ),
            ));
        }
        let u = random_unit(&mut rng, dim);
        let mut w = random_unit(&mut rng, dim);
        let uw: f32 = u.iter().zip(&w).map(|(x, y)| x * y).sum();
        w.iter_mut().zip(&u).for_each(|(wi, ui)| *wi -= uw * ui);
        normalize(&mut w);
        let sin = (1.0 - cos * cos).max(0.0).sqrt();
        let image_mean: Vec<f32> = u.iter().map(|&ui| (a * ui as f64) as f32).collect();
        let text_mean: Vec<f32> = u
            .iter()
            .zip(&w)
            .map(|(&ui, &wi)| (b * (cos * ui as f64 + sin * wi as f64)) as f32)
            .collect();

        let text_gain = ratio.iter().map(|r| (1.0 / r).sqrt() as f32).collect();
        let perm_key = splitmix64(rng.next_u64());

        Ok(Self {
            centres: Matrix::from_vec(centres, r).expect("k·r values"),
            scales: Matrix::from_vec(scales, r).expect("k·r values"),
            loadings: Matrix::from_vec(loadings, r).expect("dim·r values"),
            residual,
            cum_weights: cumulative(&weights),
            ratio: ratio.iter().map(|&r| r as f32).collect(),
            image_mean,
            text_mean,
            text_gain,
            partners: Permutation::new(sizes.base, perm_key),
            params,
            sizes,
        })
    }

    pub fn params(&self) -> &XmodalParams {
        &self.params
    }

    /// The per-dimension variance ratio image/text the model aims at (before normalisation).
    pub fn target_ratios(&self) -> &[f32] {
        &self.ratio
    }

    /// `|μ_T|`, the norm of the raw text mean derived from the variance budget.
    pub fn text_mean_norm(&self) -> f32 {
        self.text_mean.iter().map(|x| x * x).sum::<f32>().sqrt()
    }

    /// The base row that query `row` of `split` (Queries or Training) is generated from.
    pub fn partner(&self, split: Split, row: u64) -> u32 {
        let position = match split {
            Split::Queries => row,
            Split::Training => self.sizes.queries + row,
            Split::Base => panic!("base rows have no partner"),
        };
        self.partners.apply(position) as u32
    }

    /// The random parts of base row `row`: its component `k`, latent vector
    /// `y = c_k + s_k ⊙ z` and residual draws `z_res` (one per dimension).
    fn image_parts(&self, row: u64, latent: &mut [f32], residual: &mut [f32]) -> usize {
        let mut rng = row_rng(self.params.seed, Split::Base.tag(), row, KIND_XMODAL);
        let k = draw(&self.cum_weights, rng.random::<f64>());
        let (c, s) = (self.centres.row(k), self.scales.row(k));
        for ((y, &c), &s) in latent.iter_mut().zip(c).zip(s) {
            let z: f32 = StandardNormal.sample(&mut rng);
            *y = c + s * z;
        }
        for r in residual.iter_mut() {
            *r = StandardNormal.sample(&mut rng);
        }
        k
    }

    /// `out_d = mean_d + gain_d · (L_d · y + residual_sd_d · z_res_d)`.
    fn project(
        &self,
        latent: &[f32],
        residual: &[f32],
        mean: &[f32],
        gain: Option<&[f32]>,
        out: &mut [f32],
    ) {
        for (d, o) in out.iter_mut().enumerate() {
            let x = distance::dot(self.loadings.row(d), latent) + self.residual[d] * residual[d];
            *o = mean[d] + gain.map_or(x, |g| g[d] * x);
        }
    }

    fn image_centred(&self, row: u64, out: &mut [f32]) -> usize {
        let mut latent = vec![0.0; self.params.latent_dim];
        let mut residual = vec![0.0; self.params.dim];
        let k = self.image_parts(row, &mut latent, &mut residual);
        let zeros = vec![0.0; self.params.dim];
        self.project(&latent, &residual, &zeros, None, out);
        k
    }

    fn image_row(&self, row: u64, out: &mut [f32]) {
        self.image_centred(row, out);
        out.iter_mut()
            .zip(&self.image_mean)
            .for_each(|(o, m)| *o += m);
        normalize(out);
    }

    /// Text row: the partner's latent and residual draws blended with fresh ones,
    /// `ỹ = sqrt(1−η)·y_p + sqrt(η)·y'` (y' ~ N(0, I_r)) and likewise for the residual, then
    /// projected like an image row with the per-dimension gain `1/sqrt(ρ_d)` around `μ_T`.
    fn text_row(&self, split: Split, row: u64, out: &mut [f32]) -> u32 {
        let partner = self.partner(split, row);
        let mut latent = vec![0.0; self.params.latent_dim];
        let mut residual = vec![0.0; self.params.dim];
        self.image_parts(u64::from(partner), &mut latent, &mut residual);
        let eta = self.params.query_noise;
        let (keep, fresh) = ((1.0 - eta).sqrt(), eta.sqrt());
        let mut rng = row_rng(self.params.seed, split.tag(), row, KIND_XMODAL);
        for v in latent.iter_mut().chain(residual.iter_mut()) {
            let z: f32 = StandardNormal.sample(&mut rng);
            *v = keep * *v + fresh * z;
        }
        self.project(
            &latent,
            &residual,
            &self.text_mean,
            Some(&self.text_gain),
            out,
        );
        normalize(out);
        partner
    }

    /// The mixture component of each base row in `range` (for tests and statistics).
    pub fn components(&self, range: Range<u64>) -> Vec<u32> {
        let mut buf = vec![0.0; self.params.dim];
        range
            .map(|r| self.image_centred(r, &mut buf) as u32)
            .collect()
    }
}

impl SynthModel for XmodalModel {
    fn dim(&self) -> usize {
        self.params.dim
    }

    fn sizes(&self) -> SplitSizes {
        self.sizes
    }

    fn has_partners(&self) -> bool {
        true
    }

    fn rows(&self, split: Split, range: Range<u64>) -> Chunk {
        let total = self.sizes.rows(split);
        assert!(
            range.start <= range.end && range.end <= total,
            "rows {range:?} outside the {total} rows of {split:?}"
        );
        let dim = self.params.dim;
        let n = (range.end - range.start) as usize;
        let mut m = Matrix::zeros(n, dim).expect("dim ≥ 2");
        let partners = match split {
            Split::Base => {
                for (i, r) in range.clone().enumerate() {
                    self.image_row(r, m.row_mut(i));
                }
                None
            }
            Split::Queries | Split::Training => {
                let ids = range
                    .clone()
                    .enumerate()
                    .map(|(i, r)| self.text_row(split, r, m.row_mut(i)))
                    .collect();
                Some(ids)
            }
        };
        Chunk {
            first_row: range.start,
            vectors: m,
            partners,
        }
    }
}

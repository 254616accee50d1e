//! Cross-modal data: an 'image' base and 'text' queries in one unit-norm space (metric ip /
//! cosine), where the queries come from another distribution than the base. Two fits of one
//! model, both measured against real data in `docs/GENERATOR.md`:
//! - [`XmodalParams::default`]: the real out-of-distribution set `passages-ood` (MiniLM
//!   passages, short-phrase queries): a query's exact top-10 spread over several k-means
//!   clusters of the base, with a long tail of answers in clusters whose centroids rank low;
//! - [`XmodalParams::fashion_clip`]: the FashionCLIP fixture `shared/data/shopsphere-xmodal`
//!   (a large modality gap, variance ratios over 3.6 orders of magnitude, one partner per
//!   query), the single-partner model of the earlier benchmarks.
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
//!   `s_{k,j} = sqrt(1 − cluster_share) · f_k · 10^(anisotropy · z) / m` (`m` keeps the mean
//!   variance; `f_k = 10^(spread_skew · z) / m'` makes some components tight and some diffuse),
//!   weights `∝ 10^(weight_skew · z)`; loadings `L` (`dim × r`, Gaussian rows scaled to norm
//!   `sqrt(λ · v_d)`, λ = `latent_share`) and a residual sd `e_d = sqrt((1 − λ) v_d)`;
//! - image row: `k ~ w`, `y = c_k + s_k ⊙ z_r`, `x_c = L y + e ⊙ z_D`, `x = normalise(μ_I + x_c)`;
//! - text row from partner row `p` (its draws `y_p`, `z_p`): a noise share per row
//!   `η ~ U(query_noise ± query_noise_range)`; the latent mixes the partner's `y_p` (weight²
//!   π = `query_partner_share`) with `m − 1` draws from other components (m = `query_mix`,
//!   weights² `(1 − π)/(m − 1)`): `ỹ = sqrt(1 − η) Σ a_i y_i + sqrt(η) z'_r`,
//!   `z̃ = sqrt(1 − η) a_p z_p + sqrt(1 − (1 − η) a_p²) z'_D`,
//!   `t = normalise(μ_T + ρ^(−1/2) ⊙ (L ỹ + e ⊙ z̃))`; so `Var(t_d) ≈ v_d / ρ_d`;
//! - means: `|μ_I| = image_mean_norm`, `|μ_T| = sqrt(1 − Σ v_d/ρ_d)`, and the angle between
//!   them chosen so that `|μ_I − μ_T| = modality_gap`.
//!
//! With m = 1, π = 1, a fixed η and `spread_skew = 0` this is the single-partner model, drawn
//! in the same order: [`XmodalParams::fashion_clip`] generates the same rows as before the
//! mixture existed.
//!
//! Queries and training queries take their partners from one keyed permutation of the base
//! rows (queries at positions `0..queries`, training at the following ones), so no two queries
//! share a partner and the two splits never do; both splits come from the same query model.

use std::ops::Range;

use rand::seq::index;
use rand::{Rng, RngCore};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::perm::{Permutation, splitmix64};
use super::{
    Chunk, KIND_XMODAL, Split, SplitSizes, SynthError, SynthModel, TAG_MODEL, cumulative, draw,
    normalize, param_error, random_unit, row_rng,
};
use crate::data::Matrix;
use crate::distance;

/// Parameters of the cross-modal generator. The defaults imitate the real OOD set
/// `passages-ood`; [`XmodalParams::fashion_clip`] the FashionCLIP fixture.
#[derive(Debug, Clone, PartialEq)]
pub struct XmodalParams {
    /// Dimension.
    pub dim: usize,
    /// Mixture components of the image modality.
    pub clusters: usize,
    /// Seed of every random draw.
    pub seed: u64,
    /// Target `|mean(image) − mean(text)|` of the unit-normalised clouds (FashionCLIP: 0.877;
    /// passages-ood: 0.289, reached with 0.27 since normalisation moves the means).
    pub modality_gap: f32,
    /// Target `|mean(image)|` of the unit-normalised image cloud (FashionCLIP: 0.742;
    /// passages-ood: 0.317, reached with 0.27). Fixes the image
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
    /// log10 standard deviation of a per-component factor on all within-cluster scales: some
    /// components tight, some diffuse, so that k-means centroids of the base differ in norm
    /// and ranking them by inner product misses answers in diffuse clusters; 0 = none.
    pub spread_skew: f32,
    /// log10 standard deviation of the per-cluster, per-dimension within-cluster scales.
    pub anisotropy: f32,
    /// log10 standard deviation of the mixture weights.
    pub weight_skew: f32,
    /// Median of the per-dimension variance ratio image/text (FashionCLIP: 0.73;
    /// passages-ood: 1.00).
    pub variance_ratio_median: f32,
    /// log10 standard deviation of the bulk of the ratios.
    pub variance_ratio_spread: f32,
    /// Smallest and largest ratio (FashionCLIP: 0.005 and 21.6): bulk ratios are clamped to it, and
    /// when there are at least two outlier dimensions, one sits at each end.
    pub variance_ratio_range: (f32, f32),
    /// Fraction of dimensions whose ratio is drawn log-uniformly over the whole range
    /// (`round(fraction · dim)` of them: 5 of 512, 2 of 200, none below 150 at 0.01).
    pub ratio_outlier_fraction: f32,
    /// η ∈ [0, 1): the share of each text dimension's variance that is noise independent of
    /// the partner. Larger η: the partner is less often the nearest base row, and a query's
    /// neighbours spread over more clusters.
    pub query_noise: f32,
    /// δ: each text row draws its own noise share `η_q ~ U(η − δ, η + δ)` (clamped to
    /// [0, 0.99]), so that some queries sit near their partner and others far from any base
    /// row; 0 = every row uses η.
    pub query_noise_range: f32,
    /// m ≥ 1: latent sources of a text row, its partner's latent vector and `m − 1` fresh
    /// draws from other mixture components (a query 'about' several regions of the base).
    /// 1 is the single-partner model.
    pub query_mix: usize,
    /// Share of the mixed latent variance taken from the partner when `query_mix ≥ 2`
    /// (the other sources share the rest equally); in (0, 1].
    pub query_partner_share: f32,
}

impl Default for XmodalParams {
    /// Fitted to the real out-of-distribution set `passages-ood` (MiniLM passages as the base,
    /// 2–4 word phrases as queries, 384-d) at 135,000 × 384: modality gap, mean inner product
    /// of a query with its top-1 and top-10, and how the top-10 spreads over k-means clusters
    /// of 256 rows (`docs/GENERATOR.md`, "Measured: real OOD set vs generated").
    fn default() -> Self {
        Self {
            dim: 384,
            clusters: 192,
            seed: 0,
            modality_gap: 0.27,
            image_mean_norm: 0.27,
            image_dim_spread: 0.08,
            latent_dim: 48,
            latent_share: 0.95,
            cluster_share: 0.5,
            spread_skew: 0.3,
            anisotropy: 0.2,
            weight_skew: 0.3,
            variance_ratio_median: 1.02,
            variance_ratio_spread: 0.04,
            variance_ratio_range: (0.58, 1.7),
            ratio_outlier_fraction: 0.0,
            query_noise: 0.45,
            query_noise_range: 0.5,
            query_mix: 2,
            query_partner_share: 0.8,
        }
    }
}

impl XmodalParams {
    /// The single-partner model fitted to the 1,126-pair FashionCLIP fixture
    /// (`shared/data/shopsphere-xmodal`): the defaults before the passages-ood fit, which
    /// generate the sets of the earlier benchmarks byte for byte.
    pub fn fashion_clip() -> Self {
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
            spread_skew: 0.0,
            anisotropy: 0.2,
            weight_skew: 0.3,
            variance_ratio_median: 0.73,
            variance_ratio_spread: 0.1,
            variance_ratio_range: (0.005, 21.6),
            ratio_outlier_fraction: 0.01,
            query_noise: 0.6,
            query_noise_range: 0.0,
            query_mix: 1,
            query_partner_share: 1.0,
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
    /// The model for `params` and split sizes `sizes`; fails on parameters out of range.
    pub fn new(params: XmodalParams, sizes: SplitSizes) -> Result<Self, SynthError> {
        check_params(&params, &sizes)?;
        let p = &params;
        // One stream for the whole model, drawn in this order (a change of order changes
        // every generated set); the spread skew has a stream of its own.
        let mut rng = row_rng(p.seed, TAG_MODEL, 0, KIND_XMODAL);
        let ratio = variance_ratios(p, &mut rng);
        let var = image_variances(p, &mut rng, &ratio);
        let (centres, scales) = latent_mixture(p, &mut rng);
        let (loadings, residual) = loadings(p, &mut rng, &var);
        let weights: Vec<f64> = (0..p.clusters)
            .map(|_| 10f64.powf(p.weight_skew as f64 * normal(&mut rng)))
            .collect();
        let (image_mean, text_mean) = means(p, &mut rng, &var, &ratio)?;
        let text_gain = ratio.iter().map(|r| (1.0 / r).sqrt() as f32).collect();
        let perm_key = splitmix64(rng.next_u64());
        let r = p.latent_dim;
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

    /// The parameters it was made with.
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

    /// Text row. Latent: the partner's `y_p` and `m − 1` fresh draws `y_i = c_(k_i) + s_(k_i) ⊙ z`
    /// from distinct components other than the partner's, mixed with weights `a_p² = π`,
    /// `a_i² = (1 − π)/(m − 1)` (π = `query_partner_share`, m = `query_mix`), then blended with
    /// noise: `ỹ = sqrt(1−η)·Σ a_i y_i + sqrt(η)·y'` (y' ~ N(0, I_r)). Residual:
    /// `z̃ = sqrt(1−η)·a_p·z_p + sqrt(1 − (1−η)·a_p²)·z'`. Both projected like an image row with
    /// the per-dimension gain `1/sqrt(ρ_d)` around `μ_T`. With m = 1 this is the partner blend
    /// `sqrt(1−η)·(y_p, z_p) + sqrt(η)·(y', z')`, drawn in the same order as before mixing
    /// existed (same rows for the same parameters).
    fn text_row(&self, split: Split, row: u64, out: &mut [f32]) -> u32 {
        let partner = self.partner(split, row);
        let (r, mix) = (self.params.latent_dim, self.params.query_mix);
        let mut latent = vec![0.0; r];
        let mut residual = vec![0.0; self.params.dim];
        let home = self.image_parts(u64::from(partner), &mut latent, &mut residual);
        let mut rng = row_rng(self.params.seed, split.tag(), row, KIND_XMODAL);
        let (eta, delta) = (self.params.query_noise, self.params.query_noise_range);
        let eta = if delta > 0.0 {
            (eta + delta * (2.0 * rng.random::<f32>() - 1.0)).clamp(0.0, 0.99)
        } else {
            eta
        };
        let a_p = if mix > 1 {
            self.params.query_partner_share.sqrt()
        } else {
            1.0
        };
        let keep = (1.0 - eta).sqrt();
        let (keep_latent, fresh_latent) = (keep * a_p, eta.sqrt());
        let keep_res = keep * a_p;
        let fresh_res = if mix > 1 {
            (1.0 - keep_res * keep_res).max(0.0).sqrt()
        } else {
            eta.sqrt()
        };
        for v in latent.iter_mut() {
            let z: f32 = StandardNormal.sample(&mut rng);
            *v = keep_latent * *v + fresh_latent * z;
        }
        for v in residual.iter_mut() {
            let z: f32 = StandardNormal.sample(&mut rng);
            *v = keep_res * *v + fresh_res * z;
        }
        if mix > 1 {
            let a_i = ((1.0 - self.params.query_partner_share) / (mix - 1) as f32).sqrt();
            let w = keep * a_i;
            let k = self.params.clusters;
            let mut used = Vec::with_capacity(mix);
            used.push(home);
            for _ in 1..mix {
                // A component not used yet (repeats only once every component is used).
                let c = loop {
                    let c = draw(&self.cum_weights, rng.random::<f64>());
                    if !used.contains(&c) || used.len() >= k {
                        break c;
                    }
                };
                used.push(c);
                let (centre, scale) = (self.centres.row(c), self.scales.row(c));
                for ((y, &cj), &sj) in latent.iter_mut().zip(centre).zip(scale) {
                    let z: f32 = StandardNormal.sample(&mut rng);
                    *y += w * (cj + sj * z);
                }
            }
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

/// A standard normal draw.
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    StandardNormal.sample(rng)
}

/// Refuses parameters and sizes the model cannot be built from (the text variance and the
/// modality gap are checked by [`means`], where they are known).
fn check_params(p: &XmodalParams, sizes: &SplitSizes) -> Result<(), SynthError> {
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
    if !(p.query_noise_range.is_finite() && p.query_noise_range >= 0.0) {
        return Err(param_error(
            "query_noise_range",
            format!("{} must be finite and ≥ 0", p.query_noise_range),
        ));
    }
    if p.query_mix == 0 {
        return Err(param_error("query_mix", "must be at least 1"));
    }
    if !(p.query_partner_share > 0.0 && p.query_partner_share <= 1.0) {
        return Err(param_error(
            "query_partner_share",
            format!("{} is outside (0, 1]", p.query_partner_share),
        ));
    }
    unit("ratio_outlier_fraction", p.ratio_outlier_fraction, true)?;
    for (name, v) in [
        ("spread_skew", p.spread_skew),
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
    Ok(())
}

/// Per-dimension variance ratios image/text ρ_d (module doc): a log-normal bulk clamped to
/// the range, and `round(ratio_outlier_fraction · dim)` outlier dimensions.
fn variance_ratios(p: &XmodalParams, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let dim = p.dim;
    let (lo, hi) = p.variance_ratio_range;
    let (llo, lhi) = ((lo as f64).log10(), (hi as f64).log10());
    let lmed = (p.variance_ratio_median as f64).log10();
    let mut log_ratio: Vec<f64> = (0..dim)
        .map(|_| (lmed + p.variance_ratio_spread as f64 * normal(rng)).clamp(llo, lhi))
        .collect();
    // round(fraction · dim) outlier dimensions (none for small dim, where a single extreme
    // dimension would dominate the text variance); the first two take the range's ends.
    let outliers = (p.ratio_outlier_fraction as f64 * dim as f64).round() as usize;
    let outlier_dims = index::sample(rng, dim, outliers).into_vec();
    for (i, &d) in outlier_dims.iter().enumerate() {
        log_ratio[d] = match i {
            0 => llo,
            1 => lhi,
            _ => llo + (lhi - llo) * rng.random::<f64>(),
        };
    }
    log_ratio.iter().map(|l| 10f64.powf(*l)).collect()
}

/// Image per-dimension variances: a log-normal profile, tilted by sqrt(ρ_d) so that a
/// dimension's ratio is split evenly between the two modalities (as measured on the
/// fixture: where the ratio is extreme, the image variance is as far below the median as
/// the text variance is above it), then scaled to the budget V_I.
fn image_variances(p: &XmodalParams, rng: &mut ChaCha8Rng, ratio: &[f64]) -> Vec<f64> {
    let a = p.image_mean_norm as f64;
    let v_image = 1.0 - a * a;
    let g: Vec<f64> = ratio
        .iter()
        .map(|r| 10f64.powf(p.image_dim_spread as f64 * normal(rng)) * r.sqrt())
        .collect();
    let g_sum: f64 = g.iter().sum();
    g.iter().map(|gd| v_image * gd / g_sum).collect()
}

/// The image mixture in an r-dimensional latent space (unit variance per latent axis):
/// centres and within-cluster scales, `clusters × latent_dim` each.
fn latent_mixture(p: &XmodalParams, rng: &mut ChaCha8Rng) -> (Vec<f32>, Vec<f32>) {
    let (k, r) = (p.clusters, p.latent_dim);
    let share = p.cluster_share as f64;
    let aniso_ln = p.anisotropy as f64 * std::f64::consts::LN_10;
    // E[10^(2·anisotropy·z)] = exp(2·(anisotropy·ln 10)²): divide it out of the variance.
    let aniso_norm = (2.0 * aniso_ln * aniso_ln).exp().sqrt();
    let mut centres = Vec::with_capacity(k * r);
    let mut scales = Vec::with_capacity(k * r);
    for _ in 0..k {
        for _ in 0..r {
            centres.push((share.sqrt() * normal(rng)) as f32);
        }
        for _ in 0..r {
            let s = (1.0 - share).sqrt() * (aniso_ln * normal(rng)).exp();
            scales.push((s / aniso_norm) as f32);
        }
    }
    if p.spread_skew > 0.0 {
        // s_k ← s_k · 10^(σ·z_k) / m_σ, m_σ = E[10^(2σz)]^½ keeping the mean variance;
        // a stream of its own.
        let mut srng = row_rng(p.seed, TAG_MODEL, 2, KIND_XMODAL);
        let ln = p.spread_skew as f64 * std::f64::consts::LN_10;
        let m = (2.0 * ln * ln).exp().sqrt();
        for sk in scales.chunks_exact_mut(r) {
            let f = (ln * normal(&mut srng)).exp() / m;
            sk.iter_mut().for_each(|x| *x = (*x as f64 * f) as f32);
        }
    }
    (centres, scales)
}

/// The loadings mapping the latent space to the D dimensions (`dim × latent_dim`, rows
/// carrying latent_share · v_d) and the diagonal residual's sd per dimension (the rest).
fn loadings(p: &XmodalParams, rng: &mut ChaCha8Rng, var: &[f64]) -> (Vec<f32>, Vec<f32>) {
    let r = p.latent_dim;
    let lambda = p.latent_share as f64;
    let mut loadings = Vec::with_capacity(p.dim * r);
    for vd in var {
        let row: Vec<f64> = (0..r).map(|_| normal(rng)).collect();
        let norm = row
            .iter()
            .map(|x| x * x)
            .sum::<f64>()
            .sqrt()
            .max(f64::MIN_POSITIVE);
        let target = (lambda * vd).sqrt();
        loadings.extend(row.iter().map(|x| (x / norm * target) as f32));
    }
    let residual = var
        .iter()
        .map(|vd| ((1.0 - lambda) * vd).sqrt() as f32)
        .collect();
    (loadings, residual)
}

/// The image and text means: `|μ_I| = image_mean_norm`, `|μ_T|` what the text variance
/// budget leaves of a unit norm, at the angle that puts them `modality_gap` apart.
fn means(
    p: &XmodalParams,
    rng: &mut ChaCha8Rng,
    var: &[f64],
    ratio: &[f64],
) -> Result<(Vec<f32>, Vec<f32>), SynthError> {
    let a = p.image_mean_norm as f64;
    // Text variance budget and the two means.
    let v_text: f64 = var.iter().zip(ratio).map(|(v, r)| v / r).sum();
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
    let u = random_unit(rng, p.dim);
    let mut w = random_unit(rng, p.dim);
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
    Ok((image_mean, text_mean))
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

//! Local intrinsic dimensionality (LID) and the MCGI map from LID to the pruning factor α.
//!
//! **Estimator.** The maximum-likelihood (Hill) estimator of Levina & Bickel (NIPS 2004) in the
//! form of Amsaleg et al. (KDD 2015), which MCGI uses (DESIGN §4.4): for a point's k nearest
//! Euclidean distances r_1 ≤ … ≤ r_k,
//!
//! `LID = −( (1/k) Σ_{i=1..k} ln(r_i / r_k) )⁻¹`.
//!
//! It is scale invariant (multiplying every distance by c leaves it unchanged), so statistics
//! estimated on a random sample transfer to the base set, up to the sample's density: a sample
//! of n′ out of N points sees, at the same k, neighbourhoods about (N/n′)^{1/LID} times wider than
//! the base does, and LID
//! that varies with scale (curved or noisy manifolds) reads differently there.
//!
//! **Zeros.** Distance 0 (an exact duplicate) carries no scale information and `ln 0 = −∞`, so
//! zeros are skipped and the mean is taken over the m non-zero distances. The estimate is
//! undefined (`None`) when every distance is zero, when the sum is zero (all non-zero distances
//! equal r_k, e.g. a single neighbour: the MLE diverges) or when a distance is not finite.
//!
//! **Map.** With z = (LID − μ)/σ over the population ([`LidStats`]),
//! `α = α_min + (α_max − α_min) / (1 + e^{z})` ([`Direction::FallsWithLid`], the DESIGN's
//! default: flat, low-LID regions get the larger α) or with `e^{−z}`
//! ([`Direction::RisesWithLid`]). MCGI's text argues both ways about which helps, so
//! [`AlphaMode`] also has `Fixed(α)`, the DiskANN baseline, and all three are measured.

use std::fmt;
use std::str::FromStr;

use super::GraphError;

/// LID from Euclidean distances to a point's nearest neighbours (any order; r_k is taken as the
/// largest). See the module docs for zeros and the `None` cases.
pub fn lid_mle(dists: &[f32]) -> Option<f32> {
    lid_from_logs(dists, 1.0)
}

/// LID from **squared** Euclidean distances: `ln(r_i/r_k) = ½ ln(r_i²/r_k²)`, so the result
/// equals [`lid_mle`] of the square roots without taking them.
pub fn lid_mle_sq(dists_sq: &[f32]) -> Option<f32> {
    lid_from_logs(dists_sq, 0.5)
}

/// `−(log_scale · mean_{r>0} ln(r / r_max))⁻¹`, in f64.
fn lid_from_logs(values: &[f32], log_scale: f64) -> Option<f32> {
    if values.iter().any(|v| !v.is_finite() || *v < 0.0) {
        return None;
    }
    let max = values.iter().copied().fold(0.0f32, f32::max);
    if max <= 0.0 {
        return None;
    }
    let ln_max = f64::from(max).ln();
    let (mut m, mut sum) = (0usize, 0.0f64);
    for &v in values.iter().filter(|v| **v > 0.0) {
        m += 1;
        sum += f64::from(v).ln() - ln_max;
    }
    // Every term is ≤ 0; the sum is 0 only when all non-zero values equal the maximum.
    if sum >= 0.0 {
        return None;
    }
    let mean = log_scale * sum / m as f64;
    Some((-1.0 / mean) as f32)
}

/// Mean and (population) standard deviation of LID over a data set or a sample: the μ and σ of
/// the z-score in DESIGN §4.4.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LidStats {
    /// Number of defined LID values the statistics come from.
    pub count: u64,
    pub mean: f64,
    pub std: f64,
}

impl LidStats {
    /// Statistics of the defined values among `lids` (`None`s are skipped).
    pub fn from_values(lids: impl IntoIterator<Item = Option<f32>>) -> Self {
        let mut acc = LidAccumulator::default();
        lids.into_iter().flatten().for_each(|l| acc.push(l));
        acc.finish()
    }

    /// `(lid − μ) / σ`; 0 when σ is 0 or not finite (every node then gets the midpoint α).
    pub fn z_score(&self, lid: f32) -> f64 {
        if self.std > 0.0 && self.std.is_finite() {
            (f64::from(lid) - self.mean) / self.std
        } else {
            0.0
        }
    }
}

/// Welford's streaming mean and variance; merge-free, so feed it in a fixed order for
/// bit-identical results.
#[derive(Debug, Clone, Copy, Default)]
pub struct LidAccumulator {
    count: u64,
    mean: f64,
    m2: f64,
}

impl LidAccumulator {
    /// Adds one value; non-finite values are ignored.
    pub fn push(&mut self, lid: f32) {
        if !lid.is_finite() {
            return;
        }
        let x = f64::from(lid);
        self.count += 1;
        let delta = x - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (x - self.mean);
    }

    pub fn finish(&self) -> LidStats {
        let std = if self.count > 0 {
            (self.m2 / self.count as f64).max(0.0).sqrt()
        } else {
            0.0
        };
        LidStats {
            count: self.count,
            mean: self.mean,
            std,
        }
    }
}

/// Which way α moves with LID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Direction {
    /// `α = α_min + (α_max − α_min) / (1 + e^{z})`: high LID → α near α_min (MCGI's stated rule
    /// and the DESIGN's default).
    FallsWithLid,
    /// `α = α_min + (α_max − α_min) / (1 + e^{−z})`: high LID → α near α_max.
    RisesWithLid,
}

/// The logistic map from LID to α of DESIGN §4.4.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AlphaMap {
    pub alpha_min: f32,
    pub alpha_max: f32,
    pub direction: Direction,
}

impl AlphaMap {
    /// α for a node of LID `lid` in a population described by `stats`. A non-finite `lid`
    /// counts as z = 0 (the midpoint). Always within `[alpha_min, alpha_max]`.
    pub fn alpha(&self, lid: f32, stats: &LidStats) -> f32 {
        let z = if lid.is_finite() {
            stats.z_score(lid)
        } else {
            0.0
        };
        let e = match self.direction {
            Direction::FallsWithLid => z.exp(),
            Direction::RisesWithLid => (-z).exp(),
        };
        // e ∈ [0, +∞]: the fraction is in [0, 1] with no NaN (1 / ∞ = 0).
        let frac = 1.0 / (1.0 + e);
        let (lo, hi) = (f64::from(self.alpha_min), f64::from(self.alpha_max));
        (lo + (hi - lo) * frac).clamp(lo, hi) as f32
    }
}

/// How the build picks each node's α: fixed (DiskANN) or from LID (MCGI, either direction).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum AlphaMode {
    Fixed(f32),
    Lid(AlphaMap),
}

impl Default for AlphaMode {
    /// DESIGN §4.4: α ∈ [1.0, 1.5], falling as LID rises.
    fn default() -> Self {
        AlphaMode::Lid(AlphaMap {
            alpha_min: 1.0,
            alpha_max: 1.5,
            direction: Direction::FallsWithLid,
        })
    }
}

impl AlphaMode {
    /// α of a node whose LID is `lid` (`None`: undefined, treated as the population mean).
    pub fn alpha(&self, lid: Option<f32>, stats: &LidStats) -> f32 {
        match self {
            AlphaMode::Fixed(a) => *a,
            AlphaMode::Lid(map) => map.alpha(lid.unwrap_or(f32::NAN), stats),
        }
    }

    /// Every α must be finite and ≥ 1 (α < 1 would prune edges of the relative neighbourhood
    /// graph, which MCGI's connectivity argument needs), and `alpha_min ≤ alpha_max`.
    pub fn validate(&self) -> Result<(), GraphError> {
        let check = |name: &'static str, a: f32| {
            if a.is_finite() && a >= 1.0 {
                Ok(())
            } else {
                Err(GraphError::Param {
                    name,
                    reason: format!("{a} is not a finite value >= 1"),
                })
            }
        };
        match self {
            AlphaMode::Fixed(a) => check("alpha", *a),
            AlphaMode::Lid(m) => {
                check("alpha_min", m.alpha_min)?;
                check("alpha_max", m.alpha_max)?;
                if m.alpha_min > m.alpha_max {
                    return Err(GraphError::Param {
                        name: "alpha_min",
                        reason: format!("{} > alpha_max {}", m.alpha_min, m.alpha_max),
                    });
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for AlphaMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AlphaMode::Fixed(a) => write!(f, "fixed:{a}"),
            AlphaMode::Lid(m) => {
                let dir = match m.direction {
                    Direction::FallsWithLid => "falls",
                    Direction::RisesWithLid => "rises",
                };
                write!(f, "{dir}:{}:{}", m.alpha_min, m.alpha_max)
            }
        }
    }
}

impl FromStr for AlphaMode {
    type Err = GraphError;

    /// `fixed:1.2`, `falls:1.0:1.5`, `rises:1.0:1.5`; the result is validated.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| GraphError::ParseAlpha {
            text: text.to_owned(),
            reason,
        };
        let parts: Vec<&str> = text.split(':').collect();
        let num = |s: &str| {
            s.trim()
                .parse::<f32>()
                .map_err(|e| err(format!("`{s}`: {e}")))
        };
        let mode = match parts.as_slice() {
            ["fixed", a] => AlphaMode::Fixed(num(a)?),
            [dir @ ("falls" | "rises"), lo, hi] => AlphaMode::Lid(AlphaMap {
                alpha_min: num(lo)?,
                alpha_max: num(hi)?,
                direction: if *dir == "falls" {
                    Direction::FallsWithLid
                } else {
                    Direction::RisesWithLid
                },
            }),
            _ => return Err(err("unknown form".into())),
        };
        mode.validate()?;
        Ok(mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Matrix;
    use crate::graph::knn::knn_within;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::StandardNormal;

    #[test]
    fn mle_matches_formula_and_is_scale_invariant() {
        let r = [0.5f32, 1.0, 1.5, 2.0];
        let k = r.len() as f64;
        let s: f64 = r.iter().map(|&x| (f64::from(x) / 2.0).ln()).sum();
        let expected = (-1.0 / (s / k)) as f32;
        let got = lid_mle(&r).unwrap();
        assert!((got - expected).abs() < 1e-5, "{got} vs {expected}");
        let scaled: Vec<f32> = r.iter().map(|x| x * 37.0).collect();
        assert!((lid_mle(&scaled).unwrap() - got).abs() < 1e-4);
        let sq: Vec<f32> = r.iter().map(|x| x * x).collect();
        assert!((lid_mle_sq(&sq).unwrap() - got).abs() < 1e-4);
    }

    #[test]
    fn mle_zero_and_degenerate_cases() {
        assert_eq!(lid_mle(&[]), None);
        assert_eq!(lid_mle(&[0.0, 0.0, 0.0]), None);
        assert_eq!(lid_mle(&[2.0]), None, "one neighbour: sum is 0");
        assert_eq!(lid_mle(&[2.0, 2.0, 2.0]), None, "equidistant: sum is 0");
        assert_eq!(lid_mle(&[1.0, f32::NAN, 2.0]), None);
        assert_eq!(lid_mle(&[1.0, f32::INFINITY]), None);
        // Zeros are skipped: the mean runs over the non-zero distances only.
        let with_zero = lid_mle(&[0.0, 0.0, 1.0, 2.0]).unwrap();
        let without = lid_mle(&[1.0, 2.0]).unwrap();
        assert_eq!(with_zero, without);
        assert!((without - 2.0 / std::f32::consts::LN_2).abs() < 1e-5);
    }

    /// `n` points uniform in `[0,1]^d` (or standard Gaussian), mapped into `ambient` dimensions
    /// by a random map with orthonormal columns (an isometry, so distances are preserved).
    fn embedded(n: usize, d: usize, ambient: usize, gaussian: bool, seed: u64) -> Matrix<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // Gram–Schmidt on d random Gaussian vectors of length `ambient`.
        let mut basis: Vec<Vec<f64>> = Vec::new();
        while basis.len() < d {
            let mut v: Vec<f64> = (0..ambient).map(|_| rng.sample(StandardNormal)).collect();
            for b in &basis {
                let p: f64 = v.iter().zip(b).map(|(x, y)| x * y).sum();
                v.iter_mut().zip(b).for_each(|(x, y)| *x -= p * y);
            }
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            basis.push(v);
        }
        let mut out = Matrix::zeros(n, ambient).unwrap();
        for i in 0..n {
            let coords: Vec<f64> = (0..d)
                .map(|_| {
                    if gaussian {
                        rng.sample(StandardNormal)
                    } else {
                        rng.random::<f64>()
                    }
                })
                .collect();
            let row = out.row_mut(i);
            for (c, b) in coords.iter().zip(&basis) {
                row.iter_mut()
                    .zip(b)
                    .for_each(|(x, y)| *x += (c * y) as f32);
            }
        }
        out
    }

    fn mean_lid(points: &Matrix<f32>, k: usize) -> f64 {
        let ids: Vec<u32> = (0..points.rows() as u32).collect();
        let knn = knn_within(points.view(), &ids, k, false);
        let stats = LidStats::from_values(knn.iter().map(|nb| {
            let d: Vec<f32> = nb.iter().map(|n| n.dist).collect();
            lid_mle_sq(&d)
        }));
        assert_eq!(stats.count as usize, points.rows());
        stats.mean
    }

    #[test]
    fn mle_recovers_the_dimension_of_embedded_data() {
        for (d, gaussian) in [
            (2, false),
            (5, false),
            (10, false),
            (2, true),
            (5, true),
            (10, true),
        ] {
            let points = embedded(3000, d, 32, gaussian, 7 + d as u64);
            let lid = mean_lid(&points, 20);
            let rel = (lid - d as f64).abs() / d as f64;
            assert!(
                rel < 0.3,
                "d = {d}, gaussian = {gaussian}: mean LID {lid:.2} is off by {:.0}%",
                rel * 100.0
            );
        }
    }

    #[test]
    fn welford_matches_two_pass() {
        let xs = [3.0f32, 7.5, 1.25, 9.0, 4.0, 4.0];
        let s = LidStats::from_values(xs.iter().map(|&x| Some(x)).chain([None]));
        let n = xs.len() as f64;
        let mean = xs.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let var = xs
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / n;
        assert_eq!(s.count, 6);
        assert!((s.mean - mean).abs() < 1e-12);
        assert!((s.std - var.sqrt()).abs() < 1e-12);
        let empty = LidStats::from_values([None]);
        assert_eq!((empty.count, empty.std), (0, 0.0));
        assert_eq!(empty.z_score(5.0), 0.0);
    }

    fn map(direction: Direction) -> AlphaMap {
        AlphaMap {
            alpha_min: 1.0,
            alpha_max: 1.5,
            direction,
        }
    }

    #[test]
    fn alpha_map_endpoints_midpoint_and_monotonicity() {
        let stats = LidStats {
            count: 100,
            mean: 12.0,
            std: 3.0,
        };
        let lids: Vec<f32> = (0..=200).map(|i| i as f32 * 0.25 - 10.0).collect();
        for dir in [Direction::FallsWithLid, Direction::RisesWithLid] {
            let m = map(dir);
            let mid = m.alpha(12.0, &stats);
            assert!(
                (mid - 1.25).abs() < 1e-6,
                "{dir:?}: z = 0 gives the midpoint"
            );
            let (low_lid, high_lid) = (m.alpha(-1e6, &stats), m.alpha(1e6, &stats));
            let (at_low, at_high) = match dir {
                Direction::FallsWithLid => (1.5, 1.0),
                Direction::RisesWithLid => (1.0, 1.5),
            };
            assert_eq!(low_lid, at_low, "{dir:?} at LID → −∞");
            assert_eq!(high_lid, at_high, "{dir:?} at LID → +∞");
            assert!((m.alpha(f32::NAN, &stats) - 1.25).abs() < 1e-6);
            let alphas: Vec<f32> = lids.iter().map(|&l| m.alpha(l, &stats)).collect();
            for w in alphas.windows(2) {
                match dir {
                    Direction::FallsWithLid => assert!(w[1] <= w[0]),
                    Direction::RisesWithLid => assert!(w[1] >= w[0]),
                }
            }
            assert!(alphas.iter().all(|a| (1.0..=1.5).contains(a)));
            // Strict in the bulk of the population.
            let (a, b) = (m.alpha(9.0, &stats), m.alpha(15.0, &stats));
            assert!(a != b && (a - b).abs() > 0.1);
        }
        let falls = map(Direction::FallsWithLid).alpha(14.0, &stats);
        let rises = map(Direction::RisesWithLid).alpha(14.0, &stats);
        assert!(
            (falls + rises - 2.5).abs() < 1e-6,
            "the two directions mirror"
        );
        assert_eq!(AlphaMode::Fixed(1.2).alpha(Some(99.0), &stats), 1.2);
        assert_eq!(AlphaMode::Fixed(1.2).alpha(None, &stats), 1.2);
    }

    #[test]
    fn alpha_mode_parses_validates_and_round_trips() {
        for text in ["fixed:1.2", "falls:1:1.5", "rises:1.1:1.4"] {
            let mode: AlphaMode = text.parse().unwrap();
            assert_eq!(mode.to_string().parse::<AlphaMode>().unwrap(), mode);
        }
        assert_eq!(
            "rises:1:2".parse::<AlphaMode>().unwrap(),
            AlphaMode::Lid(AlphaMap {
                alpha_min: 1.0,
                alpha_max: 2.0,
                direction: Direction::RisesWithLid
            })
        );
        for bad in [
            "fixed:0.9",
            "falls:1.5:1.0",
            "fixed:nan",
            "sideways:1:2",
            "fixed",
            "",
        ] {
            assert!(bad.parse::<AlphaMode>().is_err(), "{bad} should not parse");
        }
        AlphaMode::default().validate().unwrap();
    }
}

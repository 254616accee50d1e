//! How are numbers spread? Streaming per-dimension mean and variance of vectors ([`Welford`]),
//! and their largest norm (for the inner-product-to-L2 augmentation of DESIGN §4.1): what the
//! build stores per modality (`stats.m3`) and what multi-vector block spreads are made of;
//! and percentiles of measurements ([`percentile`]: latencies).

use crate::data::MatrixView;

/// Running per-dimension mean and variance in f64 (Welford's update; Chan et al.'s merge).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Welford {
    count: u64,
    mean: Vec<f64>,
    m2: Vec<f64>,
    max_norm_sq: f64,
}

impl Welford {
    /// Empty accumulators for `dim` dimensions.
    pub fn new(dim: usize) -> Self {
        Self {
            count: 0,
            mean: vec![0.0; dim],
            m2: vec![0.0; dim],
            max_norm_sq: 0.0,
        }
    }

    /// Rows added so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Adds every row of `rows` (in order, so the result does not depend on threads).
    pub fn add_rows(&mut self, rows: MatrixView<'_, f32>) {
        assert_eq!(rows.dim(), self.mean.len(), "Welford: dimension");
        for row in rows.iter_rows() {
            self.count += 1;
            let inv = 1.0 / self.count as f64;
            let mut norm_sq = 0.0f64;
            for ((m, s), &x) in self.mean.iter_mut().zip(self.m2.iter_mut()).zip(row) {
                let x = x as f64;
                norm_sq += x * x;
                let delta = x - *m;
                *m += delta * inv;
                *s += delta * (x - *m);
            }
            self.max_norm_sq = self.max_norm_sq.max(norm_sq);
        }
    }

    /// Per-dimension mean of the rows added.
    pub fn mean(&self) -> Vec<f32> {
        self.mean.iter().map(|&m| m as f32).collect()
    }

    /// Population variance per dimension (0 when fewer than one row was seen).
    pub fn variance(&self) -> Vec<f32> {
        if self.count == 0 {
            return vec![0.0; self.m2.len()];
        }
        self.m2
            .iter()
            .map(|&s| (s / self.count as f64) as f32)
            .collect()
    }

    /// Largest row norm seen (of the rows as added, before any [`Self::scale_dims`]).
    pub fn max_norm(&self) -> f32 {
        self.max_norm_sq.sqrt() as f32
    }

    /// The statistics of the same rows with dimension k multiplied by `factors[k]`: mean by
    /// the factor, variance by its square. The largest norm is not rescaled.
    pub fn scale_dims(&mut self, factors: &[f64]) {
        assert_eq!(
            factors.len(),
            self.mean.len(),
            "Welford::scale_dims: dimension"
        );
        for ((m, s), &f) in self.mean.iter_mut().zip(self.m2.iter_mut()).zip(factors) {
            *m *= f;
            *s *= f * f;
        }
    }
}

/// Percentile (0..=100) by nearest rank of unsorted values.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_two_pass_moments() {
        let data: Vec<f32> = (0..300)
            .map(|i| ((i * 7919) % 103) as f32 * 0.37 - 10.0)
            .collect();
        let v = MatrixView::new(&data, 3).unwrap();
        let mut w = Welford::new(3);
        w.add_rows(v.slice_rows(0, 40));
        w.add_rows(v.slice_rows(40, 100));
        for d in 0..3 {
            let col: Vec<f64> = v.iter_rows().map(|r| r[d] as f64).collect();
            let mean = col.iter().sum::<f64>() / 100.0;
            let var = col.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / 100.0;
            assert!((w.mean()[d] as f64 - mean).abs() < 1e-4);
            assert!((w.variance()[d] as f64 - var).abs() < 1e-3 * var.max(1.0));
        }
        assert_eq!(w.count(), 100);
        let max = v
            .iter_rows()
            .map(|r| r.iter().map(|x| x * x).sum::<f32>().sqrt())
            .fold(0.0f32, f32::max);
        assert!((w.max_norm() - max).abs() < 1e-3);
    }

    #[test]
    fn percentile_by_nearest_rank() {
        assert_eq!(percentile(&[], 50.0), 0.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        let v: Vec<f64> = (1..=101).rev().map(f64::from).collect(); // unsorted
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 50.0), 51.0);
        assert_eq!(percentile(&v, 99.0), 100.0);
        assert_eq!(percentile(&v, 100.0), 101.0);
        // Out-of-range p is clamped to the largest value, not a panic.
        assert_eq!(percentile(&v, 150.0), 101.0);
    }
}

//! Per-block standardisation (DESIGN §4.3, §4.6): how raw block values become the coordinates
//! the index stores, and how a query's block weights become weights on those coordinates.
//!
//! Definitions, for blocks b with dimensions k ∈ b:
//!
//! - spread `σ_b = sqrt(Σ_{k∈b} Var[x_k])` over the base (population variance, Welford); under
//!   cosine every block is normalised to unit norm first and `σ_b = 1` (normalisation already
//!   makes the blocks comparable);
//! - the multi-vector distance with query weights `w_b ≥ 0` is
//!   `D(q, x) = Σ_b w_b · D_b(q_b / σ_b, x_b / σ_b)` with `D_b` the squared L2 distance (l2), the
//!   negated inner product (ip) or the negated inner product of the normalised blocks, i.e.
//!   `−cos` (cosine); results are reported in natural units (`Σ w_b ‖·‖²/σ_b²`,
//!   `Σ w_b ⟨q_b, x_b⟩/σ_b²`, `Σ w_b cos_b`);
//! - the index stores `x'_b = c_b · x_b` with the block scale `c_b = sqrt(W_b) / σ_b` (W_b the
//!   build weight; `c_b = sqrt(W_b)` when built without standardisation), so unweighted L2 or
//!   inner product on stored coordinates is the distance with the build weights;
//! - a query is transformed the same way (`q'_b = c_b · q_b`) and scored on stored coordinates
//!   with the per-block factor `ω_b = w_b / (σ_b² c_b²)` (= `w_b / W_b` when standardised):
//!   `D = Σ_b ω_b · D_b(q'_b, x'_b)`. A block with `w_b = 0` is absent and skipped.

use super::BlockLayout;
use crate::data::{DataError, Matrix};
use crate::distance::{self, Metric};

/// `σ_b` of every block from per-dimension variances (see the module docs). A block without
/// spread (constant) gets 1, so it neither divides by zero nor gets inflated.
pub(crate) fn block_spreads(layout: &BlockLayout, metric: Metric, variance: &[f32]) -> Vec<f32> {
    assert_eq!(variance.len(), layout.dim(), "block_spreads: dimension");
    layout
        .blocks()
        .iter()
        .map(|b| {
            if metric == Metric::Cosine {
                return 1.0;
            }
            let s: f64 = variance[b.range()].iter().map(|&v| v as f64).sum();
            if s > 0.0 && s.is_finite() {
                s.sqrt() as f32
            } else {
                1.0
            }
        })
        .collect()
}

/// Block scales `c_b` (module docs) from spreads and build weights.
pub fn block_scales(spreads: &[f32], build_weights: &[f32], standardize: bool) -> Vec<f32> {
    spreads
        .iter()
        .zip(build_weights)
        .map(|(&s, &w)| if standardize { w.sqrt() / s } else { w.sqrt() })
        .collect()
}

/// Per-block query factors `ω_b = w_b / (σ_b² c_b²)` (module docs).
pub fn query_factors(spreads: &[f32], scales: &[f32], weights: &[f32]) -> Vec<f32> {
    weights
        .iter()
        .zip(spreads.iter().zip(scales))
        .map(|(&w, (&s, &c))| {
            if w == 0.0 {
                0.0
            } else {
                let f = (s as f64 * c as f64).powi(2);
                (w as f64 / f) as f32
            }
        })
        .collect()
}

/// Normalises every block of every row to unit norm (cosine). A zero block is an error naming
/// `path_of(block)` and the row (`first_row` is the id of row 0).
pub(crate) fn normalize_blocks(
    layout: &BlockLayout,
    rows: &mut Matrix<f32>,
    first_row: u64,
    path_of: &dyn Fn(usize) -> std::path::PathBuf,
) -> Result<(), DataError> {
    for i in 0..rows.rows() {
        let row = rows.row_mut(i);
        for (b, blk) in layout.blocks().iter().enumerate() {
            let part = &mut row[blk.range()];
            let n = distance::dot(part, part).sqrt();
            if n == 0.0 {
                return Err(DataError::ZeroVector {
                    path: path_of(b),
                    row: first_row + i as u64,
                });
            }
            part.iter_mut().for_each(|v| *v /= n);
        }
    }
    Ok(())
}

/// Multiplies block b of every row by `factors[b]`.
pub(crate) fn scale_blocks(layout: &BlockLayout, rows: &mut Matrix<f32>, factors: &[f32]) {
    for i in 0..rows.rows() {
        scale_row(layout, rows.row_mut(i), factors);
    }
}

/// Multiplies block b of `row` by `factors[b]`.
pub(crate) fn scale_row(layout: &BlockLayout, row: &mut [f32], factors: &[f32]) {
    for (blk, &f) in layout.blocks().iter().zip(factors) {
        row[blk.range()].iter_mut().for_each(|v| *v *= f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stored-coordinate distance with the query factors equals the definition on raw
    /// values, for standardised and unstandardised scales.
    #[test]
    fn factors_reproduce_the_weighted_standardised_distance() {
        let l = BlockLayout::new(&[("a", 2), ("b", 3)]).unwrap();
        let q = [1.0f32, -2.0, 30.0, 10.0, -20.0];
        let x = [0.5f32, 1.0, -10.0, 40.0, 0.0];
        let spreads = [1.5f32, 25.0];
        let w = [0.7f32, 2.0];
        let want: f32 = (0..2)
            .map(|b| {
                let r = l.range(b);
                w[b] * distance::l2_sq(&q[r.clone()], &x[r]) / (spreads[b] * spreads[b])
            })
            .sum();
        for standardize in [true, false] {
            let c = block_scales(&spreads, &[1.0, 3.0], standardize);
            let om = query_factors(&spreads, &c, &w);
            let (mut qs, mut xs) = (q, x);
            scale_row(&l, &mut qs, &c);
            scale_row(&l, &mut xs, &c);
            let got: f32 = (0..2)
                .map(|b| {
                    let r = l.range(b);
                    om[b] * distance::l2_sq(&qs[r.clone()], &xs[r])
                })
                .sum();
            assert!((got - want).abs() <= 1e-4 * want, "{got} vs {want}");
        }
    }

    #[test]
    fn spreads_sum_block_variances_and_cosine_is_unit() {
        let l = BlockLayout::new(&[("a", 2), ("b", 1)]).unwrap();
        let s = block_spreads(&l, Metric::L2, &[9.0, 16.0, 0.0]);
        assert_eq!(s, vec![5.0, 1.0]);
        assert_eq!(
            block_spreads(&l, Metric::Cosine, &[9.0, 16.0, 4.0]),
            vec![1.0, 1.0]
        );
        let mut m = Matrix::from_vec(vec![3.0, 4.0, 2.0, 0.0, 0.0, 1.0], 3).unwrap();
        let err = normalize_blocks(&l, &mut m, 10, &|b| format!("blk{b}").into()).unwrap_err();
        assert!(
            matches!(err, DataError::ZeroVector { ref path, row: 11 } if path.to_str() == Some("blk0")),
            "{err:?}"
        );
        assert_eq!(m.row(0), &[0.6, 0.8, 1.0]);
    }
}

//! Dense linear algebra on checked views: the matrix-product form of brute-force distances
//! (`|q − x|² = |q|² + |x|² − 2 q·x`), used by exact search and k-means assignment.

use crate::data::MatrixView;
use crate::distance;

/// `out[i·n + j] = a_i · b_j` for `a: m × d`, `b: n × d`. `out` is resized to `m·n`.
/// Panics when the dimensions differ (a programming error: callers check files up front).
pub fn dot_products(a: MatrixView<'_, f32>, b: MatrixView<'_, f32>, out: &mut Vec<f32>) {
    assert_eq!(a.dim(), b.dim(), "dot_products: dimension mismatch");
    out.clear();
    out.resize(a.rows() * b.rows(), 0.0);
    crate::simd::gemm::sgemm_abt(a.as_slice(), b.as_slice(), a.dim(), out);
}

/// Squared norms of every row.
pub fn row_norms_sq(m: MatrixView<'_, f32>) -> Vec<f32> {
    m.iter_rows().map(|r| distance::dot(r, r)).collect()
}

//! Distances between vectors: which metric, and how fast.
//!
//! [`reference`](mod@reference) (defined in [`crate::simd`], whose scalar table it is) holds the
//! scalar definitions, which are the specification; the functions at this level dispatch once
//! per process to the fastest kernel in [`crate::simd`] that the CPU supports and are tested
//! against the reference on random lengths.
//!
//! Conventions: `l2_sq` is the squared Euclidean distance; `dot` the inner product;
//! `weighted_l2_sq(a, b, w) = Σ w_k (a_k − b_k)²` (the LC-CMD form, DESIGN §4.3).

mod metric;
pub use metric::Metric;

use crate::simd;
pub use crate::simd::reference;

/// Squared Euclidean distance. Panics when the lengths differ.
#[inline]
pub fn l2_sq(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "l2_sq: length mismatch");
    (simd::kernels().l2_sq_f32)(a, b)
}

/// Inner product. Panics when the lengths differ.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot: length mismatch");
    (simd::kernels().dot_f32)(a, b)
}

/// Cosine similarity `a·b / (|a| |b|)`; 0 when either vector is zero.
#[inline]
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let ab = dot(a, b);
    let aa = dot(a, a);
    let bb = dot(b, b);
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa.sqrt() * bb.sqrt())
    }
}

/// `Σ w_k (a_k − b_k)²`. Panics when the lengths differ.
#[inline]
pub fn weighted_l2_sq(a: &[f32], b: &[f32], w: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "weighted_l2_sq: length mismatch");
    assert_eq!(a.len(), w.len(), "weighted_l2_sq: weight length mismatch");
    (simd::kernels().weighted_l2_sq_f32)(a, b, w)
}

/// Squared Euclidean distance of u8 vectors (exact in u32 for dim < 66,000).
#[inline]
pub fn l2_sq_u8(a: &[u8], b: &[u8]) -> u32 {
    assert_eq!(a.len(), b.len(), "l2_sq_u8: length mismatch");
    (simd::kernels().l2_sq_u8)(a, b)
}

/// Inner product of u8 vectors (exact in u32 for dim < 66,000).
#[inline]
pub fn dot_u8(a: &[u8], b: &[u8]) -> u32 {
    assert_eq!(a.len(), b.len(), "dot_u8: length mismatch");
    (simd::kernels().dot_u8)(a, b)
}

/// Squared Euclidean distance of i8 vectors (exact in u32 for dim < 66,000).
#[inline]
pub fn l2_sq_i8(a: &[i8], b: &[i8]) -> u32 {
    assert_eq!(a.len(), b.len(), "l2_sq_i8: length mismatch");
    (simd::kernels().l2_sq_i8)(a, b)
}

/// Inner product of i8 vectors (exact in i32 for dim < 130,000).
#[inline]
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    assert_eq!(a.len(), b.len(), "dot_i8: length mismatch");
    (simd::kernels().dot_i8)(a, b)
}

//! AVX-512F `l2_sq_f32` (x86_64); every other entry is taken from the AVX2+FMA table.
//!
//! AVX-512 `dot_f32` and `weighted_l2_sq_f32` were written and measured too, but did not gain
//! the required 10 % over AVX2 consistently at dims 128–960 and were removed; see
//! `docs/decisions/0001-simd-kernels.md`.
//!
//! Same structure as [`super::avx2`]: private `#[target_feature(enable = "avx512f")] unsafe fn`
//! kernels behind private safe wrappers, reachable only through the table returned by [`table`].
//! That table is built only after `is_x86_feature_detected!("avx512f")` succeeded *and* the AVX2
//! table was obtained (which itself requires AVX2+FMA detection), so every function pointer in it
//! runs on this CPU. Kernels iterate only up to the shortest input length; tails (fewer than 16
//! elements) use a masked load that touches only the in-bounds lanes, so nothing is ever read
//! out of bounds.

use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::Kernels;

/// The AVX-512 table if this CPU supports AVX-512F as well as AVX2 and FMA, else `None`.
pub(super) fn table() -> Option<&'static Kernels> {
    static TABLE: OnceLock<Option<Kernels>> = OnceLock::new();
    TABLE
        .get_or_init(|| {
            let base = super::avx2::table()?;
            is_x86_feature_detected!("avx512f").then_some(Kernels {
                isa: "avx512f",
                l2_sq_f32,
                ..*base
            })
        })
        .as_ref()
}

// ---------------------------------------------------------------------------------------------
// Safe wrappers (reachable only through the table above).
// ---------------------------------------------------------------------------------------------

fn l2_sq_f32(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "l2_sq_f32: length mismatch");
    // SAFETY: this wrapper is private and reachable only through the table built by `table()`
    // after `is_x86_feature_detected!("avx512f")` succeeded. The kernel reads at most
    // `min(a.len(), b.len())` elements of each slice.
    unsafe { l2_sq_f32_avx512(a, b) }
}

// ---------------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------------

/// Loads 16 f32 from `s[i..i + 16]`, panicking (never reading out of bounds) if that is not in
/// `s`. Callers iterate with `i + 16 <= s.len()`, so the check is optimized away.
#[inline]
#[target_feature(enable = "avx512f")]
fn load16(s: &[f32], i: usize) -> __m512 {
    let chunk: &[f32; 16] = s[i..i + 16].try_into().expect("slice of length 16");
    // SAFETY: `chunk` is a valid, readable `[f32; 16]` (64 bytes); `loadu` has no alignment
    // requirement.
    unsafe { _mm512_loadu_ps(chunk.as_ptr()) }
}

/// Loads `s[i..i + len]` (1 to 15 elements) into the low lanes of a vector, zeroing the others.
#[inline]
#[target_feature(enable = "avx512f")]
fn load_part(s: &[f32], i: usize, len: usize) -> __m512 {
    let part = &s[i..i + len];
    assert!(
        !part.is_empty() && part.len() < 16,
        "load_part: 1..16 elements expected"
    );
    let mask: __mmask16 = (1u16 << part.len()) - 1;
    // SAFETY: `part` holds `part.len()` readable f32s and `mask` selects exactly lanes
    // `0..part.len()`. An AVX-512 masked load reads only the selected lanes; masked-off lanes
    // are not accessed, cannot fault (Intel SDM, fault suppression), and are zeroed (`maskz`).
    unsafe { _mm512_maskz_loadu_ps(mask, part.as_ptr()) }
}

/// Sum of four accumulators, then of their 16 lanes.
#[inline]
#[target_feature(enable = "avx512f")]
fn finish(acc: [__m512; 4]) -> f32 {
    let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_reduce_add_ps(s)
}

// ---------------------------------------------------------------------------------------------
// f32 kernel: 4 accumulators × 16 lanes (64 elements per iteration), 16-element steps, one masked tail vector.
// ---------------------------------------------------------------------------------------------

/// `Σ (a_k − b_k)²` over the first `min(a.len(), b.len())` elements.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn l2_sq_f32_avx512(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [_mm512_setzero_ps(); 4];
    // No alignment head: peeling elements until `a` is 64-byte aligned would make the lane
    // split, and so the rounding of the sum, depend on the address of `a`, and the same
    // vectors at two addresses would give two results (builds must be byte-reproducible).
    let mut i = 0;
    while i + 64 <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            let d = _mm512_sub_ps(load16(a, i + 16 * k), load16(b, i + 16 * k));
            *acc = _mm512_fmadd_ps(d, d, *acc);
        }
        i += 64;
    }
    while i + 16 <= n {
        let d = _mm512_sub_ps(load16(a, i), load16(b, i));
        acc[0] = _mm512_fmadd_ps(d, d, acc[0]);
        i += 16;
    }
    if i < n {
        let d = _mm512_sub_ps(load_part(a, i, n - i), load_part(b, i, n - i));
        acc[1] = _mm512_fmadd_ps(d, d, acc[1]);
    }
    finish(acc)
}

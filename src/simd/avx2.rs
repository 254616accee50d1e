//! AVX2+FMA kernels (x86_64).
//!
//! Every kernel is a private `#[target_feature(enable = "avx2,fma")] unsafe fn` behind a private
//! safe wrapper. The wrappers are reachable only through [`TABLE`], which is itself handed out
//! only by [`table`] after `is_x86_feature_detected!` confirmed AVX2 and FMA; that is what makes
//! calling the `unsafe fn`s from safe wrappers sound.
//!
//! Bounds: the wrappers assert equal lengths, and the kernels additionally iterate only up to the
//! shortest input length, so no kernel ever reads out of bounds whatever it is given. Tails
//! (lengths that are not a multiple of the vector step) use, for f32, a masked load
//! (`vmaskmovps`), which reads only the in-bounds lanes and zeroes the rest; for u8/i8, the last
//! 16 bytes of the input (an in-bounds, overlapping load) with the already-counted lanes masked
//! to zero, or a scalar loop when the whole input is shorter than 16. Zero lanes contribute
//! nothing to any of these sums.
//!
//! Integer kernels widen u8/i8 to i16 (`cvtepu8_epi16` / `cvtepi8_epi16`) and multiply-add pairs
//! into i32 with `madd_epi16`: each pair sum is at most 2·255² = 130 050, far inside i32, so no
//! saturation is involved (unlike `maddubs_epi16`). The i32 lanes are added with wrapping
//! arithmetic, so the result is the exact sum modulo 2³², i.e. exact whenever the true result
//! fits the return type — the same range as the scalar reference.

use std::arch::x86_64::*;

use super::Kernels;

/// The AVX2+FMA table. Private: obtained only through [`table`], after CPU detection.
static TABLE: Kernels = Kernels {
    isa: "avx2+fma",
    l2_sq_f32,
    dot_f32,
    weighted_l2_sq_f32,
    l2_sq_u8,
    dot_u8,
    l2_sq_i8,
    dot_i8,
    lut_ip_256,
};

/// Whether this CPU can run the AVX2+FMA kernels.
pub(super) fn detected() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// The AVX2+FMA table if this CPU supports AVX2 and FMA, else `None`.
pub(super) fn table() -> Option<&'static Kernels> {
    detected().then_some(&TABLE)
}

// ---------------------------------------------------------------------------------------------
// Safe wrappers (reachable only through `TABLE`).
// ---------------------------------------------------------------------------------------------

fn lut_ip_256(q: &[f32], w: &[f32], out: &mut [f32; 256]) {
    assert_eq!(w.len(), q.len() * 256, "lut_ip_256: w is not q.len() × 256");
    // SAFETY: reachable only through `TABLE`, handed out after AVX2+FMA detection (see
    // `l2_sq_f32`); the kernel reads `w` only below `q.len() · 256` (asserted above) and
    // writes the 256 entries of `out`.
    unsafe { lut_ip_256_avx2(q, w, out) }
}

fn l2_sq_f32(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "l2_sq_f32: length mismatch");
    // SAFETY: this wrapper is private and reachable only through `TABLE`, which `table()` hands
    // out only after `is_x86_feature_detected!` confirmed AVX2 and FMA. The kernel reads at most
    // `min(a.len(), b.len())` elements of each slice.
    unsafe { l2_sq_f32_avx2(a, b) }
}

fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f32: length mismatch");
    // SAFETY: reachable only through `TABLE`, handed out after AVX2+FMA detection (see
    // `l2_sq_f32`); the kernel stays within the shortest slice.
    unsafe { dot_f32_avx2(a, b) }
}

fn weighted_l2_sq_f32(a: &[f32], b: &[f32], w: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "weighted_l2_sq_f32: length mismatch");
    assert_eq!(
        a.len(),
        w.len(),
        "weighted_l2_sq_f32: weight length mismatch"
    );
    // SAFETY: reachable only through `TABLE`, handed out after AVX2+FMA detection (see
    // `l2_sq_f32`); the kernel stays within the shortest slice.
    unsafe { weighted_l2_sq_f32_avx2(a, b, w) }
}

fn l2_sq_u8(a: &[u8], b: &[u8]) -> u32 {
    assert_eq!(a.len(), b.len(), "l2_sq_u8: length mismatch");
    // SAFETY: reachable only through `TABLE`, handed out after AVX2+FMA detection (see
    // `l2_sq_f32`); the kernel stays within the shortest slice.
    unsafe { l2_sq_u8_avx2(a, b) }
}

fn dot_u8(a: &[u8], b: &[u8]) -> u32 {
    assert_eq!(a.len(), b.len(), "dot_u8: length mismatch");
    // SAFETY: reachable only through `TABLE`, handed out after AVX2+FMA detection (see
    // `l2_sq_f32`); the kernel stays within the shortest slice.
    unsafe { dot_u8_avx2(a, b) }
}

fn l2_sq_i8(a: &[i8], b: &[i8]) -> u32 {
    assert_eq!(a.len(), b.len(), "l2_sq_i8: length mismatch");
    // SAFETY: reachable only through `TABLE`, handed out after AVX2+FMA detection (see
    // `l2_sq_f32`); the kernel stays within the shortest slice.
    unsafe { l2_sq_i8_avx2(a, b) }
}

fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    assert_eq!(a.len(), b.len(), "dot_i8: length mismatch");
    // SAFETY: reachable only through `TABLE`, handed out after AVX2+FMA detection (see
    // `l2_sq_f32`); the kernel stays within the shortest slice.
    unsafe { dot_i8_avx2(a, b) }
}

// ---------------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------------

/// Loads 8 f32 from `s[i..i + 8]`, panicking (never reading out of bounds) if that is not in
/// `s`. Callers iterate with `i + 8 <= s.len()`, so the check is optimized away.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn load8(s: &[f32], i: usize) -> __m256 {
    let chunk: &[f32; 8] = s[i..i + 8].try_into().expect("slice of length 8");
    // SAFETY: `chunk` is a valid, readable `[f32; 8]` (32 bytes); `loadu` has no alignment
    // requirement.
    unsafe { _mm256_loadu_ps(chunk.as_ptr()) }
}

/// Loads `s[i..]` (1 to 7 elements) into the low lanes of a vector, zeroing the others.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn load8_tail(s: &[f32], i: usize) -> __m256 {
    let rest = s.len() - i;
    assert!(0 < rest && rest < 8, "load8_tail: 1..8 elements expected");
    let mask = _mm256_cmpgt_epi32(
        _mm256_set1_epi32(rest as i32),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    );
    let tail = &s[i..];
    // SAFETY: `tail` is `s[i..]`, `rest` readable f32s. `vmaskmovps` reads only the lanes
    // whose mask bit is set, i.e. lanes `0..rest`, all inside `tail`; masked-off lanes are not
    // accessed and cannot fault (Intel SDM, VMASKMOV), and are set to zero.
    unsafe { _mm256_maskload_ps(tail.as_ptr(), mask) }
}

/// Loads 16 bytes from `s[i..i + 16]` (bounds-checked like [`load8`]).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn load16_bytes<T: Byte>(s: &[T], i: usize) -> __m128i {
    let chunk: &[T; 16] = s[i..i + 16].try_into().expect("slice of length 16");
    // SAFETY: `chunk` is 16 readable bytes (`T` is a 1-byte integer type, see `Byte`);
    // `loadu` has no alignment requirement.
    unsafe { _mm_loadu_si128(chunk.as_ptr().cast()) }
}

/// Byte masks for [`load16_bytes_tail`]: 16 zero bytes then 16 `0xFF` bytes; the 16 bytes
/// starting at offset `k` are `16 − k` zeros followed by `k` ones.
static TAIL_MASKS: [u8; 32] = {
    let mut m = [0u8; 32];
    let mut k = 16;
    while k < 32 {
        m[k] = 0xFF;
        k += 1;
    }
    m
};

/// The last 16 elements of `s` (which must hold at least 16), with the lanes before index `i`
/// zeroed: that is `s[i..]` (`0 < s.len() − i < 16` elements) in the high lanes, zeros below.
/// Lane order does not matter to the sums that use it, and zero lanes contribute nothing.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn load16_bytes_tail<T: Byte>(s: &[T], i: usize) -> __m128i {
    let rest = s.len() - i;
    assert!(
        0 < rest && rest < 16 && s.len() >= 16,
        "load16_bytes_tail: bad tail"
    );
    let last = load16_bytes(s, s.len() - 16);
    let mask = load16_bytes(&TAIL_MASKS, rest);
    _mm_and_si128(last, mask)
}

/// 1-byte integer element types (u8, i8).
trait Byte: Copy {}
impl Byte for u8 {}
impl Byte for i8 {}

/// Horizontal sum of 8 f32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum_ps(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps::<1>(v);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Horizontal wrapping sum of 8 i32 lanes, as the u32 bit pattern.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum_epi32(v: __m256i) -> u32 {
    let lo = _mm256_castsi256_si128(v);
    let hi = _mm256_extracti128_si256::<1>(v);
    let s = _mm_add_epi32(lo, hi);
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s) as u32
}

// ---------------------------------------------------------------------------------------------
// f32 kernels: 4 independent accumulators × 8 lanes (32 elements per iteration) to hide the
// FMA latency, then 8-element steps, then one masked tail vector.
// ---------------------------------------------------------------------------------------------

/// `Σ (a_k − b_k)²` over the first `min(a.len(), b.len())` elements.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn l2_sq_f32_avx2(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            let d = _mm256_sub_ps(load8(a, i + 8 * k), load8(b, i + 8 * k));
            *acc = _mm256_fmadd_ps(d, d, *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        let d = _mm256_sub_ps(load8(a, i), load8(b, i));
        acc[0] = _mm256_fmadd_ps(d, d, acc[0]);
        i += 8;
    }
    if i < n {
        let d = _mm256_sub_ps(load8_tail(a, i), load8_tail(b, i));
        acc[1] = _mm256_fmadd_ps(d, d, acc[1]);
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    hsum_ps(s)
}

/// `Σ a_k b_k` over the first `min(a.len(), b.len())` elements.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_f32_avx2(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            *acc = _mm256_fmadd_ps(load8(a, i + 8 * k), load8(b, i + 8 * k), *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(load8(a, i), load8(b, i), acc[0]);
        i += 8;
    }
    if i < n {
        acc[1] = _mm256_fmadd_ps(load8_tail(a, i), load8_tail(b, i), acc[1]);
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    hsum_ps(s)
}

/// `Σ w_k (a_k − b_k)²` over the first `min(a.len(), b.len(), w.len())` elements.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn weighted_l2_sq_f32_avx2(a: &[f32], b: &[f32], w: &[f32]) -> f32 {
    let n = a.len().min(b.len()).min(w.len());
    let (a, b, w) = (&a[..n], &b[..n], &w[..n]);
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            let d = _mm256_sub_ps(load8(a, i + 8 * k), load8(b, i + 8 * k));
            let wd = _mm256_mul_ps(load8(w, i + 8 * k), d);
            *acc = _mm256_fmadd_ps(wd, d, *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        let d = _mm256_sub_ps(load8(a, i), load8(b, i));
        let wd = _mm256_mul_ps(load8(w, i), d);
        acc[0] = _mm256_fmadd_ps(wd, d, acc[0]);
        i += 8;
    }
    if i < n {
        let d = _mm256_sub_ps(load8_tail(a, i), load8_tail(b, i));
        let wd = _mm256_mul_ps(load8_tail(w, i), d);
        acc[1] = _mm256_fmadd_ps(wd, d, acc[1]);
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    hsum_ps(s)
}

// ---------------------------------------------------------------------------------------------
// Integer kernels: 16 bytes at a time, widened to 16 × i16, pairs multiply-added to 8 × i32.
// Two accumulators (32 bytes per iteration), then 16-byte steps, then a masked overlapping tail
// (or scalar for inputs shorter than 16).
// ---------------------------------------------------------------------------------------------

/// Integer kernel body shared by the four u8/i8 kernels: `step` maps two 16-byte vectors to
/// 8 i32 partial sums, `scalar` one pair of elements to its term (as a u32 bit pattern); the
/// scalar path is used only for inputs shorter than 16.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn int_kernel<T: Byte>(
    a: &[T],
    b: &[T],
    step: impl Fn(__m128i, __m128i) -> __m256i,
    scalar: impl Fn(T, T) -> u32,
) -> u32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc0 = _mm256_setzero_si256();
    let mut acc1 = _mm256_setzero_si256();
    let mut i = 0;
    while i + 32 <= n {
        acc0 = _mm256_add_epi32(acc0, step(load16_bytes(a, i), load16_bytes(b, i)));
        acc1 = _mm256_add_epi32(acc1, step(load16_bytes(a, i + 16), load16_bytes(b, i + 16)));
        i += 32;
    }
    if i + 16 <= n {
        acc0 = _mm256_add_epi32(acc0, step(load16_bytes(a, i), load16_bytes(b, i)));
        i += 16;
    }
    if i < n && n >= 16 {
        // Both inputs are masked the same way, so the overlapping lanes are zero in each and add
        // nothing to either l2 or dot.
        acc1 = _mm256_add_epi32(acc1, step(load16_bytes_tail(a, i), load16_bytes_tail(b, i)));
        i = n;
    }
    let sum = hsum_epi32(_mm256_add_epi32(acc0, acc1));
    // Inputs shorter than 16 elements: scalar.
    a[i..]
        .iter()
        .zip(&b[i..])
        .fold(sum, |s, (&x, &y)| s.wrapping_add(scalar(x, y)))
}

/// `Σ (a_k − b_k)²` over u8, exact modulo 2³².
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn l2_sq_u8_avx2(a: &[u8], b: &[u8]) -> u32 {
    int_kernel(
        a,
        b,
        |x, y| {
            let d = _mm256_sub_epi16(_mm256_cvtepu8_epi16(x), _mm256_cvtepu8_epi16(y));
            _mm256_madd_epi16(d, d)
        },
        |x, y| (i32::from(x) - i32::from(y)).pow(2) as u32,
    )
}

/// `Σ a_k b_k` over u8, exact modulo 2³².
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_u8_avx2(a: &[u8], b: &[u8]) -> u32 {
    int_kernel(
        a,
        b,
        |x, y| _mm256_madd_epi16(_mm256_cvtepu8_epi16(x), _mm256_cvtepu8_epi16(y)),
        |x, y| u32::from(x) * u32::from(y),
    )
}

/// `Σ (a_k − b_k)²` over i8, exact modulo 2³².
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn l2_sq_i8_avx2(a: &[i8], b: &[i8]) -> u32 {
    int_kernel(
        a,
        b,
        |x, y| {
            let d = _mm256_sub_epi16(_mm256_cvtepi8_epi16(x), _mm256_cvtepi8_epi16(y));
            _mm256_madd_epi16(d, d)
        },
        |x, y| (i32::from(x) - i32::from(y)).pow(2) as u32,
    )
}

/// `Σ a_k b_k` over i8, exact modulo 2³² (two's complement).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_i8_avx2(a: &[i8], b: &[i8]) -> i32 {
    int_kernel(
        a,
        b,
        |x, y| _mm256_madd_epi16(_mm256_cvtepi8_epi16(x), _mm256_cvtepi8_epi16(y)),
        |x, y| (i32::from(x) * i32::from(y)) as u32,
    ) as i32
}

/// [`super::reference::lut_ip_256`] with the 256 entries as 32 lanes of 8, in four passes of
/// 64 entries whose partial sums stay in 8 registers over all dimensions. A multiply then an
/// add per dimension, in dimension order, as the reference: the same bits.
#[target_feature(enable = "avx2,fma")]
unsafe fn lut_ip_256_avx2(q: &[f32], w: &[f32], out: &mut [f32; 256]) {
    let dims = q.len().min(w.len() / 256);
    for chunk in 0..4 {
        let mut acc = [_mm256_setzero_ps(); 8];
        for (d, &qd) in q.iter().enumerate().take(dims) {
            let qv = _mm256_set1_ps(qd);
            let row = &w[d * 256 + chunk * 64..d * 256 + (chunk + 1) * 64];
            for (k, a) in acc.iter_mut().enumerate() {
                // SAFETY: `row` holds 64 floats, so lanes 8k..8k+8 (k < 8) are in bounds;
                // unaligned loads are allowed.
                let x = unsafe { _mm256_loadu_ps(row.as_ptr().add(8 * k)) };
                *a = _mm256_add_ps(*a, _mm256_mul_ps(qv, x));
            }
        }
        let dst = &mut out[chunk * 64..(chunk + 1) * 64];
        for (k, a) in acc.iter().enumerate() {
            // SAFETY: `dst` holds 64 floats, so lanes 8k..8k+8 (k < 8) are in bounds.
            unsafe { _mm256_storeu_ps(dst.as_mut_ptr().add(8 * k), *a) };
        }
    }
}

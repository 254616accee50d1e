//! The only place for target-feature code. [`kernels`] detects the CPU once and returns a
//! table of safe function pointers; the `#[target_feature]` functions stay private behind
//! wrappers that check lengths themselves (callers in [`crate::distance`] assert them too).
//!
//! Tables (x86_64): `"avx512f"` (AVX-512F `l2_sq_f32`, AVX2+FMA for the rest), `"avx2+fma"`,
//! and everywhere `"scalar"` ([`SCALAR`], the reference). A SIMD table can only be obtained
//! through [`kernels`] or [`available_tables`], both of which check the CPU first; this is what
//! makes its safe function pointers sound.
//!
//! # Choosing a table: `M3_SIMD`
//!
//! By default [`kernels`] picks the best table the CPU supports. The environment variable
//! `M3_SIMD`, read once at the first call, overrides that:
//!
//! - `M3_SIMD=scalar`: use the scalar reference kernels (to exercise or compare the scalar path);
//! - `M3_SIMD=avx2`: use at most the AVX2+FMA table (scalar if the CPU lacks AVX2 or FMA);
//! - unset, empty, `auto` or anything else: the best available table.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod gemm;
pub mod reference;

use std::sync::OnceLock;

/// A table of distance kernels for one instruction set.
#[derive(Debug, Clone, Copy)]
pub struct Kernels {
    /// Instruction set name, e.g. "scalar", "avx2+fma", "avx512".
    pub isa: &'static str,
    pub l2_sq_f32: fn(&[f32], &[f32]) -> f32,
    pub dot_f32: fn(&[f32], &[f32]) -> f32,
    pub weighted_l2_sq_f32: fn(&[f32], &[f32], &[f32]) -> f32,
    pub l2_sq_u8: fn(&[u8], &[u8]) -> u32,
    pub dot_u8: fn(&[u8], &[u8]) -> u32,
    pub l2_sq_i8: fn(&[i8], &[i8]) -> u32,
    pub dot_i8: fn(&[i8], &[i8]) -> i32,
    /// One PQ subspace's 256 inner-product table entries ([`reference::lut_ip_256`]); the
    /// same bits in every table.
    pub lut_ip_256: fn(&[f32], &[f32], &mut [f32; 256]),
}

/// The scalar table (the specification).
pub const SCALAR: Kernels = Kernels {
    isa: "scalar",
    l2_sq_f32: reference::l2_sq_f32,
    dot_f32: reference::dot_f32,
    weighted_l2_sq_f32: reference::weighted_l2_sq_f32,
    l2_sq_u8: reference::l2_sq_u8,
    dot_u8: reference::dot_u8,
    l2_sq_i8: reference::l2_sq_i8,
    dot_i8: reference::dot_i8,
    lut_ip_256: reference::lut_ip_256,
};

static SCALAR_TABLE: Kernels = SCALAR;

/// The kernel table in use: the best one for this CPU unless `M3_SIMD` says otherwise (see the
/// module documentation). Detected once per process.
pub fn kernels() -> &'static Kernels {
    static TABLE: OnceLock<&'static Kernels> = OnceLock::new();
    TABLE.get_or_init(|| select(std::env::var("M3_SIMD").ok().as_deref()))
}

/// The table chosen for an `M3_SIMD` value (`None` when unset).
fn select(pref: Option<&str>) -> &'static Kernels {
    let tables = available_tables();
    let pick = |isa: &str| tables.iter().copied().find(|t| t.isa == isa);
    match pref.map(str::trim) {
        Some(p) if p.eq_ignore_ascii_case("scalar") => &SCALAR_TABLE,
        Some(p) if p.eq_ignore_ascii_case("avx2") => pick("avx2+fma").unwrap_or(&SCALAR_TABLE),
        _ => tables[0],
    }
}

/// Every table this CPU can run, best first; the scalar table is always last.
pub fn available_tables() -> Vec<&'static Kernels> {
    let mut tables = Vec::with_capacity(3);
    #[cfg(target_arch = "x86_64")]
    {
        tables.extend(avx512::table());
        tables.extend(avx2::table());
    }
    tables.push(&SCALAR_TABLE);
    tables
}

#[cfg(test)]
mod tests;

/// Asks the CPU to bring the cache line holding `data[i]` into its caches, for a load that
/// comes a little later (random accesses into large arrays, e.g. the PQ codes of scattered
/// records). A hint only: results never depend on it; an index out of range does nothing.
#[inline(always)]
pub fn prefetch<T>(data: &[T], i: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(x) = data.get(i) {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch never faults and has no effect a program can observe besides
        // timing; the address is that of a live element of `data`, and SSE (which provides
        // the instruction) is part of the x86_64 baseline.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(x).cast::<i8>()) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, i);
}

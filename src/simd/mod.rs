//! The only place for target-feature code. [`kernels`] detects the CPU once and returns a
//! table of safe function pointers; the `#[target_feature]` functions stay private behind
//! wrappers that have already checked lengths (callers in [`crate::distance`] assert them).

pub mod gemm;

use std::sync::OnceLock;

use crate::distance::reference;

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
};

/// The best kernel table for this CPU, detected once.
pub fn kernels() -> &'static Kernels {
    static TABLE: OnceLock<Kernels> = OnceLock::new();
    TABLE.get_or_init(|| SCALAR)
}

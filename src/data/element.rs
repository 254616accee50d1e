//! Element types of stored vectors.

use std::fmt;

/// The element type of a vector file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// Unsigned byte.
    U8,
    /// Signed byte.
    I8,
}

impl DType {
    /// Bytes per element.
    pub const fn size_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::U8 | DType::I8 => 1,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::U8 => "u8",
            DType::I8 => "i8",
        })
    }
}

/// A scalar that vectors are made of. Little-endian on disk; this crate supports
/// little-endian targets only (checked at compile time in [`crate::data::format`]).
pub trait Element:
    bytemuck::Pod + Default + Send + Sync + PartialEq + fmt::Debug + 'static
{
    /// The [`DType`] of this element type.
    const DTYPE: DType;
    /// The value as f32 (exact for u8 and i8).
    fn to_f32(self) -> f32;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    #[inline]
    fn to_f32(self) -> f32 {
        self
    }
}

impl Element for u8 {
    const DTYPE: DType = DType::U8;
    #[inline]
    fn to_f32(self) -> f32 {
        self as f32
    }
}

impl Element for i8 {
    const DTYPE: DType = DType::I8;
    #[inline]
    fn to_f32(self) -> f32 {
        self as f32
    }
}

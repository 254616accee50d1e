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

    /// The integers an integer type holds, `(min, max)`; `None` for f32.
    pub const fn integer_range(self) -> Option<(i32, i32)> {
        match self {
            DType::F32 => None,
            DType::U8 => Some((u8::MIN as i32, u8::MAX as i32)),
            DType::I8 => Some((i8::MIN as i32, i8::MAX as i32)),
        }
    }

    /// Whether `x` is exactly a value of this type: finite for f32, an integer within
    /// [`DType::integer_range`] for u8 and i8 (so converting it loses nothing).
    pub fn holds(self, x: f32) -> bool {
        match self.integer_range() {
            None => x.is_finite(),
            Some((lo, hi)) => x.fract() == 0.0 && x >= lo as f32 && x <= hi as f32,
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

#[cfg(test)]
mod tests {
    use super::DType;

    #[test]
    fn holds_only_exact_values_of_the_type() {
        for x in [0.0, -0.0, 1.0, 128.0, 255.0] {
            assert!(DType::U8.holds(x), "{x}");
        }
        for x in [-1.0, 256.0, 300.0, 1.5, 254.999, f32::NAN, f32::INFINITY] {
            assert!(!DType::U8.holds(x), "{x}");
        }
        for x in [-128.0, -1.0, 0.0, 127.0] {
            assert!(DType::I8.holds(x), "{x}");
        }
        for x in [-129.0, 128.0, 0.5, -0.25, f32::NEG_INFINITY] {
            assert!(!DType::I8.holds(x), "{x}");
        }
        assert!(DType::F32.holds(1.5) && DType::F32.holds(-1e30));
        assert!(!DType::F32.holds(f32::NAN) && !DType::F32.holds(f32::INFINITY));
        assert_eq!(DType::U8.integer_range(), Some((0, 255)));
        assert_eq!(DType::I8.integer_range(), Some((-128, 127)));
        assert_eq!(DType::F32.integer_range(), None);
    }
}

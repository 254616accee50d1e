//! Scalar reference kernels: the specification every SIMD kernel is tested against.
//! Accumulation is in f32 (f32 kernels) or exact integers (u8/i8 kernels).

/// `Σ (a_k − b_k)²`, summed left to right in f32 (equal lengths expected).
pub fn l2_sq_f32(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// `Σ a_k b_k`, summed left to right in f32 (equal lengths expected).
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `Σ w_k (a_k − b_k)²`, summed left to right in f32 (equal lengths expected).
pub fn weighted_l2_sq_f32(a: &[f32], b: &[f32], w: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .zip(w)
        .map(|((x, y), w)| w * (x - y) * (x - y))
        .sum()
}

/// `Σ (a_k − b_k)²` over u8, exact.
pub fn l2_sq_u8(a: &[u8], b: &[u8]) -> u32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = x as i32 - y as i32;
            (d * d) as u32
        })
        .sum()
}

/// `Σ a_k b_k` over u8, exact.
pub fn dot_u8(a: &[u8], b: &[u8]) -> u32 {
    a.iter().zip(b).map(|(&x, &y)| x as u32 * y as u32).sum()
}

/// `Σ (a_k − b_k)²` over i8, exact.
pub fn l2_sq_i8(a: &[i8], b: &[i8]) -> u32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = x as i32 - y as i32;
            (d * d) as u32
        })
        .sum()
}

/// `Σ a_k b_k` over i8, exact.
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

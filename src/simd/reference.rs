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

/// Lookup-table entries of one PQ subspace: `out[j] = Σ_d q_d · w[d·256 + j]` for the 256
/// codewords (`w` dimension-major, `q.len() × 256`), each entry summed over `d` in order from
/// 0.0 with a multiply then an add (no fused multiply-add), so every table computes the same
/// bits.
pub fn lut_ip_256(q: &[f32], w: &[f32], out: &mut [f32; 256]) {
    assert_eq!(w.len(), q.len() * 256, "lut_ip_256: w is not q.len() × 256");
    out.fill(0.0);
    for (d, &qd) in q.iter().enumerate() {
        let row: &[f32; 256] = w[d * 256..(d + 1) * 256].try_into().expect("256 entries");
        for (o, &x) in out.iter_mut().zip(row) {
            *o += qd * x;
        }
    }
}

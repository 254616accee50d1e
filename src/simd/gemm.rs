//! Dense `C = A · Bᵀ` on f32 through `matrixmultiply`'s blocked, SIMD-dispatched sgemm.

/// `c[i·n + j] = Σ_k a[i·d + k] · b[j·d + k]` for `a: m × d`, `b: n × d`, `c: m × n`, all
/// row-major. Panics when the slice lengths disagree with the shape.
pub fn sgemm_abt(a: &[f32], b: &[f32], d: usize, c: &mut [f32]) {
    assert!(d > 0, "sgemm_abt: d must be positive");
    assert_eq!(a.len() % d, 0, "sgemm_abt: a is not m × d");
    assert_eq!(b.len() % d, 0, "sgemm_abt: b is not n × d");
    let m = a.len() / d;
    let n = b.len() / d;
    assert_eq!(c.len(), m * n, "sgemm_abt: c is not m × n");
    if m == 0 || n == 0 {
        return;
    }
    // Strides fit isize because each slice's length does.
    let (d_i, n_i) = (d as isize, n as isize);
    // SAFETY: `a` holds m·d elements read with row stride d and column stride 1; `b` is read
    // as the d × n matrix Bᵀ, element (k, j) at j·d + k < n·d; `c` holds m·n elements written
    // with row stride n. All three lengths were asserted above, so every access is in bounds,
    // and `c` is a unique borrow that aliases neither input.
    unsafe {
        matrixmultiply::sgemm(
            m,
            d,
            n,
            1.0,
            a.as_ptr(),
            d_i,
            1,
            b.as_ptr(),
            1,
            d_i,
            0.0,
            c.as_mut_ptr(),
            n_i,
            1,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive_product() {
        let d = 7;
        let a: Vec<f32> = (0..3 * d).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..5 * d).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut c = vec![0.0; 15];
        sgemm_abt(&a, &b, d, &mut c);
        for i in 0..3 {
            for j in 0..5 {
                let want: f32 = (0..d).map(|k| a[i * d + k] * b[j * d + k]).sum();
                assert!((c[i * 5 + j] - want).abs() < 1e-5, "({i},{j})");
            }
        }
    }
}

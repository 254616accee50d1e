//! Every available kernel table against the scalar reference: exact for integers, within a
//! reassociation tolerance for f32.

use proptest::collection::vec;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::reference as r;
use super::{Kernels, available_tables, select};

/// Lengths around every vector step (8, 16, 32, 64) plus typical dimensions.
const LENGTHS: &[usize] = &[
    0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 48, 63, 64, 65, 95, 96, 97, 127, 128, 129,
    200, 384, 960, 1000, 1100,
];

/// `|got − want| ≤ 1e-4 · Σ|terms| + 1e-5`, the bound for a reassociated f32 sum.
fn assert_close(what: &str, isa: &str, n: usize, got: f32, want: f32, abs_terms: f64) {
    let tol = 1e-4 * abs_terms + 1e-5;
    let err = (f64::from(got) - f64::from(want)).abs();
    assert!(
        err <= tol,
        "{what} [{isa}] n={n}: got {got}, want {want}, |err| {err} > tol {tol}"
    );
}

fn check_f32(t: &Kernels, a: &[f32], b: &[f32], w: &[f32]) {
    let n = a.len();
    let abs_l2: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    let abs_dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x * y).abs()).sum();
    let abs_w: f64 = a
        .iter()
        .zip(b)
        .zip(w)
        .map(|((x, y), w)| (f64::from(*w) * f64::from(x - y).powi(2)).abs())
        .sum();
    assert_close(
        "l2_sq_f32",
        t.isa,
        n,
        (t.l2_sq_f32)(a, b),
        r::l2_sq_f32(a, b),
        abs_l2,
    );
    assert_close(
        "dot_f32",
        t.isa,
        n,
        (t.dot_f32)(a, b),
        r::dot_f32(a, b),
        abs_dot,
    );
    assert_close(
        "weighted_l2_sq_f32",
        t.isa,
        n,
        (t.weighted_l2_sq_f32)(a, b, w),
        r::weighted_l2_sq_f32(a, b, w),
        abs_w,
    );
}

fn check_u8(t: &Kernels, a: &[u8], b: &[u8]) {
    let n = a.len();
    assert_eq!(
        (t.l2_sq_u8)(a, b),
        r::l2_sq_u8(a, b),
        "l2_sq_u8 [{}] n={n}",
        t.isa
    );
    assert_eq!(
        (t.dot_u8)(a, b),
        r::dot_u8(a, b),
        "dot_u8 [{}] n={n}",
        t.isa
    );
}

fn check_i8(t: &Kernels, a: &[i8], b: &[i8]) {
    let n = a.len();
    assert_eq!(
        (t.l2_sq_i8)(a, b),
        r::l2_sq_i8(a, b),
        "l2_sq_i8 [{}] n={n}",
        t.isa
    );
    assert_eq!(
        (t.dot_i8)(a, b),
        r::dot_i8(a, b),
        "dot_i8 [{}] n={n}",
        t.isa
    );
}

#[test]
fn simd_tables_are_detected_as_expected() {
    let tables = available_tables();
    let isas: Vec<&str> = tables.iter().map(|t| t.isa).collect();
    assert_eq!(isas.last(), Some(&"scalar"), "{isas:?}");
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        assert_eq!(isas.contains(&"avx2+fma"), avx2, "{isas:?}");
        let avx512 = avx2 && is_x86_feature_detected!("avx512f");
        assert_eq!(isas.contains(&"avx512f"), avx512, "{isas:?}");
    }
    // `M3_SIMD` selection.
    assert_eq!(select(Some("scalar")).isa, "scalar");
    assert_eq!(select(Some(" SCALAR ")).isa, "scalar");
    assert_eq!(select(None).isa, tables[0].isa);
    assert_eq!(select(Some("auto")).isa, tables[0].isa);
    let capped = select(Some("avx2")).isa;
    assert!(capped == "avx2+fma" || capped == "scalar", "{capped}");
    assert!(!isas.contains(&"avx2+fma") || capped == "avx2+fma");
}

#[test]
fn simd_f32_fixed_lengths() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for &n in LENGTHS {
        let a: Vec<f32> = (0..n).map(|_| rng.random_range(-100.0..100.0)).collect();
        let b: Vec<f32> = (0..n).map(|_| rng.random_range(-100.0..100.0)).collect();
        let w: Vec<f32> = (0..n).map(|_| rng.random_range(0.0..2.0)).collect();
        for t in available_tables() {
            check_f32(t, &a, &b, &w);
        }
    }
}

/// Small integer-valued f32 inputs make every partial sum exact, so every table must agree with
/// the reference bit for bit; a wrong tail (dropped or doubled element) shows up as a difference.
#[test]
fn simd_f32_exact_on_small_integers() {
    for &n in LENGTHS {
        let a: Vec<f32> = (0..n).map(|k| (k % 7) as f32 - 3.0).collect();
        let b: Vec<f32> = (0..n).map(|k| (k % 5) as f32 + 1.0).collect();
        let w: Vec<f32> = (0..n).map(|k| (k % 3) as f32).collect();
        for t in available_tables() {
            assert_eq!(
                (t.l2_sq_f32)(&a, &b),
                r::l2_sq_f32(&a, &b),
                "{} n={n}",
                t.isa
            );
            assert_eq!((t.dot_f32)(&a, &b), r::dot_f32(&a, &b), "{} n={n}", t.isa);
            let want = r::weighted_l2_sq_f32(&a, &b, &w);
            assert_eq!((t.weighted_l2_sq_f32)(&a, &b, &w), want, "{} n={n}", t.isa);
        }
    }
}

/// Sub-slices starting at every f32 offset within a 64-byte line, with `a` and `b` misaligned
/// differently (exercises the AVX-512 alignment head and its interplay with the tail).
#[test]
fn simd_f32_all_alignments() {
    let buf_a: Vec<f32> = (0..1200).map(|k| (k % 7) as f32 - 3.0).collect();
    let buf_b: Vec<f32> = (0..1200).map(|k| (k % 5) as f32 + 1.0).collect();
    let buf_w: Vec<f32> = (0..1200).map(|k| (k % 3) as f32).collect();
    for &n in LENGTHS {
        for off in 0..16 {
            let a = &buf_a[off..off + n];
            let b = &buf_b[(off * 7) % 16..(off * 7) % 16 + n];
            let w = &buf_w[(off * 3) % 16..(off * 3) % 16 + n];
            for t in available_tables() {
                let isa = t.isa;
                assert_eq!(
                    (t.l2_sq_f32)(a, b),
                    r::l2_sq_f32(a, b),
                    "{isa} n={n} off={off}"
                );
                assert_eq!((t.dot_f32)(a, b), r::dot_f32(a, b), "{isa} n={n} off={off}");
                let want = r::weighted_l2_sq_f32(a, b, w);
                assert_eq!(
                    (t.weighted_l2_sq_f32)(a, b, w),
                    want,
                    "{isa} n={n} off={off}"
                );
            }
        }
    }
}

#[test]
fn simd_int_fixed_lengths() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for &n in LENGTHS {
        let a: Vec<u8> = (0..n).map(|_| rng.random()).collect();
        let b: Vec<u8> = (0..n).map(|_| rng.random()).collect();
        let c: Vec<i8> = (0..n).map(|_| rng.random()).collect();
        let d: Vec<i8> = (0..n).map(|_| rng.random()).collect();
        for t in available_tables() {
            check_u8(t, &a, &b);
            check_i8(t, &c, &d);
        }
    }
}

#[test]
fn simd_int_extremes_are_exact() {
    for n in [1, 17, 33, 4096, 4097, 66_000] {
        let zeros = vec![0u8; n];
        let max = vec![255u8; n];
        let (lo, hi) = (vec![i8::MIN; n], vec![i8::MAX; n]);
        let n32 = n as u32;
        for t in available_tables() {
            let isa = t.isa;
            assert_eq!((t.l2_sq_u8)(&max, &zeros), 65_025 * n32, "{isa} n={n}");
            assert_eq!((t.l2_sq_u8)(&zeros, &max), 65_025 * n32, "{isa} n={n}");
            assert_eq!((t.dot_u8)(&max, &max), 65_025 * n32, "{isa} n={n}");
            assert_eq!((t.dot_u8)(&max, &zeros), 0, "{isa} n={n}");
            assert_eq!((t.l2_sq_i8)(&lo, &hi), 65_025 * n32, "{isa} n={n}");
            assert_eq!((t.l2_sq_i8)(&hi, &lo), 65_025 * n32, "{isa} n={n}");
            assert_eq!((t.l2_sq_i8)(&lo, &lo), 0, "{isa} n={n}");
            assert_eq!((t.dot_i8)(&lo, &lo), 16_384 * n as i32, "{isa} n={n}");
            assert_eq!((t.dot_i8)(&lo, &hi), -16_256 * n as i32, "{isa} n={n}");
            assert_eq!((t.dot_i8)(&hi, &hi), 16_129 * n as i32, "{isa} n={n}");
        }
    }
}

#[test]
fn simd_tables_panic_on_length_mismatch() {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    for t in available_tables().into_iter().filter(|t| t.isa != "scalar") {
        let (a, b) = (vec![1.0f32; 9], vec![1.0f32; 8]);
        let (x, y) = (vec![1u8; 17], vec![1u8; 16]);
        let (p, q) = (vec![1i8; 17], vec![1i8; 16]);
        let calls: [&dyn Fn(); 8] = [
            &|| _ = std::hint::black_box((t.l2_sq_f32)(&a, &b)),
            &|| _ = std::hint::black_box((t.dot_f32)(&b, &a)),
            &|| _ = std::hint::black_box((t.weighted_l2_sq_f32)(&a, &a, &b)),
            &|| _ = std::hint::black_box((t.weighted_l2_sq_f32)(&a, &b, &a)),
            &|| _ = std::hint::black_box((t.l2_sq_u8)(&x, &y)),
            &|| _ = std::hint::black_box((t.dot_u8)(&y, &x)),
            &|| _ = std::hint::black_box((t.l2_sq_i8)(&p, &q)),
            &|| _ = std::hint::black_box((t.dot_i8)(&q, &p)),
        ];
        for (k, call) in calls.iter().enumerate() {
            assert!(
                catch_unwind(AssertUnwindSafe(call)).is_err(),
                "{} call {k}",
                t.isa
            );
        }
    }
}

fn f32_pair_and_weights() -> impl Strategy<Value = (Vec<f32>, Vec<f32>, Vec<f32>)> {
    (0usize..=1100).prop_flat_map(|n| {
        (
            vec(-100.0f32..100.0, n),
            vec(-100.0f32..100.0, n),
            vec(0.0f32..10.0, n),
        )
    })
}

fn u8_value() -> impl Strategy<Value = u8> {
    prop_oneof![3 => any::<u8>(), 1 => Just(0u8), 1 => Just(u8::MAX)]
}

fn i8_value() -> impl Strategy<Value = i8> {
    prop_oneof![3 => any::<i8>(), 1 => Just(i8::MIN), 1 => Just(i8::MAX), 1 => Just(0i8)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn simd_f32_matches_reference((a, b, w) in f32_pair_and_weights()) {
        for t in available_tables() {
            check_f32(t, &a, &b, &w);
        }
    }

    #[test]
    fn simd_u8_matches_reference(
        (a, b) in (0usize..=1100).prop_flat_map(|n| (vec(u8_value(), n), vec(u8_value(), n)))
    ) {
        for t in available_tables() {
            check_u8(t, &a, &b);
        }
    }

    #[test]
    fn simd_i8_matches_reference(
        (a, b) in (0usize..=1100).prop_flat_map(|n| (vec(i8_value(), n), vec(i8_value(), n)))
    ) {
        for t in available_tables() {
            check_i8(t, &a, &b);
        }
    }
}

/// Every table's PQ lookup-table kernel gives the reference's bits (same operations in the
/// same order), for subspace widths 1–17 and random codewords.
#[test]
fn lut_ip_256_is_bit_identical_to_the_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(256);
    for width in 1..=17usize {
        let q: Vec<f32> = (0..width).map(|_| rng.random_range(-2.0..2.0)).collect();
        let w: Vec<f32> = (0..width * 256)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let mut want = [0.0f32; 256];
        r::lut_ip_256(&q, &w, &mut want);
        for t in available_tables() {
            let mut got = [7.0f32; 256];
            (t.lut_ip_256)(&q, &w, &mut got);
            assert_eq!(got, want, "{} width {width}", t.isa);
        }
    }
}

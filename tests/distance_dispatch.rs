//! The public `m3::distance` API (dispatched to the detected SIMD table) against the reference.

use m3::distance::{self, reference as r};

fn vecs(n: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let a = (0..n)
        .map(|k| ((k * 37 % 101) as f32 - 50.0) * 0.25)
        .collect();
    let b = (0..n)
        .map(|k| ((k * 53 % 97) as f32 - 48.0) * 0.5)
        .collect();
    let w = (0..n).map(|k| (k % 4) as f32 * 0.5).collect();
    (a, b, w)
}

fn close(got: f32, want: f32) -> bool {
    (got - want).abs() <= 1e-4 * want.abs().max(1.0)
}

#[test]
fn distance_public_api_matches_reference() {
    for n in [0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 64, 65, 128, 960] {
        let (a, b, w) = vecs(n);
        assert!(
            close(distance::l2_sq(&a, &b), r::l2_sq_f32(&a, &b)),
            "n={n}"
        );
        assert!(close(distance::dot(&a, &b), r::dot_f32(&a, &b)), "n={n}");
        let want = r::weighted_l2_sq_f32(&a, &b, &w);
        assert!(close(distance::weighted_l2_sq(&a, &b, &w), want), "n={n}");
        let x: Vec<u8> = (0..n).map(|k| (k * 91 % 256) as u8).collect();
        let y: Vec<u8> = (0..n).map(|k| (k * 13 % 256) as u8).collect();
        assert_eq!(distance::l2_sq_u8(&x, &y), r::l2_sq_u8(&x, &y), "n={n}");
        assert_eq!(distance::dot_u8(&x, &y), r::dot_u8(&x, &y), "n={n}");
        let p: Vec<i8> = x.iter().map(|&v| v as i8).collect();
        let q: Vec<i8> = y.iter().map(|&v| v as i8).collect();
        assert_eq!(distance::l2_sq_i8(&p, &q), r::l2_sq_i8(&p, &q), "n={n}");
        assert_eq!(distance::dot_i8(&p, &q), r::dot_i8(&p, &q), "n={n}");
    }
}

#[test]
fn distance_cosine_basics() {
    let (a, b, _) = vecs(200);
    let want = r::dot_f32(&a, &b) / (r::dot_f32(&a, &a).sqrt() * r::dot_f32(&b, &b).sqrt());
    assert!((distance::cosine(&a, &b) - want).abs() <= 1e-5);
    assert!((distance::cosine(&a, &a) - 1.0).abs() <= 1e-5);
    assert_eq!(distance::cosine(&a, &vec![0.0; 200]), 0.0);
}

#[test]
#[should_panic(expected = "length mismatch")]
fn distance_l2_sq_panics_on_length_mismatch() {
    distance::l2_sq(&[1.0, 2.0], &[1.0]);
}

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

fn pool() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap()
}

fn gaussian(n: usize, dim: usize, seed: u64) -> Matrix<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let data = (0..n * dim)
        .map(|i| rng.random_range(-1.0f32..1.0) * (1.0 + (i % dim) as f32 * 0.1))
        .collect();
    Matrix::from_vec(data, dim).unwrap()
}

fn mean_error(pq: &ProductQuantizer, data: MatrixView<'_, f32>) -> f64 {
    let codes = pq.encode_all(data);
    let mut x = vec![0.0; data.dim()];
    let mut sum = 0.0f64;
    for i in 0..data.rows() {
        pq.decode(codes.row(i), &mut x);
        sum += crate::distance::l2_sq(data.row(i), &x) as f64;
    }
    sum / data.rows() as f64
}

#[test]
fn reconstruction_error_falls_as_m_grows() {
    let data = gaussian(3000, 32, 1);
    let test = gaussian(500, 32, 2);
    let pool = pool();
    let mut prev = f64::INFINITY;
    for m in [1, 2, 4, 8, 16] {
        let pq = PqParams::new(m).train(data.view(), &pool).unwrap();
        let err = mean_error(&pq, test.view());
        assert!(
            err < prev * 0.95,
            "M = {m}: error {err} did not fall below {prev}"
        );
        prev = err;
    }
}

#[test]
fn tables_equal_distances_to_the_reconstruction() {
    let data = gaussian(1000, 20, 3);
    let pq = PqParams::new(6).train(data.view(), &pool()).unwrap();
    assert_eq!(pq.bounds(), &[0, 4, 8, 11, 14, 17, 20]);
    let q = gaussian(1, 20, 4);
    let q = q.row(0);
    let w: Vec<f32> = (0..20).map(|i| 0.5 + i as f32 * 0.1).collect();
    let codes = pq.encode_all(data.view());
    let (mut ip, mut l2, mut wl2) = (Vec::new(), Vec::new(), Vec::new());
    pq.ip_table(q, &mut ip);
    pq.l2_table(q, &mut l2);
    pq.weighted_l2_table(q, &w, &mut wl2);
    let n = 50;
    let (mut s_ip, mut s_l2, mut s_w) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    let c = &codes.as_slice()[..n * 6];
    adc_scan(&ip, c, 6, &mut s_ip);
    adc_scan(&l2, c, 6, &mut s_l2);
    adc_scan(&wl2, c, 6, &mut s_w);
    let mut x = vec![0.0; 20];
    for i in 0..n {
        pq.decode(codes.row(i), &mut x);
        let close = |a: f32, b: f32| (a - b).abs() <= 1e-4 * (1.0 + b.abs());
        assert!(close(s_ip[i], crate::distance::reference::dot_f32(q, &x)));
        assert!(close(s_l2[i], crate::distance::reference::l2_sq_f32(q, &x)));
        assert!(close(
            s_w[i],
            crate::distance::reference::weighted_l2_sq_f32(q, &x, &w)
        ));
    }
}

#[test]
fn encode_picks_the_nearest_codeword() {
    let data = gaussian(800, 8, 5);
    let pq = PqParams::new(2).train(data.view(), &pool()).unwrap();
    let mut code = [0u8; 2];
    for i in 0..50 {
        let x = data.row(i);
        pq.encode(x, &mut code);
        for m in 0..2 {
            let sub = &x[pq.bounds()[m]..pq.bounds()[m + 1]];
            let book = pq.codebook(m);
            let chosen = crate::distance::l2_sq(sub, book.row(code[m] as usize));
            for w in book.iter_rows() {
                assert!(chosen <= crate::distance::l2_sq(sub, w) + 1e-6);
            }
        }
    }
}

#[test]
fn custom_bounds_and_bad_parameters() {
    let data = gaussian(300, 10, 6);
    let pool = pool();
    let mut p = PqParams::new(0);
    p.bounds = Some(vec![0, 3, 10]);
    let pq = p.train(data.view(), &pool).unwrap();
    assert_eq!(pq.subspaces(), 2);
    // fewer than 256 rows: still 256 codewords per subspace
    assert_eq!(pq.codebooks().len(), 256 * 10);
    p.bounds = Some(vec![0, 5, 5, 10]);
    assert!(matches!(
        p.train(data.view(), &pool),
        Err(PqError::BadBounds { .. })
    ));
    assert!(matches!(
        PqParams::new(11).train(data.view(), &pool),
        Err(PqError::BadSubspaces { .. })
    ));
    assert!(even_bounds(10, 0).is_err());
}

#[test]
fn training_is_deterministic_across_thread_counts() {
    let data = gaussian(2000, 16, 7);
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let a = PqParams::new(4).train(data.view(), &one).unwrap();
    let b = PqParams::new(4).train(data.view(), &pool()).unwrap();
    assert_eq!(a, b);
}

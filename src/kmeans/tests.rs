use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::*;

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

/// `blobs` well-separated Gaussian blobs of `per_blob` points each in `dim` dimensions,
/// interleaved (row i belongs to blob i % blobs). Returns the data and the blob of each row.
fn blobs(blobs: usize, per_blob: usize, dim: usize, seed: u64) -> (Matrix<f32>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let centres: Vec<Vec<f32>> = (0..blobs)
        .map(|_| {
            (0..dim)
                .map(|_| {
                    let z: f32 = StandardNormal.sample(&mut rng);
                    20.0 * z
                })
                .collect()
        })
        .collect();
    let mut data = Vec::new();
    let mut truth = Vec::new();
    for i in 0..blobs * per_blob {
        let b = i % blobs;
        for c in &centres[b] {
            let z: f32 = StandardNormal.sample(&mut rng);
            data.push(c + 0.5 * z);
        }
        truth.push(b);
    }
    (Matrix::from_vec(data, dim).unwrap(), truth)
}

fn gaussian(rows: usize, dim: usize, seed: u64) -> Matrix<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let data = (0..rows * dim)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    Matrix::from_vec(data, dim).unwrap()
}

#[test]
fn separated_blobs_are_recovered_exactly() {
    let pool = pool(2);
    for seed in 0..5 {
        let (data, truth) = blobs(6, 200, 16, 100 + seed);
        let km = KMeansParams {
            seed,
            ..KMeansParams::new(6)
        }
        .train(data.view(), &pool)
        .unwrap();
        let labels = km.assign(data.view(), &pool);
        // Every blob maps to a single label, and the map is a bijection onto the 6 labels.
        let mut label_of_blob = [u32::MAX; 6];
        for (&b, &l) in truth.iter().zip(&labels) {
            if label_of_blob[b] == u32::MAX {
                label_of_blob[b] = l;
            }
            assert_eq!(
                label_of_blob[b], l,
                "seed {seed}: blob {b} split over labels"
            );
        }
        let mut used = label_of_blob.to_vec();
        used.sort_unstable();
        used.dedup();
        assert_eq!(used.len(), 6, "seed {seed}: two blobs share a label");
        assert!(km.report.converged, "seed {seed}: did not converge");
    }
}

#[test]
fn inertia_never_increases() {
    let pool = pool(2);
    let data = gaussian(3000, 24, 7);
    let km = KMeansParams {
        iters: 30,
        seed: 3,
        ..KMeansParams::new(40)
    }
    .train(data.view(), &pool)
    .unwrap();
    assert_eq!(km.report.splits, 0);
    let inertia = &km.report.inertia;
    assert!(inertia.len() >= 5, "only {} iterations", inertia.len());
    for w in inertia.windows(2) {
        assert!(w[1] <= w[0] * (1.0 + 1e-6), "inertia rose: {inertia:?}");
    }
    // And the assignment really reduced it: the last is well below the first.
    assert!(
        inertia.last().unwrap() < &(inertia[0] * 0.99),
        "{inertia:?}"
    );
}

#[test]
fn same_seed_same_centroids_for_any_thread_count() {
    let data = gaussian(5000, 20, 11);
    let params = KMeansParams {
        seed: 42,
        sample: Some(4000),
        init_sample: Some(1000),
        block_rows: 256,
        ..KMeansParams::new(30)
    };
    let a = params.train(data.view(), &pool(1)).unwrap();
    let b = params.train(data.view(), &pool(2)).unwrap();
    let c = params.train(data.view(), &pool(3)).unwrap();
    let bits =
        |m: &KMeans| -> Vec<u32> { m.centroids.as_slice().iter().map(|v| v.to_bits()).collect() };
    assert_eq!(bits(&a), bits(&b));
    assert_eq!(bits(&a), bits(&c));
    assert_eq!(a.report, b.report);
    let other = KMeansParams { seed: 43, ..params }
        .train(data.view(), &pool(2))
        .unwrap();
    assert_ne!(bits(&a), bits(&other));
}

#[test]
fn errors_are_typed() {
    let pool = pool(1);
    let data = gaussian(10, 4, 1);
    assert_eq!(
        KMeansParams::new(0).train(data.view(), &pool).unwrap_err(),
        KMeansError::KZero
    );
    assert_eq!(
        KMeansParams::new(11).train(data.view(), &pool).unwrap_err(),
        KMeansError::KTooLarge { k: 11, rows: 10 }
    );
    let empty: [f32; 0] = [];
    assert_eq!(
        KMeansParams::new(1)
            .train(MatrixView::new(&empty, 4).unwrap(), &pool)
            .unwrap_err(),
        KMeansError::Empty
    );
    let mut bad = data.clone();
    bad.row_mut(3)[2] = f32::NAN;
    assert_eq!(
        KMeansParams::new(2).train(bad.view(), &pool).unwrap_err(),
        KMeansError::NonFinite { row: 3 }
    );
    // k = rows is allowed.
    assert_eq!(
        KMeansParams::new(10).train(data.view(), &pool).unwrap().k(),
        10
    );
}

#[test]
fn duplicate_points_trigger_deterministic_splits() {
    let pool = pool(2);
    let mut rows = vec![1.0f32; 4 * 50];
    rows.extend(std::iter::repeat_n(-1.0f32, 4 * 50));
    let data = Matrix::from_vec(rows, 4).unwrap();
    let km = KMeansParams::new(4).train(data.view(), &pool).unwrap();
    assert!(km.centroids.as_slice().iter().all(|v| v.is_finite()));
    let again = KMeansParams::new(4).train(data.view(), &pool).unwrap();
    assert_eq!(km, again);
    // Both points are centroids (up to the split perturbation).
    let labels = km.assign(data.view(), &pool);
    assert_ne!(labels[0], labels[50]);
}

#[test]
fn nearest_n_matches_brute_force() {
    let pool = pool(2);
    let data = gaussian(2000, 8, 5);
    let km = KMeansParams::new(25).train(data.view(), &pool).unwrap();
    let queries = gaussian(50, 8, 6);
    let labels = km.assign(queries.view(), &pool);
    for (i, q) in queries.view().iter_rows().enumerate() {
        let mut all: Vec<(f32, u32)> = (0..km.k())
            .map(|j| (distance::l2_sq(q, km.centroids.row(j)), j as u32))
            .collect();
        all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let want: Vec<u32> = all.iter().take(5).map(|p| p.1).collect();
        assert_eq!(km.nearest_n(q, 5), want);
        assert_eq!(km.nearest_n(q, 1)[0], labels[i]);
        assert_eq!(km.nearest_n(q, 100).len(), 25);
    }
}

#[test]
fn sampling_trains_on_a_subset() {
    let pool = pool(2);
    let (data, truth) = blobs(4, 500, 8, 9);
    let km = KMeansParams {
        sample: Some(200),
        ..KMeansParams::new(4)
    }
    .train(data.view(), &pool)
    .unwrap();
    let labels = km.assign(data.view(), &pool);
    for b in 0..4 {
        let first = labels[truth.iter().position(|&t| t == b).unwrap()];
        assert!(
            truth
                .iter()
                .zip(&labels)
                .all(|(&t, &l)| t != b || l == first)
        );
    }
}

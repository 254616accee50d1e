//! k-means assignment: labelling rows with their nearest centroid, the inner loop of training
//! (`assign_blocks`: one sgemm per block of rows) and of balanced assignment / routing
//! (`nearest_centroids`: the t nearest), for M³'s shapes (K = N / 256 clusters).
//!
//! Run: `cargo bench --bench kmeans`. One worker thread; throughput in rows per second.
//! Numbers: `docs/BENCHMARKS.md`, "Micro-benchmarks".

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use m3::data::Matrix;
use m3::kmeans::{assign_blocks, nearest_centroids};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const ROWS: usize = 8192;

fn random_matrix(rows: usize, dim: usize, seed: u64) -> Matrix<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let v = (0..rows * dim)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    Matrix::from_vec(v, dim).unwrap()
}

fn assignment(c: &mut Criterion) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let mut g = c.benchmark_group("kmeans_assign");
    g.throughput(Throughput::Elements(ROWS as u64));
    // K = 1,524 / 3,907 are M³'s cluster counts on GloVe 390K and xmodal 1M.
    for (dim, k) in [(50, 256), (50, 1524), (128, 1024), (200, 3907)] {
        let data = random_matrix(ROWS, dim, 1);
        let cents = random_matrix(k, dim, 2);
        let id = format!("dim={dim},K={k}");
        g.bench_function(BenchmarkId::new("assign_blocks", &id), |b| {
            b.iter(|| {
                let (labels, _) =
                    assign_blocks(black_box(data.view()), None, cents.view(), 1024, &pool);
                black_box(labels[0])
            })
        });
        g.bench_function(BenchmarkId::new("nearest_centroids_t4", &id), |b| {
            b.iter(|| {
                let (ids, _) =
                    pool.install(|| nearest_centroids(black_box(data.view()), cents.view(), 4));
                black_box(ids[0])
            })
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(10)
}

criterion_group! { name = benches; config = config(); targets = assignment }
criterion_main!(benches);

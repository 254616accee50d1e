//! f32 distance kernels: the public `m3::distance` API (dispatched table) for typical dims, and
//! the scalar / AVX2 / AVX-512 tables side by side for `l2_sq`, `dot` and `weighted_l2_sq` (the numbers behind
//! `docs/decisions/0001-simd-kernels.md`).
//!
//! Run: `cargo bench --bench distance_f32` (or `-- table` for the table comparison only).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use m3::distance;
use m3::simd::available_tables;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const DIMS: [usize; 6] = [50, 128, 200, 384, 512, 960];

fn vectors(d: usize, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut v = |lo: f32, hi: f32| (0..d).map(|_| rng.random_range(lo..hi)).collect::<Vec<_>>();
    (v(-1.0, 1.0), v(-1.0, 1.0), v(0.0, 2.0))
}

fn api(c: &mut Criterion) {
    type F2 = fn(&[f32], &[f32]) -> f32;
    let two: [(&str, F2); 3] = [
        ("l2_sq_f32", distance::l2_sq),
        ("dot_f32", distance::dot),
        ("cosine_f32", distance::cosine),
    ];
    for (name, f) in two {
        let mut g = c.benchmark_group(name);
        for d in DIMS {
            let (a, b, _) = vectors(d, d as u64);
            g.bench_function(format!("dim={d}"), |bench| {
                bench.iter(|| f(black_box(&a), black_box(&b)))
            });
        }
        g.finish();
    }
    let mut g = c.benchmark_group("weighted_l2_sq_f32");
    for d in DIMS {
        let (a, b, w) = vectors(d, d as u64);
        g.bench_function(format!("dim={d}"), |bench| {
            bench.iter(|| distance::weighted_l2_sq(black_box(&a), black_box(&b), black_box(&w)))
        });
    }
    g.finish();
}

/// Each table this CPU can run, called directly (no dispatch), for l2_sq, dot and weighted_l2_sq.
fn tables(c: &mut Criterion) {
    for kernel in ["l2_sq_f32", "dot_f32"] {
        let mut g = c.benchmark_group(format!("{kernel}_table"));
        for d in DIMS {
            let (a, b, _) = vectors(d, d as u64);
            for t in available_tables() {
                let f = if kernel == "l2_sq_f32" {
                    t.l2_sq_f32
                } else {
                    t.dot_f32
                };
                g.bench_function(BenchmarkId::new(t.isa, format!("dim={d}")), |bench| {
                    bench.iter(|| f(black_box(&a), black_box(&b)))
                });
            }
        }
        g.finish();
    }
    let mut g = c.benchmark_group("weighted_l2_sq_f32_table");
    for d in DIMS {
        let (a, b, w) = vectors(d, d as u64);
        for t in available_tables() {
            let f = t.weighted_l2_sq_f32;
            g.bench_function(BenchmarkId::new(t.isa, format!("dim={d}")), |bench| {
                bench.iter(|| f(black_box(&a), black_box(&b), black_box(&w)))
            });
        }
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(20)
}

criterion_group! { name = benches; config = config(); targets = api, tables }
criterion_main!(benches);

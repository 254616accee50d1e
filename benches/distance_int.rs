//! u8 / i8 distance kernels through the public `m3::distance` API (dispatched table), plus the
//! tables side by side.
//!
//! Run: `cargo bench --bench distance_int`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use m3::distance;
use m3::simd::available_tables;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const DIMS: [usize; 6] = [50, 128, 200, 384, 512, 960];

fn bytes(d: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let a = (0..d).map(|_| rng.random()).collect();
    let b = (0..d).map(|_| rng.random()).collect();
    (a, b)
}

fn signed(v: &[u8]) -> Vec<i8> {
    v.iter().map(|&x| x as i8).collect()
}

fn api(c: &mut Criterion) {
    type U8Kernel = fn(&[u8], &[u8]) -> u32;
    let u8s: [(&str, U8Kernel); 2] = [
        ("l2_sq_u8", distance::l2_sq_u8),
        ("dot_u8", distance::dot_u8),
    ];
    for (name, f) in u8s {
        let mut g = c.benchmark_group(name);
        for d in DIMS {
            let (a, b) = bytes(d, d as u64);
            g.bench_function(format!("dim={d}"), |bench| {
                bench.iter(|| f(black_box(&a), black_box(&b)))
            });
        }
        g.finish();
    }
    let mut g = c.benchmark_group("l2_sq_i8");
    for d in DIMS {
        let (a, b) = bytes(d, d as u64);
        let (a, b) = (signed(&a), signed(&b));
        g.bench_function(format!("dim={d}"), |bench| {
            bench.iter(|| distance::l2_sq_i8(black_box(&a), black_box(&b)))
        });
    }
    g.finish();
    let mut g = c.benchmark_group("dot_i8");
    for d in DIMS {
        let (a, b) = bytes(d, d as u64);
        let (a, b) = (signed(&a), signed(&b));
        g.bench_function(format!("dim={d}"), |bench| {
            bench.iter(|| distance::dot_i8(black_box(&a), black_box(&b)))
        });
    }
    g.finish();
}

/// Each table called directly for l2_sq_u8 (the AVX-512 table reuses the AVX2 integer kernels).
fn tables(c: &mut Criterion) {
    let mut g = c.benchmark_group("l2_sq_u8_table");
    for d in DIMS {
        let (a, b) = bytes(d, d as u64);
        for t in available_tables() {
            let f = t.l2_sq_u8;
            g.bench_function(BenchmarkId::new(t.isa, format!("dim={d}")), |bench| {
                bench.iter(|| f(black_box(&a), black_box(&b)))
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

//! Product quantization at query time: building a query's lookup table (`ip_table`,
//! `l2_table`: M × 256 entries) and the asymmetric-distance scan of PQ codes against it
//! (`adc_scan`), at the shapes M³ uses (M = ⌈dim/2⌉ capped at 64 bytes per code).
//!
//! Run: `cargo bench --bench pq`. Table builds are reported per table; scans in codes per
//! second (elements). Numbers: `docs/BENCHMARKS.md`, "Micro-benchmarks".

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use m3::data::Matrix;
use m3::pq::{PqParams, ProductQuantizer, adc_scan};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// (dim, PQ bytes) as M³ picks them for GloVe-50d, SIFT-like 128-d and the 200-d xmodal sets.
const SHAPES: [(usize, usize); 3] = [(50, 25), (128, 64), (200, 64)];

fn random_rows(rows: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..rows * dim)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect()
}

/// A quantizer trained on random rows (few iterations: the codebooks' quality does not change
/// the cost of a table or a scan).
fn quantizer(dim: usize, m: usize) -> ProductQuantizer {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let data = Matrix::from_vec(random_rows(2048, dim, dim as u64), dim).unwrap();
    let mut p = PqParams::new(m);
    p.iters = 4;
    p.train(data.view(), &pool).unwrap()
}

fn tables(c: &mut Criterion) {
    let mut g = c.benchmark_group("pq_table");
    for (dim, m) in SHAPES {
        let pq = quantizer(dim, m);
        let q = random_rows(1, dim, 99);
        let mut table = Vec::new();
        g.bench_function(BenchmarkId::new("ip", format!("dim={dim},M={m}")), |b| {
            b.iter(|| {
                pq.ip_table(black_box(&q), &mut table);
                black_box(table[0])
            })
        });
        g.bench_function(BenchmarkId::new("l2", format!("dim={dim},M={m}")), |b| {
            b.iter(|| {
                pq.l2_table(black_box(&q), &mut table);
                black_box(table[0])
            })
        });
    }
    g.finish();
}

fn scans(c: &mut Criterion) {
    let mut g = c.benchmark_group("pq_adc_scan");
    // 256 codes: one mean-sized cluster; 8,192: the ~32 clusters a query probes.
    for m in [25, 64] {
        let mut rng = ChaCha8Rng::seed_from_u64(m as u64);
        let table: Vec<f32> = (0..m * 256)
            .map(|_| rng.random_range(0.0f32..1.0))
            .collect();
        for n in [256, 8192] {
            let codes: Vec<u8> = (0..n * m).map(|_| rng.random()).collect();
            let mut out = vec![0f32; n];
            g.throughput(Throughput::Elements(n as u64));
            g.bench_function(
                BenchmarkId::new(format!("M={m}"), format!("codes={n}")),
                |b| {
                    b.iter(|| {
                        adc_scan(black_box(&table), black_box(&codes), m, &mut out);
                        black_box(out[n - 1])
                    })
                },
            );
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

criterion_group! { name = benches; config = config(); targets = tables, scans }
criterion_main!(benches);

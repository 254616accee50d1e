//! Neighbour-list pruning (`robust_prune`): one point's L candidates cut to at most R
//! neighbours with the α rule, distances between candidates computed on demand with the
//! dispatched L2 kernel, as the graph stage does. Defaults of `m3 build`: L = 96, R = 32.
//!
//! Run: `cargo bench --bench prune`. Throughput in prunes (points) per second.
//! Numbers: `docs/BENCHMARKS.md`, "Micro-benchmarks".

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use m3::distance;
use m3::exact::Neighbor;
use m3::graph::{PruneParams, robust_prune};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn prune(c: &mut Criterion) {
    let mut g = c.benchmark_group("robust_prune");
    g.throughput(Throughput::Elements(1));
    for dim in [50, 128, 200] {
        for (l, r) in [(96, 32), (200, 64)] {
            let mut rng = ChaCha8Rng::seed_from_u64((dim * l) as u64);
            // Row 0 is p, rows 1..=l its candidates.
            let rows: Vec<Vec<f32>> = (0..=l)
                .map(|_| (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect())
                .collect();
            let cands: Vec<Neighbor> = (1..=l)
                .map(|i| Neighbor {
                    id: i as u32,
                    dist: distance::l2_sq(&rows[0], &rows[i]),
                })
                .collect();
            for alpha in [1.0f32, 1.2] {
                let params = PruneParams {
                    alpha,
                    max_degree: r,
                    fill_to_degree: false,
                };
                let id = format!("dim={dim},L={l},R={r},alpha={alpha}");
                g.bench_function(BenchmarkId::from_parameter(id), |b| {
                    b.iter(|| {
                        let mut c = cands.clone();
                        let kept = robust_prune(
                            &mut c,
                            &params,
                            |id| id == 0,
                            |a, b| distance::l2_sq(&rows[a as usize], &rows[b as usize]),
                        );
                        black_box(kept.len())
                    })
                });
            }
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

criterion_group! { name = benches; config = config(); targets = prune }
criterion_main!(benches);

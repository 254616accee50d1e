//! Measures two-level nearest-centroid search (`m3::kmeans::TwoLevel`) against the exact scan:
//! share of rows whose nearest centroid is found, and time, for several K and probes.
//!
//! Usage: `two_level_assign BASE.fbin K1,K2,.. PROBE1,PROBE2,.. [TEST_ROWS] [THREADS]`
//!
//! For each K, anchors come from balanced k-means (2 exact iterations, as the build's start)
//! on 4·K rows from the head of the file; the test rows are the last TEST_ROWS of the file
//! (default 20,000). Prints one JSON object per (K, probe), plus the exact scan's time.

use std::path::Path;
use std::time::Instant;

use m3::data::{Matrix, VectorFile};
use m3::kmeans::{BalancedKMeansParams, NearestParams, TwoLevel, nearest_centroids};

fn list(s: &str) -> Vec<usize> {
    s.split(',').map(|v| v.parse().expect("a number")).collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: two_level_assign BASE.fbin K1,K2 PROBE1,PROBE2 [TEST_ROWS] [THREADS]");
        std::process::exit(2);
    }
    let file = VectorFile::open(Path::new(&args[1])).expect("base file");
    let ks = list(&args[2]);
    let probes = list(&args[3]);
    let test_rows: usize = args.get(4).map_or(20_000, |s| s.parse().expect("rows"));
    let threads: usize = args.get(5).map_or(2, |s| s.parse().expect("threads"));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("pool");
    let n = file.rows();
    let dim = file.dim();
    let mut v = Vec::new();
    file.read_rows_f32(n - test_rows as u64, test_rows, &mut v)
        .expect("test rows");
    let test = Matrix::from_vec(v, dim).expect("matrix");
    let t = 8;
    for &k in &ks {
        let mut v = Vec::new();
        let train_rows = (4 * k).min((n as usize).saturating_sub(test_rows));
        file.read_rows_f32(0, train_rows, &mut v)
            .expect("train rows");
        let train = Matrix::from_vec(v, dim).expect("matrix");
        let mut km = BalancedKMeansParams::new(k);
        km.kmeans.iters = 2;
        km.nearest = NearestParams::exact();
        let centroids = km.train(train.view(), &pool).expect("k-means").centroids;
        let start = Instant::now();
        let (exact, _) = pool.install(|| nearest_centroids(test.view(), centroids.view(), t));
        let exact_s = start.elapsed().as_secs_f64();
        println!(
            "{{\"k\":{k},\"probe\":null,\"groups\":null,\"seconds\":{exact_s:.4},\"top1\":1.0,\"top8_recall\":1.0,\"rows\":{test_rows},\"threads\":{threads}}}"
        );
        for &probe in &probes {
            let params = NearestParams {
                probe,
                ..NearestParams::default()
            };
            let start = Instant::now();
            let tl = TwoLevel::build(centroids.view(), &params, &pool);
            let build_s = start.elapsed().as_secs_f64();
            let start = Instant::now();
            let (ids, _) = pool.install(|| tl.nearest(test.view(), t));
            let secs = start.elapsed().as_secs_f64();
            let top1 = (0..test_rows)
                .filter(|&i| ids[i * t] == exact[i * t])
                .count() as f64
                / test_rows as f64;
            let hits: usize = (0..test_rows)
                .map(|i| {
                    let truth = &exact[i * t..(i + 1) * t];
                    ids[i * t..(i + 1) * t]
                        .iter()
                        .filter(|c| truth.contains(c))
                        .count()
                })
                .sum();
            println!(
                "{{\"k\":{k},\"probe\":{probe},\"groups\":{},\"build_seconds\":{build_s:.4},\"seconds\":{secs:.4},\"top1\":{top1:.5},\"top8_recall\":{:.5},\"rows\":{test_rows},\"threads\":{threads}}}",
                tl.groups(),
                hits as f64 / (test_rows * t) as f64
            );
        }
    }
}

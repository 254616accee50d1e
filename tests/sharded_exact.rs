//! Exact and range search on a sharded index fan out by the clusters' metric bounds
//! (docs/DISTRIBUTED.md, "Search"): on a clustered generated set, for L2, inner product and
//! cosine, at S = 3 and 8, the answers equal brute force over the whole base, while fewer
//! than S shards are asked on average; and a query's shards run concurrently on a fan-out
//! pool give the same answers as one after the other.

use std::path::Path;

use m3::build::{BuildParams, Silent, build_index, build_shards};
use m3::data::{DType, Matrix, VectorFile};
use m3::distance::Metric;
use m3::io::{IoBackend, ReaderOptions};
use m3::search::{SearchParams, ShardedIndex};
use m3::synth::gauss::{GaussModel, GaussParams};
use m3::synth::{SplitSizes, WriteSpec, write_dataset};

const K: usize = 10;
const QUERIES: usize = 40;

fn pool() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap()
}

/// A mixture of 24 tight Gaussian blobs (4,000 × 16) and queries from the same mixture.
fn clustered(dir: &Path) -> (std::path::PathBuf, Matrix<f32>, Matrix<f32>) {
    let model = GaussModel::new(
        GaussParams {
            dim: 16,
            clusters: 24,
            seed: 5,
            centre_spread: 1.0,
            within_spread: 0.12,
            anisotropy: 0.2,
            weight_skew: 0.2,
        },
        SplitSizes {
            base: 4000,
            queries: QUERIES as u64,
            training: 0,
        },
    )
    .unwrap();
    let spec = WriteSpec {
        out_dir: dir.to_path_buf(),
        dtype: DType::F32,
        batch_chunks: 4,
    };
    let files = write_dataset(&model, &spec, &pool()).unwrap();
    let read = |p: &Path| VectorFile::open(p).unwrap().read_all_f32().unwrap();
    let (base, queries) = (read(&files.base), read(&files.queries));
    (files.base, base, queries)
}

/// Brute-force distances in internal units (smaller is better) of every base row to `q`.
fn internal(metric: Metric, base: &Matrix<f32>, q: &[f32]) -> Vec<f32> {
    let unit = |v: &[f32]| -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    };
    let q = if metric == Metric::Cosine {
        unit(q)
    } else {
        q.to_vec()
    };
    (0..base.rows())
        .map(|r| {
            let x = base.view().row(r).to_vec();
            match metric {
                Metric::L2 => x.iter().zip(&q).map(|(a, b)| (a - b) * (a - b)).sum(),
                Metric::InnerProduct => -x.iter().zip(&q).map(|(a, b)| a * b).sum::<f32>(),
                _ => -unit(&x).iter().zip(&q).map(|(a, b)| a * b).sum::<f32>(),
            }
        })
        .collect()
}

#[test]
fn exact_and_range_ask_only_the_shards_their_bounds_allow_and_equal_brute_force() {
    let tmp = tempfile::tempdir().unwrap();
    let (base_path, base, queries) = clustered(tmp.path());
    for metric in [Metric::L2, Metric::InnerProduct, Metric::Cosine] {
        let index = tmp.path().join(format!("index-{metric}"));
        let mut p = BuildParams::new(base_path.clone(), metric, index.clone());
        p.clusters.target_size = 64;
        p.pq.subspaces = Some(4);
        p.pq.iters = 6;
        p.graph.max_degree = 8;
        p.graph.candidates = 16;
        p.seed = 3;
        build_index(&p, &pool(), &Silent).unwrap();
        let truth = m3::exact::exact_knn(base.view(), queries.view(), K, metric).unwrap();
        for shards in [3usize, 8] {
            let out = tmp.path().join(format!("sharded-{metric}-{shards}"));
            build_shards(&index, shards, 3, &out).unwrap();
            let sharded =
                ShardedIndex::open(&out, IoBackend::Pread, &ReaderOptions::default()).unwrap();
            let (mut knn_asked, mut range_asked) = (0u64, 0u64);
            for (qi, want) in truth.iter().enumerate() {
                let q = queries.view().row(qi);
                let (got, st) = sharded.exact(q, K).unwrap();
                let got: Vec<u32> = got.iter().map(|n| n.id).collect();
                let want: Vec<u32> = want.iter().map(|n| n.id).collect();
                assert_eq!(
                    got, want,
                    "{metric}, S = {shards}, query {qi}: exact ≠ brute force"
                );
                knn_asked += st.shards_touched;
                // Range at the 30th nearest distance: a ball that holds a few dozen vectors.
                let mut d = internal(metric, &base, q);
                let mut sorted = d.clone();
                sorted.sort_by(f32::total_cmp);
                let r = sorted[30];
                let (got, st) = sharded.range(q, metric.to_natural(r)).unwrap();
                let mut got: Vec<u32> = got.iter().map(|n| n.id).collect();
                got.sort_unstable();
                // Brute force with a relative margin: ids within 1e-5 of the border either way.
                let tol = 1e-5 * r.abs().max(1.0);
                let sure: Vec<u32> = (0..d.len() as u32)
                    .filter(|&i| d[i as usize] <= r - tol)
                    .collect();
                d.iter_mut().for_each(|x| *x -= r + tol);
                let maybe: Vec<u32> = (0..d.len() as u32)
                    .filter(|&i| d[i as usize] <= 0.0)
                    .collect();
                assert!(
                    sure.iter().all(|i| got.binary_search(i).is_ok())
                        && got.iter().all(|i| maybe.contains(i)),
                    "{metric}, S = {shards}, query {qi}: range ≠ brute force"
                );
                range_asked += st.shards_touched;
            }
            let (knn, range) = (
                knn_asked as f64 / QUERIES as f64,
                range_asked as f64 / QUERIES as f64,
            );
            eprintln!(
                "{metric} S = {shards}: shards asked per query: exact {knn:.2}, range {range:.2}"
            );
            assert!(
                knn < shards as f64,
                "{metric}, S = {shards}: exact asked {knn} shards per query"
            );
            assert!(
                range < shards as f64,
                "{metric}, S = {shards}: range asked {range} shards per query"
            );
        }
    }
}

#[test]
fn a_query_s_shards_run_concurrently_give_the_answers_of_one_after_the_other() {
    let tmp = tempfile::tempdir().unwrap();
    let (base_path, _, queries) = clustered(tmp.path());
    let index = tmp.path().join("index");
    let mut p = BuildParams::new(base_path, Metric::L2, index.clone());
    p.clusters.target_size = 64;
    p.pq.subspaces = Some(4);
    p.seed = 3;
    build_index(&p, &pool(), &Silent).unwrap();
    let out = tmp.path().join("sharded");
    build_shards(&index, 4, 3, &out).unwrap();
    let sequential = ShardedIndex::open(&out, IoBackend::Pread, &ReaderOptions::default()).unwrap();
    let mut concurrent =
        ShardedIndex::open(&out, IoBackend::Pread, &ReaderOptions::default()).unwrap();
    concurrent.set_fanout_threads(2).unwrap();
    let mut params = SearchParams::new(K);
    params.nprobe = 8;
    let (mut a, mut b) = (sequential.searchers(), concurrent.searchers());
    let mut several = 0;
    for qi in 0..QUERIES {
        let q = queries.view().row(qi);
        let (x, sx) = sequential.search(&mut a, qi, q, &params).unwrap();
        let (y, sy) = concurrent.search(&mut b, qi, q, &params).unwrap();
        assert_eq!(x, y, "query {qi}: approximate answers differ");
        assert_eq!(sx.shards_touched, sy.shards_touched);
        assert_eq!(sx.bytes_moved, sy.bytes_moved);
        several += usize::from(sx.shards_touched > 1);
        assert_eq!(
            sequential.exact(q, K).unwrap().0,
            concurrent.exact(q, K).unwrap().0
        );
        assert_eq!(
            sequential.range(q, 0.5).unwrap().0,
            concurrent.range(q, 0.5).unwrap().0
        );
    }
    assert!(
        several > 0,
        "no query asked more than one shard: nothing ran concurrently"
    );
}

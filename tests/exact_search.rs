//! Exact k-NN and range search with metric pruning (DESIGN §4.5) against brute force: every
//! metric, f32 and u8 data, with and without spilled copies, with and without `keys.m3`, the
//! real data sets, radius edge cases, errors, and the `m3 search --exact` / `m3 range` CLI.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use m3::build::{BuildParams, Silent, build_index};
use m3::data::format::write_matrix;
use m3::data::{Matrix, RangeResults, VectorFile};
use m3::distance::{self, Metric};
use m3::exact::{Neighbor, exact_knn};
use m3::format::files::{KEYS_FILE, MANIFEST_FILE};
use m3::format::{FormatError, Manifest};
use m3::io::{IoBackend, ReaderOptions};
use m3::search::{ExactParams, ExactQuery, ExactSearcher, Index, SearchError, exact_batch};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const K: usize = 10;

fn pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap()
    })
}

/// `n` vectors around `centers` Gaussian centres; with `norm_spread`, every vector is scaled
/// by a factor in [1/norm_spread, norm_spread] (base norms that differ, as under MIPS).
fn mixture(n: usize, dim: usize, centers: usize, norm_spread: f32, seed: u64) -> Matrix<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let c: Vec<f32> = (0..centers * dim)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let mut v = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let j = rng.random_range(0..centers);
        let scale = if norm_spread > 1.0 {
            rng.random_range(1.0 / norm_spread..norm_spread)
        } else {
            1.0
        };
        for d in 0..dim {
            v.push(scale * (c[j * dim + d] + 0.35 * rng.random_range(-1.0f32..1.0)));
        }
    }
    Matrix::from_vec(v, dim).unwrap()
}

fn small_params(base: &Path, metric: Metric, out: &Path, dim: usize, spill: usize) -> BuildParams {
    let mut p = BuildParams::new(base.to_path_buf(), metric, out.to_path_buf());
    p.clusters.target_size = 64;
    p.pq.subspaces = Some(dim / 4);
    p.pq.iters = 4;
    p.pq.train_rows = 2048;
    p.graph.max_degree = 8;
    p.graph.candidates = 16;
    p.spill.max_copies = spill;
    p.seed = 5;
    p
}

fn build(base: &Path, metric: Metric, out: &Path, dim: usize, spill: usize) {
    let p = small_params(base, metric, out, dim, spill);
    build_index(&p, pool(), &Silent).unwrap();
}

fn open(dir: &Path) -> Index {
    Index::open(dir, IoBackend::Pread, &ReaderOptions::default()).unwrap()
}

/// Internal distance (smaller is better) of `x` to `q` under `metric`, as brute force sees it.
fn dist(metric: Metric, q: &[f32], x: &[f32]) -> f32 {
    match metric {
        Metric::L2 => distance::l2_sq(q, x),
        Metric::InnerProduct => -distance::dot(q, x),
        Metric::Cosine => -distance::cosine(q, x),
    }
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-4 * (1.0 + a.abs().max(b.abs()))
}

/// Checks exact k-NN results against brute force: same distances rank by rank, and every
/// returned id really has the distance reported (so ids agree up to ties).
fn assert_knn_exact(
    base: &Matrix<f32>,
    queries: &Matrix<f32>,
    got: &[Vec<Neighbor>],
    metric: Metric,
) {
    let truth = exact_knn(base.view(), queries.view(), K, metric).unwrap();
    for (qi, (g, t)) in got.iter().zip(&truth).enumerate() {
        assert_eq!(g.len(), K, "query {qi}: {} results", g.len());
        let mut ids: Vec<u32> = g.iter().map(|n| n.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), K, "query {qi}: duplicate ids {g:?}");
        for (rank, (a, b)) in g.iter().zip(t).enumerate() {
            assert!(
                close(a.dist, b.dist),
                "query {qi} rank {rank}: exact search {a:?}, brute force {b:?}"
            );
            let real = dist(metric, queries.row(qi), base.row(a.id as usize));
            assert!(
                close(a.dist, real),
                "query {qi}: id {} reported at {} but is at {real}",
                a.id,
                a.dist
            );
        }
    }
}

/// Checks range results against brute force: every vector inside the radius (by a margin
/// beyond rounding) is found, nothing outside is, and distances are right.
fn assert_range_exact(
    base: &Matrix<f32>,
    q: &[f32],
    radius_internal: f32,
    got: &[Neighbor],
    metric: Metric,
) {
    let mut seen = std::collections::HashSet::new();
    for n in got {
        assert!(seen.insert(n.id), "id {} returned twice", n.id);
        let real = dist(metric, q, base.row(n.id as usize));
        assert!(close(n.dist, real), "id {}: {} vs {real}", n.id, n.dist);
        assert!(
            n.dist <= radius_internal,
            "id {} at {} outside {radius_internal}",
            n.id,
            n.dist
        );
    }
    for (i, x) in base.view().iter_rows().enumerate() {
        let d = dist(metric, q, x);
        if d < radius_internal - 1e-4 * (1.0 + radius_internal.abs()) {
            assert!(
                seen.contains(&(i as u32)),
                "missed id {i} at {d} (radius {radius_internal})"
            );
        }
    }
}

struct Case {
    _tmp: tempfile::TempDir,
    index: PathBuf,
    base: Matrix<f32>,
    queries: Matrix<f32>,
}

fn generated(metric: Metric, spill: usize, norm_spread: f32, seed: u64) -> Case {
    let tmp = tempfile::tempdir().unwrap();
    let dim = 24;
    let base = mixture(3000, dim, 40, norm_spread, seed);
    // Queries: a shifted mixture, so some fall between clusters.
    let queries = mixture(40, dim, 60, 1.0, seed + 1);
    let base_path = tmp.path().join("base.fbin");
    write_matrix(&base_path, base.view()).unwrap();
    let index = tmp.path().join("idx");
    build(&base_path, metric, &index, dim, spill);
    Case {
        _tmp: tmp,
        index,
        base,
        queries,
    }
}

fn knn_all(idx: &Index, queries: &Matrix<f32>, k: usize) -> Vec<Vec<Neighbor>> {
    let mut s = ExactSearcher::new(idx);
    queries
        .view()
        .iter_rows()
        .map(|q| s.knn(q, k).unwrap().0)
        .collect()
}

#[test]
fn knn_equals_brute_force_for_every_metric_with_and_without_spill() {
    for (metric, spread) in [
        (Metric::L2, 1.0),
        (Metric::InnerProduct, 3.0),
        (Metric::Cosine, 2.0),
    ] {
        for spill in [0, 2] {
            let c = generated(metric, spill, spread, 7 + spill as u64);
            let idx = open(&c.index);
            let got = knn_all(&idx, &c.queries, K);
            assert_knn_exact(&c.base, &c.queries, &got, metric);
        }
    }
}

#[test]
fn exact_search_reads_a_fraction_of_a_full_scan() {
    let c = generated(Metric::L2, 0, 1.0, 3);
    let idx = open(&c.index);
    let mut s = ExactSearcher::new(&idx);
    let mut computed = 0;
    // In-distribution queries: base rows, slightly moved.
    let queries: Vec<Vec<f32>> = (0..40)
        .map(|i| c.base.row(i * 70).iter().map(|v| v + 0.01).collect())
        .collect();
    for q in &queries {
        let (_, st) = s.knn(q, K).unwrap();
        assert!(st.io_rounds >= 1 && st.dist_comps >= K as u64);
        assert!(st.sectors <= idx.data_sectors());
        computed += st.dist_comps;
    }
    let per_query = computed as f64 / queries.len() as f64;
    // Clustered data: the bounds leave a small share of the 3,000 vectors to read.
    assert!(per_query < 300.0, "{per_query} exact distances per query");
}

#[test]
fn range_equals_brute_force_including_zero_and_huge_radii() {
    for (metric, spread) in [
        (Metric::L2, 1.0),
        (Metric::InnerProduct, 3.0),
        (Metric::Cosine, 1.0),
    ] {
        let c = generated(metric, 1, spread, 21);
        let idx = open(&c.index);
        let mut s = ExactSearcher::new(&idx);
        for (qi, q) in c.queries.view().iter_rows().enumerate().take(12) {
            // A radius around the 25th nearest distance of this query.
            let mut all: Vec<f32> = c
                .base
                .view()
                .iter_rows()
                .map(|x| dist(metric, q, x))
                .collect();
            all.sort_by(f32::total_cmp);
            let r_internal = 0.5 * (all[24] + all[25]);
            let (got, _) = s.range(q, metric.to_natural(r_internal)).unwrap();
            assert_range_exact(&c.base, q, r_internal, &got, metric);
            assert!(
                (24..=26).contains(&got.len()),
                "query {qi}: {} results",
                got.len()
            );
        }
        // A huge radius returns every vector once (spilled copies deduplicated).
        let q = c.queries.row(0);
        let huge = if metric == Metric::L2 { 1e30 } else { -1e30 };
        let (got, _) = s.range(q, huge).unwrap();
        assert_eq!(got.len(), c.base.rows());
        // Radius 0 under l2: exactly the copies of the query itself.
        if metric == Metric::L2 {
            let q = c.base.row(17).to_vec();
            let (got, _) = s.range(&q, 0.0).unwrap();
            assert!(got.iter().any(|n| n.id == 17), "{got:?}");
            assert!(got.iter().all(|n| n.dist == 0.0));
            // An empty ball: a radius below every distance.
            let far = vec![100.0f32; q.len()];
            assert!(s.range(&far, 1.0).unwrap().0.is_empty());
        }
    }
}

#[test]
fn u8_data_l2() {
    let tmp = tempfile::tempdir().unwrap();
    let f = mixture(2500, 32, 30, 1.0, 9);
    let bytes: Vec<u8> = f
        .as_slice()
        .iter()
        .map(|&v| ((v + 1.5) * 80.0).clamp(0.0, 255.0) as u8)
        .collect();
    let base_u8 = Matrix::from_vec(bytes, 32).unwrap();
    let base_path = tmp.path().join("base.u8bin");
    write_matrix(&base_path, base_u8.view()).unwrap();
    let base = VectorFile::open(&base_path)
        .unwrap()
        .read_all_f32()
        .unwrap();
    let queries =
        Matrix::from_vec((0..20 * 32).map(|i| ((i * 37) % 251) as f32).collect(), 32).unwrap();
    let index = tmp.path().join("idx");
    build(&base_path, Metric::L2, &index, 32, 1);
    let idx = open(&index);
    let got = knn_all(&idx, &queries, K);
    assert_knn_exact(&base, &queries, &got, Metric::L2);
}

/// Rewrites the manifest of `dir` without `keys.m3` (an index of format 1.0).
fn drop_keys(dir: &Path) {
    let path = dir.join(MANIFEST_FILE);
    let mut m = Manifest::read(&path).unwrap();
    m.files.retain(|f| f.name_str() != Some(KEYS_FILE));
    std::fs::remove_file(dir.join(KEYS_FILE)).unwrap();
    std::fs::remove_file(&path).unwrap();
    m.write(&path).unwrap();
}

#[test]
fn index_without_keys_is_still_exact_but_reads_more_candidates() {
    let c = generated(Metric::L2, 0, 1.0, 33);
    let with_keys = open(&c.index);
    let got = knn_all(&with_keys, &c.queries, K);
    let mut s = ExactSearcher::new(&with_keys);
    let scored_with: u64 = c
        .queries
        .view()
        .iter_rows()
        .map(|q| s.knn(q, K).unwrap().1.pq_scored)
        .sum();
    drop(s);
    drop(with_keys);
    drop_keys(&c.index);
    m3::format::verify(&c.index).unwrap();
    let without = open(&c.index);
    let got_without = knn_all(&without, &c.queries, K);
    assert_knn_exact(&c.base, &c.queries, &got_without, Metric::L2);
    assert_knn_exact(&c.base, &c.queries, &got, Metric::L2);
    let mut s = ExactSearcher::new(&without);
    let scored_without: u64 = c
        .queries
        .view()
        .iter_rows()
        .map(|q| s.knn(q, K).unwrap().1.pq_scored)
        .sum();
    assert!(
        scored_without > scored_with,
        "{scored_without} vs {scored_with}"
    );
}

#[test]
fn corrupt_keys_give_a_typed_error() {
    let c = generated(Metric::L2, 0, 1.0, 44);
    let path = c.index.join(KEYS_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    // The first key of the first cluster becomes huge: keys no longer ascend.
    let at = bytes.len() - 4 * 3000;
    bytes[at..at + 4].copy_from_slice(&1e30f32.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    // Opening reads keys.m3 whole: its CRC32C catches the change...
    let reopen = || Index::open(&c.index, IoBackend::Pread, &ReaderOptions::default());
    match reopen() {
        Err(SearchError::Format(FormatError::Checksum { path: p, .. })) => assert_eq!(p, path),
        other => panic!("{other:?}"),
    }
    assert!(m3::format::verify(&c.index).is_err());
    // ...and with the manifest's CRC32C recomputed over the wrong keys, their order does.
    let mpath = c.index.join(MANIFEST_FILE);
    let mut m = Manifest::read(&mpath).unwrap();
    for e in &mut m.files {
        if e.name_str() == Some(KEYS_FILE) {
            e.crc32c = crc32c::crc32c(&bytes);
        }
    }
    m.write(&mpath).unwrap();
    match reopen() {
        Err(SearchError::Format(FormatError::Corrupt { path: p, what, .. })) => {
            assert_eq!(p, path);
            assert!(what.contains("keys not ascending"), "{what}");
        }
        other => panic!("{other:?}"),
    }
    assert!(m3::format::verify(&c.index).is_err());
}

#[test]
fn bad_queries_give_errors() {
    let c = generated(Metric::Cosine, 0, 1.0, 55);
    let idx = open(&c.index);
    let mut s = ExactSearcher::new(&idx);
    let q = c.queries.row(0);
    assert!(matches!(s.knn(q, 0), Err(SearchError::KZero)));
    assert!(matches!(
        s.knn(q, 3001),
        Err(SearchError::KTooLarge { k: 3001, n: 3000 })
    ));
    assert!(matches!(
        s.knn(&q[..5], 3),
        Err(SearchError::QueryDim { .. })
    ));
    let mut nan = q.to_vec();
    nan[3] = f32::NAN;
    assert!(matches!(
        s.knn(&nan, 3),
        Err(SearchError::NonFinite { col: 3, .. })
    ));
    assert!(matches!(
        s.range(&vec![0.0; q.len()], 0.5),
        Err(SearchError::ZeroQuery { .. })
    ));
    assert!(matches!(
        s.range(q, f32::NAN),
        Err(SearchError::Param { .. })
    ));
    // k = n works and returns everything.
    let (all, _) = s.knn(q, 3000).unwrap();
    assert_eq!(all.len(), 3000);
}

#[test]
fn batch_equals_one_by_one() {
    let c = generated(Metric::InnerProduct, 1, 2.0, 66);
    let idx = open(&c.index);
    let one = knn_all(&idx, &c.queries, K);
    let batch = exact_batch(
        &idx,
        c.queries.view(),
        ExactQuery::Knn(K),
        None,
        ExactParams {
            first_batch: 8,
            max_batch: 16,
            warm_clusters: 2,
        },
        pool(),
    )
    .unwrap();
    for (a, b) in one.iter().zip(&batch.results) {
        let da: Vec<f32> = a.iter().map(|n| n.dist).collect();
        let db: Vec<f32> = b.iter().map(|n| n.dist).collect();
        assert_eq!(da, db);
    }
}

/// Real data: SIFT (u8-valued, l2) and the FashionCLIP fixture (ip and cosine).
#[test]
fn real_data_sets() {
    let (Some(sift), Some(xmodal)) = (
        m3::testing::shared_data("ngt-sift5k", &[]),
        m3::testing::shared_data("shopsphere-xmodal", &[]),
    ) else {
        return;
    };
    let find = |dir: &Path, pred: &dyn Fn(&str) -> bool| -> PathBuf {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| pred(p.file_name().unwrap().to_str().unwrap()))
            .unwrap_or_else(|| panic!("no matching file in {}", dir.display()))
    };
    let tmp = tempfile::tempdir().unwrap();
    let sift_base = find(&sift, &|n| n.starts_with("base"));
    let sift_query = find(&sift, &|n| n.starts_with("query"));
    let img = find(&xmodal, &|n| {
        n.starts_with("image") || n.starts_with("base")
    });
    let txt = find(&xmodal, &|n| {
        n.starts_with("text") || n.starts_with("query")
    });
    for (base_path, query_path, metric) in [
        (&sift_base, &sift_query, Metric::L2),
        (&img, &txt, Metric::InnerProduct),
        (&img, &txt, Metric::Cosine),
    ] {
        let base = VectorFile::open(base_path).unwrap().read_all_f32().unwrap();
        let q_all = VectorFile::open(query_path)
            .unwrap()
            .read_all_f32()
            .unwrap();
        let nq = q_all.rows().min(30);
        let queries =
            Matrix::from_vec(q_all.as_slice()[..nq * q_all.dim()].to_vec(), q_all.dim()).unwrap();
        let out = tmp.path().join(format!("{metric}"));
        let mut p = small_params(base_path, metric, &out, base.dim(), 0);
        p.pq.subspaces = Some(base.dim() / 8);
        build_index(&p, pool(), &Silent).unwrap();
        let idx = open(&out);
        let got = knn_all(&idx, &queries, K);
        assert_knn_exact(&base, &queries, &got, metric);
    }
}

fn m3_bin() -> &'static str {
    env!("CARGO_BIN_EXE_m3")
}

#[test]
fn cli_search_exact_and_range() {
    let c = generated(Metric::L2, 0, 1.0, 77);
    let dir = c._tmp.path();
    let qpath = dir.join("q.fbin");
    write_matrix(&qpath, c.queries.view()).unwrap();
    let gt = dir.join("gt.ibin");
    let st = Command::new(m3_bin())
        .args(["gt", "--metric", "l2", "--k", "10"])
        .arg("--base")
        .arg(dir.join("base.fbin"))
        .arg("--queries")
        .arg(&qpath)
        .arg("--out")
        .arg(&gt)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let out = Command::new(m3_bin())
        .args(["search", "--exact", "--k", "10", "--io", "pread"])
        .arg("--index")
        .arg(&c.index)
        .arg("--queries")
        .arg(&qpath)
        .arg("--gt")
        .arg(&gt)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("recall@10 = 1.0000"), "{stdout}");
    assert!(stdout.contains("of a full scan"), "{stdout}");

    let res = dir.join("range.bin");
    let radius = 2.0f32;
    let out = Command::new(m3_bin())
        .args(["range", "--io", "pread", "--radius", &radius.to_string()])
        .arg("--index")
        .arg(&c.index)
        .arg("--queries")
        .arg(&qpath)
        .arg("--out")
        .arg(&res)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rr = RangeResults::read(&res).unwrap();
    assert_eq!(rr.counts.len(), c.queries.rows());
    for qi in 0..c.queries.rows() {
        let (ids, dists) = rr.query(qi);
        let got: Vec<Neighbor> = ids
            .iter()
            .zip(dists)
            .map(|(&id, &dist)| Neighbor { id, dist })
            .collect();
        assert_range_exact(&c.base, c.queries.row(qi), radius, &got, Metric::L2);
    }
    // A truncated result file is a typed error naming it.
    let bytes = std::fs::read(&res).unwrap();
    std::fs::write(&res, &bytes[..bytes.len() - 3]).unwrap();
    let err = RangeResults::read(&res).unwrap_err().to_string();
    assert!(err.contains("range.bin"), "{err}");
}

/// A searcher reused across queries does exactly the work of a fresh one for each query
/// (nothing of the previous query's candidates is read again), for k-NN and range.
#[test]
fn reused_searcher_does_the_work_of_a_fresh_one() {
    let c = generated(Metric::L2, 0, 1.0, 77);
    let idx = open(&c.index);
    let mut reused = ExactSearcher::new(&idx);
    for (i, q) in c.queries.view().iter_rows().enumerate().take(12) {
        let (a, sa) = reused.knn(q, K).unwrap();
        let (b, sb) = ExactSearcher::new(&idx).knn(q, K).unwrap();
        assert_eq!(a, b, "query {i}: results");
        assert_eq!(
            (sa.dist_comps, sa.sectors, sa.pq_scored),
            (sb.dist_comps, sb.sectors, sb.pq_scored),
            "query {i}: work of a reused searcher"
        );
        let radius = b[K / 2].dist;
        let (ra, sa) = reused.range(q, radius).unwrap();
        let (rb, sb) = ExactSearcher::new(&idx).range(q, radius).unwrap();
        assert_eq!(ra, rb, "query {i}: range results");
        assert_eq!(sa.dist_comps, sb.dist_comps, "query {i}: range work");
    }
}

//! Golden indexes: one small index per format version, built once by the `m3 build` of its day
//! and committed under `tests/golden/v<N>/` (how each was made: its README). Today's code must
//! open every one of them, verify it as `m3 verify` does and answer its queries exactly as
//! recorded. A failure here means a change broke the reading of indexes already on disk: fix
//! the reader, never the fixture (a new format version adds a new folder instead).

use std::path::{Path, PathBuf};

use m3::search::{BatchOptions, DEFAULT_INFLIGHT, results_table};
use m3::{
    ExactParams, ExactQuery, GroundTruth, Index, IoBackend, ReaderOptions, SearchParams, Searcher,
    VectorFile, exact_batch, search_batch,
};

/// The folder of format version `v`.
fn golden(v: u32) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/v{v}"))
}

/// A private copy of a golden index: opening an index may repair what a killed build left in
/// its directory, and a test must never write into the committed fixture.
fn copy_index(v: u32) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("index");
    std::fs::create_dir(&dst).unwrap();
    for entry in std::fs::read_dir(golden(v).join("index")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
    }
    (tmp, dst)
}

/// The knobs the v1 fixture's `expected_knn.ibin` was recorded with (its README): few enough
/// clusters probed that routing, query anchors, hints and a neighbour-list round all matter.
fn v1_params(index: &Index) -> SearchParams {
    let mut p = SearchParams::new(10);
    p.nprobe = 3;
    p.qprobe = 2;
    p.edges = 2;
    p.hints = 4;
    p.rerank = 20;
    p.expand_rounds = 1;
    p.distance = index.calibrated_distance();
    p
}

/// `got` equals the recorded `want`: the same ids in the same order, and the same distances.
/// The fixture's distances come from the scalar kernels (`M3_SIMD=scalar`); this process uses
/// the best kernels of its CPU, which sum in another order, so distances may differ in the last
/// bits there (measured: at most 2.4e-7 with AVX2+FMA) and are compared to 1e-5 relative. Under
/// `M3_SIMD=scalar` they must be bit-identical (and `cli_answers_bit_identically` checks that on
/// every run).
fn assert_same_answers(what: &str, got: &GroundTruth, want: &GroundTruth) {
    assert_eq!(got.ids.rows(), want.ids.rows(), "{what}: queries");
    assert_eq!(got.k(), want.k(), "{what}: k");
    assert_eq!(got.ids.as_slice(), want.ids.as_slice(), "{what}: ids");
    let scalar = m3::simd::kernels().isa == "scalar";
    let (g, w) = (got.dists.as_ref().unwrap(), want.dists.as_ref().unwrap());
    for (i, (a, b)) in g.as_slice().iter().zip(w.as_slice()).enumerate() {
        let same = if scalar {
            a.to_bits() == b.to_bits()
        } else {
            (a - b).abs() <= 1e-5 * b.abs().max(1.0)
        };
        assert!(
            same,
            "{what}: query {} rank {}: distance {a} (today) vs {b} (recorded)",
            i / want.k(),
            i % want.k()
        );
    }
}

#[test]
fn v1_verifies() {
    let (_tmp, dir) = copy_index(1);
    let report = m3::verify(&dir).expect("the v1 golden index verifies");
    assert!(
        report.informational.is_empty(),
        "{:?}",
        report.informational
    );
    assert_eq!(report.records, 600);
    assert_eq!(report.data_sectors, 43);
}

#[test]
fn v1_answers_as_recorded() {
    let (_tmp, dir) = copy_index(1);
    let index = Index::open(&dir, IoBackend::Pread, &ReaderOptions::default()).unwrap();
    assert_eq!((index.n_vectors(), index.dim()), (600, 24));
    let queries = VectorFile::open(&golden(1).join("data/query.fbin"))
        .unwrap()
        .read_all_f32()
        .unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();

    let params = v1_params(&index);
    let options = BatchOptions {
        inflight_per_thread: DEFAULT_INFLIGHT,
    };
    let res = search_batch(&index, queries.view(), &params, &pool, &options).unwrap();
    let got = results_table(&res.results, &params, index.metric()).unwrap();
    let want = GroundTruth::read(&golden(1).join("expected_knn.ibin")).unwrap();
    assert_same_answers("k-NN", &got, &want);

    // One query at a time on one searcher: the same answers as the batch.
    let mut searcher = Searcher::new(&index);
    for q in 0..queries.rows() {
        let one = searcher.search(q, queries.row(q), &params).unwrap();
        assert_eq!(one.0, res.results[q], "query {q}");
    }

    let exact = exact_batch(
        &index,
        queries.view(),
        ExactQuery::Knn(10),
        None,
        ExactParams::default(),
        &pool,
    )
    .unwrap();
    let got = results_table(&exact.results, &params, index.metric()).unwrap();
    let want = GroundTruth::read(&golden(1).join("expected_exact.ibin")).unwrap();
    assert_same_answers("exact k-NN", &got, &want);
}

/// The recorded files again, through the command line, with the scalar kernels the fixture was
/// recorded with: byte for byte, on any CPU.
#[cfg(feature = "cli")]
#[test]
fn v1_cli_answers_bit_identically() {
    use std::process::Command;
    let (tmp, dir) = copy_index(1);
    let m3 = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_m3"))
            .args(args)
            .env("M3_SIMD", "scalar")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "m3 {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let dir = dir.to_str().unwrap();
    m3(&["verify", dir]);
    let queries = golden(1).join("data/query.fbin");
    let queries = queries.to_str().unwrap();
    let knn = tmp.path().join("knn.ibin");
    let exact = tmp.path().join("exact.ibin");
    let search = [
        "search",
        "--index",
        dir,
        "--queries",
        queries,
        "--k",
        "10",
        "--threads",
        "1",
        "--io",
        "pread",
    ];
    let knobs = [
        "--nprobe",
        "3",
        "--qprobe",
        "2",
        "--edges",
        "2",
        "--hints",
        "4",
        "--rerank",
        "20",
        "--expand-rounds",
        "1",
    ];
    m3(&[&search[..], &knobs, &["--out", knn.to_str().unwrap()]].concat());
    m3(&[&search[..], &["--exact", "--out", exact.to_str().unwrap()]].concat());
    for (got, want) in [(knn, "expected_knn.ibin"), (exact, "expected_exact.ibin")] {
        assert!(
            std::fs::read(&got).unwrap() == std::fs::read(golden(1).join(want)).unwrap(),
            "{want}: today's answers differ from the recorded ones"
        );
    }
}

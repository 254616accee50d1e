//! User ids (`m3 build --ids`, `ids.m3`): results report them in the library, in
//! `m3 search --out` and `m3 range --out`; a build refuses a wrong count or a repeated id; an
//! index without ids answers with row numbers; opening refuses an `ids.m3` with a repeated id
//! or a manifest whose flag and file list disagree.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use m3::build::{BuildError, BuildParams, Silent, build_index};
use m3::data::format::write_matrix;
use m3::data::{GroundTruth, Matrix, write_user_ids};
use m3::distance::Metric;
use m3::format::files::{IDS_FILE, MANIFEST_FILE};
use m3::format::{Manifest, UserIds};
use m3::io::{IoBackend, ReaderOptions};
use m3::search::{ExactSearcher, Index, SearchParams, Searcher};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap()
    })
}

fn random(n: usize, dim: usize, seed: u64) -> Matrix<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let v = (0..n * dim)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    Matrix::from_vec(v, dim).unwrap()
}

fn params(base: &Path, out: &Path, ids: Option<&Path>) -> BuildParams {
    let mut p = BuildParams::new(base.to_path_buf(), Metric::L2, out.to_path_buf());
    p.clusters.target_size = 64;
    p.pq.subspaces = Some(4);
    p.pq.iters = 3;
    p.pq.train_rows = 1024;
    p.graph.max_degree = 8;
    p.graph.candidates = 16;
    p.seed = 3;
    p.ids = ids.map(Path::to_path_buf);
    p
}

fn open(dir: &Path) -> Index {
    Index::open(dir, IoBackend::Pread, &ReaderOptions::default()).unwrap()
}

const N: usize = 600;
const DIM: usize = 8;

/// Distinct ids beyond 32 bits, not in row order.
fn big_ids() -> Vec<u64> {
    (0..N as u64)
        .map(|r| (1 << 40) + (N as u64 - r) * 7919)
        .collect()
}

#[test]
fn results_report_user_ids_and_old_indexes_report_rows() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.fbin");
    let data = random(N, DIM, 1);
    write_matrix(&base, data.view()).unwrap();
    let ids_path = dir.path().join("ids.u64bin");
    let ids = big_ids();
    write_user_ids(&ids_path, &ids).unwrap();

    let with = dir.path().join("with");
    build_index(&params(&base, &with, Some(&ids_path)), pool(), &Silent).unwrap();
    let without = dir.path().join("without");
    build_index(&params(&base, &without, None), pool(), &Silent).unwrap();

    let m = Manifest::read(&with.join(MANIFEST_FILE)).unwrap();
    assert!(m.file(IDS_FILE).is_some());
    assert!(
        Manifest::read(&without.join(MANIFEST_FILE))
            .unwrap()
            .file(IDS_FILE)
            .is_none()
    );
    m3::verify(&with).unwrap();

    let (a, b) = (open(&with), open(&without));
    assert!(a.has_user_ids() && !b.has_user_ids());
    let mut params = SearchParams::new(1);
    params.nprobe = a.n_clusters();
    params.rerank = 64;
    let mut sa = Searcher::new(&a);
    let mut ea = ExactSearcher::new(&a);
    let mut eb = ExactSearcher::new(&b);
    for row in (0..N).step_by(37) {
        let q = data.row(row);
        let (got, _) = sa.search(0, q, &params).unwrap();
        assert_eq!(a.user_id(got[0].id), ids[row], "row {row} (approximate)");
        let (got, _) = ea.knn(q, 1).unwrap();
        assert_eq!(a.user_id(got[0].id), ids[row], "row {row} (exact)");
        let (got, _) = eb.knn(q, 1).unwrap();
        assert_eq!(b.user_id(got[0].id), row as u64, "row {row} (no ids)");
    }
    // A 32-bit result file cannot hold these ids: refused, not truncated.
    let res = vec![vec![m3::Neighbor { id: 3, dist: 0.0 }]];
    let table = m3::search::results_table(&res, &params, Metric::L2).unwrap();
    assert!(a.user_id_table(&table).is_err());
    assert_eq!(b.user_id_table(&table).unwrap().ids.row(0), [3]);
}

#[test]
fn build_refuses_wrong_count_and_repeated_ids() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.fbin");
    write_matrix(&base, random(N, DIM, 2).view()).unwrap();
    let out = dir.path().join("idx");
    let ids_path = dir.path().join("ids.u64bin");

    write_user_ids(&ids_path, &big_ids()[..N - 1]).unwrap();
    let e = build_index(&params(&base, &out, Some(&ids_path)), pool(), &Silent).unwrap_err();
    assert!(matches!(e, BuildError::Param { name: "ids", .. }), "{e}");

    let mut ids = big_ids();
    ids[500] = ids[17];
    write_user_ids(&ids_path, &ids).unwrap();
    let e = build_index(&params(&base, &out, Some(&ids_path)), pool(), &Silent).unwrap_err();
    assert!(e.to_string().contains("row 500 repeats"), "{e}");
    assert!(!out.exists(), "nothing published");
}

#[test]
fn open_refuses_repeated_ids_and_an_unflagged_ids_file() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.fbin");
    write_matrix(&base, random(N, DIM, 4).view()).unwrap();
    let ids_path = dir.path().join("ids.u64bin");
    write_user_ids(&ids_path, &big_ids()).unwrap();
    let out = dir.path().join("idx");
    build_index(&params(&base, &out, Some(&ids_path)), pool(), &Silent).unwrap();

    // Repeated id with the manifest's CRC recomputed: refused by the check, not the CRC.
    let mut ids = UserIds::read(&out.join(IDS_FILE)).unwrap();
    ids.ids[9] = ids.ids[2];
    let entry = ids.write(&out.join(IDS_FILE)).unwrap();
    let mpath = out.join(MANIFEST_FILE);
    let mut m = Manifest::read(&mpath).unwrap();
    let e = m
        .files
        .iter_mut()
        .find(|e| e.name_str() == Some(IDS_FILE))
        .unwrap();
    *e = entry;
    m.write(&mpath).unwrap();
    let err = Index::open(&out, IoBackend::Pread, &ReaderOptions::default()).unwrap_err();
    assert!(err.to_string().contains("row 9 repeats"), "{err}");

    // The flag cleared while ids.m3 is still listed.
    m.meta.flags &= !m3::format::manifest::META_FLAG_IDS;
    m.write(&mpath).unwrap();
    let err = Index::open(&out, IoBackend::Pread, &ReaderOptions::default()).unwrap_err();
    assert!(err.to_string().contains("flag bit 3"), "{err}");
}

fn m3_cmd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_m3"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn cli_build_ids_and_search_out() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.fbin");
    let data = random(N, DIM, 5);
    write_matrix(&base, data.view()).unwrap();
    // Small ids (fit a 32-bit result file), reversed rows, as an .npy of int64.
    let ids: Vec<u64> = (0..N as u64).map(|r| 10_000 + (N as u64 - 1 - r)).collect();
    let npy = dir.path().join("ids.npy");
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    let mut header =
        format!("{{'descr': '<i8', 'fortran_order': False, 'shape': ({N},), }}").into_bytes();
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(b' ');
    }
    header.push(b'\n');
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(&header);
    for id in &ids {
        bytes.extend_from_slice(&(*id as i64).to_le_bytes());
    }
    std::fs::write(&npy, bytes).unwrap();
    let queries = dir.path().join("q.fbin");
    let rows: Vec<usize> = vec![0, 5, 77, 599];
    let q: Vec<f32> = rows.iter().flat_map(|&r| data.row(r).to_vec()).collect();
    write_matrix(&queries, Matrix::from_vec(q, DIM).unwrap().view()).unwrap();
    let out = dir.path().join("idx");
    let o = m3_cmd(&[
        "build",
        "--base",
        base.to_str().unwrap(),
        "--metric",
        "l2",
        "--out",
        out.to_str().unwrap(),
        "--ids",
        npy.to_str().unwrap(),
        "--cluster-size",
        "64",
        "--threads",
        "2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let res = dir.path().join("res.ibin");
    let o = m3_cmd(&[
        "search",
        "--index",
        out.to_str().unwrap(),
        "--queries",
        queries.to_str().unwrap(),
        "--k",
        "3",
        "--exact",
        "--out",
        res.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = GroundTruth::read(&res).unwrap();
    for (i, &r) in rows.iter().enumerate() {
        assert_eq!(got.ids.row(i)[0] as u64, ids[r], "query {i} (row {r})");
    }
}

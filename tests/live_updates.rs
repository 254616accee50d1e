//! Live updates (`m3::IndexWriter`, `wal.m3`, `delta.m3`) against a brute-force model:
//! random inserts, upserts, deletes, commits and reopens (proptest); exact search equals the
//! model's answer after every commit, approximate search never returns a deleted or replaced
//! vector; a torn or corrupt log tail keeps every committed batch; `m3 insert`, `m3 delete`
//! and `m3 inspect`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use m3::build::{BuildParams, Silent, build_index};
use m3::data::format::write_matrix;
use m3::data::{GroundTruth, Matrix, MatrixView, write_user_ids};
use m3::distance::{self, Metric};
use m3::format::files::WAL_FILE;
use m3::io::{IoBackend, ReaderOptions};
use m3::search::{ExactSearcher, Index, SearchParams, Searcher};
use m3::{IndexWriter, LiveIndex, UpdateError};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const N: usize = 400;
const DIM: usize = 8;

fn pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap()
    })
}

fn vector(rng: &mut ChaCha8Rng) -> Vec<f32> {
    (0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn base() -> &'static Matrix<f32> {
    static BASE: OnceLock<Matrix<f32>> = OnceLock::new();
    BASE.get_or_init(|| {
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        let v = (0..N).flat_map(|_| vector(&mut rng)).collect();
        Matrix::from_vec(v, DIM).unwrap()
    })
}

/// User ids of the base rows: `1000 + 3·row`.
fn base_ids() -> Vec<u64> {
    (0..N as u64).map(|r| 1000 + 3 * r).collect()
}

/// An index of `base()` with `base_ids()` under `metric`, built once per process.
fn built(metric: Metric) -> &'static Path {
    const METRICS: [Metric; 3] = [Metric::L2, Metric::Cosine, Metric::InnerProduct];
    static DIRS: OnceLock<(tempfile::TempDir, Vec<PathBuf>)> = OnceLock::new();
    let (_, dirs) = DIRS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let base_path = dir.path().join("base.fbin");
        write_matrix(&base_path, base().view()).unwrap();
        let ids = dir.path().join("ids.u64bin");
        write_user_ids(&ids, &base_ids()).unwrap();
        let out = METRICS
            .iter()
            .map(|&metric| {
                let o = dir.path().join(metric.to_string());
                build_index(&test_params(&base_path, metric, &o, &ids), pool(), &Silent).unwrap();
                o
            })
            .collect();
        (dir, out)
    });
    &dirs[METRICS.iter().position(|&m| m == metric).unwrap()]
}

/// A fresh copy of the built index (every test updates its own).
fn copy_of(metric: Metric, to: &Path) -> PathBuf {
    copy_dir(built(metric), to)
}

fn copy_dir(from: &Path, to: &Path) -> PathBuf {
    let dst = to.join("idx");
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    dst
}

/// The element type a test index stores: f32 (`built`), or u8/i8 (built from a `.u8bin` or
/// `.i8bin` file, `built_int`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Elem {
    F32,
    U8,
    I8,
}

impl Elem {
    /// A random vector of values the type holds (as f32).
    fn vector(self, rng: &mut ChaCha8Rng) -> Vec<f32> {
        match self {
            Elem::F32 => vector(rng),
            Elem::U8 => (0..DIM)
                .map(|_| f32::from(rng.random_range(0..=255u8)))
                .collect(),
            Elem::I8 => (0..DIM)
                .map(|_| f32::from(rng.random_range(-128..=127i8)))
                .collect(),
        }
    }

    fn dtype(self) -> m3::data::DType {
        match self {
            Elem::F32 => m3::data::DType::F32,
            Elem::U8 => m3::data::DType::U8,
            Elem::I8 => m3::data::DType::I8,
        }
    }

    /// The `N` base rows of the test index of this type (f32 values).
    fn base(self) -> &'static Matrix<f32> {
        static INTS: OnceLock<[Matrix<f32>; 2]> = OnceLock::new();
        let ints = INTS.get_or_init(|| {
            [Elem::U8, Elem::I8].map(|e| {
                let mut rng = ChaCha8Rng::seed_from_u64(23);
                let v = (0..N).flat_map(|_| e.vector(&mut rng)).collect();
                Matrix::from_vec(v, DIM).unwrap()
            })
        });
        match self {
            Elem::F32 => base(),
            Elem::U8 => &ints[0],
            Elem::I8 => &ints[1],
        }
    }

    /// Writes `rows` (values the type holds) as a vector file of this type.
    fn write(self, path_stem: &Path, rows: MatrixView<'_, f32>) -> PathBuf {
        let path = path_stem.with_extension(match self {
            Elem::F32 => "fbin",
            Elem::U8 => "u8bin",
            Elem::I8 => "i8bin",
        });
        match self {
            Elem::F32 => write_matrix(&path, rows).unwrap(),
            Elem::U8 => {
                let v: Vec<u8> = rows.as_slice().iter().map(|&x| x as u8).collect();
                write_matrix(&path, Matrix::from_vec(v, DIM).unwrap().view()).unwrap()
            }
            Elem::I8 => {
                let v: Vec<i8> = rows.as_slice().iter().map(|&x| x as i8).collect();
                write_matrix(&path, Matrix::from_vec(v, DIM).unwrap().view()).unwrap()
            }
        }
        path
    }
}

/// The build parameters of every test index.
fn test_params(base: &Path, metric: Metric, out: &Path, ids: &Path) -> BuildParams {
    let mut p = BuildParams::new(base.to_path_buf(), metric, out.to_path_buf());
    p.clusters.target_size = 40;
    p.pq.subspaces = Some(4);
    p.pq.iters = 3;
    p.pq.train_rows = 1024;
    p.graph.max_degree = 8;
    p.graph.candidates = 16;
    p.spill.max_copies = 1;
    p.seed = 9;
    p.ids = Some(ids.to_path_buf());
    p
}

/// The integer test indexes: `Elem::base()` of u8 under L2, of i8 under L2 and inner product,
/// with `base_ids()`, built once per process; they store u8/i8 records.
fn built_int(metric: Metric, elem: Elem) -> &'static Path {
    const KINDS: [(Metric, Elem); 3] = [
        (Metric::L2, Elem::U8),
        (Metric::L2, Elem::I8),
        (Metric::InnerProduct, Elem::I8),
    ];
    static DIRS: OnceLock<(tempfile::TempDir, Vec<PathBuf>)> = OnceLock::new();
    let (_, dirs) = DIRS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let ids = dir.path().join("ids.u64bin");
        write_user_ids(&ids, &base_ids()).unwrap();
        let out = KINDS
            .iter()
            .map(|&(metric, elem)| {
                let base_path =
                    elem.write(&dir.path().join(format!("{elem:?}")), elem.base().view());
                let o = dir.path().join(format!("{metric}-{elem:?}"));
                build_index(&test_params(&base_path, metric, &o, &ids), pool(), &Silent).unwrap();
                assert_eq!(open(&o).element_type(), elem.dtype());
                o
            })
            .collect();
        (dir, out)
    });
    &dirs[KINDS.iter().position(|&k| k == (metric, elem)).unwrap()]
}

/// A fresh copy of the test index of `metric` and `elem`.
fn copy_of_kind(metric: Metric, elem: Elem, to: &Path) -> PathBuf {
    match elem {
        Elem::F32 => copy_of(metric, to),
        _ => copy_dir(built_int(metric, elem), to),
    }
}

fn open(dir: &Path) -> Index {
    Index::open(dir, IoBackend::Pread, &ReaderOptions::default()).unwrap()
}

/// The live vectors by user id: what the index must answer from.
#[derive(Debug, Clone, Default)]
struct Model {
    live: BTreeMap<u64, Vec<f32>>,
}

impl Model {
    fn base() -> Self {
        Self::base_of(Elem::F32)
    }

    fn base_of(elem: Elem) -> Self {
        Self {
            live: base_ids()
                .into_iter()
                .zip(elem.base().view().iter_rows().map(<[f32]>::to_vec))
                .collect(),
        }
    }

    /// Internal distance of the index's metric (squared L2; −inner product; −cosine
    /// similarity).
    fn dist(metric: Metric, q: &[f32], v: &[f32]) -> f32 {
        match metric {
            Metric::L2 => distance::l2_sq(q, v),
            Metric::InnerProduct => -distance::dot(q, v),
            Metric::Cosine => {
                let n = |x: &[f32]| distance::dot(x, x).sqrt();
                -distance::dot(q, v) / (n(q) * n(v))
            }
        }
    }

    fn knn(&self, metric: Metric, q: &[f32], k: usize) -> Vec<(u64, f32)> {
        let mut all: Vec<(u64, f32)> = self
            .live
            .iter()
            .map(|(&id, v)| (id, Self::dist(metric, q, v)))
            .collect();
        all.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        all.truncate(k);
        all
    }
}

/// Exact search equals the model (same ids, distances within float error), range search
/// returns the model's vectors within the radius; approximate search returns only live ids,
/// each at its live vector's distance.
fn check_against_model(dir: &Path, metric: Metric, model: &Model, queries: &[Vec<f32>]) {
    check_index(&open(dir), metric, model, queries);
}

/// [`check_against_model`] of an open index; range search too: a radius just beyond the k-th
/// distance returns exactly the live vectors within it (up to float error at the boundary).
fn check_index(index: &Index, metric: Metric, model: &Model, queries: &[Vec<f32>]) {
    assert_eq!(index.live_vectors(), model.live.len() as u64);
    let k = 5.min(model.live.len());
    let mut exact = ExactSearcher::new(index);
    let mut approx = Searcher::new(index);
    let mut params = SearchParams::new(k.max(1));
    params.nprobe = 4;
    for (qi, q) in queries.iter().enumerate() {
        if k == 0 {
            break;
        }
        let want = model.knn(metric, q, k);
        let (got, _) = exact.knn(q, k).unwrap();
        let got: Vec<(u64, f32)> = got.iter().map(|n| (index.user_id(n.id), n.dist)).collect();
        assert_eq!(got.len(), want.len(), "query {qi}");
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g.1 - w.1).abs() <= 1e-4 * w.1.abs().max(1.0),
                "query {qi}: exact {got:?}, model {want:?}"
            );
        }
        // Ids agree wherever distances are not tied.
        let gi: Vec<u64> = got.iter().map(|g| g.0).collect();
        let wi: Vec<u64> = want.iter().map(|w| w.0).collect();
        if want.windows(2).all(|w| (w[1].1 - w[0].1).abs() > 1e-4) {
            assert_eq!(gi, wi, "query {qi}");
        }
        let d_k = want[k - 1].1;
        let eps = 1e-4 * d_k.abs().max(1.0);
        let (got, _) = exact.range(q, metric.to_natural(d_k + eps)).unwrap();
        let got: std::collections::BTreeSet<u64> =
            got.iter().map(|n| index.user_id(n.id)).collect();
        for (id, v) in &model.live {
            let d = Model::dist(metric, q, v);
            if d <= d_k - eps {
                assert!(
                    got.contains(id),
                    "query {qi}: range search misses {id} at {d}"
                );
            }
            if got.contains(id) {
                assert!(
                    d <= d_k + 2.0 * eps,
                    "query {qi}: range returns {id} at {d}"
                );
            }
        }
        assert!(
            got.iter().all(|id| model.live.contains_key(id)),
            "query {qi}: a dead id"
        );
        let (got, _) = approx.search(qi, q, &params).unwrap();
        let unique: std::collections::BTreeSet<u32> = got.iter().map(|n| n.id).collect();
        assert_eq!(unique.len(), got.len(), "query {qi}: an id twice: {got:?}");
        for n in &got {
            let id = index.user_id(n.id);
            let v = model.live.get(&id).unwrap_or_else(|| {
                panic!("query {qi}: approximate search returned {id}, not live")
            });
            let d = Model::dist(metric, q, v);
            assert!(
                (n.dist - d).abs() <= 1e-4 * d.abs().max(1.0),
                "query {qi}: id {id} at {} but its live vector is at {d} (a replaced vector?)",
                n.dist
            );
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// `count` vectors: new ids, or (upsert) ids taken from the live set, by `seed`.
    Insert {
        count: usize,
        upsert: bool,
        seed: u64,
    },
    /// `count` live ids (and one that never existed), by `seed`.
    Delete {
        count: usize,
        seed: u64,
    },
    Commit,
    /// Drop the writer (its uncommitted operations are lost) and open it again.
    Reopen,
    /// Drop the writer and compact (`m3::update::compact`), then open the writer again.
    Compact,
    /// Drop the writer, merge per cluster (`m3::update::merge`) with this change fraction
    /// (0: every cluster with a change), then open the writer again.
    Merge {
        change_fraction: f64,
    },
    /// Prepare a merge of what this change fraction picks, beside the writer (held until
    /// `PublishMerge`; an earlier one still held is dropped).
    PrepareMerge {
        change_fraction: f64,
    },
    /// Publish the held merge through the writer, carrying the commits made since (refused,
    /// with the writer's queued operations lost, when some are queued).
    PublishMerge,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1usize..40, any::<bool>(), any::<u64>())
            .prop_map(|(count, upsert, seed)| Op::Insert { count, upsert, seed }),
        2 => (1usize..60, any::<u64>()).prop_map(|(count, seed)| Op::Delete { count, seed }),
        3 => Just(Op::Commit),
        1 => Just(Op::Reopen),
        1 => Just(Op::Compact),
        2 => prop_oneof![Just(0.0), Just(0.2), Just(0.6)]
            .prop_map(|change_fraction| Op::Merge { change_fraction }),
        1 => prop_oneof![Just(0.0), Just(0.6)]
            .prop_map(|change_fraction| Op::PrepareMerge { change_fraction }),
        2 => Just(Op::PublishMerge),
    ]
}

fn run_ops(metric: Metric, elem: Elem, ops: &[Op]) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_of_kind(metric, elem, tmp.path());
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let queries: Vec<Vec<f32>> = (0..8).map(|_| elem.vector(&mut rng)).collect();
    let mut committed = Model::base_of(elem);
    let mut pending = committed.clone();
    let mut writer = IndexWriter::open(&dir).unwrap();
    // A searcher's view that follows the commits by refresh (incremental), checked against
    // the model like a fresh open.
    let shared = LiveIndex::new(open(&dir));
    let mut next_new = 1u64 << 33;
    let mut generation = 0;
    let mut held: Option<m3::update::PreparedMerge> = None;
    for op in ops {
        match *op {
            Op::Insert {
                count,
                upsert,
                seed,
            } => {
                let mut r = ChaCha8Rng::seed_from_u64(seed);
                let live: Vec<u64> = pending.live.keys().copied().collect();
                let ids: Vec<u64> = (0..count)
                    .map(|_| {
                        if upsert && !live.is_empty() {
                            live[r.random_range(0..live.len())]
                        } else {
                            next_new += 1;
                            next_new
                        }
                    })
                    .collect();
                let vs: Vec<f32> = (0..count).flat_map(|_| elem.vector(&mut r)).collect();
                let m = Matrix::from_vec(vs, DIM).unwrap();
                writer.insert(&ids, m.view()).unwrap();
                for (id, v) in ids.iter().zip(m.view().iter_rows()) {
                    pending.live.insert(*id, v.to_vec());
                }
            }
            Op::Delete { count, seed } => {
                let mut r = ChaCha8Rng::seed_from_u64(seed);
                let live: Vec<u64> = pending.live.keys().copied().collect();
                let mut ids: Vec<u64> = (0..count.min(live.len()))
                    .map(|_| live[r.random_range(0..live.len())])
                    .collect();
                ids.push(7); // never an id
                writer.delete(&ids);
                for id in &ids {
                    pending.live.remove(id);
                }
            }
            Op::Commit => {
                let g = writer.commit().unwrap();
                if g != generation {
                    assert_eq!(g, generation + 1);
                }
                generation = g;
                committed = pending.clone();
                assert_eq!(writer.live_vectors(), committed.live.len() as u64);
                check_against_model(&dir, metric, &committed, &queries);
                assert_eq!(shared.refresh().unwrap(), generation);
                check_index(&shared.current(), metric, &committed, &queries);
                // The index is built with spill: every live vector 1–2 times, none lost.
                check_copies(&shared.current(), &committed);
            }
            Op::Compact => {
                drop((writer, held.take()));
                match m3::update::compact(&dir, pool()) {
                    Ok(r) => {
                        assert_eq!(r.live_vectors, committed.live.len() as u64);
                        generation = 0;
                    }
                    Err(e) => assert!(
                        committed.live.is_empty() && matches!(e, UpdateError::Unsupported { .. }),
                        "{e}"
                    ),
                }
                writer = IndexWriter::open(&dir).unwrap();
                assert_eq!(writer.generation(), generation);
                pending = committed.clone();
                check_against_model(&dir, metric, &committed, &queries);
                assert_eq!(shared.refresh().unwrap(), generation);
                check_index(&shared.current(), metric, &committed, &queries);
            }
            Op::Merge { change_fraction } => {
                drop((writer, held.take()));
                let policy = m3::update::MergePolicy {
                    change_fraction,
                    ..Default::default()
                };
                let merged = m3::update::merge(&dir, &policy).unwrap();
                writer = IndexWriter::open(&dir).unwrap();
                if merged.is_some() {
                    generation = writer.generation();
                }
                assert_eq!(writer.generation(), generation);
                assert_eq!(writer.live_vectors(), committed.live.len() as u64);
                pending = committed.clone();
                check_against_model(&dir, metric, &committed, &queries);
                assert_eq!(shared.refresh().unwrap(), generation);
                check_index(&shared.current(), metric, &committed, &queries);
                check_copies(&shared.current(), &committed);
                m3::verify(&dir).unwrap();
            }
            Op::PrepareMerge { change_fraction } => {
                held = None;
                let policy = m3::update::MergePolicy {
                    change_fraction,
                    ..Default::default()
                };
                let index = open(&dir);
                let chosen = m3::update::choose_clusters(&index, &policy);
                if !chosen.is_empty() {
                    held = Some(m3::update::prepare_merge(&index, &chosen, None).unwrap());
                }
            }
            Op::PublishMerge => {
                let Some(merge) = held.take() else { continue };
                if writer.pending() > 0 {
                    let err = writer.publish_merge(merge).unwrap_err();
                    assert!(matches!(err, UpdateError::Input { .. }), "{err}");
                    writer = IndexWriter::open(&dir).unwrap();
                } else {
                    let (report, w) = writer.publish_merge(merge).unwrap();
                    assert!(report.clusters > 0, "{report:?}");
                    writer = w;
                    generation = writer.generation();
                }
                assert_eq!(writer.generation(), generation);
                assert_eq!(writer.live_vectors(), committed.live.len() as u64);
                pending = committed.clone();
                check_against_model(&dir, metric, &committed, &queries);
                assert_eq!(shared.refresh().unwrap(), generation);
                check_index(&shared.current(), metric, &committed, &queries);
                m3::verify(&dir).unwrap();
            }
            Op::Reopen => {
                drop(writer);
                writer = IndexWriter::open(&dir).unwrap();
                assert_eq!(writer.generation(), generation);
                pending = committed.clone();
                check_against_model(&dir, metric, &committed, &queries);
            }
        }
    }
    drop((writer, held));
    check_against_model(&dir, metric, &committed, &queries);
    assert_eq!(
        open(&dir).element_type(),
        elem.dtype(),
        "compactions and merges keep it"
    );
    m3::verify(&dir).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn updates_match_a_brute_force_model(
        metric in prop_oneof![
            Just(Metric::L2),
            Just(Metric::Cosine),
            Just(Metric::InnerProduct)
        ],
        ops in proptest::collection::vec(op(), 1..14),
    ) {
        run_ops(metric, Elem::F32, &ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]

    /// The same model test on indexes that store u8 and i8 records (integer inputs).
    #[test]
    fn updates_of_u8_and_i8_indexes_match_a_brute_force_model(
        (metric, elem) in prop_oneof![
            Just((Metric::L2, Elem::U8)),
            Just((Metric::L2, Elem::I8)),
            Just((Metric::InnerProduct, Elem::I8))
        ],
        ops in proptest::collection::vec(op(), 1..14),
    ) {
        run_ops(metric, elem, &ops);
    }
}

/// Inserting every base vector again under new ids and deleting the old ones leaves an index
/// whose answers come from the delta alone; deleting everything leaves nothing to return.
#[test]
fn churn_through_the_whole_base() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_of(Metric::L2, tmp.path());
    let mut w = IndexWriter::open(&dir).unwrap();
    let ids: Vec<u64> = (0..N as u64).map(|r| 1 << 40 | r).collect();
    w.insert(&ids, base().view()).unwrap();
    w.delete(&base_ids());
    assert_eq!(w.commit().unwrap(), 1);
    let mut model = Model::default();
    for (id, v) in ids.iter().zip(base().view().iter_rows()) {
        model.live.insert(*id, v.to_vec());
    }
    let queries: Vec<Vec<f32>> = (0..10).map(|r| base().row(r * 7).to_vec()).collect();
    check_against_model(&dir, Metric::L2, &model, &queries);
    // Approximate search finds the re-inserted copy of a base row as its own nearest.
    let index = open(&dir);
    let mut s = Searcher::new(&index);
    let params = SearchParams::new(1);
    let mut found = 0;
    for (r, &id) in ids.iter().enumerate().take(50) {
        let (got, _) = s.search(r, base().row(r), &params).unwrap();
        found += usize::from(index.user_id(got[0].id) == id);
    }
    assert!(
        found >= 45,
        "{found} of 50 re-inserted rows found as their own nearest"
    );
    drop(s);
    drop(index);
    w.delete(&ids);
    w.commit().unwrap();
    let index = open(&dir);
    assert_eq!(index.live_vectors(), 0);
    assert!(ExactSearcher::new(&index).knn(base().row(0), 1).is_err());
}

/// Approximate answers (user ids and distances) of `queries`, for comparing two opens.
fn approx_answers(index: &Index, queries: &[Vec<f32>]) -> Vec<Vec<(u64, f32)>> {
    let mut s = Searcher::new(index);
    let mut params = SearchParams::new(5);
    params.nprobe = 4;
    queries
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let (got, _) = s.search(i, q, &params).unwrap();
            got.iter().map(|n| (index.user_id(n.id), n.dist)).collect()
        })
        .collect()
}

#[test]
fn the_coded_delta_is_derived_and_coded_again_when_missing_or_damaged() {
    use m3::format::delta_codes::DELTA_CODES_HEADER_BYTES;
    use m3::format::files::DELTA_CODES_FILE;
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_of(Metric::L2, tmp.path());
    let mut rng = ChaCha8Rng::seed_from_u64(41);
    let mut model = Model::base();
    let mut w = IndexWriter::open(&dir).unwrap();
    for batch in 0..2u64 {
        let ids: Vec<u64> = (0..45).map(|i| 1 << 33 | (batch * 100 + i)).collect();
        let rows: Vec<f32> = (0..45).flat_map(|_| vector(&mut rng)).collect();
        let m = Matrix::from_vec(rows, DIM).unwrap();
        w.insert(&ids, m.view()).unwrap();
        for (id, v) in ids.iter().zip(m.view().iter_rows()) {
            model.live.insert(*id, v.to_vec());
        }
        let gone = base_ids()[batch as usize * 7];
        w.delete(&[gone]);
        model.live.remove(&gone);
        w.commit().unwrap();
    }
    drop(w);
    let codes = dir.join(DELTA_CODES_FILE);
    let queries: Vec<Vec<f32>> = (0..8).map(|_| vector(&mut rng)).collect();
    let index = open(&dir);
    assert_eq!(
        index.live_info().coded_again,
        0,
        "every insert's coding read"
    );
    let want = approx_answers(&index, &queries);
    drop(index);
    let intact = std::fs::read(&codes).unwrap();
    let eb = (intact.len() - DELTA_CODES_HEADER_BYTES as usize) / 90;
    assert_eq!(intact.len(), DELTA_CODES_HEADER_BYTES as usize + 90 * eb);
    let at = |i: usize| DELTA_CODES_HEADER_BYTES as usize + i * eb;
    // Each damage: (file bytes, inserts coded again). Answers never change.
    let mut flipped = intact.clone();
    flipped[at(10) + 9] ^= 0x40; // entry 10's slot
    let mut stale = intact.clone(); // entry 6's bytes (a valid CRC) where entry 5 belongs
    stale.copy_within(at(6)..at(7), at(5));
    let mut torn = intact.clone();
    torn.truncate(at(45) - 3);
    let mut other_index = intact.clone();
    other_index[32] ^= 1; // the manifest CRC the header names (header CRC now wrong too)
    for (bytes, again) in [(flipped, 1), (stale, 1), (torn, 46), (other_index, 90)] {
        std::fs::write(&codes, &bytes).unwrap();
        let index = open(&dir);
        assert_eq!(index.live_info().coded_again, again);
        assert_eq!(approx_answers(&index, &queries), want);
        check_index(&index, Metric::L2, &model, &queries);
    }
    std::fs::remove_file(&codes).unwrap();
    let index = open(&dir);
    assert_eq!(index.live_info().coded_again, 90);
    assert_eq!(approx_answers(&index, &queries), want);
    drop(index);
    // A writer writes the file back; the next open reads every coding again.
    let w = IndexWriter::open(&dir).unwrap();
    assert_eq!(w.coded_again(), 90);
    drop(w);
    assert_eq!(
        std::fs::read(&codes).unwrap(),
        intact,
        "written back byte for byte"
    );
    std::fs::write(&codes, &intact[..at(45) - 3]).unwrap();
    let mut w = IndexWriter::open(&dir).unwrap();
    assert_eq!(w.coded_again(), 46);
    w.delete(&[1 << 33]);
    model.live.remove(&(1 << 33));
    w.commit().unwrap();
    drop(w);
    assert_eq!(std::fs::read(&codes).unwrap(), intact, "cut and appended");
    let index = open(&dir);
    assert_eq!(index.live_info().coded_again, 0);
    check_index(&index, Metric::L2, &model, &queries);
    m3::format::verify(&dir).unwrap();
}

#[test]
fn bad_inputs_and_a_second_writer_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_of(Metric::L2, tmp.path());
    let mut w = IndexWriter::open(&dir).unwrap();
    assert!(matches!(
        IndexWriter::open(&dir),
        Err(UpdateError::Locked { .. })
    ));
    let m = Matrix::from_vec(vec![0.0; DIM * 2], DIM).unwrap();
    assert!(matches!(
        w.insert(&[1], m.view()),
        Err(UpdateError::Input { .. })
    ));
    let bad = Matrix::from_vec(vec![f32::NAN; DIM], DIM).unwrap();
    let e = w.insert(&[1], bad.view()).unwrap_err();
    assert!(e.to_string().contains("vector 0"), "{e}");
    let short = Matrix::from_vec(vec![0.0; DIM - 1], DIM - 1).unwrap();
    assert!(w.insert(&[1], short.view()).is_err());
    assert_eq!(w.pending(), 0, "nothing queued by refused calls");
    assert_eq!(w.commit().unwrap(), 0, "an empty commit changes nothing");
    drop(w);
    IndexWriter::open(&dir).unwrap();
}

/// A writer whose path was taken by another published index (a rebuild renames the old
/// directory away and the new one in) refuses to commit, writes nothing into the new index, and
/// a writer opened on the new index commits normally.
#[test]
fn a_writer_refuses_to_commit_after_another_index_is_published_at_its_path() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_of(Metric::L2, tmp.path());
    let mut w = IndexWriter::open(&dir).unwrap();
    let other = tempfile::tempdir().unwrap();
    let fresh = copy_of(Metric::L2, other.path());
    std::fs::rename(&dir, tmp.path().join("old")).unwrap();
    std::fs::rename(&fresh, &dir).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(71);
    let v = Matrix::from_vec(vector(&mut rng), DIM).unwrap();
    w.insert(&[1 << 47], v.view()).unwrap();
    let e = w.commit().unwrap_err();
    assert!(matches!(e, UpdateError::Republished { .. }), "{e}");
    assert!(e.to_string().contains("open it again"), "{e}");
    assert!(
        !dir.join(WAL_FILE).exists(),
        "nothing written into the new index"
    );
    let old = open(&tmp.path().join("old"));
    assert_eq!(old.live_info().generation, 0, "nor into the old one");
    assert_eq!(old.live_vectors(), open(&dir).live_vectors());
    drop(w);
    let mut w = IndexWriter::open(&dir).unwrap();
    w.insert(&[1 << 47], v.view()).unwrap();
    assert_eq!(w.commit().unwrap(), 1);
}

/// Where each commit record of the log ends (replayed with cuts of the file).
fn commit_ends(wal: &Path) -> Vec<u64> {
    let full = std::fs::read(wal).unwrap();
    let cut = wal.parent().unwrap().with_extension("wal-cut");
    let mut ends = Vec::new();
    let mut last = 0;
    for len in 56..=full.len() {
        std::fs::write(&cut, &full[..len]).unwrap();
        let g = m3::format::read_wal(&cut).unwrap().unwrap().generation();
        if g > last {
            ends.push(len as u64);
            last = g;
        }
    }
    ends
}

/// A log cut or corrupted after its last good commit: every committed batch before the damage
/// is kept (exact answers as the model at that commit), nothing after it appears, and the
/// writer cuts the tail, says so and commits on.
#[test]
fn a_torn_or_corrupt_wal_tail_keeps_every_committed_write() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_of(Metric::L2, tmp.path());
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    let queries: Vec<Vec<f32>> = (0..6).map(|_| vector(&mut rng)).collect();
    let mut models = vec![Model::base()];
    let mut w = IndexWriter::open(&dir).unwrap();
    for batch in 0..3u64 {
        let mut m = models.last().unwrap().clone();
        let ids: Vec<u64> = (0..20).map(|i| (batch + 1) << 36 | i).collect();
        let vs: Vec<f32> = (0..20).flat_map(|_| vector(&mut rng)).collect();
        let v = Matrix::from_vec(vs, DIM).unwrap();
        w.insert(&ids, v.view()).unwrap();
        let del: Vec<u64> = base_ids()[batch as usize * 10..batch as usize * 10 + 10].to_vec();
        w.delete(&del);
        for (id, x) in ids.iter().zip(v.view().iter_rows()) {
            m.live.insert(*id, x.to_vec());
        }
        for id in &del {
            m.live.remove(id);
        }
        w.commit().unwrap();
        models.push(m);
    }
    drop(w);
    let wal = dir.join(WAL_FILE);
    let full = std::fs::read(&wal).unwrap();
    let ends = commit_ends(&wal);
    assert_eq!(ends.len(), 3);
    assert_eq!(*ends.last().unwrap(), full.len() as u64);
    // Cuts inside the last batch, and flipped bytes in it: batches 1 and 2 stay.
    let last_start = ends[1] as usize;
    for (i, damage) in [
        (last_start + 1, None),
        (full.len() - 1, None),
        ((last_start + full.len()) / 2, None),
        (full.len(), Some(last_start + 3)),
        (full.len(), Some(full.len() - 5)),
    ]
    .into_iter()
    .enumerate()
    {
        let mut b = full[..damage.0].to_vec();
        if let Some(at) = damage.1 {
            b[at] ^= 0x10;
        }
        std::fs::write(&wal, &b).unwrap();
        let index = open(&dir);
        let info = index.live_info();
        assert_eq!(info.generation, 2, "case {i}");
        let cut = info.wal_cut.expect("the damage is reported");
        assert_eq!(cut.offset, ends[1], "case {i}");
        assert_eq!(
            cut.corrupt.is_some(),
            damage.1.is_some() || damage.0 < full.len(),
            "case {i}"
        );
        drop(index);
        check_against_model(&dir, Metric::L2, &models[2], &queries);
    }
    // The writer cuts the tail and commits on top of batch 2.
    let mut w = IndexWriter::open(&dir).unwrap();
    assert_eq!(w.recovered().map(|t| t.offset), Some(ends[1]));
    assert_eq!(w.generation(), 2);
    let mut m = models[2].clone();
    m.live.remove(&base_ids()[100]);
    w.delete(&[base_ids()[100]]);
    assert_eq!(w.commit().unwrap(), 3);
    drop(w);
    assert_eq!(open(&dir).live_info().wal_cut, None);
    check_against_model(&dir, Metric::L2, &m, &queries);
    // Corrupt inside the first batch: nothing of the log survives, the base answers.
    let full = std::fs::read(&wal).unwrap();
    let mut b = full.clone();
    b[70] ^= 0x01;
    std::fs::write(&wal, &b).unwrap();
    assert_eq!(open(&dir).live_info().generation, 0);
    check_against_model(&dir, Metric::L2, &models[0], &queries);
}

fn m3_cmd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_m3"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn cli_insert_delete_inspect_and_search() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_of(Metric::L2, tmp.path());
    let d = dir.to_str().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let new: Vec<f32> = (0..5).flat_map(|_| vector(&mut rng)).collect();
    let new = Matrix::from_vec(new, DIM).unwrap();
    let vecs = tmp.path().join("new.fbin");
    write_matrix(&vecs, new.view()).unwrap();
    let ids = tmp.path().join("new.u64bin");
    write_user_ids(&ids, &[11, 12, 13, 14, base_ids()[0]]).unwrap();
    // No --ids on an index built with ids: refused, nothing changes.
    let o = m3_cmd(&["insert", "--index", d, "--base", vecs.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--ids"));
    let o = m3_cmd(&[
        "insert",
        "--index",
        d,
        "--base",
        vecs.to_str().unwrap(),
        "--ids",
        ids.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let del = tmp.path().join("del.u64bin");
    write_user_ids(&del, &[12, base_ids()[1]]).unwrap();
    let o = m3_cmd(&["delete", "--index", d, "--ids", del.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = m3_cmd(&["inspect", d]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    // 5 inserted (one replacing base row 0), 1 inserted and 1 base deleted: 3 tombstones.
    assert!(
        text.contains(&format!(
            "generation 2, {} live vectors; delta 5 inserted records",
            N + 2
        )),
        "{text}"
    );
    assert!(text.contains("3 tombstones"), "{text}");
    // Exact search for the inserted vectors finds them under their user ids, not 12.
    let q = tmp.path().join("q.fbin");
    write_matrix(&q, new.view()).unwrap();
    let out = tmp.path().join("res.ibin");
    let o = m3_cmd(&[
        "search",
        "--index",
        d,
        "--queries",
        q.to_str().unwrap(),
        "--k",
        "1",
        "--exact",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = GroundTruth::read(&out).unwrap();
    let first: Vec<u32> = (0..5).map(|i| got.ids.row(i)[0]).collect();
    assert_eq!(first[0], 11);
    assert_ne!(first[1], 12, "deleted");
    assert_eq!(first[2..], [13, 14, base_ids()[0] as u32]);
    let o = m3_cmd(&["verify", d]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("generation 2 (5 inserted records checked)"),
        "{text}"
    );
    // A flipped byte in an inserted record: verify names delta.m3 and the slot.
    let delta = dir.join(m3::format::files::DELTA_FILE);
    let mut b = std::fs::read(&delta).unwrap();
    b[4096 + 5] ^= 0x20;
    std::fs::write(&delta, &b).unwrap();
    let o = m3_cmd(&["verify", d]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("delta.m3") && err.contains("slot 0"), "{err}");
}

/// `m3 insert` killed (SIGKILL) at random points: every batch whose command exited 0 is
/// there, every killed batch is wholly there or wholly absent (a commit is atomic), the
/// writer opens again (the dead process's lock is gone) and `m3 verify` passes.
#[test]
fn sigkill_during_inserts_keeps_every_acknowledged_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_of(Metric::L2, tmp.path());
    let d = dir.to_str().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(41);
    const BATCH: usize = 500;
    let mut batches = Vec::new();
    let mut acked = Vec::new();
    let mut killed = Vec::new();
    let mut full_ms = 0u64;
    // 14 rounds, and more (at most 40) until a kill has landed before a command's exit: the
    // kill points are random, so on a fast run every one of them can miss.
    for round in 0..40u64 {
        if round >= 14 && !killed.is_empty() {
            break;
        }
        let ids: Vec<u64> = (0..BATCH as u64).map(|i| (round + 1) << 32 | i).collect();
        let vs: Vec<f32> = (0..BATCH).flat_map(|_| vector(&mut rng)).collect();
        let m = Matrix::from_vec(vs, DIM).unwrap();
        let vpath = tmp.path().join(format!("v{round}.fbin"));
        let ipath = tmp.path().join(format!("i{round}.u64bin"));
        write_matrix(&vpath, m.view()).unwrap();
        write_user_ids(&ipath, &ids).unwrap();
        let started = std::time::Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_m3"))
            .args(["insert", "--index", d, "--base"])
            .arg(&vpath)
            .arg("--ids")
            .arg(&ipath)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        if round % 4 == 0 {
            // Runs to completion: acknowledged, and how long an insert takes here.
            assert!(child.wait().unwrap().success());
            // The latest complete run (the first, on a cold cache, may be much slower).
            full_ms = started.elapsed().as_millis() as u64;
            acked.push(round);
        } else {
            // A kill at a random point of the command's run, mostly in its second half, where
            // it writes (the delay only picks the point; some kills land after the exit).
            let full = full_ms.max(2);
            std::thread::sleep(std::time::Duration::from_micros(
                rng.random_range(full * 300..full * 1100),
            ));
            child.kill().unwrap();
            let status = child.wait().unwrap();
            if status.success() {
                acked.push(round);
            } else {
                killed.push(round);
            }
        }
        batches.push((ids, m));
    }
    assert!(!killed.is_empty(), "no insert was killed");
    let w = IndexWriter::open(&dir).unwrap();
    for &r in &acked {
        let (ids, _) = &batches[r as usize];
        assert!(
            ids.iter().all(|&id| w.contains(id)),
            "acknowledged batch {r} lost"
        );
    }
    let mut kept = 0;
    for &r in &killed {
        let (ids, _) = &batches[r as usize];
        let live = ids.iter().filter(|&&id| w.contains(id)).count();
        assert!(
            live == 0 || live == BATCH,
            "killed batch {r}: {live} of {BATCH} ids"
        );
        kept += usize::from(live == BATCH);
    }
    drop(w);
    eprintln!(
        "{} acknowledged, {} killed ({kept} of them committed before the kill)",
        acked.len(),
        killed.len()
    );
    // The vectors of the acknowledged batches are found under their ids by exact search.
    let index = open(&dir);
    let mut ex = ExactSearcher::new(&index);
    for &r in &acked {
        let (ids, m) = &batches[r as usize];
        for i in (0..BATCH).step_by(97) {
            let (got, _) = ex.knn(m.row(i), 1).unwrap();
            assert_eq!(index.user_id(got[0].id), ids[i]);
            assert!(got[0].dist <= 1e-6);
        }
    }
    let o = m3_cmd(&["verify", d]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// An index keeps answering from the generation it opened while a writer commits more (reopen
/// to see them); one opened afterwards sees them.
#[test]
fn an_open_index_keeps_the_generation_it_opened() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_of(Metric::L2, tmp.path());
    let mut rng = ChaCha8Rng::seed_from_u64(51);
    let queries: Vec<Vec<f32>> = (0..6).map(|_| vector(&mut rng)).collect();
    let mut w = IndexWriter::open(&dir).unwrap();
    let mut m1 = Model::base();
    let first: Vec<u64> = (0..30).map(|i| 1 << 50 | i).collect();
    let vs: Vec<f32> = (0..30).flat_map(|_| vector(&mut rng)).collect();
    let v = Matrix::from_vec(vs, DIM).unwrap();
    w.insert(&first, v.view()).unwrap();
    w.delete(&base_ids()[..30]);
    w.commit().unwrap();
    for (id, x) in first.iter().zip(v.view().iter_rows()) {
        m1.live.insert(*id, x.to_vec());
    }
    for id in &base_ids()[..30] {
        m1.live.remove(id);
    }
    let old = open(&dir);
    let mut m2 = m1.clone();
    let second: Vec<u64> = (0..30).map(|i| 1 << 51 | i).collect();
    let vs: Vec<f32> = (0..30).flat_map(|_| vector(&mut rng)).collect();
    let v = Matrix::from_vec(vs, DIM).unwrap();
    w.insert(&second, v.view()).unwrap();
    w.delete(&first);
    assert_eq!(w.commit().unwrap(), 2);
    for (id, x) in second.iter().zip(v.view().iter_rows()) {
        m2.live.insert(*id, x.to_vec());
    }
    for id in &first {
        m2.live.remove(id);
    }
    assert_eq!(old.live_info().generation, 1);
    check_index(&old, Metric::L2, &m1, &queries);
    check_against_model(&dir, Metric::L2, &m2, &queries);
}

/// Searcher threads query a [`LiveIndex`] while a writer commits and refreshes: every answer
/// comes from exactly one generation (the one the query took at its start), checked against a
/// brute-force model of that generation: exact k-NN equals it, approximate results are live
/// in it at their live distance. Each generation is searched by every thread before the next
/// commit (a channel per thread says so), and queries of a generation run while the next one
/// is being committed.
#[test]
fn concurrent_searchers_see_whole_generations() {
    use std::sync::mpsc;
    const GENERATIONS: u64 = 6;
    const THREADS: usize = 3;
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_of(Metric::L2, tmp.path());
    let mut rng = ChaCha8Rng::seed_from_u64(77);
    let queries: Vec<Vec<f32>> = (0..4).map(|_| vector(&mut rng)).collect();
    // The batches and each generation's model, fixed before any thread starts.
    let mut models = vec![Model::base()];
    let mut batches = Vec::new();
    let mut next_id = 1u64 << 40;
    for g in 0..GENERATIONS {
        let mut m = models.last().unwrap().clone();
        let ids: Vec<u64> = (0..20)
            .map(|i| {
                // Some upserts of live ids, the rest new.
                if i % 5 == 0 {
                    *m.live
                        .keys()
                        .nth((g as usize * 7 + i) % m.live.len())
                        .unwrap()
                } else {
                    next_id += 1;
                    next_id
                }
            })
            .collect();
        let vs: Vec<f32> = (0..20).flat_map(|_| vector(&mut rng)).collect();
        let vectors = Matrix::from_vec(vs, DIM).unwrap();
        for (id, v) in ids.iter().zip(vectors.view().iter_rows()) {
            m.live.insert(*id, v.to_vec());
        }
        let dead: Vec<u64> = m
            .live
            .keys()
            .copied()
            .skip(g as usize * 3)
            .step_by(25)
            .collect();
        for id in &dead {
            m.live.remove(id);
        }
        batches.push((ids, vectors, dead));
        models.push(m);
    }
    let want: Vec<Vec<Vec<(u64, f32)>>> = models
        .iter()
        .map(|m| queries.iter().map(|q| m.knn(Metric::L2, q, 5)).collect())
        .collect();
    let shared = LiveIndex::new(open(&dir));
    let (seen_tx, seen_rx) = mpsc::channel::<(usize, u64)>();
    let start = std::sync::Barrier::new(THREADS + 1);
    let answers = std::thread::scope(|s| {
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (shared, seen_tx, start) = (&shared, seen_tx.clone(), &start);
                let (models, want, queries) = (&models, &want, &queries);
                s.spawn(move || {
                    start.wait();
                    let mut last = None;
                    let mut checked = 0u64;
                    loop {
                        // One generation for the whole query.
                        let index = shared.current();
                        let g = index.live_info().generation;
                        assert!(last.is_none_or(|l| l <= g), "generation went back");
                        let qi = (checked as usize + t) % queries.len();
                        let mut exact = ExactSearcher::new(&index);
                        let (got, _) = exact.knn(&queries[qi], 5).unwrap();
                        let got: Vec<(u64, f32)> =
                            got.iter().map(|n| (index.user_id(n.id), n.dist)).collect();
                        let w = &want[g as usize][qi];
                        assert_eq!(got.len(), w.len());
                        for (a, b) in got.iter().zip(w) {
                            assert!(
                                (a.1 - b.1).abs() <= 1e-4 * b.1.abs().max(1.0),
                                "generation {g} query {qi}: {got:?} vs {w:?}"
                            );
                        }
                        let mut params = SearchParams::new(5);
                        params.nprobe = 4;
                        let (approx, _) = Searcher::new(&index)
                            .search(qi, &queries[qi], &params)
                            .unwrap();
                        for n in &approx {
                            let id = index.user_id(n.id);
                            let v = models[g as usize].live.get(&id).unwrap_or_else(|| {
                                panic!("generation {g}: {id} is not live in it")
                            });
                            let d = Model::dist(Metric::L2, &queries[qi], v);
                            assert!((n.dist - d).abs() <= 1e-4 * d.max(1.0));
                        }
                        checked += 1;
                        if last != Some(g) {
                            seen_tx.send((t, g)).unwrap();
                            last = Some(g);
                        }
                        if g == GENERATIONS {
                            return checked;
                        }
                    }
                })
            })
            .collect();
        drop(seen_tx);
        let mut writer = IndexWriter::open(&dir).unwrap();
        start.wait();
        for (g, (ids, vectors, dead)) in batches.iter().enumerate() {
            // Every thread has searched generation g before g + 1 is committed.
            let mut waiting: std::collections::BTreeSet<usize> = (0..THREADS).collect();
            while !waiting.is_empty() {
                let (t, seen) = seen_rx.recv().unwrap();
                if seen == g as u64 {
                    waiting.remove(&t);
                }
            }
            writer.insert(ids, vectors.view()).unwrap();
            writer.delete(dead);
            assert_eq!(writer.commit().unwrap(), g as u64 + 1);
            assert_eq!(shared.refresh().unwrap(), g as u64 + 1);
        }
        threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect::<Vec<u64>>()
    });
    assert!(answers.iter().all(|&n| n > GENERATIONS));
    // A generation held across refreshes keeps answering as itself; the latest is the model's.
    check_index(
        &shared.current(),
        Metric::L2,
        &models[GENERATIONS as usize],
        &queries,
    );
    check_against_model(&dir, Metric::L2, &models[GENERATIONS as usize], &queries);
}

/// `m3::update::compact` folds the log and the delta into new published files: exact search
/// equals the model afterwards, `wal.m3` and `delta.m3` are gone, `m3 verify` passes; a
/// generation held across the compaction keeps answering as itself (its files stay open); a
/// `LiveIndex` refresh installs the compacted index, and updates go on on top of it.
#[test]
fn compact_folds_the_updates_into_the_published_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_of(Metric::L2, tmp.path());
    let mut rng = ChaCha8Rng::seed_from_u64(61);
    let queries: Vec<Vec<f32>> = (0..6).map(|_| vector(&mut rng)).collect();
    let mut model = Model::base();
    let mut w = IndexWriter::open(&dir).unwrap();
    let new: Vec<u64> = (0..60)
        .map(|i| 1 << 45 | i)
        .chain(base_ids()[..20].iter().copied())
        .collect();
    let vs: Vec<f32> = (0..new.len()).flat_map(|_| vector(&mut rng)).collect();
    let v = Matrix::from_vec(vs, DIM).unwrap();
    w.insert(&new, v.view()).unwrap();
    w.delete(&base_ids()[100..150]);
    w.delete(&new[..5]);
    w.commit().unwrap();
    for (id, x) in new.iter().zip(v.view().iter_rows()) {
        model.live.insert(*id, x.to_vec());
    }
    for id in base_ids()[100..150].iter().chain(&new[..5]) {
        model.live.remove(id);
    }
    drop(w);
    let shared = LiveIndex::new(open(&dir));
    let held = shared.current();
    let pool = pool();
    let r = m3::update::compact(&dir, pool).unwrap();
    assert_eq!(r.live_vectors, model.live.len() as u64);
    assert_eq!(r.generation, 1);
    assert!(!dir.join(WAL_FILE).exists() && !dir.join("delta.m3").exists());
    check_against_model(&dir, Metric::L2, &model, &queries);
    m3::verify(&dir).unwrap();
    assert_eq!(m3::recover_index_dir(&dir).unwrap().removed.len(), 0);
    // The held generation answers from its open files.
    check_index(&held, Metric::L2, &model, &queries);
    assert_eq!(shared.refresh().unwrap(), 0);
    check_index(&shared.current(), Metric::L2, &model, &queries);
    // Updates on top of the compacted index.
    let mut w = IndexWriter::open(&dir).unwrap();
    let more: Vec<u64> = (0..10).map(|i| 1 << 46 | i).collect();
    let vs: Vec<f32> = (0..10).flat_map(|_| vector(&mut rng)).collect();
    let v = Matrix::from_vec(vs, DIM).unwrap();
    w.insert(&more, v.view()).unwrap();
    w.delete(&new[10..12]);
    assert_eq!(w.commit().unwrap(), 1);
    for (id, x) in more.iter().zip(v.view().iter_rows()) {
        model.live.insert(*id, x.to_vec());
    }
    for id in &new[10..12] {
        model.live.remove(id);
    }
    assert_eq!(shared.refresh().unwrap(), 1);
    check_index(&shared.current(), Metric::L2, &model, &queries);
    check_against_model(&dir, Metric::L2, &model, &queries);
}

/// An index built with training queries compacts too: its query anchors, edges and hints are
/// trained again from the training queries `hints.m3` stores (same counts), and exact search
/// equals the model afterwards. Without hints (`--hint-depth 0`) it is refused, naming why.
#[test]
fn compact_rebuilds_the_query_routing_from_the_stored_training_queries() {
    let tmp = tempfile::tempdir().unwrap();
    let base_path = tmp.path().join("base.fbin");
    write_matrix(&base_path, base().view()).unwrap();
    let ids = tmp.path().join("ids.u64bin");
    write_user_ids(&ids, &base_ids()).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(83);
    let train: Vec<f32> = (0..200).flat_map(|_| vector(&mut rng)).collect();
    let train_path = tmp.path().join("train.fbin");
    write_matrix(&train_path, Matrix::from_vec(train, DIM).unwrap().view()).unwrap();
    let build = |out: &Path, hint_depth: usize| {
        let mut p = BuildParams::new(base_path.clone(), Metric::InnerProduct, out.to_path_buf());
        p.clusters.target_size = 40;
        p.pq.subspaces = Some(4);
        p.pq.iters = 3;
        p.graph.max_degree = 8;
        p.graph.candidates = 16;
        p.seed = 9;
        p.ids = Some(ids.clone());
        p.train_queries = Some(train_path.clone());
        p.routing.hint_depth = hint_depth;
        build_index(&p, pool(), &Silent).unwrap();
    };
    let dir = tmp.path().join("with-hints");
    build(&dir, 20);
    let before = open(&dir);
    let (anchors, hints) = (before.n_query_anchors(), before.n_hint_queries());
    assert!(
        anchors > 0 && hints == 200,
        "{anchors} anchors, {hints} hints"
    );
    drop(before);
    let mut model = Model::base();
    let mut w = IndexWriter::open(&dir).unwrap();
    let new: Vec<u64> = (0..30).map(|i| 1 << 44 | i).collect();
    let v = Matrix::from_vec((0..30).flat_map(|_| vector(&mut rng)).collect(), DIM).unwrap();
    w.insert(&new, v.view()).unwrap();
    w.delete(&base_ids()[..40]);
    w.commit().unwrap();
    drop(w);
    for (id, x) in new.iter().zip(v.view().iter_rows()) {
        model.live.insert(*id, x.to_vec());
    }
    for id in &base_ids()[..40] {
        model.live.remove(id);
    }
    let r = m3::update::compact(&dir, pool()).unwrap();
    assert_eq!(r.live_vectors, model.live.len() as u64);
    let after = open(&dir);
    assert_eq!(after.n_query_anchors(), anchors);
    assert_eq!(after.n_hint_queries(), hints);
    assert_eq!(after.live_vectors(), model.live.len() as u64);
    drop(after);
    let queries: Vec<Vec<f32>> = (0..6).map(|_| vector(&mut rng)).collect();
    check_against_model(&dir, Metric::InnerProduct, &model, &queries);
    m3::verify(&dir).unwrap();

    let bare = tmp.path().join("without-hints");
    build(&bare, 0);
    let e = m3::update::compact(&bare, pool()).unwrap_err();
    assert!(matches!(e, UpdateError::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("--hint-depth 0"), "{e}");
}

/// `m3 delete`, `m3 compact` and `m3 merge` (per cluster, decision 0012) killed with SIGKILL
/// at random points: after recovery (`recover_index_dir`, what every `m3` command runs first)
/// the index opens and verifies, every delete whose command exited 0 is in, a killed delete
/// is wholly in or wholly out, and exact search equals the model (so no compaction or merge
/// lost or resurrected anything, the inserts a merge keeps in the log included).
#[test]
fn sigkill_during_delete_and_compact_keeps_every_acknowledged_write() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_of(Metric::L2, tmp.path());
    let d = dir.to_str().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(43);
    let queries: Vec<Vec<f32>> = (0..4).map(|_| vector(&mut rng)).collect();
    let mut model = Model::base();
    // Some inserts first, so that there is a delta to fold.
    let mut w = IndexWriter::open(&dir).unwrap();
    let new: Vec<u64> = (0..100).map(|i| 1 << 47 | i).collect();
    let vs: Vec<f32> = (0..100).flat_map(|_| vector(&mut rng)).collect();
    let v = Matrix::from_vec(vs, DIM).unwrap();
    w.insert(&new, v.view()).unwrap();
    w.commit().unwrap();
    drop(w);
    for (id, x) in new.iter().zip(v.view().iter_rows()) {
        model.live.insert(*id, x.to_vec());
    }
    let mut full_us = [0u64; 3];
    let (mut killed, mut acked) = (0, 0);
    for round in 0..12usize {
        // 0: delete, 1: compact, 2: merge.
        let kind = [0usize, 1, 0, 2][round % 4];
        let compact = kind != 0;
        let ids: Vec<u64> = model
            .live
            .keys()
            .copied()
            .skip(round * 7)
            .step_by(13)
            .take(12)
            .collect();
        let ipath = tmp.path().join(format!("d{round}.u64bin"));
        write_user_ids(&ipath, &ids).unwrap();
        let args: Vec<&str> = if kind == 1 {
            vec!["compact", "--index", d, "--threads", "1"]
        } else if kind == 2 {
            vec!["merge", "--index", d, "--change-fraction", "0.3"]
        } else {
            vec!["delete", "--index", d, "--ids", ipath.to_str().unwrap()]
        };
        let started = std::time::Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_m3"))
            .args(&args)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let status = if round < 2 || round == 3 {
            // The first of each runs to completion: how long it takes here.
            let s = child.wait().unwrap();
            full_us[kind] = started.elapsed().as_micros() as u64;
            assert!(s.success(), "round {round}: {args:?} failed");
            s
        } else {
            // The delay only picks the point of the kill (some land after the exit).
            let full = full_us[kind].max(1000);
            std::thread::sleep(std::time::Duration::from_micros(
                rng.random_range(full / 5..full),
            ));
            child.kill().unwrap();
            child.wait().unwrap()
        };
        if status.success() {
            acked += 1
        } else {
            killed += 1
        }
        m3::recover_index_dir(&dir).unwrap();
        let w = IndexWriter::open(&dir).unwrap();
        if !compact {
            let gone = ids.iter().filter(|&&id| !w.contains(id)).count();
            assert!(
                gone == ids.len() || (gone == 0 && !status.success()),
                "round {round}: {gone} of {} deleted (exit {status:?})",
                ids.len()
            );
            if gone == ids.len() {
                for id in &ids {
                    model.live.remove(id);
                }
            }
        }
        assert_eq!(w.live_vectors(), model.live.len() as u64, "round {round}");
        drop(w);
        check_against_model(&dir, Metric::L2, &model, &queries);
        let o = m3_cmd(&["verify", d]);
        assert!(
            o.status.success(),
            "round {round}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    eprintln!("{acked} commands ran to the end, {killed} were killed");
    assert!(killed > 0, "nothing was killed");
}

/// The per-cluster merge (decision 0012): the chosen clusters are rewritten into a new data
/// segment (format 2.0), the others keep their records; exact search equals the model, the
/// approximate search returns only live ids at their live distances, `verify` passes; a
/// generation held across the merge keeps answering as itself; the inserts of clusters not
/// merged stay in the new log; a merge that empties `data.m3` of live records drops it (its
/// segment is no longer listed); updates and merges go on on top.
#[test]
fn merge_rewrites_chosen_clusters_into_a_new_segment() {
    use m3::update::{MergePolicy, merge, merge_clusters};
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_of(Metric::L2, tmp.path());
    let mut rng = ChaCha8Rng::seed_from_u64(71);
    let queries: Vec<Vec<f32>> = (0..8).map(|_| vector(&mut rng)).collect();
    let mut model = Model::base();
    let mut w = IndexWriter::open(&dir).unwrap();
    let new: Vec<u64> = (0..80)
        .map(|i| 1 << 45 | i)
        .chain(base_ids()[..30].iter().copied())
        .collect();
    let vs: Vec<f32> = (0..new.len()).flat_map(|_| vector(&mut rng)).collect();
    let v = Matrix::from_vec(vs, DIM).unwrap();
    w.insert(&new, v.view()).unwrap();
    w.delete(&base_ids()[200..260]);
    w.commit().unwrap();
    for (id, x) in new.iter().zip(v.view().iter_rows()) {
        model.live.insert(*id, x.to_vec());
    }
    for id in &base_ids()[200..260] {
        model.live.remove(id);
    }
    drop(w);
    let shared = LiveIndex::new(open(&dir));
    let held = shared.current();
    let n_clusters = held.n_clusters() as u32;
    // Two clusters only: the others keep their records in data.m3, their inserts in the log.
    let r = merge_clusters(&dir, &[0, n_clusters - 1]).unwrap();
    assert_eq!(r.clusters, 2);
    assert!(r.records_written > 0 && r.reinserted > 0, "{r:?}");
    assert_eq!(r.segments_dropped, 0);
    let index = open(&dir);
    assert_eq!(index.meta().flags & 32, 32, "a merged index is format 2.0");
    assert_eq!(index.segment_names(), vec!["data.m3", "seg-1.m3"]);
    assert_eq!(index.live_vectors(), model.live.len() as u64);
    check_against_model(&dir, Metric::L2, &model, &queries);
    m3::verify(&dir).unwrap();
    check_index(&held, Metric::L2, &model, &queries);
    shared.refresh().unwrap();
    check_index(&shared.current(), Metric::L2, &model, &queries);
    // Every cluster past the policy, and data.m3 below its live fraction: all merged out.
    let policy = MergePolicy {
        change_fraction: 0.0,
        segment_live_fraction: 1.0,
        max_cluster_records: None,
    };
    let r = merge(&dir, &policy).unwrap().expect("something to merge");
    assert_eq!(r.reinserted, 0);
    assert!(r.segments_dropped >= 1, "{r:?}");
    assert!(
        !dir.join("data.m3").exists(),
        "data.m3 holds no live record any more"
    );
    check_against_model(&dir, Metric::L2, &model, &queries);
    m3::verify(&dir).unwrap();
    check_index(&held, Metric::L2, &model, &queries);
    shared.refresh().unwrap();
    check_index(&shared.current(), Metric::L2, &model, &queries);
    // Updates on top of the merged index, then another merge.
    let mut w = IndexWriter::open(&dir).unwrap();
    let more: Vec<u64> = (0..30).map(|i| 1 << 46 | i).collect();
    let vs: Vec<f32> = (0..30).flat_map(|_| vector(&mut rng)).collect();
    let v = Matrix::from_vec(vs, DIM).unwrap();
    w.insert(&more, v.view()).unwrap();
    w.delete(&new[..10]);
    w.commit().unwrap();
    for (id, x) in more.iter().zip(v.view().iter_rows()) {
        model.live.insert(*id, x.to_vec());
    }
    for id in &new[..10] {
        model.live.remove(id);
    }
    drop(w);
    check_against_model(&dir, Metric::L2, &model, &queries);
    let policy = MergePolicy {
        change_fraction: 0.0,
        ..MergePolicy::default()
    };
    assert!(merge(&dir, &policy).unwrap().is_some());
    check_against_model(&dir, Metric::L2, &model, &queries);
    m3::verify(&dir).unwrap();
    assert_eq!(m3::recover_index_dir(&dir).unwrap().removed.len(), 0);
}

/// Searcher threads query a [`LiveIndex`] while the main thread alternately commits a batch
/// and merges per cluster (decision 0012), refreshing after each: every answer comes from
/// exactly one published state (the `Arc<Index>` the query took), checked against the model
/// of that state (exact k-NN equal, approximate results live at their live distance), so a
/// merge that rewrites and hard-links segments under running searches shows no torn state.
/// Each state is searched by every thread before the next step (a channel says so): merges
/// run while the previous state is being searched.
#[test]
fn concurrent_searchers_see_no_torn_state_during_merges() {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, mpsc};
    const STEPS: usize = 4;
    const THREADS: usize = 2;
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_of(Metric::L2, tmp.path());
    let mut rng = ChaCha8Rng::seed_from_u64(79);
    let queries: Vec<Vec<f32>> = (0..4).map(|_| vector(&mut rng)).collect();
    let mut models = vec![Model::base()];
    let mut batches = Vec::new();
    for s in 0..STEPS {
        let mut m = models.last().unwrap().clone();
        let ids: Vec<u64> = (0..40).map(|i| 1 << 41 | (s as u64 * 100 + i)).collect();
        let vs: Vec<f32> = (0..40).flat_map(|_| vector(&mut rng)).collect();
        let vectors = Matrix::from_vec(vs, DIM).unwrap();
        for (id, v) in ids.iter().zip(vectors.view().iter_rows()) {
            m.live.insert(*id, v.to_vec());
        }
        let dead: Vec<u64> = m.live.keys().copied().skip(s).step_by(9).collect();
        for id in &dead {
            m.live.remove(id);
        }
        batches.push((ids, vectors, dead));
        models.push(m);
    }
    // State 2s: model s after its commit; state 2s + 1: the same model after a merge.
    let n_states = 2 * STEPS + 1;
    let model_of = |state: usize| state.div_ceil(2);
    let shared = LiveIndex::new(open(&dir));
    let registry: Mutex<HashMap<usize, usize>> = Mutex::new(HashMap::new());
    let mut held = vec![shared.current()];
    registry
        .lock()
        .unwrap()
        .insert(Arc::as_ptr(&held[0]) as usize, 0);
    let (seen_tx, seen_rx) = mpsc::channel::<(usize, usize)>();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (shared, registry, seen_tx) = (&shared, &registry, seen_tx.clone());
            let (models, queries) = (&models, &queries);
            s.spawn(move || {
                let (mut last, mut checked) = (None, 0usize);
                loop {
                    let index = shared.current();
                    // The main thread registers a state right after installing it.
                    let state = loop {
                        let key = Arc::as_ptr(&index) as usize;
                        if let Some(&st) = registry.lock().unwrap().get(&key) {
                            break st;
                        }
                        std::thread::yield_now();
                    };
                    let model = &models[model_of(state)];
                    let qi = (checked + t) % queries.len();
                    check_one(&index, model, &queries[qi], state);
                    checked += 1;
                    if last != Some(state) {
                        seen_tx.send((t, state)).unwrap();
                        last = Some(state);
                    }
                    if state == n_states - 1 {
                        return;
                    }
                }
            });
        }
        drop(seen_tx);
        let policy = m3::update::MergePolicy {
            change_fraction: 0.0,
            ..Default::default()
        };
        for state in 0..n_states - 1 {
            let mut waiting: std::collections::BTreeSet<usize> = (0..THREADS).collect();
            while !waiting.is_empty() {
                let (t, seen) = seen_rx.recv().unwrap();
                if seen == state {
                    waiting.remove(&t);
                }
            }
            if state % 2 == 0 {
                let (ids, vectors, dead) = &batches[state / 2];
                let mut w = IndexWriter::open(&dir).unwrap();
                w.insert(ids, vectors.view()).unwrap();
                w.delete(dead);
                w.commit().unwrap();
            } else {
                m3::update::merge(&dir, &policy).unwrap().expect("a merge");
            }
            shared.refresh().unwrap();
            let now = shared.current();
            registry
                .lock()
                .unwrap()
                .insert(Arc::as_ptr(&now) as usize, state + 1);
            held.push(now); // kept alive: its address is never reused meanwhile
        }
    });
    // Every state held across the later merges still answers as itself.
    for (state, index) in held.iter().enumerate() {
        for q in &queries {
            check_one(index, &models[model_of(state)], q, state);
        }
    }
    m3::verify(&dir).unwrap();
}

/// Exact 5-NN of `q` on `index` equal to the model's; approximate results live in it.
fn check_one(index: &Index, model: &Model, q: &[f32], state: usize) {
    let (got, _) = ExactSearcher::new(index).knn(q, 5).unwrap();
    let want = model.knn(Metric::L2, q, 5);
    assert_eq!(got.len(), want.len(), "state {state}");
    for (a, b) in got.iter().zip(&want) {
        assert!(
            (a.dist - b.1).abs() <= 1e-4 * b.1.abs().max(1.0),
            "state {state}: {a:?} vs {b:?}"
        );
    }
    let mut params = SearchParams::new(5);
    params.nprobe = 4;
    let (approx, _) = Searcher::new(index).search(0, q, &params).unwrap();
    for n in &approx {
        let id = index.user_id(n.id);
        let v = model
            .live
            .get(&id)
            .unwrap_or_else(|| panic!("state {state}: {id} is not live in it"));
        let d = Model::dist(Metric::L2, q, v);
        assert!((n.dist - d).abs() <= 1e-4 * d.max(1.0), "state {state}");
    }
}

/// LIRE's split (decision 0012): a cluster that a merge finds past `max_cluster_records` is
/// split in two by 2-means; the index gets one more cluster, every live record is still
/// found by exact search (the model), every inserted vector is its own nearest by exact
/// search, `verify` passes, and approximate search returns only live ids.
#[test]
fn merge_splits_a_cluster_past_the_cap() {
    let tmp = tempfile::tempdir().unwrap();
    check_split_past_the_cap(&copy_of(Metric::L2, tmp.path()));
}

/// The same on an index with two-level routing (`coarse.m3`): the new cluster joins its
/// parent's coarse group, the index opens, routes in two levels and answers as the model.
#[test]
fn merge_splits_a_cluster_on_two_level_routing() {
    let tmp = tempfile::tempdir().unwrap();
    let base_path = tmp.path().join("base.fbin");
    write_matrix(&base_path, base().view()).unwrap();
    let ids = tmp.path().join("ids.u64bin");
    write_user_ids(&ids, &base_ids()).unwrap();
    let dir = tmp.path().join("idx");
    let mut p = BuildParams::new(base_path, Metric::L2, dir.clone());
    p.clusters.target_size = 40;
    p.clusters.nearest.two_level_min_k = 2;
    p.pq.subspaces = Some(4);
    p.pq.iters = 3;
    p.graph.max_degree = 8;
    p.graph.candidates = 16;
    p.seed = 9;
    p.ids = Some(ids);
    build_index(&p, pool(), &Silent).unwrap();
    assert!(dir.join("coarse.m3").exists());
    check_split_past_the_cap(&dir);
    let mut index = open(&dir);
    index.set_route_min_k(2);
    assert!(index.routes_in_two_levels());
}

fn check_split_past_the_cap(dir: &Path) {
    use m3::update::{MergePolicy, merge};
    let dir = dir.to_path_buf();
    let mut rng = ChaCha8Rng::seed_from_u64(83);
    let mut model = Model::base();
    let before = open(&dir);
    let n_clusters = before.n_clusters();
    let biggest = before
        .cluster_churn()
        .iter()
        .map(|c| c.records)
        .max()
        .unwrap();
    drop(before);
    // Many inserts close to one base vector: they all go to its cluster.
    let centre = base().row(3).to_vec();
    let ids: Vec<u64> = (0..150).map(|i| 1 << 44 | i).collect();
    let vs: Vec<f32> = (0..150)
        .flat_map(|_| {
            let noise = vector(&mut rng);
            centre
                .iter()
                .zip(noise)
                .map(|(c, n)| c + 0.05 * n)
                .collect::<Vec<f32>>()
        })
        .collect();
    let v = Matrix::from_vec(vs, DIM).unwrap();
    let mut w = IndexWriter::open(&dir).unwrap();
    w.insert(&ids, v.view()).unwrap();
    w.commit().unwrap();
    drop(w);
    for (id, x) in ids.iter().zip(v.view().iter_rows()) {
        model.live.insert(*id, x.to_vec());
    }
    let policy = MergePolicy {
        change_fraction: 0.5,
        segment_live_fraction: 0.0,
        max_cluster_records: Some(biggest),
    };
    let r = merge(&dir, &policy)
        .unwrap()
        .expect("the grown cluster is merged");
    assert!(r.clusters >= 1, "{r:?}");
    let index = open(&dir);
    assert!(
        index.n_clusters() > n_clusters,
        "{} clusters, {n_clusters} before: nothing was split",
        index.n_clusters()
    );
    // LIRE's reassignment: the split halves and the split cluster's nearest clusters were
    // merged together, and none of their members has a strictly nearer centroid among them.
    let involved = &r.lire_clusters;
    assert!(involved.len() >= 3, "{r:?}");
    assert!(involved.contains(&(n_clusters as u32)), "{r:?}");
    let mut members = 0;
    for &c in involved {
        for rec in index.cluster_records(c as usize).unwrap() {
            let own = distance::l2_sq(&rec.vector, index.centroid(c as usize));
            for &o in involved {
                let d = distance::l2_sq(&rec.vector, index.centroid(o as usize));
                assert!(
                    d >= own - 1e-5 * own.max(1.0),
                    "vid {} in cluster {c} is nearer to cluster {o}: {d} < {own}",
                    rec.vid
                );
            }
            members += 1;
        }
    }
    assert!(members > 150, "{members} members in the involved clusters");
    assert!(
        index
            .cluster_churn()
            .iter()
            .all(|c| c.records <= 150 + biggest)
    );
    let mut exact = ExactSearcher::new(&index);
    for (i, id) in ids.iter().enumerate().step_by(7) {
        let (got, _) = exact.knn(v.row(i), 1).unwrap();
        assert_eq!(index.user_id(got[0].id), *id);
    }
    drop(exact);
    drop(index);
    let queries: Vec<Vec<f32>> = (0..6)
        .map(|i| {
            if i % 2 == 0 {
                centre.clone()
            } else {
                vector(&mut rng)
            }
        })
        .collect();
    check_against_model(&dir, Metric::L2, &model, &queries);
    m3::verify(&dir).unwrap();
}

/// Recall@5 of approximate search at fixed knobs (one probed cluster, two rounds along the
/// neighbour lists) against the model's exact answers.
fn recall_at_fixed_knobs(index: &Index, model: &Model, queries: &[Vec<f32>]) -> f64 {
    let mut s = Searcher::new(index);
    let mut params = SearchParams::new(5);
    params.nprobe = 1;
    params.expand_rounds = 2;
    let mut hits = 0usize;
    for (i, q) in queries.iter().enumerate() {
        let want: Vec<u64> = model.knn(Metric::L2, q, 5).iter().map(|w| w.0).collect();
        let (got, _) = s.search(i, q, &params).unwrap();
        hits += got
            .iter()
            .filter(|n| want.contains(&index.user_id(n.id)))
            .count();
    }
    hits as f64 / (5 * queries.len()) as f64
}

/// A merge rewrites the neighbour lists of every member of the merged clusters with the
/// build's cluster-local code, inserts included: after inserting many vectors and merging,
/// every merged record (inserts too) has a neighbour list naming live records of the index,
/// and recall at fixed knobs (one cluster probed, two neighbour-list rounds) is at least the
/// unmerged index's.
#[test]
fn merge_gives_every_merged_insert_a_neighbour_list() {
    use m3::update::merge_all;
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_of(Metric::L2, tmp.path());
    let mut rng = ChaCha8Rng::seed_from_u64(91);
    let mut model = Model::base();
    let ids: Vec<u64> = (0..600).map(|i| 1 << 43 | i).collect();
    let vs: Vec<f32> = (0..ids.len()).flat_map(|_| vector(&mut rng)).collect();
    let v = Matrix::from_vec(vs, DIM).unwrap();
    let mut w = IndexWriter::open(&dir).unwrap();
    w.insert(&ids, v.view()).unwrap();
    w.commit().unwrap();
    drop(w);
    for (id, x) in ids.iter().zip(v.view().iter_rows()) {
        model.live.insert(*id, x.to_vec());
    }
    let queries: Vec<Vec<f32>> = (0..200).map(|_| vector(&mut rng)).collect();
    let before = recall_at_fixed_knobs(&open(&dir), &model, &queries);
    let r = merge_all(&dir, None).unwrap().expect("a merge");
    let index = open(&dir);
    let records: u64 = index
        .cluster_churn()
        .iter()
        .map(|c| u64::from(c.records))
        .sum();
    assert_eq!(r.records_written, records);
    assert!(records >= model.live.len() as u64);
    let inserted: std::collections::HashSet<u64> = ids.iter().copied().collect();
    let n_records = index.meta().n_records as u32;
    let (mut merged_inserts, mut merged_records) = (std::collections::HashSet::new(), 0usize);
    for c in 0..index.n_clusters() {
        let recs = index.cluster_records(c).unwrap();
        for rec in &recs {
            if inserted.contains(&index.user_id(rec.vid)) {
                merged_inserts.insert(rec.vid);
                merged_records += 1;
            }
            if recs.len() > 1 {
                assert!(
                    !rec.neighbours.is_empty(),
                    "record {} of cluster {c} ({} records) has no neighbour list",
                    rec.record,
                    recs.len()
                );
            }
            assert!(
                rec.neighbours
                    .iter()
                    .all(|&n| n < n_records && n != rec.record)
            );
        }
    }
    assert_eq!(merged_inserts.len(), ids.len(), "every insert is merged");
    // The index is built with one spill copy: so are the inserts (decision 0014).
    assert!(
        merged_records > ids.len() && merged_records <= 2 * ids.len(),
        "{merged_records} records of {} inserts",
        ids.len()
    );
    let after = recall_at_fixed_knobs(&index, &model, &queries);
    assert!(
        after >= before,
        "recall@5 at fixed knobs {after} after the merge, {before} before"
    );
    check_against_model(&dir, Metric::L2, &model, &queries[..8]);
    m3::verify(&dir).unwrap();
}

/// Record numbers freed by a merge are taken again by later merges (first fit, a cluster's
/// own old range first), so repeated merges of the same clusters do not grow the per-record
/// files; a merge of every cluster numbers records from 0 and keeps no dead vid.
#[test]
fn merges_reuse_hole_record_numbers_and_drop_dead_vids() {
    use m3::update::{merge_all, merge_clusters};
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_of(Metric::L2, tmp.path());
    let mut rng = ChaCha8Rng::seed_from_u64(93);
    let mut model = Model::base();
    let queries: Vec<Vec<f32>> = (0..8).map(|_| vector(&mut rng)).collect();
    let n0 = open(&dir).meta().n_records;
    let biggest = open(&dir)
        .cluster_churn()
        .iter()
        .map(|c| u64::from(c.records))
        .max()
        .unwrap();
    for round in 0..6 {
        // Upsert 20 base vectors with their own vectors (they stay in their clusters).
        let at = (round * 20) % 400;
        let ids: Vec<u64> = base_ids()[at..at + 20].to_vec();
        let rows: Vec<f32> = (at..at + 20).flat_map(|r| base().row(r).to_vec()).collect();
        let mut w = IndexWriter::open(&dir).unwrap();
        w.insert(&ids, MatrixView::new(&rows, DIM).unwrap())
            .unwrap();
        w.commit().unwrap();
        drop(w);
        let index = open(&dir);
        let changed: Vec<u32> = index
            .cluster_churn()
            .iter()
            .enumerate()
            .filter(|(_, c)| c.inserts > 0 || c.dead > 0)
            .map(|(c, _)| c as u32)
            .take(2)
            .collect();
        drop(index);
        merge_clusters(&dir, &changed).unwrap();
        let index = open(&dir);
        assert!(
            index.meta().n_records <= n0 + 2 * biggest,
            "round {round}: {} record numbers, {n0} at the build",
            index.meta().n_records
        );
        drop(index);
        check_against_model(&dir, Metric::L2, &model, &queries);
        m3::verify(&dir).unwrap();
    }
    // Deletes, then a merge of everything: no hole, no dead vid.
    let mut w = IndexWriter::open(&dir).unwrap();
    w.delete(&base_ids()[300..340]);
    w.commit().unwrap();
    drop(w);
    for id in &base_ids()[300..340] {
        model.live.remove(id);
    }
    merge_all(&dir, None).unwrap().expect("a merge");
    let index = open(&dir);
    let records: u64 = index
        .cluster_churn()
        .iter()
        .map(|c| u64::from(c.records))
        .sum();
    assert_eq!(index.meta().n_records, records, "numbered from 0, no hole");
    assert_eq!(
        index.n_vectors(),
        model.live.len() as u64,
        "no dead vid kept"
    );
    drop(index);
    check_against_model(&dir, Metric::L2, &model, &queries);
    m3::verify(&dir).unwrap();
}

/// `sectors.m3` does not cover `delta.m3`: an inserted record damaged after the index was
/// opened (one flipped low mantissa bit: a slightly wrong distance, silently, before) is a
/// `Checksum` error naming `delta.m3` when a search reads it — exact and approximate — checked
/// against the CRC32C its log record holds. Before the damage the same searches find it.
#[test]
fn a_damaged_insert_read_by_a_search_is_a_checksum_error() {
    use m3::format::FormatError;
    use m3::search::SearchError;
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_of(Metric::L2, tmp.path());
    let mut rng = ChaCha8Rng::seed_from_u64(77);
    let ids: Vec<u64> = (0..20).map(|i| 1 << 40 | i).collect();
    // Far from the base (components around 10): each is its own nearest neighbour.
    let vs: Vec<f32> = (0..20)
        .flat_map(|_| vector(&mut rng).into_iter().map(|x| x + 10.0))
        .collect();
    let v = Matrix::from_vec(vs, DIM).unwrap();
    let mut w = IndexWriter::open(&dir).unwrap();
    w.insert(&ids, v.view()).unwrap();
    w.commit().unwrap();
    drop(w);
    let index = open(&dir);
    let target = v.view().row(7).to_vec();
    let mut exact = ExactSearcher::new(&index);
    let mut approx = Searcher::new(&index);
    let mut params = SearchParams::new(1);
    params.nprobe = 64;
    let (got, _) = exact.knn(&target, 1).unwrap();
    assert_eq!(index.user_id(got[0].id), ids[7]);
    let (got, _) = approx.search(0, &target, &params).unwrap();
    assert_eq!(index.user_id(got[0].id), ids[7]);
    // Find the record's vector in delta.m3 and flip the lowest bit of its first component.
    let delta = dir.join("delta.m3");
    let mut bytes = std::fs::read(&delta).unwrap();
    let needle: Vec<u8> = target.iter().flat_map(|x| x.to_le_bytes()).collect();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .expect("the inserted vector is in delta.m3");
    bytes[at] ^= 1;
    std::fs::write(&delta, &bytes).unwrap();
    let is_delta_checksum = |e: &SearchError| {
        matches!(e, SearchError::Format(FormatError::Checksum { path, what, .. })
            if *path == delta && what.contains("checked against wal.m3"))
    };
    let err = exact.knn(&target, 1).unwrap_err();
    assert!(is_delta_checksum(&err), "exact: {err:?}");
    let err = approx.search(0, &target, &params).unwrap_err();
    assert!(is_delta_checksum(&err), "approximate: {err:?}");
}

/// A merge prepared beside a writer (`update::prepare_merge` on a held generation, on another
/// thread) while the writer keeps committing inserts, upserts and deletes — of inserts the
/// merge carries, of records it rewrites and of new ids: `IndexWriter::publish_merge` carries
/// every one of them into the merged generation (counted), the published index answers as the
/// model and verifies, the returned writer holds the lock without a gap and keeps committing.
/// Before publication the index on disk is the writer's, whole. Two clusters, then all.
#[test]
fn a_merge_beside_the_writer_carries_the_commits_made_meanwhile() {
    use m3::update::prepare_merge;
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_of(Metric::L2, tmp.path());
    let mut rng = ChaCha8Rng::seed_from_u64(97);
    let queries: Vec<Vec<f32>> = (0..8).map(|_| vector(&mut rng)).collect();
    let mut model = Model::base();
    let mut w = IndexWriter::open(&dir).unwrap();
    let mut next_id = 1u64 << 46;
    let insert = |w: &mut IndexWriter, model: &mut Model, ids: &[u64], rng: &mut ChaCha8Rng| {
        let vs: Vec<f32> = ids.iter().flat_map(|_| vector(rng)).collect();
        let v = Matrix::from_vec(vs, DIM).unwrap();
        w.insert(ids, v.view()).unwrap();
        for (id, x) in ids.iter().zip(v.view().iter_rows()) {
            model.live.insert(*id, x.to_vec());
        }
    };
    for round in 0..2 {
        let fresh: Vec<u64> = (0..60).map(|i| next_id + i).collect();
        next_id += 60;
        insert(&mut w, &mut model, &fresh, &mut rng);
        w.delete(&base_ids()[100 + 50 * round..130 + 50 * round]);
        base_ids()[100 + 50 * round..130 + 50 * round]
            .iter()
            .for_each(|id| drop(model.live.remove(id)));
        w.commit().unwrap();
        let held = open(&dir);
        let clusters: Vec<u32> = match round {
            0 => vec![0, held.n_clusters() as u32 - 1],
            _ => (0..held.n_clusters() as u32).collect(),
        };
        let merging = std::thread::spawn(move || prepare_merge(&held, &clusters, None).unwrap());
        // Meanwhile: new ids, upserts of inserts (merged or carried) and of base vectors,
        // deletes of inserts and of base records; three commits.
        let mut carried = 0;
        for batch in 0..3u64 {
            let mut ids: Vec<u64> = (0..10).map(|i| next_id + i).collect();
            next_id += 10;
            ids.push(fresh[(batch * 7) as usize]);
            ids.push(base_ids()[300 + batch as usize]);
            insert(&mut w, &mut model, &ids, &mut rng);
            let dead = [fresh[40 + batch as usize], base_ids()[20 + batch as usize]];
            w.delete(&dead);
            dead.iter().for_each(|id| drop(model.live.remove(id)));
            carried += ids.len() + dead.len();
            w.commit().unwrap();
        }
        let mut prepared = merging.join().unwrap();
        assert_eq!(prepared.generation(), w.generation() - 3);
        // The merge thread catches up with the three commits, then one more is made.
        assert_eq!(prepared.catch_up(&open(&dir)).unwrap(), carried);
        assert_eq!(prepared.catch_up(&open(&dir)).unwrap(), 0);
        assert_eq!(prepared.generation(), w.generation());
        let late = [next_id, fresh[50]];
        next_id += 1;
        insert(&mut w, &mut model, &late, &mut rng);
        w.delete(&late[1..]);
        model.live.remove(&late[1]);
        carried += 3;
        w.commit().unwrap();
        check_against_model(&dir, Metric::L2, &model, &queries);
        let (report, mut w2) = w.publish_merge(prepared).unwrap();
        assert_eq!(report.carried, carried, "{report:?}");
        assert!(report.clusters >= 2, "{report:?}");
        check_against_model(&dir, Metric::L2, &model, &queries);
        m3::verify(&dir).unwrap();
        assert!(
            matches!(IndexWriter::open(&dir), Err(UpdateError::Locked { .. })),
            "the published index's writer lock passed to the returned writer"
        );
        let more: Vec<u64> = (0..5).map(|i| next_id + i).collect();
        next_id += 5;
        insert(&mut w2, &mut model, &more, &mut rng);
        w2.commit().unwrap();
        check_against_model(&dir, Metric::L2, &model, &queries);
        w = w2;
    }
    drop(w);
    m3::verify(&dir).unwrap();
    check_against_model(&dir, Metric::L2, &model, &queries);
}

/// A prepared merge dropped unpublished leaves the index as it was and removes its temporary
/// directory; `publish_merge` refuses (typed, nothing published) while operations are queued
/// and a merge prepared from another publication of the index.
#[test]
fn a_prepared_merge_is_refused_or_dropped_without_a_trace() {
    use m3::update::{merge_clusters, prepare_merge};
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_of(Metric::L2, tmp.path());
    let mut rng = ChaCha8Rng::seed_from_u64(98);
    let queries: Vec<Vec<f32>> = (0..6).map(|_| vector(&mut rng)).collect();
    let mut model = Model::base();
    let mut w = IndexWriter::open(&dir).unwrap();
    let ids: Vec<u64> = (0..40).map(|i| 1 << 47 | i).collect();
    let vs: Vec<f32> = ids.iter().flat_map(|_| vector(&mut rng)).collect();
    let v = Matrix::from_vec(vs, DIM).unwrap();
    w.insert(&ids, v.view()).unwrap();
    for (id, x) in ids.iter().zip(v.view().iter_rows()) {
        model.live.insert(*id, x.to_vec());
    }
    w.commit().unwrap();
    let tmp_dirs = || {
        std::fs::read_dir(tmp.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".tmp-")
            })
            .count()
    };
    let prepared = prepare_merge(&open(&dir), &[0, 1], None).unwrap();
    assert_eq!(tmp_dirs(), 1);
    drop(prepared);
    assert_eq!(
        tmp_dirs(),
        0,
        "the unpublished merge's directory is removed"
    );
    check_against_model(&dir, Metric::L2, &model, &queries);
    assert!(matches!(
        prepare_merge(&open(&dir), &[u32::MAX], None),
        Err(UpdateError::Input { .. })
    ));
    // Queued operations: refused, nothing published.
    let prepared = prepare_merge(&open(&dir), &[0, 1], None).unwrap();
    w.delete(&ids[..1]);
    let err = w.publish_merge(prepared).unwrap_err();
    assert!(matches!(err, UpdateError::Input { .. }), "{err}");
    assert_eq!(tmp_dirs(), 0);
    check_against_model(&dir, Metric::L2, &model, &queries);
    // A second merge of the index in this process while one is prepared: refused (they
    // would share the temporary directory); a merge prepared from another index: refused.
    let prepared = prepare_merge(&open(&dir), &[0, 1], None).unwrap();
    let staging = staging_of(&prepared);
    let err = merge_clusters(&dir, &[2]).unwrap_err();
    assert!(matches!(err, UpdateError::Busy { .. }), "{err}");
    let err = m3::update::compact(&dir, pool()).unwrap_err();
    assert!(matches!(err, UpdateError::Busy { .. }), "{err}");
    let other_tmp = tempfile::tempdir().unwrap();
    let other = copy_of(Metric::L2, other_tmp.path());
    let err = IndexWriter::open(&other)
        .unwrap()
        .publish_merge(prepared)
        .unwrap_err();
    assert!(matches!(err, UpdateError::Input { .. }), "{err}");
    assert!(!staging.exists());
    check_against_model(&dir, Metric::L2, &model, &queries);
    merge_clusters(&dir, &[2]).unwrap();
    check_against_model(&dir, Metric::L2, &model, &queries);
    m3::verify(&dir).unwrap();
}

/// The temporary directory of a prepared merge (from its `Debug`).
fn staging_of(p: &m3::update::PreparedMerge) -> PathBuf {
    let text = format!("{p:?}");
    let start = text.find("staging: \"").unwrap() + "staging: \"".len();
    let end = start + text[start..].find('"').unwrap();
    PathBuf::from(&text[start..end])
}

/// Recall@10 of approximate search (default knobs but `nprobe` 4) against the model's
/// brute force, over `queries`.
fn recall_at_10(index: &Index, metric: Metric, model: &Model, queries: &[Vec<f32>]) -> f64 {
    let mut s = Searcher::new(index);
    let mut params = SearchParams::new(10);
    params.nprobe = 4;
    let mut hit = 0;
    for (qi, q) in queries.iter().enumerate() {
        let want: Vec<u64> = model.knn(metric, q, 10).iter().map(|w| w.0).collect();
        let (got, _) = s.search(qi, q, &params).unwrap();
        hit += got
            .iter()
            .filter(|n| want.contains(&index.user_id(n.id)))
            .count();
    }
    hit as f64 / (10 * queries.len()) as f64
}

/// Inserts, upserts and deletes on a u8 or i8 index, committed and replayed, then a merge of
/// two chosen clusters, a merge of every cluster, more updates and a compaction: after each,
/// exact search equals the brute-force model, approximate search returns only live vectors at
/// their live distances and keeps a recall floor, `verify` passes, and the index keeps its
/// element type.
fn check_integer_updates(metric: Metric, elem: Elem) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_of_kind(metric, elem, tmp.path());
    let mut rng = ChaCha8Rng::seed_from_u64(41);
    let queries: Vec<Vec<f32>> = (0..40).map(|_| elem.vector(&mut rng)).collect();
    let mut model = Model::base_of(elem);
    let rows = |n: usize, rng: &mut ChaCha8Rng| {
        Matrix::from_vec((0..n).flat_map(|_| elem.vector(rng)).collect(), DIM).unwrap()
    };
    let mut w = IndexWriter::open(&dir).unwrap();
    assert_eq!(w.element_type(), elem.dtype());
    // 120 new vectors, 20 base ids upserted, 30 base ids deleted.
    let new_ids: Vec<u64> = (0..120).map(|i| 1 << 40 | i).collect();
    let new = rows(120, &mut rng);
    let up_ids = base_ids()[..20].to_vec();
    let up = rows(20, &mut rng);
    w.insert(&new_ids, new.view()).unwrap();
    w.insert(&up_ids, up.view()).unwrap();
    w.delete(&base_ids()[100..130]);
    assert_eq!(w.commit().unwrap(), 1);
    let put = new_ids.iter().zip(new.view().iter_rows());
    for (id, v) in put.chain(up_ids.iter().zip(up.view().iter_rows())) {
        model.live.insert(*id, v.to_vec());
    }
    for id in &base_ids()[100..130] {
        model.live.remove(id);
    }
    check_against_model(&dir, metric, &model, &queries);
    // Reopened, the writer replays; ten of the new ones deleted.
    drop(w);
    let mut w = IndexWriter::open(&dir).unwrap();
    assert_eq!((w.generation(), w.coded_again()), (1, 0));
    w.delete(&new_ids[..10]);
    assert_eq!(w.commit().unwrap(), 2);
    for id in &new_ids[..10] {
        model.live.remove(id);
    }
    drop(w);
    let index = open(&dir);
    check_index(&index, metric, &model, &queries);
    let before = recall_at_10(&index, metric, &model, &queries);
    if metric == Metric::L2 {
        // Each live inserted vector is its own nearest neighbour (no duplicates here).
        let mut s = Searcher::new(&index);
        let found = new_ids[10..]
            .iter()
            .zip(new.view().iter_rows().skip(10))
            .enumerate()
            .filter(|(i, (id, v))| {
                let (got, _) = s.search(*i, v, &SearchParams::new(1)).unwrap();
                index.user_id(got[0].id) == **id
            })
            .count();
        assert!(
            found >= 99,
            "{elem:?}: {found} of 110 inserts found as their own nearest"
        );
    }
    drop(index);
    m3::verify(&dir).unwrap();
    // Two chosen clusters merged, then every cluster.
    let n_clusters = open(&dir).n_clusters() as u32;
    let r = m3::update::merge_clusters(&dir, &[0, n_clusters / 2]).unwrap();
    assert_eq!(r.clusters, 2);
    check_against_model(&dir, metric, &model, &queries);
    m3::verify(&dir).unwrap();
    m3::update::merge_all(&dir, None)
        .unwrap()
        .expect("clusters to merge");
    let index = open(&dir);
    assert_eq!(index.element_type(), elem.dtype());
    assert_eq!(
        index.meta().n_vectors,
        model.live.len() as u64,
        "no dead vid"
    );
    check_index(&index, metric, &model, &queries);
    let merged = recall_at_10(&index, metric, &model, &queries);
    drop(index);
    m3::verify(&dir).unwrap();
    // Updates on the merged index, then a compaction that builds it again in its type.
    let mut w = IndexWriter::open(&dir).unwrap();
    let more_ids: Vec<u64> = (0..30).map(|i| 1 << 41 | i).collect();
    let more = rows(30, &mut rng);
    w.insert(&more_ids, more.view()).unwrap();
    w.delete(&new_ids[10..20]);
    w.commit().unwrap();
    drop(w);
    for (id, v) in more_ids.iter().zip(more.view().iter_rows()) {
        model.live.insert(*id, v.to_vec());
    }
    for id in &new_ids[10..20] {
        model.live.remove(id);
    }
    check_against_model(&dir, metric, &model, &queries);
    let r = m3::update::compact(&dir, pool()).unwrap();
    assert_eq!(r.live_vectors, model.live.len() as u64);
    assert!(!dir.join(WAL_FILE).exists());
    let index = open(&dir);
    assert_eq!(
        index.element_type(),
        elem.dtype(),
        "compaction keeps the type"
    );
    check_index(&index, metric, &model, &queries);
    let compacted = recall_at_10(&index, metric, &model, &queries);
    m3::verify(&dir).unwrap();
    eprintln!(
        "{metric} {elem:?}: recall@10 {before:.3}, merged {merged:.3}, compacted {compacted:.3}"
    );
    for (when, r) in [
        ("updated", before),
        ("merged", merged),
        ("compacted", compacted),
    ] {
        assert!(r >= RECALL_FLOOR, "{metric} {elem:?} {when}: recall@10 {r}");
    }
}

/// Recall@10 at `nprobe` 4 of the 400-vector integer test indexes after updates, merges and
/// compaction (measured 0.925–0.953 over the three indexes and stages).
const RECALL_FLOOR: f64 = 0.85;

#[test]
fn u8_and_i8_indexes_take_updates_merges_and_compaction() {
    for (metric, elem) in [
        (Metric::L2, Elem::U8),
        (Metric::L2, Elem::I8),
        (Metric::InnerProduct, Elem::I8),
    ] {
        check_integer_updates(metric, elem);
    }
}

/// On a u8 or i8 index a component that is not an integer of the type's range is refused
/// with `UpdateError::Input` naming the row and the component; the whole call is refused and
/// nothing reaches the disk.
#[test]
fn values_a_u8_or_i8_index_cannot_store_are_refused_naming_row_and_component() {
    for (elem, bad) in [
        (Elem::U8, [300.0, 1.5, -1.0, 255.5]),
        (Elem::I8, [128.0, -129.0, 0.5, -127.25]),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = copy_of_kind(Metric::L2, elem, tmp.path());
        let mut w = IndexWriter::open(&dir).unwrap();
        let files = |dir: &Path| {
            [WAL_FILE, m3::format::files::DELTA_FILE].map(|f| std::fs::read(dir.join(f)).unwrap())
        };
        let on_disk = files(&dir);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for x in bad {
            let mut m = Matrix::from_vec((0..3).flat_map(|_| elem.vector(&mut rng)).collect(), DIM)
                .unwrap();
            m.row_mut(2)[5] = x;
            let e = w.insert(&[1, 2, 3], m.view()).unwrap_err();
            assert!(matches!(e, UpdateError::Input { .. }), "{e:?}");
            let text = e.to_string();
            assert!(
                text.contains("vector 2") && text.contains(&format!("component 5 is {x}")),
                "{text}"
            );
            assert!(
                text.contains(&format!("a {} index", elem.dtype())),
                "{text}"
            );
        }
        assert_eq!(w.pending(), 0, "nothing queued");
        assert_eq!(w.commit().unwrap(), 0);
        drop(w);
        assert_eq!(files(&dir), on_disk, "nothing written");
        assert_eq!(open(&dir).live_info().generation, 0);
    }
}

/// `m3 insert` on a u8 index takes a `.u8bin` file and an f32 file of integral values in
/// range; an f32 file with 1.5 or 300 and an `.i8bin` file are refused naming the file (and
/// the row), writing nothing.
#[test]
fn cli_insert_takes_a_u8_file_on_a_u8_index() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_of_kind(Metric::L2, Elem::U8, tmp.path());
    let d = dir.to_str().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(77);
    let new = Matrix::from_vec(
        (0..6).flat_map(|_| Elem::U8.vector(&mut rng)).collect(),
        DIM,
    )
    .unwrap();
    let u8_file = Elem::U8.write(&tmp.path().join("new"), new.view());
    let ids = tmp.path().join("new.u64bin");
    write_user_ids(&ids, &[21, 22, 23, 24, 25, base_ids()[3]]).unwrap();
    let insert = |file: &Path, ids: &Path| {
        m3_cmd(&[
            "insert",
            "--index",
            d,
            "--base",
            file.to_str().unwrap(),
            "--ids",
            ids.to_str().unwrap(),
        ])
    };
    let o = insert(&u8_file, &ids);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut model = Model::base_of(Elem::U8);
    for (id, v) in [21, 22, 23, 24, 25, base_ids()[3]]
        .iter()
        .zip(new.view().iter_rows())
    {
        model.live.insert(*id, v.to_vec());
    }
    // f32 values that are integers of the range.
    let more = Matrix::from_vec(
        (0..2).flat_map(|_| Elem::U8.vector(&mut rng)).collect(),
        DIM,
    )
    .unwrap();
    let f32_file = Elem::F32.write(&tmp.path().join("more"), more.view());
    let more_ids = tmp.path().join("more.u64bin");
    write_user_ids(&more_ids, &[31, 32]).unwrap();
    let o = insert(&f32_file, &more_ids);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (id, v) in [31, 32].iter().zip(more.view().iter_rows()) {
        model.live.insert(*id, v.to_vec());
    }
    let queries: Vec<Vec<f32>> = new.view().iter_rows().map(<[f32]>::to_vec).collect();
    check_against_model(&dir, Metric::L2, &model, &queries);
    let on_disk = std::fs::read(dir.join(WAL_FILE)).unwrap();
    // Refused: a value with a fraction, one beyond 255, an i8 file.
    for (i, x) in [1.5f32, 300.0].into_iter().enumerate() {
        let mut bad = more.clone();
        bad.row_mut(1)[2] = x;
        let file = Elem::F32.write(&tmp.path().join(format!("bad{i}")), bad.view());
        let o = insert(&file, &more_ids);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(file.to_str().unwrap())
                && err.contains("vector 1")
                && err.contains(&format!("component 2 is {x}")),
            "{err}"
        );
    }
    let small = Matrix::from_vec(vec![1.0; 2 * DIM], DIM).unwrap();
    let i8_file = Elem::I8.write(&tmp.path().join("signed"), small.view());
    let o = insert(&i8_file, &more_ids);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(i8_file.to_str().unwrap()) && err.contains("i8"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(dir.join(WAL_FILE)).unwrap(),
        on_disk,
        "nothing written"
    );
    check_against_model(&dir, Metric::L2, &model, &queries);
    let o = m3_cmd(&["verify", d]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The clusters holding each live vector, by user id: base records (`cluster_records`) and
/// live inserts (`cluster_inserts`) alike.
fn clusters_by_id(index: &Index) -> BTreeMap<u64, Vec<usize>> {
    let mut out: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for c in 0..index.n_clusters() {
        for rec in index.cluster_records(c).unwrap() {
            out.entry(index.user_id(rec.vid)).or_default().push(c);
        }
        for vid in index.cluster_inserts(c) {
            out.entry(index.user_id(vid)).or_default().push(c);
        }
    }
    out
}

/// Every live vector is stored at least once and at most `1 + spill_max` times, never twice
/// in one cluster, and nothing else is stored live.
fn check_copies(index: &Index, model: &Model) -> BTreeMap<u64, Vec<usize>> {
    let by_id = clusters_by_id(index);
    let most = 1 + index.meta().spill_max as usize;
    for (id, cs) in &by_id {
        assert!(model.live.contains_key(id), "dead id {id} stored live");
        let unique: std::collections::BTreeSet<usize> = cs.iter().copied().collect();
        assert_eq!(
            unique.len(),
            cs.len(),
            "id {id} twice in one cluster: {cs:?}"
        );
        assert!(cs.len() <= most, "id {id} in {cs:?}, at most {most}");
    }
    assert_eq!(by_id.len(), model.live.len(), "a live id lost");
    by_id
}

/// On an index built with spill (one copy, ε 0.1), an insert is stored in its nearest
/// cluster and in the clusters the build's spill rule picks: every base vector inserted again
/// under a new id lands in the clusters that hold its base row (as inserts, and as records
/// after a merge of every cluster), for the three metrics; deletes and upserts take every
/// copy out.
#[test]
fn spill_inserts_go_where_the_build_put_the_same_vectors() {
    use m3::update::merge_all;
    for metric in [Metric::L2, Metric::Cosine, Metric::InnerProduct] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = copy_of(metric, tmp.path());
        let built = clusters_by_id(&open(&dir));
        let spilled = built.values().filter(|c| c.len() == 2).count();
        assert!(spilled >= N / 10, "{metric}: {spilled} base rows spilled");
        let again = |id: u64| id - (1 << 40);
        let new: Vec<u64> = (0..N as u64).map(|r| 1 << 40 | r).collect();
        let mut w = IndexWriter::open(&dir).unwrap();
        w.insert(&new, base().view()).unwrap();
        w.commit().unwrap();
        let mut model = Model::base();
        for (id, v) in new.iter().zip(base().view().iter_rows()) {
            model.live.insert(*id, v.to_vec());
        }
        let same = |by_id: &BTreeMap<u64, Vec<usize>>, ids: &[u64]| {
            ids.iter()
                .filter(|&&id| {
                    let mut a = by_id[&id].clone();
                    let mut b = built[&base_ids()[again(id) as usize]].clone();
                    a.sort_unstable();
                    b.sort_unstable();
                    a == b
                })
                .count()
        };
        let by_id = check_copies(&open(&dir), &model);
        let copies = new.iter().filter(|id| by_id[id].len() == 2).count();
        let agree = same(&by_id, &new);
        eprintln!("{metric}: {spilled} base rows spilled, {copies} inserts; {agree} of {N} agree");
        assert_eq!(agree, N, "{metric}: {agree} of {N} in the build's clusters");
        assert!(copies >= N / 10, "{metric}: {copies} inserts spilled");
        // Deletes and upserts (to another vector) take both copies out.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        w.delete(&new[..100]);
        let moved: Vec<f32> = (0..100).flat_map(|_| vector(&mut rng)).collect();
        let moved = Matrix::from_vec(moved, DIM).unwrap();
        w.insert(&new[100..200], moved.view()).unwrap();
        w.commit().unwrap();
        drop(w);
        for id in &new[..100] {
            model.live.remove(id);
        }
        for (id, v) in new[100..200].iter().zip(moved.view().iter_rows()) {
            model.live.insert(*id, v.to_vec());
        }
        let queries: Vec<Vec<f32>> = (0..8).map(|_| vector(&mut rng)).collect();
        check_against_model(&dir, metric, &model, &queries);
        check_copies(&open(&dir), &model);
        // Merged: every copy becomes a record of its cluster.
        merge_all(&dir, None).unwrap().expect("a merge");
        let by_id = check_copies(&open(&dir), &model);
        let kept = &new[200..];
        let agree = same(&by_id, kept);
        assert_eq!(agree, kept.len(), "{metric}: {agree} after the merge");
        check_against_model(&dir, metric, &model, &queries);
        m3::verify(&dir).unwrap();
    }
}

/// Inserts with spill copies under deletes, upserts, reopen and merges: exact search equals
/// brute force, approximate search returns live ids once, no vector is stored more than
/// `1 + spill_max` times or lost, including when a merge takes some clusters of an insert's
/// copies and not the others, then every cluster; `verify` passes.
#[test]
fn spill_copies_survive_deletes_reopen_and_merges() {
    use m3::update::{merge_all, merge_clusters};
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_of(Metric::L2, tmp.path());
    let mut rng = ChaCha8Rng::seed_from_u64(29);
    let queries: Vec<Vec<f32>> = (0..24).map(|_| vector(&mut rng)).collect();
    let mut model = Model::base();
    let new: Vec<u64> = (0..300).map(|i| 1 << 41 | i).collect();
    let vs: Vec<f32> = (0..new.len()).flat_map(|_| vector(&mut rng)).collect();
    let v = Matrix::from_vec(vs, DIM).unwrap();
    let mut w = IndexWriter::open(&dir).unwrap();
    w.insert(&new, v.view()).unwrap();
    w.commit().unwrap();
    for (id, x) in new.iter().zip(v.view().iter_rows()) {
        model.live.insert(*id, x.to_vec());
    }
    let up: Vec<f32> = (0..60).flat_map(|_| vector(&mut rng)).collect();
    let up = Matrix::from_vec(up, DIM).unwrap();
    w.delete(&new[..60]);
    w.insert(&new[60..120], up.view()).unwrap();
    w.delete(&base_ids()[..30]);
    w.commit().unwrap();
    drop(w);
    for id in new[..60].iter().chain(&base_ids()[..30]) {
        model.live.remove(id);
    }
    for (id, x) in new[60..120].iter().zip(up.view().iter_rows()) {
        model.live.insert(*id, x.to_vec());
    }
    let index = open(&dir);
    check_index(&index, Metric::L2, &model, &queries);
    let by_id = check_copies(&index, &model);
    assert_eq!(index.live_info().inserted, 360);
    // An insert with copies in two clusters: merge one of them only.
    let (&id, cs) = by_id
        .iter()
        .find(|(id, c)| new.contains(id) && c.len() == 2)
        .expect("a spilled insert");
    let r = merge_clusters(&dir, &[cs[0] as u32]).unwrap();
    assert!(r.reinserted > 0, "{r:?}");
    let index = open(&dir);
    let after = check_copies(&index, &model);
    assert_eq!(after[&id].len(), 2, "{id}: {:?}", after[&id]);
    check_index(&index, Metric::L2, &model, &queries);
    m3::verify(&dir).unwrap();
    // More updates on top, a reopen, then every cluster merged.
    let mut w = IndexWriter::open(&dir).unwrap();
    w.delete(&new[120..150]);
    w.commit().unwrap();
    drop(w);
    for id in &new[120..150] {
        model.live.remove(id);
    }
    check_against_model(&dir, Metric::L2, &model, &queries);
    merge_all(&dir, None).unwrap().expect("a merge");
    let index = open(&dir);
    let after = check_copies(&index, &model);
    assert!(after.values().filter(|c| c.len() == 2).count() >= model.live.len() / 10);
    check_index(&index, Metric::L2, &model, &queries);
    m3::verify(&dir).unwrap();
}

/// Recall@10 at fixed knobs (`nprobe` 2, no neighbour-list round) of 400 queries near the
/// inserted half of a clustered set, on an index built with spill from the other half (as
/// many clusters as the fresh build: half the target size), against a fresh spill build of
/// the whole set: the inserts, which have their spill copies, are found about as well as in
/// the fresh build.
#[test]
fn spill_inserts_recall_like_a_fresh_spill_build() {
    const DIM16: usize = 16;
    let mut rng = ChaCha8Rng::seed_from_u64(61);
    let centres: Vec<Vec<f32>> = (0..30)
        .map(|_| (0..DIM16).map(|_| rng.random_range(-1.0f32..1.0)).collect())
        .collect();
    let point = |rng: &mut ChaCha8Rng| -> Vec<f32> {
        let c = &centres[rng.random_range(0..centres.len())];
        c.iter()
            .map(|x| x + rng.random_range(-0.35f32..0.35))
            .collect()
    };
    let all: Vec<Vec<f32>> = (0..4000).map(|_| point(&mut rng)).collect();
    let (half, rest) = all.split_at(2000);
    let tmp = tempfile::tempdir().unwrap();
    let build = |rows: &[Vec<f32>], name: &str, target_size: usize| -> PathBuf {
        let m = Matrix::from_vec(rows.concat(), DIM16).unwrap();
        let base = tmp.path().join(format!("{name}.fbin"));
        write_matrix(&base, m.view()).unwrap();
        let out = tmp.path().join(name);
        let mut p = BuildParams::new(base, Metric::L2, out.clone());
        p.clusters.target_size = target_size;
        p.pq.subspaces = Some(4);
        p.pq.train_rows = 2000;
        p.graph.max_degree = 8;
        p.graph.candidates = 16;
        p.spill.max_copies = 1;
        p.seed = 4;
        build_index(&p, pool(), &Silent).unwrap();
        out
    };
    let fresh = open(&build(&all, "fresh", 50));
    let dir = build(half, "half", 25);
    let mut w = IndexWriter::open(&dir).unwrap();
    let ids: Vec<u64> = (2000..4000).collect();
    w.insert(&ids, Matrix::from_vec(rest.concat(), DIM16).unwrap().view())
        .unwrap();
    w.commit().unwrap();
    drop(w);
    let updated = open(&dir);
    assert_eq!(updated.n_clusters(), fresh.n_clusters());
    let queries: Vec<Vec<f32>> = rest[..400]
        .iter()
        .map(|v| {
            v.iter()
                .map(|x| x + rng.random_range(-0.05f32..0.05))
                .collect()
        })
        .collect();
    let recall = |index: &Index| -> f64 {
        let mut s = Searcher::new(index);
        let mut params = SearchParams::new(10);
        params.nprobe = 2;
        params.expand_rounds = 0;
        let mut hits = 0usize;
        for (i, q) in queries.iter().enumerate() {
            let mut d: Vec<(f32, u64)> = all
                .iter()
                .enumerate()
                .map(|(j, v)| (distance::l2_sq(q, v), j as u64))
                .collect();
            d.sort_by(|a, b| a.0.total_cmp(&b.0));
            let want: Vec<u64> = d[..10].iter().map(|x| x.1).collect();
            let (got, _) = s.search(i, q, &params).unwrap();
            hits += got
                .iter()
                .filter(|n| want.contains(&index.user_id(n.id)))
                .count();
        }
        hits as f64 / (10 * queries.len()) as f64
    };
    let (r_fresh, r_updated) = (recall(&fresh), recall(&updated));
    eprintln!("recall@10: fresh spill build {r_fresh:.4}, half build + inserts {r_updated:.4}");
    assert!(
        r_updated >= r_fresh - 0.03,
        "recall@10 {r_updated} with inserts, {r_fresh} fresh"
    );
}

/// On an index built without spill, an insert is stored once, before and after a merge of
/// every cluster (decision 0014: nothing changes there).
#[test]
fn inserts_on_an_index_without_spill_get_no_copies() {
    use m3::update::merge_all;
    let tmp = tempfile::tempdir().unwrap();
    let base_path = tmp.path().join("base.fbin");
    write_matrix(&base_path, base().view()).unwrap();
    let dir = tmp.path().join("idx");
    let mut p = BuildParams::new(base_path, Metric::L2, dir.clone());
    p.clusters.target_size = 40;
    p.pq.subspaces = Some(4);
    p.pq.train_rows = 1024;
    p.graph.max_degree = 8;
    p.graph.candidates = 16;
    p.seed = 9;
    build_index(&p, pool(), &Silent).unwrap();
    assert_eq!(open(&dir).meta().spill_max, 0);
    let mut model = Model {
        live: (0..N as u64)
            .zip(base().view().iter_rows().map(<[f32]>::to_vec))
            .collect(),
    };
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let ids: Vec<u64> = (0..200).map(|i| 1 << 42 | i).collect();
    let vs = Matrix::from_vec((0..200).flat_map(|_| vector(&mut rng)).collect(), DIM).unwrap();
    let mut w = IndexWriter::open(&dir).unwrap();
    w.insert(&ids, vs.view()).unwrap();
    w.commit().unwrap();
    drop(w);
    for (id, v) in ids.iter().zip(vs.view().iter_rows()) {
        model.live.insert(*id, v.to_vec());
    }
    let once = |index: &Index| {
        let by_id = check_copies(index, &model);
        assert!(by_id.values().all(|c| c.len() == 1), "a copy without spill");
    };
    once(&open(&dir));
    merge_all(&dir, None).unwrap().expect("a merge");
    once(&open(&dir));
    let queries: Vec<Vec<f32>> = (0..8).map(|_| vector(&mut rng)).collect();
    check_against_model(&dir, Metric::L2, &model, &queries);
    m3::verify(&dir).unwrap();
}

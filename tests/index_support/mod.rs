//! Small built indexes for the index-opening tests (`index_mutation`, `index_open`): built once
//! per test binary from seeded generated data and kept in `CARGO_TARGET_TMPDIR`, keyed by the
//! test executable, under a file lock (nextest runs each test in its own process); the intact
//! index's answers to a fixed query set; helpers that copy an index and recompute its checksums
//! after a deliberate change.
#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use m3::build::{BlockInput, BuildParams, Silent, build_index};
use m3::data::{DType, Matrix, VectorFile};
use m3::distance::Metric;
use m3::exact::Neighbor;
use m3::format::Manifest;
use m3::format::SECTOR_BYTES;
use m3::format::files::*;
use m3::format::header::HEADER_CRC_OFFSET;
use m3::io::{IoBackend, ReaderOptions};
use m3::search::{ExactSearcher, Index, SearchError, SearchParams, Searcher};
use m3::synth::multiblock::{MultiblockModel, MultiblockParams};
use m3::synth::xmodal::{XmodalModel, XmodalParams};
use m3::synth::{SplitSizes, WriteSpec, write_dataset};

pub const K: usize = 10;

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

pub fn pool() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap()
}

fn exe_key() -> String {
    let exe = std::env::current_exe().unwrap();
    let m = std::fs::metadata(&exe).unwrap();
    let mtime = m
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{:x}-{:x}", m.len(), mtime.as_nanos())
}

/// `CARGO_TARGET_TMPDIR/index_support/<test binary>/<name>-<exe key>`, made by `make` once (see
/// the module doc); directories of older executables of the same test binary are removed. The
/// binary's name is part of the path because several test binaries share these fixtures and
/// run at once: one must never remove the other's as "older".
fn cached_dir(name: &str, make: impl FnOnce(&Path)) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let stem = exe.file_stem().unwrap().to_string_lossy().into_owned();
    let binary = stem.split('-').next().unwrap_or("tests").to_string();
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("index_support")
        .join(binary);
    std::fs::create_dir_all(&root).unwrap();
    let lock = File::create(root.join(format!("{name}.lock"))).unwrap();
    lock.lock().unwrap();
    let dir = root.join(format!("{name}-{}", exe_key()));
    if !dir.join("READY").exists() {
        for e in std::fs::read_dir(&root).unwrap() {
            let e = e.unwrap();
            let n = e.file_name().into_string().unwrap();
            if e.path().is_dir() && n.starts_with(&format!("{name}-")) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        std::fs::create_dir_all(&dir).unwrap();
        make(&dir);
        File::create(dir.join("READY")).unwrap();
    }
    lock.unlock().unwrap();
    dir
}

/// A built index, its queries and the intact index's answers.
pub struct Fixture {
    pub index: PathBuf,
    pub queries: Matrix<f32>,
    /// Block weights of the approximate and exact queries (multi-vector index).
    pub block_weights: Option<Vec<f32>>,
    /// Range radius of each query: its 5th nearest distance (natural units).
    pub radii: Vec<f32>,
    pub answers: Answers,
}

/// 4,000 × 16 cross-modal vectors, cosine, 400 training queries (query anchors, LC-CMD
/// statistics), clusters of about 50 (K ≈ 80) with the two-level threshold at 8, so the build
/// writes `coarse.m3`; one spill copy; `keys.m3`.
pub fn single() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = cached_dir("single", |dir| {
            let model = XmodalModel::new(
                XmodalParams {
                    dim: 16,
                    clusters: 16,
                    seed: 3,
                    latent_dim: 8,
                    ..XmodalParams::fashion_clip()
                },
                SplitSizes {
                    base: 4_000,
                    queries: 12,
                    training: 400,
                },
            )
            .unwrap();
            let spec = WriteSpec {
                out_dir: dir.join("data"),
                dtype: DType::F32,
                batch_chunks: 2,
            };
            let files = write_dataset(&model, &spec, &pool()).unwrap();
            std::fs::rename(&files.queries, dir.join("query.fbin")).unwrap();
            let mut p = BuildParams::new(files.base.clone(), Metric::Cosine, dir.join("idx"));
            p.train_queries = files.training.clone();
            p.clusters.target_size = 50;
            p.clusters.nearest.two_level_min_k = 8;
            p.pq.subspaces = Some(8);
            p.pq.iters = 4;
            p.pq.train_rows = 2048;
            p.graph.max_degree = 8;
            p.graph.candidates = 16;
            p.routing.edges_per_anchor = 8;
            p.spill.max_copies = 1;
            p.seed = 17;
            build_index(&p, &pool(), &Silent).unwrap();
        });
        let queries = VectorFile::open(&dir.join("query.fbin"))
            .unwrap()
            .read_all_f32()
            .unwrap();
        fixture(dir.join("idx"), queries, None)
    })
}

/// 2,000 objects of two 8-d blocks at scales 1 and 10, l2, standardised; queries weight the
/// blocks 1 and 3.
pub fn multi() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let names = ["img", "txt"];
        let dir = cached_dir("multi", |dir| {
            let model = MultiblockModel::new(
                MultiblockParams {
                    dims: vec![8, 8],
                    scales: vec![1.0, 10.0],
                    concepts: 16,
                    seed: 5,
                    ..MultiblockParams::default()
                },
                SplitSizes {
                    base: 2_000,
                    queries: 12,
                    training: 0,
                },
            )
            .unwrap();
            let mut blocks = Vec::new();
            for (b, name) in names.iter().enumerate() {
                let spec = WriteSpec {
                    out_dir: dir.join(name),
                    dtype: DType::F32,
                    batch_chunks: 2,
                };
                let f = write_dataset(&model.block(b), &spec, &pool()).unwrap();
                std::fs::rename(&f.queries, dir.join(format!("{name}.query.fbin"))).unwrap();
                blocks.push(BlockInput {
                    name: name.to_string(),
                    path: f.base,
                    weight: 1.0,
                });
            }
            let mut p = BuildParams::with_blocks(blocks, Metric::L2, dir.join("idx"));
            p.clusters.target_size = 50;
            p.pq.subspaces = Some(8);
            p.pq.train_rows = 2048;
            p.pq.iters = 4;
            p.graph.max_degree = 8;
            p.graph.candidates = 16;
            p.spill.max_copies = 1;
            p.seed = 23;
            build_index(&p, &pool(), &Silent).unwrap();
        });
        let parts: Vec<Matrix<f32>> = names
            .iter()
            .map(|n| {
                VectorFile::open(&dir.join(format!("{n}.query.fbin")))
                    .unwrap()
                    .read_all_f32()
                    .unwrap()
            })
            .collect();
        let rows = parts[0].rows();
        let mut q = Vec::new();
        for i in 0..rows {
            for p in &parts {
                q.extend_from_slice(p.row(i));
            }
        }
        let queries = Matrix::from_vec(q, 16).unwrap();
        fixture(dir.join("idx"), queries, Some(vec![1.0, 3.0]))
    })
}

fn fixture(index: PathBuf, queries: Matrix<f32>, block_weights: Option<Vec<f32>>) -> Fixture {
    let mut f = Fixture {
        index,
        queries,
        block_weights,
        radii: Vec::new(),
        answers: Answers::default(),
    };
    // The radii come from the intact exact answers, then every answer is taken with them.
    let idx = Index::open(&f.index, IoBackend::Pread, &ReaderOptions::default()).unwrap();
    let mut e = ExactSearcher::new(&idx);
    e.set_block_weights(f.block_weights.as_deref()).unwrap();
    f.radii = f
        .queries
        .view()
        .iter_rows()
        .map(|q| {
            let (r, _) = e.knn(q, K).unwrap();
            idx.metric().to_natural(r[4].dist)
        })
        .collect();
    f.answers = answers(&f, &f.index).unwrap();
    assert!(f.answers.approx.iter().all(|a| a.len() == K));
    assert!(
        idx.meta().n_records > idx.meta().n_vectors,
        "some spill copies"
    );
    f
}

// ---------------------------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------------------------

/// `(id, distance bits)` of each result, best first.
pub type Answer = Vec<(u32, u32)>;

#[derive(Debug, Default, PartialEq)]
pub struct Answers {
    pub approx: Vec<Answer>,
    pub knn: Vec<Answer>,
    pub range: Vec<Answer>,
}

pub fn bits(r: &[Neighbor]) -> Answer {
    r.iter().map(|n| (n.id, n.dist.to_bits())).collect()
}

/// Opens the index in `dir` and answers the fixture's queries: approximate (coarse level,
/// query anchors, one neighbour-list round), exact k-NN and range.
pub fn answers(f: &Fixture, dir: &Path) -> Result<Answers, SearchError> {
    let mut idx = Index::open(dir, IoBackend::Pread, &ReaderOptions::default())?;
    idx.set_route_min_k(2);
    let mut p = SearchParams::new(K);
    p.nprobe = 4;
    p.qprobe = 2;
    p.rerank = 30;
    p.expand_rounds = 1;
    p.block_weights = f.block_weights.clone();
    let mut a = Answers::default();
    let mut s = Searcher::new(&idx);
    for (i, q) in f.queries.view().iter_rows().enumerate() {
        a.approx.push(bits(&s.search(i, q, &p)?.0));
    }
    let mut e = ExactSearcher::new(&idx);
    e.set_block_weights(f.block_weights.as_deref())?;
    for (q, &radius) in f.queries.view().iter_rows().zip(&f.radii) {
        a.knn.push(bits(&e.knn(q, K)?.0));
        a.range.push(bits(&e.range(q, radius)?.0));
    }
    Ok(a)
}

// ---------------------------------------------------------------------------------------------
// Copies and checksums
// ---------------------------------------------------------------------------------------------

/// Copies every file of the index in `from` into `to` (created).
pub fn copy_index(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Recomputes the header CRC of a file image (common header intact).
pub fn fix_header_crc(bytes: &mut [u8]) {
    let hb = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    bytes[HEADER_CRC_OFFSET..HEADER_CRC_OFFSET + 4].fill(0);
    let crc = crc32c::crc32c(&bytes[..hb]);
    bytes[HEADER_CRC_OFFSET..HEADER_CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Recomputes the CRCs of `sectors.m3` from `data.m3` in `dir`.
pub fn reseal_sectors(dir: &Path) {
    let data = std::fs::read(dir.join(DATA_FILE)).unwrap();
    let path = dir.join(SECTORS_FILE);
    let mut s = std::fs::read(&path).unwrap();
    let hb = u32::from_le_bytes(s[12..16].try_into().unwrap()) as usize;
    let first = hb.div_ceil(8) * 8;
    for (i, sector) in data[SECTOR_BYTES..].chunks_exact(SECTOR_BYTES).enumerate() {
        let at = first + 4 * i;
        s[at..at + 4].copy_from_slice(&crc32c::crc32c(sector).to_le_bytes());
    }
    std::fs::write(&path, s).unwrap();
}

/// Recomputes every checksum of the index in `dir` after `file` was changed: its header CRC,
/// `sectors.m3` for `data.m3`, and the manifest's entries (or, for the manifest, its header
/// CRC).
pub fn reseal(dir: &Path, file: &str) {
    let path = dir.join(file);
    let mut bytes = std::fs::read(&path).unwrap();
    if file.ends_with(".m3") {
        fix_header_crc(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
    }
    if file == MANIFEST_FILE {
        return;
    }
    if file == DATA_FILE {
        reseal_sectors(dir);
    }
    let mpath = dir.join(MANIFEST_FILE);
    let mut manifest = Manifest::read(&mpath).unwrap();
    for e in &mut manifest.files {
        let name = e.name_str().unwrap().to_string();
        if let Ok(b) = std::fs::read(dir.join(&name)) {
            e.bytes = b.len() as u64;
            e.crc32c = crc32c::crc32c(&b);
        }
    }
    manifest.write(&mpath).unwrap();
}

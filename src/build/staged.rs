//! The build's stages run alone, with files between them (docs/DISTRIBUTED.md, "Stages"):
//! [`stage_train`] trains the model once and plans the shards, [`stage_assign`] assigns one
//! row range against it and writes one sorted run per shard, [`stage_shard`]
//! (`staged_shard.rs`) builds one shard from its runs and [`stage_publish`] writes the sharded
//! index. Every stage reads only the work directory (and the base), writes crash-safely
//! (temporary name, fsync, rename) and is a deterministic function of its inputs, so running
//! it again, on this machine or another, writes the same bytes. The work directory's files are
//! in `docs/FORMAT.md`, "The staged build's work directory".
//!
//! One rule differs from [`super::build_index`]: a row's primary cluster is its nearest
//! anchor, without the size cap (the cap makes placement depend on the rows before it, which
//! another task assigns). Balanced k-means keeps the clusters near their target size anyway.

use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::assign::{assign_rows, check_record_count, sort_dir};
use super::extsort::{RecordSorter, SortedRecord};
use super::pipeline::{Run, Shape, check_params};
use super::source::BaseSource;
use super::train::Trained;
use super::{BuildError, BuildObserver, BuildParams, plan_shards};
use crate::data::{Matrix, VectorFile};
use crate::format::files::{CLUSTERS_FILE, COARSE_FILE, PQ_FILE, ROUTING_FILE};
use crate::format::{ClusterTable, CoarseLevel, PqFile, Routing};
use crate::kmeans::{KMeans, TwoLevel};
use crate::pq::ProductQuantizer;
use crate::route::QueryRouting;
use crate::stats::Welford;

/// The model's directory inside the work directory.
pub(super) const MODEL_DIR: &str = "model";
/// The model's facts (parameters, shape, plan, statistics), JSON.
const MODEL_FILE: &str = "model.json";
/// The training queries in the build's coordinates (`.fbin`).
const QUERIES_FILE: &str = "queries.fbin";
/// Version of `model.json` this code writes and reads.
const MODEL_VERSION: u32 = 1;
/// Magic of a run file.
const RUN_MAGIC: [u8; 8] = *b"M3RUN\0\0\0";
/// Version of the run files this code writes and reads.
const RUN_VERSION: u32 = 1;
/// Bytes of a run file's header.
const RUN_HEADER_BYTES: usize = 48;

/// The facts of a trained model, `model.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct ModelFacts {
    pub version: u32,
    pub params: BuildParams,
    pub shape: Shape,
    pub pq_bounds: Vec<usize>,
    pub shards: usize,
    /// The shard of each cluster ([`plan_shards`]).
    pub owners: Vec<u32>,
    pub stats: Welford,
    /// The training queries' statistics and the edges' vote coverage (with training queries).
    pub query_stats: Option<Welford>,
    pub vote_coverage: f64,
    /// Probe of the assignment's two-level search (when the model has one).
    pub two_level_probe: Option<usize>,
}

/// A trained model read back from a work directory.
pub(super) struct Model {
    pub facts: ModelFacts,
    pub trained: Trained,
    pub routing: Option<QueryRouting>,
}

/// What [`stage_train`] made.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainSummary {
    /// Base rows.
    pub rows: u64,
    /// Clusters.
    pub clusters: usize,
    /// Shards of the plan.
    pub shards: usize,
    /// Clusters per shard.
    pub clusters_per_shard: Vec<usize>,
    /// Query anchors (0 without training queries).
    pub query_anchors: usize,
}

/// What [`stage_assign`] wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AssignSummary {
    /// The rows assigned.
    pub rows: std::ops::Range<u64>,
    /// Records written (spill copies included), per shard.
    pub records_per_shard: Vec<u64>,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Stage 1: trains the model of `params` (statistics, anchors, anchor graph, PQ codebooks,
/// query anchors and edges from the training queries) and plans `shards` shards, into
/// `work/model` (written under a temporary name, then renamed; an older model is replaced).
pub fn stage_train(
    params: &BuildParams,
    shards: usize,
    work: &Path,
    pool: &rayon::ThreadPool,
    obs: &dyn BuildObserver,
) -> Result<TrainSummary, BuildError> {
    check_params(params)?;
    if params.blocks.is_some() || params.ids.is_some() {
        return Err(BuildError::param(
            "base",
            "the staged build takes no multi-vector blocks and no user ids",
        ));
    }
    let mut run = Run::new(params, pool, obs);
    let mut base = BaseSource::open(params)?;
    let (shape, pq_bounds) = Shape::of(&base, params)?;
    let (mut trained, _) = run.scan_and_train(&mut base, shape, pq_bounds.clone())?;
    let routing = run.route(&base, &mut trained)?;
    std::fs::create_dir_all(work).map_err(io_err(work))?;
    let tmp = work.join(format!("{MODEL_DIR}.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    std::fs::create_dir(&tmp).map_err(io_err(&tmp))?;
    let k = shape.k;
    ClusterTable {
        centroids: trained.anchors.centroids.clone(),
        entries: vec![bytemuck::Zeroable::zeroed(); k],
        anchor_graph: trained.anchor_graph.clone(),
    }
    .write(&tmp.join(CLUSTERS_FILE))?;
    let plan = plan_shards(&tmp, shards, params.seed)?;
    write_model_files(&tmp, &trained, routing.as_ref())?;
    let facts = ModelFacts {
        version: MODEL_VERSION,
        params: params.clone(),
        shape,
        pq_bounds,
        shards,
        owners: plan.owners.clone(),
        stats: trained.stats.clone(),
        query_stats: routing.as_ref().map(|r| r.stats.clone()),
        vote_coverage: routing.as_ref().map_or(0.0, |r| r.vote_coverage),
        two_level_probe: trained.two_level.as_ref().map(TwoLevel::probe),
    };
    let json = serde_json::to_vec_pretty(&facts).expect("model facts serialise");
    crate::format::write_whole_file(&tmp.join(MODEL_FILE), &json)?;
    replace_dir(&tmp, &work.join(MODEL_DIR))?;
    let mut per_shard = vec![0usize; shards];
    plan.owners.iter().for_each(|&o| per_shard[o as usize] += 1);
    Ok(TrainSummary {
        rows: shape.n,
        clusters: k,
        shards,
        clusters_per_shard: per_shard,
        query_anchors: routing.as_ref().map_or(0, |r| r.anchors.rows()),
    })
}

/// The model's matrices: PQ codebooks (`pq.m3` without records), the assignment's two-level
/// search (`coarse.m3`), query anchors and edges (`routing.m3`) and training queries.
fn write_model_files(
    dir: &Path,
    trained: &Trained,
    routing: Option<&QueryRouting>,
) -> Result<(), BuildError> {
    let m = trained.pq.subspaces();
    PqFile {
        bounds: trained.pq.bounds().iter().map(|&b| b as u32).collect(),
        codebooks: trained.pq.codebooks().to_vec(),
        codes: Matrix::from_vec(Vec::new(), m)?,
        correction: Vec::new(),
        error: Vec::new(),
        residual: true,
    }
    .write(&dir.join(PQ_FILE))?;
    if let Some(tl) = &trained.two_level {
        CoarseLevel {
            coarse: Matrix::from_vec(tl.coarse().as_slice().to_vec(), tl.coarse().dim())?,
            labels: tl.labels(),
            probe: tl.probe() as u32,
            augmented: false,
        }
        .write(&dir.join(COARSE_FILE))?;
    }
    if let Some(r) = routing {
        Routing {
            anchors: r.anchors.clone(),
            edges: r.edges.clone(),
        }
        .write(&dir.join(ROUTING_FILE))?;
        crate::data::format::write_matrix(&dir.join(QUERIES_FILE), r.queries.view())?;
    }
    Ok(())
}

/// Moves the finished directory `tmp` to `to` (fsynced first; an older `to` is removed).
fn replace_dir(tmp: &Path, to: &Path) -> Result<(), BuildError> {
    crate::format::sync_dir(tmp)?;
    if to.exists() {
        std::fs::remove_dir_all(to).map_err(io_err(to))?;
    }
    std::fs::rename(tmp, to).map_err(io_err(to))?;
    if let Some(parent) = to.parent() {
        crate::format::sync_dir(parent)?;
    }
    Ok(())
}

impl Model {
    /// Reads the model of `work` (written by [`stage_train`]).
    pub(super) fn load(work: &Path) -> Result<Self, BuildError> {
        let dir = work.join(MODEL_DIR);
        let path = dir.join(MODEL_FILE);
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        let facts: ModelFacts = serde_json::from_slice(&bytes).map_err(|e| {
            BuildError::param(
                "work",
                format!("{}: not a model of this version: {e}", path.display()),
            )
        })?;
        if facts.version != MODEL_VERSION {
            return Err(BuildError::param(
                "work",
                format!("{}: model version {}", path.display(), facts.version),
            ));
        }
        let clusters = ClusterTable::read(&dir.join(CLUSTERS_FILE))?;
        let pq_file = PqFile::read(&dir.join(PQ_FILE))?;
        let pq = ProductQuantizer::from_parts(
            facts.shape.dim,
            facts.pq_bounds.clone(),
            pq_file.codebooks,
        )?;
        let two_level = match facts.two_level_probe {
            Some(probe) => {
                let c = CoarseLevel::read(&dir.join(COARSE_FILE))?;
                Some(TwoLevel::from_parts(
                    clusters.centroids.view(),
                    c.coarse,
                    &c.labels,
                    probe,
                ))
            }
            None => None,
        };
        let routing = match &facts.query_stats {
            Some(stats) => {
                let r = Routing::read(&dir.join(ROUTING_FILE))?;
                Some(QueryRouting {
                    anchors: r.anchors,
                    edges: r.edges,
                    stats: stats.clone(),
                    vote_coverage: facts.vote_coverage,
                    queries: VectorFile::open(&dir.join(QUERIES_FILE))?.read_all_f32()?,
                })
            }
            None => None,
        };
        let dim = facts.shape.dim;
        let trained = Trained {
            stats: facts.stats.clone(),
            sample: Matrix::from_vec(Vec::new(), dim)?,
            sample_ids: Vec::new(),
            sample_labels: Vec::new(),
            anchors: KMeans {
                centroids: clusters.centroids,
                report: Default::default(),
            },
            two_level,
            anchor_graph: clusters.anchor_graph,
            pq,
        };
        Ok(Self {
            facts,
            trained,
            routing,
        })
    }

    /// The build parameters, the base files replaced by `base` when given (another
    /// machine's paths to the same files, in the same order), which are opened and checked
    /// against the model's shape.
    pub(super) fn open_base(
        &self,
        base: Option<&[PathBuf]>,
    ) -> Result<(BuildParams, BaseSource), BuildError> {
        let mut params = self.facts.params.clone();
        if let Some(b) = base {
            let Some((first, more)) = b.split_first() else {
                return Err(BuildError::param("base", "an empty list of base files"));
            };
            params.base = first.clone();
            params.more_base = more.to_vec();
        }
        let source = BaseSource::open(&params)?;
        let shape = self.facts.shape;
        if source.rows() != shape.n || source.dim() != shape.dim {
            return Err(BuildError::param(
                "base",
                format!(
                    "{} holds {} × {}; the model was trained on {} × {}",
                    params.base.display(),
                    source.rows(),
                    source.dim(),
                    shape.n,
                    shape.dim
                ),
            ));
        }
        Ok((params, source))
    }
}

/// Where the runs of shard `shard` live.
pub(super) fn runs_dir(work: &Path, shard: usize) -> PathBuf {
    work.join("runs").join(format!("shard-{shard:03}"))
}

/// Stage 2: assigns base rows `rows` against the model of `work` and writes one sorted run
/// per shard, `runs/shard-NNN/rows-A-B.run` (each under a temporary name, fsynced, then
/// renamed; running it again writes the same bytes). `base` replaces the model's base paths.
pub fn stage_assign(
    work: &Path,
    base: Option<&[PathBuf]>,
    rows: std::ops::Range<u64>,
    pool: &rayon::ThreadPool,
    obs: &dyn BuildObserver,
) -> Result<AssignSummary, BuildError> {
    let model = Model::load(work)?;
    let (mut params, source) = model.open_base(base)?;
    let n = model.facts.shape.n;
    if rows.start >= rows.end || rows.end > n {
        return Err(BuildError::param(
            "rows",
            format!(
                "{}..{} is not a non-empty range of 0..{n}",
                rows.start, rows.end
            ),
        ));
    }
    let (m, tr) = (model.facts.shape.m, &model.trained);
    params.out = work.join(format!("runs/rows-{}-{}", rows.start, rows.end));
    let mut sorter = RecordSorter::new(
        m,
        params.sort_run_records(rows.end - rows.start, m, tr.model_bytes()),
        sort_dir(&params.out),
    );
    obs.stage("assign", n);
    let pass = assign_rows(
        &source,
        rows.clone(),
        &params,
        tr,
        false,
        &mut sorter,
        pool,
        &|d| obs.progress(d),
    )?;
    check_record_count(pass.records)?;
    let shards = model.facts.shards;
    let mut writers = (0..shards)
        .map(|s| RunWriter::create(&runs_dir(work, s), rows.clone(), m))
        .collect::<Result<Vec<_>, _>>()?;
    let owners = &model.facts.owners;
    sorter.finish_into(&mut |r| writers[owners[r.cluster as usize] as usize].push(&r))?;
    let mut records_per_shard = Vec::with_capacity(shards);
    for w in writers {
        records_per_shard.push(w.finish()?);
    }
    Ok(AssignSummary {
        rows,
        records_per_shard,
    })
}

/// Writes one run: a 48-byte header (magic, version, code bytes, the row range, records, the
/// header's CRC32C), then the records in index order as a zstd stream with its checksum.
struct RunWriter {
    tmp: PathBuf,
    path: PathBuf,
    rows: std::ops::Range<u64>,
    m: usize,
    records: u64,
    enc: zstd::Encoder<'static, BufWriter<std::fs::File>>,
}

impl RunWriter {
    fn create(dir: &Path, rows: std::ops::Range<u64>, m: usize) -> Result<Self, BuildError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(format!("rows-{}-{}.run", rows.start, rows.end));
        let tmp = dir.join(format!(
            "rows-{}-{}.run.tmp-{}",
            rows.start,
            rows.end,
            std::process::id()
        ));
        let mut file = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        file.write_all(&[0u8; RUN_HEADER_BYTES])
            .map_err(io_err(&tmp))?;
        let mut enc = zstd::Encoder::new(BufWriter::new(file), 1).map_err(io_err(&tmp))?;
        enc.include_checksum(true).map_err(io_err(&tmp))?;
        Ok(Self {
            tmp,
            path,
            rows,
            m,
            records: 0,
            enc,
        })
    }

    fn push(&mut self, r: &SortedRecord<'_>) -> Result<(), BuildError> {
        let mut rec = Vec::with_capacity(20 + self.m);
        rec.extend_from_slice(&r.cluster.to_le_bytes());
        rec.extend_from_slice(&r.key.to_le_bytes());
        rec.extend_from_slice(&r.id.to_le_bytes());
        rec.extend_from_slice(&r.correction.to_le_bytes());
        rec.extend_from_slice(&r.error.to_le_bytes());
        rec.extend_from_slice(r.code);
        self.enc.write_all(&rec).map_err(io_err(&self.tmp))?;
        self.records += 1;
        Ok(())
    }

    /// Finishes the stream, writes the header, fsyncs and renames; returns the records.
    fn finish(self) -> Result<u64, BuildError> {
        use std::os::unix::fs::FileExt;
        let io = io_err(&self.tmp);
        let file = self
            .enc
            .finish()
            .map_err(&io)?
            .into_inner()
            .map_err(|e| io(e.into_error()))?;
        let header = RunHeader {
            rows: self.rows,
            m: self.m,
            records: self.records,
        };
        file.write_all_at(&header.to_bytes(), 0).map_err(&io)?;
        file.sync_all().map_err(&io)?;
        std::fs::rename(&self.tmp, &self.path).map_err(io_err(&self.path))?;
        if let Some(dir) = self.path.parent() {
            crate::format::sync_dir(dir)?;
        }
        Ok(self.records)
    }
}

/// A run file's header.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RunHeader {
    pub rows: std::ops::Range<u64>,
    pub m: usize,
    pub records: u64,
}

impl RunHeader {
    fn to_bytes(&self) -> [u8; RUN_HEADER_BYTES] {
        let mut b = [0u8; RUN_HEADER_BYTES];
        b[0..8].copy_from_slice(&RUN_MAGIC);
        b[8..12].copy_from_slice(&RUN_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(self.m as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.rows.start.to_le_bytes());
        b[24..32].copy_from_slice(&self.rows.end.to_le_bytes());
        b[32..40].copy_from_slice(&self.records.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..40]);
        b[40..44].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses and checks a header read from `path`.
    fn parse(b: &[u8; RUN_HEADER_BYTES], path: &Path) -> Result<Self, BuildError> {
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let bad = |what: &str| {
            BuildError::param(
                "work",
                format!("{}: not a run of this version ({what})", path.display()),
            )
        };
        if b[0..8] != RUN_MAGIC {
            return Err(bad("magic"));
        }
        if u32_at(40) != crc32c::crc32c(&b[0..40]) {
            return Err(bad("header checksum"));
        }
        if u32_at(8) != RUN_VERSION {
            return Err(bad("version"));
        }
        Ok(Self {
            m: u32_at(12) as usize,
            rows: u64_at(16)..u64_at(24),
            records: u64_at(32),
        })
    }

    /// Opens the run at `path`: its header and a reader of its records.
    pub(super) fn open(path: &Path) -> Result<(Self, Box<dyn Read>), BuildError> {
        let mut file = std::fs::File::open(path).map_err(io_err(path))?;
        let mut b = [0u8; RUN_HEADER_BYTES];
        file.read_exact(&mut b).map_err(io_err(path))?;
        let header = Self::parse(&b, path)?;
        let dec = zstd::Decoder::with_buffer(std::io::BufReader::with_capacity(1 << 16, file))
            .map_err(io_err(path))?;
        Ok((header, Box::new(dec)))
    }
}

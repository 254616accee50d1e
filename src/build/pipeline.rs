//! `build_index`: the stages in order, each reported to a [`BuildObserver`], then the
//! crash-safe publish of DESIGN §6.

use std::time::Instant;

use super::assign::{AssignOutputs, Assignment};
use super::layout::{GraphInputs, GraphReport, estimate_lid_stats, write_graphs, write_vectors};
use super::source::{BaseSource, block_pq_bounds};
use super::train::Trained;
use super::{
    BuildError, BuildParams, answers_to_records, assign, exact_answers, scan_base, train,
    train_routing,
};
use crate::data::{DType, Matrix};
use crate::distance::Metric;
use crate::format::manifest::{
    META_FLAG_BLOCKS, META_FLAG_IDS, META_FLAG_LID_ADAPTIVE, META_FLAG_QUERY_ANCHORS,
    META_FLAG_SHARD,
};
use crate::route::QueryRouting;
// RECORD_IDS_SCRATCH: the assign stage's scratch file of record ids (in the temporary
// directory, removed once the records are laid out; never published).
use crate::format::files::{
    BLOCKS_FILE, CLUSTERS_FILE, COARSE_FILE, DATA_FILE, HINTS_FILE, IDS_FILE, KEYS_FILE, PQ_FILE,
    RECORD_IDS_SCRATCH, REFINE_FILE, REPORT_FILE, ROUTING_FILE, SECTORS_FILE, STATS_FILE,
};
use crate::format::{
    BlockInfo, BlockTable, ClusterEntry, ClusterTable, CoarseLevel, DataFileParams, DataFileWriter,
    FileEntry, Hints, IndexDirWriter, IndexMeta, Manifest, Routing, Stats, UserIds,
};
use crate::graph::{AlphaMode, LidStats};
use crate::kmeans::GroupIndex;

/// Receives progress: a stage starts with a total of work units, then reports units done.
pub trait BuildObserver: Sync {
    /// Stage `name` starts, with `total` units of work.
    fn stage(&self, name: &'static str, total: u64);
    /// `done` units of the current stage are finished (cumulative).
    fn progress(&self, done: u64);
    /// A one-line note for the user (e.g. "no training queries: base anchors only").
    fn note(&self, text: &str);
}

/// An observer that ignores everything.
pub struct Silent;

impl BuildObserver for Silent {
    fn stage(&self, _: &'static str, _: u64) {}
    fn progress(&self, _: u64) {}
    fn note(&self, _: &str) {}
}

/// Wall time of one stage.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StageTime {
    /// The stage's name (`scan`, `train`, `routing`, `assign`, …).
    pub stage: &'static str,
    /// Its wall time.
    pub seconds: f64,
}

/// What a build did and what it costs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildSummary {
    /// Base vectors.
    pub n_vectors: u64,
    /// Stored records (base vectors plus spill copies).
    pub n_records: u64,
    /// Dimension.
    pub dim: usize,
    /// The metric's name.
    pub metric: String,
    /// Clusters (base anchors).
    pub clusters: usize,
    /// Query anchors (0 without training queries).
    pub query_anchors: usize,
    /// PQ subspaces (bytes per code).
    pub pq_subspaces: usize,
    /// Records per base vector.
    pub spill_factor: f64,
    /// Wall time of each stage, in order.
    pub stages: Vec<StageTime>,
    /// Wall time of the whole build.
    pub total_seconds: f64,
    /// Peak resident memory of the process (VmHWM), bytes; 0 where /proc is unavailable.
    pub peak_rss_bytes: u64,
    /// Every index file, bytes.
    pub ssd_bytes: u64,
    /// RAM the query engine holds per base vector (anchors, routing, statistics, PQ codes
    /// and, for L2, the correction term), bytes.
    pub ram_bytes_per_vector: f64,
    /// Cluster sizes: min, median, max.
    pub cluster_size_min_median_max: [u32; 3],
    /// Share of the training queries' votes that the kept cross-modal edges cover (`None`
    /// without training queries).
    pub routing_vote_coverage: Option<f64>,
    /// Training queries in `hints.m3` (0 without hints).
    pub hint_queries: usize,
    /// Answers kept for each training query (0 without hints).
    pub hint_depth: usize,
    /// What the neighbour-list stage measured.
    pub graph: GraphReport,
    /// The blocks of a multi-vector base (spreads, weights, scales), as in `blocks.m3`.
    pub blocks: Option<BlockTable>,
    /// RAM the trained model (anchors, their two-level search, anchor graph, PQ codebooks)
    /// holds from the assign stage on, bytes; the sort's share of the budget is what it leaves.
    pub model_bytes: u64,
    /// The assign stage's external sort (runs, bytes before/after zstd, seconds).
    pub sort_spill: crate::build::SpillReport,
    /// Worker threads of the build's pool.
    pub threads: usize,
    /// The seed.
    pub seed: u64,
}

/// Peak resident set size of this process, from `/proc/self/status` (VmHWM).
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

struct Clock {
    start: Instant,
    last: Instant,
    stages: Vec<StageTime>,
}

impl Clock {
    fn start() -> Self {
        let now = Instant::now();
        Self {
            start: now,
            last: now,
            stages: Vec::new(),
        }
    }

    fn lap(&mut self, stage: &'static str) {
        let now = Instant::now();
        self.stages.push(StageTime {
            stage,
            seconds: (now - self.last).as_secs_f64(),
        });
        self.last = now;
    }
}

/// Builds an index from `params.base` (or the block files of `params.blocks`) into
/// `params.out` on `pool`. The output appears only when complete; an existing index at
/// `params.out` is replaced atomically, and nothing but an index (or an empty directory) is
/// ever replaced: anything else at `params.out`, or an input inside it, is refused before any
/// work ([`crate::format::check_target`]).
pub fn build_index(
    params: &BuildParams,
    pool: &rayon::ThreadPool,
    obs: &dyn BuildObserver,
) -> Result<BuildSummary, BuildError> {
    let mut run = Run::new(params, pool, obs);
    check_params(params)?;
    // The output is checked, and its temporary directory made, before any work: a wrong
    // `out` (a file, a directory that is not an index, one holding an input, an unwritable
    // parent) fails at once and replaces nothing.
    crate::format::check_target(&params.out, &params.inputs())?;
    let dir = IndexDirWriter::create(&params.out)?;
    let mut base = BaseSource::open(params)?;
    let (shape, pq_bounds) = Shape::of(&base, params)?;
    let ids = write_user_ids(params, shape, &dir)?;

    let (mut trained, blocks) = run.scan_and_train(&mut base, shape, pq_bounds)?;
    let mut routing = run.route(&base, &mut trained)?;
    let model_bytes = trained.model_bytes();
    let asg = run.assign_records(&base, &trained, shape, model_bytes, &dir)?;
    let hints = run.hints(&base, routing.as_mut(), &asg, shape)?;
    let assigned = Assigned {
        shape,
        model_bytes,
        routing,
        blocks,
        hints,
        asg,
    };
    run.complete(&base, dir, trained, assigned, ids, 0)
}

/// What the stages up to assign and hints produced, for the layout and the files.
pub(super) struct Assigned {
    pub shape: Shape,
    pub model_bytes: u64,
    pub routing: Option<QueryRouting>,
    pub blocks: Option<BlockTable>,
    pub hints: Option<Hints>,
    pub asg: Assignment,
}

impl Run<'_> {
    /// Stages 4–7 and the publication: the layout and neighbour lists, the index files, the
    /// refinement codes, the report and the manifest (with `extra_flags` set), then `dir`
    /// published.
    pub(super) fn complete(
        mut self,
        base: &BaseSource,
        dir: IndexDirWriter,
        trained: Trained,
        assigned: Assigned,
        ids: Option<FileEntry>,
        extra_flags: u8,
    ) -> Result<BuildSummary, BuildError> {
        let Assigned {
            shape,
            model_bytes,
            routing,
            blocks,
            hints,
            asg,
        } = assigned;
        let (laid, graph) = self.lay_out(base, &asg, &trained.anchor_graph, &dir)?;
        self.obs.stage("publish", 0);
        let outcome = Outcome {
            shape,
            model_bytes,
            routing,
            blocks,
            hints,
            asg,
            graph,
        };
        let (mut files, facts) = self.write_files(&dir, trained, laid, &outcome)?;
        files.ids = ids;
        self.clock.lap("publish");
        if self.params.pq.refine {
            files.refine = Some(self.refine(&dir)?);
        }
        let mut summary = self.summary(&outcome, &files);
        let report = if extra_flags & META_FLAG_SHARD != 0 {
            // A shard of the staged build is the same bytes wherever and whenever it was
            // built: its report leaves out wall times and memory (the caller gets them).
            let mut timeless = summary.clone();
            timeless.stages.iter_mut().for_each(|s| s.seconds = 0.0);
            timeless.total_seconds = 0.0;
            timeless.peak_rss_bytes = 0;
            write_report(&dir, &timeless)?
        } else {
            write_report(&dir, &summary)?
        };
        summary.ssd_bytes += report.bytes;
        let mut meta = self.index_meta(&outcome, &summary, &facts);
        meta.flags |= extra_flags;
        let manifest = Manifest {
            meta,
            files: files.in_manifest_order(report),
        };
        // The layout was the last reader of the scratch record ids; they are not published.
        outcome.asg.ids.remove()?;
        dir.publish(&manifest)?;
        Ok(summary)
    }
}

/// `ids.m3` from `params.ids` (none without): one id per base row, all distinct, checked
/// before any other work.
fn write_user_ids(
    params: &BuildParams,
    shape: Shape,
    dir: &IndexDirWriter,
) -> Result<Option<FileEntry>, BuildError> {
    let Some(path) = &params.ids else {
        return Ok(None);
    };
    let ids = crate::data::read_user_ids(path)?;
    if ids.len() as u64 != shape.n {
        return Err(BuildError::param(
            "ids",
            format!(
                "{} holds {} ids for {} base rows",
                path.display(),
                ids.len(),
                shape.n
            ),
        ));
    }
    if let Some((row, id)) = UserIds::first_duplicate(&ids) {
        return Err(BuildError::param(
            "ids",
            format!(
                "{}: row {row} repeats the id {id} of an earlier row (ids must be distinct)",
                path.display()
            ),
        ));
    }
    Ok(Some(UserIds { ids }.write(&dir.path(IDS_FILE))?))
}

/// The parameters that can be refused before any input is opened.
pub(super) fn check_params(params: &BuildParams) -> Result<(), BuildError> {
    params
        .graph
        .validate()
        .map_err(|e| BuildError::param("graph", e.to_string()))?;
    if params.ram_budget_bytes == 0 {
        return Err(BuildError::param("ram_budget_bytes", "must be positive"));
    }
    Ok(())
}

/// What the base and the parameters fix before the first pass.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(super) struct Shape {
    /// Base rows.
    pub n: u64,
    pub dim: usize,
    /// Clusters (anchors).
    pub k: usize,
    /// PQ subspaces (bytes per code).
    pub m: usize,
}

impl Shape {
    /// The shape of a build of `base`, and its PQ subspace bounds: even, or aligned to the
    /// blocks of a multi-vector base.
    pub(super) fn of(
        base: &BaseSource,
        params: &BuildParams,
    ) -> Result<(Self, Vec<usize>), BuildError> {
        let n = base.rows();
        let dim = base.dim();
        if n > u32::MAX as u64 {
            return Err(BuildError::param(
                "base",
                "more than 2^32 − 1 rows (ids are u32)",
            ));
        }
        let k = params.clusters.resolve(n);
        let pq_bounds = match base.layout() {
            Some(l) => block_pq_bounds(l, params.pq.resolve(dim)),
            None => crate::pq::even_bounds(dim, params.pq.resolve(dim))?,
        };
        let m = pq_bounds.len() - 1;
        Ok((Self { n, dim, k, m }, pq_bounds))
    }
}

/// One build under way: its parameters, pool, observer and stage clock. Each step below runs
/// one stage of DESIGN §2, reports it to the observer and laps the clock.
pub(super) struct Run<'a> {
    params: &'a BuildParams,
    pool: &'a rayon::ThreadPool,
    obs: &'a dyn BuildObserver,
    clock: Clock,
}

impl<'a> Run<'a> {
    pub(super) fn new(
        params: &'a BuildParams,
        pool: &'a rayon::ThreadPool,
        obs: &'a dyn BuildObserver,
    ) -> Self {
        Self {
            params,
            pool,
            obs,
            clock: Clock::start(),
        }
    }

    /// Laps the stage clock for `stage`.
    pub(super) fn lap(&mut self, stage: &'static str) {
        self.clock.lap(stage);
    }
}

/// What the layout stages leave for the files: `data.m3` (records and neighbour lists
/// written, its header not yet), the cluster entries with their radii and the LID population.
struct LaidOut {
    writer: DataFileWriter,
    dtype: DType,
    entries: Vec<ClusterEntry>,
    lid_stats: LidStats,
}

/// What the stages produced that the summary and the manifest report.
struct Outcome {
    shape: Shape,
    /// RAM of the trained model from the assign stage on (`Trained::model_bytes`).
    model_bytes: u64,
    routing: Option<QueryRouting>,
    blocks: Option<BlockTable>,
    hints: Option<Hints>,
    asg: Assignment,
    graph: GraphReport,
}

/// What the manifest needs of `data.m3` and the anchor graph once they are written.
struct DataFacts {
    dtype: DType,
    data_sectors: u64,
    record_bytes: u32,
    anchor_degree: u32,
}

/// The entries of the index files but the build report.
struct IndexFiles {
    clusters: FileEntry,
    routing: FileEntry,
    stats: FileEntry,
    pq: FileEntry,
    data: FileEntry,
    sectors: FileEntry,
    keys: FileEntry,
    blocks: Option<FileEntry>,
    coarse: Option<FileEntry>,
    hints: Option<FileEntry>,
    refine: Option<FileEntry>,
    ids: Option<FileEntry>,
}

impl IndexFiles {
    /// Bytes of these files on SSD.
    fn ssd_bytes(&self) -> u64 {
        [
            &self.data,
            &self.sectors,
            &self.clusters,
            &self.routing,
            &self.stats,
            &self.pq,
            &self.keys,
        ]
        .iter()
        .map(|e| e.bytes)
        .sum::<u64>()
            + self.blocks.as_ref().map_or(0, |e| e.bytes)
            + self.coarse.as_ref().map_or(0, |e| e.bytes)
            + self.hints.as_ref().map_or(0, |e| e.bytes)
            + self.refine.as_ref().map_or(0, |e| e.bytes)
            + self.ids.as_ref().map_or(0, |e| e.bytes)
    }

    /// Bytes the query engine holds in RAM: the small files whole, and per record its PQ
    /// code and, for L2, its correction term (twice with refinement codes).
    fn ram_bytes(&self, records: u64, m: usize, metric: Metric) -> f64 {
        let per_record = m as u64 + if metric == Metric::L2 { 4 } else { 0 };
        let codes = if self.refine.is_some() { 2 } else { 1 };
        self.clusters.bytes as f64
            + self.hints.as_ref().map_or(0, |e| e.bytes) as f64
            + self.coarse.as_ref().map_or(0, |e| e.bytes) as f64
            + self.routing.bytes as f64
            + self.stats.bytes as f64
            + (codes * records * per_record) as f64
    }

    /// Every entry in the manifest's order, the report's included.
    fn in_manifest_order(self, report: FileEntry) -> Vec<FileEntry> {
        let mut files = vec![
            self.clusters,
            self.routing,
            self.stats,
            self.pq,
            self.data,
            self.sectors,
            self.keys,
            report,
        ];
        files.extend(self.blocks);
        files.extend(self.coarse);
        files.extend(self.hints);
        files.extend(self.refine);
        files.extend(self.ids);
        files
    }
}

impl Run<'_> {
    /// Stage 1, scan and train: one pass over the base for its statistics and a seeded
    /// sample (bounded by a quarter of the RAM budget), the block scales of a multi-vector
    /// base, then the model (anchors, anchor graph, PQ) trained on the sample.
    pub(super) fn scan_and_train(
        &mut self,
        base: &mut BaseSource,
        shape: Shape,
        pq_bounds: Vec<usize>,
    ) -> Result<(Trained, Option<BlockTable>), BuildError> {
        let (params, obs) = (self.params, self.obs);
        let Shape { n, dim, k, .. } = shape;
        let budget_rows = (params.ram_budget_bytes / 4 / (dim as u64 * 4)).max(k as u64) as usize;
        let sample_rows = (k * params.clusters.train_rows_per_cluster)
            .max(params.pq.train_rows)
            .min(budget_rows);
        obs.stage("scan", n);
        let (mut stats, mut sample, sample_ids) =
            scan_base(base, params.metric, sample_rows, params.seed, &|d| {
                obs.progress(d)
            })?;
        let blocks = block_table(base, params, &mut stats, &mut sample);
        self.clock.lap("scan");
        obs.stage("train", 0);
        let trained = train(params, k, pq_bounds, stats, sample, sample_ids, self.pool)?;
        self.clock.lap("train");
        Ok((trained, blocks))
    }

    /// Stage 2, query routing from the training queries (none without them); the training
    /// sample is released after it.
    pub(super) fn route(
        &mut self,
        base: &BaseSource,
        trained: &mut Trained,
    ) -> Result<Option<QueryRouting>, BuildError> {
        self.obs.stage("routing", 0);
        let routing = train_routing(self.params, base, trained, self.pool)?;
        if routing.is_none() {
            self.obs
                .note("no --train-queries: routing uses base anchors only (no cross-modal edges)");
        }
        trained.release_sample();
        self.clock.lap("routing");
        Ok(routing)
    }

    /// Stage 3, assign, into `pq.m3`, `keys.m3` and the scratch file of record ids. Its
    /// records take (M + 20) bytes each; over half of what the trained model leaves of the
    /// budget they are sorted externally, in zstd-compressed runs on disk (`extsort`).
    fn assign_records(
        &mut self,
        base: &BaseSource,
        trained: &Trained,
        shape: Shape,
        model_bytes: u64,
        dir: &IndexDirWriter,
    ) -> Result<Assignment, BuildError> {
        let (params, obs) = (self.params, self.obs);
        if model_bytes > params.ram_budget_bytes / 2 {
            obs.note(&format!(
                "the trained model holds {:.1} MiB, over half the RAM budget; later stages get less",
                model_bytes as f64 / (1u64 << 20) as f64
            ));
        }
        let run_records = params.sort_run_records(shape.n, shape.m, model_bytes);
        if run_records != usize::MAX {
            obs.note(&format!(
                "assign: the records exceed half of the RAM budget the model leaves; sorting them \
                 in runs of {run_records} on disk"
            ));
        }
        obs.stage("assign", shape.n);
        let outputs = AssignOutputs {
            pq: dir.path(PQ_FILE),
            keys: dir.path(KEYS_FILE),
            ids: dir.path(RECORD_IDS_SCRATCH),
        };
        let asg = assign(base, params, trained, &outputs, self.pool, &|d| {
            obs.progress(d)
        })?;
        self.clock.lap("assign");
        Ok(asg)
    }

    /// Stage 3b, hints: every training query's exact answers over the whole base, as
    /// records (none without training queries or at hint depth 0). The training queries move
    /// into them.
    fn hints(
        &mut self,
        base: &BaseSource,
        routing: Option<&mut QueryRouting>,
        asg: &Assignment,
        shape: Shape,
    ) -> Result<Option<Hints>, BuildError> {
        let (params, obs) = (self.params, self.obs);
        let hint_depth = (params.routing.hint_depth as u64).min(shape.n) as usize;
        let r = match routing {
            Some(r) if hint_depth > 0 => r,
            _ => return Ok(None),
        };
        obs.stage("hints", shape.n);
        let queries = std::mem::replace(&mut r.queries, Matrix::from_vec(Vec::new(), shape.dim)?);
        let answers = exact_answers(params, base, &queries, hint_depth, None, self.pool, &|d| {
            obs.progress(d)
        })?;
        let answers = answers_to_records(&answers, hint_depth, &asg.ids, asg.records)?;
        self.clock.lap("hints");
        Ok(Some(Hints { queries, answers }))
    }

    /// Stages 4–5, lay out the vectors, then the neighbour lists, in `data.m3`.
    fn lay_out(
        &mut self,
        base: &BaseSource,
        asg: &Assignment,
        anchor_graph: &Matrix<u32>,
        dir: &IndexDirWriter,
    ) -> Result<(LaidOut, GraphReport), BuildError> {
        let (params, obs, pool) = (self.params, self.obs, self.pool);
        let data_path = dir.path(DATA_FILE);
        let dtype = base.stored_dtype(params.metric);
        let writer = DataFileWriter::create(
            &data_path,
            &DataFileParams {
                dim: base.dim() as u32,
                dtype,
                max_degree: params.graph.max_degree as u32,
                cluster_sizes: &asg.cluster_sizes,
            },
        )?;
        obs.stage("layout", base.rows());
        write_vectors(base, params, asg, &writer, pool, &|d| obs.progress(d))?;
        self.clock.lap("layout");
        obs.stage("graph", asg.records);
        let lid_stats = estimate_lid_stats(&data_path, &writer, params, 32, pool)?;
        let inputs = GraphInputs {
            asg,
            lid_stats: &lid_stats,
            anchor_graph,
        };
        let (entries, graph) = write_graphs(&data_path, &writer, &inputs, params, pool, &|d| {
            obs.progress(d)
        })?;
        self.clock.lap("graph");
        let laid = LaidOut {
            writer,
            dtype,
            entries,
            lid_stats,
        };
        Ok((laid, graph))
    }

    /// Stage 6, the index files beside the records: `data.m3`'s header and `sectors.m3`, the
    /// cluster table (the model moves into it), routing's coarse level, query routing,
    /// statistics, blocks and hints.
    fn write_files(
        &self,
        dir: &IndexDirWriter,
        mut trained: Trained,
        laid: LaidOut,
        outcome: &Outcome,
    ) -> Result<(IndexFiles, DataFacts), BuildError> {
        let facts = DataFacts {
            dtype: laid.dtype,
            data_sectors: laid.writer.data_sectors(),
            record_bytes: laid.writer.codec().record_bytes(),
            anchor_degree: trained.anchor_graph.dim() as u32,
        };
        let (data, sectors) = laid.writer.finish(&dir.path(SECTORS_FILE))?;
        // The model moves into the cluster table (no copy of the anchors); assignment's two-level
        // search is released first, as routing's coarse level below is built for query order.
        trained.two_level = None;
        let clusters = ClusterTable {
            centroids: trained.anchors.centroids,
            entries: laid.entries,
            anchor_graph: trained.anchor_graph,
        };
        let clusters_entry = clusters.write(&dir.path(CLUSTERS_FILE))?;
        let coarse = self.write_coarse_level(dir, &clusters, outcome.shape.k)?;
        let routing = match &outcome.routing {
            Some(r) => Routing {
                anchors: r.anchors.clone(),
                edges: r.edges.clone(),
            },
            None => Routing::empty(outcome.shape.dim, self.edges_per_anchor())?,
        }
        .write(&dir.path(ROUTING_FILE))?;
        let stats = stats_file(&trained.stats, &laid.lid_stats, outcome);
        let asg = &outcome.asg;
        let files = IndexFiles {
            clusters: clusters_entry,
            routing,
            stats: stats.write(&dir.path(STATS_FILE))?,
            pq: asg.pq_entry,
            data,
            sectors,
            keys: asg.keys_entry,
            blocks: match &outcome.blocks {
                Some(t) => Some(t.write(&dir.path(BLOCKS_FILE))?),
                None => None,
            },
            coarse,
            hints: match &outcome.hints {
                Some(h) => Some(h.write(&dir.path(HINTS_FILE))?),
                None => None,
            },
            refine: None,
            ids: None,
        };
        Ok((files, facts))
    }

    /// Stage 7, the refinement codes (`refine.m3`, decision 0008), from the files just
    /// written: `data.m3`'s records, the cluster table and `pq.m3`.
    fn refine(&mut self, dir: &IndexDirWriter) -> Result<FileEntry, BuildError> {
        self.obs.stage("refine", 0);
        let clusters = ClusterTable::read(&dir.path(CLUSTERS_FILE))?;
        let pq = crate::format::PqFile::read(&dir.path(PQ_FILE))?;
        let data_path = dir.path(DATA_FILE);
        let data_header = crate::format::DataFileHeader::read(&data_path)?;
        let inputs = super::RefineInputs {
            data_path: &data_path,
            data_header: &data_header,
            entries: &clusters.entries,
            centroids: clusters.centroids.view(),
            pq: &pq,
        };
        // Trained like the first codes (same iterations, rows and seed).
        let params = super::RefineParams {
            iters: self.params.pq.iters,
            train_rows: self.params.pq.train_rows,
            seed: self.params.seed,
        };
        let entry = super::write_refinement(&inputs, &params, &dir.path(REFINE_FILE), self.pool)?;
        self.clock.lap("refine");
        Ok(entry)
    }

    /// Two-level routing's coarse level (`coarse.m3`, from the two-level threshold on),
    /// stored so that opening the index does not rerun the coarse k-means (the same level
    /// `Router::new` would build at open).
    fn write_coarse_level(
        &self,
        dir: &IndexDirWriter,
        clusters: &ClusterTable,
        k: usize,
    ) -> Result<Option<FileEntry>, BuildError> {
        let params = self.params;
        if k < params.clusters.nearest.two_level_min_k.max(2) {
            return Ok(None);
        }
        // The same level the query side would build at open.
        let inner_product = params.metric != Metric::L2;
        let (coarse, labels, probe) =
            GroupIndex::for_routing(clusters.centroids.view(), inner_product, self.pool)
                .into_parts();
        let level = CoarseLevel {
            coarse,
            labels,
            probe: probe as u32,
            augmented: inner_product,
        };
        Ok(Some(level.write(&dir.path(COARSE_FILE))?))
    }

    fn edges_per_anchor(&self) -> usize {
        self.params.routing.edges_per_anchor.max(1)
    }

    /// What the build did and cost (the report's contents but for its own size).
    fn summary(&self, outcome: &Outcome, files: &IndexFiles) -> BuildSummary {
        let Shape { n, dim, k, m } = outcome.shape;
        let (params, asg, routing, hints) =
            (self.params, &outcome.asg, &outcome.routing, &outcome.hints);
        let mut sizes = asg.cluster_sizes.clone();
        sizes.sort_unstable();
        BuildSummary {
            n_vectors: n,
            n_records: asg.records,
            dim,
            metric: params.metric.to_string(),
            clusters: k,
            query_anchors: routing.as_ref().map_or(0, |r| r.anchors.rows()),
            pq_subspaces: m,
            spill_factor: asg.records as f64 / n as f64,
            stages: self.clock.stages.clone(),
            total_seconds: self.clock.start.elapsed().as_secs_f64(),
            peak_rss_bytes: peak_rss_bytes(),
            ssd_bytes: files.ssd_bytes(),
            ram_bytes_per_vector: files.ram_bytes(asg.records, m, params.metric) / n as f64,
            cluster_size_min_median_max: [sizes[0], sizes[sizes.len() / 2], sizes[sizes.len() - 1]],
            routing_vote_coverage: routing.as_ref().map(|r| r.vote_coverage),
            hint_queries: hints.as_ref().map_or(0, Hints::len),
            hint_depth: hints.as_ref().map_or(0, Hints::depth),
            graph: outcome.graph.clone(),
            blocks: outcome.blocks.clone(),
            model_bytes: outcome.model_bytes,
            sort_spill: asg.sort.clone(),
            threads: self.pool.current_num_threads(),
            seed: params.seed,
        }
    }

    /// The manifest's parameters: what the build was asked for and what it made.
    fn index_meta(
        &self,
        outcome: &Outcome,
        summary: &BuildSummary,
        facts: &DataFacts,
    ) -> IndexMeta {
        let params = self.params;
        let mut meta: IndexMeta = bytemuck::Zeroable::zeroed();
        meta.dim = outcome.shape.dim as u32;
        meta.set_dtype(facts.dtype);
        meta.set_metric(params.metric);
        meta.set_native_distance();
        meta.flags = if outcome.routing.is_some() {
            META_FLAG_QUERY_ANCHORS
        } else {
            0
        } | if matches!(params.graph.alpha, AlphaMode::Lid(_)) {
            META_FLAG_LID_ADAPTIVE
        } else {
            0
        } | if outcome.blocks.is_some() {
            META_FLAG_BLOCKS
        } else {
            0
        } | if params.ids.is_some() {
            META_FLAG_IDS
        } else {
            0
        };
        meta.n_vectors = outcome.shape.n;
        meta.n_records = summary.n_records;
        meta.data_sectors = facts.data_sectors;
        meta.seed = params.seed;
        meta.n_clusters = outcome.shape.k as u32;
        meta.n_query_anchors = summary.query_anchors as u32;
        meta.pq_subspaces = outcome.shape.m as u32;
        meta.max_degree = params.graph.max_degree as u32;
        meta.record_bytes = facts.record_bytes;
        meta.spill_epsilon = params.spill.epsilon;
        meta.spill_max = params.spill.max_copies as u32;
        let (amin, amax) = match params.graph.alpha {
            AlphaMode::Fixed(a) => (a, a),
            AlphaMode::Lid(map) => (map.alpha_min, map.alpha_max),
        };
        meta.alpha_min = amin;
        meta.alpha_max = amax;
        meta.lid_k = params.graph.lid_k as u32;
        meta.anchor_degree = facts.anchor_degree;
        meta.edges_per_query_anchor = self.edges_per_anchor() as u32;
        meta.build_threads = self.pool.current_num_threads() as u32;
        meta
    }
}

/// `stats.m3`: the base's (and the training queries') per-dimension statistics and the LID
/// population the neighbour lists were pruned with.
fn stats_file(
    base_stats: &crate::stats::Welford,
    lid_stats: &LidStats,
    outcome: &Outcome,
) -> Stats {
    let dim = outcome.shape.dim;
    let routing = outcome.routing.as_ref();
    Stats {
        base_count: base_stats.count(),
        query_count: routing.map_or(0, |r| r.stats.count()),
        has_query_stats: routing.is_some(),
        lid_mean: lid_stats.mean as f32,
        lid_std: lid_stats.std as f32,
        // Welford saw the rows before the block scales; the assignment pass saw them after.
        max_base_norm: if outcome.blocks.is_some() {
            outcome.asg.max_norm
        } else {
            base_stats.max_norm()
        },
        base_mean: base_stats.mean(),
        base_var: base_stats.variance(),
        query_mean: routing.map_or_else(|| vec![0.0; dim], |r| r.stats.mean()),
        query_var: routing.map_or_else(|| vec![0.0; dim], |r| r.stats.variance()),
    }
}

/// `build_report.json`: the summary, pretty-printed (informational; listed in the manifest).
fn write_report(dir: &IndexDirWriter, summary: &BuildSummary) -> Result<FileEntry, BuildError> {
    let json = serde_json::to_vec_pretty(summary).expect("summary serialises");
    Ok(crate::format::write_whole_file(
        &dir.path(REPORT_FILE),
        &json,
    )?)
}

/// For a multi-vector base: the block spreads from the statistics pass, the block scales
/// (applied by `base` from now on), the sample and statistics rescaled to stored coordinates,
/// and the table for `blocks.m3`. `None` for a single file.
fn block_table(
    base: &mut BaseSource,
    params: &BuildParams,
    stats: &mut crate::stats::Welford,
    sample: &mut Matrix<f32>,
) -> Option<BlockTable> {
    let bp = params.blocks.as_ref()?;
    let layout = base.layout()?.clone();
    let spreads = crate::multivec::scale::block_spreads(&layout, params.metric, &stats.variance());
    let weights: Vec<f32> = bp.blocks.iter().map(|b| b.weight).collect();
    let scales = crate::multivec::scale::block_scales(&spreads, &weights, bp.standardize);
    crate::multivec::scale::scale_blocks(&layout, sample, &scales);
    let mut per_dim = vec![1f64; layout.dim()];
    for (blk, &c) in layout.blocks().iter().zip(&scales) {
        per_dim[blk.range()].iter_mut().for_each(|f| *f = c as f64);
    }
    stats.scale_dims(&per_dim);
    base.set_scales(scales.clone());
    Some(BlockTable {
        standardized: bp.standardize,
        blocks: layout
            .blocks()
            .iter()
            .enumerate()
            .map(|(b, blk)| BlockInfo {
                name: blk.name.clone(),
                dim: blk.dim,
                spread: spreads[b],
                weight: weights[b],
                scale: scales[b],
            })
            .collect(),
    })
}

//! `build_index`: the stages in order, each reported to a [`BuildObserver`], then the
//! crash-safe publish of DESIGN §6.

use std::time::Instant;

use super::assign::AssignOutputs;
use super::layout::{GraphReport, estimate_lid_stats, write_graphs, write_vectors};
use super::source::{BaseSource, block_pq_bounds};
use super::{
    BuildError, BuildParams, answers_to_records, assign, exact_answers, scan_base, train,
    train_routing,
};
use crate::distance::Metric;
use crate::format::manifest::{META_FLAG_BLOCKS, META_FLAG_LID_ADAPTIVE, META_FLAG_QUERY_ANCHORS};
use crate::format::verify::{
    BLOCKS_FILE, CLUSTERS_FILE, COARSE_FILE, DATA_FILE, HINTS_FILE, KEYS_FILE, PQ_FILE,
    ROUTING_FILE, SECTORS_FILE, STATS_FILE,
};
use crate::format::{
    BlockInfo, BlockTable, ClusterTable, CoarseLevel, DataFileParams, DataFileWriter, FileEntry,
    Hints, IndexDirWriter, IndexMeta, Manifest, Routing, Stats,
};
use crate::graph::AlphaMode;

/// Name of the JSON build report stored beside the index files (listed in the manifest).
pub const REPORT_FILE: &str = crate::format::verify::REPORT_FILE;

// The assign stage's scratch file of record ids (in the temporary directory, removed once
// the records are laid out; never published).
use crate::format::index_dir::RECORD_IDS_SCRATCH;

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
    let now = Instant::now();
    let mut clock = Clock {
        start: now,
        last: now,
        stages: Vec::new(),
    };
    params
        .graph
        .validate()
        .map_err(|e| BuildError::param("graph", e.to_string()))?;
    if params.ram_budget_bytes == 0 {
        return Err(BuildError::param("ram_budget_bytes", "must be positive"));
    }
    // The output is checked, and its temporary directory made, before any work: a wrong
    // `out` (a file, a directory that is not an index, one holding an input, an unwritable
    // parent) fails at once and replaces nothing.
    crate::format::check_target(&params.out, &params.inputs())?;
    let dir = IndexDirWriter::create(&params.out)?;
    let mut base = BaseSource::open(params)?;
    let n = base.rows();
    let dim = base.dim();
    if n > u32::MAX as u64 {
        return Err(BuildError::param(
            "base",
            "more than 2^32 − 1 rows (ids are u32)",
        ));
    }
    let k = params.clusters.resolve(n);
    // PQ subspaces: even, or aligned to the blocks of a multi-vector base.
    let pq_bounds = match base.layout() {
        Some(l) => block_pq_bounds(l, params.pq.resolve(dim)),
        None => crate::pq::even_bounds(dim, params.pq.resolve(dim))?,
    };
    let m = pq_bounds.len() - 1;

    // 1. Train: the sample is bounded by a quarter of the RAM budget.
    let budget_rows = (params.ram_budget_bytes / 4 / (dim as u64 * 4)).max(k as u64) as usize;
    let sample_rows = (k * params.clusters.train_rows_per_cluster)
        .max(params.pq.train_rows)
        .min(budget_rows);
    obs.stage("scan", n);
    let (mut stats, mut sample, sample_ids) =
        scan_base(&base, params.metric, sample_rows, params.seed, &|d| {
            obs.progress(d)
        })?;
    let blocks = block_table(&mut base, params, &mut stats, &mut sample);
    clock.lap("scan");
    obs.stage("train", 0);
    let mut trained = train(params, k, pq_bounds, stats, sample, sample_ids, pool)?;
    clock.lap("train");

    // 2. Query routing.
    obs.stage("routing", 0);
    let mut routing = train_routing(params, &base, &trained, pool)?;
    if routing.is_none() {
        obs.note("no --train-queries: routing uses base anchors only (no cross-modal edges)");
    }
    trained.release_sample();
    clock.lap("routing");

    // 3. Assign. Its records take (M + 20) bytes each; over half of what the trained model
    // leaves of the budget they are sorted externally, in zstd-compressed runs on disk
    // (`extsort`).
    let model_bytes = trained.model_bytes();
    if model_bytes > params.ram_budget_bytes / 2 {
        obs.note(&format!(
            "the trained model holds {:.1} MiB, over half the RAM budget; later stages get less",
            model_bytes as f64 / (1u64 << 20) as f64
        ));
    }
    let run_records = params.sort_run_records(n, m, model_bytes);
    if run_records != usize::MAX {
        obs.note(&format!(
            "assign: the records exceed half of the RAM budget the model leaves; sorting them \
             in runs of {run_records} on disk"
        ));
    }
    obs.stage("assign", n);
    let outputs = AssignOutputs {
        pq: dir.path(PQ_FILE),
        keys: dir.path(KEYS_FILE),
        ids: dir.path(RECORD_IDS_SCRATCH),
    };
    let asg = assign(&base, params, &trained, &outputs, pool, &|d| {
        obs.progress(d)
    })?;
    clock.lap("assign");

    // 3b. Hints: every training query's exact answers over the whole base, as records.
    let hint_depth = (params.routing.hint_depth as u64).min(n) as usize;
    let hints = match routing.as_mut() {
        Some(r) if hint_depth > 0 => {
            obs.stage("hints", n);
            let queries = std::mem::replace(
                &mut r.queries,
                crate::data::Matrix::from_vec(Vec::new(), dim)?,
            );
            let answers = exact_answers(params, &base, &queries, hint_depth, pool, &|d| {
                obs.progress(d)
            })?;
            let answers = answers_to_records(&answers, hint_depth, &asg.ids, asg.records)?;
            clock.lap("hints");
            Some(Hints { queries, answers })
        }
        _ => None,
    };

    // 4–5. Lay out vectors, then neighbour lists.
    let data_path = dir.path(DATA_FILE);
    let dtype = base.stored_dtype(params.metric);
    let writer = DataFileWriter::create(
        &data_path,
        &DataFileParams {
            dim: dim as u32,
            dtype,
            max_degree: params.graph.max_degree as u32,
            cluster_sizes: &asg.cluster_sizes,
        },
    )?;
    obs.stage("layout", n);
    write_vectors(&base, params, &asg, &writer, pool, &|d| obs.progress(d))?;
    clock.lap("layout");
    obs.stage("graph", asg.records);
    let lid_stats = estimate_lid_stats(&data_path, &writer, params, 32, pool)?;
    let (entries, graph_report) = write_graphs(
        &data_path,
        &writer,
        params,
        &asg,
        &lid_stats,
        &trained.anchor_graph,
        pool,
        &|d| obs.progress(d),
    )?;
    asg.ids.remove()?;
    clock.lap("graph");

    // 6. Files and publish.
    obs.stage("publish", 0);
    let data_sectors = writer.data_sectors();
    let record_bytes = writer.codec().record_bytes();
    let (data_entry, sectors_entry) = writer.finish(&dir.path(SECTORS_FILE))?;
    // The model moves into the cluster table (no copy of the anchors); assignment's two-level
    // search is released first, as routing's coarse level below is built for query order.
    trained.two_level = None;
    let anchor_degree = trained.anchor_graph.dim() as u32;
    let clusters = ClusterTable {
        centroids: trained.anchors.centroids,
        entries,
        anchor_graph: trained.anchor_graph,
    };
    let clusters_entry = clusters.write(&dir.path(CLUSTERS_FILE))?;
    // Two-level routing's coarse level, stored so that opening the index does not rerun the
    // coarse k-means (the same level `Router::new` would build at open).
    let coarse_entry = if k >= params.clusters.nearest.two_level_min_k.max(2) {
        let router = crate::search::Router::new_in(
            clusters.centroids.view(),
            crate::search::base_order(params.metric),
            2,
            pool,
        );
        let (coarse, labels, probe) = router.coarse_level().expect("two levels");
        let level = CoarseLevel {
            coarse,
            labels,
            probe: probe as u32,
            augmented: params.metric != Metric::L2,
        };
        Some(level.write(&dir.path(COARSE_FILE))?)
    } else {
        None
    };
    let edges_per_anchor = params.routing.edges_per_anchor.max(1);
    let routing_file = match &routing {
        Some(r) => Routing {
            anchors: r.anchors.clone(),
            edges: r.edges.clone(),
        },
        None => Routing::empty(dim, edges_per_anchor)?,
    };
    let routing_entry = routing_file.write(&dir.path(ROUTING_FILE))?;
    let stats = Stats {
        base_count: trained.stats.count(),
        query_count: routing.as_ref().map_or(0, |r| r.stats.count()),
        has_query_stats: routing.is_some(),
        lid_mean: lid_stats.mean as f32,
        lid_std: lid_stats.std as f32,
        // Welford saw the rows before the block scales; the assignment pass saw them after.
        max_base_norm: if blocks.is_some() {
            asg.max_norm
        } else {
            trained.stats.max_norm()
        },
        base_mean: trained.stats.mean(),
        base_var: trained.stats.variance(),
        query_mean: routing
            .as_ref()
            .map_or_else(|| vec![0.0; dim], |r| r.stats.mean()),
        query_var: routing
            .as_ref()
            .map_or_else(|| vec![0.0; dim], |r| r.stats.variance()),
    };
    let stats_entry = stats.write(&dir.path(STATS_FILE))?;
    let (pq_entry, keys_entry) = (asg.pq_entry, asg.keys_entry);
    let blocks_entry = match &blocks {
        Some(t) => Some(t.write(&dir.path(BLOCKS_FILE))?),
        None => None,
    };
    let hints_entry = match &hints {
        Some(h) => Some(h.write(&dir.path(HINTS_FILE))?),
        None => None,
    };

    let mut sizes = asg.cluster_sizes.clone();
    sizes.sort_unstable();
    let index_file_bytes = [
        &data_entry,
        &sectors_entry,
        &clusters_entry,
        &routing_entry,
        &stats_entry,
        &pq_entry,
        &keys_entry,
    ]
    .iter()
    .map(|e| e.bytes)
    .sum::<u64>()
        + blocks_entry.as_ref().map_or(0, |e| e.bytes)
        + coarse_entry.as_ref().map_or(0, |e| e.bytes)
        + hints_entry.as_ref().map_or(0, |e| e.bytes);
    let ram = clusters_entry.bytes as f64
        + hints_entry.as_ref().map_or(0, |e| e.bytes) as f64
        + coarse_entry.as_ref().map_or(0, |e| e.bytes) as f64
        + routing_entry.bytes as f64
        + stats_entry.bytes as f64
        + (asg.records * m as u64
            + if params.metric == Metric::L2 {
                4 * asg.records
            } else {
                0
            }) as f64;
    clock.lap("publish");
    let mut summary = BuildSummary {
        n_vectors: n,
        n_records: asg.records,
        dim,
        metric: params.metric.to_string(),
        clusters: k,
        query_anchors: routing.as_ref().map_or(0, |r| r.anchors.rows()),
        pq_subspaces: m,
        spill_factor: asg.records as f64 / n as f64,
        stages: clock.stages.clone(),
        total_seconds: clock.start.elapsed().as_secs_f64(),
        peak_rss_bytes: peak_rss_bytes(),
        ssd_bytes: index_file_bytes,
        ram_bytes_per_vector: ram / n as f64,
        cluster_size_min_median_max: [sizes[0], sizes[sizes.len() / 2], sizes[sizes.len() - 1]],
        routing_vote_coverage: routing.as_ref().map(|r| r.vote_coverage),
        hint_queries: hints.as_ref().map_or(0, Hints::len),
        hint_depth: hints.as_ref().map_or(0, Hints::depth),
        graph: graph_report,
        blocks: blocks.clone(),
        model_bytes,
        sort_spill: asg.sort.clone(),
        threads: pool.current_num_threads(),
        seed: params.seed,
    };
    let report_path = dir.path(REPORT_FILE);
    let json = serde_json::to_vec_pretty(&summary).expect("summary serialises");
    write_synced(&report_path, &json)?;
    let report_entry = FileEntry::new(REPORT_FILE, json.len() as u64, crc32c::crc32c(&json))?;
    summary.ssd_bytes += report_entry.bytes;

    let mut meta: IndexMeta = bytemuck::Zeroable::zeroed();
    meta.dim = dim as u32;
    meta.set_dtype(dtype);
    meta.set_metric(params.metric);
    meta.distance_mode = 0;
    meta.flags = if routing.is_some() {
        META_FLAG_QUERY_ANCHORS
    } else {
        0
    } | if matches!(params.graph.alpha, AlphaMode::Lid(_)) {
        META_FLAG_LID_ADAPTIVE
    } else {
        0
    } | if blocks.is_some() {
        META_FLAG_BLOCKS
    } else {
        0
    };
    meta.n_vectors = n;
    meta.n_records = summary.n_records;
    meta.data_sectors = data_sectors;
    meta.seed = params.seed;
    meta.n_clusters = k as u32;
    meta.n_query_anchors = summary.query_anchors as u32;
    meta.pq_subspaces = m as u32;
    meta.max_degree = params.graph.max_degree as u32;
    meta.record_bytes = record_bytes;
    meta.spill_epsilon = params.spill.epsilon;
    meta.spill_max = params.spill.max_copies as u32;
    let (amin, amax) = match params.graph.alpha {
        AlphaMode::Fixed(a) => (a, a),
        AlphaMode::Lid(map) => (map.alpha_min, map.alpha_max),
    };
    meta.alpha_min = amin;
    meta.alpha_max = amax;
    meta.lid_k = params.graph.lid_k as u32;
    meta.anchor_degree = anchor_degree;
    meta.edges_per_query_anchor = edges_per_anchor as u32;
    meta.build_threads = pool.current_num_threads() as u32;
    let mut files = vec![
        clusters_entry,
        routing_entry,
        stats_entry,
        pq_entry,
        data_entry,
        sectors_entry,
        keys_entry,
        report_entry,
    ];
    files.extend(blocks_entry);
    files.extend(coarse_entry);
    files.extend(hints_entry);
    let manifest = Manifest { meta, files };
    dir.publish(&manifest)?;
    Ok(summary)
}

/// For a multi-vector base: the block spreads from the statistics pass, the block scales
/// (applied by `base` from now on), the sample and statistics rescaled to stored coordinates,
/// and the table for `blocks.m3`. `None` for a single file.
fn block_table(
    base: &mut BaseSource,
    params: &BuildParams,
    stats: &mut super::Welford,
    sample: &mut crate::data::Matrix<f32>,
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

fn write_synced(path: &std::path::Path, bytes: &[u8]) -> Result<(), BuildError> {
    use std::io::Write;
    let io = |e| BuildError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let mut f = std::fs::File::create(path).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

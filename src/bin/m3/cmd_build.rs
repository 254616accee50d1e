//! `m3 build`: build an index.

use std::path::PathBuf;
use std::sync::Mutex;

use clap::Args;
use indicatif::ProgressBar;
use m3::build::{
    BuildObserver, BuildParams, ClusterParams, CrossLinkParams, RoutingParams, SpillParams,
    build_index,
};
use m3::distance::Metric;
use m3::graph::{AlphaMode, ClusterGraphParams};
use m3::kmeans::NearestParams;

use crate::common::{
    parse_block_files, parse_block_weights, parse_metric, progress_bar, thread_pool,
};

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Base vectors (.fbin/.u8bin/.i8bin/.fvecs/.bvecs/.npy), streamed; never held whole in RAM.
    /// The staged build (`--stage train|assign|shard`) takes several (repeat `--base`): their
    /// rows are numbered by concatenation, in the order given.
    #[arg(long, required_unless_present_any = ["block", "work"], conflicts_with = "block")]
    pub(crate) base: Vec<PathBuf>,
    /// Multi-vector base: one block's vectors, `NAME=FILE` (repeat per block, in row order; the
    /// files must have the same rows). Blocks are standardised (divided by their spread) and
    /// PQ subspaces never straddle two blocks (DESIGN §4.6).
    #[arg(long, value_name = "NAME=FILE")]
    block: Vec<String>,
    /// Build weight of a block, `NAME=W` (> 0; default 1): the default query weight and the
    /// weighting the index's geometry is made for.
    #[arg(long, value_name = "NAME=W")]
    block_weight: Vec<String>,
    /// Store the blocks at their raw scale (× √weight) instead of standardised; queries still
    /// use the standardised distance. For measuring what standardisation buys.
    #[arg(long)]
    no_standardize: bool,
    /// l2, ip (maximum inner product) or cosine (vectors are stored normalised).
    #[arg(long, value_parser = parse_metric, required_unless_present = "work")]
    metric: Option<Metric>,
    /// Output index directory; appears only when complete. Only an existing M³ index (or an
    /// empty directory) is replaced, atomically; anything else there, or an input inside it,
    /// is refused before any work.
    ///
    /// With `--stage train`, the work directory; with `--stage publish`, the sharded index.
    #[arg(long, required_unless_present = "work")]
    pub(crate) out: Option<PathBuf>,
    /// Training queries of the query modality: enables query anchors and cross-modal edges.
    #[arg(long)]
    train_queries: Option<PathBuf>,
    /// User ids, one per base row, all distinct (.u64bin: u32 n, u32 1, n × u64; .ibin; .npy
    /// of u64/i64/u32/i32): results report them. Default: the row numbers.
    #[arg(long)]
    ids: Option<PathBuf>,
    /// Worker threads (0 = one per core). Output is byte-identical for the same seed and threads.
    #[arg(long, default_value_t = 0)]
    pub(crate) threads: usize,
    /// Seed of every random choice.
    #[arg(long, default_value_t = BuildParams::DEFAULT_SEED)]
    seed: u64,
    /// Peak-memory target in GiB (positive): bounds the training sample; the summary reports
    /// the measured peak.
    #[arg(long, default_value_t = (BuildParams::DEFAULT_RAM_BUDGET_BYTES >> 30) as f64,
          allow_negative_numbers = true,
          value_parser = crate::common::parse_ram_budget_gb)]
    ram_budget_gb: f64,
    /// Mean cluster size (K = N / cluster_size). Smaller clusters: finer routing, more anchors.
    #[arg(long, default_value_t = ClusterParams::DEFAULT_TARGET_SIZE)]
    cluster_size: usize,
    /// Cap on a cluster's size as a multiple of the mean (balanced k-means).
    #[arg(long, default_value_t = ClusterParams::DEFAULT_MAX_SIZE_FACTOR)]
    max_cluster_factor: f32,
    /// PQ bytes per vector (subspaces); default ⌈dim/2⌉ capped at 64.
    #[arg(long)]
    pq_bytes: Option<usize>,
    /// Do not write refinement codes (`refine.m3`: a second PQ code per record, re-ranking
    /// the best candidates in RAM so fewer are read; it doubles the codes' RAM).
    #[arg(long)]
    no_refine: bool,
    /// Extra cluster copies per vector (spilling); 0 disables. Off by default: on GloVe it
    /// cost 1.7× the RAM per vector for QPS within noise at recall 0.90–0.95, and it is the
    /// way to reach 0.99 there (docs/decisions/0004-spill-default.md).
    #[arg(long, default_value_t = SpillParams::DEFAULT_MAX_COPIES)]
    spill: usize,
    /// Spill into cluster j only when d(x, c_j) ≤ (1 + ε)·d(x, c_1).
    #[arg(long, default_value_t = SpillParams::DEFAULT_EPSILON)]
    spill_epsilon: f32,
    /// Query anchors (default ⌈training queries / 40⌉, at most 4096).
    #[arg(long)]
    query_anchors: Option<usize>,
    /// Base clusters linked from each query anchor.
    #[arg(long, default_value_t = RoutingParams::DEFAULT_EDGES_PER_ANCHOR)]
    edges_per_anchor: usize,
    /// Exact answers over the whole base kept per training query (`hints.m3`): the search
    /// scores the answers of a query's nearest training queries, which is what finds the
    /// neighbours of out-of-distribution queries (docs/decisions/0007). 0 = none. Costs
    /// training queries × N × dim at build time.
    #[arg(long, default_value_t = RoutingParams::DEFAULT_HINT_DEPTH)]
    hint_depth: usize,
    /// Neighbours per stored vector (R).
    #[arg(long, default_value_t = ClusterGraphParams::DEFAULT_MAX_DEGREE)]
    degree: usize,
    /// Candidates per vector before pruning (L).
    #[arg(long, default_value_t = ClusterGraphParams::DEFAULT_CANDIDATES)]
    candidates: usize,
    /// Pruning α: `fixed:A`, or LID-adaptive `falls:MIN:MAX` (α falls as LID rises, MCGI) or
    /// `rises:MIN:MAX`.
    #[arg(long, default_value_t = AlphaMode::default())]
    alpha: AlphaMode,
    /// Links per vector into neighbouring clusters (followed by the search's neighbour-list
    /// rounds into clusters it did not probe); they replace the last local neighbours.
    #[arg(long, default_value_t = CrossLinkParams::DEFAULT_LINKS)]
    cross_links: usize,
    /// Neighbouring clusters (by the anchor graph) the cross links are drawn from.
    #[arg(long, default_value_t = CrossLinkParams::DEFAULT_CLUSTERS)]
    cross_clusters: usize,
    /// Rerank distance stored in the index: `native`, or `auto` to choose between the native
    /// metric and LC-CMD (α, β) on calibration pairs (--calib-queries, --calib-partners).
    #[arg(long, default_value = "native", value_parser = ["native", "auto"])]
    distance: String,
    #[command(flatten)]
    calib: crate::cmd_calibrate::CalibrationArgs,
    /// Find nearest anchors in two levels (≈ √K coarse groups) from this many anchors on
    /// (k-means, assignment, anchor graph); below it, an exact scan. At K = 39,063 two levels
    /// with probe 8 found the true nearest anchor for 99.98% of rows, 12× faster
    /// (docs/BENCHMARKS.md, "Two-level assignment"). From this many anchors on, the index also
    /// stores routing's coarse level (`coarse.m3`), so that opening it does not recompute it.
    #[arg(long, default_value_t = NearestParams::DEFAULT_TWO_LEVEL_MIN_K)]
    two_level_min_k: usize,
    /// Coarse groups searched per row by the two-level anchor search.
    #[arg(long, default_value_t = NearestParams::DEFAULT_PROBE)]
    two_level_probe: usize,
    /// Also print the build summary as JSON on stdout.
    #[arg(long)]
    pub(crate) json: bool,
    /// Build a sharded index of S shards at `--out` (docs/DISTRIBUTED.md): the index is built
    /// at `<out>.unsharded`, cut into shards (`m3 shard`), then removed.
    #[arg(long)]
    pub(crate) shards: Option<usize>,
    /// Run one stage of the staged (sharded) build alone, with files between the stages
    /// (docs/DISTRIBUTED.md, "Stages"): `train` (needs `--shards`; `--out` is the work
    /// directory), `assign` (`--work`, `--rows A..B`), `shard` (`--work`, `--shard i`),
    /// `publish` (`--work`, `--out DIR`).
    #[arg(long, value_parser = ["train", "assign", "shard", "publish"])]
    pub(crate) stage: Option<String>,
    /// The staged build's work directory (what `--stage train --out` made).
    #[arg(long)]
    pub(crate) work: Option<PathBuf>,
    /// `--stage assign`: the base rows to assign, `A..B` (end excluded).
    #[arg(long)]
    pub(crate) rows: Option<String>,
    /// `--stage shard`: the shard to build.
    #[arg(long)]
    pub(crate) shard: Option<usize>,
}

pub(crate) struct Bars {
    current: Mutex<Option<ProgressBar>>,
}

impl Bars {
    pub(crate) fn new() -> Self {
        Self {
            current: Mutex::new(None),
        }
    }

    /// Clears the last stage's bar.
    pub(crate) fn finish(&self) {
        if let Some(pb) = self.current.lock().expect("progress lock").take() {
            pb.finish_and_clear();
        }
    }
}

impl BuildObserver for Bars {
    fn stage(&self, name: &'static str, total: u64) {
        let mut cur = self.current.lock().expect("progress lock");
        if let Some(pb) = cur.take() {
            pb.finish_and_clear();
        }
        eprintln!("m3 build: {name}");
        if total > 0 {
            *cur = Some(progress_bar(total, name));
        }
    }
    fn progress(&self, done: u64) {
        if let Some(pb) = self.current.lock().expect("progress lock").as_ref() {
            pb.set_position(done);
        }
    }
    fn note(&self, text: &str) {
        eprintln!("m3 build: {text}");
    }
}

pub fn run(mut args: BuildArgs) -> anyhow::Result<()> {
    if args.stage.is_some() {
        return crate::cmd_build_stage::run(&args);
    }
    let out = args.out_dir()?.clone();
    if let Some(shards) = args.shards.take() {
        let sharded = out.clone();
        let empty = std::fs::read_dir(&sharded).map_or(true, |mut d| d.next().is_none());
        anyhow::ensure!(
            empty,
            "--shards: {} exists and is not empty (a sharded index is written into a new or \
             empty directory)",
            sharded.display()
        );
        let mut name = sharded
            .file_name()
            .ok_or_else(|| anyhow::anyhow!("--out {} has no name", sharded.display()))?
            .to_os_string();
        name.push(".unsharded");
        let unsharded = sharded.with_file_name(name);
        args.out = Some(unsharded.clone());
        let seed = args.seed;
        run(args)?;
        let (_, summaries) = m3::build::build_shards(&unsharded, shards, seed, &sharded)?;
        for s in &summaries {
            eprintln!(
                "m3 build: shard {} of {}: {} clusters, {} records",
                s.shard, s.shards, s.clusters, s.records
            );
        }
        std::fs::remove_dir_all(&unsharded)?;
        eprintln!("m3 build: wrote the sharded index {}", sharded.display());
        return Ok(());
    }
    let auto = args.distance == "auto";
    anyhow::ensure!(
        !auto || (args.calib.calib_queries.is_some() && args.calib.calib_partners.is_some()),
        "--distance auto needs --calib-queries and --calib-partners"
    );
    check_output(&args)?;
    let pool = thread_pool(args.threads)?;
    let p = args.params()?;
    let bars = Bars {
        current: Mutex::new(None),
    };
    let summary = build_index(&p, &pool, &bars)?;
    if let Some(pb) = bars.current.lock().expect("progress lock").take() {
        pb.finish_and_clear();
    }
    print_summary(&summary);
    eprintln!("m3 build: wrote {}", out.display());
    if auto {
        eprintln!("m3 build: calibrating the rerank distance (--distance auto)");
        let base = match args.base.first() {
            Some(b) => crate::cmd_calibrate::BaseInput::File(b.clone()),
            None => {
                crate::cmd_calibrate::BaseInput::Blocks(parse_block_files("--block", &args.block)?)
            }
        };
        crate::cmd_calibrate::calibrate_index(
            &out,
            &base,
            &args.calib,
            args.seed,
            args.threads,
            false,
        )?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(())
}

/// Before any work: repairs what a killed build left at `--out`, then refuses an `--out`
/// that is not replaceable or holds an input (`build_index` checks again with its own
/// inputs).
fn check_output(args: &BuildArgs) -> anyhow::Result<()> {
    let out = args.out_dir()?;
    crate::common::recover_index("build", out);
    let block_files = parse_block_files("--block", &args.block)?;
    let mut inputs: Vec<&std::path::Path> = block_files.iter().map(|(_, p)| p.as_path()).collect();
    inputs.extend(args.base.iter().map(PathBuf::as_path));
    inputs.extend(args.train_queries.as_deref());
    inputs.extend(args.ids.as_deref());
    inputs.extend(args.calib.calib_queries.as_deref());
    let partners = args
        .calib
        .calib_partners
        .as_deref()
        .filter(|p| *p != "identity");
    inputs.extend(partners.map(std::path::Path::new));
    m3::format::check_target(out, &inputs)?;
    Ok(())
}

impl BuildArgs {
    /// Refuses the flags the staged build does not implement (rather than ignoring them).
    pub(crate) fn check_staged(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.distance == "native",
            "--distance {}: the staged build stores the native rerank distance only \
             (--distance auto is not implemented for --stage)",
            self.distance
        );
        anyhow::ensure!(
            self.ids.is_none(),
            "--ids: user ids are not implemented for the staged build (--stage)"
        );
        Ok(())
    }

    /// `--out`.
    pub(crate) fn out_dir(&self) -> anyhow::Result<&PathBuf> {
        self.out
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("--out is required"))
    }

    fn metric(&self) -> anyhow::Result<Metric> {
        self.metric
            .ok_or_else(|| anyhow::anyhow!("--metric is required"))
    }

    /// The library's parameters for these flags.
    pub(crate) fn params(&self) -> anyhow::Result<BuildParams> {
        let mut p = match self.base.split_first() {
            Some((base, more)) => {
                anyhow::ensure!(
                    self.block_weight.is_empty() && !self.no_standardize,
                    "--block-weight and --no-standardize need --block"
                );
                anyhow::ensure!(
                    more.is_empty() || self.stage.is_some(),
                    "{} --base files: only the staged build (--stage) takes several",
                    self.base.len()
                );
                let mut p = BuildParams::new(base.clone(), self.metric()?, self.out_dir()?.clone());
                p.more_base = more.to_vec();
                p
            }
            None => self.block_params()?,
        };
        p.train_queries = self.train_queries.clone();
        p.ids = self.ids.clone();
        p.seed = self.seed;
        p.ram_budget_bytes = (self.ram_budget_gb * (1u64 << 30) as f64) as u64;
        p.clusters.target_size = self.cluster_size.max(1);
        p.clusters.max_size_factor = self.max_cluster_factor;
        p.pq.subspaces = self.pq_bytes;
        p.pq.refine = !self.no_refine;
        p.spill.max_copies = self.spill;
        p.spill.epsilon = self.spill_epsilon;
        p.routing.query_anchors = self.query_anchors;
        p.routing.edges_per_anchor = self.edges_per_anchor;
        p.routing.hint_depth = self.hint_depth;
        p.graph.max_degree = self.degree;
        p.graph.candidates = self.candidates;
        p.graph.alpha = self.alpha;
        p.cross.links = self.cross_links;
        p.cross.clusters = self.cross_clusters;
        p.clusters.nearest.two_level_min_k = self.two_level_min_k;
        p.clusters.nearest.probe = self.two_level_probe.max(1);
        Ok(p)
    }

    /// The parameters of a multi-vector build (`--block`, `--block-weight`).
    fn block_params(&self) -> anyhow::Result<BuildParams> {
        let files = parse_block_files("--block", &self.block)?;
        let layout_names: Vec<(String, usize)> =
            files.iter().map(|(n, _)| (n.clone(), 1)).collect();
        let layout = m3::multivec::BlockLayout::new(&layout_names)?;
        let weights = layout.weights(
            &parse_block_weights("--block-weight", &self.block_weight)?,
            |_| 1.0,
        )?;
        let blocks = files
            .into_iter()
            .zip(weights)
            .map(|((name, path), weight)| m3::build::BlockInput { name, path, weight })
            .collect();
        let mut p = BuildParams::with_blocks(blocks, self.metric()?, self.out_dir()?.clone());
        if let Some(b) = p.blocks.as_mut() {
            b.standardize = !self.no_standardize;
        }
        Ok(p)
    }
}

/// The summary on stderr: what was built, the blocks, each stage's time, the costs.
pub(crate) fn print_summary(summary: &m3::build::BuildSummary) {
    eprintln!(
        "m3 build: {} vectors × {} ({}) → {} records in {} clusters, {} query anchors, PQ {} B",
        summary.n_vectors,
        summary.dim,
        summary.metric,
        summary.n_records,
        summary.clusters,
        summary.query_anchors,
        summary.pq_subspaces
    );
    if let Some(t) = &summary.blocks {
        for b in &t.blocks {
            eprintln!(
                "  block {:<10} dim {:>5}  spread σ {:<10.4} weight {:<6} stored scale {:.6}",
                b.name, b.dim, b.spread, b.weight, b.scale
            );
        }
    }
    for s in &summary.stages {
        eprintln!("  {:<8} {:>9.2} s", s.stage, s.seconds);
    }
    eprintln!(
        "  total    {:>9.2} s; peak RSS {:.1} MiB; SSD {:.1} MiB; RAM {:.1} B/vector; spill ×{:.2}",
        summary.total_seconds,
        summary.peak_rss_bytes as f64 / (1 << 20) as f64,
        summary.ssd_bytes as f64 / (1 << 20) as f64,
        summary.ram_bytes_per_vector,
        summary.spill_factor
    );
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "  budget   model {:.1} MiB; assign sort {} run(s), {:.1} MiB spilled (zstd {:.1} MiB)",
        mib(summary.model_bytes),
        summary.sort_spill.runs,
        mib(summary.sort_spill.raw_bytes),
        mib(summary.sort_spill.compressed_bytes)
    );
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        build: BuildArgs,
    }

    /// The flags' defaults are the library's: `m3 build` without knobs asks for what
    /// `BuildParams::new` describes.
    #[test]
    fn flag_defaults_are_the_library_defaults() {
        let flags =
            Flags::try_parse_from(["m3", "--base", "b.fbin", "--metric", "l2", "--out", "o"])
                .expect("flags parse");
        let from_flags = flags.build.params().expect("parameters");
        let library = BuildParams::new("b.fbin".into(), Metric::L2, "o".into());
        assert_eq!(format!("{from_flags:?}"), format!("{library:?}"));
    }
}

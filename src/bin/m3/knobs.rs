//! Flags shared by `search`, `bench` and `tune`: the index, I/O backend and search knobs.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use m3::data::{GroundTruth, Matrix};
use m3::eval::{QuerySet, QuerySource};
use m3::io::{IoBackend, ReaderOptions};
use m3::search::{BatchOptions, Index, RerankDistance, SearchParams};

#[derive(Args, Debug, Clone)]
pub struct IndexArgs {
    /// Index directory (built by `m3 build`).
    #[arg(long)]
    pub index: PathBuf,
    /// Query vectors (for a multi-vector index: every block, concatenated in block order).
    #[arg(
        long,
        required_unless_present = "query_block",
        conflicts_with = "query_block"
    )]
    pub queries: Option<PathBuf>,
    /// Multi-vector index: one block's query vectors, `NAME=FILE` (repeatable; any non-empty
    /// subset of the index's blocks; the others are left out and cost nothing).
    #[arg(long, value_name = "NAME=FILE")]
    pub query_block: Vec<String>,
    /// Multi-vector index: a block's query weight, `NAME=W` (≥ 0; repeatable; default: the
    /// block's build weight). Distance = Σ weight · D_block on standardised blocks.
    #[arg(long, value_name = "NAME=W")]
    pub weight: Vec<String>,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Use only the first N queries (the ground truth is cut to match).
    #[arg(long)]
    pub max_queries: Option<usize>,
    /// Block reader: auto (io_uring, falling back to pread), uring or pread.
    #[arg(long, default_value = "auto")]
    pub io: IoBackend,
    /// Queries in flight per worker thread: while some wait for their sectors, the thread
    /// computes others (1 = one query at a time).
    #[arg(long, default_value_t = m3::search::DEFAULT_INFLIGHT,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    pub inflight: usize,
    /// Route in two levels (≈ √K coarse groups) when there are at least this many base (or
    /// query-modality) anchors; below, every anchor is scored.
    #[arg(long, default_value_t = m3::search::DEFAULT_ROUTE_MIN_K)]
    pub route_min_k: usize,
}

impl IndexArgs {
    pub fn batch_options(&self) -> BatchOptions {
        BatchOptions {
            inflight_per_thread: self.inflight,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct KnobArgs {
    /// Base clusters probed.
    #[arg(long, default_value_t = SearchParams::DEFAULT_NPROBE)]
    pub nprobe: usize,
    /// Query-modality anchors consulted (0 = base anchors only).
    #[arg(long, default_value_t = SearchParams::DEFAULT_QPROBE)]
    pub qprobe: usize,
    /// Cross-modal edges followed per query anchor.
    #[arg(long, default_value_t = SearchParams::DEFAULT_EDGES)]
    pub edges: usize,
    /// Nearest training queries whose exact answers (`hints.m3`) are scored as candidates
    /// (0 = none; ignored by an index without hints).
    #[arg(long, default_value_t = SearchParams::DEFAULT_HINTS)]
    pub hints: usize,
    /// Answers taken from each of those training queries (0 = all the index stores).
    #[arg(long, default_value_t = SearchParams::DEFAULT_HINT_DEPTH)]
    pub hint_depth: usize,
    /// Candidates read from SSD and reranked exactly (default 4·max(k, 10)).
    #[arg(long)]
    pub rerank: Option<usize>,
    /// Candidates re-ranked in RAM by the index's refinement codes (`refine.m3`) before the
    /// best --rerank of them are read (0 = off; ignored without refinement codes).
    #[arg(long, default_value_t = SearchParams::DEFAULT_REFINE)]
    pub refine: usize,
    /// Rounds along neighbour lists (each one more I/O round).
    #[arg(long, default_value_t = SearchParams::DEFAULT_EXPAND_ROUNDS)]
    pub expand_rounds: usize,
    /// Best results whose neighbour lists feed a round (default k).
    #[arg(long)]
    pub expand_from: Option<usize>,
    /// Records read per round (default 2·max(k, 10)).
    #[arg(long)]
    pub expand_read: Option<usize>,
    /// Scan every probed cluster (disable the triangle-inequality early stop).
    #[arg(long)]
    pub no_early_stop: bool,
    /// Rerank distance: auto (what calibration stored in the index; native when it was not
    /// calibrated), native (the index metric) or lccmd with --alpha/--beta (DESIGN §4.3; needs
    /// an index built with --train-queries). LC-CMD distances are reported as D² (smaller is
    /// better).
    #[arg(long, default_value = "auto", value_parser = ["auto", "native", "lccmd"])]
    pub distance: String,
    /// LC-CMD α: weight of the query modality's variance.
    #[arg(long, default_value_t = SearchParams::DEFAULT_LCCMD_ALPHA)]
    pub alpha: f32,
    /// LC-CMD β: shrinkage toward isotropic weights (0 = plain L2).
    #[arg(long, default_value_t = SearchParams::DEFAULT_LCCMD_BETA)]
    pub beta: f32,
    /// Coarse groups searched by two-level routing (indexes with ≥ --route-min-k anchors);
    /// 0 = automatic.
    #[arg(long, default_value_t = SearchParams::DEFAULT_ROUTE_GROUPS)]
    pub route_groups: usize,
}

impl KnobArgs {
    pub fn params(&self, k: usize, index: &Index) -> SearchParams {
        let mut p = self.params_but_distance(k);
        p.distance = match self.distance.as_str() {
            "lccmd" => RerankDistance::LcCmd {
                alpha: self.alpha,
                beta: self.beta,
            },
            "native" => RerankDistance::Native,
            _ => index.calibrated_distance(),
        };
        p
    }

    #[cfg(feature = "serve")]
    /// The knobs as `m3 serve` takes them (`auto` is left to the server, which has the index).
    pub fn serve_knobs(&self, k: usize) -> m3::serve::Knobs {
        let mut p = self.params_but_distance(k);
        if self.distance == "lccmd" {
            p.distance = RerankDistance::LcCmd {
                alpha: self.alpha,
                beta: self.beta,
            };
        }
        let mut knobs = m3::serve::Knobs::from_params(&p);
        if self.distance == "auto" {
            knobs.distance = None;
        }
        knobs
    }

    fn params_but_distance(&self, k: usize) -> SearchParams {
        let mut p = SearchParams::new(k);
        p.nprobe = self.nprobe;
        p.qprobe = self.qprobe;
        p.edges = self.edges;
        p.hints = self.hints;
        p.hint_depth = self.hint_depth;
        if let Some(r) = self.rerank {
            p.rerank = r;
        }
        p.refine = self.refine;
        p.expand_rounds = self.expand_rounds;
        if let Some(v) = self.expand_from {
            p.expand_from = v;
        }
        if let Some(v) = self.expand_read {
            p.expand_read = v;
        }
        p.early_stop = !self.no_early_stop;
        p.route_groups = self.route_groups;
        p
    }
}

/// Opens `--index` for command `cmd`, after repairing what a killed build left there.
pub fn open_index(cmd: &str, args: &IndexArgs) -> anyhow::Result<Index> {
    crate::common::recover_index(cmd, &args.index);
    let mut index = Index::open(&args.index, args.io, &ReaderOptions::default())
        .with_context(|| format!("opening index {}", args.index.display()))?;
    if args.route_min_k != m3::search::DEFAULT_ROUTE_MIN_K {
        index.set_route_min_k(args.route_min_k);
    }
    let info = index.reader_info();
    if let Some(reason) = &info.fallback_reason {
        // The reason already reads "io_uring unavailable (…); reading with pread on N threads".
        eprintln!("m3: {reason}");
    }
    Ok(index)
}

/// The queries of `--queries` or `--query-block`, with the `--weight`s resolved against the
/// index ([`m3::eval::QuerySet::read`]).
pub fn read_queries(args: &IndexArgs, index: &Index) -> anyhow::Result<QuerySet> {
    let weights = crate::common::parse_block_weights("--weight", &args.weight)?;
    let source = match &args.queries {
        Some(path) => QuerySource::File(path.clone()),
        None => {
            // Said in the flags' words, before the block files are parsed.
            anyhow::ensure!(
                index.blocks().is_some(),
                "--query-block needs a multi-vector index; {} was built from a single --base",
                args.index.display()
            );
            QuerySource::Blocks(crate::common::parse_block_files(
                "--query-block",
                &args.query_block,
            )?)
        }
    };
    Ok(QuerySet::read(index, &source, &weights, args.max_queries)?)
}

/// Reads ground truth and keeps its first `queries` rows. It must have at least that many
/// rows and at least `k` neighbours per row. Commands call it before they search, so that a
/// wrong `--gt` fails at once, not after the work.
pub fn read_gt(
    gt: &Path,
    dists: Option<&Path>,
    queries: usize,
    k: usize,
) -> anyhow::Result<GroundTruth> {
    let full = match dists {
        Some(d) => GroundTruth::read_with_dists(gt, d)?,
        None => GroundTruth::read(gt)?,
    };
    anyhow::ensure!(
        full.queries() >= queries,
        "--gt {}: the ground truth has {} queries, fewer than the {} queries searched",
        gt.display(),
        full.queries(),
        queries
    );
    anyhow::ensure!(
        full.k() >= k,
        "--gt {}: the ground truth has {} neighbours per query, fewer than --k {k}",
        gt.display(),
        full.k()
    );
    let k = full.k();
    let cut = |m: &Matrix<u32>| Matrix::from_vec(m.as_slice()[..queries * k].to_vec(), k);
    Ok(GroundTruth {
        ids: cut(&full.ids)?,
        dists: match &full.dists {
            Some(d) => Some(Matrix::from_vec(d.as_slice()[..queries * k].to_vec(), k)?),
            None => None,
        },
    })
}

pub use m3::stats::percentile;

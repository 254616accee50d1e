//! `m3 baseline`: the per-block comparison system for multi-vector queries
//! ([`m3::eval::Baseline`]): one single-vector index per block, top k′ = c·k from each,
//! union, exact weighted rerank from the block vectors in RAM.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use m3::eval::{Baseline, BaselineKnobs, BlockVectors};
use m3::io::ReaderOptions;
use m3::multivec::{BlockFiles, BlockQueries, base_spreads};
use m3::search::{BatchOptions, Index, SearchParams};

use crate::common::{parse_block_files, parse_block_weights, parse_metric, thread_pool};

#[derive(Args, Debug)]
pub struct BaselineArgs {
    /// A block's single-vector index, `NAME=DIR` (built with `m3 build --base` on that block's
    /// file); needed for every block the queries give.
    #[arg(long, value_name = "NAME=DIR", required = true)]
    block_index: Vec<String>,
    /// Every block's base file, `NAME=FILE`, in row order (as for `m3 build --block`): the
    /// final ranking reads the candidates' vectors from these, held in RAM.
    #[arg(long, value_name = "NAME=FILE", required = true)]
    block: Vec<String>,
    /// A block's query vectors, `NAME=FILE` (any non-empty subset).
    #[arg(long, value_name = "NAME=FILE", required = true)]
    query_block: Vec<String>,
    /// Query weight of a block, `NAME=W` (default 1 for every given block).
    #[arg(long, value_name = "NAME=W")]
    weight: Vec<String>,
    /// l2, ip or cosine (the metric of the per-block indexes).
    #[arg(long, value_parser = parse_metric)]
    metric: m3::distance::Metric,
    /// Weighted ground truth (`m3 gt --block …`).
    #[arg(long)]
    gt: PathBuf,
    #[arg(long, default_value_t = SearchParams::DEFAULT_K)]
    k: usize,
    /// Candidates per block as multiples of k (k′ = c·k), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    factors: Vec<usize>,
    /// Clusters probed per block search.
    #[arg(long, default_value_t = SearchParams::DEFAULT_NPROBE)]
    nprobe: usize,
    /// Records reranked per block search (default 4·max(k′, 10)).
    #[arg(long)]
    rerank: Option<usize>,
    #[arg(long, default_value_t = 1)]
    threads: usize,
    #[arg(long, default_value_t = m3::search::DEFAULT_INFLIGHT)]
    inflight: usize,
    /// Print one JSON object per point.
    #[arg(long)]
    json: bool,
}

pub fn run(args: BaselineArgs) -> anyhow::Result<()> {
    let pool = thread_pool(args.threads)?;
    let base = BlockFiles::open(&parse_block_files("--block", &args.block)?)?;
    let layout = base.layout().clone();
    let queries = BlockQueries::read(
        &layout,
        &parse_block_files("--query-block", &args.query_block)?,
        None,
    )?;
    // Before the work: a wrong --gt fails now.
    let gt = crate::knobs::read_gt(&args.gt, None, queries.rows.rows(), args.k)?;
    let given = parse_block_weights("--weight", &args.weight)?;
    let weights = layout.weights(&given, |b| if queries.present[b] { 1.0 } else { 0.0 })?;
    let spreads = pool.install(|| base_spreads(&base, args.metric))?;
    let vectors = BlockVectors::load(&base, args.metric)?;
    let mut indexes: Vec<Option<Index>> = (0..layout.len()).map(|_| None).collect();
    for (name, dir) in parse_block_files("--block-index", &args.block_index)? {
        let b = layout.position(&name)?;
        crate::common::recover_index("baseline", &dir);
        let index = Index::open(&dir, m3::io::IoBackend::Auto, &ReaderOptions::default())
            .with_context(|| format!("opening {}", dir.display()))?;
        anyhow::ensure!(
            index.dim() == layout.blocks()[b].dim && index.blocks().is_none(),
            "{}: not a single-vector index of block '{name}' (dim {})",
            dir.display(),
            layout.blocks()[b].dim
        );
        indexes[b] = Some(index);
    }
    let refs: Vec<Option<&Index>> = indexes.iter().map(Option::as_ref).collect();
    let options = BatchOptions {
        inflight_per_thread: args.inflight.max(1),
    };
    if !args.json {
        println!(
            "{:>6} {:>6} | {:>8} {:>8} {:>7} {:>8} {:>7} {:>7}",
            "c", "k'", "recall", "QPS", "reads", "KiB", "cands", "dists"
        );
    }
    let baseline = Baseline {
        indexes: &refs,
        vectors: &vectors,
        queries: &queries,
        weights: &weights,
        spreads: &spreads,
        metric: args.metric,
    };
    let knobs = BaselineKnobs {
        nprobe: args.nprobe,
        rerank: args.rerank,
    };
    for &c in &args.factors {
        let point = baseline.measure(c, knobs, args.k, &gt, &pool, &options)?;
        if args.json {
            println!("{}", serde_json::to_string(&point)?);
        } else {
            println!(
                "{:>6} {:>6} | {:>8.4} {:>8.0} {:>7.1} {:>8.1} {:>7.1} {:>7.0}",
                c,
                point.k_prime,
                point.recall_at_k,
                point.qps,
                point.mean_ios,
                point.mean_read_bytes / 1024.0,
                point.mean_candidates,
                point.mean_dist_comps
            );
        }
    }
    Ok(())
}

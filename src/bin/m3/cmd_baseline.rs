//! `m3 baseline`: the per-block comparison system for multi-vector queries
//! ([`m3::multivec::baseline`]): one single-vector index per block, top k′ = c·k from each,
//! union, exact weighted rerank from the block vectors in RAM.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use m3::exact::recall_at_k;
use m3::io::ReaderOptions;
use m3::multivec::baseline::{Baseline, BlockVectors};
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

#[derive(serde::Serialize)]
struct Point {
    system: &'static str,
    factor: usize,
    k_prime: usize,
    recall_at_k: f64,
    qps: f64,
    threads: usize,
    mean_ios: f64,
    mean_read_bytes: f64,
    mean_candidates: f64,
    mean_dist_comps: f64,
    queries: usize,
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
    let system = Baseline {
        indexes: &refs,
        vectors: &vectors,
        weights: &weights,
        spreads: &spreads,
        metric: args.metric,
    };
    let options = BatchOptions {
        inflight_per_thread: args.inflight.max(1),
    };
    if !args.json {
        println!(
            "{:>6} {:>6} | {:>8} {:>8} {:>7} {:>8} {:>7} {:>7}",
            "c", "k'", "recall", "QPS", "reads", "KiB", "cands", "dists"
        );
    }
    for &c in &args.factors {
        let kp = (c * args.k).max(1);
        let mut p = SearchParams::new(kp);
        p.nprobe = args.nprobe;
        p.qprobe = 0;
        if let Some(r) = args.rerank {
            p.rerank = r.max(kp);
        }
        let run = system.run(&queries, &p, args.k, &pool, &options)?;
        let mut sp = SearchParams::new(args.k);
        sp.distance = m3::search::RerankDistance::Native;
        let table = m3::search::results_table(&run.results, &sp, args.metric)?;
        let recall = recall_at_k(
            table.ids.view(),
            table.dists.as_ref().map(|d| d.view()),
            &gt,
            args.k,
            m3::multivec::internal_metric(args.metric),
        )?;
        let nq = run.results.len() as f64;
        let mean = |f: &dyn Fn(&m3::search::QueryStats) -> u64| {
            run.stats.iter().map(f).sum::<u64>() as f64 / nq
        };
        let point = Point {
            system: "per-block-baseline",
            factor: c,
            k_prime: kp,
            recall_at_k: recall.mean,
            qps: nq / run.seconds,
            threads: pool.current_num_threads(),
            mean_ios: mean(&|s| s.reads),
            mean_read_bytes: mean(&|s| s.bytes),
            mean_candidates: run.mean_candidates,
            mean_dist_comps: mean(&|s| s.dist_comps) + run.mean_candidates,
            queries: run.results.len(),
        };
        if args.json {
            println!("{}", serde_json::to_string(&point)?);
        } else {
            println!(
                "{:>6} {:>6} | {:>8.4} {:>8.0} {:>7.1} {:>8.1} {:>7.1} {:>7.0}",
                c,
                kp,
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

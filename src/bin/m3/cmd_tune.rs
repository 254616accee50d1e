//! `m3 tune`: the cheapest knob setting that reaches a recall target.
//!
//! For each setting of the secondary knobs (rerank, query anchors, hints, rounds), a binary search
//! over `nprobe` (recall rises with it) finds the smallest value reaching the target; the
//! setting with the highest measured QPS wins. Measured on the given queries, so hold out a
//! query set that resembles production traffic.

use std::path::PathBuf;

use clap::Args;
use m3::search::{BenchPoint, SearchParams, evaluate};

use crate::cmd_bench::{print_header, print_row};
use crate::common::thread_pool;
use crate::knobs::{IndexArgs, open_index, read_gt, read_queries};

#[derive(Args, Debug)]
pub struct TuneArgs {
    #[command(flatten)]
    pub index: IndexArgs,
    #[arg(long)]
    pub gt: PathBuf,
    #[arg(long)]
    pub gt_dists: Option<PathBuf>,
    #[arg(long, default_value_t = SearchParams::DEFAULT_K)]
    pub k: usize,
    /// recall@k to reach.
    #[arg(long, default_value_t = 0.95)]
    pub target_recall: f64,
    /// Largest nprobe tried.
    #[arg(long, default_value_t = 512)]
    pub max_nprobe: usize,
}

pub fn run(args: TuneArgs) -> anyhow::Result<()> {
    let pool = thread_pool(args.index.threads)?;
    let index = open_index("tune", &args.index)?;
    let queries = read_queries(&args.index, &index)?;
    let gt = read_gt(&args.gt, args.gt_dists.as_deref(), queries.rows(), args.k)?;
    let k = args.k;
    let max_nprobe = args.max_nprobe.min(index.n_clusters()).max(1);
    // With hints (`hints.m3`) the training queries' answers carry OOD recall and query
    // anchors add little for their cost (docs/decisions/0007): fewer qprobe values, two hint
    // counts.
    let (qprobes, hint_counts): (Vec<usize>, Vec<usize>) =
        match (index.n_query_anchors() > 0, index.n_hint_queries() > 0) {
            (_, true) => (vec![0, 4], vec![16, 32]),
            (true, false) => (vec![0, 4, 8], vec![0]),
            (false, false) => (vec![0], vec![0]),
        };
    let mut best: Option<BenchPoint> = None;
    print_header();
    for &rerank in &[2 * k.max(10), 3 * k.max(10), 5 * k.max(10)] {
        for (&qprobe, &hints) in qprobes
            .iter()
            .flat_map(|q| hint_counts.iter().map(move |h| (q, h)))
        {
            for &rounds in &[0usize, 1] {
                let mut p = SearchParams::new(k);
                p.block_weights = queries.block_weights.clone();
                p.rerank = rerank;
                p.qprobe = qprobe;
                p.hints = hints;
                p.expand_rounds = rounds;
                let mut eval = |nprobe: usize| -> anyhow::Result<BenchPoint> {
                    p.nprobe = nprobe;
                    let point = evaluate(
                        &index,
                        queries.view(),
                        &gt,
                        &p,
                        &pool,
                        &args.index.batch_options(),
                    )?;
                    print_row(&point);
                    Ok(point)
                };
                // Smallest nprobe reaching the target: double, then bisect.
                let (mut lo, mut hi) = (0usize, 1usize);
                let mut at_hi = eval(hi)?;
                while at_hi.recall_at_k < args.target_recall && hi < max_nprobe {
                    lo = hi;
                    hi = (hi * 2).min(max_nprobe);
                    at_hi = eval(hi)?;
                }
                if at_hi.recall_at_k < args.target_recall {
                    continue;
                }
                while hi - lo > 1 {
                    let mid = (lo + hi) / 2;
                    let at_mid = eval(mid)?;
                    if at_mid.recall_at_k >= args.target_recall {
                        hi = mid;
                        at_hi = at_mid;
                    } else {
                        lo = mid;
                    }
                }
                if best.as_ref().is_none_or(|b| at_hi.qps > b.qps) {
                    best = Some(at_hi);
                }
            }
        }
    }
    match best {
        Some(b) => {
            println!(
                "\nbest: recall@{k} {:.4} at {:.0} QPS ({} threads), {:.1} reads, {:.2} I/O rounds per query",
                b.recall_at_k, b.qps, b.threads, b.mean_ios, b.mean_io_rounds
            );
            // The same query form as the one tuned on: a query file, or the block names given
            // (each block's file left to the user), with the weights given.
            let mut query_flags = if args.index.queries.is_some() {
                "--queries QUERIES".to_string()
            } else {
                args.index
                    .query_block
                    .iter()
                    .map(|b| {
                        let name = b.split_once('=').map_or(b.as_str(), |(n, _)| n);
                        format!("--query-block {name}=QUERIES_{}", name.to_uppercase())
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            for w in &args.index.weight {
                query_flags.push_str(&format!(" --weight {w}"));
            }
            println!(
                "m3 search --index {} {query_flags} --k {k} {}",
                args.index.index.display(),
                b.params.as_flags()
            );
            Ok(())
        }
        None => anyhow::bail!(
            "no setting up to nprobe {max_nprobe} reaches recall@{k} {}",
            args.target_recall
        ),
    }
}

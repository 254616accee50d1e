//! `m3 tune`: the cheapest knob setting that reaches a recall target ([`m3::eval::tune`]
//! measures; this prints every point, the best one and the `m3 search` command line for it).

use std::path::PathBuf;

use clap::Args;
use m3::eval::{TuneParams, tune};
use m3::search::SearchParams;

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
    let params = TuneParams {
        k,
        target_recall: args.target_recall,
        max_nprobe: args.max_nprobe,
    };
    print_header();
    let best = tune(
        &index,
        &queries,
        &gt,
        &params,
        &pool,
        &args.index.batch_options(),
        print_row,
    )?;
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
            "no setting up to nprobe {} reaches recall@{k} {}",
            params.max_nprobe_for(&index),
            args.target_recall
        ),
    }
}

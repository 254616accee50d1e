//! `m3 range`: every vector within a radius of each query, by metric pruning (DESIGN §4.5).

use std::path::PathBuf;

use clap::Args;
use m3::data::RangeResults;
use m3::search::{ExactParams, ExactQuery, Index, QueryStats, exact_batch};

use crate::common::thread_pool;
use crate::knobs::{IndexArgs, open_index, percentile, read_queries};

#[derive(Args, Debug)]
pub struct RangeArgs {
    #[command(flatten)]
    pub index: IndexArgs,
    /// The radius, in the metric's natural unit: l2 returns vectors with squared distance
    /// ≤ R; ip and cosine return vectors with inner product / cosine similarity ≥ R.
    #[arg(long, allow_negative_numbers = true)]
    pub radius: f32,
    /// Write the results here (big-ann range layout: nq, total, per-query counts, ids,
    /// distances in the natural unit).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: RangeArgs) -> anyhow::Result<()> {
    if let Some(out) = &args.out {
        m3::data::groundtruth::check_output_dir(out)?;
        crate::common::ensure_not_an_input("--out", out, &[args.index.queries.as_deref()])?;
    }
    let pool = thread_pool(args.index.threads)?;
    let index = open_index("range", &args.index)?;
    let queries = read_queries(&args.index, &index)?;
    let what = ExactQuery::Range(args.radius);
    let weights = queries.block_weights.as_deref();
    let res = exact_batch(
        &index,
        queries.view(),
        what,
        weights,
        ExactParams::default(),
        &pool,
    )?;
    let nq = res.results.len();
    let metric = index.metric();
    let counts: Vec<u32> = res.results.iter().map(|r| r.len() as u32).collect();
    let total: u64 = counts.iter().map(|&c| c as u64).sum();
    eprintln!(
        "m3 range: {nq} queries, radius {}, {} threads, {} I/O: {:.0} QPS, latency p50 {:.0} µs p99 {:.0} µs",
        args.radius,
        pool.current_num_threads(),
        index.reader_info().backend,
        nq as f64 / res.seconds,
        percentile(&res.latencies_us, 50.0),
        percentile(&res.latencies_us, 99.0)
    );
    println!(
        "results: {total} in all, {:.2} per query (min {}, max {})",
        total as f64 / nq.max(1) as f64,
        counts.iter().min().copied().unwrap_or(0),
        counts.iter().max().copied().unwrap_or(0)
    );
    print_scan_share(&index, &res.stats);
    if let Some(out) = &args.out {
        let results = RangeResults {
            ids: res
                .results
                .iter()
                .flatten()
                .map(|n| index.user_id_u32(n.id))
                .collect::<Result<_, _>>()?,
            dists: res
                .results
                .iter()
                .flatten()
                .map(|n| metric.to_natural(n.dist))
                .collect(),
            counts,
        };
        results.write(out)?;
    }
    Ok(())
}

/// Prints what exact or range queries read, against a full scan of `data.m3`.
pub fn print_scan_share(index: &Index, stats: &[QueryStats]) {
    let nq = stats.len().max(1) as f64;
    let mean = |f: &dyn Fn(&QueryStats) -> u64| stats.iter().map(f).sum::<u64>() as f64 / nq;
    let sectors = mean(&|s| s.sectors);
    println!(
        "per query: {:.1} of {} data sectors read ({:.3}% of a full scan), {:.2} I/O rounds, \
         {:.0} exact distances, {:.0} PQ bounds, {:.1} of {} clusters visited",
        sectors,
        index.data_sectors(),
        100.0 * sectors / index.data_sectors().max(1) as f64,
        mean(&|s| s.io_rounds),
        mean(&|s| s.dist_comps),
        mean(&|s| s.pq_scored),
        mean(&|s| s.clusters_probed),
        index.n_clusters()
    );
}

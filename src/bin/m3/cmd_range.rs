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
    if m3::search::is_sharded(&args.index.index) {
        return run_sharded(&args, &pool);
    }
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
        write_results(out, &index, &res.results, counts)?;
    }
    Ok(())
}

/// Writes range answers (ids as the user's, distances in the natural unit) to `out`.
fn write_results(
    out: &std::path::Path,
    index: &Index,
    results: &[Vec<m3::neighbor::Neighbor>],
    counts: Vec<u32>,
) -> anyhow::Result<()> {
    let metric = index.metric();
    RangeResults {
        ids: results
            .iter()
            .flatten()
            .map(|n| index.user_id_u32(n.id))
            .collect::<Result<_, _>>()?,
        dists: results
            .iter()
            .flatten()
            .map(|n| metric.to_natural(n.dist))
            .collect(),
        counts,
    }
    .write(out)?;
    Ok(())
}

/// `m3 range` on a sharded index: every shard opened here; each query asks only the shards
/// with a cluster whose bound is within the radius.
fn run_sharded(args: &RangeArgs, pool: &rayon::ThreadPool) -> anyhow::Result<()> {
    let sharded = m3::search::ShardedIndex::open(
        &args.index.index,
        args.index.io,
        &m3::io::ReaderOptions::default(),
    )?;
    let router = sharded.shard(0);
    let queries = read_queries(&args.index, router)?;
    anyhow::ensure!(
        queries.block_weights.is_none(),
        "a sharded multi-vector index is not searched with block weights yet"
    );
    let params = m3::search::SearchParams::new(1);
    let what = Some(ExactQuery::Range(args.radius));
    let res = m3::search::search_sharded_batch(&sharded, queries.view(), &params, what, pool)?;
    let nq = res.results.len();
    let counts: Vec<u32> = res.results.iter().map(|r| r.len() as u32).collect();
    let total: u64 = counts.iter().map(|&c| c as u64).sum();
    let mean = |f: &dyn Fn(&m3::search::ShardedStats) -> u64| {
        res.stats.iter().map(f).sum::<u64>() as f64 / nq.max(1) as f64
    };
    eprintln!(
        "m3 range (sharded, {} shards): {nq} queries, radius {}, {} threads: {:.0} QPS, latency p50 {:.0} µs p99 {:.0} µs",
        sharded.n_shards(),
        args.radius,
        pool.current_num_threads(),
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
    println!(
        "shards_touched = {:.3}\nbytes_moved = {:.0}",
        mean(&|s| s.shards_touched),
        mean(&|s| s.bytes_moved)
    );
    if let Some(out) = &args.out {
        write_results(out, router, &res.results, counts)?;
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

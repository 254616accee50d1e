//! `m3 bench`: sweep search knobs, print recall / QPS / latency / I/O per point.

use std::path::PathBuf;

use clap::Args;
use m3::eval::{BenchPoint, Sweep, SweepError, evaluate};
use m3::search::SearchParams;

use crate::common::thread_pool;
use crate::knobs::{IndexArgs, KnobArgs, open_index, read_gt, read_queries};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub index: IndexArgs,
    /// Ground truth (.ibin/.ivecs).
    #[arg(long)]
    pub gt: PathBuf,
    /// Separate ground-truth distances (.fbin), to credit ties.
    #[arg(long)]
    pub gt_dists: Option<PathBuf>,
    #[arg(long, default_value_t = SearchParams::DEFAULT_K)]
    pub k: usize,
    /// `knob=v1,v2,…` (repeatable; the points are the cartesian product), e.g.
    /// `--sweep nprobe=8,16,32 --sweep rerank=40,80`.
    #[arg(long)]
    pub sweep: Vec<String>,
    /// Thread counts to measure each point at (comma separated; default: --threads).
    #[arg(long, value_delimiter = ',')]
    pub thread_counts: Vec<usize>,
    /// Print one JSON object per point (DESIGN §7 fields) instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Sharded index: measure exact k-NN (fanned out by the clusters' bounds) instead of the
    /// approximate search (the sweep's knobs are then unused).
    #[arg(long)]
    pub exact: bool,
    #[command(flatten)]
    pub knobs: KnobArgs,
}

/// Parses the `--sweep`s and expands them into the list of parameter points
/// ([`m3::eval::Sweep`]), one sweep at a time.
fn sweep_points(base: &SearchParams, sweeps: &[String]) -> anyhow::Result<Vec<SearchParams>> {
    let mut points = vec![base.clone()];
    for s in sweeps {
        let sweep: Sweep = s.parse().map_err(|e| match e {
            SweepError::Syntax => anyhow::anyhow!("--sweep '{s}': expected knob=v1,v2,…"),
            SweepError::Values(source) => anyhow::Error::new(source)
                .context(format!("--sweep '{s}': values must be integers")),
        })?;
        points = sweep.expand(&points)?;
    }
    Ok(points)
}

pub fn print_header() {
    println!(
        "{:>6} {:>6} {:>5} {:>5} {:>6} {:>6} {:>6} {:>7} {:>8} | {:>8} {:>8} {:>8} {:>8} {:>7} {:>8} {:>6} {:>7}",
        "nprobe",
        "qprobe",
        "edges",
        "hints",
        "rerank",
        "refine",
        "rounds",
        "threads",
        "inflight",
        "recall",
        "QPS",
        "p50 µs",
        "p99 µs",
        "reads",
        "KiB",
        "rounds",
        "dists"
    );
}

pub fn print_row(p: &BenchPoint) {
    println!(
        "{:>6} {:>6} {:>5} {:>5} {:>6} {:>6} {:>6} {:>7} {:>8} | {:>8.4} {:>8.0} {:>8.0} {:>8.0} {:>7.1} {:>8.1} {:>6.2} {:>7.0}",
        p.params.nprobe,
        p.params.qprobe,
        p.params.edges,
        p.params.hints,
        p.params.rerank,
        p.params.refine,
        p.params.expand_rounds,
        p.threads,
        p.inflight,
        p.recall_at_k,
        p.qps,
        p.lat_p50_us,
        p.lat_p99_us,
        p.mean_ios,
        p.mean_read_bytes / 1024.0,
        p.mean_io_rounds,
        p.mean_dist_comps
    );
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if m3::search::is_sharded(&args.index.index) {
        return run_sharded(&args);
    }
    anyhow::ensure!(
        !args.exact,
        "--exact: m3 bench measures exact search on sharded indexes only (one index: m3 search --exact)"
    );
    let index = open_index("bench", &args.index)?;
    let queries = read_queries(&args.index, &index)?;
    let gt = read_gt(&args.gt, args.gt_dists.as_deref(), queries.rows(), args.k)?;
    let mut base = args.knobs.params(args.k, &index);
    base.block_weights = queries.block_weights.clone();
    let points = sweep_points(&base, &args.sweep)?;
    let threads = if args.thread_counts.is_empty() {
        vec![args.index.threads]
    } else {
        args.thread_counts.clone()
    };
    if !args.json {
        eprintln!(
            "m3 bench: {} queries, {} points, I/O {}, {} queries in flight per thread",
            queries.rows(),
            points.len() * threads.len(),
            index.reader_info().backend,
            args.index.inflight
        );
        print_header();
    }
    for &t in &threads {
        let pool = thread_pool(t)?;
        for p in &points {
            let point = evaluate(
                &index,
                queries.view(),
                &gt,
                p,
                &pool,
                &args.index.batch_options(),
            )?;
            if args.json {
                println!("{}", serde_json::to_string(&point)?);
            } else {
                print_row(&point);
            }
        }
    }
    Ok(())
}

/// `m3 bench` on a sharded index: every shard opened here; per point (and thread count) the
/// recall, QPS, latency, I/O and the shards touched and bytes moved per query.
fn run_sharded(args: &BenchArgs) -> anyhow::Result<()> {
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
    let gt = read_gt(&args.gt, args.gt_dists.as_deref(), queries.rows(), args.k)?;
    let base = args.knobs.params(args.k, router);
    let points = if args.exact {
        vec![base]
    } else {
        sweep_points(&base, &args.sweep)?
    };
    let threads = if args.thread_counts.is_empty() {
        vec![args.index.threads]
    } else {
        args.thread_counts.clone()
    };
    if !args.json {
        eprintln!(
            "m3 bench: sharded index ({} shards, all local), {} queries, {} points{}, one query at a time per thread",
            sharded.n_shards(),
            queries.rows(),
            points.len() * threads.len(),
            if args.exact { ", exact k-NN" } else { "" },
        );
        print_header();
    }
    for &t in &threads {
        let pool = thread_pool(t)?;
        for p in &points {
            let point =
                m3::eval::evaluate_sharded(&sharded, queries.view(), &gt, p, args.exact, &pool)?;
            if args.json {
                println!("{}", serde_json::to_string(&point)?);
            } else {
                print_row(&point);
                println!(
                    "{:>66} shards touched {:.2}, bytes router↔shards {:.0}",
                    "",
                    point.mean_shards_touched.unwrap_or(0.0),
                    point.mean_bytes_moved.unwrap_or(0.0)
                );
            }
        }
    }
    Ok(())
}

//! `m3 search`: run a query file against an index.

use std::path::PathBuf;

use clap::Args;
use m3::exact::recall_at_k;
use m3::search::{ExactParams, ExactQuery, exact_batch, results_table, search_batch};

use crate::common::thread_pool;
use crate::knobs::{IndexArgs, KnobArgs, open_index, percentile, read_gt, read_queries};

#[derive(Args, Debug)]
pub struct SearchArgs {
    #[command(flatten)]
    pub index: IndexArgs,
    #[arg(long, default_value_t = m3::search::SearchParams::DEFAULT_K)]
    pub k: usize,
    /// Ground truth (.ibin/.ivecs) to print recall@k.
    #[arg(long)]
    pub gt: Option<PathBuf>,
    /// Separate ground-truth distances (.fbin), to credit ties.
    #[arg(long)]
    pub gt_dists: Option<PathBuf>,
    /// Write results here: .ibin with ids then distances (big-ann layout). The ids are user
    /// ids (`m3 build --ids`; row numbers without) and must fit in 32 bits.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Exact search: the true top-k (recall 1.0 by construction), reading only the records
    /// the metric bounds cannot exclude (DESIGN §4.5). The approximate knobs are ignored.
    #[arg(long)]
    pub exact: bool,
    #[command(flatten)]
    pub knobs: KnobArgs,
}

pub fn run(args: SearchArgs) -> anyhow::Result<()> {
    if let Some(out) = &args.out {
        m3::data::GroundTruth::check_output_path(out)?;
        crate::common::ensure_not_an_input(
            "--out",
            out,
            &[
                args.gt.as_deref(),
                args.gt_dists.as_deref(),
                args.index.queries.as_deref(),
            ],
        )?;
    }
    let pool = thread_pool(args.index.threads)?;
    if m3::search::is_sharded(&args.index.index) {
        return run_sharded(&args, &pool);
    }
    let index = open_index("search", &args.index)?;
    let queries = read_queries(&args.index, &index)?;
    // Before the search: a wrong --gt fails now, not after the work.
    let gt = match &args.gt {
        Some(gt) => Some(read_gt(
            gt,
            args.gt_dists.as_deref(),
            queries.rows(),
            args.k,
        )?),
        None => None,
    };
    let mut params = args.knobs.params(args.k, &index);
    params.block_weights = queries.block_weights.clone();
    let res = if args.exact {
        let what = ExactQuery::Knn(args.k);
        let weights = params.block_weights.as_deref();
        exact_batch(
            &index,
            queries.view(),
            what,
            weights,
            ExactParams::default(),
            &pool,
        )?
    } else {
        search_batch(
            &index,
            queries.view(),
            &params,
            &pool,
            &args.index.batch_options(),
        )?
    };
    let lccmd = !args.exact && matches!(params.distance, m3::search::RerankDistance::LcCmd { .. });
    let metric = index.metric();
    let nq = res.results.len();
    let table = results_table(&res.results, &params, metric)?;
    if let Some(out) = &args.out {
        // The file holds user ids; recall below compares row numbers with the ground truth.
        index.user_id_table(&table)?.write(out)?;
    }
    let mean = |f: &dyn Fn(&m3::search::QueryStats) -> u64| {
        res.stats.iter().map(f).sum::<u64>() as f64 / nq.max(1) as f64
    };
    eprintln!(
        "m3 search{}: {nq} queries, {} threads × {} in flight, {} I/O: {:.0} QPS, latency p50 {:.0} µs p99 {:.0} µs",
        if args.exact { " --exact" } else { "" },
        pool.current_num_threads(),
        if args.exact { 1 } else { args.index.inflight },
        index.reader_info().backend,
        nq as f64 / res.seconds,
        percentile(&res.latencies_us, 50.0),
        percentile(&res.latencies_us, 99.0)
    );
    eprintln!(
        "  per query: {:.1} reads, {:.1} KiB, {:.2} I/O rounds, {:.0} exact distances, {:.0} PQ scores, {:.1} clusters",
        mean(&|s| s.reads),
        mean(&|s| s.bytes) / 1024.0,
        mean(&|s| s.io_rounds),
        mean(&|s| s.dist_comps),
        mean(&|s| s.pq_scored),
        mean(&|s| s.clusters_probed)
    );
    if args.exact {
        crate::cmd_range::print_scan_share(&index, &res.stats);
    }
    if let Some(gt) = &gt {
        let r = recall_at_k(
            table.ids.view(),
            // Ties are judged in the metric's units, which LC-CMD distances are not.
            if lccmd {
                None
            } else {
                table.dists.as_ref().map(|d| d.view())
            },
            gt,
            args.k,
            metric,
        )?;
        println!("recall@{} = {:.4}", args.k, r.mean);
    }
    Ok(())
}

/// `m3 search` on a sharded index (docs/DISTRIBUTED.md): every shard opened here, each query
/// routed and sent to the shards it needs.
fn run_sharded(args: &SearchArgs, pool: &rayon::ThreadPool) -> anyhow::Result<()> {
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
    let gt = match &args.gt {
        Some(gt) => Some(read_gt(
            gt,
            args.gt_dists.as_deref(),
            queries.rows(),
            args.k,
        )?),
        None => None,
    };
    let params = args.knobs.params(args.k, router);
    let exact = args.exact.then_some(ExactQuery::Knn(args.k));
    let res = m3::search::search_sharded_batch(&sharded, queries.view(), &params, exact, pool)?;
    let nq = res.results.len();
    let table = results_table(&res.results, &params, router.metric())?;
    if let Some(out) = &args.out {
        router.user_id_table(&table)?.write(out)?;
    }
    let mean = |f: &dyn Fn(&m3::search::ShardedStats) -> u64| {
        res.stats.iter().map(f).sum::<u64>() as f64 / nq.max(1) as f64
    };
    eprintln!(
        "m3 search{} (sharded, {} shards): {nq} queries, {} threads: {:.0} QPS, latency p50 {:.0} µs p99 {:.0} µs",
        if args.exact { " --exact" } else { "" },
        sharded.n_shards(),
        pool.current_num_threads(),
        nq as f64 / res.seconds,
        percentile(&res.latencies_us, 50.0),
        percentile(&res.latencies_us, 99.0)
    );
    eprintln!(
        "  per query: {:.2} shards touched, {:.0} bytes router↔shards, {:.1} reads, {:.1} KiB, {:.0} PQ scores, {:.1} clusters",
        mean(&|s| s.shards_touched),
        mean(&|s| s.bytes_moved),
        mean(&|s| s.query.reads),
        mean(&|s| s.query.bytes) / 1024.0,
        mean(&|s| s.query.pq_scored),
        mean(&|s| s.query.clusters_probed)
    );
    println!(
        "shards_touched = {:.3}\nbytes_moved = {:.0}",
        mean(&|s| s.shards_touched),
        mean(&|s| s.bytes_moved)
    );
    if let Some(gt) = &gt {
        let r = recall_at_k(
            table.ids.view(),
            table.dists.as_ref().map(|d| d.view()),
            gt,
            args.k,
            router.metric(),
        )?;
        println!("recall@{} = {:.4}", args.k, r.mean);
    }
    Ok(())
}

//! `m3 gt`: exact top-k ground truth.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use m3::data::VectorFile;
use m3::distance::Metric;
use m3::exact::{ExactParams, exact_knn_file, to_ground_truth};

use crate::common::{
    parse_block_files, parse_block_weights, parse_metric, progress_bar, thread_pool,
};

#[derive(Args, Debug)]
pub struct GtArgs {
    /// Base vectors (.fbin/.u8bin/.i8bin/.fvecs/.bvecs/.npy); streamed, may exceed RAM.
    #[arg(long, required_unless_present = "block", conflicts_with = "block")]
    base: Option<PathBuf>,
    /// Query vectors (read whole).
    #[arg(
        long,
        required_unless_present = "query_block",
        conflicts_with = "query_block"
    )]
    queries: Option<PathBuf>,
    /// Multi-vector base: one block's vectors, `NAME=FILE` (repeat per block, as for
    /// `m3 build`). The ground truth is the weighted distance Σ w·D_block on standardised
    /// blocks (spreads computed from the base), exactly what `m3 search --query-block` ranks by.
    #[arg(long, value_name = "NAME=FILE")]
    block: Vec<String>,
    /// Multi-vector queries: one block's query vectors, `NAME=FILE` (any non-empty subset).
    #[arg(long, value_name = "NAME=FILE")]
    query_block: Vec<String>,
    /// Query weight of a block, `NAME=W` (≥ 0; default 1 for every given query block).
    #[arg(long, value_name = "NAME=W")]
    weight: Vec<String>,
    /// Neighbours per query.
    #[arg(long, default_value_t = 100)]
    k: usize,
    /// l2 (squared distances), ip (inner products, larger first), cosine (similarities).
    #[arg(long, value_parser = parse_metric)]
    metric: Metric,
    /// Output: .ibin (ids then distances, big-ann layout) or .ivecs (ids only).
    #[arg(long)]
    out: PathBuf,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Base rows per streamed chunk (memory ≈ chunk_rows × dim × 4 bytes, twice).
    #[arg(long, default_value_t = 1 << 16)]
    chunk_rows: usize,
}

pub fn run(args: GtArgs) -> anyhow::Result<()> {
    m3::data::GroundTruth::check_output_path(&args.out)?;
    let pool = thread_pool(args.threads)?;
    let (Some(base), Some(queries)) = (&args.base, &args.queries) else {
        return run_blocks(&args, &pool);
    };
    let base = VectorFile::open(base)?;
    let queries = VectorFile::open(queries)?;
    let queries = queries.read_all_f32()?;
    let params = ExactParams {
        k: args.k,
        metric: args.metric,
        chunk_rows: args.chunk_rows,
    };
    eprintln!(
        "m3 gt: {} base × {} queries, dim {}, k {}, metric {}, {} threads",
        base.rows(),
        queries.rows(),
        base.dim(),
        args.k,
        args.metric,
        pool.current_num_threads()
    );
    let pb = progress_bar(base.rows(), "base rows");
    let start = Instant::now();
    let results = pool.install(|| {
        exact_knn_file(&base, queries.view(), &params, &|done| {
            pb.set_position(done)
        })
    })?;
    pb.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    let gt = to_ground_truth(&results, args.k, args.metric)?;
    gt.write(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "m3 gt: {:.2} s ({:.0} queries/s, {:.2e} distances/s); wrote {}",
        secs,
        queries.rows() as f64 / secs,
        base.rows() as f64 * queries.rows() as f64 / secs,
        args.out.display()
    );
    Ok(())
}

/// The weighted multi-vector ground truth.
fn run_blocks(args: &GtArgs, pool: &rayon::ThreadPool) -> anyhow::Result<()> {
    use m3::multivec::{
        BlockFiles, BlockQueries, WeightedKnnParams, base_spreads, internal_metric,
        weighted_exact_knn,
    };
    anyhow::ensure!(
        !args.block.is_empty() && !args.query_block.is_empty(),
        "a multi-vector ground truth needs --block and --query-block (or --base and --queries)"
    );
    let base = BlockFiles::open(&parse_block_files("--block", &args.block)?)?;
    let layout = base.layout();
    let queries = BlockQueries::read(
        layout,
        &parse_block_files("--query-block", &args.query_block)?,
        None,
    )?;
    let given = parse_block_weights("--weight", &args.weight)?;
    for (name, w) in &given {
        let b = layout.position(name)?;
        anyhow::ensure!(
            *w == 0.0 || queries.present[b],
            "--weight {name}={w}: block '{name}' has no --query-block"
        );
    }
    let weights = layout.weights(&given, |b| if queries.present[b] { 1.0 } else { 0.0 })?;
    let start = Instant::now();
    let spreads = pool.install(|| base_spreads(&base, args.metric))?;
    eprintln!(
        "m3 gt: {} base × {} queries, blocks {}, k {}, metric {}, {} threads",
        base.rows(),
        queries.rows.rows(),
        layout
            .blocks()
            .iter()
            .zip(spreads.iter().zip(&weights))
            .map(|(b, (s, w))| format!("{}(dim {}, σ {s:.4}, w {w})", b.name, b.dim))
            .collect::<Vec<_>>()
            .join(" "),
        args.k,
        args.metric,
        pool.current_num_threads()
    );
    let pb = progress_bar(base.rows(), "base rows");
    let params = WeightedKnnParams {
        weights: &weights,
        spreads: &spreads,
        metric: args.metric,
        k: args.k,
        chunk_rows: args.chunk_rows,
    };
    let results = pool
        .install(|| weighted_exact_knn(&base, &queries, &params, &|done| pb.set_position(done)))?;
    pb.finish_and_clear();
    let gt = to_ground_truth(&results, args.k, internal_metric(args.metric))?;
    gt.write(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "m3 gt: {:.2} s (statistics pass included); wrote {}",
        start.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}

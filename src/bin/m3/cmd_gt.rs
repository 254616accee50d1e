//! `m3 gt`: exact top-k ground truth.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use m3::data::VectorFile;
use m3::distance::Metric;
use m3::exact::{ExactParams, exact_knn_file, to_ground_truth};

use crate::common::{parse_metric, progress_bar, thread_pool};

#[derive(Args, Debug)]
pub struct GtArgs {
    /// Base vectors (.fbin/.u8bin/.i8bin/.fvecs/.bvecs/.npy); streamed, may exceed RAM.
    #[arg(long)]
    base: PathBuf,
    /// Query vectors (read whole).
    #[arg(long)]
    queries: PathBuf,
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
    let pool = thread_pool(args.threads)?;
    let base = VectorFile::open(&args.base)?;
    let queries = VectorFile::open(&args.queries)?;
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

//! `m3`: the command-line interface of the M³ engine. Each subcommand parses its flags into
//! the library's parameter structs and calls one library function; progress bars and printing
//! live here, never in the library.
//!
//! Built with the `cli` feature; `serve` and `loadtest` need the `serve` feature too.

mod cmd_baseline;
mod cmd_bench;
mod cmd_build;
mod cmd_build_stage;
mod cmd_calibrate;
mod cmd_gen;
mod cmd_gt;
mod cmd_inspect;
#[cfg(feature = "serve")]
mod cmd_loadtest;
mod cmd_range;
mod cmd_recall;
mod cmd_search;
#[cfg(feature = "serve")]
mod cmd_serve;
mod cmd_shard;
mod cmd_tune;
mod cmd_update;
mod cmd_verify;
mod common;
mod knobs;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "m3",
    version,
    about = "M³: disk-resident vector index engine for cross-modal nearest-neighbour search"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build an index from a base file (streamed), optionally with training queries.
    Build(cmd_build::BuildArgs),
    /// Generate a seeded synthetic data set (gauss or cross-modal xmodal), streamed to disk.
    Gen(cmd_gen::GenArgs),
    /// Exact top-k ground truth by brute force (ids then distances, big-ann layout).
    Gt(cmd_gt::GtArgs),
    /// Search an index with a query file; prints recall@k with --gt.
    Search(cmd_search::SearchArgs),
    /// Cut a built index into a sharded index (all steps, or one step as a separate task).
    Shard(cmd_shard::ShardArgs),
    /// Choose the rerank distance (native or LC-CMD α, β) from calibration pairs and store it
    /// in the index (what `--distance auto` uses).
    Calibrate(cmd_calibrate::CalibrateArgs),
    /// Every vector within a radius of each query (exact, by metric pruning).
    Range(cmd_range::RangeArgs),
    /// Sweep search knobs: recall, QPS, latency and I/O per point (`--json` for DESIGN §7 records).
    Bench(cmd_bench::BenchArgs),
    /// Multi-vector baseline: one single-vector index per block, results merged by the
    /// weighted distance (what Milvus/VBase-style systems do), measured like `bench`.
    Baseline(cmd_baseline::BaselineArgs),
    /// Find the cheapest search knobs that reach a recall target; prints the command to use.
    Tune(cmd_tune::TuneArgs),
    /// recall@k of a result file against ground truth (ties with the k-th distance count).
    Recall(cmd_recall::RecallArgs),
    /// Show what an index holds: files, parameters, clusters, routing, statistics, build report.
    Inspect(cmd_inspect::InspectArgs),
    /// Insert (or replace) vectors in an index by user id; durable when it exits 0.
    Insert(cmd_update::InsertArgs),
    /// Delete vectors from an index by user id; durable when it exits 0.
    Delete(cmd_update::DeleteArgs),
    /// Fold the live updates into new published files (a rebuild from the live set).
    Compact(cmd_update::CompactArgs),
    /// Merge per cluster: rewrite only the clusters whose updates passed a threshold into a
    /// new data segment (format 2.0; disk use stays bounded without a rebuild).
    Merge(cmd_update::MergeArgs),
    /// Check every checksum of an index (every file, every data sector); exits non-zero on the
    /// first problem, naming the file and sector.
    Verify(cmd_verify::VerifyArgs),
    #[cfg(feature = "serve")]
    /// Serve an index over HTTP/JSON (search, range, index info, health, metrics) until
    /// SIGTERM, then finish the requests in flight and exit 0.
    Serve(cmd_serve::ServeArgs),
    #[cfg(feature = "serve")]
    /// Load-test a running `m3 serve` on this machine: throughput, latency percentiles,
    /// errors and recall at several concurrency levels (bounded in requests and time).
    Loadtest(cmd_loadtest::LoadtestArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Build(args) => cmd_build::run(args),
        Command::Range(args) => cmd_range::run(args),
        Command::Calibrate(args) => cmd_calibrate::run(args),
        Command::Gen(args) => cmd_gen::run(args),
        Command::Gt(args) => cmd_gt::run(args),
        Command::Search(args) => cmd_search::run(args),
        Command::Shard(args) => cmd_shard::run(args),
        Command::Bench(args) => cmd_bench::run(args),
        Command::Tune(args) => cmd_tune::run(args),
        Command::Baseline(args) => cmd_baseline::run(args),
        Command::Recall(args) => cmd_recall::run(args),
        Command::Inspect(args) => cmd_inspect::run(args),
        Command::Verify(args) => cmd_verify::run(args),
        Command::Insert(args) => cmd_update::run_insert(args),
        Command::Delete(args) => cmd_update::run_delete(args),
        Command::Compact(args) => cmd_update::run_compact(args),
        Command::Merge(args) => cmd_update::run_merge(args),
        #[cfg(feature = "serve")]
        Command::Serve(args) => cmd_serve::run(args),
        #[cfg(feature = "serve")]
        Command::Loadtest(args) => cmd_loadtest::run(args),
    }
}

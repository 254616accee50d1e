//! Helpers shared by the subcommands: thread pools, progress bars, argument parsers.

use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use m3::distance::Metric;

/// Parses `l2|ip|cosine`.
pub fn parse_metric(s: &str) -> Result<Metric, String> {
    s.parse()
}

/// An explicit rayon pool of `threads` workers (0 = one per available core).
pub fn thread_pool(threads: usize) -> anyhow::Result<rayon::ThreadPool> {
    let n = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("m3-worker-{i}"))
        .build()
        .context("creating the thread pool")
}

/// A progress bar with rate and ETA, drawn on stderr (hidden when stderr is not a terminal).
pub fn progress_bar(total: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:>10} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} ({per_sec}, ETA {eta})",
        )
        .expect("valid template"),
    );
    pb.set_message(what.to_string());
    pb.enable_steady_tick(Duration::from_millis(250));
    pb
}

/// Parses repeated `NAME=FILE` arguments (`--block`, `--query-block`).
pub fn parse_block_files(
    flag: &'static str,
    specs: &[String],
) -> anyhow::Result<Vec<(String, std::path::PathBuf)>> {
    specs
        .iter()
        .map(|s| {
            let (n, v) = m3::multivec::split_assignment(flag, s)?;
            Ok((n.to_string(), v.into()))
        })
        .collect()
}

/// Parses repeated `NAME=W` arguments (`--weight`, `--block-weight`).
pub fn parse_block_weights(
    flag: &'static str,
    specs: &[String],
) -> anyhow::Result<Vec<(String, f32)>> {
    specs
        .iter()
        .map(|s| {
            let (n, v) = m3::multivec::split_assignment(flag, s)?;
            let w: f32 = v
                .parse()
                .map_err(|_| anyhow::anyhow!("{flag} '{s}': weight '{v}' is not a number"))?;
            Ok((n.to_string(), w))
        })
        .collect()
}

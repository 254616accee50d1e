//! Helpers shared by the subcommands: thread pools, progress bars, argument parsers.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use m3::distance::Metric;

/// Repairs what a killed build or publication left at index path `dir` before a command opens
/// or builds it ([`m3::format::recover_index_dir`]: an interrupted publication is finished or
/// rolled back, temporaries of processes that are gone are removed) and says on stderr what
/// it did. A failure is reported, not fatal: opening the index then gives its own error.
pub fn recover_index(cmd: &str, dir: &Path) {
    let report = match m3::format::recover_index_dir(dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "m3 {cmd}: could not check {} for an interrupted build: {e}",
                dir.display()
            );
            return;
        }
    };
    match &report.restored {
        Some(m3::format::Restored::RolledForward { from }) => eprintln!(
            "m3 {cmd}: {}: finished a publication that was interrupted (moved {} into place)",
            dir.display(),
            from.display()
        ),
        Some(m3::format::Restored::RolledBack { from }) => eprintln!(
            "m3 {cmd}: {}: rolled back a publication that was interrupted (the previous index \
             is back from {})",
            dir.display(),
            from.display()
        ),
        None => {}
    }
    for p in &report.removed {
        eprintln!(
            "m3 {cmd}: removed {}, left by a build that is no longer running",
            p.display()
        );
    }
    for (p, why) in &report.kept {
        eprintln!("m3 {cmd}: left {} in place: {why}", p.display());
    }
    if m3::format::dir_contents(dir).ok() != Some(m3::format::DirContents::Index) {
        for t in &report.in_progress {
            eprintln!(
                "m3 {cmd}: {} belongs to process {}, which is running (a build in progress?)",
                t.path.display(),
                t.pid
            );
        }
    }
}

/// Refuses an output file `out` (given as `flag`) that is one of the command's `inputs`:
/// writing it would destroy the input. Checked before any work.
pub fn ensure_not_an_input(flag: &str, out: &Path, inputs: &[Option<&Path>]) -> anyhow::Result<()> {
    let Ok(o) = std::fs::canonicalize(out) else {
        return Ok(()); // a new file cannot be an input
    };
    for input in inputs.iter().flatten() {
        if std::fs::canonicalize(input).is_ok_and(|i| i == o) {
            anyhow::bail!(
                "{flag} {}: it is an input of this command ({}); writing it would destroy it",
                out.display(),
                input.display()
            );
        }
    }
    Ok(())
}

/// Parses `--ram-budget-gb`: a positive, finite number of GiB (at least one byte).
pub fn parse_ram_budget_gb(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number of GiB"))?;
    if !v.is_finite() || v <= 0.0 || v * ((1u64 << 30) as f64) < 1.0 {
        return Err(format!(
            "must be a positive, finite number of GiB (e.g. 8 or 0.5), not {s}"
        ));
    }
    Ok(v)
}

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

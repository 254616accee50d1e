//! `m3 recall`: recall@k of a result file against ground truth.

use std::path::PathBuf;

use clap::Args;
use m3::data::GroundTruth;
use m3::distance::Metric;
use m3::exact::recall_at_k;

use crate::common::parse_metric;

#[derive(Args, Debug)]
pub struct RecallArgs {
    /// Results: .ibin with ids (and distances, to credit ties) or .ivecs.
    #[arg(long)]
    results: PathBuf,
    /// Ground truth: .ibin (ids, optionally followed by distances) or .ivecs.
    #[arg(long)]
    gt: PathBuf,
    /// Separate ground-truth distance file (.fbin), as ../shared/data ships them.
    #[arg(long)]
    gt_dists: Option<PathBuf>,
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Metric of the distances (decides whether larger or smaller is better).
    #[arg(long, value_parser = parse_metric)]
    metric: Metric,
}

pub fn run(args: RecallArgs) -> anyhow::Result<()> {
    let results = GroundTruth::read(&args.results)?;
    let gt = match &args.gt_dists {
        Some(d) => GroundTruth::read_with_dists(&args.gt, d)?,
        None => GroundTruth::read(&args.gt)?,
    };
    let r = recall_at_k(
        results.ids.view(),
        results.dists.as_ref().map(|d| d.view()),
        &gt,
        args.k,
        args.metric,
    )?;
    let perfect = r.hits.iter().filter(|&&h| h as usize == args.k).count();
    println!(
        "recall@{} = {:.4} over {} queries ({} perfect)",
        args.k,
        r.mean,
        r.hits.len(),
        perfect
    );
    Ok(())
}

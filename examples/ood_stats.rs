//! Out-of-distribution statistics of data sets on disk and of generated `xmodal` sets, side by
//! side (`docs/GENERATOR.md`, "Measured: real OOD set vs generated"). Prints a Markdown table,
//! one column per set; the statistics are `m3::data::synth::stats::CrossModalStats` with
//! K = base rows / `--rows-per-cluster` (the index's default cluster size, 256).
//!
//! ```text
//! cargo run --release --example ood_stats -- \
//!     --set passages-ood=/work/passages-ood/base.fbin,/work/passages-ood/query.fbin \
//!     --set glove=/work/shared/data/glove-50d/base.390K.fbin,/work/shared/data/glove-50d/query.10K.fbin \
//!     --xmodal 'new:n=135000,dim=384' --xmodal 'old:n=135000,dim=384,query_mix=1' \
//!     [--queries 2000] [--rows-per-cluster 256] [--kmeans-iters 20] [--nprobe 1,4,16,64]
//! ```
//!
//! `--holdout NAME=BASE` measures in-distribution queries: the last `--queries` base rows
//! against the others (`holdout=1` in an `--xmodal` spec does the same for a generated base).
//! `--set NAME=BASE,QUERIES` reads the files (the first `--queries` query rows). `--xmodal
//! NAME:k=v,…` generates a set in memory: `n`, `queries` (default `--queries`) and any
//! `XmodalParams` field by name (`dim`, `seed` (default 42, as `m3 gen`), `query_noise`, …);
//! the rows are those `m3 gen --kind xmodal` writes with the same parameters.

use std::path::PathBuf;

use anyhow::{Context, bail};
use m3::data::synth::stats::{CrossModalStats, StatsParams, comparison_table};
use m3::data::synth::xmodal::{XmodalModel, XmodalParams};
use m3::data::synth::{Split, SplitSizes, SynthModel};
use m3::data::{Matrix, VectorFile};
use rayon::prelude::*;

fn generate(model: &XmodalModel, split: Split, pool: &rayon::ThreadPool) -> Matrix<f32> {
    let chunks: Vec<_> = pool.install(|| {
        (0..model.chunks(split))
            .into_par_iter()
            .map(|c| model.chunk(split, c))
            .collect()
    });
    let mut data = Vec::new();
    for c in chunks {
        data.extend_from_slice(c.vectors.as_slice());
    }
    Matrix::from_vec(data, model.dim()).expect("whole rows")
}

/// Sets one `XmodalParams` field (or `n` / `queries`) from `key=value`.
fn set_param(
    p: &mut XmodalParams,
    sizes: &mut SplitSizes,
    key: &str,
    v: &str,
) -> anyhow::Result<()> {
    let f = || v.parse::<f32>().with_context(|| format!("{key}={v}"));
    let u = || v.parse::<usize>().with_context(|| format!("{key}={v}"));
    match key {
        "n" => sizes.base = u()? as u64,
        "queries" => sizes.queries = u()? as u64,
        "dim" => p.dim = u()?,
        "seed" => p.seed = u()? as u64,
        "clusters" => p.clusters = u()?,
        "latent_dim" => p.latent_dim = u()?,
        "modality_gap" => p.modality_gap = f()?,
        "image_mean_norm" => p.image_mean_norm = f()?,
        "image_dim_spread" => p.image_dim_spread = f()?,
        "latent_share" => p.latent_share = f()?,
        "cluster_share" => p.cluster_share = f()?,
        "anisotropy" => p.anisotropy = f()?,
        "weight_skew" => p.weight_skew = f()?,
        "variance_ratio_median" => p.variance_ratio_median = f()?,
        "variance_ratio_spread" => p.variance_ratio_spread = f()?,
        "query_noise" => p.query_noise = f()?,
        "query_mix" => p.query_mix = u()?,
        "query_noise_range" => p.query_noise_range = f()?,
        "spread_skew" => p.spread_skew = f()?,
        "query_partner_share" => p.query_partner_share = f()?,
        "ratio_outlier_fraction" => p.ratio_outlier_fraction = f()?,
        "ratio_min" => p.variance_ratio_range.0 = f()?,
        "ratio_max" => p.variance_ratio_range.1 = f()?,
        "preset" if v == "fashionclip" => {
            let (dim, seed) = (p.dim, p.seed);
            *p = XmodalParams {
                dim,
                seed,
                ..XmodalParams::fashion_clip()
            };
        }
        _ => bail!("unknown xmodal parameter {key}"),
    }
    Ok(())
}

/// Splits `all` into the base (all rows but the last `queries`) and those rows as queries.
fn hold_out(all: &Matrix<f32>, queries: usize) -> anyhow::Result<(Matrix<f32>, Matrix<f32>)> {
    let n = all.rows();
    anyhow::ensure!(queries < n, "{queries} held-out rows of {n}");
    let v = all.view();
    let base = Matrix::from_vec(v.slice_rows(0, n - queries).as_slice().to_vec(), all.dim())?;
    let q = Matrix::from_vec(v.slice_rows(n - queries, n).as_slice().to_vec(), all.dim())?;
    Ok((base, q))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| -> Option<&str> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(String::as_str)
    };
    let queries: usize = value("--queries").map_or(Ok(2000), str::parse)?;
    let rows_per_cluster: f64 = value("--rows-per-cluster").map_or(Ok(256.0), str::parse)?;
    let iters: usize = value("--kmeans-iters").map_or(Ok(20), str::parse)?;
    let nprobe: Vec<usize> = match value("--nprobe") {
        Some(v) => v.split(',').map(str::parse).collect::<Result<_, _>>()?,
        None => StatsParams::new(1).nprobe,
    };
    let pool = rayon::ThreadPoolBuilder::new().build()?;
    let mut columns: Vec<(String, CrossModalStats)> = Vec::new();
    let mut measure = |name: String, base: &Matrix<f32>, q: &Matrix<f32>| -> anyhow::Result<()> {
        let k = ((base.rows() as f64 / rows_per_cluster).round() as usize).max(1);
        let stats_params = StatsParams {
            kmeans_iters: iters,
            nprobe: nprobe.clone(),
            ..StatsParams::new(k)
        };
        let t = std::time::Instant::now();
        let s = CrossModalStats::measure(base.view(), q.view(), None, &stats_params, &pool)?;
        eprintln!("{name}: measured in {:.1} s", t.elapsed().as_secs_f64());
        columns.push((name, s));
        Ok(())
    };

    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--set" => {
                let spec = args.get(i + 1).context("--set NAME=BASE,QUERIES")?;
                let (name, files) = spec.split_once('=').context("--set NAME=BASE,QUERIES")?;
                let (b, q) = files.split_once(',').context("--set NAME=BASE,QUERIES")?;
                let base = VectorFile::open(&PathBuf::from(b))?.read_all_f32()?;
                let qf = VectorFile::open(&PathBuf::from(q))?;
                let take = (queries as u64).min(qf.rows()) as usize;
                let mut rows = Vec::new();
                qf.read_rows_f32(0, take, &mut rows)?;
                let q = Matrix::from_vec(rows, qf.dim())?;
                measure(name.to_string(), &base, &q)?;
                i += 2;
            }
            "--holdout" => {
                let spec = args.get(i + 1).context("--holdout NAME=BASE")?;
                let (name, b) = spec.split_once('=').context("--holdout NAME=BASE")?;
                let all = VectorFile::open(&PathBuf::from(b))?.read_all_f32()?;
                let (base, q) = hold_out(&all, queries)?;
                measure(format!("{name} (held-out base rows)"), &base, &q)?;
                i += 2;
            }
            "--xmodal" => {
                let spec = args.get(i + 1).context("--xmodal NAME:k=v,…")?;
                let (name, kv) = spec.split_once(':').unwrap_or((spec, ""));
                let mut p = XmodalParams {
                    seed: 42,
                    ..XmodalParams::default()
                };
                let mut sizes = SplitSizes {
                    base: 135_000,
                    queries: queries as u64,
                    training: 0,
                };
                let mut holdout = false;
                for pair in kv.split(',').filter(|s| !s.is_empty()) {
                    let (k, v) = pair.split_once('=').context("k=v")?;
                    if k == "holdout" {
                        holdout = v == "1";
                    } else {
                        set_param(&mut p, &mut sizes, k, v)?;
                    }
                }
                if holdout {
                    // In-distribution contrast: the last `queries` of n + queries base rows.
                    sizes.base += sizes.queries;
                    let model = XmodalModel::new(p, sizes)?;
                    let all = generate(&model, Split::Base, &pool);
                    let (base, q) = hold_out(&all, sizes.queries as usize)?;
                    measure(format!("xmodal {name} (held-out base rows)"), &base, &q)?;
                } else {
                    let model = XmodalModel::new(p, sizes)?;
                    let base = generate(&model, Split::Base, &pool);
                    let q = generate(&model, Split::Queries, &pool);
                    measure(format!("xmodal {name}"), &base, &q)?;
                }
                i += 2;
            }
            "--queries" | "--rows-per-cluster" | "--kmeans-iters" | "--nprobe" => i += 2,
            other => bail!("unknown argument {other}"),
        }
    }
    let refs: Vec<(&str, &CrossModalStats)> =
        columns.iter().map(|(n, s)| (n.as_str(), s)).collect();
    print!("{}", comparison_table(&refs));
    Ok(())
}

//! Compares the cross-modal statistics of the real FashionCLIP fixture with generated `xmodal`
//! sets of the FashionCLIP fit, `XmodalParams::fashion_clip` (see `docs/GENERATOR.md`; the
//! passages-ood fit is measured by `examples/ood_stats.rs`). Prints a Markdown table.
//!
//! ```text
//! cargo run --release --example synth_stats [-- --base 20000 --queries 1000 --seed 0]
//! ```

use m3::data::{Matrix, VectorFile};
use m3::synth::stats::{CrossModalStats, StatsParams, comparison_table};
use m3::synth::xmodal::{XmodalModel, XmodalParams};
use m3::synth::{Split, SplitSizes, SynthModel};
use rayon::prelude::*;

/// Real fixture: 1,126 rows and K = 32, i.e. ~35 base rows per cluster; generated sets use the
/// same cluster size.
const ROWS_PER_CLUSTER: f64 = 1126.0 / 32.0;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

fn argf(name: &str, default: f32) -> f32 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

fn generate(
    model: &XmodalModel,
    split: Split,
    pool: &rayon::ThreadPool,
) -> (Matrix<f32>, Vec<u32>) {
    let chunks: Vec<_> = pool.install(|| {
        (0..model.chunks(split))
            .into_par_iter()
            .map(|c| model.chunk(split, c))
            .collect()
    });
    let mut data = Vec::new();
    let mut partners = Vec::new();
    for c in chunks {
        data.extend_from_slice(c.vectors.as_slice());
        partners.extend(c.partners.unwrap_or_default());
    }
    (Matrix::from_vec(data, model.dim()).unwrap(), partners)
}

fn main() -> anyhow::Result<()> {
    let pool = rayon::ThreadPoolBuilder::new().build()?;
    let base_rows = arg("--base", 20_000);
    let query_rows = arg("--queries", 1_000);
    let seed = arg("--seed", 0);
    let mut columns: Vec<(String, CrossModalStats)> = Vec::new();

    match m3::data::shared_data_dir() {
        Some(dir) => {
            let d = dir.join("shopsphere-xmodal");
            let base = VectorFile::open(&d.join("base.image.1126.fbin"))?.read_all_f32()?;
            let queries = VectorFile::open(&d.join("query.text.1126.fbin"))?.read_all_f32()?;
            let partners: Vec<u32> = (0..queries.rows() as u32).collect();
            let s = CrossModalStats::measure(
                base.view(),
                queries.view(),
                Some(&partners),
                &StatsParams::new(32),
                &pool,
            )?;
            columns.push(("real shopsphere-xmodal (FashionCLIP)".into(), s));
        }
        None => eprintln!("shared data not found: skipping the real fixture"),
    }

    let d = XmodalParams::fashion_clip();
    let tuned = XmodalParams {
        seed,
        clusters: arg("--clusters", d.clusters as u64) as usize,
        query_noise: argf("--noise", d.query_noise),
        cluster_share: argf("--share", d.cluster_share),
        latent_share: argf("--latent-share", d.latent_share),
        latent_dim: arg("--latent-dim", d.latent_dim as u64) as usize,
        anisotropy: argf("--aniso", d.anisotropy),
        image_dim_spread: argf("--dim-spread", d.image_dim_spread),
        ..d
    };
    let sets = [
        (512usize, 1126u64, 1126u64),
        (512, base_rows, query_rows),
        (200, base_rows, query_rows),
    ];
    for (dim, base_rows, query_rows) in sets {
        let sizes = SplitSizes {
            base: base_rows,
            queries: query_rows,
            training: 0,
        };
        let params = XmodalParams {
            dim,
            ..tuned.clone()
        };
        let model = XmodalModel::new(params, sizes)?;
        let (base, _) = generate(&model, Split::Base, &pool);
        let (queries, partners) = generate(&model, Split::Queries, &pool);
        let k = ((base_rows as f64 / ROWS_PER_CLUSTER).round() as usize).max(1);
        let s = CrossModalStats::measure(
            base.view(),
            queries.view(),
            Some(&partners),
            &StatsParams::new(k),
            &pool,
        )?;
        columns.push((format!("xmodal {dim}-d, {base_rows} base"), s));
    }

    let refs: Vec<(&str, &CrossModalStats)> =
        columns.iter().map(|(n, s)| (n.as_str(), s)).collect();
    print!("{}", comparison_table(&refs));
    Ok(())
}

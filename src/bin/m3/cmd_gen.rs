//! `m3 gen`: seeded synthetic data sets, streamed to disk.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, ValueEnum};
use m3::data::DType;
use m3::synth::gauss::{GaussModel, GaussParams};
use m3::synth::multiblock::{MultiblockModel, MultiblockParams};
use m3::synth::xmodal::{XmodalModel, XmodalParams};
use m3::synth::{SplitSizes, SynthModel, WriteSpec, write_dataset};

use crate::common::thread_pool;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    /// In-distribution mixture of anisotropic Gaussians; queries from the same mixture.
    Gauss,
    /// Queries from another distribution than the base ('image' base, 'text' queries), one
    /// partner row per query; by default fitted to the real OOD set passages-ood (see --preset).
    Xmodal,
    /// Multi-vector objects: one base and query file per block (OUT/NAME/base.fbin,
    /// OUT/NAME/query.fbin), blocks at different scales (--block-dims, --block-scales).
    Multiblock,
}

/// Parameter sets of `--kind xmodal` (docs/GENERATOR.md).
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Preset {
    /// Fitted to the real OOD set passages-ood: a query's top-10 spread over several clusters
    /// of the base, with a long tail; small modality gap.
    Passages,
    /// The single-partner model fitted to the FashionCLIP fixture (modality gap 0.877,
    /// variance ratios over 3.6 orders of magnitude): the sets of the earlier benchmarks,
    /// byte for byte. Much easier for a cluster index than real OOD queries.
    Fashionclip,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OutType {
    F32,
    U8,
}

#[derive(Args, Debug)]
pub struct GenArgs {
    #[arg(long, value_enum)]
    kind: Kind,
    /// Output directory: base.{fbin,u8bin}, query.*, train_query.*, *.partners.ibin (xmodal).
    #[arg(long)]
    out: PathBuf,
    /// Base rows.
    #[arg(long)]
    n: u64,
    /// Dimension (gauss, xmodal; multiblock takes --block-dims).
    #[arg(long, required_unless_present = "block_dims")]
    dim: Option<usize>,
    /// multiblock: dimension of each block, comma separated.
    #[arg(long, value_delimiter = ',')]
    block_dims: Vec<usize>,
    /// multiblock: scale factor of each block, comma separated (default 1, 10, 100, …).
    #[arg(long, value_delimiter = ',')]
    block_scales: Vec<f32>,
    /// multiblock: block names (default a, b, c, …), comma separated.
    #[arg(long, value_delimiter = ',')]
    block_names: Vec<String>,
    /// multiblock: probability that a block follows the object's concept.
    #[arg(long, default_value_t = 0.6)]
    shared: f32,
    /// Query rows.
    #[arg(long, default_value_t = 1000)]
    queries: u64,
    /// Training-query rows (disjoint from the queries), for the index's query-modality anchors.
    #[arg(long, default_value_t = 0)]
    train_queries: u64,
    /// Mixture components (default: the generator's own, 256).
    #[arg(long)]
    clusters: Option<usize>,
    /// gauss only: typical within-cluster standard deviation per dimension (default 0.5;
    /// the centres' spread is 1, so smaller values give better separated clusters).
    #[arg(long)]
    within_spread: Option<f32>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Element type of the written files (u8 is quantized SIFT-like, non-negative).
    #[arg(long, value_enum, default_value_t = OutType::F32)]
    dtype: OutType,
    /// xmodal only: parameter set.
    #[arg(long, value_enum, default_value_t = Preset::Passages)]
    preset: Preset,
    /// xmodal only: share of text variance independent of the partner, in [0, 1) (the centre
    /// of each query's own share with the passages preset).
    #[arg(long)]
    query_noise: Option<f32>,
    /// xmodal only: latent sources of a query, its partner and m − 1 other mixture
    /// components (1 = single partner).
    #[arg(long)]
    query_mix: Option<usize>,
    /// Worker threads (0 = one per core). The files do not depend on it.
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

pub fn run(args: GenArgs) -> anyhow::Result<()> {
    let pool = thread_pool(args.threads)?;
    let sizes = SplitSizes {
        base: args.n,
        queries: args.queries,
        training: args.train_queries,
    };
    if matches!(args.kind, Kind::Multiblock) {
        return run_multiblock(&args, sizes, &pool);
    }
    let dim = args
        .dim
        .ok_or_else(|| anyhow::anyhow!("--dim is required for {:?}", args.kind))?;
    let model: Box<dyn SynthModel> = match args.kind {
        Kind::Gauss => {
            let mut p = GaussParams {
                dim,
                seed: args.seed,
                ..GaussParams::default()
            };
            if let Some(c) = args.clusters {
                p.clusters = c;
            }
            if let Some(w) = args.within_spread {
                anyhow::ensure!(
                    w.is_finite() && w > 0.0,
                    "--within-spread must be a positive number, got {w}"
                );
                p.within_spread = w;
            }
            Box::new(GaussModel::new(p, sizes)?)
        }
        Kind::Multiblock => unreachable!("handled above"),
        Kind::Xmodal => {
            let preset = match args.preset {
                Preset::Passages => XmodalParams::default(),
                Preset::Fashionclip => XmodalParams::fashion_clip(),
            };
            let mut p = XmodalParams {
                dim,
                seed: args.seed,
                ..preset
            };
            if let Some(c) = args.clusters {
                p.clusters = c;
            }
            if let Some(e) = args.query_noise {
                p.query_noise = e;
            }
            if let Some(m) = args.query_mix {
                p.query_mix = m;
            }
            Box::new(XmodalModel::new(p, sizes)?)
        }
    };
    let spec = WriteSpec {
        out_dir: args.out.clone(),
        dtype: match args.dtype {
            OutType::F32 => DType::F32,
            OutType::U8 => DType::U8,
        },
        batch_chunks: 2 * pool.current_num_threads(),
    };
    let start = Instant::now();
    let files = write_dataset(model.as_ref(), &spec, &pool)?;
    eprintln!(
        "m3 gen: {:?} {} × {} (+{} queries, {} training queries) in {:.2} s",
        args.kind,
        args.n,
        dim,
        args.queries,
        args.train_queries,
        start.elapsed().as_secs_f64()
    );
    println!("base       {}", files.base.display());
    println!("queries    {}", files.queries.display());
    if let Some(t) = &files.training {
        println!("training   {}", t.display());
    }
    if let Some(p) = &files.query_partners {
        println!("partners   {}", p.display());
    }
    Ok(())
}

fn run_multiblock(
    args: &GenArgs,
    sizes: SplitSizes,
    pool: &rayon::ThreadPool,
) -> anyhow::Result<()> {
    let blocks = args.block_dims.len();
    anyhow::ensure!(
        blocks > 0,
        "--kind multiblock needs --block-dims, e.g. 128,96,64"
    );
    let scales = if args.block_scales.is_empty() {
        (0..blocks).map(|b| 10f32.powi(b as i32)).collect()
    } else {
        args.block_scales.clone()
    };
    let names: Vec<String> = if args.block_names.is_empty() {
        (0..blocks)
            .map(|b| ((b'a' + b as u8) as char).to_string())
            .collect()
    } else {
        args.block_names.clone()
    };
    anyhow::ensure!(
        names.len() == blocks,
        "{} --block-names for {blocks} blocks",
        names.len()
    );
    for n in &names {
        m3::multivec::check_block_name(n)?;
    }
    let mut p = MultiblockParams {
        dims: args.block_dims.clone(),
        scales,
        shared: args.shared,
        seed: args.seed,
        ..MultiblockParams::default()
    };
    if let Some(c) = args.clusters {
        p.concepts = c;
    }
    let model = MultiblockModel::new(p, sizes)?;
    let start = Instant::now();
    for (b, name) in names.iter().enumerate() {
        let spec = WriteSpec {
            out_dir: args.out.join(name),
            dtype: DType::F32,
            batch_chunks: 2 * pool.current_num_threads(),
        };
        let files = write_dataset(&model.block(b), &spec, pool)?;
        println!(
            "block {name:<8} dim {:>5} scale {:<8} base {}  queries {}",
            model.params().dims[b],
            model.params().scales[b],
            files.base.display(),
            files.queries.display()
        );
    }
    eprintln!(
        "m3 gen: multiblock {} × {:?} (+{} queries) in {:.2} s",
        args.n,
        model.params().dims,
        args.queries,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

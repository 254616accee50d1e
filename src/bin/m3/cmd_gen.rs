//! `m3 gen`: seeded synthetic data sets, streamed to disk.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, ValueEnum};
use m3::data::DType;
use m3::data::synth::gauss::{GaussModel, GaussParams};
use m3::data::synth::xmodal::{XmodalModel, XmodalParams};
use m3::data::synth::{SplitSizes, SynthModel, WriteSpec, write_dataset};

use crate::common::thread_pool;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    /// In-distribution mixture of anisotropic Gaussians; queries from the same mixture.
    Gauss,
    /// Two modalities ('image' base, 'text' queries) imitating real CLIP pairs: modality gap,
    /// per-dimension variance ratios over ~3.6 orders of magnitude, one true partner per query.
    Xmodal,
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
    #[arg(long)]
    dim: usize,
    /// Query rows.
    #[arg(long, default_value_t = 1000)]
    queries: u64,
    /// Training-query rows (disjoint from the queries), for the index's query-modality anchors.
    #[arg(long, default_value_t = 0)]
    train_queries: u64,
    /// Mixture components (default: the generator's own, 256).
    #[arg(long)]
    clusters: Option<usize>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Element type of the written files (u8 is quantized SIFT-like, non-negative).
    #[arg(long, value_enum, default_value_t = OutType::F32)]
    dtype: OutType,
    /// xmodal only: share of text variance independent of the partner, in [0, 1).
    #[arg(long)]
    query_noise: Option<f32>,
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
    let model: Box<dyn SynthModel> = match args.kind {
        Kind::Gauss => {
            let mut p = GaussParams {
                dim: args.dim,
                seed: args.seed,
                ..GaussParams::default()
            };
            if let Some(c) = args.clusters {
                p.clusters = c;
            }
            Box::new(GaussModel::new(p, sizes)?)
        }
        Kind::Xmodal => {
            let mut p = XmodalParams {
                dim: args.dim,
                seed: args.seed,
                ..XmodalParams::default()
            };
            if let Some(c) = args.clusters {
                p.clusters = c;
            }
            if let Some(e) = args.query_noise {
                p.query_noise = e;
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
        args.dim,
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

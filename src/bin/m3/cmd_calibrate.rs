//! `m3 calibrate`: choose the rerank distance (native or LC-CMD α, β) from calibration pairs
//! and store the choice in the index manifest (`--distance auto`, DESIGN §4.3).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use m3::data::{Matrix, VectorFile};
use m3::eval::{Calibration, CalibrationBase, CalibrationParams, calibrate, read_partners};
use m3::io::{IoBackend, ReaderOptions};
use m3::multivec::BlockFiles;
use m3::search::{Index, RerankDistance};

use crate::common::thread_pool;

/// The calibration inputs, shared with `m3 build --distance auto`.
#[derive(Args, Debug, Clone)]
pub struct CalibrationArgs {
    /// Calibration queries: vectors of the query modality whose true partners are known.
    #[arg(long)]
    pub calib_queries: Option<PathBuf>,
    /// Their partners: an id file (.ibin/.ivecs, first column = the partner's base row), or
    /// `identity` when query i's partner is base row i.
    #[arg(long)]
    pub calib_partners: Option<String>,
    /// Native neighbours per query ranked with the partner.
    #[arg(long, default_value_t = 100)]
    pub calib_pool: usize,
    /// Share of the pairs held out to confirm the choice.
    #[arg(long, default_value_t = 0.5)]
    pub calib_holdout: f32,
}

#[derive(Args, Debug)]
pub struct CalibrateArgs {
    /// Index directory (updated in place: a new manifest and calibration.json).
    #[arg(long)]
    pub index: PathBuf,
    /// The base file the index was built from (candidate vectors are read from it).
    #[arg(long, required_unless_present = "block", conflicts_with = "block")]
    pub base: Option<PathBuf>,
    /// A multi-vector index: the block files it was built from, `NAME=FILE` per block
    /// (repeat). Its calibration queries are full rows, every block, like its training queries.
    #[arg(long, value_name = "NAME=FILE")]
    pub block: Vec<String>,
    #[command(flatten)]
    pub calib: CalibrationArgs,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Print the result without changing the index.
    #[arg(long)]
    pub dry_run: bool,
}

/// Where calibration reads the base vectors.
#[derive(Debug, Clone)]
pub enum BaseInput {
    File(PathBuf),
    Blocks(Vec<(String, PathBuf)>),
}

pub fn run(args: CalibrateArgs) -> anyhow::Result<()> {
    let base = match args.base {
        Some(b) => BaseInput::File(b),
        None => BaseInput::Blocks(crate::common::parse_block_files("--block", &args.block)?),
    };
    calibrate_index(
        &args.index,
        &base,
        &args.calib,
        args.seed,
        args.threads,
        args.dry_run,
    )?;
    Ok(())
}

/// Calibrates the index at `dir`, prints the grid and (unless `dry_run`) stores the choice.
pub fn calibrate_index(
    dir: &Path,
    base: &BaseInput,
    args: &CalibrationArgs,
    seed: u64,
    threads: usize,
    dry_run: bool,
) -> anyhow::Result<Calibration> {
    let (Some(qpath), Some(partners)) = (&args.calib_queries, &args.calib_partners) else {
        anyhow::bail!("calibration needs --calib-queries and --calib-partners");
    };
    let pool = thread_pool(threads)?;
    crate::common::recover_index("calibrate", dir);
    let index = Index::open(dir, IoBackend::Auto, &ReaderOptions::default())
        .with_context(|| format!("opening index {}", dir.display()))?;
    let qfile = VectorFile::open(qpath)?;
    let queries = qfile.read_all_f32()?;
    let partners = read_partners(partners, queries.rows())?;
    let queries = Matrix::from_vec(queries.as_slice().to_vec(), queries.dim())?;
    let params = CalibrationParams {
        pool: args.calib_pool,
        holdout: args.calib_holdout,
        seed,
        ..CalibrationParams::default()
    };
    let (file, blocks);
    let base = match base {
        BaseInput::File(path) => {
            file = VectorFile::open(path)?;
            CalibrationBase::Single(&file)
        }
        BaseInput::Blocks(list) => {
            blocks = BlockFiles::open(list)?;
            CalibrationBase::Blocks(&blocks)
        }
    };
    let cal = calibrate(&index, base, queries.view(), &partners, &params, &pool)?;
    print_calibration(&cal);
    drop(index);
    if !dry_run {
        cal.store(dir)?;
        eprintln!(
            "m3 calibrate: stored {} in {}",
            describe(cal.choice),
            dir.display()
        );
    }
    Ok(cal)
}

pub fn describe(d: RerankDistance) -> String {
    match d {
        RerankDistance::Native => "native".into(),
        RerankDistance::LcCmd { alpha, beta } => format!("lccmd α={alpha} β={beta}"),
    }
}

fn print_calibration(cal: &Calibration) {
    println!(
        "calibration: {} fitting pairs, {} held out; partner hit@1 / hit@10",
        cal.fit_pairs, cal.held_pairs
    );
    println!(
        "{:<24} {:>9} {:>9} {:>9} {:>9}",
        "distance", "fit@1", "fit@10", "held@1", "held@10"
    );
    let mut shown: Vec<_> = cal.grid.iter().collect();
    // The native metric, then the ten best by fitting score.
    shown[1..].sort_by(|a, b| {
        (b.fit_hit1, b.fit_hit10)
            .partial_cmp(&(a.fit_hit1, a.fit_hit10))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    for p in shown.iter().take(11) {
        println!(
            "{:<24} {:>9.4} {:>9.4} {:>9.4} {:>9.4}",
            describe(p.distance),
            p.fit_hit1,
            p.fit_hit10,
            p.held_hit1,
            p.held_hit10
        );
    }
    let native = cal.native();
    let chosen = cal.chosen();
    println!(
        "best on the fitting pairs: {}; on the held-out pairs it gains {} and loses {} first places; \
         choice: {} (held-out hit@1 {:.4} vs native {:.4}, hit@10 {:.4} vs {:.4})",
        describe(cal.best_fit),
        cal.held_gained,
        cal.held_lost,
        describe(cal.choice),
        chosen.held_hit1,
        native.held_hit1,
        chosen.held_hit10,
        native.held_hit10
    );
}

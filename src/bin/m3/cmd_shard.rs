//! `m3 shard`: cut a built index into a sharded index (docs/DISTRIBUTED.md), all steps at
//! once or one step at a time (`--stage shard --shard I`, then `--stage publish`), as separate
//! tasks of a scheduler would run them.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use m3::build::{build_shards, plan_shards, publish_shards, shard_dir, write_shard};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Stage {
    /// Every step in this process: each shard, then `shards.m3`.
    All,
    /// Write one shard (`--shard I`); idempotent, published crash-safely.
    Shard,
    /// Check the shards written and write `shards.m3` (last).
    Publish,
}

#[derive(Args, Debug)]
pub struct ShardArgs {
    /// The unsharded index (built by `m3 build`).
    #[arg(long)]
    pub index: PathBuf,
    /// The sharded index's directory (created if missing): `shards.m3` and `shard-NNN/`.
    #[arg(long)]
    pub out: PathBuf,
    /// Shards S (1 to 64, at most the clusters): each owns whole clusters, near ones together.
    #[arg(long)]
    pub shards: usize,
    /// Which step to run.
    #[arg(long, value_enum, default_value_t = Stage::All)]
    pub stage: Stage,
    /// The shard `--stage shard` writes (0 ≤ I < S).
    #[arg(long)]
    pub shard: Option<usize>,
    /// Seed of the plan (which shard owns which cluster); every step must get the same.
    #[arg(long, default_value_t = m3::build::BuildParams::DEFAULT_SEED)]
    pub seed: u64,
}

pub fn run(args: ShardArgs) -> anyhow::Result<()> {
    crate::common::recover_index("shard", &args.index);
    let t = std::time::Instant::now();
    match args.stage {
        Stage::All => {
            let (_, summaries) = build_shards(&args.index, args.shards, args.seed, &args.out)?;
            for s in &summaries {
                eprintln!(
                    "m3 shard: shard {} of {}: {} clusters, {} records, {:.1} MiB",
                    s.shard,
                    s.shards,
                    s.clusters,
                    s.records,
                    s.ssd_bytes as f64 / (1u64 << 20) as f64
                );
            }
        }
        Stage::Shard => {
            let shard = args
                .shard
                .ok_or_else(|| anyhow::anyhow!("--stage shard needs --shard I"))?;
            let plan = plan_shards(&args.index, args.shards, args.seed)?;
            std::fs::create_dir_all(&args.out)?;
            let s = write_shard(&args.index, &plan, shard, &shard_dir(&args.out, shard))?;
            eprintln!(
                "m3 shard: shard {shard} of {}: {} clusters, {} records",
                s.shards, s.clusters, s.records
            );
        }
        Stage::Publish => {
            let plan = plan_shards(&args.index, args.shards, args.seed)?;
            publish_shards(&args.index, &plan, &args.out)?;
        }
    }
    eprintln!(
        "m3 shard: {:?} done in {:.2} s: {}",
        args.stage,
        t.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}

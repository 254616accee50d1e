//! `m3 build --stage train|assign|shard|publish`: one stage of the staged (sharded) build,
//! with files between the stages in a work directory (docs/DISTRIBUTED.md, "Stages").

use std::time::Instant;

use crate::cmd_build::{Bars, BuildArgs, print_summary};
use crate::common::thread_pool;

/// Runs the stage `args.stage` names.
pub fn run(args: &BuildArgs) -> anyhow::Result<()> {
    let stage = args.stage.as_deref().unwrap_or_default();
    args.check_staged()?;
    let pool = thread_pool(args.threads)?;
    let bars = Bars::new();
    let start = Instant::now();
    let json = match stage {
        "train" => {
            anyhow::ensure!(
                args.work.is_none(),
                "--stage train writes the work directory given by --out"
            );
            let shards = args
                .shards
                .ok_or_else(|| anyhow::anyhow!("--stage train needs --shards"))?;
            let work = args.out_dir()?;
            let s = m3::build::stage_train(&args.params()?, shards, work, &pool, &bars)?;
            bars.finish();
            eprintln!(
                "m3 build: trained {} clusters over {} rows, {} query anchors, {} shards ({:?} clusters) in {}",
                s.clusters,
                s.rows,
                s.query_anchors,
                s.shards,
                s.clusters_per_shard,
                work.display()
            );
            serde_json::to_value(&s)?
        }
        "assign" => {
            let rows = parse_rows(args.rows.as_deref())?;
            let s = m3::build::stage_assign(work(args)?, base(args), rows, &pool, &bars)?;
            bars.finish();
            eprintln!(
                "m3 build: assigned rows {}..{}: records per shard {:?}",
                s.rows.start, s.rows.end, s.records_per_shard
            );
            serde_json::to_value(&s)?
        }
        "shard" => {
            let shard = args
                .shard
                .ok_or_else(|| anyhow::anyhow!("--stage shard needs --shard i"))?;
            let s = m3::build::stage_shard(work(args)?, shard, base(args), &pool, &bars)?;
            bars.finish();
            print_summary(&s);
            serde_json::to_value(&s)?
        }
        _ => {
            let out = args.out_dir()?;
            let t = m3::build::stage_publish(work(args)?, out)?;
            eprintln!(
                "m3 build: published {} shards in {}",
                t.shards.len(),
                out.display()
            );
            serde_json::json!({ "shards": t.shards.len() })
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    eprintln!("m3 build: stage {stage} took {seconds:.2} s");
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "stage": stage, "seconds": seconds, "summary": json })
        );
    }
    Ok(())
}

/// `--base` (every one, in order), when given: the base files as this machine sees them.
fn base(args: &BuildArgs) -> Option<&[std::path::PathBuf]> {
    (!args.base.is_empty()).then_some(args.base.as_slice())
}

fn work(args: &BuildArgs) -> anyhow::Result<&std::path::Path> {
    args.work.as_deref().ok_or_else(|| {
        anyhow::anyhow!(
            "--stage {} needs --work",
            args.stage.as_deref().unwrap_or("")
        )
    })
}

/// `A..B` → `A..B`.
fn parse_rows(s: Option<&str>) -> anyhow::Result<std::ops::Range<u64>> {
    let s = s.ok_or_else(|| anyhow::anyhow!("--stage assign needs --rows A..B"))?;
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| anyhow::anyhow!("--rows {s}: expected A..B"))?;
    Ok(a.trim().parse()?..b.trim().parse()?)
}

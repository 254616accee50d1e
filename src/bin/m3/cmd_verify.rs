//! `m3 verify`: check every byte of an index (what opening checks, and all of `data.m3`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Index directory.
    dir: PathBuf,
}

pub fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    crate::common::recover_index("verify", &args.dir);
    let r = m3::format::verify(&args.dir)
        .with_context(|| format!("{} failed verification", args.dir.display()))?;
    for problem in &r.informational {
        eprintln!(
            "warning: informational file not as listed (the index is not affected): {problem}"
        );
    }
    println!(
        "{}: ok: {} files + manifest, {} bytes, {} data sectors and {} records checked in {:.2} s",
        args.dir.display(),
        r.files,
        r.bytes,
        r.data_sectors,
        r.records,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

//! `m3 verify`: check every checksum of an index.

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
    println!(
        "{}: ok: {} files + manifest, {} bytes, {} data sectors checked in {:.2} s",
        args.dir.display(),
        r.files,
        r.bytes,
        r.data_sectors,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

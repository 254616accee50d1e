//! `m3 verify`: check every byte of an index (what opening checks, and all of `data.m3`), and
//! the live updates (`wal.m3`, every committed record of `delta.m3`).

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
    if m3::search::is_sharded(&args.dir) {
        return run_sharded(&args);
    }
    let start = Instant::now();
    crate::common::recover_index("verify", &args.dir);
    let r = m3::format::verify(&args.dir)
        .with_context(|| format!("{} failed verification", args.dir.display()))?;
    for problem in &r.informational {
        eprintln!(
            "warning: informational file not as listed (the index is not affected): {problem}"
        );
    }
    // The live updates: opening replays wal.m3 (every record's CRC32C) and checks every
    // committed insert's record in delta.m3 (CRC32C from the log, vid, finite components).
    let index = m3::Index::open(
        &args.dir,
        m3::IoBackend::Pread,
        &m3::ReaderOptions::default(),
    )
    .with_context(|| format!("{}: live updates failed verification", args.dir.display()))?;
    let live = index.live_info();
    if live.coded_again > 0 {
        eprintln!(
            "warning: delta_codes.m3 is missing, damaged or behind the log: {} inserted records \
             were coded again from delta.m3 (the next writer writes them back)",
            live.coded_again
        );
    }
    if let Some(t) = &live.wal_cut {
        eprintln!(
            "warning: wal.m3 has {} bytes after its last commit (never replayed; the next writer \
             cuts them){}",
            t.bytes,
            t.corrupt
                .as_ref()
                .map_or(String::new(), |(at, why)| format!(
                    ": unreadable from byte {at}: {why}"
                ))
        );
    }
    println!(
        "{}: ok: {} files + manifest, {} bytes, {} data sectors and {} records checked, live \
         updates at generation {} ({} inserted records checked) in {:.2} s",
        args.dir.display(),
        r.files,
        r.bytes,
        r.data_sectors,
        r.records,
        live.generation,
        live.inserted,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A sharded index: `shards.m3`, every shard's manifest against it (opening the sharded
/// index), then every shard verified like an index.
fn run_sharded(args: &VerifyArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let sharded = m3::search::ShardedIndex::open(
        &args.dir,
        m3::IoBackend::Pread,
        &m3::ReaderOptions::default(),
    )
    .with_context(|| format!("{} failed verification", args.dir.display()))?;
    let (mut records, mut bytes) = (0u64, 0u64);
    for s in 0..sharded.n_shards() {
        let dir = sharded.router().shard_dir(s);
        let r = m3::format::verify(&dir)
            .with_context(|| format!("{} failed verification", dir.display()))?;
        records += r.records;
        bytes += r.bytes;
    }
    println!(
        "{}: ok: shards.m3 and {} shards, {bytes} bytes, {records} records checked in {:.2} s",
        args.dir.display(),
        sharded.n_shards(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

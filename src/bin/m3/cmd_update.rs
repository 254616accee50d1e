//! `m3 insert` and `m3 delete`: live updates of an index (`m3::IndexWriter`), one commit per
//! command, durable when the command exits 0.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use m3::IndexWriter;
use m3::data::{DType, VectorFile, read_user_ids};

#[derive(Args, Debug)]
pub struct InsertArgs {
    /// Index directory.
    #[arg(long)]
    index: PathBuf,
    /// Vectors to insert: .fbin, .fvecs, .npy (f32), .u8bin, .bvecs, .i8bin, .npy (u8, i8).
    /// A u8 or i8 index takes its own type or f32 values that are integers within the
    /// type's range (nothing is rounded or clamped); an f32 index takes any of them.
    #[arg(long)]
    base: PathBuf,
    /// Their user ids, one per row (.u64bin, .ibin, .npy); an id already in the index is
    /// replaced (upsert). Default: the row numbers continue (the index's next free vid),
    /// refused on an index built with --ids.
    #[arg(long)]
    ids: Option<PathBuf>,
    /// Threads that route and PQ-code the inserted vectors (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// Index directory.
    #[arg(long)]
    index: PathBuf,
    /// User ids to delete (.u64bin, .ibin, .npy); ids not in the index are ignored.
    #[arg(long)]
    ids: PathBuf,
}

fn open(cmd: &str, dir: &std::path::Path) -> anyhow::Result<IndexWriter> {
    crate::common::recover_index(cmd, dir);
    let w =
        IndexWriter::open(dir).with_context(|| format!("opening {} for updates", dir.display()))?;
    if w.coded_again() > 0 {
        eprintln!(
            "m3 {cmd}: {}: delta_codes.m3 was missing, damaged or behind the log: {} inserted \
             vectors coded again from delta.m3 (and written back)",
            dir.display(),
            w.coded_again()
        );
    }
    if let Some(t) = w.recovered() {
        eprintln!(
            "m3 {cmd}: {}: cut {} bytes from the end of wal.m3 at byte {} ({} operations of a \
             batch never committed{})",
            dir.display(),
            t.bytes,
            t.offset,
            t.uncommitted_ops,
            t.corrupt
                .as_ref()
                .map_or(String::new(), |(at, why)| format!(
                    "; unreadable from byte {at}: {why}"
                ))
        );
    }
    Ok(w)
}

pub fn run_insert(args: InsertArgs) -> anyhow::Result<()> {
    let pool = crate::common::thread_pool(args.threads)?;
    let mut w = open("insert", &args.index)?;
    let file = VectorFile::open(&args.base)?;
    let index_type = w.element_type();
    // An f32 index takes any file (u8/i8 values are exact in f32); a u8 or i8 index takes
    // f32 values that fit and its own type, not the other integer type.
    if index_type != DType::F32 && ![DType::F32, index_type].contains(&file.dtype()) {
        anyhow::bail!(
            "{}: holds {} vectors, the index stores {index_type} (give a file of {index_type} \
             or f32 values)",
            args.base.display(),
            file.dtype()
        );
    }
    let vectors = file.read_all_f32()?;
    let ids = match &args.ids {
        Some(p) => read_user_ids(p)?,
        None => {
            let first = w
                .next_row_id()
                .context("this index has user ids: give the new vectors theirs with --ids")?;
            let ids: Vec<u64> = (first..first + vectors.rows() as u64).collect();
            if let Some(id) = ids.iter().find(|&&id| w.contains(id)) {
                anyhow::bail!("the default id {id} is in use; give the new vectors ids with --ids");
            }
            ids
        }
    };
    w.insert(&ids, vectors.view()).with_context(|| {
        format!(
            "inserting {} into {} (rows counted from 0)",
            args.base.display(),
            args.index.display()
        )
    })?;
    let generation = pool.install(|| w.commit())?;
    eprintln!(
        "m3 insert: {} vectors committed (generation {generation}, {} live)",
        ids.len(),
        w.live_vectors()
    );
    Ok(())
}

pub fn run_delete(args: DeleteArgs) -> anyhow::Result<()> {
    let mut w = open("delete", &args.index)?;
    let ids = read_user_ids(&args.ids)?;
    let live = ids.iter().filter(|&&id| w.contains(id)).count();
    w.delete(&ids);
    let generation = w.commit()?;
    eprintln!(
        "m3 delete: {live} of {} ids deleted (generation {generation}, {} live)",
        ids.len(),
        w.live_vectors()
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct CompactArgs {
    /// Index directory.
    #[arg(long)]
    index: PathBuf,
    /// Build threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

pub fn run_compact(args: CompactArgs) -> anyhow::Result<()> {
    crate::common::recover_index("compact", &args.index);
    let pool = crate::common::thread_pool(args.threads)?;
    let t = std::time::Instant::now();
    let r = m3::update::compact(&args.index, &pool)
        .with_context(|| format!("compacting {}", args.index.display()))?;
    eprintln!(
        "m3 compact: {} live vectors and {} commits folded into new published files in {:.1} s; \
         {} → {} bytes",
        r.live_vectors,
        r.generation,
        t.elapsed().as_secs_f64(),
        r.bytes_before,
        r.bytes_after
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// Index directory.
    #[arg(long)]
    index: PathBuf,
    /// A cluster is merged when its live inserts or its dead records (the larger) reach this
    /// fraction of its records.
    #[arg(long, default_value_t = 0.2)]
    change_fraction: f64,
    /// A data segment whose live records fall below this fraction has all its clusters merged
    /// out (and is then deleted).
    #[arg(long, default_value_t = 0.8)]
    segment_live_fraction: f64,
    /// Split a merged cluster with more live records than this in two (LIRE, 2-means).
    #[arg(long)]
    max_cluster_records: Option<u32>,
    /// Merge exactly these clusters (comma-separated) instead of what the thresholds choose.
    #[arg(long, value_delimiter = ',')]
    clusters: Option<Vec<u32>>,
    /// Merge every cluster (records numbered from 0 again, dead vids dropped).
    #[arg(long, conflicts_with = "clusters")]
    all: bool,
    /// Threads building the merged clusters' neighbour lists (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

pub fn run_merge(args: MergeArgs) -> anyhow::Result<()> {
    crate::common::recover_index("merge", &args.index);
    let pool = crate::common::thread_pool(args.threads)?;
    let r = pool.install(|| match &args.clusters {
        Some(c) => Some(m3::update::merge_clusters(&args.index, c)),
        None if args.all => {
            m3::update::merge_all(&args.index, args.max_cluster_records).transpose()
        }
        None => m3::update::merge(
            &args.index,
            &m3::update::MergePolicy {
                change_fraction: args.change_fraction,
                segment_live_fraction: args.segment_live_fraction,
                max_cluster_records: args.max_cluster_records,
            },
        )
        .transpose(),
    });
    let Some(r) = r else {
        eprintln!("m3 merge: no cluster passes the thresholds; nothing to do");
        return Ok(());
    };
    let r = r.with_context(|| format!("merging {}", args.index.display()))?;
    eprintln!(
        "m3 merge: {} clusters rewritten ({} records, {} bytes written, {} inserts kept in the \
         log, {} segments dropped, {} vectors reassigned) in {:.2} s; {} → {} bytes",
        r.clusters,
        r.records_written,
        r.bytes_written,
        r.reinserted,
        r.segments_dropped,
        r.reassigned,
        r.seconds,
        r.bytes_before,
        r.bytes_after
    );
    Ok(())
}

//! The last two stages of the staged build (module `staged`): [`stage_shard`] merges every
//! range's run for one shard and builds that shard as a normal index directory (layout,
//! neighbour lists, refinement codes, keys and the hints of its records, by the same code as
//! [`super::build_index`]); [`stage_publish`] moves the shards into the sharded index and
//! writes `shards.m3` last, with each training query's shard mask from the shards' answers.

use std::path::{Path, PathBuf};

use super::assign::{AssignOutputs, Assignment, check_record_count, write_sorted};
use super::extsort::{SpillReport, merge_sorted};
use super::pipeline::{Assigned, Run};
use super::staged::{Model, RunHeader, runs_dir};
use super::train::Trained;
use super::{
    BuildError, BuildObserver, BuildSummary, answers_to_records, exact_answers, shard_dir,
};
use crate::data::Matrix;
use crate::exact::Neighbor;
use crate::format::files::{CLUSTERS_FILE, KEYS_FILE, MANIFEST_FILE, PQ_FILE, RECORD_IDS_SCRATCH};
use crate::format::manifest::META_FLAG_SHARD;
use crate::format::{
    ClusterTable, FileEntry, Hints, IndexDirWriter, Manifest, NO_ID, SHARDS_FILE, ShardTable,
};

/// Magic of a shard's answers file (`shards/shard-NNN.topk`).
const TOPK_MAGIC: [u8; 8] = *b"M3TOPK\0\0";
/// Version of the answers files this code writes and reads.
const TOPK_VERSION: u32 = 1;
/// Bytes of an answers file's header.
const TOPK_HEADER_BYTES: usize = 32;

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where the shard stage writes shard `shard` in the work directory.
fn shard_out(work: &Path, shard: usize) -> PathBuf {
    work.join("shards").join(ShardTable::shard_dir_name(shard))
}

/// Where the shard stage writes the answers of shard `shard`.
fn topk_path(work: &Path, shard: usize) -> PathBuf {
    work.join("shards")
        .join(format!("{}.topk", ShardTable::shard_dir_name(shard)))
}

/// Stage 3: builds shard `shard` from its runs (all row ranges, which must cover the base
/// exactly once) into `work/shards/shard-NNN` (published crash-safely; running it again
/// writes the same bytes), and its training queries' local answers beside it. `base`
/// replaces the model's base paths.
pub fn stage_shard(
    work: &Path,
    shard: usize,
    base: Option<&[PathBuf]>,
    pool: &rayon::ThreadPool,
    obs: &dyn BuildObserver,
) -> Result<BuildSummary, BuildError> {
    let mut model = Model::load(work)?;
    let shards = model.facts.shards;
    if shard >= shards {
        return Err(BuildError::param(
            "shard",
            format!("shard {shard} of {shards} shards"),
        ));
    }
    let (mut params, source) = model.open_base(base)?;
    let out = shard_out(work, shard);
    params.out = out.clone();
    let runs = collect_runs(work, shard, model.facts.shape.n, model.facts.shape.m)?;
    let parent = work.join("shards");
    std::fs::create_dir_all(&parent).map_err(io_err(&parent))?;
    let dir = IndexDirWriter::create(&out)?;
    let mut run = Run::new(&params, pool, obs);
    obs.stage("merge", 0);
    let merge = MergeInputs {
        runs: &runs,
        trained: &model.trained,
        owners: &model.facts.owners,
        shard: shard as u32,
        n: model.facts.shape.n,
    };
    let (asg, rows) = merge_runs(&merge, &dir)?;
    run.lap("merge");
    let hints = match model.routing.as_mut() {
        Some(r) => {
            let depth = (params.routing.hint_depth as u64).min(model.facts.shape.n) as usize;
            shard_hints(&params, &source, r, &asg, &rows, depth, pool, obs)?
                .map(|(hints, answers)| -> Result<Hints, BuildError> {
                    write_topk(&topk_path(work, shard), &answers, depth)?;
                    Ok(hints)
                })
                .transpose()?
        }
        None => None,
    };
    run.lap("hints");
    let assigned = Assigned {
        shape: model.facts.shape,
        model_bytes: model.trained.model_bytes(),
        routing: model.routing,
        blocks: None,
        hints,
        asg,
    };
    run.complete(&source, dir, model.trained, assigned, None, META_FLAG_SHARD)
}

/// The runs of `shard`, in row order, checked to cover rows `0..n` once each.
fn collect_runs(
    work: &Path,
    shard: usize,
    n: u64,
    m: usize,
) -> Result<Vec<(RunHeader, PathBuf)>, BuildError> {
    let dir = runs_dir(work, shard);
    let mut runs = Vec::new();
    if dir.exists() {
        for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let path = entry.map_err(io_err(&dir))?.path();
            if path.extension().is_some_and(|e| e == "run") {
                let (header, _) = RunHeader::open(&path)?;
                if header.m != m {
                    return Err(BuildError::param(
                        "work",
                        format!("{}: a run of another model", path.display()),
                    ));
                }
                runs.push((header, path));
            }
        }
    }
    runs.sort_by_key(|(h, _)| (h.rows.start, h.rows.end));
    let mut next = 0u64;
    for (h, path) in &runs {
        if h.rows.start != next {
            let what = if h.rows.start > next {
                format!("rows {next}..{} have no run", h.rows.start)
            } else {
                format!("{} overlaps rows before {next}", path.display())
            };
            return Err(BuildError::param(
                "work",
                format!("shard {shard}: {what}; assign every row range exactly once"),
            ));
        }
        next = h.rows.end;
    }
    if next != n {
        return Err(BuildError::param(
            "work",
            format!("shard {shard}: rows {next}..{n} have no run; assign them first"),
        ));
    }
    Ok(runs)
}

/// What merging a shard's runs needs.
struct MergeInputs<'a> {
    runs: &'a [(RunHeader, PathBuf)],
    trained: &'a Trained,
    owners: &'a [u32],
    shard: u32,
    /// Base rows.
    n: u64,
}

/// Merges the runs into the shard's `pq.m3`, `keys.m3` and scratch record ids, as the assign
/// stage of [`super::build_index`] writes them; returns the assignment and the shard's base
/// rows (ascending).
fn merge_runs(
    inputs: &MergeInputs<'_>,
    dir: &IndexDirWriter,
) -> Result<(Assignment, Vec<u32>), BuildError> {
    let records: u64 = inputs.runs.iter().map(|(h, _)| h.records).sum();
    check_record_count(records)?;
    let mut readers = Vec::with_capacity(inputs.runs.len());
    for (_, path) in inputs.runs {
        readers.push((RunHeader::open(path)?.1, path.clone()));
    }
    let k = inputs.owners.len();
    let mut sizes = vec![0u32; k];
    let mut seen = vec![0u64; inputs.n.div_ceil(64) as usize];
    let mut merged = 0u64;
    let outputs = AssignOutputs {
        pq: dir.path(PQ_FILE),
        keys: dir.path(KEYS_FILE),
        ids: dir.path(RECORD_IDS_SCRATCH),
    };
    let rec_bytes = 20 + inputs.trained.pq.subspaces();
    let bad = |what: String| BuildError::param("work", format!("a corrupt run: {what}"));
    let sorted = write_sorted(
        |sink| {
            merge_sorted(readers, rec_bytes, &mut |r| {
                let c = r.cluster as usize;
                if c >= k || inputs.owners[c] != inputs.shard || u64::from(r.id) >= inputs.n {
                    return Err(bad(format!("record of cluster {c}, row {}", r.id)));
                }
                merged += 1;
                if merged > records {
                    return Err(bad("more records than its header says".into()));
                }
                sizes[c] += 1;
                seen[r.id as usize / 64] |= 1 << (r.id % 64);
                sink(r)
            })?;
            Ok(SpillReport::default())
        },
        inputs.trained,
        &outputs,
        records,
    )?;
    if merged != records {
        return Err(bad(format!(
            "{merged} records for {records} in the headers"
        )));
    }
    let rows: Vec<u32> = (0..inputs.n as u32)
        .filter(|&r| seen[r as usize / 64] & (1 << (r % 64)) != 0)
        .collect();
    let asg = Assignment {
        cluster_sizes: sizes,
        key_ranges: sorted.key_ranges,
        ids: sorted.ids,
        records,
        pq_entry: sorted.pq_entry,
        keys_entry: sorted.keys_entry,
        spilled: records - rows.len() as u64,
        max_norm: inputs.trained.stats.max_norm(),
        sort: sorted.sort,
    };
    Ok((asg, rows))
}

/// A shard's `hints.m3` and the same answers as base rows with their distances.
type ShardHints = (Hints, Vec<Vec<Neighbor>>);

/// The shard's hints: every training query's exact top-`depth` over the shard's base rows
/// `rows`, as the shard's records, and the same answers as base rows with their distances
/// (for the publish stage's shard masks). `None` at depth 0.
#[allow(clippy::too_many_arguments)]
fn shard_hints(
    params: &super::BuildParams,
    source: &super::BaseSource,
    routing: &mut crate::route::QueryRouting,
    asg: &Assignment,
    rows: &[u32],
    depth: usize,
    pool: &rayon::ThreadPool,
    obs: &dyn BuildObserver,
) -> Result<Option<ShardHints>, BuildError> {
    if depth == 0 {
        return Ok(None);
    }
    obs.stage("hints", source.rows());
    let dim = routing.queries.dim();
    let queries = std::mem::replace(&mut routing.queries, Matrix::from_vec(Vec::new(), dim)?);
    let answers = exact_answers(params, source, &queries, depth, Some(rows), pool, &|d| {
        obs.progress(d)
    })?;
    let records = answers_to_records(&answers, depth, &asg.ids, asg.records)?;
    Ok(Some((
        Hints {
            queries,
            answers: records,
        },
        answers,
    )))
}

/// Writes a shard's answers: a 32-byte header (magic, version, queries, depth, the body's
/// CRC32C, the header's CRC32C), then per query `depth` pairs (u32 base row, f32 distance),
/// best first, row `u32::MAX` as padding. Temporary name, fsync, rename.
fn write_topk(path: &Path, answers: &[Vec<Neighbor>], depth: usize) -> Result<(), BuildError> {
    let mut body = Vec::with_capacity(answers.len() * depth * 8);
    for list in answers {
        for i in 0..depth {
            let (row, dist) = list.get(i).map_or((NO_ID, 0.0), |n| (n.id, n.dist));
            body.extend_from_slice(&row.to_le_bytes());
            body.extend_from_slice(&dist.to_le_bytes());
        }
    }
    let mut bytes = vec![0u8; TOPK_HEADER_BYTES];
    bytes[0..8].copy_from_slice(&TOPK_MAGIC);
    bytes[8..12].copy_from_slice(&TOPK_VERSION.to_le_bytes());
    bytes[12..16].copy_from_slice(&(answers.len() as u32).to_le_bytes());
    bytes[16..20].copy_from_slice(&(depth as u32).to_le_bytes());
    bytes[20..24].copy_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    let crc = crc32c::crc32c(&bytes[0..24]);
    bytes[24..28].copy_from_slice(&crc.to_le_bytes());
    bytes.extend_from_slice(&body);
    let tmp = path.with_extension(format!("topk.tmp-{}", std::process::id()));
    crate::format::write_whole_file(&tmp, &bytes)?;
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(())
}

/// Reads a shard's answers: per query, (base row, distance) pairs, padding dropped.
fn read_topk(path: &Path) -> Result<Vec<Vec<(u32, f32)>>, BuildError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let bad = |what: &str| {
        BuildError::param(
            "work",
            format!("{}: not a shard's answers file ({what})", path.display()),
        )
    };
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
    if bytes.len() < TOPK_HEADER_BYTES || bytes[0..8] != TOPK_MAGIC {
        return Err(bad("magic"));
    }
    if u32_at(24) != crc32c::crc32c(&bytes[0..24]) || u32_at(8) != TOPK_VERSION {
        return Err(bad("header"));
    }
    let (queries, depth) = (u32_at(12) as usize, u32_at(16) as usize);
    let body = &bytes[TOPK_HEADER_BYTES..];
    if body.len() as u64 != queries as u64 * depth as u64 * 8 || u32_at(20) != crc32c::crc32c(body)
    {
        return Err(bad("body"));
    }
    Ok(body
        .chunks_exact(8 * depth.max(1))
        .map(|q| {
            q.chunks_exact(8)
                .map(|p| {
                    let row = u32::from_le_bytes(p[0..4].try_into().expect("4 bytes"));
                    (
                        row,
                        f32::from_le_bytes(p[4..8].try_into().expect("4 bytes")),
                    )
                })
                .filter(|&(row, _)| row != NO_ID)
                .collect()
        })
        .collect())
}

/// Stage 4: moves the shards built in `work` into `out` (a shard already there from an
/// earlier publish stays when `work` no longer has it), checks each against the plan, and
/// writes `shards.m3` last: the plan, each shard's manifest length and CRC32C, and per
/// training query the mask of the shards holding one of its global top answers (the best
/// `depth` of the shards' answers, by distance then row).
pub fn stage_publish(work: &Path, out: &Path) -> Result<ShardTable, BuildError> {
    let model = Model::load(work)?;
    let facts = &model.facts;
    check_publish_target(out)?;
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    let mut shards = Vec::with_capacity(facts.shards);
    for s in 0..facts.shards {
        let (src, dst) = (shard_out(work, s), shard_dir(out, s));
        if src.join(MANIFEST_FILE).exists() {
            if dst.exists() {
                std::fs::remove_dir_all(&dst).map_err(io_err(&dst))?;
            }
            std::fs::rename(&src, &dst).map_err(io_err(&dst))?;
        }
        shards.push(check_shard(&dst, s, &facts.owners)?);
    }
    crate::format::sync_dir(out)?;
    let depth = (facts.params.routing.hint_depth as u64).min(facts.shape.n) as usize;
    let hint_masks = match &model.routing {
        Some(r) if depth > 0 => hint_masks(work, facts.shards, r.queries.rows(), depth)?,
        _ => Vec::new(),
    };
    let table = ShardTable {
        n_vectors: facts.shape.n,
        shards,
        owners: facts.owners.clone(),
        hint_masks,
    };
    table.write(&out.join(SHARDS_FILE))?;
    Ok(table)
}

/// Refuses an `out` that holds anything but shards and `shards.m3`.
fn check_publish_target(out: &Path) -> Result<(), BuildError> {
    let Ok(entries) = std::fs::read_dir(out) else {
        return Ok(());
    };
    for entry in entries {
        let name = entry.map_err(io_err(out))?.file_name();
        let name = name.to_string_lossy();
        if name != SHARDS_FILE && !name.starts_with("shard-") {
            return Err(BuildError::param(
                "out",
                format!(
                    "{} holds {name}, which is not part of a sharded index",
                    out.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Checks that `dir` is shard `s` of the plan (flag set, only the plan's clusters hold
/// records) and returns its `shards.m3` entry.
fn check_shard(dir: &Path, s: usize, owners: &[u32]) -> Result<FileEntry, BuildError> {
    let refuse = || {
        BuildError::param(
            "shards",
            format!(
                "{} is not shard {s} of this work directory's plan: run the shard stage",
                dir.display()
            ),
        )
    };
    if !dir.join(MANIFEST_FILE).exists() {
        return Err(refuse());
    }
    let manifest = Manifest::read(&dir.join(MANIFEST_FILE))?;
    let table = ClusterTable::read(&dir.join(CLUSTERS_FILE))?;
    let owned_ok = table.entries.len() == owners.len()
        && table
            .entries
            .iter()
            .zip(owners)
            .all(|(e, &o)| e.records == 0 || o as usize == s);
    if !owned_ok || manifest.meta.flags & META_FLAG_SHARD == 0 {
        return Err(refuse());
    }
    let (bytes, crc) = crate::format::file_crc32c(&dir.join(MANIFEST_FILE))?;
    Ok(FileEntry::new(&ShardTable::shard_dir_name(s), bytes, crc)?)
}

/// Per training query, the shards holding one of its global top-`depth` answers.
fn hint_masks(
    work: &Path,
    shards: usize,
    queries: usize,
    depth: usize,
) -> Result<Vec<u64>, BuildError> {
    let lists = (0..shards)
        .map(|s| read_topk(&topk_path(work, s)))
        .collect::<Result<Vec<_>, _>>()?;
    if lists.iter().any(|l| l.len() != queries) {
        return Err(BuildError::param(
            "work",
            "a shard's answers are for other training queries: run its shard stage again",
        ));
    }
    let mut masks = Vec::with_capacity(queries);
    let mut all: Vec<(f32, u32, usize)> = Vec::new();
    let mut chosen = std::collections::HashSet::with_capacity(depth);
    for q in 0..queries {
        all.clear();
        for (s, l) in lists.iter().enumerate() {
            all.extend(l[q].iter().map(|&(row, d)| (d, row, s)));
        }
        all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        chosen.clear();
        let mut mask = 0u64;
        for &(_, row, s) in &all {
            if chosen.contains(&row) || chosen.len() < depth {
                chosen.insert(row);
                mask |= 1 << s;
            }
        }
        masks.push(mask);
    }
    Ok(masks)
}

//! Cutting a built index into shards (docs/DISTRIBUTED.md): [`plan_shards`] decides which
//! shard owns each cluster, [`write_shard`] writes one shard (a normal index directory holding
//! the records of its clusters, format in `docs/FORMAT.md`, "shards.m3"), [`publish_shards`]
//! writes `shards.m3` last. Each step reads only the unsharded index and the shard directories
//! already written, is a deterministic function of them (so a shard's files are the same
//! bytes whichever process or machine wrote them), and publishes crash-safely, so running it
//! again after a failure is always safe.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::BuildError;
use crate::data::Matrix;
use crate::format::files::{
    CLUSTERS_FILE, DATA_FILE, HINTS_FILE, KEYS_FILE, MANIFEST_FILE, PQ_FILE, REFINE_FILE,
    REPORT_FILE, SECTORS_FILE, WAL_FILE,
};
use crate::format::manifest::META_FLAG_SHARD;
use crate::format::pq::REFINE_KIND;
use crate::format::{
    ClusterEntry, ClusterTable, DataFileParams, DataFileWriter, FileEntry, Hints, IndexDirWriter,
    IndexParts, MAX_SHARDS, Manifest, NO_ID, PqFile, RecordKeys, SECTOR_BYTES, SHARDS_FILE,
    ShardTable,
};
use crate::kmeans::{BalancedKMeansParams, assign_capped};

/// Which shard owns each cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardPlan {
    /// Shards S.
    pub shards: usize,
    /// The shard of each cluster, in cluster order.
    pub owners: Vec<u32>,
    /// Records of each shard.
    pub records: Vec<u64>,
}

/// The shards of the index in `global`: a balanced k-means of its centroids into `shards`
/// groups of at most ⌈K / S⌉ clusters each (near clusters share a shard, so a query's probed
/// clusters fall in few shards), on one thread (the plan depends on the index, S and the seed
/// only, never on a thread count).
pub fn plan_shards(global: &Path, shards: usize, seed: u64) -> Result<ShardPlan, BuildError> {
    let clusters = ClusterTable::read(&global.join(CLUSTERS_FILE))?;
    let k = clusters.n_clusters();
    if shards == 0 || shards > MAX_SHARDS || shards > k {
        return Err(BuildError::param(
            "shards",
            format!("{shards} shards for {k} clusters: 1 to min({MAX_SHARDS}, clusters) allowed"),
        ));
    }
    let owners = if shards == 1 {
        vec![0; k]
    } else {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .map_err(|e| BuildError::param("threads", e.to_string()))?;
        let mut p = BalancedKMeansParams::new(shards);
        p.kmeans.seed = seed;
        p.max_size_factor = 1.0;
        let view = clusters.centroids.view();
        let km = p
            .train(view, &pool)
            .map_err(|e| BuildError::param("shards", e.to_string()))?;
        let cap = p.cap(k);
        pool.install(|| assign_capped(view, km.centroids.view(), cap, shards))
            .0
    };
    let mut records = vec![0u64; shards];
    for (e, &o) in clusters.entries.iter().zip(&owners) {
        records[o as usize] += e.records as u64;
    }
    Ok(ShardPlan {
        shards,
        owners,
        records,
    })
}

/// Global record numbers → the shard's, for the clusters `shard` owns.
struct Renumber<'a> {
    entries: &'a [ClusterEntry],
    owners: &'a [u32],
    shard: u32,
    /// The shard's first record of each cluster.
    local_first: Vec<u64>,
}

impl Renumber<'_> {
    /// The shard's number of global record `g`, `None` when another shard stores it.
    fn local(&self, g: u32) -> Option<u32> {
        let c = self
            .entries
            .partition_point(|e| e.first_record <= u64::from(g))
            .checked_sub(1)?;
        let e = &self.entries[c];
        (self.owners[c] == self.shard && u64::from(g) < e.first_record + e.records as u64)
            .then(|| (self.local_first[c] + (u64::from(g) - e.first_record)) as u32)
    }

    /// The shard's records in global numbering, in order.
    fn owned_records(&self) -> impl Iterator<Item = usize> + '_ {
        self.entries
            .iter()
            .zip(self.owners)
            .filter(|&(_, &o)| o == self.shard)
            .flat_map(|(e, _)| {
                e.first_record as usize..(e.first_record + e.records as u64) as usize
            })
    }
}

/// What [`write_shard`] wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ShardSummary {
    /// This shard.
    pub shard: usize,
    /// Shards of the plan.
    pub shards: usize,
    /// Clusters it owns (with records).
    pub clusters: usize,
    /// Records it stores.
    pub records: u64,
    /// Data sectors of its `data.m3`.
    pub data_sectors: u64,
    /// Neighbour slots dropped because they named a record of another shard.
    pub neighbours_dropped: u64,
    /// Bytes of its files (manifest excluded).
    pub ssd_bytes: u64,
}

/// Writes shard `shard` of `plan` for the index in `global` to `out` (published crash-safely;
/// an index already at `out` is replaced).
pub fn write_shard(
    global: &Path,
    plan: &ShardPlan,
    shard: usize,
    out: &Path,
) -> Result<ShardSummary, BuildError> {
    if shard >= plan.shards {
        return Err(BuildError::param(
            "shard",
            format!("shard {shard} of {} shards", plan.shards),
        ));
    }
    if global.join(WAL_FILE).exists() {
        return Err(BuildError::param(
            "index",
            format!(
                "{} has live updates (wal.m3): run m3 compact first",
                global.display()
            ),
        ));
    }
    let parts = IndexParts::open(global)?;
    if parts.clusters.n_clusters() != plan.owners.len() {
        return Err(BuildError::param(
            "plan",
            "the plan was made for another index",
        ));
    }
    crate::format::check_target(out, &[global])?;
    let dir = IndexDirWriter::create(out)?;
    let entries = &parts.clusters.entries;
    let mut local_first = Vec::with_capacity(entries.len());
    let mut sizes = Vec::with_capacity(entries.len());
    let mut next = 0u64;
    for (e, &o) in entries.iter().zip(&plan.owners) {
        local_first.push(next);
        let n = if o as usize == shard { e.records } else { 0 };
        sizes.push(n);
        next += n as u64;
    }
    let map = Renumber {
        entries,
        owners: &plan.owners,
        shard: shard as u32,
        local_first,
    };
    let (data, sectors, local_entries, dropped) = write_data(global, &parts, &map, &sizes, &dir)?;
    let mut files: Vec<(String, FileEntry)> = Vec::new();
    let clusters = ClusterTable {
        centroids: parts.clusters.centroids.clone(),
        entries: local_entries,
        anchor_graph: parts.clusters.anchor_graph.clone(),
    };
    files.push((
        CLUSTERS_FILE.into(),
        clusters.write(&dir.path(CLUSTERS_FILE))?,
    ));
    files.push((DATA_FILE.into(), data));
    files.push((SECTORS_FILE.into(), sectors));
    let records: Vec<usize> = map.owned_records().collect();
    let pq = gather_pq(&PqFile::read(&global.join(PQ_FILE))?, &records)?;
    files.push((PQ_FILE.into(), pq.write(&dir.path(PQ_FILE))?));
    if parts.keys_file.is_some() {
        let keys = RecordKeys::read(&global.join(KEYS_FILE))?;
        let local = RecordKeys {
            keys: records.iter().map(|&r| keys.keys[r]).collect(),
        };
        files.push((KEYS_FILE.into(), local.write(&dir.path(KEYS_FILE))?));
    }
    if parts.refine.is_some() {
        let refine = gather_pq(
            &PqFile::read_as(&global.join(REFINE_FILE), &REFINE_KIND)?,
            &records,
        )?;
        let entry = refine.write_as(&dir.path(REFINE_FILE), &REFINE_KIND)?;
        files.push((REFINE_FILE.into(), entry));
    }
    if let Some(h) = &parts.hints {
        let local = local_hints(h, &map)?;
        files.push((HINTS_FILE.into(), local.write(&dir.path(HINTS_FILE))?));
    }
    let mut summary = ShardSummary {
        shard,
        shards: plan.shards,
        clusters: sizes.iter().filter(|&&n| n > 0).count(),
        records: records.len() as u64,
        data_sectors: files[1].1.bytes / SECTOR_BYTES as u64 - 1,
        neighbours_dropped: dropped,
        ssd_bytes: 0,
    };
    let json = serde_json::to_vec_pretty(&summary).expect("summary serialises");
    files.push((
        REPORT_FILE.into(),
        crate::format::write_whole_file(&dir.path(REPORT_FILE), &json)?,
    ));
    let manifest = shard_manifest(global, &parts.manifest, &dir, files, &summary)?;
    summary.ssd_bytes = manifest.files.iter().map(|e| e.bytes).sum();
    dir.publish(&manifest)?;
    Ok(summary)
}

/// The shard's manifest: the unsharded one's parameters with flag bit 4, its record and
/// sector counts, and its files in the unsharded manifest's order; the files not rewritten
/// (routing, statistics, coarse level, blocks, user ids, calibration) are copied byte for byte.
fn shard_manifest(
    global: &Path,
    gm: &Manifest,
    dir: &IndexDirWriter,
    written: Vec<(String, FileEntry)>,
    summary: &ShardSummary,
) -> Result<Manifest, BuildError> {
    let mut files = Vec::with_capacity(gm.files.len());
    for e in &gm.files {
        let name = e.name_str().unwrap_or_default();
        match written.iter().find(|(n, _)| n == name) {
            Some((_, w)) => files.push(*w),
            None => {
                let to = dir.path(name);
                std::fs::copy(global.join(name), &to).map_err(|err| BuildError::Io {
                    path: to.clone(),
                    source: err,
                })?;
                std::fs::File::open(&to)
                    .and_then(|f| f.sync_all())
                    .map_err(|err| BuildError::Io {
                        path: to.clone(),
                        source: err,
                    })?;
                let (bytes, crc) = crate::format::file_crc32c(&to)?;
                files.push(FileEntry::new(name, bytes, crc)?);
            }
        }
    }
    let mut meta = gm.meta;
    meta.flags |= META_FLAG_SHARD;
    meta.n_records = summary.records;
    meta.data_sectors = summary.data_sectors;
    Ok(Manifest { meta, files })
}

/// `pq.m3` (or `refine.m3`) with the rows of `records` only.
fn gather_pq(pq: &PqFile, records: &[usize]) -> Result<PqFile, BuildError> {
    let m = pq.subspaces();
    let mut codes = Vec::with_capacity(records.len() * m);
    for &r in records {
        codes.extend_from_slice(pq.codes.row(r));
    }
    Ok(PqFile {
        bounds: pq.bounds.clone(),
        codebooks: pq.codebooks.clone(),
        codes: Matrix::from_vec(codes, m)?,
        correction: records.iter().map(|&r| pq.correction[r]).collect(),
        error: records.iter().map(|&r| pq.error[r]).collect(),
        residual: pq.residual,
    })
}

/// Every training query, with those of its answers the shard stores, renumbered, in order.
fn local_hints(h: &Hints, map: &Renumber<'_>) -> Result<Hints, BuildError> {
    let depth = h.answers.dim();
    let mut answers = Vec::with_capacity(h.answers.rows() * depth);
    for q in 0..h.answers.rows() {
        let start = answers.len();
        answers.extend(h.answers.row(q).iter().filter_map(|&g| map.local(g)));
        answers.resize(start + depth, NO_ID);
    }
    Ok(Hints {
        queries: h.queries.clone(),
        answers: Matrix::from_vec(answers, depth)?,
    })
}

/// `data.m3` and `sectors.m3` of the shard: its clusters' sectors in order, every record's
/// neighbour slots renumbered (neighbours stored elsewhere dropped, the list compacted). Returns
/// the entries, the cluster table's entries (radii from the unsharded index) and the count of
/// neighbours dropped.
fn write_data(
    global: &Path,
    parts: &IndexParts,
    map: &Renumber<'_>,
    sizes: &[u32],
    dir: &IndexDirWriter,
) -> Result<(FileEntry, FileEntry, Vec<ClusterEntry>, u64), BuildError> {
    let codec = parts.data_header.codec()?;
    let layout = parts.data_header.layout();
    let writer = DataFileWriter::create(
        &dir.path(DATA_FILE),
        &DataFileParams {
            dim: codec.dim(),
            dtype: codec.dtype(),
            max_degree: codec.max_degree(),
            cluster_sizes: sizes,
        },
    )?;
    let src_path = global.join(DATA_FILE);
    let src = std::fs::File::open(&src_path).map_err(|e| BuildError::Io {
        path: src_path.clone(),
        source: e,
    })?;
    let id_offset = codec.vector_bytes().div_ceil(4) * 4;
    let r = codec.max_degree() as usize;
    let mut local_entries = writer.cluster_entries().to_vec();
    let mut dropped = 0u64;
    let mut buf = Vec::new();
    let mut kept = Vec::with_capacity(r);
    for (c, e) in map.entries.iter().enumerate() {
        if map.owners[c] != map.shard || e.records == 0 {
            continue;
        }
        local_entries[c].r_min = e.r_min;
        local_entries[c].r_max = e.r_max;
        let sectors = layout.sectors_for(e.records as u64);
        buf.resize((sectors * SECTOR_BYTES as u64) as usize, 0);
        src.read_exact_at(&mut buf, (1 + e.first_sector) * SECTOR_BYTES as u64)
            .map_err(|err| corrupt_read(&src_path, e.first_sector, err))?;
        for i in 0..e.records as u64 {
            let loc = layout.locate(i);
            let at = (loc.sector * SECTOR_BYTES as u64) as usize + loc.offset_bytes as usize;
            let rec = &mut buf[at..at + codec.record_bytes() as usize];
            let slot = |k: usize| id_offset + 8 + 4 * k;
            let read_u32 =
                |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4"));
            let degree = (read_u32(rec, id_offset + 4) as usize).min(r);
            kept.clear();
            kept.extend((0..degree).filter_map(|k| map.local(read_u32(rec, slot(k)))));
            dropped += (degree - kept.len()) as u64;
            rec[id_offset + 4..id_offset + 8].copy_from_slice(&(kept.len() as u32).to_le_bytes());
            for k in 0..r {
                let v = kept.get(k).copied().unwrap_or(NO_ID);
                rec[slot(k)..slot(k) + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
        writer.write_sector_range(local_entries[c].first_sector, &buf)?;
    }
    let (data, sectors) = writer.finish(&dir.path(SECTORS_FILE))?;
    Ok((data, sectors, local_entries, dropped))
}

fn corrupt_read(path: &Path, sector: u64, err: std::io::Error) -> BuildError {
    crate::format::FormatError::io(
        path,
        std::io::Error::new(err.kind(), format!("reading data sector {sector}: {err}")),
    )
    .into()
}

/// Where shard `s` of a sharded index at `out` lives.
pub fn shard_dir(out: &Path, s: usize) -> PathBuf {
    out.join(ShardTable::shard_dir_name(s))
}

/// Writes `shards.m3` in `out` for the shards of `plan` already written there (each checked:
/// it opens, it stores exactly the records of the clusters the plan gives it, and the
/// unsharded index's hints say which shards hold each training query's answers).
pub fn publish_shards(
    global: &Path,
    plan: &ShardPlan,
    out: &Path,
) -> Result<ShardTable, BuildError> {
    let parts = IndexParts::open(global)?;
    let mut shards = Vec::with_capacity(plan.shards);
    for s in 0..plan.shards {
        let dir = shard_dir(out, s);
        let table = ClusterTable::read(&dir.join(CLUSTERS_FILE))?;
        let manifest = Manifest::read(&dir.join(MANIFEST_FILE))?;
        let owned_ok = table.entries.len() == plan.owners.len()
            && table
                .entries
                .iter()
                .zip(&parts.clusters.entries)
                .zip(&plan.owners)
                .all(|((l, g), &o)| l.records == if o as usize == s { g.records } else { 0 });
        if !owned_ok || manifest.meta.flags & META_FLAG_SHARD == 0 {
            return Err(BuildError::param(
                "shards",
                format!(
                    "{} is not shard {s} of this plan (written for another index or shard \
                     count): write it again",
                    dir.display()
                ),
            ));
        }
        let (bytes, crc) = crate::format::file_crc32c(&dir.join(MANIFEST_FILE))?;
        shards.push(FileEntry::new(&ShardTable::shard_dir_name(s), bytes, crc)?);
    }
    let entries = &parts.clusters.entries;
    let owner_of = |g: u32| {
        let c = entries.partition_point(|e| e.first_record <= u64::from(g)) - 1;
        plan.owners[c]
    };
    let hint_masks = parts.hints.as_ref().map_or_else(Vec::new, |h| {
        (0..h.answers.rows())
            .map(|q| {
                h.answers
                    .row(q)
                    .iter()
                    .filter(|&&g| u64::from(g) < parts.manifest.meta.n_records)
                    .fold(0u64, |m, &g| m | 1 << owner_of(g))
            })
            .collect()
    });
    let table = ShardTable {
        n_vectors: parts.manifest.meta.n_vectors,
        shards,
        owners: plan.owners.clone(),
        hint_masks,
    };
    table.write(&out.join(SHARDS_FILE))?;
    Ok(table)
}

/// Every step in this process: the plan, each shard, then `shards.m3`.
pub fn build_shards(
    global: &Path,
    shards: usize,
    seed: u64,
    out: &Path,
) -> Result<(ShardTable, Vec<ShardSummary>), BuildError> {
    let plan = plan_shards(global, shards, seed)?;
    std::fs::create_dir_all(out).map_err(|e| BuildError::Io {
        path: out.to_path_buf(),
        source: e,
    })?;
    let summaries = (0..shards)
        .map(|s| write_shard(global, &plan, s, &shard_dir(out, s)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((publish_shards(global, &plan, out)?, summaries))
}

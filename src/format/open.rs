//! Opening an index: [`IndexParts::open`] is the one way to load the parts of an index that a
//! query needs in RAM. Search, exact and range search, serving, calibration, `m3 inspect` and
//! `m3 verify` all go through it, so what it checks holds for every one of them.
//!
//! It refuses an index, with a [`FormatError`] naming the file (and the byte or field), unless:
//!
//! - the manifest parses ([`super::open_check`]: header CRC, enumerations, counts, entries) and
//!   every listed file but the informational ones exists with its listed length and a valid
//!   header, `data.m3`'s agreeing with the manifest;
//! - every file held in RAM (`clusters.m3`, `routing.m3`, `stats.m3`, `pq.m3`, `refine.m3`,
//!   `keys.m3`, `coarse.m3`, `blocks.m3`, `hints.m3`, `ids.m3`) has the CRC32C the manifest lists, computed over the very bytes
//!   that are parsed (each file is read once);
//! - every float a query uses is finite (centroids, radii, query anchors, statistics, PQ
//!   codewords, corrections and errors, keys, coarse centres, block scales), distances and
//!   variances are ≥ 0, and every id, count and offset is in range (cluster table tiling
//!   exactly `n_records` records and `data_sectors` sectors, anchor-graph and routing edges
//!   below `n_clusters`, coarse groups below G, keys ascending inside `[r_min, r_max]`).
//!
//! It also loads `sectors.m3` (its listed length and CRC32C, one CRC per data sector): search
//! checks every data sector it reads against it. What it does not read: `data.m3` past its
//! header (the large file; [`super::verify()`] checks every sector, search the sectors it
//! reads, and every record it reads), and the informational files (`build_report.json`, `calibration.json`), which never gate
//! opening. `docs/FORMAT.md`, "Checks", is the normative list.

use std::path::{Path, PathBuf};

use super::file::ListedFile;
use super::files::{
    BLOCKS_FILE, CLUSTERS_FILE, COARSE_FILE, DATA_FILE, HINTS_FILE, IDS_FILE, KEYS_FILE,
    MANIFEST_FILE, PQ_FILE, REFINE_FILE, ROUTING_FILE, SECTORS_FILE, SEGMENTS_FILE, STATS_FILE,
};
use super::manifest::META_FLAG_SEGMENTS;
use super::pq::REFINE_KIND;
use super::segments::Segments;
use super::verify::open_check;
use super::{
    BlockTable, ClusterTable, CoarseLevel, DataFileHeader, FormatError, Hints, Manifest, PqFile,
    RecordKeys, Routing, SectorCrcs, Stats, UserIds,
};

/// The checked RAM-resident parts of an index (see the module doc).
#[derive(Debug)]
pub struct IndexParts {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub data_header: DataFileHeader,
    pub clusters: ClusterTable,
    pub routing: Routing,
    pub stats: Stats,
    /// `pq.m3` without its per-record errors (`error` is empty: exact search loads them
    /// through `pq_file` when it is first used).
    pub pq: PqFile,
    pub blocks: Option<BlockTable>,
    pub coarse: Option<CoarseLevel>,
    /// Training queries and their answers' records (`hints.m3`), if the index has them.
    pub hints: Option<Hints>,
    /// The refinement codes (`refine.m3`, without per-record errors), if the index has them.
    pub refine: Option<PqFile>,
    /// The user id of every base vector (`ids.m3`); `None`: ids are row numbers.
    pub ids: Option<UserIds>,
    /// `pq.m3`, held open (checked whole at open) for exact search's later read of the errors.
    pub pq_file: ListedFile,
    /// `keys.m3` (checked whole at open, then dropped), held open for exact search; `None` for
    /// an index without it.
    pub keys_file: Option<ListedFile>,
    /// `sectors.m3`: the CRC32C of every data sector (`data_sectors` of them), which search
    /// checks every sector it reads against.
    pub sector_crcs: Vec<u32>,
    /// A merged index (format 2.0): its data segments and dead vids (`segments.m3`).
    pub segments: Option<Segments>,
}

impl IndexParts {
    /// Opens and checks the index in `dir` (see the module doc).
    pub fn open(dir: &Path) -> Result<Self, FormatError> {
        let manifest = open_check(dir)?;
        let meta = &manifest.meta;
        let listed = |name: &str| -> Result<Option<ListedFile>, FormatError> {
            manifest
                .file(name)
                .map(|e| ListedFile::open(dir, e))
                .transpose()
        };
        let required = |name: &'static str| -> Result<ListedFile, FormatError> {
            listed(name)?.ok_or_else(|| {
                FormatError::corrupt(
                    dir.join(MANIFEST_FILE),
                    12,
                    format!("manifest does not list {name}"),
                )
            })
        };

        let f = required(CLUSTERS_FILE)?;
        let clusters = ClusterTable::read_listed(&f)?;
        clusters.check_against(meta, &f.path)?;

        let f = required(ROUTING_FILE)?;
        let routing = Routing::read_listed(&f)?;
        routing.check_against(meta, &f.path)?;

        let f = required(STATS_FILE)?;
        let stats = Stats::read_listed(&f)?;
        stats.check_against(meta, &f.path)?;

        let pq_file = required(PQ_FILE)?;
        let mut pq = PqFile::read_listed(&pq_file)?;
        pq.check_against(meta, &pq_file.path)?;
        if !pq.residual {
            return Err(FormatError::corrupt(
                &pq_file.path,
                44,
                "codes are not residuals to the centroids, the only kind this reader searches",
            ));
        }
        let refine = match listed(REFINE_FILE)? {
            Some(f) => {
                let mut r = PqFile::read_listed_as(&f, &REFINE_KIND)?;
                r.check_refines(&pq, &f.path)?;
                r.error = Vec::new();
                Some(r)
            }
            None => None,
        };
        pq.error = Vec::new();

        let segments_file = match meta.flags & META_FLAG_SEGMENTS {
            0 => None,
            _ => Some(required(SEGMENTS_FILE)?),
        };
        let (data_header, segments) = open_data(dir, &manifest, segments_file, &clusters)?;
        let sector_crcs = read_sector_crcs(&required(SECTORS_FILE)?, meta.data_sectors)?;

        let blocks = match listed(BLOCKS_FILE)? {
            Some(f) => {
                let t = BlockTable::read_listed(&f)?;
                t.check_against(meta, &f.path)?;
                Some(t)
            }
            None => None,
        };
        let coarse = match listed(COARSE_FILE)? {
            Some(f) => {
                let c = CoarseLevel::read_listed(&f)?;
                c.check_against(meta, &f.path)?;
                Some(c)
            }
            None => None,
        };
        let hints = match listed(HINTS_FILE)? {
            Some(f) => {
                let h = Hints::read_listed(&f)?;
                h.check_against(meta, &f.path)?;
                Some(h)
            }
            None => None,
        };
        let ids = match listed(IDS_FILE)? {
            Some(f) => {
                let ids = UserIds::read_listed(&f)?;
                ids.check_against(meta, &f.path)?;
                if let Some(segs) = &segments {
                    check_live_ids_unique(&ids, segs, &f.path)?;
                }
                Some(ids)
            }
            None => None,
        };
        let keys_file = listed(KEYS_FILE)?;
        if let Some(f) = &keys_file {
            RecordKeys::read_listed(f)?.check_against(meta, &clusters.entries, &f.path)?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            data_header,
            clusters,
            routing,
            stats,
            pq,
            blocks,
            coarse,
            hints,
            refine,
            ids,
            pq_file,
            keys_file,
            sector_crcs,
            segments,
        })
    }
}

/// `segments.m3` of a merged index, checked against the manifest, the segment files'
/// headers and the cluster table; the first segment's header.
/// The data header of the index: `data.m3`'s (checked against the manifest), or with
/// `segments.m3` listed (a merged index) the segments' (see [`open_segments`]).
fn open_data(
    dir: &Path,
    manifest: &super::Manifest,
    segments_file: Option<ListedFile>,
    clusters: &ClusterTable,
) -> Result<(DataFileHeader, Option<Segments>), FormatError> {
    match segments_file {
        Some(f) => {
            let (header, segs) = open_segments(dir, manifest, &f, clusters)?;
            Ok((header, Some(segs)))
        }
        None => {
            let data_path = dir.join(DATA_FILE);
            let data_header = DataFileHeader::read(&data_path)?;
            data_header.check_against(&manifest.meta, &data_path)?;
            Ok((data_header, None))
        }
    }
}

fn open_segments(
    dir: &Path,
    manifest: &super::Manifest,
    f: &ListedFile,
    clusters: &ClusterTable,
) -> Result<(DataFileHeader, Segments), FormatError> {
    let meta = &manifest.meta;
    let segs = Segments::read_listed(f)?;
    segs.check_against(meta, &|n| manifest.file(n).is_some(), &f.path)?;
    let header = check_segment_files(dir, meta, &segs)?;
    clusters.check_in_segments(&segs.starts(), header.layout(), &dir.join(CLUSTERS_FILE))?;
    Ok((header, segs))
}

/// The header of every segment file of a merged index: the same record shape as the
/// manifest, and the sectors and records `segments.m3` gives it (its length was checked
/// against the manifest). Returns the first segment's header (the record layout).
fn check_segment_files(
    dir: &Path,
    meta: &super::IndexMeta,
    segs: &Segments,
) -> Result<DataFileHeader, FormatError> {
    let mut first = None;
    for e in &segs.segments {
        let path = dir.join(e.name_str().unwrap_or_default());
        let h = DataFileHeader::read(&path)?;
        let same = h.dim == meta.dim
            && h.dtype == meta.dtype
            && h.max_degree == meta.max_degree
            && h.record_bytes == meta.record_bytes
            && h.data_sectors == e.data_sectors
            && h.n_records == e.records;
        if !same {
            return Err(FormatError::corrupt(
                &path,
                32,
                "segment header disagrees with the manifest or segments.m3",
            ));
        }
        first.get_or_insert(h);
    }
    first.ok_or_else(|| FormatError::corrupt(dir.join(SEGMENTS_FILE), 32, "no segments"))
}

/// User ids are unique among the live vids of a merged index (a dead vid may repeat one).
fn check_live_ids_unique(ids: &UserIds, segs: &Segments, path: &Path) -> Result<(), FormatError> {
    let mut seen = std::collections::HashSet::with_capacity(ids.ids.len());
    for (v, &id) in ids.ids.iter().enumerate() {
        if !segs.is_dead(v as u64) && !seen.insert(id) {
            return Err(FormatError::corrupt(
                path,
                48 + 8 * v as u64,
                format!("live vid {v} repeats the id {id} of an earlier live vid"),
            ));
        }
    }
    Ok(())
}

/// `sectors.m3` (checked against the manifest's length and CRC32C): `data_sectors` CRCs.
fn read_sector_crcs(f: &ListedFile, data_sectors: u64) -> Result<Vec<u32>, FormatError> {
    let crcs = SectorCrcs::read_listed(f)?.crcs;
    if crcs.len() as u64 != data_sectors {
        return Err(FormatError::corrupt(
            &f.path,
            32,
            format!("{} sector CRCs for {data_sectors} data sectors", crcs.len()),
        ));
    }
    Ok(crcs)
}

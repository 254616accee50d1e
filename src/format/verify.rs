//! Checking an index directory: [`open_check`] (cheap: manifest, every header, every
//! length), [`super::IndexParts::open`] (what opening an index checks, built on it) and
//! [`verify`] (`m3 verify`: what opening checks, and every byte of the rest: `sectors.m3`,
//! the informational files, and `data.m3` sector by sector and record by record). Each stops
//! at the first problem and names the file, and for a data sector or record its number.
//! `docs/FORMAT.md`, "Checks", lists what each guarantees.

use std::path::{Path, PathBuf};

use super::FormatError;
use super::blocks::{BLOCKS_KIND, BlocksHeader};
use super::clusters::{CLUSTERS_KIND, ClusterEntry, ClustersHeader};
use super::coarse::{COARSE_KIND, CoarseHeader};
use super::data::DataFileHeader;
use super::file::{FileEntry, ListedFile, SectionReader, check_listed_length, file_crc32c};
use super::files::{
    BLOCKS_FILE, CLUSTERS_FILE, COARSE_FILE, DATA_FILE, HINTS_FILE, IDS_FILE, INFORMATIONAL_FILES,
    KEYS_FILE, MANIFEST_FILE, PQ_FILE, REFINE_FILE, REQUIRED_FILES, ROUTING_FILE, SECTORS_FILE,
    SEGMENTS_FILE, STATS_FILE,
};
use super::header::FileKind;
use super::hints::{HINTS_KIND, HintsHeader};
use super::ids::{IDS_KIND, IdsHeader};
use super::keys::{KEYS_KIND, KeysHeader};
use super::manifest::Manifest;
use super::open::IndexParts;
use super::pq::{PQ_KIND, PqHeader, REFINE_KIND};
use super::routing::{ROUTING_KIND, RoutingHeader};
use super::sectors::{SECTORS_KIND, SectorCrcs, SectorsHeader};
use super::stats::{STATS_KIND, StatsHeader};
use super::{RecordCodec, RecordLayout, SECTOR_BYTES};

/// What [`verify`] checked.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// The index's manifest.
    pub manifest: Manifest,
    /// Files checked, the manifest excluded.
    pub files: usize,
    /// Bytes read and checksummed.
    pub bytes: u64,
    /// Data sectors checked against `sectors.m3`.
    pub data_sectors: u64,
    /// Records of `data.m3` decoded and checked.
    pub records: u64,
    /// Informational files that are missing or do not match the manifest: not an error of
    /// the index, which opens and answers without them.
    pub informational: Vec<String>,
}

fn read_manifest(dir: &Path) -> Result<Manifest, FormatError> {
    let path = dir.join(MANIFEST_FILE);
    // Only a manifest that is not there makes "not an index"; any other failure to reach it
    // (permission denied, a path through a regular file) is reported as itself.
    match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(FormatError::NotAnIndex {
                dir: dir.to_path_buf(),
                file: MANIFEST_FILE,
            });
        }
        Err(e) => return Err(FormatError::io(&path, e)),
        Ok(m) if !m.is_file() => {
            return Err(FormatError::corrupt(&path, 0, "not a regular file"));
        }
        Ok(_) => {}
    }
    let m = Manifest::read(&path)?;
    let blocks = m.meta.flags & super::manifest::META_FLAG_BLOCKS != 0;
    if blocks != m.file(BLOCKS_FILE).is_some() {
        return Err(FormatError::corrupt(
            &path,
            39,
            if blocks {
                "flag bit 2 (multi-vector) is set but the manifest does not list blocks.m3"
            } else {
                "the manifest lists blocks.m3 but flag bit 2 (multi-vector) is clear"
            },
        ));
    }
    let ids = m.meta.flags & super::manifest::META_FLAG_IDS != 0;
    if ids != m.file(IDS_FILE).is_some() {
        return Err(FormatError::corrupt(
            &path,
            39,
            if ids {
                "flag bit 3 (user ids) is set but the manifest does not list ids.m3"
            } else {
                "the manifest lists ids.m3 but flag bit 3 (user ids) is clear"
            },
        ));
    }
    let merged = m.meta.flags & super::manifest::META_FLAG_SEGMENTS != 0;
    if merged && m.file(super::files::SEGMENTS_FILE).is_none() {
        return Err(FormatError::corrupt(
            &path,
            39,
            "flag bit 5 (merged) is set but the manifest does not list segments.m3",
        ));
    }
    // A merged index may have merged every cluster out of data.m3 (its segments are checked
    // by IndexParts::open).
    for name in REQUIRED_FILES {
        if m.file(name).is_none() && !(merged && name == DATA_FILE) {
            return Err(FormatError::corrupt(
                &path,
                12,
                format!("manifest does not list {name}"),
            ));
        }
    }
    Ok(m)
}

fn entry_path<'a>(dir: &Path, e: &'a FileEntry) -> (PathBuf, &'a str) {
    // Manifest::read guarantees plain names.
    let name = e.name_str().unwrap_or("");
    (dir.join(name), name)
}

fn check_length(path: &Path, e: &FileEntry) -> Result<(), FormatError> {
    let len = std::fs::metadata(path)
        .map_err(|err| FormatError::io(path, err))?
        .len();
    check_listed_length(path, e, len)
}

fn header_only<S: bytemuck::Pod>(path: &Path, kind: &FileKind) -> Result<(), FormatError> {
    SectionReader::open::<S>(path, kind).map(|_| ())
}

/// The cheap first step of opening an index (and the test of "is this directory a complete
/// index" when publishing): the manifest, the presence, length and header of every listed
/// file but the informational ones, and the data header against the manifest. Reads no
/// bodies; [`super::IndexParts::open`] checks them.
pub fn open_check(dir: &Path) -> Result<Manifest, FormatError> {
    let m = read_manifest(dir)?;
    for e in &m.files {
        let (path, name) = entry_path(dir, e);
        if INFORMATIONAL_FILES.contains(&name) {
            continue;
        }
        check_length(&path, e)?;
        match name {
            CLUSTERS_FILE => header_only::<ClustersHeader>(&path, &CLUSTERS_KIND)?,
            ROUTING_FILE => header_only::<RoutingHeader>(&path, &ROUTING_KIND)?,
            STATS_FILE => header_only::<StatsHeader>(&path, &STATS_KIND)?,
            PQ_FILE => header_only::<PqHeader>(&path, &PQ_KIND)?,
            REFINE_FILE => header_only::<PqHeader>(&path, &REFINE_KIND)?,
            SECTORS_FILE => header_only::<SectorsHeader>(&path, &SECTORS_KIND)?,
            KEYS_FILE => header_only::<KeysHeader>(&path, &KEYS_KIND)?,
            BLOCKS_FILE => header_only::<BlocksHeader>(&path, &BLOCKS_KIND)?,
            COARSE_FILE => header_only::<CoarseHeader>(&path, &COARSE_KIND)?,
            HINTS_FILE => header_only::<HintsHeader>(&path, &HINTS_KIND)?,
            IDS_FILE => header_only::<IdsHeader>(&path, &IDS_KIND)?,
            DATA_FILE if m.meta.flags & super::manifest::META_FLAG_SEGMENTS == 0 => {
                DataFileHeader::read(&path)?.check_against(&m.meta, &path)?
            }
            _ => {} // a file of a newer minor version: length checked only
        }
    }
    Ok(m)
}

fn whole_file_crc(path: &Path, e: &FileEntry) -> Result<(), FormatError> {
    let (len, crc) = file_crc32c(path)?;
    check_listed_length(path, e, len)?;
    if crc != e.crc32c {
        return Err(FormatError::Checksum {
            path: path.to_path_buf(),
            what: "whole file".into(),
            stored: e.crc32c,
            computed: crc,
        });
    }
    Ok(())
}

/// Checks every byte of the index in `dir`. Order: everything [`IndexParts::open`] checks
/// (manifest, headers, lengths, and each RAM-resident file's CRC32C, parse and consistency
/// with the manifest), then `sectors.m3` and any file of a newer minor version (whole-file
/// CRC32C), the informational files (reported, not failed), then `data.m3` cluster by
/// cluster: each data sector against `sectors.m3`, each record decoded (id below
/// `n_vectors`, degree, neighbours below `n_records`, finite components), its whole-file
/// CRC32C, and `stats.m3`'s `max_base_norm` against the largest record norm.
pub fn verify(dir: &Path) -> Result<VerifyReport, FormatError> {
    let parts = IndexParts::open(dir)?;
    let m = &parts.manifest;
    let meta = &m.meta;
    let mut bytes = 0u64;
    let mut sector_crcs = None;
    let mut informational = Vec::new();
    let merged = parts.segments.is_some();
    // data.m3 of a 1.x index is checked below while it is streamed; the segments of a merged
    // index (data.m3 among them) are checked whole here, then record by record below.
    for e in m
        .files
        .iter()
        .filter(|e| merged || e.name_str() != Some(DATA_FILE))
    {
        let (path, name) = entry_path(dir, e);
        if INFORMATIONAL_FILES.contains(&name) {
            if let Err(err) = whole_file_crc(&path, e) {
                informational.push(err.to_string());
            }
            continue;
        }
        bytes += e.bytes;
        match name {
            SECTORS_FILE => {
                let s = SectorCrcs::read_listed(&ListedFile::open(dir, e)?)?;
                if s.crcs.len() as u64 != meta.data_sectors {
                    return Err(FormatError::corrupt(
                        &path,
                        32,
                        format!(
                            "{} sector CRCs for {} sectors",
                            s.crcs.len(),
                            meta.data_sectors
                        ),
                    ));
                }
                sector_crcs = Some(s.crcs);
            }
            // Checked whole by IndexParts::open.
            CLUSTERS_FILE | ROUTING_FILE | STATS_FILE | PQ_FILE | REFINE_FILE | KEYS_FILE
            | BLOCKS_FILE | COARSE_FILE | HINTS_FILE | IDS_FILE | SEGMENTS_FILE => {}
            _ => whole_file_crc(&path, e)?,
        }
    }
    let crcs = sector_crcs.expect("sectors.m3 is required");
    let codec = parts
        .data_header
        .codec()?
        .with_n_records(meta.n_records)
        .with_n_vectors(meta.n_vectors);
    let files: Vec<(u64, PathBuf)> = match &parts.segments {
        None => vec![(0, dir.join(DATA_FILE))],
        Some(s) => s
            .segments
            .iter()
            .zip(s.starts())
            .map(|(e, b)| (b, dir.join(e.name_str().unwrap_or_default())))
            .collect(),
    };
    let data_check = DataCheck {
        files: &files,
        crcs: &crcs,
        entries: &parts.clusters.entries,
        codec,
        layout: parts.data_header.layout(),
    };
    let (computed, max_norm) = data_check.run()?;
    // Queries are checked against this norm (no distance may overflow), so it must be the
    // records' own (the build computes it in f32: a relative tolerance of 1e-4).
    // A shard (flag bit 4) keeps the whole index's statistics: its records' norm may be
    // smaller, never larger (a bound is all the query check needs).
    let stated = f64::from(parts.stats.max_base_norm);
    // So does a merged index (flag bit 5): deleted records may have held the largest norm.
    let shard =
        meta.flags & (super::manifest::META_FLAG_SHARD | super::manifest::META_FLAG_SEGMENTS) != 0;
    let tolerance = 1e-4 * stated.max(max_norm) + 1e-6;
    if (shard && max_norm > stated + tolerance) || (!shard && (max_norm - stated).abs() > tolerance)
    {
        return Err(FormatError::corrupt(
            dir.join(STATS_FILE),
            64,
            format!("max_base_norm is {stated}, the records of data.m3 reach {max_norm}"),
        ));
    }
    if let Some(data) = m.file(DATA_FILE).filter(|_| !merged) {
        if computed != data.crc32c {
            return Err(FormatError::Checksum {
                path: dir.join(DATA_FILE),
                what: "whole file".into(),
                stored: data.crc32c,
                computed,
            });
        }
        bytes += data.bytes;
    }
    Ok(VerifyReport {
        files: m.files.len(),
        bytes,
        data_sectors: crcs.len() as u64,
        records: meta.n_records,
        informational,
        manifest: parts.manifest,
    })
}

/// One pass over `data.m3` (see [`verify`]); the cluster table tiles its data sectors exactly
/// (checked by [`super::ClusterTable::check_against`]).
struct DataCheck<'a> {
    /// The data files and the sector of the concatenated space where each starts (1.x:
    /// `data.m3` at 0; a merged index: its segments).
    files: &'a [(u64, PathBuf)],
    crcs: &'a [u32],
    entries: &'a [ClusterEntry],
    codec: RecordCodec,
    layout: RecordLayout,
}

/// Data sectors read at a time (at least one whole record).
const CHUNK_SECTORS: u64 = 256;

impl DataCheck<'_> {
    /// Streams the file cluster by cluster, in whole records; returns its CRC32C and the
    /// largest norm of a record.
    fn run(&self) -> Result<(u32, f64), FormatError> {
        use std::os::unix::fs::FileExt;
        let opened: Vec<std::fs::File> = self
            .files
            .iter()
            .map(|(_, p)| std::fs::File::open(p).map_err(|e| FormatError::io(p, e)))
            .collect::<Result<_, _>>()?;
        // The file holding sector `s` of the concatenated space, and `s` inside it.
        let at = |s: u64| {
            let k = self
                .files
                .partition_point(|(b, _)| *b <= s)
                .saturating_sub(1);
            (&opened[k], &self.files[k].1, s - self.files[k].0)
        };
        let (file, path, _) = at(0);
        let io = |e| FormatError::io(path, e);
        let sb = SECTOR_BYTES as u64;
        let mut buf = vec![0u8; SECTOR_BYTES];
        file.read_exact_at(&mut buf, 0).map_err(io)?;
        let mut whole = crc32c::crc32c(&buf);
        let mut max_norm = 0f64;
        let per_chunk = match self.layout.records_per_sector() {
            0 => (CHUNK_SECTORS / self.layout.sectors_per_record() as u64).max(1),
            rps => CHUNK_SECTORS * rps as u64,
        };
        for (c, e) in self.entries.iter().enumerate() {
            let mut i = 0u64;
            while i < e.records as u64 {
                let n = per_chunk.min(e.records as u64 - i);
                let first = e.first_sector + self.layout.locate(i).sector;
                let sectors = self.layout.sectors_for(n);
                buf.resize((sectors * sb) as usize, 0);
                let (file, path, local) = at(1 + first);
                file.read_exact_at(&mut buf, local * sb)
                    .map_err(|e| FormatError::io(path, e))?;
                for (k, sector) in buf.chunks_exact(SECTOR_BYTES).enumerate() {
                    let s = first as usize + k;
                    let computed = crc32c::crc32c(sector);
                    if computed != self.crcs[s] {
                        return Err(FormatError::Checksum {
                            path: path.to_path_buf(),
                            what: format!("sector {s}"),
                            stored: self.crcs[s],
                            computed,
                        });
                    }
                }
                whole = crc32c::crc32c_append(whole, &buf);
                for j in i..i + n {
                    let loc = self.layout.locate(j);
                    let at = ((loc.sector - (first - e.first_sector)) * sb) as usize
                        + loc.offset_bytes as usize;
                    let file_offset =
                        (1 + e.first_sector + loc.sector) * sb + loc.offset_bytes as u64;
                    let place = format!("record {} (cluster {c})", e.first_record + j);
                    let rec = self
                        .codec
                        .decode(&buf[at..], path, file_offset)
                        .map_err(|err| err.within(&place))?;
                    if let Some(k) = rec.first_non_finite() {
                        return Err(FormatError::corrupt(
                            path,
                            file_offset + 4 * k as u64,
                            format!("{place}: component {k} is not finite"),
                        ));
                    }
                    max_norm = max_norm.max(rec.norm());
                }
                i += n;
            }
        }
        Ok((whole, max_norm))
    }
}

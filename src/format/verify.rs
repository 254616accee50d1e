//! Checking an index directory: [`open_check`] (cheap, at open: manifest, every header, every
//! length) and [`verify`] (`m3 verify`: additionally every whole-file CRC32C, every section
//! parse and every data sector against `sectors.m3`). Both stop at the first problem and name
//! the file, and for a data sector its number.

use std::path::{Path, PathBuf};

use super::FormatError;
use super::blocks::{BLOCKS_KIND, BlockTable, BlocksHeader};
use super::clusters::{CLUSTERS_KIND, ClusterTable, ClustersHeader};
use super::coarse::{COARSE_KIND, CoarseHeader, CoarseLevel};
use super::data::DataFileHeader;
use super::file::{FileEntry, SectionReader, file_crc32c};
use super::header::FileKind;
use super::hints::{HINTS_KIND, Hints, HintsHeader};
use super::keys::{KEYS_KIND, KeysHeader, RecordKeys};
use super::manifest::Manifest;
use super::pq::{PQ_KIND, PqFile, PqHeader};
use super::routing::{ROUTING_KIND, Routing, RoutingHeader};
use super::sectors::{SECTORS_KIND, SectorCrcs, SectorsHeader};
use super::stats::{STATS_KIND, Stats, StatsHeader};
use crate::format::SECTOR_BYTES;

pub const MANIFEST_FILE: &str = "manifest.m3";
pub const CLUSTERS_FILE: &str = "clusters.m3";
pub const ROUTING_FILE: &str = "routing.m3";
pub const STATS_FILE: &str = "stats.m3";
pub const PQ_FILE: &str = "pq.m3";
pub const DATA_FILE: &str = "data.m3";
pub const SECTORS_FILE: &str = "sectors.m3";
/// Every record's key (distance to its centroid), for exact and range search. Optional: added
/// in format 1.1.
pub const KEYS_FILE: &str = "keys.m3";
/// The coarse level of two-level routing over the base anchors. Optional (an additive entry,
/// like `keys.m3`): written when K reaches the build's two-level threshold.
pub const COARSE_FILE: &str = "coarse.m3";
/// Training queries and the records of their exact answers (record-level routing). Optional
/// (an additive entry): written when the build is given training queries.
pub const HINTS_FILE: &str = "hints.m3";
/// The blocks of a multi-vector index (listed only when manifest flag bit 2 is set).
pub const BLOCKS_FILE: &str = "blocks.m3";
/// The JSON build report: informational, listed in the manifest, not needed to open the index.
pub const REPORT_FILE: &str = "build_report.json";

/// The files every index lists in its manifest (besides the manifest itself).
pub const REQUIRED_FILES: [&str; 6] = [
    CLUSTERS_FILE,
    ROUTING_FILE,
    STATS_FILE,
    PQ_FILE,
    DATA_FILE,
    SECTORS_FILE,
];

/// What [`verify`] checked.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    pub manifest: Manifest,
    /// Files checked, the manifest excluded.
    pub files: usize,
    /// Bytes read and checksummed.
    pub bytes: u64,
    /// Data sectors checked against `sectors.m3`.
    pub data_sectors: u64,
}

fn read_manifest(dir: &Path) -> Result<Manifest, FormatError> {
    let path = dir.join(MANIFEST_FILE);
    if !path.is_file() {
        return Err(FormatError::NotAnIndex {
            dir: dir.to_path_buf(),
            file: MANIFEST_FILE,
        });
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
    for name in REQUIRED_FILES {
        if m.file(name).is_none() {
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
    if len != e.bytes {
        return Err(FormatError::Truncated {
            path: path.to_path_buf(),
            expected_bytes: e.bytes,
            found_bytes: len,
        });
    }
    Ok(())
}

fn header_only<S: bytemuck::Pod>(path: &Path, kind: &FileKind) -> Result<(), FormatError> {
    SectionReader::open::<S>(path, kind).map(|_| ())
}

/// The check done when an index is opened: the manifest, the presence, length and header of
/// every listed file, and the data header against the manifest. Reads no bodies.
pub fn open_check(dir: &Path) -> Result<Manifest, FormatError> {
    let m = read_manifest(dir)?;
    for e in &m.files {
        let (path, name) = entry_path(dir, e);
        check_length(&path, e)?;
        match name {
            CLUSTERS_FILE => header_only::<ClustersHeader>(&path, &CLUSTERS_KIND)?,
            ROUTING_FILE => header_only::<RoutingHeader>(&path, &ROUTING_KIND)?,
            STATS_FILE => header_only::<StatsHeader>(&path, &STATS_KIND)?,
            PQ_FILE => header_only::<PqHeader>(&path, &PQ_KIND)?,
            SECTORS_FILE => header_only::<SectorsHeader>(&path, &SECTORS_KIND)?,
            KEYS_FILE => header_only::<KeysHeader>(&path, &KEYS_KIND)?,
            BLOCKS_FILE => header_only::<BlocksHeader>(&path, &BLOCKS_KIND)?,
            COARSE_FILE => header_only::<CoarseHeader>(&path, &COARSE_KIND)?,
            HINTS_FILE => header_only::<HintsHeader>(&path, &HINTS_KIND)?,
            DATA_FILE => DataFileHeader::read(&path)?.check_against(&m.meta, &path)?,
            _ => {} // a file of a newer minor version: length checked only
        }
    }
    Ok(m)
}

fn whole_file_crc(path: &Path, e: &FileEntry) -> Result<(), FormatError> {
    let (len, crc) = file_crc32c(path)?;
    if len != e.bytes {
        return Err(FormatError::Truncated {
            path: path.to_path_buf(),
            expected_bytes: e.bytes,
            found_bytes: len,
        });
    }
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

/// Checks every checksum of the index in `dir`. Order: manifest, then each listed file but
/// `data.m3` (length, whole-file CRC32C, full parse, consistency with the manifest), then
/// `data.m3` sector by sector against `sectors.m3`, then its whole-file CRC32C.
pub fn verify(dir: &Path) -> Result<VerifyReport, FormatError> {
    let m = read_manifest(dir)?;
    let meta = &m.meta;
    let mut bytes = 0u64;
    let mut sector_crcs = None;
    let mut cluster_entries = None;
    let mut keys = None;
    for e in m.files.iter().filter(|e| e.name_str() != Some(DATA_FILE)) {
        let (path, name) = entry_path(dir, e);
        whole_file_crc(&path, e)?;
        bytes += e.bytes;
        match name {
            CLUSTERS_FILE => {
                let t = ClusterTable::read(&path)?;
                t.check_against(meta, &path)?;
                cluster_entries = Some(t.entries);
            }
            KEYS_FILE => keys = Some((RecordKeys::read(&path)?, path)),
            ROUTING_FILE => Routing::read(&path)?.check_against(meta, &path)?,
            STATS_FILE => Stats::read(&path)?.check_against(meta, &path)?,
            PQ_FILE => PqFile::read(&path)?.check_against(meta, &path)?,
            BLOCKS_FILE => BlockTable::read(&path)?.check_against(meta, &path)?,
            COARSE_FILE => CoarseLevel::read(&path)?.check_against(meta, &path)?,
            HINTS_FILE => Hints::read(&path)?.check_against(meta, &path)?,
            SECTORS_FILE => {
                let s = SectorCrcs::read(&path)?;
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
            _ => {}
        }
    }
    if let (Some((keys, path)), Some(entries)) = (keys, cluster_entries) {
        keys.check_against(meta, &entries, &path)?;
    }
    let data = m.file(DATA_FILE).expect("required file");
    let (path, _) = entry_path(dir, data);
    check_length(&path, data)?;
    DataFileHeader::read(&path)?.check_against(meta, &path)?;
    let crcs = sector_crcs.expect("sectors.m3 is required");
    let computed = verify_data_sectors(&path, &crcs)?;
    if computed != data.crc32c {
        return Err(FormatError::Checksum {
            path,
            what: "whole file".into(),
            stored: data.crc32c,
            computed,
        });
    }
    bytes += data.bytes;
    Ok(VerifyReport {
        files: m.files.len(),
        bytes,
        data_sectors: crcs.len() as u64,
        manifest: m,
    })
}

/// Streams `data.m3`, comparing each data sector with `crcs`; returns the whole-file CRC.
fn verify_data_sectors(path: &Path, crcs: &[u32]) -> Result<u32, FormatError> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path).map_err(|e| FormatError::io(path, e))?;
    let io = |e| FormatError::io(path, e);
    let mut buf = vec![0u8; 256 * SECTOR_BYTES];
    file.read_exact_at(&mut buf[..SECTOR_BYTES], 0)
        .map_err(io)?;
    let mut whole = crc32c::crc32c(&buf[..SECTOR_BYTES]);
    let mut s = 0usize;
    while s < crcs.len() {
        let n = (crcs.len() - s).min(256);
        let chunk = &mut buf[..n * SECTOR_BYTES];
        file.read_exact_at(chunk, ((s + 1) * SECTOR_BYTES) as u64)
            .map_err(io)?;
        for (i, sector) in chunk.chunks_exact(SECTOR_BYTES).enumerate() {
            let computed = crc32c::crc32c(sector);
            if computed != crcs[s + i] {
                return Err(FormatError::Checksum {
                    path: path.to_path_buf(),
                    what: format!("sector {}", s + i),
                    stored: crcs[s + i],
                    computed,
                });
            }
        }
        whole = crc32c::crc32c_append(whole, chunk);
        s += n;
    }
    Ok(whole)
}

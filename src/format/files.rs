//! The names of the files in an index directory, and which of them an index must, may or
//! may only transiently hold (`docs/FORMAT.md`, "Files" and "Publishing").

/// The manifest: index metadata and one entry (length, CRC32C) per other file.
pub const MANIFEST_FILE: &str = "manifest.m3";
/// Centroids, cluster entries and the anchor graph.
pub const CLUSTERS_FILE: &str = "clusters.m3";
/// Query anchors and their cross-modal edges.
pub const ROUTING_FILE: &str = "routing.m3";
/// Per-modality mean and variance, LID statistics.
pub const STATS_FILE: &str = "stats.m3";
/// PQ codebooks, codes, per-record correction and error.
pub const PQ_FILE: &str = "pq.m3";
/// The records (vector, id, neighbour list), cluster by cluster, in 4 KiB sectors.
pub const DATA_FILE: &str = "data.m3";
/// CRC32C of each data sector.
pub const SECTORS_FILE: &str = "sectors.m3";
/// The data segments and dead vids of a merged index (format 2.0, decision 0012).
pub const SEGMENTS_FILE: &str = "segments.m3";
/// Every record's key (distance to its centroid), for exact and range search. Optional: added
/// in format 1.1.
pub const KEYS_FILE: &str = "keys.m3";
/// The coarse level of two-level routing over the base anchors. Optional (an additive entry,
/// like `keys.m3`): written when K reaches the build's two-level threshold.
pub const COARSE_FILE: &str = "coarse.m3";
/// Training queries and the records of their exact answers (record-level routing). Optional
/// (an additive entry): written when the build is given training queries.
pub const HINTS_FILE: &str = "hints.m3";
/// Refinement codes: a second PQ of what `pq.m3`'s codes leave (decision 0008). Optional (an
/// additive entry): the build writes it unless told not to.
pub const REFINE_FILE: &str = "refine.m3";
/// The user id of every base vector (listed only when manifest flag bit 3 is set).
pub const IDS_FILE: &str = "ids.m3";
/// The write-ahead log of live updates (not listed in the manifest; `docs/FORMAT.md`,
/// "wal.m3").
pub const WAL_FILE: &str = "wal.m3";
/// A new write-ahead log's header before it is renamed to [`WAL_FILE`].
pub const WAL_NEW_FILE: &str = "wal.m3.new";
/// The records of vectors inserted after publication (not listed in the manifest;
/// `docs/FORMAT.md`, "delta.m3").
pub const DELTA_FILE: &str = "delta.m3";
/// A new `delta.m3`'s header sector before it is renamed to [`DELTA_FILE`].
pub const DELTA_NEW_FILE: &str = "delta.m3.new";
/// Derived data of the committed inserts (cluster, PQ code, correction, error, key), so that
/// opening does not code them again (not listed in the manifest; `docs/FORMAT.md`,
/// "delta_codes.m3").
pub const DELTA_CODES_FILE: &str = "delta_codes.m3";
/// A new `delta_codes.m3`'s header before it is renamed to [`DELTA_CODES_FILE`].
pub const DELTA_CODES_NEW_FILE: &str = "delta_codes.m3.new";
/// The blocks of a multi-vector index (listed only when manifest flag bit 2 is set).
pub const BLOCKS_FILE: &str = "blocks.m3";
/// The JSON build report: informational, listed in the manifest, not needed to open the index.
pub const REPORT_FILE: &str = "build_report.json";
/// The JSON report of `m3 calibrate` (its choice is in the manifest): informational, written
/// by [`super::update_published`].
pub const CALIBRATION_FILE: &str = "calibration.json";
/// The manifest being replaced by [`super::update_published`] (renamed over `manifest.m3`).
pub const MANIFEST_UPDATE_FILE: &str = "manifest.m3.new";
/// The build's scratch file of record ids, in the temporary directory only.
pub const RECORD_IDS_SCRATCH: &str = "record_ids.scratch";

/// Files listed in the manifest for people, not for queries: a missing or damaged one never
/// keeps an index from opening ([`super::verify()`] reports it in
/// [`super::VerifyReport::informational`]).
pub const INFORMATIONAL_FILES: [&str; 2] = [REPORT_FILE, CALIBRATION_FILE];

/// The files every index lists in its manifest (besides the manifest itself).
pub const REQUIRED_FILES: [&str; 6] = [
    CLUSTERS_FILE,
    ROUTING_FILE,
    STATS_FILE,
    PQ_FILE,
    DATA_FILE,
    SECTORS_FILE,
];

/// Every file name an index directory (published or being built) may hold.
pub const INDEX_DIR_FILES: [&str; 24] = [
    MANIFEST_FILE,
    SEGMENTS_FILE,
    CLUSTERS_FILE,
    ROUTING_FILE,
    STATS_FILE,
    PQ_FILE,
    DATA_FILE,
    SECTORS_FILE,
    KEYS_FILE,
    COARSE_FILE,
    HINTS_FILE,
    REFINE_FILE,
    BLOCKS_FILE,
    IDS_FILE,
    WAL_FILE,
    WAL_NEW_FILE,
    DELTA_FILE,
    DELTA_NEW_FILE,
    DELTA_CODES_FILE,
    DELTA_CODES_NEW_FILE,
    REPORT_FILE,
    CALIBRATION_FILE,
    MANIFEST_UPDATE_FILE,
    RECORD_IDS_SCRATCH,
];

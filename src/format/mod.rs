//! On-disk structures of an index: one module per file kind, each with its byte layout written
//! once in `docs/FORMAT.md` (normative; `tests/format_doc.rs` checks its offset tables against
//! the `layout_table()` of every header struct here). Every file starts with the
//! [`header::CommonHeader`] (magic, version, lengths, header CRC32C); index files are
//! untrusted input, so every decoder returns a [`FormatError`] rather than panicking, and
//! checks every section against the real file length before allocating it.
//!
//! | file | module | contents |
//! |---|---|---|
//! | `manifest.m3` | [`manifest`] | [`Manifest`]: [`IndexMeta`] + one [`FileEntry`] per file |
//! | `clusters.m3` | [`clusters`] | [`ClusterTable`]: centroids, [`ClusterEntry`]s, anchor graph |
//! | `routing.m3` | [`routing`] | [`Routing`]: query anchors and their cluster edges |
//! | `stats.m3` | [`stats`] | [`Stats`]: per-modality mean/variance, LID statistics |
//! | `pq.m3` | [`pq`] | [`PqFile`]: codebooks, codes, per-record correction and error |
//! | `data.m3` | [`data`], [`record`] | [`DataFileWriter`], [`DataFileHeader`], [`RecordCodec`] |
//! | `sectors.m3` | [`sectors`] | [`SectorCrcs`]: CRC32C of each data sector |
//! | `keys.m3` | [`keys`] | [`RecordKeys`]: each record's distance to its centroid (1.1) |
//! | `blocks.m3` | [`blocks`] | [`BlockTable`]: blocks of a multi-vector index (optional) |
//! | `coarse.m3` | [`coarse`] | [`CoarseLevel`]: two-level routing's coarse groups (optional) |
//! | `hints.m3` | [`hints`] | [`Hints`]: training queries and their answers' records (optional) |
//! | `ids.m3` | [`ids`] | [`UserIds`]: the user id of every base vector (optional, 1.2) |
//! | `segments.m3` | [`segments`] | [`Segments`]: data segments and dead vids of a merged index (2.0) |
//!
//! [`IndexParts::open`] is the one way to open an index: it loads and checks every file held in
//! RAM (CRC32C, finite values, ids and counts in range), and every caller (search, serving,
//! calibration, [`inspect`], [`verify()`]) goes through it. [`open_check`] is its cheap first
//! step; [`verify()`] adds every byte of `data.m3`. [`publish`] moves a finished directory into
//! place crash-safely (after [`check_target`] made sure it replaces nothing but an index),
//! [`recover_index_dir`] finishes or rolls back a publication a kill interrupted, and
//! [`index_dir`] says what an index directory may hold.

pub mod blocks;
pub mod clusters;
pub mod coarse;
pub mod data;
pub mod delta;
pub mod delta_codes;
mod error;
mod file;
pub mod files;
pub mod header;
pub mod hints;
pub mod ids;
pub mod index_dir;
pub mod inspect;
pub mod keys;
pub mod layout;
pub mod manifest;
mod open;
pub mod pq;
pub mod publish;
pub mod record;
pub mod recover;
pub mod routing;
pub mod sectors;
pub mod segments;
pub mod shards;
pub mod stats;
mod streamed;
pub mod verify;
pub mod wal;

pub use blocks::{BlockEntry, BlockInfo, BlockTable, BlocksHeader};
pub use clusters::{ClusterEntry, ClusterTable, ClustersHeader, NO_ID};
pub use coarse::{CoarseHeader, CoarseLevel};
pub use data::{DataFileHeader, DataFileParams, DataFileWriter, DataLocation, locate_record};
pub use error::FormatError;
pub(crate) use file::write_whole_file;
pub use file::{FILE_NAME_BYTES, FileEntry, LayoutTable, ListedFile, file_crc32c};
pub use hints::{Hints, HintsHeader};
pub use ids::{IdsHeader, UserIds};
pub use index_dir::{DirContents, dir_contents};
pub use inspect::IndexInfo;
pub use keys::{KeysHeader, RecordKeys, RecordKeysWriter};
pub use layout::{RecordLayout, RecordLocation, SECTOR_BYTES};
pub use manifest::{DistanceMode, IndexMeta, Manifest, UnknownDistanceMode};
pub use open::IndexParts;
pub use pq::{PqFile, PqFileWriter, PqHeader};
pub(crate) use publish::sync_dir;
pub use publish::{IndexDirWriter, TargetState, check_target, update_published};
pub use record::{RecordCodec, RecordView};
pub use recover::{RecoveryReport, Restored, recover_index_dir};
pub use routing::{Routing, RoutingHeader};
pub use sectors::{SectorCrcs, SectorsHeader};
pub use segments::{SegmentEntry, Segments, SegmentsHeader};
pub use shards::{MAX_SHARDS, SHARDS_FILE, ShardTable, ShardsHeader};
pub use stats::{Stats, StatsHeader};
pub use verify::{VerifyReport, open_check, verify};
pub use wal::{WalFrame, WalHeader, WalOp, WalReplay, WalTail, WalWriter, read_wal, read_wal_from};

/// Every offset table of `docs/FORMAT.md`, keyed by the heading above it: `(field, offset,
/// size)` rows, offsets from the file start for file headers and from the entry start for
/// [`FileEntry`] and [`ClusterEntry`].
pub fn layout_tables() -> Vec<(&'static str, LayoutTable)> {
    vec![
        (
            "Common header",
            crate::layout_table!(
                0,
                header::CommonHeader,
                magic,
                version_major,
                version_minor,
                header_bytes,
                file_bytes,
                header_crc32c,
                reserved
            ),
        ),
        ("manifest.m3", IndexMeta::layout_table()),
        ("Manifest file entry", FileEntry::layout_table()),
        ("clusters.m3", ClustersHeader::layout_table()),
        ("Cluster entry", ClusterEntry::layout_table()),
        ("routing.m3", RoutingHeader::layout_table()),
        ("stats.m3", StatsHeader::layout_table()),
        ("pq.m3", PqHeader::layout_table()),
        ("data.m3", DataFileHeader::layout_table()),
        ("sectors.m3", SectorsHeader::layout_table()),
        ("keys.m3", KeysHeader::layout_table()),
        ("blocks.m3", BlocksHeader::layout_table()),
        ("coarse.m3", CoarseHeader::layout_table()),
        ("hints.m3", HintsHeader::layout_table()),
        ("ids.m3", IdsHeader::layout_table()),
        ("wal.m3", WalHeader::layout_table()),
        ("delta.m3", delta::DeltaHeader::layout_table()),
        (
            "delta_codes.m3",
            delta_codes::DeltaCodesHeader::layout_table(),
        ),
        (
            "Delta code entry",
            delta_codes::DeltaCodeEntry::layout_table(),
        ),
        ("WAL record frame", WalFrame::layout_table()),
        ("segments.m3", SegmentsHeader::layout_table()),
        ("Segment entry", SegmentEntry::layout_table()),
        ("Block entry", BlockEntry::layout_table()),
        ("shards.m3", ShardsHeader::layout_table()),
    ]
}

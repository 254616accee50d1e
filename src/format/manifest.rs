//! `manifest.m3`: the index parameters ([`IndexMeta`]) and the list of every other file with
//! its length and CRC32C ([`FileEntry`]). It has no body: the entries are the last
//! `48 · file_count` bytes of the header, so the header CRC covers them. Written last; a
//! directory without a valid manifest is not an index. Byte layout: `docs/FORMAT.md`,
//! "manifest.m3".

use std::path::Path;

use bytemuck::{Pod, Zeroable};

use super::FormatError;
use super::file::{FileEntry, LayoutTable, SectionReader, SectionWriter};
use super::header::{COMMON_HEADER_BYTES, FileKind};
use crate::data::DType;
use crate::distance::Metric;

pub const MANIFEST_KIND: FileKind = FileKind {
    magic: *b"M3MANIF\0",
    name: "manifest",
    version_major: 1,
    version_minor: 0,
};

/// Minor version written for multi-vector indexes ([`META_FLAG_BLOCKS`], `blocks.m3`): 1.1
/// added them; every other index is still written as 1.0, byte for byte as before.
pub const MANIFEST_MINOR_BLOCKS: u16 = 1;

/// `flags` bit 0: the index has query-modality anchors (`routing.m3` is non-empty).
pub const META_FLAG_QUERY_ANCHORS: u8 = 1;
/// `flags` bit 1: neighbour pruning used a LID-adaptive α in `[alpha_min, alpha_max]`.
pub const META_FLAG_LID_ADAPTIVE: u8 = 2;
/// `flags` bit 2: a multi-vector index; `blocks.m3` gives its blocks and the per-block scales
/// of the stored vectors, which every query must apply (readers that do not know the bit
/// refuse the index rather than search it wrongly).
pub const META_FLAG_BLOCKS: u8 = 4;
/// `flags` bit 3: vectors carry user ids; `ids.m3` holds them (readers that do not know the
/// bit refuse the index rather than answer with row numbers).
pub const META_FLAG_IDS: u8 = 8;
/// Minor version written for indexes with user ids ([`META_FLAG_IDS`], `ids.m3`): 1.2.
pub const MANIFEST_MINOR_IDS: u16 = 2;
/// `flags` bit 4: one shard of a sharded index (docs/DISTRIBUTED.md): it stores the records of
/// the clusters it owns only, so `n_records` may be below `n_vectors` (readers that do not know
/// the bit refuse it rather than answer from part of the data as if it were all of it).
pub const META_FLAG_SHARD: u8 = 16;
/// Minor version written for shards ([`META_FLAG_SHARD`]): 1.3.
pub const MANIFEST_MINOR_SHARD: u16 = 3;
/// `flags` bit 5: a merged index, format 2.0 (decision 0012): records in data segments
/// (`segments.m3`), clusters that need not tile, dead vids. Written with major version 2, so
/// a 1.x reader refuses it (`UnsupportedVersion`).
pub const META_FLAG_SEGMENTS: u8 = 32;
/// The manifest of a merged index ([`META_FLAG_SEGMENTS`]): 2.0.
pub const MANIFEST_KIND_SEGMENTS: FileKind = FileKind {
    version_major: 2,
    version_minor: 0,
    ..MANIFEST_KIND
};

/// Index parameters: the kind-specific header of `manifest.m3`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct IndexMeta {
    pub dim: u32,
    /// 0 f32, 1 u8, 2 i8 ([`IndexMeta::dtype`]).
    pub dtype: u8,
    /// 0 l2, 1 ip, 2 cosine ([`IndexMeta::metric`]).
    pub metric: u8,
    /// 0 native metric, 1 LC-CMD ([`IndexMeta::distance_mode`], [`DistanceMode`]).
    pub distance_mode: u8,
    /// [`META_FLAG_QUERY_ANCHORS`] | [`META_FLAG_LID_ADAPTIVE`] | [`META_FLAG_BLOCKS`].
    pub flags: u8,
    /// Base rows.
    pub n_vectors: u64,
    /// Stored records, spilled copies included.
    pub n_records: u64,
    /// Sectors of cluster data in `data.m3`, its header sector excluded.
    pub data_sectors: u64,
    pub seed: u64,
    pub n_clusters: u32,
    pub n_query_anchors: u32,
    pub pq_subspaces: u32,
    pub max_degree: u32,
    pub record_bytes: u32,
    pub file_count: u32,
    pub lccmd_alpha: f32,
    pub lccmd_beta: f32,
    pub spill_epsilon: f32,
    pub spill_max: u32,
    pub alpha_min: f32,
    pub alpha_max: f32,
    pub lid_k: u32,
    pub anchor_degree: u32,
    pub edges_per_query_anchor: u32,
    pub build_threads: u32,
}

const _: () = assert!(std::mem::size_of::<IndexMeta>() == 104);
const _: () = assert!(std::mem::size_of::<IndexMeta>().is_multiple_of(8));

/// The rerank distance stored by calibration: the `distance_mode` byte of [`IndexMeta`]
/// (`docs/FORMAT.md`, "manifest.m3"). LC-CMD's α and β are `lccmd_alpha` and `lccmd_beta`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum DistanceMode {
    /// The index's metric (byte 0).
    Native = 0,
    /// LC-CMD, DESIGN §4.3 (byte 1).
    LcCmd = 1,
}

/// A `distance_mode` byte that names no [`DistanceMode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown distance mode {0} (0 native metric, 1 LC-CMD)")]
pub struct UnknownDistanceMode(pub u8);

impl DistanceMode {
    /// The byte stored in the manifest.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The name `m3 inspect` prints.
    pub fn name(self) -> &'static str {
        match self {
            DistanceMode::Native => "native",
            DistanceMode::LcCmd => "lc-cmd",
        }
    }
}

impl TryFrom<u8> for DistanceMode {
    type Error = UnknownDistanceMode;

    fn try_from(code: u8) -> Result<Self, UnknownDistanceMode> {
        match code {
            0 => Ok(DistanceMode::Native),
            1 => Ok(DistanceMode::LcCmd),
            c => Err(UnknownDistanceMode(c)),
        }
    }
}

pub(crate) fn dtype_code(d: DType) -> u8 {
    match d {
        DType::F32 => 0,
        DType::U8 => 1,
        DType::I8 => 2,
    }
}

pub(crate) fn dtype_from_code(c: u8) -> Option<DType> {
    match c {
        0 => Some(DType::F32),
        1 => Some(DType::U8),
        2 => Some(DType::I8),
        _ => None,
    }
}

impl IndexMeta {
    pub fn dtype(&self) -> Option<DType> {
        dtype_from_code(self.dtype)
    }

    pub fn set_dtype(&mut self, d: DType) {
        self.dtype = dtype_code(d);
    }

    pub fn metric(&self) -> Option<Metric> {
        match self.metric {
            0 => Some(Metric::L2),
            1 => Some(Metric::InnerProduct),
            2 => Some(Metric::Cosine),
            _ => None,
        }
    }

    pub fn set_metric(&mut self, m: Metric) {
        self.metric = match m {
            Metric::L2 => 0,
            Metric::InnerProduct => 1,
            Metric::Cosine => 2,
        };
    }

    /// The rerank distance calibration stored (a manifest that [`Manifest::read`] accepted
    /// always has one).
    pub fn distance_mode(&self) -> Result<DistanceMode, UnknownDistanceMode> {
        DistanceMode::try_from(self.distance_mode)
    }

    /// Stores the native metric as the rerank distance (LC-CMD's α and β zero).
    pub fn set_native_distance(&mut self) {
        self.distance_mode = DistanceMode::Native.code();
        self.lccmd_alpha = 0.0;
        self.lccmd_beta = 0.0;
    }

    /// Stores LC-CMD with `alpha` and `beta` as the rerank distance.
    pub fn set_lccmd_distance(&mut self, alpha: f32, beta: f32) {
        self.distance_mode = DistanceMode::LcCmd.code();
        self.lccmd_alpha = alpha;
        self.lccmd_beta = beta;
    }

    /// `(field, offset from file start, size)`, checked against `docs/FORMAT.md`.
    pub fn layout_table() -> LayoutTable {
        crate::layout_table!(
            COMMON_HEADER_BYTES,
            IndexMeta,
            dim,
            dtype,
            metric,
            distance_mode,
            flags,
            n_vectors,
            n_records,
            data_sectors,
            seed,
            n_clusters,
            n_query_anchors,
            pq_subspaces,
            max_degree,
            record_bytes,
            file_count,
            lccmd_alpha,
            lccmd_beta,
            spill_epsilon,
            spill_max,
            alpha_min,
            alpha_max,
            lid_k,
            anchor_degree,
            edges_per_query_anchor,
            build_threads,
        )
    }

    /// Value checks that need no other file: enumerations, flags, `dim ≥ 1`, record and
    /// vector counts, the LC-CMD parameters.
    fn check(&self, path: &Path) -> Result<(), FormatError> {
        let at = |field: usize, what: String| {
            Err(FormatError::corrupt(
                path,
                (COMMON_HEADER_BYTES + field) as u64,
                what,
            ))
        };
        if self.dim == 0 {
            return at(0, "dim is 0".into());
        }
        if self.dtype().is_none() {
            return at(4, format!("unknown dtype code {}", self.dtype));
        }
        if self.metric().is_none() {
            return at(5, format!("unknown metric code {}", self.metric));
        }
        let mode = match self.distance_mode() {
            Ok(mode) => mode,
            Err(e) => return at(6, e.to_string()),
        };
        if self.flags
            & !(META_FLAG_QUERY_ANCHORS
                | META_FLAG_LID_ADAPTIVE
                | META_FLAG_BLOCKS
                | META_FLAG_IDS
                | META_FLAG_SHARD
                | META_FLAG_SEGMENTS)
            != 0
        {
            return at(7, format!("unknown flags {:#04x}", self.flags));
        }
        // A merged index (flag bit 5) counts vids and record numbers with dead ones and holes:
        // neither bound between them holds.
        let merged = self.flags & META_FLAG_SEGMENTS != 0;
        // A shard holds the records of its clusters only (flag bit 4).
        if self.n_records < self.n_vectors && self.flags & META_FLAG_SHARD == 0 && !merged {
            return at(
                16,
                format!(
                    "n_records {} < n_vectors {}",
                    self.n_records, self.n_vectors
                ),
            );
        }
        // Record indices are u32 below NO_ID (u32::MAX means "none" in neighbour lists).
        if self.n_records >= u32::MAX as u64 {
            return at(16, format!("n_records {} ≥ 2³² − 1", self.n_records));
        }
        // Every base row is stored in at most 1 + spill_max clusters.
        let most = self.n_vectors.saturating_mul(1 + self.spill_max as u64);
        if self.n_records > most && !merged {
            return at(
                16,
                format!(
                    "n_records {} > n_vectors {} × (1 + spill_max {})",
                    self.n_records, self.n_vectors, self.spill_max
                ),
            );
        }
        for (field, name, v) in [
            (64, "lccmd_alpha", self.lccmd_alpha),
            (68, "lccmd_beta", self.lccmd_beta),
        ] {
            let ok = if mode == DistanceMode::LcCmd {
                (0.0..=1.0).contains(&v)
            } else {
                v.is_finite()
            };
            if !ok {
                return at(
                    field,
                    format!(
                        "{name} is {v} (distance mode {}: LC-CMD needs it in [0, 1])",
                        self.distance_mode
                    ),
                );
            }
        }
        Ok(())
    }
}

/// The contents of `manifest.m3`.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// `meta.file_count` is set from `files` on write.
    pub meta: IndexMeta,
    pub files: Vec<FileEntry>,
}

impl Manifest {
    /// Writes the manifest (fsynced) and returns its own entry (not listed in itself).
    pub fn write(&self, path: &Path) -> Result<FileEntry, FormatError> {
        let mut meta = self.meta;
        meta.file_count =
            u32::try_from(self.files.len()).map_err(|_| FormatError::invalid("too many files"))?;
        let trailer: &[u8] = bytemuck::cast_slice(&self.files);
        let header_bytes = COMMON_HEADER_BYTES + size_of::<IndexMeta>() + trailer.len();
        let kind = if meta.flags & META_FLAG_SEGMENTS != 0 {
            MANIFEST_KIND_SEGMENTS
        } else if meta.flags & META_FLAG_SHARD != 0 {
            FileKind {
                version_minor: MANIFEST_MINOR_SHARD,
                ..MANIFEST_KIND
            }
        } else if meta.flags & META_FLAG_IDS != 0 {
            FileKind {
                version_minor: MANIFEST_MINOR_IDS,
                ..MANIFEST_KIND
            }
        } else if meta.flags & META_FLAG_BLOCKS != 0 {
            FileKind {
                version_minor: MANIFEST_MINOR_BLOCKS,
                ..MANIFEST_KIND
            }
        } else {
            MANIFEST_KIND
        };
        SectionWriter::new(header_bytes).finish(path, &kind, &meta, trailer)
    }

    pub fn read(path: &Path) -> Result<Self, FormatError> {
        let (r, meta) = match SectionReader::open::<IndexMeta>(path, &MANIFEST_KIND) {
            Err(FormatError::UnsupportedVersion { major: 2, .. }) => {
                SectionReader::open::<IndexMeta>(path, &MANIFEST_KIND_SEGMENTS)?
            }
            other => other?,
        };
        meta.check(path)?;
        if (r.common.version_major == 2) != (meta.flags & META_FLAG_SEGMENTS != 0) {
            return Err(r.corrupt(
                39,
                "flag bit 5 (merged) is set exactly in a version 2 manifest",
            ));
        }
        let hb = r.common.header_bytes as u64;
        let entries_bytes = meta.file_count as u64 * size_of::<FileEntry>() as u64;
        let fixed = (COMMON_HEADER_BYTES + size_of::<IndexMeta>()) as u64;
        // Entries are the header's tail; a newer minor may put fields between.
        if fixed + entries_bytes > hb
            || (r.common.version_minor == 0 && fixed + entries_bytes != hb)
        {
            return Err(r.corrupt(
                12,
                format!(
                    "header_bytes {hb} does not hold {} file entries",
                    meta.file_count
                ),
            ));
        }
        if r.file_bytes != hb {
            return Err(r.corrupt(hb, "manifest has bytes after its header"));
        }
        let start = (hb - entries_bytes) as usize;
        let files: Vec<FileEntry> = super::file::pod_vec(&r.header[start..hb as usize]);
        let mut seen = std::collections::HashSet::new();
        for (i, f) in files.iter().enumerate() {
            let at = start as u64 + i as u64 * size_of::<FileEntry>() as u64;
            let name = f
                .name_str()
                .ok_or_else(|| r.corrupt(at, format!("file entry {i}: bad name")))?;
            if !seen.insert(name) {
                return Err(r.corrupt(at, format!("file {name} listed twice")));
            }
        }
        Ok(Self { meta, files })
    }

    /// The entry named `name`.
    pub fn file(&self, name: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.name_str() == Some(name))
    }
}

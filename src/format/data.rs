//! `data.m3`: full-precision vectors and neighbour lists in 4 KiB sectors, the only file read
//! from SSD at query time. The header fills the whole first sector, so data sector `i` is file
//! bytes `[(i+1)·4096, (i+2)·4096)` and every read can be O_DIRECT. Records are laid out
//! cluster after cluster with [`RecordLayout`] (each cluster starts on a sector boundary,
//! sector tails are zero); [`RecordCodec`] encodes one record. `sectors.m3` holds the CRC32C
//! of every data sector. Byte layout: `docs/FORMAT.md`, "data.m3".
//!
//! [`DataFileWriter`] preallocates the file and takes positioned writes from several threads
//! (`&self`); [`DataFileWriter::finish`] writes the header sector, streams the file once to
//! compute the sector CRCs and the whole-file CRC, writes `sectors.m3` and fsyncs both.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytemuck::{Pod, Zeroable};

use super::clusters::ClusterEntry;
use super::file::{FileEntry, LayoutTable, SectionReader};
use super::header::{COMMON_HEADER_BYTES, FileKind, encode_header};
use super::manifest::{IndexMeta, dtype_code, dtype_from_code};
use super::record::RecordCodec;
use super::sectors::SectorCrcs;
use super::{FormatError, RecordLayout, SECTOR_BYTES};
use crate::data::DType;

pub const DATA_KIND: FileKind = FileKind {
    magic: *b"M3DATA\0\0",
    name: "data",
    version_major: 1,
    version_minor: 0,
};

const SB: u64 = SECTOR_BYTES as u64;

/// The kind-specific header of `data.m3` (at byte 32 of the header sector).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct DataFileHeader {
    pub dim: u32,
    pub dtype: u8,
    pub pad: [u8; 3],
    pub max_degree: u32,
    pub record_bytes: u32,
    pub n_records: u64,
    /// Data sectors, the header sector excluded.
    pub data_sectors: u64,
    pub n_clusters: u32,
    pub reserved: u32,
}

const _: () = assert!(size_of::<DataFileHeader>() == 40);

impl DataFileHeader {
    pub fn layout_table() -> LayoutTable {
        crate::layout_table!(
            COMMON_HEADER_BYTES,
            DataFileHeader,
            dim,
            dtype,
            pad,
            max_degree,
            record_bytes,
            n_records,
            data_sectors,
            n_clusters,
            reserved
        )
    }

    /// Parses the header sector (`first_sector`: at least the header's bytes) of a `data.m3`
    /// that is `file_bytes` long, and checks it: dtype, record size, file length.
    pub fn parse(path: &Path, first_sector: &[u8], file_bytes: u64) -> Result<Self, FormatError> {
        let (common, h) =
            super::header::decode_header::<Self>(path, &DATA_KIND, first_sector, file_bytes)?;
        let bad = |off: u64, what: String| Err(FormatError::corrupt(path, off, what));
        if common.header_bytes as u64 > SB {
            return bad(12, "header longer than one sector".into());
        }
        let Some(dtype) = dtype_from_code(h.dtype) else {
            return bad(36, format!("unknown dtype code {}", h.dtype));
        };
        let codec = RecordCodec::new(h.dim, dtype, h.max_degree);
        if codec.map(|c| c.record_bytes()).ok() != Some(h.record_bytes) {
            return bad(
                44,
                format!("record_bytes {} does not match dim/dtype/R", h.record_bytes),
            );
        }
        let want = h
            .data_sectors
            .checked_add(1)
            .and_then(|s| s.checked_mul(SB));
        if want != Some(file_bytes) {
            return bad(
                56,
                format!("{} data sectors but {file_bytes} bytes", h.data_sectors),
            );
        }
        let l = h.layout();
        let need = match l.records_per_sector() {
            0 => h.n_records.checked_mul(l.sectors_per_record() as u64),
            rps => Some(h.n_records.div_ceil(rps as u64)),
        };
        if need.is_none_or(|s| s > h.data_sectors) {
            return bad(
                48,
                format!(
                    "{} records cannot fit {} sectors",
                    h.n_records, h.data_sectors
                ),
            );
        }
        Ok(h)
    }

    /// Opens `path` and parses its header sector.
    pub fn read(path: &Path) -> Result<Self, FormatError> {
        let (r, _) = SectionReader::open::<Self>(path, &DATA_KIND)?;
        Self::parse(path, &r.header, r.file_bytes)
    }

    pub fn dtype(&self) -> DType {
        dtype_from_code(self.dtype).unwrap_or(DType::F32)
    }

    /// The record codec of this file (neighbour ids checked against `n_records`).
    pub fn codec(&self) -> Result<RecordCodec, FormatError> {
        Ok(RecordCodec::new(self.dim, self.dtype(), self.max_degree)?
            .with_n_records(self.n_records))
    }

    /// The sector packing (a parsed header has `record_bytes ≥ 8`).
    pub fn layout(&self) -> RecordLayout {
        RecordLayout::new(self.record_bytes.max(1)).expect("record_bytes ≥ 1")
    }

    pub fn check_against(&self, meta: &IndexMeta, path: &Path) -> Result<(), FormatError> {
        let same = self.dim == meta.dim
            && self.dtype == meta.dtype
            && self.max_degree == meta.max_degree
            && self.record_bytes == meta.record_bytes
            && self.n_records == meta.n_records
            && self.data_sectors == meta.data_sectors
            && self.n_clusters == meta.n_clusters;
        if !same {
            return Err(FormatError::corrupt(
                path,
                32,
                "data header disagrees with manifest",
            ));
        }
        Ok(())
    }
}

/// Where a record lives in `data.m3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataLocation {
    pub cluster: u32,
    /// Absolute sector of the file (the header is sector 0).
    pub file_sector: u64,
    /// Byte offset of the record inside `file_sector`.
    pub offset_bytes: u32,
    /// Sectors to read for the whole record.
    pub sectors: u32,
}

impl DataLocation {
    pub fn file_offset(&self) -> u64 {
        self.file_sector * SB + self.offset_bytes as u64
    }
}

/// Locates global record `record` through the cluster table (binary search on
/// `first_record`); `None` when it is past the last cluster.
pub fn locate_record(
    entries: &[ClusterEntry],
    layout: RecordLayout,
    record: u64,
) -> Option<DataLocation> {
    let c = entries
        .partition_point(|e| e.first_record <= record)
        .checked_sub(1)?;
    let e = &entries[c];
    let i = record - e.first_record;
    if i >= e.records as u64 {
        return None;
    }
    let loc = layout.locate(i);
    Some(DataLocation {
        cluster: c as u32,
        file_sector: 1 + e.first_sector + loc.sector,
        offset_bytes: loc.offset_bytes,
        sectors: loc.sectors,
    })
}

/// Shape of a `data.m3` to write.
#[derive(Debug, Clone, Copy)]
pub struct DataFileParams<'a> {
    pub dim: u32,
    pub dtype: DType,
    pub max_degree: u32,
    /// Records of each cluster, in cluster order.
    pub cluster_sizes: &'a [u32],
}

/// Writes `data.m3` with positioned writes; see the module doc.
#[derive(Debug)]
pub struct DataFileWriter {
    path: PathBuf,
    file: File,
    codec: RecordCodec,
    layout: RecordLayout,
    entries: Vec<ClusterEntry>,
    n_records: u64,
    data_sectors: u64,
}

impl DataFileWriter {
    /// Creates (truncates) `path` at its final length, all zeros.
    pub fn create(path: &Path, params: &DataFileParams<'_>) -> Result<Self, FormatError> {
        let codec = RecordCodec::new(params.dim, params.dtype, params.max_degree)?;
        let layout = RecordLayout::new(codec.record_bytes()).expect("record_bytes ≥ 8");
        let (mut record, mut sector) = (0u64, 0u64);
        let mut entries = Vec::with_capacity(params.cluster_sizes.len());
        for &n in params.cluster_sizes {
            entries.push(ClusterEntry {
                first_sector: sector,
                first_record: record,
                records: n,
                ..ClusterEntry::zeroed()
            });
            record += n as u64;
            sector += layout.sectors_for(n as u64);
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| FormatError::io(path, e))?;
        file.set_len((sector + 1) * SB)
            .map_err(|e| FormatError::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            codec,
            layout,
            entries,
            n_records: record,
            data_sectors: sector,
        })
    }

    pub fn codec(&self) -> &RecordCodec {
        &self.codec
    }

    pub fn layout(&self) -> RecordLayout {
        self.layout
    }

    pub fn n_records(&self) -> u64 {
        self.n_records
    }

    pub fn data_sectors(&self) -> u64 {
        self.data_sectors
    }

    /// Cluster table entries (first sector, first record, records; radii zero for the
    /// builder to fill in).
    pub fn cluster_entries(&self) -> &[ClusterEntry] {
        &self.entries
    }

    /// Writes record `index` of `cluster` (`record`: exactly `record_bytes`).
    pub fn write_record(&self, cluster: u32, index: u32, record: &[u8]) -> Result<(), FormatError> {
        let e = self
            .entries
            .get(cluster as usize)
            .filter(|e| index < e.records)
            .ok_or_else(|| {
                FormatError::invalid(format!("no record {index} in cluster {cluster}"))
            })?;
        if record.len() != self.codec.record_bytes() as usize {
            return Err(FormatError::invalid("record has the wrong length"));
        }
        let loc = self.layout.locate(index as u64);
        let off = (1 + e.first_sector + loc.sector) * SB + loc.offset_bytes as u64;
        self.file
            .write_all_at(record, off)
            .map_err(|e| FormatError::io(&self.path, e))
    }

    /// Writes whole data sectors starting at data sector `first_sector`.
    pub fn write_sector_range(&self, first_sector: u64, bytes: &[u8]) -> Result<(), FormatError> {
        let n = bytes.len() as u64 / SB;
        if !(bytes.len() as u64).is_multiple_of(SB)
            || first_sector.saturating_add(n) > self.data_sectors
        {
            return Err(FormatError::invalid(format!(
                "{} bytes at sector {first_sector} is not whole sectors inside {}",
                bytes.len(),
                self.data_sectors
            )));
        }
        self.file
            .write_all_at(bytes, (first_sector + 1) * SB)
            .map_err(|e| FormatError::io(&self.path, e))
    }

    /// Writes the header sector, `sectors.m3` at `sectors_path`, fsyncs both, and returns
    /// their manifest entries `(data, sectors)`.
    pub fn finish(self, sectors_path: &Path) -> Result<(FileEntry, FileEntry), FormatError> {
        let file_bytes = (self.data_sectors + 1) * SB;
        let header = DataFileHeader {
            dim: self.codec.dim(),
            dtype: dtype_code(self.codec.dtype()),
            pad: [0; 3],
            max_degree: self.codec.max_degree(),
            record_bytes: self.codec.record_bytes(),
            n_records: self.n_records,
            data_sectors: self.data_sectors,
            n_clusters: u32::try_from(self.entries.len())
                .map_err(|_| FormatError::invalid("too many clusters"))?,
            reserved: 0,
        };
        let mut sector0 = encode_header(&DATA_KIND, file_bytes, &header);
        sector0.resize(SECTOR_BYTES, 0);
        let io = |e| FormatError::io(&self.path, e);
        self.file.write_all_at(&sector0, 0).map_err(io)?;
        let mut crcs = Vec::with_capacity(self.data_sectors as usize);
        let mut whole = crc32c::crc32c(&sector0);
        let mut buf = vec![0u8; 256 * SECTOR_BYTES];
        let mut s = 0u64;
        while s < self.data_sectors {
            let n = (self.data_sectors - s).min(256) as usize;
            let chunk = &mut buf[..n * SECTOR_BYTES];
            self.file.read_exact_at(chunk, (s + 1) * SB).map_err(io)?;
            whole = crc32c::crc32c_append(whole, chunk);
            crcs.extend(chunk.chunks_exact(SECTOR_BYTES).map(crc32c::crc32c));
            s += n as u64;
        }
        self.file.sync_all().map_err(io)?;
        let name = self.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let data_entry = FileEntry::new(name, file_bytes, whole)?;
        let sectors_entry = SectorCrcs { crcs }.write(sectors_path)?;
        Ok((data_entry, sectors_entry))
    }
}

//! `clusters.m3`: the base anchors (k-means centroids), the cluster table saying where each
//! cluster's records live in `data.m3`, and the anchor graph (each cluster's nearest clusters).
//! Byte layout: `docs/FORMAT.md`, "clusters.m3".

use std::path::Path;

use bytemuck::{Pod, Zeroable};

use super::file::{FileEntry, LayoutTable, ListedFile, SectionReader, SectionWriter, mul};
use super::header::{COMMON_HEADER_BYTES, FileKind};
use super::manifest::IndexMeta;
use super::{FormatError, RecordLayout};
use crate::data::Matrix;

pub const CLUSTERS_KIND: FileKind = FileKind {
    magic: *b"M3CLUST\0",
    name: "clusters",
    version_major: 1,
    version_minor: 0,
};

/// "No neighbour" in the anchor graph, routing edges and record neighbour lists.
pub const NO_ID: u32 = u32::MAX;

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct ClustersHeader {
    pub n_clusters: u32,
    pub dim: u32,
    pub anchor_degree: u32,
    /// Bit 0 ([`CLUSTERS_FLAG_UNTILED`]): the clusters are not in record order (a merged
    /// index, format 2.0; version 1.1); other bits zero.
    pub flags: u32,
    pub centroids_offset: u64,
    pub table_offset: u64,
    pub graph_offset: u64,
}

const _: () = assert!(size_of::<ClustersHeader>() == 40);

impl ClustersHeader {
    pub fn layout_table() -> LayoutTable {
        crate::layout_table!(
            COMMON_HEADER_BYTES,
            ClustersHeader,
            n_clusters,
            dim,
            anchor_degree,
            flags,
            centroids_offset,
            table_offset,
            graph_offset
        )
    }
}

/// Where one cluster's records live.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct ClusterEntry {
    /// First sector of the cluster, counted from the first data sector of `data.m3`.
    pub first_sector: u64,
    /// Global index of the cluster's first record.
    pub first_record: u64,
    pub records: u32,
    /// Smallest natural (not squared) L2 distance of a member to the centroid.
    pub r_min: f32,
    /// Largest natural L2 distance of a member to the centroid.
    pub r_max: f32,
    pub reserved: u32,
}

const _: () = assert!(size_of::<ClusterEntry>() == 32);

impl ClusterEntry {
    pub fn layout_table() -> LayoutTable {
        crate::layout_table!(
            0,
            ClusterEntry,
            first_sector,
            first_record,
            records,
            r_min,
            r_max,
            reserved
        )
    }
}

/// `clusters.m3` flag bit 0: the clusters are not in record order (a merged index, format
/// 2.0; whether they overlap is checked against the manifest).
pub const CLUSTERS_FLAG_UNTILED: u32 = 1;

/// Whether the clusters follow each other in record order, each starting where the previous
/// one ends (what a build writes).
fn tiled(entries: &[ClusterEntry]) -> bool {
    // The reader's check of a tiled table (`ClusterTable::read`): records tile in order and
    // sectors never go back.
    let (mut next, mut next_sector) = (0u64, 0u64);
    entries.iter().all(|e| {
        let ok = e.first_record == next && e.first_sector >= next_sector;
        next = e.first_record + u64::from(e.records);
        next_sector = e.first_sector.saturating_add(u64::from(e.records > 0));
        ok
    })
}

/// The contents of `clusters.m3`. `anchor_graph` is `n_clusters × anchor_degree` (≥ 1).
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterTable {
    pub centroids: Matrix<f32>,
    pub entries: Vec<ClusterEntry>,
    pub anchor_graph: Matrix<u32>,
}

impl ClusterTable {
    pub fn n_clusters(&self) -> usize {
        self.entries.len()
    }

    pub fn write(&self, path: &Path) -> Result<FileEntry, FormatError> {
        let n = self.entries.len();
        if self.centroids.rows() != n || self.anchor_graph.rows() != n {
            return Err(FormatError::invalid(format!(
                "{n} cluster entries but {} centroids and {} anchor-graph rows",
                self.centroids.rows(),
                self.anchor_graph.rows()
            )));
        }
        let mut w = SectionWriter::new(COMMON_HEADER_BYTES + size_of::<ClustersHeader>());
        let centroids_offset = w.push(self.centroids.as_slice());
        let table_offset = w.push(&self.entries);
        let graph_offset = w.push(self.anchor_graph.as_slice());
        let untiled = !tiled(&self.entries);
        let kind = if untiled {
            FileKind {
                version_minor: 1,
                ..CLUSTERS_KIND
            }
        } else {
            CLUSTERS_KIND
        };
        let header = ClustersHeader {
            n_clusters: u32::try_from(n).map_err(|_| FormatError::invalid("too many clusters"))?,
            dim: self.centroids.dim() as u32,
            anchor_degree: self.anchor_graph.dim() as u32,
            flags: if untiled { CLUSTERS_FLAG_UNTILED } else { 0 },
            centroids_offset,
            table_offset,
            graph_offset,
        };
        w.finish(path, &kind, &header, &[])
    }

    /// Reads and checks the file: sections inside the file, centroids finite, entries
    /// contiguous (records and sectors ascending), radii finite and ordered, anchor-graph ids
    /// `< n_clusters` or [`NO_ID`].
    pub fn read(path: &Path) -> Result<Self, FormatError> {
        let (r, h) = SectionReader::open::<ClustersHeader>(path, &CLUSTERS_KIND)?;
        Self::parse(&r, h)
    }

    /// [`Self::read`] of a listed file, with its length and CRC32C checked against the
    /// manifest.
    pub fn read_listed(f: &ListedFile) -> Result<Self, FormatError> {
        let (r, h) = f.reader::<ClustersHeader>(&CLUSTERS_KIND)?;
        f.checked(&r, Self::parse(&r, h))
    }

    fn parse(r: &SectionReader, h: ClustersHeader) -> Result<Self, FormatError> {
        if h.dim == 0 || h.anchor_degree == 0 {
            return Err(r.corrupt(36, "dim and anchor_degree must be ≥ 1"));
        }
        let n = h.n_clusters as u64;
        let centroids = r.section::<f32>(
            h.centroids_offset,
            mul(r, n, h.dim as u64, "centroids")?,
            "centroids",
        )?;
        let entries = r.section::<ClusterEntry>(h.table_offset, n, "cluster table")?;
        let graph = r.section::<u32>(
            h.graph_offset,
            mul(r, n, h.anchor_degree as u64, "anchor graph")?,
            "anchor graph",
        )?;
        if let Some(i) = centroids.iter().position(|v| !v.is_finite()) {
            return Err(r.corrupt(
                h.centroids_offset + 4 * i as u64,
                format!(
                    "centroid {} component {} is {}, not a finite number",
                    i / h.dim as usize,
                    i % h.dim as usize,
                    centroids[i]
                ),
            ));
        }
        let mut next_record = 0u64;
        let mut next_sector = 0u64;
        for (c, e) in entries.iter().enumerate() {
            let at = h.table_offset + c as u64 * size_of::<ClusterEntry>() as u64;
            let untiled = h.flags & CLUSTERS_FLAG_UNTILED != 0;
            if !untiled && (e.first_record != next_record || e.first_sector < next_sector) {
                return Err(r.corrupt(at, format!("cluster {c}: records or sectors out of order")));
            }
            if !(e.r_min.is_finite() && e.r_max.is_finite() && 0.0 <= e.r_min && e.r_min <= e.r_max)
            {
                return Err(r.corrupt(
                    at + 20,
                    format!(
                        "cluster {c}: radii r_min {} and r_max {} are not 0 ≤ r_min ≤ r_max < ∞",
                        e.r_min, e.r_max
                    ),
                ));
            }
            next_record = e.first_record + e.records as u64;
            // Every non-empty cluster holds at least one sector.
            next_sector = e.first_sector.saturating_add(u64::from(e.records > 0));
        }
        if let Some(i) = graph.iter().position(|&g| g != NO_ID && g >= h.n_clusters) {
            return Err(r.corrupt(
                h.graph_offset + 4 * i as u64,
                format!("anchor graph id {} ≥ n_clusters {n}", graph[i]),
            ));
        }
        let to_err = |e| r.corrupt(32, format!("{e}"));
        Ok(Self {
            centroids: Matrix::from_vec(centroids, h.dim as usize).map_err(to_err)?,
            entries,
            anchor_graph: Matrix::from_vec(graph, h.anchor_degree as usize).map_err(to_err)?,
        })
    }

    /// Checks the table against the manifest: counts, dimension, anchor degree, and that the
    /// clusters tile exactly
    /// `n_records` records and `data_sectors` sectors with [`RecordLayout`].
    pub fn check_against(&self, meta: &IndexMeta, path: &Path) -> Result<(), FormatError> {
        let bad = |what: String| Err(FormatError::corrupt(path, 32, what));
        if self.entries.len() != meta.n_clusters as usize
            || self.centroids.dim() != meta.dim as usize
            || self.anchor_graph.dim() != meta.anchor_degree as usize
        {
            return bad(format!(
                "{} clusters of dim {} and anchor degree {}, manifest says {} of dim {} and {}",
                self.entries.len(),
                self.centroids.dim(),
                self.anchor_graph.dim(),
                meta.n_clusters,
                meta.dim,
                meta.anchor_degree
            ));
        }
        let layout = RecordLayout::new(meta.record_bytes)
            .ok_or_else(|| FormatError::corrupt(path, 32, "record_bytes is 0"))?;
        if meta.flags & super::manifest::META_FLAG_SEGMENTS != 0 {
            return self.check_merged(meta, layout, path);
        }
        let (mut record, mut sector) = (0u64, 0u64);
        for (c, e) in self.entries.iter().enumerate() {
            if e.first_record != record || e.first_sector != sector {
                return bad(format!(
                    "cluster {c} does not start where cluster {c}-1 ends"
                ));
            }
            record += e.records as u64;
            sector += layout.sectors_for(e.records as u64);
        }
        if record != meta.n_records || sector != meta.data_sectors {
            return bad(format!(
                "clusters hold {record} records in {sector} sectors, manifest says {} in {}",
                meta.n_records, meta.data_sectors
            ));
        }
        Ok(())
    }

    /// The table of a merged index (format 2.0): clusters inside `n_records` records and
    /// `data_sectors` sectors, overlapping no other cluster's records or sectors, in any order.
    fn check_merged(
        &self,
        meta: &IndexMeta,
        layout: RecordLayout,
        path: &Path,
    ) -> Result<(), FormatError> {
        let bad = |what: String| Err(FormatError::corrupt(path, 32, what));
        let mut records = Vec::with_capacity(self.entries.len());
        let mut sectors = Vec::with_capacity(self.entries.len());
        for (c, e) in self.entries.iter().enumerate() {
            let r_end = e.first_record.checked_add(u64::from(e.records));
            let s_end = e
                .first_sector
                .checked_add(layout.sectors_for(u64::from(e.records)));
            match (r_end, s_end) {
                (Some(r), Some(s)) if r <= meta.n_records && s <= meta.data_sectors => {
                    if e.records > 0 {
                        records.push((e.first_record, r, c));
                        sectors.push((e.first_sector, s, c));
                    }
                }
                _ => return bad(format!("cluster {c} lies outside the records or sectors")),
            }
        }
        for list in [&mut records, &mut sectors] {
            list.sort_unstable();
            if let Some(w) = list.windows(2).find(|w| w[1].0 < w[0].1) {
                return bad(format!("clusters {} and {} overlap", w[0].2, w[1].2));
            }
        }
        Ok(())
    }

    /// Whether every cluster's sectors lie inside one segment: `starts` are the segments'
    /// first data sectors `B_k` and, last, `B_K` (`Segments::starts`).
    pub fn check_in_segments(
        &self,
        starts: &[u64],
        layout: RecordLayout,
        path: &Path,
    ) -> Result<(), FormatError> {
        for (c, e) in self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.records > 0)
        {
            let end = e.first_sector + layout.sectors_for(u64::from(e.records));
            let k = starts.partition_point(|&b| b <= e.first_sector);
            let inside = k >= 1 && k < starts.len() && end < starts[k];
            if !inside {
                return Err(FormatError::corrupt(
                    path,
                    32,
                    format!("cluster {c}'s sectors are not inside one segment"),
                ));
            }
        }
        Ok(())
    }
}

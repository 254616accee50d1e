//! `routing.m3`: query-modality anchors and, for each, the clusters worth probing first
//! (multi-entry anchored routing, DESIGN §4.2). `K_q` may be 0 for an index built without
//! training queries. Byte layout: `docs/FORMAT.md`, "routing.m3".

use std::path::Path;

use bytemuck::{Pod, Zeroable};

use super::FormatError;
use super::clusters::NO_ID;
use super::file::{FileEntry, LayoutTable, ListedFile, SectionReader, SectionWriter, mul};
use super::header::{COMMON_HEADER_BYTES, FileKind};
use super::manifest::IndexMeta;
use crate::data::Matrix;

pub const ROUTING_KIND: FileKind = FileKind {
    magic: *b"M3ROUTE\0",
    name: "routing",
    version_major: 1,
    version_minor: 0,
};

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct RoutingHeader {
    pub n_query_anchors: u32,
    pub dim: u32,
    pub edges_per_anchor: u32,
    pub reserved: u32,
    pub anchors_offset: u64,
    pub edges_offset: u64,
}

const _: () = assert!(size_of::<RoutingHeader>() == 32);

impl RoutingHeader {
    pub fn layout_table() -> LayoutTable {
        crate::layout_table!(
            COMMON_HEADER_BYTES,
            RoutingHeader,
            n_query_anchors,
            dim,
            edges_per_anchor,
            reserved,
            anchors_offset,
            edges_offset
        )
    }
}

/// The contents of `routing.m3`: `anchors` is `K_q × dim`, `edges` is `K_q × E` cluster ids
/// (most useful first, [`NO_ID`] = none). `dim` and `E` are ≥ 1 even when `K_q = 0`.
#[derive(Debug, Clone, PartialEq)]
pub struct Routing {
    pub anchors: Matrix<f32>,
    pub edges: Matrix<u32>,
}

impl Routing {
    /// No query anchors.
    pub fn empty(dim: usize, edges_per_anchor: usize) -> Result<Self, FormatError> {
        let e = |e| FormatError::invalid(format!("{e}"));
        Ok(Self {
            anchors: Matrix::from_vec(Vec::new(), dim).map_err(e)?,
            edges: Matrix::from_vec(Vec::new(), edges_per_anchor).map_err(e)?,
        })
    }

    pub fn write(&self, path: &Path) -> Result<FileEntry, FormatError> {
        if self.anchors.rows() != self.edges.rows() {
            return Err(FormatError::invalid(format!(
                "{} query anchors but {} edge rows",
                self.anchors.rows(),
                self.edges.rows()
            )));
        }
        let mut w = SectionWriter::new(COMMON_HEADER_BYTES + size_of::<RoutingHeader>());
        let anchors_offset = w.push(self.anchors.as_slice());
        let edges_offset = w.push(self.edges.as_slice());
        let header = RoutingHeader {
            n_query_anchors: u32::try_from(self.anchors.rows())
                .map_err(|_| FormatError::invalid("too many query anchors"))?,
            dim: self.anchors.dim() as u32,
            edges_per_anchor: self.edges.dim() as u32,
            reserved: 0,
            anchors_offset,
            edges_offset,
        };
        w.finish(path, &ROUTING_KIND, &header, &[])
    }

    /// Reads and checks the file: sections inside the file, anchors finite.
    pub fn read(path: &Path) -> Result<Self, FormatError> {
        let (r, h) = SectionReader::open::<RoutingHeader>(path, &ROUTING_KIND)?;
        Self::parse(&r, h)
    }

    /// [`Self::read`] of a listed file, with its length and CRC32C checked against the
    /// manifest.
    pub fn read_listed(f: &ListedFile) -> Result<Self, FormatError> {
        let (r, h) = f.reader::<RoutingHeader>(&ROUTING_KIND)?;
        f.checked(&r, Self::parse(&r, h))
    }

    fn parse(r: &SectionReader, h: RoutingHeader) -> Result<Self, FormatError> {
        if h.dim == 0 || h.edges_per_anchor == 0 {
            return Err(r.corrupt(36, "dim and edges_per_anchor must be ≥ 1"));
        }
        let k = h.n_query_anchors as u64;
        let anchors = r.section::<f32>(
            h.anchors_offset,
            mul(r, k, h.dim as u64, "anchors")?,
            "anchors",
        )?;
        let edges = r.section::<u32>(
            h.edges_offset,
            mul(r, k, h.edges_per_anchor as u64, "edges")?,
            "edges",
        )?;
        if let Some(i) = anchors.iter().position(|v| !v.is_finite()) {
            return Err(r.corrupt(
                h.anchors_offset + 4 * i as u64,
                format!(
                    "query anchor {} component {} is {}, not a finite number",
                    i / h.dim as usize,
                    i % h.dim as usize,
                    anchors[i]
                ),
            ));
        }
        let to_err = |e| r.corrupt(32, format!("{e}"));
        Ok(Self {
            anchors: Matrix::from_vec(anchors, h.dim as usize).map_err(to_err)?,
            edges: Matrix::from_vec(edges, h.edges_per_anchor as usize).map_err(to_err)?,
        })
    }

    /// Checks against the manifest: anchor count, dim and edges per anchor, edge ids
    /// `< n_clusters` or none.
    pub fn check_against(&self, meta: &IndexMeta, path: &Path) -> Result<(), FormatError> {
        if self.anchors.rows() != meta.n_query_anchors as usize
            || self.anchors.dim() != meta.dim as usize
            || self.edges.dim() != meta.edges_per_query_anchor as usize
        {
            return Err(FormatError::corrupt(
                path,
                32,
                format!(
                    "{} anchors of dim {} with {} edges each, manifest says {} of dim {} with {}",
                    self.anchors.rows(),
                    self.anchors.dim(),
                    self.edges.dim(),
                    meta.n_query_anchors,
                    meta.dim,
                    meta.edges_per_query_anchor
                ),
            ));
        }
        let edges = self.edges.as_slice();
        if let Some(i) = edges
            .iter()
            .position(|&c| c != NO_ID && c >= meta.n_clusters)
        {
            let e = self.edges.dim();
            return Err(FormatError::corrupt(
                path,
                32,
                format!(
                    "query anchor {} edge {}: cluster {} ≥ n_clusters {}",
                    i / e,
                    i % e,
                    edges[i],
                    meta.n_clusters
                ),
            ));
        }
        Ok(())
    }
}

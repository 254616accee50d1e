//! Ground-truth and id files: big-ann `.ibin` (`u32 rows, u32 k`, then `rows·k` `u32` ids,
//! optionally followed by `rows·k` `f32` distances, as big-ann ground truth files are; the
//! layout is told apart by the file length), a separate distance file (`.fbin` with the same
//! shape, as `../shared/data` ships them), and TexMex `.ivecs`.

use std::path::Path;

use super::{DataError, Matrix};

/// Ids of the k best base rows per query, best first, with their distances when known.
/// Distances are in the metric's natural unit: squared L2 for `l2`, inner product (larger is
/// better) for `ip`, cosine similarity for `cosine`.
#[derive(Debug, Clone, PartialEq)]
pub struct GroundTruth {
    pub ids: Matrix<u32>,
    pub dists: Option<Matrix<f32>>,
}

impl GroundTruth {
    pub fn queries(&self) -> usize {
        self.ids.rows()
    }
    pub fn k(&self) -> usize {
        self.ids.dim()
    }

    /// Reads `.ibin` (with or without appended distances) or `.ivecs`.
    pub fn read(path: &Path) -> Result<Self, DataError> {
        let _ = path;
        todo!("data helper")
    }

    /// Reads ids from `ids_path` and distances from a separate `.fbin` of the same shape.
    pub fn read_with_dists(ids_path: &Path, dists_path: &Path) -> Result<Self, DataError> {
        let _ = (ids_path, dists_path);
        todo!("data helper")
    }

    /// Writes the big-ann layout: header, ids, then distances if present (`.ibin`), or
    /// `.ivecs` (ids only). Atomic like [`crate::data::VectorWriter`].
    pub fn write(&self, path: &Path) -> Result<(), DataError> {
        let _ = path;
        todo!("data helper")
    }
}

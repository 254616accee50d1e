//! Query sets as the evaluation commands take them: one query file, or a multi-vector index's
//! block files for any subset of its blocks, with per-block weights resolved against the
//! index.

use std::path::{Path, PathBuf};

use super::EvalError;
use crate::data::{DataError, Matrix, MatrixView, VectorFile};
use crate::multivec::BlockQueries;
use crate::search::Index;

/// Where the query vectors are.
#[derive(Debug, Clone, PartialEq)]
pub enum QuerySource {
    /// One file of full rows (for a multi-vector index: every block, concatenated in block
    /// order).
    File(PathBuf),
    /// A multi-vector index's blocks: `(name, file)` for any non-empty subset of them; the
    /// others are left out and cost nothing.
    Blocks(Vec<(String, PathBuf)>),
}

/// Query rows and, for a multi-vector index, the block weights to search them with
/// ([`crate::search::SearchParams::block_weights`]).
#[derive(Debug, Clone)]
pub struct QuerySet {
    /// The query rows (every present block, concatenated in block order).
    pub rows: Matrix<f32>,
    /// Per-block weights of a multi-vector query set, `None` otherwise.
    pub block_weights: Option<Vec<f32>>,
}

impl QuerySet {
    /// Reads the first `max_queries` (default: all) queries from `source` and resolves the
    /// named block weights `weights` (`(name, w)`) against `index`: a named weight must belong
    /// to a given block; a given block without one gets its build weight; an absent block 0.
    /// From a query file, block weights are made only when some are named.
    pub fn read(
        index: &Index,
        source: &QuerySource,
        weights: &[(String, f32)],
        max_queries: Option<usize>,
    ) -> Result<Self, EvalError> {
        match source {
            QuerySource::Blocks(files) => {
                let table = index.blocks().ok_or_else(|| EvalError::NotMultiVector {
                    index: index.dir().to_path_buf(),
                })?;
                let q = BlockQueries::read(&table.layout(), files, max_queries.map(|m| m as u64))?;
                let w = index.block_weights(weights, &q.present)?;
                Ok(Self {
                    rows: q.rows,
                    block_weights: Some(w),
                })
            }
            QuerySource::File(path) => {
                let rows = read_query_rows(path, max_queries)?;
                let block_weights = if weights.is_empty() {
                    None
                } else {
                    let blocks = index.blocks().map_or(0, |t| t.blocks.len());
                    Some(index.block_weights(weights, &vec![true; blocks])?)
                };
                Ok(Self {
                    rows,
                    block_weights,
                })
            }
        }
    }

    /// The query rows as a view.
    pub fn view(&self) -> MatrixView<'_, f32> {
        self.rows.view()
    }

    /// Number of queries.
    pub fn rows(&self) -> usize {
        self.rows.rows()
    }
}

/// The first `max_queries` (default: all) rows of a vector file, as f32.
pub fn read_query_rows(path: &Path, max_queries: Option<usize>) -> Result<Matrix<f32>, DataError> {
    let file = VectorFile::open(path)?;
    let n = max_queries.map_or(file.rows(), |m| (m as u64).min(file.rows()));
    let mut v = Vec::new();
    file.read_rows_f32(0, n as usize, &mut v)?;
    Matrix::from_vec(v, file.dim())
}

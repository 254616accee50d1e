//! Errors of multi-vector inputs: block files, block names, query blocks and weights.

use std::path::PathBuf;

use crate::data::DataError;

/// What can be wrong with multi-vector inputs: block files, block names, query blocks and
/// weights.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// Reading a block file failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Two block files of one base have different row counts.
    #[error(
        "block '{block}' ({path}) has {found} rows, but block '{first_block}' ({first_path}) \
         has {expected}: every block file of a base must have the same rows"
    )]
    RowCount {
        /// The block whose count differs.
        block: String,
        /// Its file.
        path: PathBuf,
        /// Its rows.
        found: u64,
        /// The first block.
        first_block: String,
        /// The first block's file.
        first_path: PathBuf,
        /// The first block's rows.
        expected: u64,
    },
    /// A block name that the index does not have.
    #[error("unknown block '{name}' (the blocks are: {known})")]
    UnknownBlock {
        /// The name given.
        name: String,
        /// The index's block names.
        known: String,
    },
    /// A block given twice.
    #[error("block '{name}' is given twice")]
    DuplicateBlock {
        /// Its name.
        name: String,
    },
    /// A block name outside the allowed characters or length.
    #[error("bad block name {name:?}: 1–32 bytes of ASCII letters, digits, '_', '-' or '.'")]
    BadName {
        /// The name given.
        name: String,
    },
    /// A `NAME=VALUE` argument without its `=`.
    #[error("{what} '{spec}': expected NAME=VALUE")]
    BadSpec {
        /// The argument (e.g. `--block`).
        what: &'static str,
        /// The value given.
        spec: String,
    },
    /// A file of a block has another dimension than the block.
    #[error("block '{block}': {what} has dimension {found}, the block has {expected}")]
    BlockDim {
        /// The block.
        block: String,
        /// The file or vector at fault.
        what: String,
        /// The block's dimension.
        expected: usize,
        /// The dimension found.
        found: usize,
    },
    /// The query files of two blocks have different row counts.
    #[error(
        "block '{block}' ({path}) has {found} query rows, block '{first_block}' has {expected}"
    )]
    QueryRows {
        /// The block whose count differs.
        block: String,
        /// Its query file.
        path: PathBuf,
        /// Its rows.
        found: u64,
        /// The first block given.
        first_block: String,
        /// The first block's query rows.
        expected: u64,
    },
    /// A block weight out of range (negative, not finite, or zero where it must be positive).
    #[error("block '{block}': weight {value} is invalid ({rule})")]
    BadWeight {
        /// The block.
        block: String,
        /// The weight given.
        value: f32,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// Under cosine, a given query block is all zeros.
    #[error(
        "query {query}: block '{block}' is the zero vector, which has no direction under cosine"
    )]
    ZeroQueryBlock {
        /// The query's row.
        query: usize,
        /// The block.
        block: String,
    },
    /// No block was given where at least one is needed (the message says where).
    #[error("{0}")]
    NoBlocks(&'static str),
}

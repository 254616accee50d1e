//! Errors of multi-vector inputs: block files, block names, query blocks and weights.

use std::path::PathBuf;

use crate::data::DataError;

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(
        "block '{block}' ({path}) has {found} rows, but block '{first_block}' ({first_path}) \
         has {expected}: every block file of a base must have the same rows"
    )]
    RowCount {
        block: String,
        path: PathBuf,
        found: u64,
        first_block: String,
        first_path: PathBuf,
        expected: u64,
    },
    #[error("unknown block '{name}' (the blocks are: {known})")]
    UnknownBlock { name: String, known: String },
    #[error("block '{name}' is given twice")]
    DuplicateBlock { name: String },
    #[error("bad block name {name:?}: 1–32 bytes of ASCII letters, digits, '_', '-' or '.'")]
    BadName { name: String },
    #[error("{what} '{spec}': expected NAME=VALUE")]
    BadSpec { what: &'static str, spec: String },
    #[error("block '{block}': {what} has dimension {found}, the block has {expected}")]
    BlockDim {
        block: String,
        what: String,
        expected: usize,
        found: usize,
    },
    #[error(
        "block '{block}' ({path}) has {found} query rows, block '{first_block}' has {expected}"
    )]
    QueryRows {
        block: String,
        path: PathBuf,
        found: u64,
        first_block: String,
        expected: u64,
    },
    #[error("block '{block}': weight {value} is invalid ({rule})")]
    BadWeight {
        block: String,
        value: f32,
        rule: &'static str,
    },
    #[error(
        "query {query}: block '{block}' is the zero vector, which has no direction under cosine"
    )]
    ZeroQueryBlock { query: usize, block: String },
    #[error("{0}")]
    NoBlocks(&'static str),
}

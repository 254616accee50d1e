//! Errors of the data layer. Every variant that concerns a file names it; row-level problems
//! name the 0-based row.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: unsupported file format: {what}")]
    UnsupportedFormat { path: PathBuf, what: String },

    #[error("{path}: unsupported format version {found} ({what})")]
    UnsupportedVersion {
        path: PathBuf,
        found: String,
        what: &'static str,
    },

    #[error("{path}: truncated: needs {expected_bytes} bytes, file has {found_bytes}")]
    Truncated {
        path: PathBuf,
        expected_bytes: u64,
        found_bytes: u64,
    },

    #[error("{path}: header disagrees with file: {what}")]
    Header { path: PathBuf, what: String },

    /// The file is longer than its header says (data appended, or a wrong header).
    #[error("{path}: {extra_bytes} trailing bytes beyond {what}")]
    TrailingBytes {
        path: PathBuf,
        extra_bytes: u64,
        what: String,
    },

    /// Sizes computed from a header do not fit (a corrupt or hostile header).
    #[error("{path}: the header's sizes overflow: {what}")]
    SizeOverflow { path: PathBuf, what: String },

    #[error("{path}: row {row}: {what}")]
    BadRow {
        path: PathBuf,
        row: u64,
        what: String,
    },

    #[error("{path}: row {row}, component {col}: value {value} is not finite")]
    NonFinite {
        path: PathBuf,
        row: u64,
        col: usize,
        value: f32,
    },

    #[error("{path}: row {row} is the zero vector, which has no direction under cosine")]
    ZeroVector { path: PathBuf, row: u64 },

    #[error("{path}: the data set is empty")]
    Empty { path: PathBuf },

    #[error(
        "dimension mismatch: {expected_what} has dimension {expected}, {found_what} has {found}"
    )]
    DimMismatch {
        expected_what: String,
        expected: usize,
        found_what: String,
        found: usize,
    },

    #[error("{path}: element type is {found}, expected {expected}")]
    DTypeMismatch {
        path: PathBuf,
        expected: super::DType,
        found: super::DType,
    },

    #[error("k = {k} is larger than the {n} vectors of the data set")]
    KTooLarge { k: usize, n: u64 },

    #[error("k must be at least 1")]
    KZero,

    #[error("row range {start}..{end} is outside the {rows} rows of {path}")]
    RowRange {
        path: PathBuf,
        start: u64,
        end: u64,
        rows: u64,
    },

    #[error("{path}: {what} does not fit the format's limit ({limit})")]
    TooLarge {
        path: PathBuf,
        what: &'static str,
        limit: u64,
    },

    #[error("arithmetic overflow computing {what}")]
    Overflow { what: &'static str },

    #[error("a matrix needs a dimension of at least 1")]
    ZeroDim,

    #[error("{len} elements do not make whole rows of dimension {dim}")]
    Shape { len: usize, dim: usize },

    #[error("invalid parameter: {0}")]
    Param(String),
}

impl DataError {
    /// Wraps an I/O error with the file it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}

//! Errors of the data layer. Every variant that concerns a file names it; row-level problems
//! name the 0-based row.

use std::path::PathBuf;

/// What can go wrong reading, writing or checking vector data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The operating system refused an operation on a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The file's extension or header names no format this crate reads.
    #[error("{path}: unsupported file format: {what}")]
    UnsupportedFormat {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        what: String,
    },

    /// The format is known but not this version of it (e.g. an `.npy` version).
    #[error("{path}: unsupported format version {found} ({what})")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: String,
        /// Which versions are supported.
        what: &'static str,
    },

    /// The file is shorter than its header says.
    #[error("{path}: truncated: needs {expected_bytes} bytes, file has {found_bytes}")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes the header implies.
        expected_bytes: u64,
        /// Bytes the file has.
        found_bytes: u64,
    },

    /// The header contradicts itself or the file.
    #[error("{path}: header disagrees with file: {what}")]
    Header {
        /// The file.
        path: PathBuf,
        /// The disagreement.
        what: String,
    },

    /// The file is longer than its header says (data appended, or a wrong header).
    #[error("{path}: {extra_bytes} trailing bytes beyond {what}")]
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// Bytes beyond the expected end.
        extra_bytes: u64,
        /// What the expected end is.
        what: String,
    },

    /// Sizes computed from a header do not fit (a corrupt or hostile header).
    #[error("{path}: the header's sizes overflow: {what}")]
    SizeOverflow {
        /// The file.
        path: PathBuf,
        /// The size that overflowed.
        what: String,
    },

    /// A row is malformed (e.g. a `.fvecs` row whose dimension differs from the first).
    #[error("{path}: row {row}: {what}")]
    BadRow {
        /// The file.
        path: PathBuf,
        /// The 0-based row.
        row: u64,
        /// What is wrong with it.
        what: String,
    },

    /// A value is NaN or infinite.
    #[error("{path}: row {row}, component {col}: value {value} is not finite")]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// The 0-based row.
        row: u64,
        /// The 0-based component.
        col: usize,
        /// The value.
        value: f32,
    },

    /// A row is all zeros, which cosine cannot normalise.
    #[error("{path}: row {row} is the zero vector, which has no direction under cosine")]
    ZeroVector {
        /// The file.
        path: PathBuf,
        /// The 0-based row.
        row: u64,
    },

    /// The file has no rows where some are needed.
    #[error("{path}: the data set is empty")]
    Empty {
        /// The file.
        path: PathBuf,
    },

    /// Two things that must have the same dimension do not.
    #[error(
        "dimension mismatch: {expected_what} has dimension {expected}, {found_what} has {found}"
    )]
    DimMismatch {
        /// What sets the expected dimension (e.g. the base file).
        expected_what: String,
        /// The expected dimension.
        expected: usize,
        /// What has another dimension (e.g. the query file).
        found_what: String,
        /// Its dimension.
        found: usize,
    },

    /// The file's element type is not the one required.
    #[error("{path}: element type is {found}, expected {expected}")]
    DTypeMismatch {
        /// The file.
        path: PathBuf,
        /// The element type required.
        expected: super::DType,
        /// The file's element type.
        found: super::DType,
    },

    /// More neighbours were asked for than there are vectors.
    #[error("k = {k} is larger than the {n} vectors of the data set")]
    KTooLarge {
        /// Neighbours asked for.
        k: usize,
        /// Vectors in the data set.
        n: u64,
    },

    /// Zero neighbours were asked for.
    #[error("k must be at least 1")]
    KZero,

    /// Rows were asked for beyond the end of a file.
    #[error("row range {start}..{end} is outside the {rows} rows of {path}")]
    RowRange {
        /// The file.
        path: PathBuf,
        /// First row asked for.
        start: u64,
        /// End (exclusive) of the rows asked for.
        end: u64,
        /// Rows in the file.
        rows: u64,
    },

    /// A count to be written does not fit the file format's field.
    #[error("{path}: {what} does not fit the format's limit ({limit})")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The count (e.g. "query count").
        what: &'static str,
        /// The format's largest value.
        limit: u64,
    },

    /// A size computation overflowed.
    #[error("arithmetic overflow computing {what}")]
    Overflow {
        /// The size being computed.
        what: &'static str,
    },

    /// A matrix was given dimension 0.
    #[error("a matrix needs a dimension of at least 1")]
    ZeroDim,

    /// A buffer's length is not a whole number of rows.
    #[error("{len} elements do not make whole rows of dimension {dim}")]
    Shape {
        /// Elements in the buffer.
        len: usize,
        /// The row dimension.
        dim: usize,
    },

    /// An argument is out of range (the message says which and why).
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

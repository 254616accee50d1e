//! Errors of index files. Index files are untrusted input: every way a file can be wrong maps
//! to a variant here, never to a panic.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: not an M³ {expected} file (magic {found:02x?})")]
    BadMagic {
        path: PathBuf,
        expected: &'static str,
        found: [u8; 8],
    },

    #[error(
        "{path}: format version {major}.{minor} is not supported (this build reads {supported_major}.x)"
    )]
    UnsupportedVersion {
        path: PathBuf,
        major: u16,
        minor: u16,
        supported_major: u16,
    },

    #[error("{path}: header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    HeaderChecksum {
        path: PathBuf,
        stored: u32,
        computed: u32,
    },

    #[error(
        "{path}: checksum mismatch in {what} (stored {stored:#010x}, computed {computed:#010x})"
    )]
    Checksum {
        path: PathBuf,
        what: String,
        stored: u32,
        computed: u32,
    },

    #[error("{path}: truncated: needs {expected_bytes} bytes, has {found_bytes}")]
    Truncated {
        path: PathBuf,
        expected_bytes: u64,
        found_bytes: u64,
    },

    #[error("{path}: corrupt at byte {offset}: {what}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: String,
    },

    /// The caller handed a writer inconsistent data (a programming error upstream, reported
    /// rather than panicking).
    #[error("invalid input to an index writer: {what}")]
    Invalid { what: String },

    #[error("{dir}: no index here (missing {file})")]
    NotAnIndex { dir: PathBuf, file: &'static str },

    /// An output path that publishing must not replace (checked before any work): a file, a
    /// directory holding something other than an index, a path holding an input.
    #[error("{path}: refusing to write an index here: {why}")]
    Refused { path: PathBuf, why: String },
}

impl FormatError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        FormatError::Io {
            path: path.into(),
            source,
        }
    }

    pub fn invalid(what: impl Into<String>) -> Self {
        FormatError::Invalid { what: what.into() }
    }

    /// The same error, a `Corrupt` one saying where it is first (`record 17 (cluster 3)`).
    pub fn within(self, place: impl std::fmt::Display) -> Self {
        match self {
            FormatError::Corrupt { path, offset, what } => FormatError::Corrupt {
                path,
                offset,
                what: format!("{place}: {what}"),
            },
            other => other,
        }
    }

    pub fn corrupt(path: impl Into<PathBuf>, offset: u64, what: impl Into<String>) -> Self {
        FormatError::Corrupt {
            path: path.into(),
            offset,
            what: what.into(),
        }
    }
}

//! Errors of index files. Index files are untrusted input: every way a file can be wrong maps
//! to a variant here, never to a panic.

use std::path::PathBuf;

/// What can be wrong with an index file or directory, or with writing one.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The operating system refused an operation on a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The file does not start with the magic of the file kind expected.
    #[error("{path}: not an M³ {expected} file (magic {found:02x?})")]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The file kind expected.
        expected: &'static str,
        /// The first 8 bytes found.
        found: [u8; 8],
    },

    /// The file's major version is not the one this build reads.
    #[error(
        "{path}: format version {major}.{minor} is not supported (this build reads {supported_major}.x)"
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Its major version.
        major: u16,
        /// Its minor version.
        minor: u16,
        /// The major version this build reads.
        supported_major: u16,
    },

    /// The header's CRC32C does not match its bytes.
    #[error("{path}: header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    HeaderChecksum {
        /// The file.
        path: PathBuf,
        /// The CRC32C stored.
        stored: u32,
        /// The CRC32C of the bytes read.
        computed: u32,
    },

    /// A section's or sector's CRC32C does not match its bytes.
    #[error(
        "{path}: checksum mismatch in {what} (stored {stored:#010x}, computed {computed:#010x})"
    )]
    Checksum {
        /// The file.
        path: PathBuf,
        /// Which section or sector.
        what: String,
        /// The CRC32C stored.
        stored: u32,
        /// The CRC32C of the bytes read.
        computed: u32,
    },

    /// The file is shorter than its header says.
    #[error("{path}: truncated: needs {expected_bytes} bytes, has {found_bytes}")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes the header implies.
        expected_bytes: u64,
        /// Bytes the file has.
        found_bytes: u64,
    },

    /// A value is out of range or inconsistent with another (an id beyond the index, a count
    /// that disagrees, a non-finite float…).
    #[error("{path}: corrupt at byte {offset}: {what}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte offset of the bad value (or of its section).
        offset: u64,
        /// What is wrong.
        what: String,
    },

    /// The caller handed a writer inconsistent data (a programming error upstream, reported
    /// rather than panicking).
    #[error("invalid input to an index writer: {what}")]
    Invalid {
        /// What is inconsistent.
        what: String,
    },

    /// The directory holds no index (its manifest is missing).
    #[error("{dir}: no index here (missing {file})")]
    NotAnIndex {
        /// The directory.
        dir: PathBuf,
        /// The missing file.
        file: &'static str,
    },

    /// An output path that publishing must not replace (checked before any work): a file, a
    /// directory holding something other than an index, a path holding an input.
    #[error("{path}: refusing to write an index here: {why}")]
    Refused {
        /// The output path.
        path: PathBuf,
        /// Why it is refused.
        why: String,
    },
}

impl FormatError {
    /// A [`FormatError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        FormatError::Io {
            path: path.into(),
            source,
        }
    }

    /// A [`FormatError::Invalid`].
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

    /// A [`FormatError::Corrupt`] at byte `offset` of `path`.
    pub fn corrupt(path: impl Into<PathBuf>, offset: u64, what: impl Into<String>) -> Self {
        FormatError::Corrupt {
            path: path.into(),
            offset,
            what: what.into(),
        }
    }
}

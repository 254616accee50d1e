//! Errors of block reads. Every variant names the file; read errors also name the byte offset
//! and length of the request that failed, so a corrupt or truncated index file can be located.

use std::path::PathBuf;

/// An error from opening an index data file or reading sectors from it.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The file could not be opened (or its length could not be read).
    #[error("{path}: cannot open for reading: {source}", path = path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A read failed: a negative io_uring completion (its errno) or a failed `pread`.
    #[error(
        "{path}: read of {len} bytes at offset {offset} failed: {source}",
        path = path.display()
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// Byte offset of the failed request.
        offset: u64,
        /// Its length in bytes.
        len: u64,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The file ended before the request did: `got` of `expected` bytes were read starting at
    /// `offset` (the request's first byte).
    #[error(
        "{path}: file ends early: read {got} of {expected} bytes at offset {offset}",
        path = path.display()
    )]
    UnexpectedEof {
        /// The file.
        path: PathBuf,
        /// Byte offset of the request's first byte.
        offset: u64,
        /// Bytes requested.
        expected: u64,
        /// Bytes read before the file ended.
        got: u64,
    },

    /// Setting up the reader failed (ring creation, file registration, thread spawn).
    #[error("cannot set up {what}: {source}")]
    Setup {
        /// What could not be set up.
        what: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The requested backend or mode is not available here (io_uring refused by the kernel or
    /// a sandbox, or forced off by `M3_IO_FORCE_FALLBACK`).
    #[error("unsupported: {what}")]
    Unsupported {
        /// What is unavailable, and why.
        what: String,
    },
}

//! On-disk structures of an index: one module per file kind, each with its byte layout written
//! once in `docs/FORMAT.md`. Every file starts with the [`header::CommonHeader`] (magic,
//! version, lengths, header CRC32C); index files are untrusted input, so every decoder returns
//! a [`FormatError`] rather than panicking.

mod error;
pub mod header;
pub mod layout;

pub use error::FormatError;
pub use layout::{RecordLayout, RecordLocation, SECTOR_BYTES};

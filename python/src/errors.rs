//! The engine's errors as Python exceptions, and the fence that keeps Rust panics out of
//! Python.
//!
//! Three classes a caller can act on (STYLE §12): `m3.InvalidInput` (a `ValueError`: a bad
//! argument, query, parameter or input file), `m3.CorruptIndex` (an index file fails its
//! checks) and `m3.IoError` (an `OSError`: the operating system refused a read or write, or the
//! path holds no index). The message is the engine's own.

use std::panic::{AssertUnwindSafe, catch_unwind};

use m3::build::BuildError;
use m3::multivec::BlockError;
use m3::{DataError, FormatError, SearchError, UpdateError};
use pyo3::PyErr;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyOSError, PyRuntimeError, PyValueError};

create_exception!(
    m3,
    InvalidInput,
    PyValueError,
    "A bad argument, query, search parameter or input file; the message names it."
);
create_exception!(
    m3,
    CorruptIndex,
    PyException,
    "An index file is corrupt, truncated or of an unsupported version."
);
create_exception!(
    m3,
    IoError,
    PyOSError,
    "The operating system refused a read or write, or the path holds no index."
);

/// Which Python exception an engine error becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Invalid,
    Corrupt,
    Io,
}

/// An engine error on its way to Python: its class and the engine's message.
#[derive(Debug)]
pub struct Error {
    pub kind: Kind,
    pub message: String,
}

impl Error {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            kind: Kind::Invalid,
            message: message.into(),
        }
    }

    /// The same error with `prefix: ` before its message (the argument it concerns).
    pub fn context(mut self, prefix: &str) -> Self {
        self.message = format!("{prefix}: {}", self.message);
        self
    }
}

impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        match e.kind {
            Kind::Invalid => InvalidInput::new_err(e.message),
            Kind::Corrupt => CorruptIndex::new_err(e.message),
            Kind::Io => IoError::new_err(e.message),
        }
    }
}

fn format_kind(e: &FormatError) -> Kind {
    match e {
        FormatError::Io { .. } | FormatError::NotAnIndex { .. } => Kind::Io,
        FormatError::Invalid { .. } | FormatError::Refused { .. } => Kind::Invalid,
        _ => Kind::Corrupt,
    }
}

fn data_kind(e: &DataError) -> Kind {
    match e {
        DataError::Io { .. } => Kind::Io,
        _ => Kind::Invalid,
    }
}

fn block_kind(e: &BlockError) -> Kind {
    match e {
        BlockError::Data(d) => data_kind(d),
        _ => Kind::Invalid,
    }
}

fn search_kind(e: &SearchError) -> Kind {
    match e {
        SearchError::Format(f) => format_kind(f),
        SearchError::Io(_) => Kind::Io,
        SearchError::Data(d) => data_kind(d),
        _ => Kind::Invalid,
    }
}

fn with_kind(kind: Kind, e: &dyn std::fmt::Display) -> Error {
    Error {
        kind,
        message: e.to_string(),
    }
}

impl From<SearchError> for Error {
    fn from(e: SearchError) -> Self {
        let kind = search_kind(&e);
        let err = with_kind(kind, &e);
        match e {
            // The query checks speak of "query i"; say which argument holds it.
            SearchError::QueryDim { .. }
            | SearchError::NonFinite { .. }
            | SearchError::ZeroQuery { .. }
            | SearchError::QueryNorm { .. } => err.context("queries"),
            _ => err,
        }
    }
}

impl From<FormatError> for Error {
    fn from(e: FormatError) -> Self {
        with_kind(format_kind(&e), &e)
    }
}

impl From<DataError> for Error {
    fn from(e: DataError) -> Self {
        with_kind(data_kind(&e), &e)
    }
}

impl From<BlockError> for Error {
    fn from(e: BlockError) -> Self {
        with_kind(block_kind(&e), &e)
    }
}

impl From<BuildError> for Error {
    fn from(e: BuildError) -> Self {
        let kind = match &e {
            BuildError::Data(d) => data_kind(d),
            BuildError::Format(f) => format_kind(f),
            BuildError::Block(b) => block_kind(b),
            BuildError::Io { .. } => Kind::Io,
            _ => Kind::Invalid,
        };
        with_kind(kind, &e)
    }
}

impl From<UpdateError> for Error {
    fn from(e: UpdateError) -> Self {
        let kind = match &e {
            UpdateError::Search(s) => search_kind(s),
            UpdateError::Format(f) => format_kind(f),
            UpdateError::Poisoned => Kind::Io,
            _ => Kind::Invalid,
        };
        with_kind(kind, &e)
    }
}

/// Runs `f`, turning a panic into a `RuntimeError` that says it is a bug: no Rust panic
/// unwinds into Python.
pub fn fenced<T>(f: impl FnOnce() -> Result<T, Error>) -> Result<T, PyErr> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(PyErr::from),
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(PyRuntimeError::new_err(format!(
                "m3 internal error (a bug, please report it): {what}"
            )))
        }
    }
}

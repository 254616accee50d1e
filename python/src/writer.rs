//! `m3.IndexWriter`: live inserts, upserts and deletes by user id ([`m3::IndexWriter`]), made
//! durable by `commit()`; indexes opened afterwards see them.

use std::path::PathBuf;
use std::sync::Mutex;

use pyo3::prelude::*;

use crate::arrays::{f32_rows, user_ids};
use crate::errors::{Error, fenced};

/// The one writer of an index directory (holds its lock until `close()` or garbage collection).
#[pyclass(frozen, module = "m3", name = "IndexWriter")]
pub struct PyIndexWriter {
    inner: Mutex<Option<m3::IndexWriter>>,
    path: PathBuf,
}

impl PyIndexWriter {
    pub fn open(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let dir = path.clone();
        let w = py.detach(|| fenced(|| Ok(m3::IndexWriter::open(&dir)?)))?;
        Ok(Self {
            inner: Mutex::new(Some(w)),
            path,
        })
    }

    /// Runs `f` on the open writer, without the GIL.
    fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut m3::IndexWriter) -> Result<T, Error> + Send,
    ) -> PyResult<T> {
        py.detach(|| {
            fenced(|| {
                let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
                match guard.as_mut() {
                    Some(w) => f(w),
                    None => Err(Error::invalid("the writer is closed")),
                }
            })
        })
    }
}

#[pymethods]
impl PyIndexWriter {
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        Self::open(py, path)
    }

    /// Inserts (or replaces) one vector per id; pending until `commit()`. Rows may be
    /// float32, float64, uint8 or int8; on a uint8/int8 index every value must be an integer
    /// of its range (checked by `m3::IndexWriter::insert`).
    fn insert(
        &self,
        py: Python<'_>,
        ids: &Bound<'_, PyAny>,
        vectors: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let ids = user_ids(ids, "ids")?;
        let rows = f32_rows(vectors, "vectors", true)?;
        if rows.rows != ids.len() {
            return Err(Error::invalid(format!(
                "ids and vectors: {} ids but {} vectors",
                ids.len(),
                rows.rows
            ))
            .into());
        }
        let view = rows.view()?;
        self.with(py, |w| Ok(w.insert(&ids, view)?))
    }

    /// Deletes these ids (ids not in the index are ignored); pending until `commit()`.
    fn delete(&self, py: Python<'_>, ids: &Bound<'_, PyAny>) -> PyResult<()> {
        let ids = user_ids(ids, "ids")?;
        self.with(py, |w| {
            w.delete(&ids);
            Ok(())
        })
    }

    /// Makes the pending inserts and deletes durable; returns the new generation.
    fn commit(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |w| Ok(w.commit()?))
    }

    /// Inserts and deletes not yet committed.
    #[getter]
    fn pending(&self, py: Python<'_>) -> PyResult<usize> {
        self.with(py, |w| Ok(w.pending()))
    }

    /// Vectors searchable after the last commit.
    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        self.with(py, |w| Ok(w.live_vectors() as usize))
    }

    /// Releases the directory's lock; pending changes are dropped.
    fn close(&self) {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        guard.take();
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Commits when the block ended without an exception, then closes.
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let result = if exc_type.is_none() {
            self.with(py, |w| Ok(w.commit()?)).map(|_| ())
        } else {
            Ok(())
        };
        self.close();
        result.map(|_| false)
    }

    fn __repr__(&self) -> String {
        format!("m3.IndexWriter({:?})", self.path.display().to_string())
    }
}

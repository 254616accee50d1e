//! The native part of the Python package `m3` (`m3._m3`): the engine's build, search, range,
//! live updates and brute-force ground truth on NumPy arrays. The Python layer
//! (`python/m3/__init__.py`) adds progress bars, recall and the benchmark adapter; the
//! documented API is `python/m3/__init__.pyi` and `docs/PYTHON.md`.

mod arrays;
mod build;
mod errors;
mod gt;
mod index;
mod query;
mod writer;

use pyo3::prelude::*;

#[pymodule]
fn _m3(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("InvalidInput", py.get_type::<errors::InvalidInput>())?;
    m.add("CorruptIndex", py.get_type::<errors::CorruptIndex>())?;
    m.add("IoError", py.get_type::<errors::IoError>())?;
    m.add_class::<index::PyIndex>()?;
    m.add_class::<writer::PyIndexWriter>()?;
    m.add_function(wrap_pyfunction!(build::build, m)?)?;
    m.add_function(wrap_pyfunction!(gt::gt, m)?)?;
    Ok(())
}

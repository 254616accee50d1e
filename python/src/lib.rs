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
mod shards;
mod writer;

use pyo3::prelude::*;

/// A panic behind the fence that every call runs in: the tests check that it comes back as a
/// `RuntimeError`, not as a crash or a `PanicException`. Not part of the API.
#[pyfunction]
fn _panic_inside_fence() -> PyResult<()> {
    errors::fenced(|| -> Result<(), errors::Error> { panic!("a panic on purpose") })
}

/// The same panic on a worker of the engine's pool (as inside `search_batch`).
#[pyfunction]
fn _panic_on_pool(py: Python<'_>) -> PyResult<()> {
    let pool = query::pool(2)?;
    py.detach(|| {
        errors::fenced(|| -> Result<(), errors::Error> {
            pool.broadcast(|ctx| {
                if ctx.index() == 1 {
                    panic!("a panic on purpose, on worker 1");
                }
            });
            Ok(())
        })
    })
}

#[pymodule]
fn _m3(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("InvalidInput", py.get_type::<errors::InvalidInput>())?;
    m.add("CorruptIndex", py.get_type::<errors::CorruptIndex>())?;
    m.add("IoError", py.get_type::<errors::IoError>())?;
    m.add_class::<index::PyIndex>()?;
    m.add_class::<writer::PyIndexWriter>()?;
    m.add_class::<shards::PyShardRouter>()?;
    m.add_function(wrap_pyfunction!(shards::write_shard, m)?)?;
    m.add_function(wrap_pyfunction!(shards::publish_shards, m)?)?;
    m.add_function(wrap_pyfunction!(build::build, m)?)?;
    m.add_function(wrap_pyfunction!(build::stage_train, m)?)?;
    m.add_function(wrap_pyfunction!(build::stage_assign, m)?)?;
    m.add_function(wrap_pyfunction!(build::stage_shard, m)?)?;
    m.add_function(wrap_pyfunction!(build::stage_publish, m)?)?;
    m.add_function(wrap_pyfunction!(gt::gt, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_inside_fence, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_on_pool, m)?)?;
    Ok(())
}

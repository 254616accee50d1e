//! `m3.gt`: exact k-NN by brute force ([`m3::exact_knn`]) on NumPy arrays.

use m3::Metric;
use pyo3::prelude::*;

use crate::arrays::{Pair, f32_rows, table};
use crate::errors::{Error, fenced};
use crate::query::count;

/// The exact `k` nearest rows of `base` for every row of `queries` (row numbers and natural
/// distances, `(nq, k)` each).
#[pyfunction]
#[pyo3(signature = (base, queries, k, metric = "l2"))]
pub fn gt<'py>(
    py: Python<'py>,
    base: &Bound<'py, PyAny>,
    queries: &Bound<'py, PyAny>,
    k: i64,
    metric: &str,
) -> PyResult<Pair<'py>> {
    let metric: Metric = metric
        .parse()
        .map_err(|e: String| Error::invalid(format!("metric: {e}")))?;
    let k = count("k", k, 1)?;
    let b = f32_rows(base, "base", false)?;
    let q = f32_rows(queries, "queries", true)?;
    if b.dim != q.dim {
        return Err(Error::invalid(format!(
            "queries: have dimension {}, base has {}",
            q.dim, b.dim
        ))
        .into());
    }
    if k > b.rows {
        return Err(Error::invalid(format!(
            "k = {k} is larger than the {} rows of base",
            b.rows
        ))
        .into());
    }
    let (bv, qv) = (b.view()?, q.view()?);
    let (ids, dists) = py.detach(|| {
        fenced(|| {
            let res = m3::exact_knn(bv, qv, k, metric)?;
            let mut ids = Vec::with_capacity(res.len() * k);
            let mut dists = Vec::with_capacity(res.len() * k);
            for r in &res {
                for j in 0..k {
                    match r.get(j) {
                        Some(n) => {
                            ids.push(i64::from(n.id));
                            dists.push(metric.to_natural(n.dist));
                        }
                        None => {
                            ids.push(-1);
                            dists.push(f32::NAN);
                        }
                    }
                }
            }
            Ok((ids, dists))
        })
    })?;
    table(py, ids, dists, k)
}

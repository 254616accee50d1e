//! Sharded indexes (docs/DISTRIBUTED.md): the steps that cut a built index into shards
//! (`write_shard`, `publish_shards`, each a task a scheduler can run alone and retry) and the
//! router (`ShardRouter`: which shards each query must go to). `m3.distributed` runs them on
//! Ray; a shard is opened with `m3.Index` like any index.

use std::path::PathBuf;

use m3::{IoBackend, ReaderOptions, Searcher};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::{Error, fenced};
use crate::query::{Knobs, count};

/// A shard summary as a dict.
fn summary_dict<'py>(py: Python<'py>, s: &m3::build::ShardSummary) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("shard", s.shard)?;
    d.set_item("shards", s.shards)?;
    d.set_item("clusters", s.clusters)?;
    d.set_item("records", s.records)?;
    d.set_item("neighbours_dropped", s.neighbours_dropped)?;
    d.set_item("ssd_bytes", s.ssd_bytes)?;
    Ok(d)
}

/// Writes shard `shard` of `shards` of the index `index` into `out/shard-NNN` (published
/// crash-safely; a retry replaces it with the same bytes); returns its summary.
#[pyfunction]
#[pyo3(signature = (index, out, shards, shard, *, seed = 42))]
pub fn write_shard<'py>(
    py: Python<'py>,
    index: PathBuf,
    out: PathBuf,
    shards: usize,
    shard: usize,
    seed: u64,
) -> PyResult<Bound<'py, PyDict>> {
    let s = py.detach(|| {
        fenced(|| {
            let _ = m3::recover_index_dir(&index);
            let plan = m3::build::plan_shards(&index, shards, seed)?;
            std::fs::create_dir_all(&out).map_err(|e| {
                Error::from(m3::build::BuildError::Io {
                    path: out.clone(),
                    source: e,
                })
            })?;
            let dir = m3::build::shard_dir(&out, shard);
            let _ = m3::recover_index_dir(&dir);
            Ok(m3::build::write_shard(&index, &plan, shard, &dir)?)
        })
    })?;
    summary_dict(py, &s)
}

/// Checks the shards written in `out` and writes `out/shards.m3` (last).
#[pyfunction]
#[pyo3(signature = (index, out, shards, *, seed = 42))]
pub fn publish_shards(
    py: Python<'_>,
    index: PathBuf,
    out: PathBuf,
    shards: usize,
    seed: u64,
) -> PyResult<()> {
    py.detach(|| {
        fenced(|| {
            let plan = m3::build::plan_shards(&index, shards, seed)?;
            m3::build::publish_shards(&index, &plan, &out)?;
            Ok(())
        })
    })
}

/// The router of a sharded index: `shards.m3` and shard 0's global parts.
#[pyclass(frozen, module = "m3", name = "ShardRouter")]
pub struct PyShardRouter {
    inner: m3::search::ShardRouter,
}

#[pymethods]
impl PyShardRouter {
    #[new]
    #[pyo3(signature = (path, io = "auto"))]
    fn new(py: Python<'_>, path: PathBuf, io: &str) -> PyResult<Self> {
        let backend: IoBackend = io
            .parse()
            .map_err(|e: String| Error::invalid(format!("io: {e}")))?;
        let inner = py.detach(|| {
            fenced(|| {
                Ok(m3::search::ShardRouter::open(
                    &path,
                    backend,
                    &ReaderOptions::default(),
                )?)
            })
        })?;
        Ok(Self { inner })
    }

    /// For every row of `queries`: the shards it must go to (ascending), with the knobs of
    /// `Index.search`.
    #[pyo3(signature = (queries, k = 10, *, nprobe = None, qprobe = None, edges = None,
        hints = None, rerank = None, refine = None, expand_rounds = None))]
    #[allow(clippy::too_many_arguments)]
    fn route<'py>(
        &self,
        py: Python<'py>,
        queries: &Bound<'py, PyAny>,
        k: i64,
        nprobe: Option<i64>,
        qprobe: Option<i64>,
        edges: Option<i64>,
        hints: Option<i64>,
        rerank: Option<i64>,
        refine: Option<i64>,
        expand_rounds: Option<i64>,
    ) -> PyResult<Vec<Vec<usize>>> {
        let index = self.inner.index();
        let k = count("k", k, 1)?;
        let knobs = Knobs {
            nprobe,
            qprobe,
            edges,
            hints,
            rerank,
            refine,
            expand_rounds,
            distance: "native".into(),
            alpha: None,
            beta: None,
        };
        let params = knobs.params(k, index)?;
        let q = crate::query::queries(index, queries, None)?;
        let view = q.view()?;
        let router = &self.inner;
        py.detach(|| {
            fenced(|| {
                let mut searcher = Searcher::new(index);
                (0..view.rows())
                    .map(|qi| Ok(router.shards_for(&mut searcher, qi, view.row(qi), &params)?))
                    .collect::<Result<Vec<_>, Error>>()
            })
        })
    }

    /// For every row of `queries`: the shards holding records, best bound first, as
    /// `(shard, bound)`: the shard's bound on the query's distance to any of its vectors, in
    /// the metric's natural unit (squared L2: a lower bound on the distance; inner product and
    /// cosine: an upper bound on the similarity). Exact k-NN asks the first shard, then only
    /// the shards whose bound can beat the k-th distance it returned.
    fn exact_order<'py>(
        &self,
        py: Python<'py>,
        queries: &Bound<'py, PyAny>,
    ) -> PyResult<Vec<Vec<(usize, f32)>>> {
        let index = self.inner.index();
        let metric = index.metric();
        let q = crate::query::queries(index, queries, None)?;
        let view = q.view()?;
        let router = &self.inner;
        py.detach(|| {
            fenced(|| {
                let mut ex = m3::search::ExactSearcher::new(index);
                (0..view.rows())
                    .map(|qi| {
                        let order = router.shard_bounds(&mut ex, view.row(qi))?;
                        Ok(order
                            .into_iter()
                            .map(|(s, b)| (s, metric.to_natural(b)))
                            .collect())
                    })
                    .collect::<Result<Vec<_>, Error>>()
            })
        })
    }

    /// For every row of `queries`: the shards (ascending) a range search of `radius` (the
    /// metric's natural unit, as `Index.range`) must ask: those with a cluster whose bound
    /// is within the radius.
    fn range_route<'py>(
        &self,
        py: Python<'py>,
        queries: &Bound<'py, PyAny>,
        radius: f32,
    ) -> PyResult<Vec<Vec<usize>>> {
        let index = self.inner.index();
        let q = crate::query::queries(index, queries, None)?;
        let view = q.view()?;
        let router = &self.inner;
        py.detach(|| {
            fenced(|| {
                let mut ex = m3::search::ExactSearcher::new(index);
                (0..view.rows())
                    .map(|qi| Ok(router.range_shards(&mut ex, view.row(qi), radius)?))
                    .collect::<Result<Vec<_>, Error>>()
            })
        })
    }

    /// Shards S.
    #[getter]
    fn n_shards(&self) -> usize {
        self.inner.n_shards()
    }

    /// The directory of shard `s`.
    fn shard_dir(&self, s: usize) -> PyResult<PathBuf> {
        if s >= self.inner.n_shards() {
            return Err(
                Error::invalid(format!("shard {s} of {} shards", self.inner.n_shards())).into(),
            );
        }
        Ok(self.inner.shard_dir(s))
    }

    /// The metric's name.
    #[getter]
    fn metric(&self) -> String {
        self.inner.index().metric().to_string()
    }

    /// Dimension.
    #[getter]
    fn dim(&self) -> usize {
        self.inner.index().dim()
    }

    /// Base vectors of the whole sharded index.
    fn __len__(&self) -> usize {
        self.inner.table().n_vectors as usize
    }
}

//! `m3.Index`: an opened index; k-NN (approximate or exact) and range search on NumPy arrays.
//! The GIL is released while the engine works; a batch runs on the engine's worker pool.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use m3::{
    BatchOptions, ExactParams, ExactQuery, IoBackend, Metric, Neighbor, ReaderOptions,
    RerankDistance, Searcher, exact_batch, search_batch,
};
use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::arrays::{Pair, table};
use crate::errors::{Error, fenced};
use crate::query::{Knobs, count, pool};

/// An index opened for search (see the module's docstring in `m3/__init__.pyi`).
#[pyclass(frozen, module = "m3", name = "Index")]
pub struct PyIndex {
    pub inner: Arc<m3::Index>,
    pub path: PathBuf,
    /// Searchers of single-query calls, kept between calls: a searcher's buffers grow to a
    /// query's needs once, not on every call.
    searchers: Mutex<Vec<CachedSearcher>>,
}

type SearcherOf<'a> = Searcher<'a>;

self_cell::self_cell!(
    /// A searcher and the index it borrows.
    struct CachedSearcher {
        owner: Arc<m3::Index>,
        #[not_covariant]
        dependent: SearcherOf,
    }
);

/// Searchers kept at most (more threads searching at once make their own).
const MAX_CACHED_SEARCHERS: usize = 64;

impl PyIndex {
    /// `q` searched by a cached searcher (or a new one), returned to the cache afterwards.
    fn search_one(
        &self,
        q: &[f32],
        params: &m3::SearchParams,
    ) -> Result<Vec<Neighbor>, m3::SearchError> {
        let cached = self.searchers.lock().ok().and_then(|mut v| v.pop());
        let mut cell =
            cached.unwrap_or_else(|| CachedSearcher::new(self.inner.clone(), |i| Searcher::new(i)));
        let r = cell.with_dependent_mut(|_, s| s.search(0, q, params));
        if let Ok(mut v) = self.searchers.lock()
            && v.len() < MAX_CACHED_SEARCHERS
        {
            v.push(cell);
        }
        r.map(|(n, _)| n)
    }
}

/// faiss's range result: `(lims, ids, distances)`.
type RangeTriple<'py> = (
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<f32>>,
);

/// User id of internal id `id` as int64 (ids above 2^63 − 1 cannot be returned).
fn user_id(index: &m3::Index, id: u32) -> Result<i64, Error> {
    let u = index.user_id(id);
    i64::try_from(u).map_err(|_| Error::invalid(format!("user id {u} does not fit in int64")))
}

/// Results as (nq·k) ids and distances: user ids, natural units (LC-CMD: D²), padded with
/// -1 and NaN.
fn flatten(
    index: &m3::Index,
    results: &[Vec<Neighbor>],
    k: usize,
    natural: bool,
) -> Result<(Vec<i64>, Vec<f32>), Error> {
    let metric = index.metric();
    let mut ids = Vec::with_capacity(results.len() * k);
    let mut dists = Vec::with_capacity(results.len() * k);
    for r in results {
        for j in 0..k {
            match r.get(j) {
                Some(n) => {
                    ids.push(user_id(index, n.id)?);
                    dists.push(if natural {
                        metric.to_natural(n.dist)
                    } else {
                        n.dist
                    });
                }
                None => {
                    ids.push(-1);
                    dists.push(f32::NAN);
                }
            }
        }
    }
    Ok((ids, dists))
}

#[pymethods]
impl PyIndex {
    #[new]
    #[pyo3(signature = (path, io = "auto"))]
    fn new(py: Python<'_>, path: PathBuf, io: &str) -> PyResult<Self> {
        let backend: IoBackend = io
            .parse()
            .map_err(|e: String| Error::invalid(format!("io: {e}")))?;
        let dir = path.clone();
        let inner = py.detach(|| {
            fenced(|| {
                // What a killed build or publication left is finished or rolled back first,
                // as every `m3` command does; a failure here surfaces when opening.
                let _ = m3::recover_index_dir(&dir);
                Ok(m3::Index::open(&dir, backend, &ReaderOptions::default())?)
            })
        })?;
        Ok(Self {
            inner: Arc::new(inner),
            path,
            searchers: Mutex::new(Vec::new()),
        })
    }

    /// k nearest neighbours of every row of `queries`: `(ids, distances)`, both `(nq, k)`.
    #[pyo3(signature = (queries, k = 10, *, nprobe = None, qprobe = None, edges = None,
        hints = None, rerank = None, refine = None, expand_rounds = None, distance = "auto",
        alpha = None, beta = None, weights = None, threads = 0, inflight = None, exact = false))]
    #[allow(clippy::too_many_arguments)]
    fn search<'py>(
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
        distance: &str,
        alpha: Option<f32>,
        beta: Option<f32>,
        weights: Option<&Bound<'py, PyDict>>,
        threads: i64,
        inflight: Option<i64>,
        exact: bool,
    ) -> PyResult<Pair<'py>> {
        let index = &*self.inner;
        let k = count("k", k, 1)?;
        let knobs = Knobs {
            nprobe,
            qprobe,
            edges,
            hints,
            rerank,
            refine,
            expand_rounds,
            distance: distance.to_string(),
            alpha,
            beta,
        };
        let mut params = knobs.params(k, index)?;
        let q = crate::query::queries(index, queries, weights)?;
        params.block_weights = q.block_weights.clone();
        let options = BatchOptions {
            inflight_per_thread: match inflight {
                Some(v) => count("inflight", v, 1)?,
                None => BatchOptions::default().inflight_per_thread,
            },
        };
        let pool = pool(threads)?;
        let view = q.view()?;
        let natural = exact || !matches!(params.distance, RerankDistance::LcCmd { .. });
        let (ids, dists) = py.detach(|| {
            fenced(|| {
                let results = if exact {
                    let w = params.block_weights.as_deref();
                    let what = ExactQuery::Knn(k);
                    exact_batch(index, view, what, w, ExactParams::default(), &pool)?.results
                } else if view.rows() == 1 {
                    // One query: on this thread, without the hop to the pool.
                    vec![self.search_one(view.row(0), &params)?]
                } else {
                    search_batch(index, view, &params, &pool, &options)?.results
                };
                flatten(index, &results, k, natural)
            })
        })?;
        table(py, ids, dists, k)
    }

    /// Every vector within `radius` of each query: faiss's `(lims, ids, distances)`.
    #[pyo3(signature = (queries, radius, *, weights = None, threads = 0))]
    fn range<'py>(
        &self,
        py: Python<'py>,
        queries: &Bound<'py, PyAny>,
        radius: f64,
        weights: Option<&Bound<'py, PyDict>>,
        threads: i64,
    ) -> PyResult<RangeTriple<'py>> {
        let index = &*self.inner;
        if !radius.is_finite() {
            return Err(Error::invalid(format!("radius must be finite, got {radius}")).into());
        }
        let q = crate::query::queries(index, queries, weights)?;
        let pool = pool(threads)?;
        let view = q.view()?;
        let w = q.block_weights.clone();
        let (lims, ids, dists) = py.detach(|| {
            fenced(|| {
                let what = ExactQuery::Range(radius as f32);
                let res = exact_batch(
                    index,
                    view,
                    what,
                    w.as_deref(),
                    ExactParams::default(),
                    &pool,
                )?;
                let total: usize = res.results.iter().map(Vec::len).sum();
                let mut lims = Vec::with_capacity(res.results.len() + 1);
                lims.push(0i64);
                let (mut ids, mut dists) = (Vec::with_capacity(total), Vec::with_capacity(total));
                for r in &res.results {
                    for n in r {
                        ids.push(user_id(index, n.id)?);
                        dists.push(index.metric().to_natural(n.dist));
                    }
                    lims.push(ids.len() as i64);
                }
                Ok((lims, ids, dists))
            })
        })?;
        Ok((
            lims.into_pyarray(py),
            ids.into_pyarray(py),
            dists.into_pyarray(py),
        ))
    }

    /// Whether `queries` would be searched in place, without a copy (float32, C-contiguous).
    fn _borrows(&self, queries: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(crate::query::queries(&self.inner, queries, None)?.borrowed())
    }

    /// What `m3 inspect --json` says about this index, as a dict.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let dir = self.path.clone();
        let live = self.inner.live_info().to_json();
        let text = py.detach(|| {
            fenced(|| {
                let info = m3::format::IndexInfo::gather(&dir)?;
                let mut v = serde_json::to_value(&info)
                    .map_err(|e| Error::invalid(format!("index info: {e}")))?;
                v["live"] = live;
                Ok(v.to_string())
            })
        })?;
        py.import("json")?.call_method1("loads", (text,))
    }

    /// A writer for live inserts and deletes (`m3.IndexWriter(path)`).
    fn writer(&self, py: Python<'_>) -> PyResult<crate::writer::PyIndexWriter> {
        crate::writer::PyIndexWriter::open(py, self.path.clone())
    }

    /// Vectors a search can return (the base plus committed inserts, minus deletes, as of
    /// opening).
    fn __len__(&self) -> usize {
        self.inner.live_vectors() as usize
    }

    /// The vectors' dimension.
    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    /// The metric: `'l2'`, `'ip'` or `'cosine'`.
    #[getter]
    fn metric(&self) -> &'static str {
        self.inner.metric().name()
    }

    /// The index directory.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// The block reader in use: `'io_uring'` or `'pread'`.
    #[getter]
    fn io(&self) -> String {
        self.inner.reader_info().backend.to_string()
    }

    /// Block names of a multi-vector index (empty for a single-vector one).
    #[getter]
    fn blocks(&self) -> Vec<String> {
        self.inner.blocks().map_or_else(Vec::new, |t| {
            t.layout().blocks().iter().map(|b| b.name.clone()).collect()
        })
    }

    fn __repr__(&self) -> String {
        let m: Metric = self.inner.metric();
        format!(
            "m3.Index({:?}: {} vectors × {}, {})",
            self.path.display().to_string(),
            self.inner.live_vectors(),
            self.inner.dim(),
            m.name()
        )
    }
}

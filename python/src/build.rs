//! `m3.build`: a NumPy array (written once to a temporary vector file beside the output) or
//! any vector file `m3` reads, into an index; progress through a Python callback.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use m3::build::{BlockInput, BuildObserver};
use m3::data::write_user_ids;
use m3::{BuildParams, Metric, VectorWriter};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyDictMethods, PyString};

use crate::arrays::{NativeRows, f32_rows, native_rows, user_ids};
use crate::errors::{Error, fenced};
use crate::query::count;

/// A temporary directory beside the output for the arrays given as files; removed on drop.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(out: &Path) -> Result<Self, Error> {
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = parent.join(format!(".m3-py-input-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| Error {
            kind: crate::errors::Kind::Io,
            message: format!("{}: cannot create a scratch directory: {e}", dir.display()),
        })?;
        Ok(Self { dir })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write_rows<T: m3::Element>(
    path: &Path,
    dtype: m3::DType,
    rows: &[T],
    dim: usize,
) -> Result<(), Error> {
    let mut w = VectorWriter::create(path, dtype, dim)?;
    w.write_rows(m3::MatrixView::new(rows, dim)?)?;
    w.finish()?;
    Ok(())
}

/// `obj` as a vector file: a path as is, an array written into `scratch` as `stem.*bin`.
fn vector_file(
    obj: &Bound<'_, PyAny>,
    name: &str,
    scratch: &mut Option<Scratch>,
    out: &Path,
    stem: &str,
    f32_only: bool,
) -> PyResult<PathBuf> {
    if obj.is_instance_of::<PyString>() || obj.hasattr("__fspath__")? {
        return obj.extract::<PathBuf>();
    }
    if scratch.is_none() {
        *scratch = Some(Scratch::new(out)?);
    }
    let dir = &scratch.as_ref().map(|s| s.dir.clone()).unwrap_or_default();
    if f32_only {
        let rows = f32_rows(obj, name, false)?;
        let path = dir.join(format!("{stem}.fbin"));
        let (slice, dim) = (rows.elems.slice(), rows.dim);
        obj.py()
            .detach(|| fenced(|| write_rows(&path, m3::DType::F32, slice, dim)))?;
        return Ok(path);
    }
    let (rows, _, dim) = native_rows(obj, name)?;
    let ext = match rows.dtype() {
        m3::DType::F32 => "fbin",
        m3::DType::U8 => "u8bin",
        m3::DType::I8 => "i8bin",
    };
    let path = dir.join(format!("{stem}.{ext}"));
    let dtype = rows.dtype();
    let py = obj.py();
    match &rows {
        NativeRows::F32(e) => {
            let s = e.slice();
            py.detach(|| fenced(|| write_rows(&path, dtype, s, dim)))?;
        }
        NativeRows::U8(e) => {
            let s = e.slice();
            py.detach(|| fenced(|| write_rows(&path, dtype, s, dim)))?;
        }
        NativeRows::I8(e) => {
            let s = e.slice();
            py.detach(|| fenced(|| write_rows(&path, dtype, s, dim)))?;
        }
    }
    Ok(path)
}

/// Calls a Python `progress(stage, done, total)` at most every 0.2 s (and at each stage's
/// start); keeps the build's notes.
struct PyObserver {
    callback: Option<Py<PyAny>>,
    state: Mutex<ObserverState>,
}

struct ObserverState {
    stage: &'static str,
    total: u64,
    last: Option<Instant>,
    notes: Vec<String>,
}

impl PyObserver {
    fn call(&self, stage: &'static str, done: u64, total: u64) {
        if let Some(cb) = &self.callback {
            Python::attach(|py| {
                if let Err(e) = cb.call1(py, (stage, done, total)) {
                    e.write_unraisable(py, Some(cb.bind(py)));
                }
            });
        }
    }
}

impl BuildObserver for PyObserver {
    fn stage(&self, name: &'static str, total: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.stage = name;
            s.total = total;
            s.last = Some(Instant::now());
        }
        self.call(name, 0, total);
    }

    fn progress(&self, done: u64) {
        let due = match self.state.lock() {
            Ok(mut s) => {
                let now = Instant::now();
                let due = s.last.is_none_or(|t| now - t >= Duration::from_millis(200));
                if due {
                    s.last = Some(now);
                }
                due.then_some((s.stage, s.total))
            }
            Err(_) => None,
        };
        if let Some((stage, total)) = due {
            self.call(stage, done, total);
        }
    }

    fn note(&self, text: &str) {
        if let Ok(mut s) = self.state.lock() {
            s.notes.push(text.to_string());
        }
    }
}

/// The `**params` of `m3.build` (the `m3 build` flags of the same names) over `p`.
fn apply_params(p: &mut BuildParams, params: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
    let Some(params) = params else { return Ok(()) };
    for (k, v) in params.iter() {
        let key: String = k.extract()?;
        let usize_of = |v: &Bound<'_, PyAny>| -> PyResult<usize> {
            let x: i64 = v
                .extract()
                .map_err(|_| Error::invalid(format!("{key}: must be an integer")))?;
            Ok(count(&key, x, 0)?)
        };
        let f32_of = |v: &Bound<'_, PyAny>| -> PyResult<f32> {
            v.extract()
                .map_err(|_| Error::invalid(format!("{key}: must be a number")).into())
        };
        match key.as_str() {
            "cluster_size" => p.clusters.target_size = usize_of(&v)?.max(1),
            "max_cluster_factor" => p.clusters.max_size_factor = f32_of(&v)?,
            "pq_bytes" => p.pq.subspaces = Some(usize_of(&v)?),
            "refine" => p.pq.refine = v.is_truthy()?,
            "spill" => p.spill.max_copies = usize_of(&v)?,
            "spill_epsilon" => p.spill.epsilon = f32_of(&v)?,
            "query_anchors" => p.routing.query_anchors = Some(usize_of(&v)?),
            "edges_per_anchor" => p.routing.edges_per_anchor = usize_of(&v)?,
            "hint_depth" => p.routing.hint_depth = usize_of(&v)?,
            "degree" => p.graph.max_degree = usize_of(&v)?,
            "candidates" => p.graph.candidates = usize_of(&v)?,
            "cross_links" => p.cross.links = usize_of(&v)?,
            "cross_clusters" => p.cross.clusters = usize_of(&v)?,
            _ => {
                return Err(Error::invalid(format!(
                    "unknown build parameter '{key}' (known: cluster_size, max_cluster_factor, \
                     pq_bytes, refine, spill, spill_epsilon, query_anchors, edges_per_anchor, \
                     hint_depth, degree, candidates, cross_links, cross_clusters)"
                ))
                .into());
            }
        }
    }
    Ok(())
}

/// The build's inputs as files: paths as they are, arrays written into `scratch`.
fn inputs(
    base: &Bound<'_, PyAny>,
    out: &Path,
    metric: Metric,
    train_queries: Option<&Bound<'_, PyAny>>,
    ids: Option<&Bound<'_, PyAny>>,
    scratch: &mut Option<Scratch>,
) -> PyResult<BuildParams> {
    let mut p = if let Ok(blocks) = base.cast::<PyDict>() {
        let mut inputs = Vec::new();
        for (k, v) in blocks.iter() {
            let name: String = k.extract()?;
            let arg = format!("base['{name}']");
            let path = vector_file(&v, &arg, scratch, out, &format!("block-{name}"), false)?;
            inputs.push(BlockInput {
                name,
                path,
                weight: 1.0,
            });
        }
        BuildParams::with_blocks(inputs, metric, out.to_path_buf())
    } else {
        let path = vector_file(base, "base", scratch, out, "base", false)?;
        BuildParams::new(path, metric, out.to_path_buf())
    };
    if let Some(tq) = train_queries {
        p.train_queries = Some(vector_file(
            tq,
            "train_queries",
            scratch,
            out,
            "train",
            true,
        )?);
    }
    if let Some(ids) = ids {
        p.ids = Some(
            if ids.is_instance_of::<PyString>() || ids.hasattr("__fspath__")? {
                ids.extract::<PathBuf>()?
            } else {
                let v = user_ids(ids, "ids")?;
                if scratch.is_none() {
                    *scratch = Some(Scratch::new(out)?);
                }
                let path = scratch
                    .as_ref()
                    .map(|s| s.dir.join("ids.u64bin"))
                    .unwrap_or_default();
                write_user_ids(&path, &v).map_err(Error::from)?;
                path
            },
        );
    }
    Ok(p)
}

/// Builds an index (see `m3.build` in `m3/__init__.pyi`); returns the build summary as a dict.
#[pyfunction]
#[pyo3(signature = (base, out, metric = "l2", *, train_queries = None, ids = None,
    threads = 0, seed = 42, ram_budget_gb = None, progress = None, params = None))]
#[allow(clippy::too_many_arguments)]
pub fn build<'py>(
    py: Python<'py>,
    base: &Bound<'py, PyAny>,
    out: PathBuf,
    metric: &str,
    train_queries: Option<&Bound<'py, PyAny>>,
    ids: Option<&Bound<'py, PyAny>>,
    threads: i64,
    seed: u64,
    ram_budget_gb: Option<f64>,
    progress: Option<Py<PyAny>>,
    params: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let metric: Metric = metric
        .parse()
        .map_err(|e: String| Error::invalid(format!("metric: {e}")))?;
    let mut scratch = None;
    let mut p = inputs(base, &out, metric, train_queries, ids, &mut scratch)?;
    p.seed = seed;
    if let Some(gb) = ram_budget_gb {
        if !gb.is_finite() || gb <= 0.0 {
            return Err(Error::invalid(format!(
                "ram_budget_gb must be a positive number, got {gb}"
            ))
            .into());
        }
        p.ram_budget_bytes = ((gb * (1u64 << 30) as f64) as u64).max(1);
    }
    apply_params(&mut p, params)?;
    let pool = crate::query::pool(threads)?;
    let obs = PyObserver {
        callback: progress,
        state: Mutex::new(ObserverState {
            stage: "",
            total: 0,
            last: None,
            notes: Vec::new(),
        }),
    };
    let text = py.detach(|| {
        fenced(|| {
            let _ = m3::recover_index_dir(&p.out);
            let summary = m3::build_index(&p, &pool, &obs)?;
            let mut v = serde_json::to_value(&summary)
                .map_err(|e| Error::invalid(format!("build summary: {e}")))?;
            v["notes"] = obs
                .state
                .lock()
                .map(|s| s.notes.clone())
                .unwrap_or_default()
                .into();
            Ok(v.to_string())
        })
    })?;
    drop(scratch);
    py.import("json")?.call_method1("loads", (text,))
}

/// A progress observer calling `progress(stage, done, total)` (none without a callback).
fn observer(progress: Option<Py<PyAny>>) -> PyObserver {
    PyObserver {
        callback: progress,
        state: Mutex::new(ObserverState {
            stage: "",
            total: 0,
            last: None,
            notes: Vec::new(),
        }),
    }
}

/// A stage's summary as JSON (a macro: the summaries' `Serialize` is not named here).
macro_rules! json {
    ($v:expr) => {
        serde_json::to_value($v).map_err(|e| Error::invalid(format!("summary: {e}")))
    };
}

/// Runs a stage of the staged build off the GIL and returns its JSON summary as a dict.
fn stage_call<'py>(
    py: Python<'py>,
    f: impl FnOnce() -> Result<serde_json::Value, Error> + Send,
) -> PyResult<Bound<'py, PyAny>> {
    let text = py.detach(|| fenced(|| Ok(f()?.to_string())))?;
    py.import("json")?.call_method1("loads", (text,))
}

/// One path or a list of paths (the base files, rows numbered by concatenation).
fn base_list(obj: &Bound<'_, PyAny>) -> PyResult<Vec<PathBuf>> {
    if let Ok(p) = obj.extract::<PathBuf>() {
        return Ok(vec![p]);
    }
    let v: Vec<PathBuf> = obj
        .extract()
        .map_err(|_| Error::invalid("base: a path or a list of paths"))?;
    if v.is_empty() {
        return Err(Error::invalid("base: an empty list of base files").into());
    }
    Ok(v)
}

/// Stage 1 of the staged build (docs/DISTRIBUTED.md, "Stages"): trains the model of `base`
/// (one file, or a list whose rows are numbered by concatenation) and plans `shards` shards
/// into the work directory `work`.
#[pyfunction]
#[pyo3(signature = (base, work, shards, metric = "l2", *, train_queries = None, threads = 0,
    seed = 42, ram_budget_gb = None, progress = None, params = None))]
#[allow(clippy::too_many_arguments)]
pub fn stage_train<'py>(
    py: Python<'py>,
    base: &Bound<'py, PyAny>,
    work: PathBuf,
    shards: usize,
    metric: &str,
    train_queries: Option<PathBuf>,
    threads: i64,
    seed: u64,
    ram_budget_gb: Option<f64>,
    progress: Option<Py<PyAny>>,
    params: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let metric: Metric = metric
        .parse()
        .map_err(|e: String| Error::invalid(format!("metric: {e}")))?;
    let mut base = base_list(base)?;
    let mut p = BuildParams::new(base.remove(0), metric, work.clone());
    p.more_base = base;
    p.train_queries = train_queries;
    p.seed = seed;
    if let Some(gb) = ram_budget_gb {
        if !gb.is_finite() || gb <= 0.0 {
            return Err(Error::invalid(format!(
                "ram_budget_gb must be a positive number, got {gb}"
            ))
            .into());
        }
        p.ram_budget_bytes = ((gb * (1u64 << 30) as f64) as u64).max(1);
    }
    apply_params(&mut p, params)?;
    let pool = crate::query::pool(threads)?;
    let obs = observer(progress);
    stage_call(py, || {
        json!(m3::build::stage_train(&p, shards, &work, &pool, &obs)?)
    })
}

/// Stage 2: assigns base rows `start..end` against the model in `work`, one sorted run per
/// shard. `base` (a path or a list) replaces the model's base paths (the same files seen
/// from another machine).
#[pyfunction]
#[pyo3(signature = (work, start, end, *, base = None, threads = 0, progress = None))]
pub fn stage_assign<'py>(
    py: Python<'py>,
    work: PathBuf,
    start: u64,
    end: u64,
    base: Option<&Bound<'py, PyAny>>,
    threads: i64,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let base = base.map(base_list).transpose()?;
    let pool = crate::query::pool(threads)?;
    let obs = observer(progress);
    stage_call(py, || {
        json!(m3::build::stage_assign(
            &work,
            base.as_deref(),
            start..end,
            &pool,
            &obs,
        )?)
    })
}

/// Stage 3: builds shard `shard` from its runs into `work/shards/shard-NNN`.
#[pyfunction]
#[pyo3(signature = (work, shard, *, base = None, threads = 0, progress = None))]
pub fn stage_shard<'py>(
    py: Python<'py>,
    work: PathBuf,
    shard: usize,
    base: Option<&Bound<'py, PyAny>>,
    threads: i64,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let base = base.map(base_list).transpose()?;
    let pool = crate::query::pool(threads)?;
    let obs = observer(progress);
    stage_call(py, || {
        let _ = m3::recover_index_dir(&work.join("shards").join(format!("shard-{shard:03}")));
        json!(m3::build::stage_shard(
            &work,
            shard,
            base.as_deref(),
            &pool,
            &obs,
        )?)
    })
}

/// Stage 4: moves the shards into `out` and writes `out/shards.m3` last; returns the number
/// of shards.
#[pyfunction]
pub fn stage_publish<'py>(
    py: Python<'py>,
    work: PathBuf,
    out: PathBuf,
) -> PyResult<Bound<'py, PyAny>> {
    stage_call(py, || {
        let t = m3::build::stage_publish(&work, &out)?;
        Ok(serde_json::json!({ "shards": t.shards.len() }))
    })
}

//! What `Index.search` and `Index.range` take: the knobs as [`SearchParams`], and the queries
//! as f32 rows, from one array or, on a multi-vector index, from a dict of block arrays.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use m3::{Index, MatrixView, RerankDistance, SearchParams};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyDictMethods};

use crate::arrays::{F32Rows, f32_rows};
use crate::errors::Error;

/// A count argument: ≥ 0 (`at_least` 1 for k), named in the error.
pub fn count(name: &str, v: i64, at_least: i64) -> Result<usize, Error> {
    if v < at_least {
        return Err(Error::invalid(format!(
            "{name} must be at least {at_least}, got {v}"
        )));
    }
    usize::try_from(v).map_err(|_| Error::invalid(format!("{name} = {v} is too large")))
}

fn knob(name: &str, v: Option<i64>) -> Result<Option<usize>, Error> {
    v.map(|v| count(name, v, 0)).transpose()
}

/// The approximate-search knobs of `Index.search` (None = the engine's default).
#[derive(Debug, Default, Clone)]
pub struct Knobs {
    pub nprobe: Option<i64>,
    pub qprobe: Option<i64>,
    pub edges: Option<i64>,
    pub hints: Option<i64>,
    pub rerank: Option<i64>,
    pub refine: Option<i64>,
    pub expand_rounds: Option<i64>,
    pub distance: String,
    pub alpha: Option<f32>,
    pub beta: Option<f32>,
}

impl Knobs {
    /// The knobs over [`SearchParams::new`]`(k)`, checked against `index` by the engine later.
    pub fn params(&self, k: usize, index: &Index) -> Result<SearchParams, Error> {
        let mut p = SearchParams::new(k);
        let set = |slot: &mut usize, name: &str, v: Option<i64>| -> Result<(), Error> {
            if let Some(v) = knob(name, v)? {
                *slot = v;
            }
            Ok(())
        };
        set(&mut p.nprobe, "nprobe", self.nprobe)?;
        set(&mut p.qprobe, "qprobe", self.qprobe)?;
        set(&mut p.edges, "edges", self.edges)?;
        set(&mut p.hints, "hints", self.hints)?;
        set(&mut p.rerank, "rerank", self.rerank)?;
        set(&mut p.refine, "refine", self.refine)?;
        set(&mut p.expand_rounds, "expand_rounds", self.expand_rounds)?;
        p.distance = match self.distance.as_str() {
            "auto" => index.calibrated_distance(),
            "native" => RerankDistance::Native,
            "lccmd" => RerankDistance::LcCmd {
                alpha: self.alpha.unwrap_or(SearchParams::DEFAULT_LCCMD_ALPHA),
                beta: self.beta.unwrap_or(SearchParams::DEFAULT_LCCMD_BETA),
            },
            other => {
                return Err(Error::invalid(format!(
                    "distance must be 'auto', 'native' or 'lccmd', got {other:?}"
                )));
            }
        };
        if self.distance != "lccmd" && (self.alpha.is_some() || self.beta.is_some()) {
            return Err(Error::invalid(
                "alpha and beta are LC-CMD parameters: pass distance='lccmd' with them",
            ));
        }
        Ok(p)
    }
}

/// Query rows (f32, `index.dim()` wide) and the block weights they are searched with.
pub struct Queries<'py> {
    pub rows: QueryData<'py>,
    pub block_weights: Option<Vec<f32>>,
}

/// Rows from one array (borrowed when it allows) or assembled from block arrays.
pub enum QueryData<'py> {
    Array(F32Rows<'py>),
    Assembled(m3::Matrix<f32>),
}

impl Queries<'_> {
    pub fn view(&self) -> Result<MatrixView<'_, f32>, Error> {
        match &self.rows {
            QueryData::Array(r) => r.view(),
            QueryData::Assembled(m) => Ok(m.view()),
        }
    }

    pub fn borrowed(&self) -> bool {
        matches!(&self.rows, QueryData::Array(r) if r.elems.is_borrowed())
    }
}

fn weight_pairs(weights: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<(String, f32)>> {
    let mut out = Vec::new();
    if let Some(w) = weights {
        for (k, v) in w.iter() {
            let name: String = k
                .extract()
                .map_err(|_| Error::invalid("weights: keys must be block names (str)"))?;
            let value: f32 = v
                .extract()
                .map_err(|_| Error::invalid(format!("weights['{name}']: must be a number")))?;
            out.push((name, value));
        }
    }
    Ok(out)
}

/// `queries` (an array, or a dict block name → array on a multi-vector index) and `weights`
/// (a dict block name → weight) as rows and block weights, checked against `index`.
pub fn queries<'py>(
    index: &Index,
    queries: &Bound<'py, PyAny>,
    weights: Option<&Bound<'py, PyDict>>,
) -> PyResult<Queries<'py>> {
    let named = weight_pairs(weights)?;
    if let Ok(blocks) = queries.cast::<PyDict>() {
        return block_queries(index, blocks, &named);
    }
    let rows = f32_rows(queries, "queries", true)?;
    if rows.dim != index.dim() {
        return Err(Error::invalid(format!(
            "queries: have dimension {}, the index has {}",
            rows.dim,
            index.dim()
        ))
        .into());
    }
    let block_weights = if named.is_empty() {
        None
    } else {
        let blocks = index.blocks().map_or(0, |t| t.blocks.len());
        Some(
            index
                .block_weights(&named, &vec![true; blocks])
                .map_err(|e| Error::from(e).context("weights"))?,
        )
    };
    Ok(Queries {
        rows: QueryData::Array(rows),
        block_weights,
    })
}

/// A dict of block arrays: each block's columns of the full rows, zeros where a block is not
/// given (its weight is then 0), as `m3 search --query-block` assembles them.
fn block_queries<'py>(
    index: &Index,
    blocks: &Bound<'py, PyDict>,
    named: &[(String, f32)],
) -> PyResult<Queries<'py>> {
    let Some(table) = index.blocks() else {
        return Err(Error::invalid(
            "queries: a dict of blocks needs a multi-vector index; this one was built from a single base",
        )
        .into());
    };
    let layout = table.layout();
    let mut present = vec![false; layout.len()];
    let mut parts = Vec::new();
    for (k, v) in blocks.iter() {
        let name: String = k
            .extract()
            .map_err(|_| Error::invalid("queries: dict keys must be block names (str)"))?;
        let b = layout.position(&name).map_err(Error::from)?;
        let arg = format!("queries['{name}']");
        let rows = f32_rows(&v, &arg, true)?;
        let want = layout.blocks()[b].dim;
        if rows.dim != want {
            return Err(Error::invalid(format!(
                "{arg}: has dimension {}, block '{name}' has {want}",
                rows.dim
            ))
            .into());
        }
        present[b] = true;
        parts.push((b, arg, rows));
    }
    let Some(nq) = parts.first().map(|p| p.2.rows) else {
        return Err(Error::invalid("queries: give at least one block").into());
    };
    let dim = layout.dim();
    let mut full = vec![0f32; nq * dim];
    for (b, arg, rows) in &parts {
        if rows.rows != nq {
            return Err(Error::invalid(format!(
                "{arg}: has {} rows, the first block has {nq}",
                rows.rows
            ))
            .into());
        }
        let r = layout.range(*b);
        for (dst, src) in full.chunks_exact_mut(dim).zip(rows.view()?.iter_rows()) {
            dst[r.clone()].copy_from_slice(src);
        }
    }
    let w = index
        .block_weights(named, &present)
        .map_err(|e| Error::from(e).context("weights"))?;
    Ok(Queries {
        rows: QueryData::Assembled(m3::Matrix::from_vec(full, dim).map_err(Error::from)?),
        block_weights: Some(w),
    })
}

/// Worker pools by thread count (0 = one per core), made once and shared by every index:
/// batch calls run on the engine's own threads, as `m3 search` does.
pub fn pool(threads: i64) -> Result<Arc<rayon::ThreadPool>, Error> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let n = count("threads", threads, 0)?;
    // `available_parallelism` reads cgroup files on Linux (tens of µs): once per process.
    static CORES: OnceLock<usize> = OnceLock::new();
    let n = if n == 0 {
        *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    } else {
        n
    };
    let pools = POOLS.get_or_init(Default::default);
    let mut map = pools.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = map.get(&n) {
        return Ok(p.clone());
    }
    let p = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("m3-py-worker-{i}"))
        .build()
        .map_err(|e| Error::invalid(format!("threads = {n}: cannot start the pool: {e}")))?;
    let p = Arc::new(p);
    map.insert(n, p.clone());
    Ok(p)
}

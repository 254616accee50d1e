//! Many queries on a thread pool: each worker keeps one [`Searcher`] and takes queries in
//! order; results come back in query order.

use std::time::Instant;

use rayon::prelude::*;

use super::{Index, QueryStats, SearchError, SearchParams, Searcher};
use crate::data::MatrixView;
use crate::exact::Neighbor;

/// Results, per-query cost and per-query latency of a batch.
#[derive(Debug)]
pub struct BatchResult {
    pub results: Vec<Vec<Neighbor>>,
    pub stats: Vec<QueryStats>,
    pub latencies_us: Vec<f64>,
    /// Wall time of the whole batch.
    pub seconds: f64,
}

/// Searches every row of `queries` on `pool`. Fails on the first bad query (checked up front,
/// so no work is wasted on a batch that cannot complete).
pub fn search_batch(
    index: &Index,
    queries: MatrixView<'_, f32>,
    params: &SearchParams,
    pool: &rayon::ThreadPool,
) -> Result<BatchResult, SearchError> {
    let checker = Searcher::new(index);
    for (i, q) in queries.iter_rows().enumerate() {
        checker.check(i, q, params)?;
    }
    drop(checker);
    let start = Instant::now();
    type Outcome = Result<(Vec<Neighbor>, QueryStats, f64), SearchError>;
    let out: Vec<Outcome> = pool.install(|| {
        (0..queries.rows())
            .into_par_iter()
            .with_min_len(4)
            .map_init(
                || Searcher::new(index),
                |s, i| {
                    let t = Instant::now();
                    let (r, st) = s.search(i, queries.row(i), params)?;
                    Ok((r, st, t.elapsed().as_secs_f64() * 1e6))
                },
            )
            .collect()
    });
    let seconds = start.elapsed().as_secs_f64();
    let mut res = BatchResult {
        results: Vec::with_capacity(out.len()),
        stats: Vec::with_capacity(out.len()),
        latencies_us: Vec::with_capacity(out.len()),
        seconds,
    };
    for o in out {
        let (r, st, l) = o?;
        res.results.push(r);
        res.stats.push(st);
        res.latencies_us.push(l);
    }
    Ok(res)
}

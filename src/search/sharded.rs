//! A sharded index (docs/DISTRIBUTED.md): `shards.m3` and one normal index directory per shard.
//! The router ranks the query's clusters and training queries with the global RAM parts
//! (anchors, query anchors and edges, training queries; byte-identical in every shard, read
//! from shard 0) exactly as the unsharded index does ([`Searcher::route_plan`]), sends the
//! query only to the shards that own a probed cluster or store an answer of one of its
//! training queries, each shard runs the whole query on its own records (PQ scan, reads and
//! rerank of its best candidates), and the router merges the top k. Exact and range search
//! ask every shard (each prunes its own clusters by the same bounds as an unsharded index).
//!
//! [`ShardRouter`] is the router alone (what a caller that reaches the shards over a network,
//! e.g. Ray actors, needs); [`ShardedIndex`] opens every shard in this process.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{ExactSearcher, Index, QueryStats, SearchError, SearchParams, Searcher};
use crate::format::{FormatError, SHARDS_FILE, ShardTable};
use crate::io::{IoBackend, ReaderOptions};
use crate::neighbor::Neighbor;

/// Bytes a router sends a shard per query besides the vector (the knobs, `k`, a query id),
/// counted in [`ShardedStats::bytes_moved`].
pub const REQUEST_KNOB_BYTES: u64 = 64;
/// Bytes a shard returns per result (a u32 id and an f32 distance).
pub const RESULT_BYTES: u64 = 8;

/// What a query cost on a sharded index.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShardedStats {
    /// The shards' query statistics, summed (the router's anchor scoring included).
    pub query: QueryStats,
    /// Shards the query was sent to.
    pub shards_touched: u64,
    /// Payload bytes between router and shards: per shard touched, the query vector (4·dim)
    /// and [`REQUEST_KNOB_BYTES`], and [`RESULT_BYTES`] per result it returned.
    pub bytes_moved: u64,
}

/// The router of a sharded index: the shard table and shard 0 (whose global parts route).
#[derive(Debug, Clone)]
pub struct ShardRouter {
    dir: PathBuf,
    table: ShardTable,
    router: Arc<Index>,
}

/// Whether `dir` is a sharded index (holds `shards.m3`).
pub fn is_sharded(dir: &Path) -> bool {
    dir.join(SHARDS_FILE).is_file()
}

/// Checks shard `s`'s manifest against its entry in `shards.m3`.
fn check_shard(dir: &Path, table: &ShardTable, s: usize) -> Result<PathBuf, SearchError> {
    let entry = &table.shards[s];
    let name = entry.name_str().unwrap_or_default();
    let shard_dir = dir.join(name);
    let manifest = shard_dir.join(crate::format::files::MANIFEST_FILE);
    let (bytes, crc) = crate::format::file_crc32c(&manifest)?;
    if (bytes, crc) != (entry.bytes, entry.crc32c) {
        return Err(FormatError::corrupt(
            dir.join(SHARDS_FILE),
            0,
            format!(
                "shard {s} ({name}): its manifest is not the one published with the sharded \
                 index (rebuilt or replaced since): publish the sharded index again"
            ),
        )
        .into());
    }
    Ok(shard_dir)
}

/// Opens shard `s` of the sharded index in `dir` and checks it belongs there.
pub fn open_shard(
    dir: &Path,
    table: &ShardTable,
    s: usize,
    backend: IoBackend,
    options: &ReaderOptions,
) -> Result<Index, SearchError> {
    let shard_dir = check_shard(dir, table, s)?;
    let idx = Index::open(&shard_dir, backend, options)?;
    let meta = idx.meta();
    if meta.n_clusters as usize != table.owners.len() || meta.n_vectors != table.n_vectors {
        return Err(FormatError::corrupt(
            dir.join(SHARDS_FILE),
            36,
            format!(
                "shard {s} has {} clusters and {} vectors; shards.m3 says {} and {}",
                meta.n_clusters,
                meta.n_vectors,
                table.owners.len(),
                table.n_vectors
            ),
        )
        .into());
    }
    Ok(idx)
}

impl ShardRouter {
    /// Reads `shards.m3` in `dir` and opens shard 0 for its global parts.
    pub fn open(
        dir: &Path,
        backend: IoBackend,
        options: &ReaderOptions,
    ) -> Result<Self, SearchError> {
        let table = ShardTable::read(&dir.join(SHARDS_FILE))?;
        let router = Arc::new(open_shard(dir, &table, 0, backend, options)?);
        Ok(Self {
            dir: dir.to_path_buf(),
            table,
            router,
        })
    }

    /// The sharded index's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `shards.m3`.
    pub fn table(&self) -> &ShardTable {
        &self.table
    }

    /// Shards S.
    pub fn n_shards(&self) -> usize {
        self.table.n_shards()
    }

    /// The directory of shard `s`.
    pub fn shard_dir(&self, s: usize) -> PathBuf {
        self.dir
            .join(self.table.shards[s].name_str().unwrap_or_default())
    }

    /// The index the router routes with (shard 0).
    pub fn index(&self) -> &Index {
        &self.router
    }

    /// The shards query `qi` must go to, ascending, and the router's cost (anchors scored),
    /// using `searcher` (a searcher of [`Self::index`]).
    pub fn shards_for(
        &self,
        searcher: &mut Searcher<'_>,
        qi: usize,
        q: &[f32],
        params: &SearchParams,
    ) -> Result<Vec<usize>, SearchError> {
        let plan = searcher.route_plan(qi, q, params)?;
        let mut mask = 0u64;
        for &c in &plan.clusters {
            mask |= 1 << self.table.owners[c as usize];
        }
        for &tq in &plan.hint_queries {
            mask |= self.table.hint_masks.get(tq as usize).copied().unwrap_or(0);
        }
        Ok((0..self.n_shards())
            .filter(|s| mask >> s & 1 == 1)
            .collect())
    }
}

/// The best `k` of the shards' answers: ascending by (distance, id), each id once (a vector
/// spilled into clusters of two shards can be returned by both).
pub fn merge_answers(lists: &[Vec<Neighbor>], k: usize) -> Vec<Neighbor> {
    let mut all: Vec<Neighbor> = lists.iter().flatten().copied().collect();
    all.sort_unstable_by(|a, b| a.cmp_total(b));
    let mut seen = std::collections::HashSet::with_capacity(all.len());
    all.retain(|n| seen.insert(n.id));
    all.truncate(k);
    all
}

/// A sharded index with every shard open in this process (all shards on local disk).
#[derive(Debug)]
pub struct ShardedIndex {
    router: ShardRouter,
    shards: Vec<Arc<Index>>,
}

impl ShardedIndex {
    /// Opens the sharded index in `dir`: `shards.m3`, then every shard (each checked against
    /// its entry and opened like any index).
    pub fn open(
        dir: &Path,
        backend: IoBackend,
        options: &ReaderOptions,
    ) -> Result<Self, SearchError> {
        let router = ShardRouter::open(dir, backend, options)?;
        let mut shards = vec![router.router.clone()];
        for s in 1..router.n_shards() {
            shards.push(Arc::new(open_shard(
                dir,
                &router.table,
                s,
                backend,
                options,
            )?));
        }
        Ok(Self { router, shards })
    }

    /// The router.
    pub fn router(&self) -> &ShardRouter {
        &self.router
    }

    /// Shard `s`, open.
    pub fn shard(&self, s: usize) -> &Index {
        &self.shards[s]
    }

    /// Shard `s`, shared (shard 0 holds the global parts the router uses).
    pub fn shard_arc(&self, s: usize) -> Arc<Index> {
        self.shards[s].clone()
    }

    /// Shards S.
    pub fn n_shards(&self) -> usize {
        self.shards.len()
    }

    /// One searcher per shard (searcher 0 also routes).
    pub fn searchers(&self) -> Vec<Searcher<'_>> {
        self.shards.iter().map(|i| Searcher::new(i)).collect()
    }

    /// The `k` nearest of `q` (ids and internal distances, best first): routed, sent to the
    /// shards that must see it, merged. `searchers` from [`Self::searchers`].
    pub fn search(
        &self,
        searchers: &mut [Searcher<'_>],
        qi: usize,
        q: &[f32],
        params: &SearchParams,
    ) -> Result<(Vec<Neighbor>, ShardedStats), SearchError> {
        let shards = self.router.shards_for(&mut searchers[0], qi, q, params)?;
        let mut lists = Vec::with_capacity(shards.len());
        let mut stats = ShardedStats::default();
        for &s in &shards {
            let (res, st) = searchers[s].search(qi, q, params)?;
            stats.query += st;
            stats.bytes_moved += RESULT_BYTES * res.len() as u64;
            lists.push(res);
        }
        stats.shards_touched = shards.len() as u64;
        stats.bytes_moved += shards.len() as u64 * (4 * q.len() as u64 + REQUEST_KNOB_BYTES);
        Ok((merge_answers(&lists, params.k), stats))
    }

    /// The exact `k` nearest of `q`: every shard's exact answer, merged.
    pub fn exact(&self, q: &[f32], k: usize) -> Result<(Vec<Neighbor>, ShardedStats), SearchError> {
        self.fan_out(q, |ex| ex.knn(q, k), k)
    }

    /// Every vector within `radius` of `q` (the metric's natural unit, as
    /// [`ExactSearcher::range`]): every shard's answer, merged.
    pub fn range(
        &self,
        q: &[f32],
        radius: f32,
    ) -> Result<(Vec<Neighbor>, ShardedStats), SearchError> {
        self.fan_out(q, |ex| ex.range(q, radius), usize::MAX)
    }

    fn fan_out(
        &self,
        q: &[f32],
        mut run: impl FnMut(&mut ExactSearcher<'_>) -> Result<(Vec<Neighbor>, QueryStats), SearchError>,
        k: usize,
    ) -> Result<(Vec<Neighbor>, ShardedStats), SearchError> {
        let mut lists = Vec::with_capacity(self.shards.len());
        let mut stats = ShardedStats::default();
        for idx in &self.shards {
            let (res, st) = run(&mut ExactSearcher::new(idx))?;
            stats.query += st;
            stats.bytes_moved += RESULT_BYTES * res.len() as u64;
            lists.push(res);
        }
        stats.shards_touched = self.shards.len() as u64;
        stats.bytes_moved += self.shards.len() as u64 * (4 * q.len() as u64 + REQUEST_KNOB_BYTES);
        Ok((merge_answers(&lists, k), stats))
    }
}

/// Answers, costs and latencies of a batch on a sharded index.
#[derive(Debug)]
pub struct ShardedBatch {
    /// The answers of every query, in query order (ids and internal distances, best first).
    pub results: Vec<Vec<Neighbor>>,
    /// What each query cost.
    pub stats: Vec<ShardedStats>,
    /// Each query's latency, microseconds.
    pub latencies_us: Vec<f64>,
    /// Wall time of the whole batch.
    pub seconds: f64,
}

/// One query's answer, cost and latency (µs).
type Outcome = Result<(Vec<Neighbor>, ShardedStats, f64), SearchError>;

/// Searches every row of `queries` on `pool` (each worker thread routes and asks the shards
/// one query at a time), or exactly with `exact_k`. Fails with the first query's error.
pub fn search_sharded_batch(
    index: &ShardedIndex,
    queries: crate::data::MatrixView<'_, f32>,
    params: &SearchParams,
    exact_k: Option<usize>,
    pool: &rayon::ThreadPool,
) -> Result<ShardedBatch, SearchError> {
    use rayon::prelude::*;
    let start = std::time::Instant::now();
    let outcomes: Vec<Outcome> = pool.install(|| {
        (0..queries.rows())
            .into_par_iter()
            .map_init(
                || index.searchers(),
                |searchers, qi| {
                    let t = std::time::Instant::now();
                    let q = queries.row(qi);
                    let (r, st) = match exact_k {
                        Some(k) => index.exact(q, k)?,
                        None => index.search(searchers, qi, q, params)?,
                    };
                    Ok((r, st, t.elapsed().as_secs_f64() * 1e6))
                },
            )
            .collect()
    });
    let seconds = start.elapsed().as_secs_f64();
    let mut batch = ShardedBatch {
        results: Vec::with_capacity(outcomes.len()),
        stats: Vec::with_capacity(outcomes.len()),
        latencies_us: Vec::with_capacity(outcomes.len()),
        seconds,
    };
    for o in outcomes {
        let (r, st, us) = o?;
        batch.results.push(r);
        batch.stats.push(st);
        batch.latencies_us.push(us);
    }
    Ok(batch)
}

//! A sharded index (docs/DISTRIBUTED.md): `shards.m3` and one normal index directory per shard.
//! The router ranks the query's clusters and training queries with the global RAM parts
//! (anchors, query anchors and edges, training queries; byte-identical in every shard, read
//! from shard 0) exactly as the unsharded index does ([`Searcher::route_plan`]), sends the
//! query only to the shards that own a probed cluster or store an answer of one of its
//! training queries, each shard runs the whole query on its own records (PQ scan, reads and
//! rerank of its best candidates), and the router merges the top k. Exact and range search
//! fan out by the clusters' metric bounds ([`ExactSearcher::cluster_bounds`]: the global
//! centroids and each cluster's radii from its owning shard): range search asks the shards
//! with a cluster whose bound is within the radius; exact k-NN asks the shard with the best
//! bound, then only the shards whose bound can beat the k-th distance it returned. A shard
//! left out holds nothing that could enter the answer, so both equal the unsharded answer.
//!
//! [`ShardRouter`] is the router alone (what a caller that reaches the shards over a network,
//! e.g. Ray actors, needs); [`ShardedIndex`] opens every shard in this process.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{ExactQuery, ExactSearcher, Index, QueryStats, SearchError, SearchParams, Searcher};
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
    /// Per cluster, `[r_min, r_max]` from its owning shard's `clusters.m3` (`None`: empty).
    radii: Vec<Option<[f32; 2]>>,
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
        let radii = cluster_radii(dir, &table)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            table,
            router,
            radii,
        })
    }

    /// The shards holding records, each with its lower bound on the distance from `q` to
    /// any of its vectors (internal units; the smallest bound of its clusters), ascending by
    /// (bound, shard). `ex` is an exact searcher of [`Self::index`].
    pub fn shard_bounds(
        &self,
        ex: &mut ExactSearcher<'_>,
        q: &[f32],
    ) -> Result<Vec<(usize, f32)>, SearchError> {
        let bounds = ex.cluster_bounds(q, &self.radii)?;
        let mut best: Vec<Option<f32>> = vec![None; self.n_shards()];
        for (c, &b) in bounds.iter().enumerate() {
            if self.radii[c].is_some() {
                let s = self.table.owners[c] as usize;
                best[s] = Some(best[s].map_or(b, |x: f32| x.min(b)));
            }
        }
        let mut order: Vec<(usize, f32)> = best
            .iter()
            .enumerate()
            .filter_map(|(s, b)| b.map(|b| (s, b)))
            .collect();
        order.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        Ok(order)
    }

    /// The shards a range query must ask (ascending): those with a cluster whose bound is
    /// within `radius` (the metric's natural unit, as [`ExactSearcher::range`]).
    pub fn range_shards(
        &self,
        ex: &mut ExactSearcher<'_>,
        q: &[f32],
        radius: f32,
    ) -> Result<Vec<usize>, SearchError> {
        if radius.is_nan() {
            return Err(SearchError::Param {
                name: "radius",
                what: "radius is NaN".into(),
            });
        }
        let r = self.router.metric().from_natural(radius);
        let mut shards: Vec<usize> = self
            .shard_bounds(ex, q)?
            .into_iter()
            .filter(|&(_, b)| b <= r)
            .map(|(s, _)| s)
            .collect();
        shards.sort_unstable();
        Ok(shards)
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

/// The second round of exact k-NN: after the first shard of `order` (from
/// [`ShardRouter::shard_bounds`]) answered with `kth` as its k-th distance (internal units,
/// `+∞` when it returned fewer than k), the other shards whose bound can still beat it.
pub fn exact_second_round(order: &[(usize, f32)], kth: f32) -> Vec<usize> {
    order
        .iter()
        .skip(1)
        .filter(|&&(_, b)| b <= kth)
        .map(|&(s, _)| s)
        .collect()
}

/// Per cluster, its radii from the shard that owns it (`None` when it holds no record); each
/// shard's manifest is checked against `shards.m3` first.
fn cluster_radii(dir: &Path, table: &ShardTable) -> Result<Vec<Option<[f32; 2]>>, SearchError> {
    let mut radii = vec![None; table.owners.len()];
    for s in 0..table.n_shards() {
        let path = check_shard(dir, table, s)?.join(crate::format::files::CLUSTERS_FILE);
        let clusters = crate::format::ClusterTable::read(&path)?;
        if clusters.entries.len() != radii.len() {
            return Err(FormatError::corrupt(
                path,
                0,
                format!(
                    "{} clusters; shards.m3 says {}",
                    clusters.entries.len(),
                    radii.len()
                ),
            )
            .into());
        }
        for (c, e) in clusters.entries.iter().enumerate() {
            if table.owners[c] as usize == s && e.records > 0 {
                radii[c] = Some([e.r_min, e.r_max]);
            }
        }
    }
    Ok(radii)
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
    /// Where a query's shards run concurrently (`None`: one after the other).
    fanout: Option<Arc<rayon::ThreadPool>>,
}

/// One shard's answer and cost.
type ShardAnswer = Result<(Vec<Neighbor>, QueryStats), SearchError>;

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
        Ok(Self {
            router,
            shards,
            fanout: None,
        })
    }

    /// Runs the shards of each query concurrently on a pool of `threads` threads, shared by
    /// every caller (`threads` ≤ 1: one after the other, on the caller's thread). Answers
    /// do not depend on it.
    pub fn set_fanout_threads(&mut self, threads: usize) -> Result<(), SearchError> {
        self.fanout = if threads <= 1 {
            None
        } else {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("m3-shards-{i}"))
                .build()
                .map_err(|e| SearchError::Param {
                    name: "fanout_threads",
                    what: format!("cannot start {threads} threads: {e}"),
                })?;
            Some(Arc::new(pool))
        };
        Ok(())
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
        let mut asked: Vec<&mut Searcher<'_>> = searchers
            .iter_mut()
            .enumerate()
            .filter(|(s, _)| shards.contains(s))
            .map(|(_, se)| se)
            .collect();
        let answers: Vec<ShardAnswer> = match &self.fanout {
            Some(pool) if asked.len() > 1 => pool.install(|| {
                use rayon::prelude::*;
                asked
                    .par_iter_mut()
                    .map(|se| se.search(qi, q, params))
                    .collect()
            }),
            _ => asked
                .iter_mut()
                .map(|se| se.search(qi, q, params))
                .collect(),
        };
        let mut stats = ShardedStats::default();
        let lists = gather(answers, q, &mut stats)?;
        Ok((merge_answers(&lists, params.k), stats))
    }

    /// The exact `k` nearest of `q`: the shard with the best bound first, then every other
    /// shard whose bound can beat its k-th distance ([`exact_second_round`]), each searching
    /// within that distance only ([`ExactSearcher::knn_within`]), merged.
    pub fn exact(&self, q: &[f32], k: usize) -> Result<(Vec<Neighbor>, ShardedStats), SearchError> {
        let mut ex = ExactSearcher::new(&self.shards[0]);
        let order = self.router.shard_bounds(&mut ex, q)?;
        let first = order.first().map_or(0, |&(s, _)| s);
        let mut stats = ShardedStats::default();
        let mut lists = gather(
            self.ask(&[first], |idx| ExactSearcher::new(idx).knn(q, k)),
            q,
            &mut stats,
        )?;
        let kth = lists[0].get(k - 1).map_or(f32::INFINITY, |n| n.dist);
        let rest = exact_second_round(&order, kth);
        let more = self.ask(&rest, |idx| ExactSearcher::new(idx).knn_within(q, k, kth));
        lists.extend(gather(more, q, &mut stats)?);
        Ok((merge_answers(&lists, k), stats))
    }

    /// Every vector within `radius` of `q` (the metric's natural unit, as
    /// [`ExactSearcher::range`]): the answers of the shards [`ShardRouter::range_shards`]
    /// names, merged.
    pub fn range(
        &self,
        q: &[f32],
        radius: f32,
    ) -> Result<(Vec<Neighbor>, ShardedStats), SearchError> {
        let mut ex = ExactSearcher::new(&self.shards[0]);
        let shards = self.router.range_shards(&mut ex, q, radius)?;
        let mut stats = ShardedStats::default();
        let answers = self.ask(&shards, |idx| ExactSearcher::new(idx).range(q, radius));
        let lists = gather(answers, q, &mut stats)?;
        Ok((merge_answers(&lists, usize::MAX), stats))
    }

    /// `run` on each of `shards`, concurrently on the fan-out pool when there is one.
    fn ask(
        &self,
        shards: &[usize],
        run: impl Fn(&Index) -> ShardAnswer + Sync,
    ) -> Vec<ShardAnswer> {
        match &self.fanout {
            Some(pool) if shards.len() > 1 => pool.install(|| {
                use rayon::prelude::*;
                shards.par_iter().map(|&s| run(&self.shards[s])).collect()
            }),
            _ => shards.iter().map(|&s| run(&self.shards[s])).collect(),
        }
    }
}

/// The shards' answers (the first error fails the query), their costs added to `stats`
/// with the payload of each request and answer.
fn gather(
    answers: Vec<ShardAnswer>,
    q: &[f32],
    stats: &mut ShardedStats,
) -> Result<Vec<Vec<Neighbor>>, SearchError> {
    let mut lists = Vec::with_capacity(answers.len());
    for a in answers {
        let (res, st) = a?;
        stats.query += st;
        stats.shards_touched += 1;
        stats.bytes_moved += 4 * q.len() as u64 + REQUEST_KNOB_BYTES;
        stats.bytes_moved += RESULT_BYTES * res.len() as u64;
        lists.push(res);
    }
    Ok(lists)
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
/// one query at a time), or exactly (k-NN or range) with `exact`. Fails with the first
/// query's error.
pub fn search_sharded_batch(
    index: &ShardedIndex,
    queries: crate::data::MatrixView<'_, f32>,
    params: &SearchParams,
    exact: Option<ExactQuery>,
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
                    let (r, st) = match exact {
                        Some(ExactQuery::Knn(k)) => index.exact(q, k)?,
                        Some(ExactQuery::Range(radius)) => index.range(q, radius)?,
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

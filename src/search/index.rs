//! An open index: the RAM-resident parts (anchors, routing, statistics, PQ codes) and a block
//! reader on `data.m3`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use super::SearchError;
use super::blocks::IndexBlocks;
use crate::data::Matrix;
use crate::distance::Metric;
use crate::format::verify::DATA_FILE;
use crate::format::{
    ClusterEntry, CoarseLevel, FormatError, IndexMeta, IndexParts, ListedFile, PqFile, RecordCodec,
    RecordKeys, RecordLayout, Routing, SECTOR_BYTES, Stats,
};
use crate::io::{BlockReader, IoBackend, ReaderOptions, open_reader};
use crate::pq::ProductQuantizer;

use super::route::{AnchorOrder, DEFAULT_ROUTE_MIN_K, Router};

/// A searchable index. Cheap to share across threads (`&Index` is all a query needs).
#[derive(Debug)]
pub struct Index {
    pub(super) dir: PathBuf,
    pub(super) meta: IndexMeta,
    pub(super) metric: Metric,
    pub(super) dim: usize,
    pub(super) centroids: Matrix<f32>,
    pub(super) centroid_norms: Vec<f32>,
    pub(super) entries: Vec<ClusterEntry>,
    pub(super) routing: Routing,
    pub(super) stats: Stats,
    pub(super) pq: ProductQuantizer,
    pub(super) codes: Matrix<u8>,
    pub(super) correction: Vec<f32>,
    pub(super) codec: RecordCodec,
    pub(super) layout: RecordLayout,
    pub(super) reader: Arc<dyn BlockReader>,
    /// Ranks base anchors (two levels when there are many) and query-modality anchors.
    pub(super) router: Router,
    pub(super) query_router: Router,
    /// The base anchors' stored coarse level (`coarse.m3`), if the index has one.
    pub(super) coarse: Option<CoarseLevel>,
    /// The blocks of a multi-vector index.
    pub(super) blocks: Option<IndexBlocks>,
    /// `keys.m3` (format 1.1), checked at open and held open for exact search.
    pub(super) keys_file: Option<ListedFile>,
    /// `pq.m3`, checked at open and held open for exact search's per-record errors.
    pub(super) pq_file: ListedFile,
    /// What exact and range search need besides the above, loaded at their first use.
    pub(super) exact: OnceLock<ExactAux>,
    /// A bound on the norm of every vector a query is compared with, in stored coordinates:
    /// records (`stats.m3`'s `max_base_norm`), PQ reconstructions, base and query anchors,
    /// coarse centres. [`Index::check_query`] uses it to refuse queries whose distances
    /// could overflow.
    pub(super) norm_bound: f64,
}

/// Per-record data only exact and range search use (DESIGN §4.5); not in RAM until then.
#[derive(Debug)]
pub(super) struct ExactAux {
    /// Each record's distance to its centroid (`keys.m3`); `None` for an index without it.
    pub(super) keys: Option<Vec<f32>>,
    /// Each record's PQ reconstruction error `|x − x̂|` (`pq.m3`).
    pub(super) error: Vec<f32>,
}

impl Index {
    /// Opens `dir`: checks the manifest and every header, loads the RAM-resident parts and
    /// opens `data.m3` for direct reads with `backend`.
    pub fn open(
        dir: &Path,
        backend: IoBackend,
        options: &ReaderOptions,
    ) -> Result<Self, SearchError> {
        Self::load(dir, |data_path| {
            Ok(open_reader(data_path, backend, options)?)
        })
    }

    /// Opens `dir` like [`Index::open`] but reads `data.m3` through `reader` (e.g. a
    /// [`crate::io::FaultyReader`] in tests, or a reader opened with custom options). The reader
    /// must read this index's `data.m3`: its length is checked against the manifest.
    pub fn open_with_reader(dir: &Path, reader: Arc<dyn BlockReader>) -> Result<Self, SearchError> {
        Self::load(dir, |_| Ok(reader))
    }

    fn load(
        dir: &Path,
        open_data: impl FnOnce(&Path) -> Result<Arc<dyn BlockReader>, SearchError>,
    ) -> Result<Self, SearchError> {
        let parts = IndexParts::open(dir)?;
        let meta = parts.manifest.meta;
        let metric = meta.metric().ok_or_else(|| {
            FormatError::corrupt(dir.join("manifest.m3"), 0, "unknown metric code")
        })?;
        let dim = meta.dim as usize;
        let pq_path = &parts.pq_file.path;
        let bounds: Vec<usize> = parts.pq.bounds.iter().map(|&b| b as usize).collect();
        let pq = ProductQuantizer::from_parts(dim, bounds, parts.pq.codebooks.clone())
            .map_err(|e| FormatError::corrupt(pq_path, 0, e.to_string()))?;
        let data_path = dir.join(DATA_FILE);
        let reader = open_data(&data_path)?;
        let data_bytes = (meta.data_sectors + 1) * SECTOR_BYTES as u64;
        if reader.len_bytes() < data_bytes {
            return Err(FormatError::corrupt(
                reader.path(),
                reader.len_bytes(),
                format!(
                    "data file has {} bytes, the manifest needs {data_bytes}",
                    reader.len_bytes()
                ),
            )
            .into());
        }
        let clusters = parts.clusters;
        let centroid_norms = crate::linalg::row_norms_sq(clusters.centroids.view());
        let blocks = match parts.blocks {
            Some(table) => Some(IndexBlocks::new(
                table,
                pq_path,
                metric,
                &pq,
                &parts.pq.codes,
                &clusters.centroids,
                &clusters.entries,
            )?),
            None => None,
        };
        let norm_bound = norm_bound(
            &parts.stats,
            &clusters.centroids,
            &parts.routing,
            parts.coarse.as_ref(),
            &pq,
        );
        // Two-level routing from the stored coarse level; an index without one (older, or
        // K below the build's threshold) builds it here when K is large.
        let coarse = parts.coarse;
        let router = base_router(
            &clusters.centroids,
            metric,
            coarse.as_ref(),
            DEFAULT_ROUTE_MIN_K,
        );
        let routing = parts.routing;
        let query_router =
            Router::new(routing.anchors.view(), AnchorOrder::L2, DEFAULT_ROUTE_MIN_K);
        let header = parts.data_header;
        Ok(Self {
            router,
            query_router,
            coarse,
            dir: dir.to_path_buf(),
            meta,
            metric,
            dim,
            centroids: clusters.centroids,
            centroid_norms,
            entries: clusters.entries,
            routing,
            stats: parts.stats,
            pq,
            codes: parts.pq.codes,
            correction: parts.pq.correction,
            // Every record read is checked: id below n_vectors, neighbours below n_records.
            codec: header.codec()?.with_n_vectors(meta.n_vectors),
            layout: header.layout(),
            reader,
            keys_file: parts.keys_file,
            pq_file: parts.pq_file,
            exact: OnceLock::new(),
            blocks,
            norm_bound,
        })
    }

    /// Routes in two levels from `min_k` anchors on (base and query-modality anchors alike;
    /// `usize::MAX`: always score every anchor). Rebuilds the routers.
    pub fn set_route_min_k(&mut self, min_k: usize) {
        self.router = base_router(&self.centroids, self.metric, self.coarse.as_ref(), min_k);
        self.query_router = Router::new(self.routing.anchors.view(), AnchorOrder::L2, min_k);
    }

    /// Whether base anchors are routed in two levels.
    pub fn routes_in_two_levels(&self) -> bool {
        self.router.is_two_level()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn meta(&self) -> &IndexMeta {
        &self.meta
    }
    pub fn metric(&self) -> Metric {
        self.metric
    }
    pub fn dim(&self) -> usize {
        self.dim
    }
    pub fn n_vectors(&self) -> u64 {
        self.meta.n_vectors
    }
    pub fn n_clusters(&self) -> usize {
        self.entries.len()
    }
    pub fn n_query_anchors(&self) -> usize {
        self.routing.anchors.rows()
    }
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    pub fn reader_info(&self) -> &crate::io::ReaderInfo {
        self.reader.info()
    }

    /// The blocks of a multi-vector index (`None` for a single-vector index).
    pub fn blocks(&self) -> Option<&crate::format::BlockTable> {
        self.blocks.as_ref().map(|b| &b.table)
    }

    /// Block weights for [`super::SearchParams::block_weights`] from `(name, weight)` pairs
    /// and the blocks a query gives (`present[b]`): a named weight must belong to a present
    /// block; a present block without one gets its build weight; an absent block gets 0.
    pub fn block_weights(
        &self,
        given: &[(String, f32)],
        present: &[bool],
    ) -> Result<Vec<f32>, SearchError> {
        let Some(b) = &self.blocks else {
            return Err(SearchError::Param {
                name: "block_weights",
                what: "the index has no blocks (built from a single --base)".into(),
            });
        };
        let build = b.table.weights();
        let w = b.layout.weights(given, |i| {
            if present.get(i) == Some(&true) {
                build[i]
            } else {
                0.0
            }
        })?;
        for (name, v) in given {
            let i = b.layout.position(name)?;
            if *v > 0.0 && present.get(i) != Some(&true) {
                return Err(SearchError::Param {
                    name: "block_weights",
                    what: format!("block '{name}' has a weight but no query block"),
                });
            }
        }
        Ok(w)
    }

    /// Bytes held in RAM for searching (anchors, routers, routing, PQ codebooks, codes,
    /// corrections).
    pub fn ram_bytes(&self) -> u64 {
        (self.centroids.as_slice().len() * 4
            + self.router.heap_bytes()
            + self.query_router.heap_bytes()
            + self.entries.len() * 32
            + self.routing.anchors.as_slice().len() * 4
            + self.routing.edges.as_slice().len() * 4
            + self.pq.codebooks().len() * 4
            + self.codes.as_slice().len()
            + self.correction.len() * 4
            + self
                .blocks
                .as_ref()
                .and_then(|b| b.corrections.as_ref())
                .map_or(0, |c| c.as_slice().len() * 4)) as u64
    }

    /// The rerank distance stored in the manifest by calibration (`m3 calibrate`, `m3 build
    /// --distance auto`): LC-CMD with its (α, β), or the native metric.
    pub fn calibrated_distance(&self) -> super::RerankDistance {
        if self.meta.distance_mode == 1 {
            super::RerankDistance::LcCmd {
                alpha: self.meta.lccmd_alpha,
                beta: self.meta.lccmd_beta,
            }
        } else {
            super::RerankDistance::Native
        }
    }

    /// Data sectors of `data.m3` (what a full scan reads).
    pub fn data_sectors(&self) -> u64 {
        self.meta.data_sectors
    }

    /// Bytes exact and range search add in RAM once used (keys and PQ errors: 8 per record).
    pub fn exact_ram_bytes(&self) -> u64 {
        self.meta.n_records * if self.keys_file.is_some() { 8 } else { 4 }
    }

    /// Loads (once) what exact and range search need: record keys and PQ errors.
    pub(super) fn exact_aux(&self) -> Result<&ExactAux, SearchError> {
        if let Some(aux) = self.exact.get() {
            return Ok(aux);
        }
        // Both files were checked whole at open and held open since.
        let keys = match &self.keys_file {
            Some(f) => {
                let keys = RecordKeys::reread_listed(f)?;
                keys.check_against(&self.meta, &self.entries, &f.path)?;
                Some(keys.keys)
            }
            None => None,
        };
        let error = PqFile::read_error_listed(&self.pq_file)?;
        if error.len() as u64 != self.meta.n_records {
            return Err(FormatError::corrupt(
                &self.pq_file.path,
                0,
                format!(
                    "{} PQ errors for {} records",
                    error.len(),
                    self.meta.n_records
                ),
            )
            .into());
        }
        // Another thread may have loaded it meanwhile; either copy is the same.
        let _ = self.exact.set(ExactAux { keys, error });
        Ok(self.exact.get().expect("just set"))
    }

    /// Checks a query vector against the index for any way of scoring it (native metric or
    /// LC-CMD at any α, β; the build's block weights): see [`Index::check_query_as`]. `qi`
    /// names the query in errors.
    pub fn check_query(&self, qi: usize, q: &[f32]) -> Result<(), SearchError> {
        self.check_query_as(qi, q, QueryScoring::ANY)
    }

    /// Checks a query vector against the index, scored as `scoring` says: dimension, finite
    /// components, under cosine a direction that f32 can normalise, and a norm small enough
    /// that no distance overflows.
    ///
    /// The bound: with `|q'|` the norm of the query in stored coordinates (`|q|`; 1 under
    /// cosine; for blocks the block scales applied), `B` a bound on the norm of every vector
    /// it is compared with ([`Index::norm_bound`]) and `F` the largest factor on a squared
    /// distance (the largest LC-CMD weight, times the largest block factor ω_b), every squared
    /// distance is at most `F · (|q'| + B)²` (triangle inequality; `|q·x| ≤ |q||x|` for inner
    /// products), and the query is refused unless that is at most `f32::MAX / 64` — the
    /// headroom for the few distances a score or bound adds up. Under cosine each normalised
    /// part needs `f32::MIN_POSITIVE ≤ |q_b|² ≤ f32::MAX / 64` to be normalised in f32.
    pub fn check_query_as(
        &self,
        qi: usize,
        q: &[f32],
        scoring: QueryScoring<'_>,
    ) -> Result<(), SearchError> {
        if q.len() != self.dim {
            return Err(SearchError::QueryDim {
                expected: self.dim,
                found: q.len(),
            });
        }
        if let Some((col, &value)) = q.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(SearchError::NonFinite {
                query: qi,
                col,
                value,
            });
        }
        let cosine = self.metric == Metric::Cosine;
        if cosine && q.iter().all(|&v| v == 0.0) {
            return Err(SearchError::ZeroQuery { query: qi });
        }
        let sq = |v: &[f32]| v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>();
        let norm = sq(q).sqrt();
        let refuse = |min: f64, max: f64| SearchError::QueryNorm {
            query: qi,
            norm,
            min,
            max,
            data_norm: self.norm_bound,
        };
        // Parts normalised in f32 (the whole query, or each present block, under cosine).
        let (lo, hi) = (f64::from(f32::MIN_POSITIVE).sqrt(), MAX_DIST_SQ.sqrt());
        let normalisable = |part: &[f32]| {
            let n = sq(part).sqrt();
            if n == 0.0 {
                Err(SearchError::ZeroQuery { query: qi })
            } else if n < lo || n > hi {
                Err(refuse(lo, hi))
            } else {
                Ok(())
            }
        };
        let mut factor = 1.0f64;
        match scoring.lccmd {
            Some((alpha, beta)) => {
                let w = super::params::lccmd_weights(&self.stats, alpha, beta)?;
                factor *= w.iter().fold(0.0f64, |m, &v| m.max(f64::from(v)));
            }
            // Each weight is (1 − β) + β·w_k/mean(w) ≤ dim, for any α, β in [0, 1].
            None if scoring.any_lccmd && self.stats.has_query_stats => factor *= self.dim as f64,
            None => {}
        }
        // The query's norm in stored coordinates, as a multiple of |q| (`per_norm`) or fixed.
        let (per_norm, fixed) = match &self.blocks {
            Some(b) => {
                let w = b.weighting(scoring.block_weights);
                factor *= f64::from(w.omega_max);
                let (mut scaled, mut unit) = (0.0f64, 0.0f64);
                for &i in &w.present {
                    let part = &q[b.layout.blocks()[i].range()];
                    let c = f64::from(b.scales[i]);
                    if cosine {
                        normalisable(part)?;
                        unit += c * c;
                    } else {
                        scaled = scaled.max(c);
                    }
                }
                (scaled, unit.sqrt())
            }
            None if cosine => {
                normalisable(q)?;
                (0.0, 1.0)
            }
            None => (1.0, 0.0),
        };
        // F · (per_norm·|q| + fixed + B)² ≤ MAX_DIST_SQ.
        let room = (MAX_DIST_SQ / factor).sqrt() - fixed - self.norm_bound;
        let max = if per_norm > 0.0 {
            (room / per_norm).min(hi)
        } else if room >= 0.0 {
            hi
        } else {
            0.0
        };
        let min = if cosine && self.blocks.is_none() {
            lo
        } else {
            0.0
        };
        if !(room >= 0.0 && norm <= max && norm * norm <= MAX_DIST_SQ) {
            return Err(refuse(min, max.max(0.0)));
        }
        Ok(())
    }

    /// A bound on the norm of every vector a query is compared with, in stored coordinates
    /// (see [`Index::check_query_as`]).
    pub fn norm_bound(&self) -> f64 {
        self.norm_bound
    }

    /// Cluster of a global record index.
    pub(super) fn cluster_of(&self, record: u32) -> usize {
        self.entries
            .partition_point(|e| e.first_record <= record as u64)
            .saturating_sub(1)
    }
}

/// Largest squared distance a query may produce ([`Index::check_query_as`]): f32's largest
/// value with a factor 64 of headroom for the few distances a score or a bound adds.
const MAX_DIST_SQ: f64 = f32::MAX as f64 / 64.0;

/// How a query will be scored, for [`Index::check_query_as`].
#[derive(Debug, Clone, Copy)]
pub struct QueryScoring<'a> {
    /// The query's block weights (multi-vector indexes; `None`: the build weights).
    pub block_weights: Option<&'a [f32]>,
    /// The LC-CMD (α, β) of the rerank, if it uses LC-CMD.
    pub lccmd: Option<(f32, f32)>,
    /// Without `lccmd`: allow for LC-CMD at any (α, β) (the largest weight is at most `dim`).
    pub any_lccmd: bool,
}

impl QueryScoring<'_> {
    /// Any scoring the index supports, with the build's block weights.
    pub const ANY: QueryScoring<'static> = QueryScoring {
        block_weights: None,
        lccmd: None,
        any_lccmd: true,
    };
}

/// The bound on stored norms of [`Index::norm_bound`]: the largest of `max_base_norm`, every
/// query anchor and coarse centre, and every PQ reconstruction (a centroid plus one codeword
/// per subspace: at most the largest centroid plus the largest codeword of each subspace).
/// Computed in f64, so huge stored values give a huge bound rather than an overflow.
fn norm_bound(
    stats: &Stats,
    centroids: &Matrix<f32>,
    routing: &Routing,
    coarse: Option<&CoarseLevel>,
    pq: &ProductQuantizer,
) -> f64 {
    let row_norm = |r: &[f32]| {
        r.iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            .sqrt()
    };
    let max_row = |m: &Matrix<f32>| {
        (0..m.rows())
            .map(|i| row_norm(m.row(i)))
            .fold(0.0, f64::max)
    };
    let bounds = pq.bounds();
    let codebooks = pq.codebooks();
    let cw = crate::format::pq::PQ_CODEWORDS as usize;
    let codewords: f64 = bounds
        .windows(2)
        .map(|b| {
            let width = b[1] - b[0];
            codebooks[b[0] * cw..b[1] * cw]
                .chunks_exact(width)
                .map(row_norm)
                .fold(0.0, f64::max)
        })
        .sum();
    [
        f64::from(stats.max_base_norm),
        max_row(centroids) + codewords,
        max_row(&routing.anchors),
        coarse.map_or(0.0, |c| max_row(&c.coarse)),
    ]
    .into_iter()
    .fold(0.0, f64::max)
}

/// The router over the base anchors: the stored coarse level when there is one and K reaches
/// `min_k`, else [`Router::new`] (exact below `min_k`, a coarse level built now above).
fn base_router(
    centroids: &Matrix<f32>,
    metric: Metric,
    coarse: Option<&CoarseLevel>,
    min_k: usize,
) -> Router {
    match coarse {
        Some(c) if centroids.rows() >= min_k.max(2) => Router::from_stored(
            centroids.view(),
            base_order(metric),
            c.coarse.clone(),
            &c.labels,
            c.probe as usize,
        ),
        _ => Router::new(centroids.view(), base_order(metric), min_k),
    }
}

/// The anchor order of the base anchors: squared L2 distance under L2, `−q·c` otherwise.
pub fn base_order(metric: Metric) -> AnchorOrder {
    match metric {
        Metric::L2 => AnchorOrder::L2Expanded,
        _ => AnchorOrder::InnerProduct,
    }
}

//! An open index: the RAM-resident parts (anchors, routing, statistics, PQ codes) and a block
//! reader on `data.m3`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use super::SearchError;
use super::blocks::IndexBlocks;
use crate::data::Matrix;
use crate::distance::Metric;
use crate::format::files::DATA_FILE;
use crate::format::{
    ClusterEntry, CoarseLevel, FormatError, Hints, IndexMeta, IndexParts, ListedFile, PqFile,
    RecordCodec, RecordKeys, RecordLayout, Routing, SECTOR_BYTES, Stats,
};
use crate::io::{BlockReader, IoBackend, ReaderOptions, open_reader};
use crate::pq::ProductQuantizer;

use super::hints::HintCodes;
use crate::route::{AnchorOrder, DEFAULT_ROUTE_MIN_K, Router};

/// A searchable index. Cheap to share across threads (`&Index` is all a query needs).
///
/// An `Index` is one *generation* of the index: the published files plus the live updates
/// committed when it was made. It never changes under a query; [`crate::LiveIndex`] holds the
/// latest generation and swaps in a new one after each commit. The parts that never change
/// (anchors, PQ codes, the reader of `data.m3`, ...) are shared by every generation
/// ([`IndexCore`], reached through `Deref`).
#[derive(Debug)]
pub struct Index {
    pub(super) core: Arc<IndexCore>,
    /// Ranks base anchors (two levels when there are many) and query-modality anchors.
    pub(super) router: Router,
    pub(super) query_router: Router,
    pub(super) hint_router: Option<Router>,
    /// The training queries in PQ form, for the first pass of the hint search (`hints`).
    pub(super) hint_codes: Option<HintCodes>,
    /// The committed live updates (`wal.m3`, `delta.m3`) of this generation.
    pub(super) live: Arc<super::live::Live>,
    /// The record codec: ids are checked against the vids of this generation.
    pub(super) codec: RecordCodec,
    /// `data.m3`, or `data.m3` and `delta.m3` as one sector space once there are inserts.
    pub(super) reader: Arc<dyn BlockReader>,
    /// A bound on the norm of every vector a query is compared with, in stored coordinates:
    /// records (`stats.m3`'s `max_base_norm`, and the inserts), PQ reconstructions, base and
    /// query anchors, coarse centres. [`Index::check_query`] uses it to refuse queries whose
    /// distances could overflow.
    pub(super) norm_bound: f64,
}

/// What every generation of an open index shares: the published files as loaded at open.
#[derive(Debug)]
pub struct IndexCore {
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
    /// The refinement codes (`refine.m3`), if the index has them.
    pub(super) refine: Option<Refinement>,
    pub(super) layout: RecordLayout,
    /// The reader of `data.m3` alone.
    pub(super) data_reader: Arc<dyn BlockReader>,
    /// How `delta.m3` is read (each generation with inserts opens a reader on it).
    pub(super) delta_backend: IoBackend,
    pub(super) delta_options: ReaderOptions,
    /// CRC32C of `manifest.m3` when the index was opened: a log or a published generation
    /// naming another manifest needs a full reopen.
    pub(super) manifest_crc32c: u32,
    /// The base anchors' stored coarse level (`coarse.m3`), if the index has one.
    pub(super) coarse: Option<CoarseLevel>,
    /// The blocks of a multi-vector index.
    pub(super) blocks: Option<IndexBlocks>,
    /// A merged index (format 2.0): its non-empty clusters in the order of their
    /// `first_record` (clusters need not tile there), for [`Index::cluster_of`]. `None` for
    /// 1.x, whose clusters are in record order.
    pub(super) cluster_order: Option<Vec<u32>>,
    /// The data segments (`segments.m3`; for 1.x, `data.m3` alone) and the dead vids the
    /// published files name.
    pub(super) segments: crate::format::Segments,
    /// Training queries and their answers' records (`hints.m3`), if the index has them.
    pub(super) hints: Option<Hints>,
    /// The user id of every base vector (`ids.m3`); `None`: the ids are the row numbers.
    pub(super) user_ids: Option<Vec<u64>>,
    /// `keys.m3` (format 1.1), checked at open and held open for exact search.
    pub(super) keys_file: Option<ListedFile>,
    /// `pq.m3`, checked at open and held open for exact search's per-record errors.
    pub(super) pq_file: ListedFile,
    /// What exact and range search need besides the above, loaded at their first use.
    pub(super) exact: OnceLock<ExactAux>,
    /// The CRC32C of every data sector (`sectors.m3`): every sector a query reads is checked
    /// against it ([`super::read::ReadPlan::verify_sectors`]).
    pub(super) sector_crcs: Vec<u32>,
}

/// The router over the training queries of `hints.m3` and their PQ form, if the index has them.
fn hint_routing(
    hints: Option<&Hints>,
    metric: Metric,
    centroids: &Matrix<f32>,
    pq: &ProductQuantizer,
) -> (Option<Router>, Option<HintCodes>) {
    let router = hints.map(|h| {
        Router::new(
            h.queries.view(),
            AnchorOrder::training_queries(metric),
            DEFAULT_ROUTE_MIN_K,
        )
    });
    let codes = hints
        .zip(router.as_ref())
        .map(|(h, r)| HintCodes::encode(&h.queries, r, centroids, pq));
    (router, codes)
}

/// The published files of `dir` and the CRC32C of the manifest they were opened by (refused
/// if another manifest was published meanwhile).
fn open_parts(dir: &Path) -> Result<(IndexParts, u32), SearchError> {
    let manifest_path = dir.join(crate::format::files::MANIFEST_FILE);
    let before = crate::format::file_crc32c(&manifest_path);
    // A missing or bad index gets its typed error from here, not from the CRC's read.
    let parts = IndexParts::open(dir)?;
    let (_, manifest_crc32c) = before?;
    if crate::format::file_crc32c(&manifest_path)?.1 != manifest_crc32c {
        return Err(FormatError::corrupt(
            &manifest_path,
            0,
            "the manifest changed while the index was opened (a build or a compaction \
             published a new one): open it again",
        )
        .into());
    }
    Ok((parts, manifest_crc32c))
}

impl std::ops::Deref for Index {
    type Target = IndexCore;
    fn deref(&self) -> &IndexCore {
        &self.core
    }
}

/// The live updates of an open index (`wal.m3`, `delta.m3`; `docs/UPDATES.md`), as of when it
/// was opened: an index sees the commits made before it was opened (reopen to see later ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveInfo {
    /// Commits replayed (0: no live updates).
    pub generation: u64,
    /// Inserts committed (upserts included; some may be deleted or replaced since).
    pub inserted: u64,
    /// Tombstones: vectors deleted or replaced (base and inserted).
    pub tombstones: u64,
    /// Vectors a search can return.
    pub live_vectors: u64,
    /// Bytes of `delta.m3`.
    pub delta_bytes: u64,
    /// Committed inserts whose coding `delta_codes.m3` did not hold (missing, damaged or
    /// behind the log), coded again from `delta.m3` when the index was opened or refreshed.
    pub coded_again: u64,
    /// What replay cut from the end of the log (a batch never committed, a torn or corrupt
    /// tail), if anything; never replayed.
    pub wal_cut: Option<crate::format::WalTail>,
}

impl LiveInfo {
    /// The `live` object of `m3 inspect --json` and of the server's `GET /v1/index`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "generation": self.generation,
            "inserted": self.inserted,
            "tombstones": self.tombstones,
            "live_vectors": self.live_vectors,
            "delta_bytes": self.delta_bytes,
            "coded_again": self.coded_again,
            "wal_cut_bytes": self.wal_cut.as_ref().map_or(0, |t| t.bytes),
        })
    }
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
        Self::open_placing(dir, backend, options, true)
    }

    /// [`Index::open`] with pread for an [`crate::update::IndexWriter`]: the live state without
    /// the inserts' spill copies (decision 0014), which only searches and merges use; a
    /// writer never searches, so its open costs no centroid distances per insert.
    pub(crate) fn open_for_writer(dir: &Path) -> Result<Self, SearchError> {
        Self::open_placing(dir, IoBackend::Pread, &ReaderOptions::default(), false)
    }

    /// [`Index::open`], placing the inserts' spill copies or not (`copies`).
    fn open_placing(
        dir: &Path,
        backend: IoBackend,
        options: &ReaderOptions,
        copies: bool,
    ) -> Result<Self, SearchError> {
        let idx = Self::load(
            dir,
            |data_path, segments| {
                let open = |p: &Path| -> Result<Arc<dyn BlockReader>, SearchError> {
                    Ok(open_reader(p, backend, options)?)
                };
                match segments {
                    [] => open(data_path),
                    _ => chain_segments(segments, open),
                }
            },
            backend,
            options,
        )?;
        Ok(super::live::advance_placing(&idx, copies)?.unwrap_or(idx))
    }

    /// Opens `dir` like [`Index::open`] but reads `data.m3` through `reader` (e.g. a
    /// [`crate::io::FaultyReader`] in tests, or a reader opened with custom options). The reader
    /// must read this index's `data.m3` (of a merged index: its data segments as one sector
    /// space): its length is checked against the manifest.
    /// Live updates (`delta.m3`) are read with pread.
    pub fn open_with_reader(dir: &Path, reader: Arc<dyn BlockReader>) -> Result<Self, SearchError> {
        let idx = Self::load(
            dir,
            |_, _| Ok(reader),
            IoBackend::Pread,
            &ReaderOptions::default(),
        )?;
        Ok(super::live::advance(&idx)?.unwrap_or(idx))
    }

    // long-fn: assembles the index field by field from its checked parts (1.x and merged).
    fn load(
        dir: &Path,
        open_data: impl FnOnce(&Path, &[(PathBuf, u64)]) -> Result<Arc<dyn BlockReader>, SearchError>,
        delta_backend: IoBackend,
        delta_options: &ReaderOptions,
    ) -> Result<Self, SearchError> {
        let (parts, manifest_crc32c) = open_parts(dir)?;
        let meta = parts.manifest.meta;
        let metric = meta.metric().ok_or_else(|| {
            FormatError::corrupt(dir.join("manifest.m3"), 0, "unknown metric code")
        })?;
        let dim = meta.dim as usize;
        let pq_path = &parts.pq_file.path;
        let bounds: Vec<usize> = parts.pq.bounds.iter().map(|&b| b as usize).collect();
        let pq = ProductQuantizer::from_parts(dim, bounds, parts.pq.codebooks.clone())
            .map_err(|e| FormatError::corrupt(pq_path, 0, e.to_string()))?;
        let refine = match parts.refine {
            Some(r) => Some(Refinement::new(dim, r, dir)?),
            None => None,
        };
        let data_path = dir.join(DATA_FILE);
        let segment_files = segment_files(dir, parts.segments.as_ref());
        let reader = open_data(&data_path, &segment_files)?;
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
        let norm_bound = super::check::norm_bound(
            &parts.stats,
            &clusters.centroids,
            &parts.routing,
            parts.coarse.as_ref(),
            parts.hints.as_ref(),
            &[Some(&pq), refine.as_ref().map(|r| &r.pq)]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>(),
        );
        // Two-level routing from the stored coarse level; an index without one (older, or
        // K below the build's threshold) builds it here when K is large.
        let coarse = parts.coarse;
        let router = Router::for_base_anchors(
            &clusters.centroids,
            metric,
            coarse.as_ref(),
            DEFAULT_ROUTE_MIN_K,
        );
        let routing = parts.routing;
        let query_router =
            Router::new(routing.anchors.view(), AnchorOrder::L2, DEFAULT_ROUTE_MIN_K);
        let header = parts.data_header;
        let hints = parts.hints;
        let segments = parts.segments;
        let cluster_order = segments.as_ref().map(|_| record_order(&clusters.entries));
        let (hint_router, hint_codes) =
            hint_routing(hints.as_ref(), metric, &clusters.centroids, &pq);
        let core = IndexCore {
            hints,
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
            refine,
            layout: header.layout(),
            data_reader: reader.clone(),
            delta_backend,
            delta_options: delta_options.clone(),
            manifest_crc32c,
            user_ids: parts.ids.map(|ids| ids.ids),
            keys_file: parts.keys_file,
            pq_file: parts.pq_file,
            exact: OnceLock::new(),
            blocks,
            sector_crcs: parts.sector_crcs,
            cluster_order,
            segments: segments.clone().map_or_else(|| single_segment(&meta), Ok)?,
        };
        let mut idx = Self {
            core: Arc::new(core),
            hint_router,
            hint_codes,
            router,
            query_router,
            // Every record read is checked: id below n_vectors, neighbours below n_records.
            codec: header
                .codec()?
                .with_n_records(meta.n_records)
                .with_n_vectors(meta.n_vectors),
            reader,
            live: Arc::new(super::live::Live::default()),
            norm_bound,
        };
        if let Some(segs) = &segments {
            idx.live = Arc::new(super::live::merged_live(&idx, segs)?);
        }
        Ok(idx)
    }

    /// Routes in two levels from `min_k` anchors on (base and query-modality anchors alike;
    /// `usize::MAX`: always score every anchor). Rebuilds the routers.
    pub fn set_route_min_k(&mut self, min_k: usize) {
        self.router =
            Router::for_base_anchors(&self.centroids, self.metric, self.coarse.as_ref(), min_k);
        self.query_router = Router::new(self.routing.anchors.view(), AnchorOrder::L2, min_k);
        self.hint_router = self.hints.as_ref().map(|h| {
            Router::new(
                h.queries.view(),
                AnchorOrder::training_queries(self.metric),
                min_k,
            )
        });
        self.hint_codes = self
            .hints
            .as_ref()
            .zip(self.hint_router.as_ref())
            .map(|(h, r)| HintCodes::encode(&h.queries, r, &self.centroids, &self.pq));
    }

    /// Whether base anchors are routed in two levels.
    pub fn routes_in_two_levels(&self) -> bool {
        self.router.is_two_level()
    }

    /// The index directory it was opened from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The manifest's description of the index (counts, metric, build parameters).
    pub fn meta(&self) -> &IndexMeta {
        &self.meta
    }
    /// The metric.
    pub fn metric(&self) -> Metric {
        self.metric
    }
    /// Dimension of the vectors (all blocks together for a multi-vector index).
    pub fn dim(&self) -> usize {
        self.dim
    }
    /// The element type the vectors are stored in (`data.m3`, `delta.m3`): f32, or u8/i8
    /// for an index built from such a file (not under cosine, which stores f32).
    pub fn element_type(&self) -> crate::data::DType {
        self.codec.dtype()
    }
    /// Base vectors indexed (ids are `0..n_vectors`).
    pub fn n_vectors(&self) -> u64 {
        self.meta.n_vectors
    }
    /// The user id of the vector a result's [`crate::Neighbor::id`] names: from `ids.m3`
    /// when the index was built with ids (`m3 build --ids`), else the base row number itself.
    /// `id` must come from a search of this index (below [`Index::n_vectors`]).
    pub fn user_id(&self, id: u32) -> u64 {
        match &self.live.ids {
            Some(live) => live.user_id(self.user_ids.as_deref(), id),
            None => match &self.user_ids {
                Some(ids) => ids[id as usize],
                None => u64::from(id),
            },
        }
    }

    /// Vectors a search can return: the base and the committed inserts, minus deleted and
    /// replaced ones (as of opening).
    pub fn live_vectors(&self) -> u64 {
        self.live
            .ids
            .as_ref()
            .map_or(self.meta.n_vectors, |l| l.live_count())
    }

    /// The live updates as of opening: see [`LiveInfo`].
    pub fn live_info(&self) -> LiveInfo {
        let l = &self.live;
        LiveInfo {
            generation: l.generation,
            inserted: l.n_inserts() as u64,
            tombstones: l.ids.as_ref().map_or(0, |i| i.dead_count()),
            live_vectors: self.live_vectors(),
            delta_bytes: l.delta_bytes,
            coded_again: l.coded_again,
            wal_cut: l.tail.clone(),
        }
    }

    /// Where this generation's log ends: the byte offset of its last replayed commit record's
    /// end and the generation it made; `None` before any commit. The commits made after it
    /// are [`crate::format::read_wal_from`] from there.
    pub(crate) fn wal_position(&self) -> Option<(u64, u64)> {
        let l = &self.live;
        (l.wal_end > 0).then_some((l.wal_end, l.generation))
    }

    /// The CRC32C of the manifest this index was opened from (it names one publication).
    pub(crate) fn manifest_crc32c(&self) -> u32 {
        self.manifest_crc32c
    }

    /// Whether the index stores user ids (`ids.m3`) rather than answering with row numbers.
    pub fn has_user_ids(&self) -> bool {
        self.user_ids.is_some()
    }

    /// [`Index::user_id`] for a 32-bit result file (`.ibin`, `.ivecs`, range results): a user
    /// id of 2³² − 1 or more is refused ([`SearchError::Param`] naming `out`).
    pub fn user_id_u32(&self, id: u32) -> Result<u32, SearchError> {
        let user = self.user_id(id);
        u32::try_from(user)
            .ok()
            .filter(|&u| u != u32::MAX)
            .ok_or_else(|| SearchError::Param {
                name: "out",
                what: format!("user id {user} does not fit a 32-bit result file"),
            })
    }

    /// A results table (from [`super::results_table`]) with every id replaced by its user id
    /// ([`Index::user_id_u32`]), as `m3 search --out` writes it; missing results (`u32::MAX`)
    /// stay missing.
    pub fn user_id_table(
        &self,
        table: &crate::data::GroundTruth,
    ) -> Result<crate::data::GroundTruth, SearchError> {
        let ids = table
            .ids
            .as_slice()
            .iter()
            .map(|&id| match id {
                u32::MAX => Ok(id),
                _ => self.user_id_u32(id),
            })
            .collect::<Result<Vec<u32>, SearchError>>()?;
        Ok(crate::data::GroundTruth {
            ids: crate::data::Matrix::from_vec(ids, table.k())?,
            dists: table.dists.clone(),
        })
    }

    /// Clusters (base anchors).
    pub fn n_clusters(&self) -> usize {
        self.entries.len()
    }
    /// Query-modality anchors (0 for an index built without training queries).
    pub fn n_query_anchors(&self) -> usize {
        self.routing.anchors.rows()
    }
    /// Training queries in `hints.m3` (0 without hints).
    pub fn n_hint_queries(&self) -> usize {
        self.hints.as_ref().map_or(0, Hints::len)
    }
    /// The training queries stored in `hints.m3` (in the build's coordinates: normalised
    /// under cosine) and the answers kept per query; `None` without hints. Compaction builds
    /// the query routing and the hints again from them.
    pub fn hint_queries(&self) -> Option<(crate::data::MatrixView<'_, f32>, usize)> {
        self.hints.as_ref().map(|h| (h.queries.view(), h.depth()))
    }
    /// Whether the index has refinement codes (`refine.m3`, decision 0008).
    pub fn has_refinement(&self) -> bool {
        self.refine.is_some()
    }
    /// The contents of `stats.m3`: per-dimension mean and variance of the base and the query
    /// modality, LID statistics.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    /// Which block reader serves `data.m3`, and why it fell back to pread if it did.
    pub fn reader_info(&self) -> &crate::io::ReaderInfo {
        self.reader.info()
    }

    /// The blocks of a multi-vector index (`None` for a single-vector index).
    pub fn blocks(&self) -> Option<&crate::format::BlockTable> {
        self.blocks.as_ref().map(|b| &b.table)
    }

    /// The multi-vector side of the index as the query engine holds it: spreads, scales,
    /// PQ subspaces per block (`None` for a single-vector index).
    pub(crate) fn index_blocks(&self) -> Option<&IndexBlocks> {
        self.blocks.as_ref()
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
    /// corrections, refinement codes).
    pub fn ram_bytes(&self) -> u64 {
        (self.centroids.as_slice().len() * 4
            + self.router.heap_bytes()
            + self.query_router.heap_bytes()
            + self.hints.as_ref().map_or(0, Hints::heap_bytes)
            + self.hint_router.as_ref().map_or(0, Router::heap_bytes)
            + self.hint_codes.as_ref().map_or(0, HintCodes::heap_bytes)
            + self.entries.len() * 32
            + self.routing.anchors.as_slice().len() * 4
            + self.routing.edges.as_slice().len() * 4
            // The codebooks are held twice (by codeword and by dimension).
            + self.pq.codebooks().len() * 8
            + self.codes.as_slice().len()
            + self.correction.len() * 4
            + self.refine.as_ref().map_or(0, Refinement::heap_bytes)
            + self
                .blocks
                .as_ref()
                .and_then(|b| b.corrections.as_ref())
                .map_or(0, |c| c.as_slice().len() * 4)) as u64
    }

    /// The rerank distance stored in the manifest by calibration (`m3 calibrate`, `m3 build
    /// --distance auto`): LC-CMD with its (α, β), or the native metric.
    pub fn calibrated_distance(&self) -> super::RerankDistance {
        match self.meta.distance_mode() {
            Ok(crate::format::DistanceMode::LcCmd) => super::RerankDistance::LcCmd {
                alpha: self.meta.lccmd_alpha,
                beta: self.meta.lccmd_beta,
            },
            // An unknown mode never gets here: opening the index refused it.
            Ok(crate::format::DistanceMode::Native) | Err(_) => super::RerankDistance::Native,
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

    /// Cluster of a global record index (not a hole of a merged index).
    pub(super) fn cluster_of(&self, record: u32) -> usize {
        match &self.cluster_order {
            None => self
                .entries
                .partition_point(|e| e.first_record <= record as u64)
                .saturating_sub(1),
            Some(order) => {
                let i = order
                    .partition_point(|&c| self.entries[c as usize].first_record <= record as u64)
                    .saturating_sub(1);
                order.get(i).map_or(0, |&c| c as usize)
            }
        }
    }

    /// Whether this is a merged index (format 2.0: data segments, holes, dead vids).
    pub(crate) fn is_merged(&self) -> bool {
        self.cluster_order.is_some()
    }
}

/// The refinement codes of an index (`refine.m3`, decision 0008): a second quantizer over the
/// subspaces of the first, one code per record of what the first code leaves, and each
/// record's L2 correction for the sum of both reconstructions.
#[derive(Debug)]
pub(super) struct Refinement {
    pub(super) pq: ProductQuantizer,
    pub(super) codes: Matrix<u8>,
    pub(super) correction: Vec<f32>,
}

impl Refinement {
    fn new(dim: usize, file: crate::format::PqFile, dir: &Path) -> Result<Self, SearchError> {
        let bounds: Vec<usize> = file.bounds.iter().map(|&b| b as usize).collect();
        let pq = ProductQuantizer::from_parts(dim, bounds, file.codebooks).map_err(|e| {
            FormatError::corrupt(
                dir.join(crate::format::files::REFINE_FILE),
                0,
                e.to_string(),
            )
        })?;
        Ok(Self {
            pq,
            codes: file.codes,
            correction: file.correction,
        })
    }

    /// Bytes held.
    pub(super) fn heap_bytes(&self) -> usize {
        self.pq.codebooks().len() * 8 + self.codes.as_slice().len() + self.correction.len() * 4
    }
}

/// The data segments of a merged index (path, first sector of the reader's space) read as
/// one sector space: a chain of [`ConcatReader`]s.
fn chain_segments(
    segments: &[(PathBuf, u64)],
    open: impl Fn(&Path) -> Result<Arc<dyn BlockReader>, SearchError>,
) -> Result<Arc<dyn BlockReader>, SearchError> {
    let mut r = open(&segments[0].0)?;
    for (path, start) in &segments[1..] {
        r = Arc::new(crate::io::ConcatReader::chain(r, open(path)?, *start)?);
    }
    Ok(r)
}

/// The segment table of a 1.x index: `data.m3` alone, no dead vids.
fn single_segment(meta: &IndexMeta) -> Result<crate::format::Segments, SearchError> {
    Ok(crate::format::Segments {
        segments: vec![crate::format::SegmentEntry::new(
            DATA_FILE,
            meta.data_sectors,
            meta.n_records,
        )?],
        n_vids: meta.n_vectors,
        next_segment: 1,
        dead: vec![0; meta.n_vectors.div_ceil(64) as usize],
    })
}

/// The data segments of a merged index: each file and the sector of the reader's space where
/// it starts (none for 1.x).
fn segment_files(dir: &Path, segments: Option<&crate::format::Segments>) -> Vec<(PathBuf, u64)> {
    segments.map_or_else(Vec::new, |s| {
        s.segments
            .iter()
            .zip(s.starts())
            .map(|(e, b)| (dir.join(e.name_str().unwrap_or_default()), b))
            .collect()
    })
}

/// The non-empty clusters in the order of their first record (`Index::cluster_of` of a
/// merged index).
fn record_order(entries: &[ClusterEntry]) -> Vec<u32> {
    let mut order: Vec<u32> = (0..entries.len() as u32)
        .filter(|&c| entries[c as usize].records > 0)
        .collect();
    order.sort_unstable_by_key(|&c| entries[c as usize].first_record);
    order
}

//! M³: a disk-resident vector index engine for approximate and exact nearest-neighbour search,
//! built first of all for queries that come from another modality than the data.
//!
//! # The API
//!
//! The types most programs need are re-exported here:
//!
//! - build an index: [`build_index`] with [`BuildParams`] (an optional [`BuildObserver`] for
//!   progress, [`Silent`] for none; [`BlockInput`] for multi-vector bases), returning a
//!   [`BuildSummary`] or a [`BuildError`];
//! - search it: [`Index::open`], then a [`Searcher`] per thread with [`SearchParams`]
//!   (approximate k-NN; [`RerankDistance`] chooses the rerank distance), [`search_batch`] with
//!   [`BatchOptions`] for many queries on a pool, [`ExactSearcher`] / [`exact_batch`] with
//!   [`ExactParams`] and [`ExactQuery`] for exact k-NN and range queries; errors are
//!   [`SearchError`]; [`IoBackend`] and [`ReaderOptions`] choose how `data.m3` is read;
//! - check it: [`verify()`] reads every checksum ([`VerifyReport`]), [`recover_index_dir`]
//!   finishes or rolls back a publication a kill interrupted ([`RecoveryReport`]); corrupt or
//!   unreadable files are [`FormatError`]s;
//! - vectors and files: [`Metric`], [`VectorFile`] (reader of `.fbin/.u8bin/.i8bin`, `.fvecs/
//!   .bvecs`, `.npy`), [`VectorWriter`], [`Matrix`] / [`MatrixView`], [`GroundTruth`],
//!   [`RangeResults`], [`DataError`];
//! - ground truth and recall: [`exact_knn_file`], [`exact_knn`], [`recall_at_k`], [`Neighbor`].
//!
//! # Modules
//!
//! The module tree follows the data path, in layers: a module uses only modules of lower
//! layers (`tools/module_dag.py` checks it; `docs/ARCHITECTURE.md` has the graph and one
//! section per module). Lowest first:
//!
//! 0. [`simd`]: the only place for target-feature code (AVX2+FMA, AVX-512), chosen at run
//!    time, and the scalar reference kernels. [`data`]: vector files (big-ann
//!    `.fbin/.u8bin/.i8bin/.ibin`, TexMex `.fvecs/.bvecs/.ivecs`, `.npy`), checked matrix
//!    views, ground-truth files. [`neighbor`]: the result type ([`neighbor::Neighbor`],
//!    [`neighbor::TopK`]).
//! 1. [`distance`]: metrics, dispatched to [`simd`]. [`stats`]: Welford mean/variance,
//!    percentiles. [`testing`]: what the tests may skip, and `M3_REQUIRE_URING` /
//!    `M3_REQUIRE_DATA`, which forbid it.
//! 2. `linalg`: dense matrix products used by brute force and k-means. [`io`]: block
//!    readers (io_uring, pread) that fetch batches of 4 KiB sectors.
//! 3. [`exact`]: exact brute-force top-k (ground truth) and recall with fair ties.
//!    [`kmeans`]: k-means clustering, balanced, with two-level nearest-centroid search.
//! 4. [`graph`]: cluster-local neighbour lists (robust prune, LID-adaptive α). [`pq`]:
//!    product quantization. [`multivec`]: multi-vector objects: block files, per-block
//!    standardisation, weighted ground truth.
//! 5. [`format`](mod@format): the index files, their checks and crash-safe publication.
//!    [`synth`]: seeded synthetic data sets and their cross-modal statistics.
//! 6. [`route`]: which clusters a query goes to: query anchors and cross-modal edges (the
//!    build side), anchor ranking in one or two levels (the query side).
//! 7. [`build`]: a base file into an index. [`search`]: approximate, exact and range queries
//!    from SSD.
//! 8. [`update`]: live inserts, upserts and deletes ([`IndexWriter`]: a write-ahead log and a
//!    delta file beside the published index).
//! 9. [`eval`]: recall, sweeps, tuning, calibration and the multi-vector baseline.
//!    [`serve`]: the HTTP/JSON server.
//!
//! Internal modules (`simd`, `linalg`, `kmeans`, `pq`, `graph`, `format`, `route`, `testing`)
//! are not part of the API; some are public but hidden from the documentation because the
//! crate's own benchmarks, examples and integration tests link the library as any user would.
//!
//! # Features
//!
//! - `cli` (default): the `m3` binary (clap, anyhow, indicatif).
//! - `serve` (default): the `serve` module, `m3 serve` and `m3 loadtest` (axum, tokio,
//!   hyper, prometheus-client, ureq, …).
//!
//! A program that links only the engine depends on `m3` with `default-features = false`.

#![warn(missing_docs)]

pub mod build;
pub mod data;
pub mod distance;
pub mod eval;
pub mod exact;
pub mod io;
pub mod multivec;
pub mod neighbor;
pub mod search;
#[cfg(feature = "serve")]
pub mod serve;
pub mod update;

// Not part of the API. Public only because the crate's benches/ (criterion kernels), examples/
// (experiments on the build's stages) and tests/ (the on-disk structures, written, corrupted
// and parsed byte by byte) reach into them; hidden from the documentation and free to change.
#[doc(hidden)]
pub mod format;
#[doc(hidden)]
pub mod graph;
#[doc(hidden)]
pub mod kmeans;
mod linalg;
#[doc(hidden)]
pub mod pq;
#[doc(hidden)]
pub mod route;
#[doc(hidden)]
pub mod simd;
pub mod stats;
pub mod synth;
#[doc(hidden)]
pub mod testing;

pub use build::{
    BlockInput, BuildError, BuildObserver, BuildParams, BuildSummary, Silent, build_index,
};
pub use data::{
    DType, DataError, Element, FileFormat, GroundTruth, Matrix, MatrixView, RangeResults,
    VectorFile, VectorWriter,
};
pub use distance::Metric;
pub use exact::{Neighbor, exact_knn, exact_knn_file, recall_at_k};
pub use format::verify::{VerifyReport, verify};
pub use format::{FormatError, RecoveryReport, Restored, recover_index_dir};
pub use io::{IoBackend, ReaderOptions};
pub use search::{
    BatchOptions, BatchResult, ExactParams, ExactQuery, ExactSearcher, Index, LiveIndex, LiveInfo,
    QueryStats, RerankDistance, SearchError, SearchParams, Searcher, exact_batch, search_batch,
};
pub use update::{IndexWriter, UpdateError};

//! M³: a disk-resident vector index engine for approximate and exact nearest-neighbour search,
//! built first of all for queries that come from another modality than the data.
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
//! 2. [`linalg`]: dense matrix products used by brute force and k-means. [`io`]: block
//!    readers (io_uring, pread) that fetch batches of 4 KiB sectors.
//! 3. [`exact`]: exact brute-force top-k (ground truth) and recall with fair ties.
//!    [`kmeans`]: k-means clustering, balanced, with two-level nearest-centroid search.
//! 4. [`graph`]: cluster-local neighbour lists (robust prune, LID-adaptive α). [`pq`]:
//!    product quantization. [`multivec`]: multi-vector objects: block files, per-block
//!    standardisation, weighted ground truth.
//! 5. [`format`](mod@format): the index files, their checks and crash-safe publication.
//!    [`synth`]: seeded synthetic data sets and their cross-modal statistics.
//! 6. [`build`]: a base file into an index. [`search`]: approximate, exact and range queries
//!    from SSD.
//! 7. [`eval`]: recall, sweeps, tuning, calibration and the multi-vector baseline.
//!    [`serve`]: the HTTP/JSON server.

pub mod build;
pub mod data;
pub mod distance;
pub mod eval;
pub mod exact;
pub mod format;
pub mod graph;
pub mod io;
pub mod kmeans;
pub mod linalg;
pub mod multivec;
pub mod neighbor;
pub mod pq;
pub mod search;
pub mod serve;
pub mod simd;
pub mod stats;
pub mod synth;
pub mod testing;

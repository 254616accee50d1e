//! M³: a disk-resident vector index engine for approximate and exact nearest-neighbour search,
//! built first of all for queries that come from another modality than the data.
//!
//! The module tree follows the data path; `docs/ARCHITECTURE.md` has one section per module.
//!
//! - [`data`]: vector files (big-ann `.fbin/.u8bin/.i8bin/.ibin`, TexMex `.fvecs/.bvecs/.ivecs`,
//!   `.npy`), checked matrix views, ground-truth files, synthetic data generators.
//! - [`distance`]: metrics and their scalar reference definitions, dispatched to [`simd`].
//! - [`simd`]: the only place for target-feature code (AVX2+FMA, AVX-512), chosen at run time.
//! - [`linalg`]: dense matrix products used by brute force and k-means.
//! - [`exact`]: exact brute-force top-k (ground truth) and recall with fair ties.
//! - [`kmeans`]: k-means clustering.
//! - [`graph`]: cluster-local neighbour lists (robust prune, LID-adaptive α).
//! - [`multivec`]: multi-vector objects: block files, per-block standardisation, weighted
//!   ground truth and the per-block baseline.
//! - [`io`]: block readers (io_uring, pread) that fetch batches of 4 KiB sectors.
//! - [`testing`]: what the tests may skip, and `M3_REQUIRE_URING` / `M3_REQUIRE_DATA`, which
//!   forbid it.

pub mod build;
pub mod data;
pub mod distance;
pub mod exact;
pub mod format;
pub mod graph;
pub mod io;
pub mod kmeans;
pub mod linalg;
pub mod multivec;
pub mod pq;
pub mod search;
#[cfg(feature = "serve")]
pub mod serve;
pub mod simd;
pub mod testing;

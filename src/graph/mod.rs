//! Cluster-local neighbour lists: which stored vectors should each vector point to?
//!
//! DESIGN §2 step 3 and §4.4. Each cluster's members (its own vectors plus spilled copies of
//! boundary vectors from neighbouring clusters) get up to R neighbour ids, *local* indices into
//! the cluster, chosen by Vamana's robust prune (Subramanya et al., NeurIPS 2019) with a pruning
//! factor α that may vary per node with the local intrinsic dimensionality (MCGI).
//!
//! - [`lid`]: LID by maximum likelihood, population statistics (Welford), the LID → α maps.
//! - [`prune`]: robust prune of one candidate list.
//! - [`cluster_graph`]: the per-cluster build (exact in-cluster kNN candidates, LID, α, prune,
//!   reverse edges) and the sample helper that estimates [`LidStats`].
//!
//! Distances: everything here ranks by **squared** Euclidean distance on the vectors it is
//! given; the pruning rule is applied in its squared form (see [`prune`]). For inner-product
//! data the caller passes vectors on which L2 is meaningful: unit-norm vectors (where L2 order
//! is cosine order) or the augmented `x' = [x, √(M² − |x|²)]` of DESIGN §4.1.
//!
//! The per-cluster build is single-threaded: the index build runs it in parallel across
//! clusters.

pub mod cluster_graph;
pub mod lid;
pub mod prune;

mod knn;

pub use cluster_graph::{
    ClusterGraph, ClusterGraphParams, build_cluster_graph, lid_stats_of_sample,
};
pub use lid::{AlphaMap, AlphaMode, Direction, LidAccumulator, LidStats, lid_mle, lid_mle_sq};
pub use prune::{PruneParams, robust_prune};

/// Errors of the graph build: bad parameters or inputs the caller can fix.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("invalid graph parameter {name}: {reason}")]
    Param { name: &'static str, reason: String },

    #[error("original_ids has {found} entries, but the cluster has {expected} vectors")]
    IdsLen { expected: usize, found: usize },

    #[error("cluster has {rows} vectors, more than local u32 ids can address")]
    TooManyRows { rows: usize },

    #[error("alpha mode `{text}`: {reason} (expected fixed:A, falls:MIN:MAX or rises:MIN:MAX)")]
    ParseAlpha { text: String, reason: String },
}

//! Build parameters. Defaults give a good index without touching anything; `m3 build --help`
//! explains each knob.

use std::path::PathBuf;

use crate::distance::Metric;
use crate::graph::ClusterGraphParams;
use crate::kmeans::NearestParams;
use crate::route::RoutingParams;

/// Everything `build_index` needs.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BuildParams {
    /// The base file; ignored when `blocks` is set.
    pub base: PathBuf,
    /// Further base files whose rows follow `base`'s, in order (rows numbered by
    /// concatenation; each with `base`'s dimension and element type).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_base: Vec<PathBuf>,
    /// A multi-vector base: one file per block (DESIGN §4.6), instead of `base`.
    pub blocks: Option<BlockParams>,
    /// Distance the index answers in.
    pub metric: Metric,
    /// The index directory to create (or replace, when it holds an index).
    pub out: PathBuf,
    /// Training queries of the query modality (enables query anchors and cross-modal edges).
    pub train_queries: Option<PathBuf>,
    /// The user id of every base row ([`crate::data::read_user_ids`]: `.u64bin`, `.ibin`,
    /// `.npy`), stored in `ids.m3`; `None`: ids are the row numbers.
    pub ids: Option<PathBuf>,
    /// Seed of every random choice: the same seed, inputs and thread count give the same index
    /// files (the build report, with its timings, and the manifest entry that lists it aside).
    pub seed: u64,
    /// Peak-memory target in bytes; sample sizes and buffers adapt to it.
    pub ram_budget_bytes: u64,
    /// Base anchors (the clusters).
    pub clusters: ClusterParams,
    /// Product quantization.
    pub pq: PqBuildParams,
    /// Spill copies.
    pub spill: SpillParams,
    /// Query anchors and cross-modal edges (with training queries).
    pub routing: RoutingParams,
    /// Neighbour lists (R, candidates, LID k, α mode).
    pub graph: ClusterGraphParams,
    /// Links from each record into neighbouring clusters (DESIGN §4.4: "own and nearby
    /// clusters"), which the search's neighbour-list rounds follow into unprobed clusters.
    pub cross: CrossLinkParams,
}

/// A multi-vector base: its block files and how they are scaled
/// ([`crate::multivec::scale`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BlockParams {
    /// In row order; the files must have the same rows.
    pub blocks: Vec<BlockInput>,
    /// Divide every block by its spread σ_b (default). Without it the stored blocks keep
    /// their raw scale (times √weight), which only a comparison should want.
    pub standardize: bool,
}

/// One block of a multi-vector base.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BlockInput {
    /// The block's name (queries refer to blocks by name).
    pub name: String,
    /// Its base file.
    pub path: PathBuf,
    /// Build weight W_b > 0: the default query weight, and the weighting the stored geometry
    /// (anchors, PQ, neighbour lists) is made for.
    pub weight: f32,
}

/// Cross-cluster links: each record's `links` nearest records among the members of its
/// cluster's `clusters` nearest neighbouring clusters (by the anchor graph) replace the last
/// entries of its cluster-local list.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct CrossLinkParams {
    /// Neighbouring clusters the links are drawn from.
    pub clusters: usize,
    /// Links per record (replacing the last entries of its local list).
    pub links: usize,
}

/// Base anchors (the clusters).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ClusterParams {
    /// Mean cluster size; K = ⌈N / target_size⌉ unless `count` is set.
    pub target_size: usize,
    /// Explicit number of clusters.
    pub count: Option<usize>,
    /// Cap on a cluster's primary members, as a multiple of the mean.
    pub max_size_factor: f32,
    /// Lloyd iterations of the balanced k-means.
    pub kmeans_iters: usize,
    /// Training rows per cluster (sample = min(N, rows_per_cluster · K), within the budget).
    pub train_rows_per_cluster: usize,
    /// Neighbouring anchors kept per anchor (the anchor graph).
    pub anchor_degree: usize,
    /// Nearest-anchor search of k-means, assignment and the anchor graph: exact below
    /// `two_level_min_k` anchors, two levels (≈ √K coarse groups) above.
    pub nearest: NearestParams,
}

/// Product quantization of the residuals to the cluster centroid.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PqBuildParams {
    /// Bytes per code (subspaces); default from [`PqBuildParams::resolve`].
    pub subspaces: Option<usize>,
    /// Lloyd iterations of each subspace's k-means.
    pub iters: usize,
    /// Rows the codebooks are trained on.
    pub train_rows: usize,
    /// Also write refinement codes (`refine.m3`, decision 0008): a second code per record of
    /// what the first leaves, so a query re-ranks its best candidates in RAM at twice the
    /// bits and reads fewer from SSD. Doubles the per-record RAM of the codes.
    pub refine: bool,
}

/// Spilling of boundary vectors into further clusters (SPANN's rule).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SpillParams {
    /// Also store x in cluster j when `d(x, c_j) ≤ (1 + epsilon) · d(x, c_1)` (Euclidean).
    pub epsilon: f32,
    /// At most this many extra copies per vector (0 disables spilling).
    pub max_copies: usize,
}

impl BuildParams {
    /// Default seed (`m3 build --seed`).
    pub const DEFAULT_SEED: u64 = 42;
    /// Default peak-memory target, 8 GiB (`m3 build --ram-budget-gb`).
    pub const DEFAULT_RAM_BUDGET_BYTES: u64 = 8 << 30;

    /// Every file the build reads: the base (or its block files) and the training queries.
    pub fn inputs(&self) -> Vec<&std::path::Path> {
        let mut v: Vec<&std::path::Path> = match &self.blocks {
            Some(b) => b.blocks.iter().map(|b| b.path.as_path()).collect(),
            None => std::iter::once(&self.base)
                .chain(&self.more_base)
                .map(PathBuf::as_path)
                .collect(),
        };
        v.extend(self.train_queries.as_deref());
        v.extend(self.ids.as_deref());
        v
    }

    /// Defaults for a base file, metric and output directory.
    pub fn new(base: PathBuf, metric: Metric, out: PathBuf) -> Self {
        Self {
            base,
            more_base: Vec::new(),
            blocks: None,
            metric,
            out,
            train_queries: None,
            ids: None,
            seed: Self::DEFAULT_SEED,
            ram_budget_bytes: Self::DEFAULT_RAM_BUDGET_BYTES,
            clusters: ClusterParams {
                target_size: ClusterParams::DEFAULT_TARGET_SIZE,
                count: None,
                max_size_factor: ClusterParams::DEFAULT_MAX_SIZE_FACTOR,
                kmeans_iters: 12,
                train_rows_per_cluster: 64,
                anchor_degree: 16,
                nearest: NearestParams::default(),
            },
            pq: PqBuildParams {
                subspaces: None,
                refine: true,
                iters: 10,
                train_rows: 32_768,
            },
            spill: SpillParams {
                epsilon: SpillParams::DEFAULT_EPSILON,
                max_copies: SpillParams::DEFAULT_MAX_COPIES,
            },
            routing: RoutingParams {
                query_anchors: None,
                edges_per_anchor: RoutingParams::DEFAULT_EDGES_PER_ANCHOR,
                votes_per_query: RoutingParams::DEFAULT_VOTES_PER_QUERY,
                vote_sample_rows: RoutingParams::DEFAULT_VOTE_SAMPLE_ROWS,
                hint_depth: RoutingParams::DEFAULT_HINT_DEPTH,
            },
            graph: ClusterGraphParams::default(),
            cross: CrossLinkParams {
                clusters: CrossLinkParams::DEFAULT_CLUSTERS,
                links: CrossLinkParams::DEFAULT_LINKS,
            },
        }
    }
}

impl BuildParams {
    /// Defaults for a multi-vector base (standardised, every block with weight 1 unless set).
    pub fn with_blocks(blocks: Vec<BlockInput>, metric: Metric, out: PathBuf) -> Self {
        let mut p = Self::new(PathBuf::new(), metric, out);
        p.blocks = Some(BlockParams {
            blocks,
            standardize: true,
        });
        p
    }

    /// Records per sort run of the assign stage for `n` base rows and `m`-byte codes, with
    /// `model_bytes` of the RAM budget already held by the trained model (anchors, their
    /// two-level search, PQ codebooks: [`Trained::model_bytes`](super::train::Trained::model_bytes)).
    /// Unbounded (an in-memory sort) when the buffered records and their sort permutation fit
    /// in half of what the model leaves (the sorted records stream out to the index files, see
    /// `extsort`); else runs of a quarter of it (the run buffer and its sorted copy take half),
    /// at least 256 records.
    pub fn sort_run_records(&self, n: u64, m: usize, model_bytes: u64) -> usize {
        let rec = super::extsort::RecordSorter::record_bytes(m) as u64 + 4;
        let records = n.saturating_mul(1 + self.spill.max_copies as u64);
        let left = self.ram_budget_bytes.saturating_sub(model_bytes);
        if records.saturating_mul(rec) <= left / 2 {
            usize::MAX
        } else {
            ((left / 4) / rec).max(256) as usize
        }
    }
}

impl ClusterParams {
    /// Default mean cluster size (`m3 build --cluster-size`).
    pub const DEFAULT_TARGET_SIZE: usize = 256;
    /// Default cap on a cluster's size (`m3 build --max-cluster-factor`).
    pub const DEFAULT_MAX_SIZE_FACTOR: f32 = 2.0;

    /// Number of clusters for `n` vectors.
    pub fn resolve(&self, n: u64) -> usize {
        let k = self
            .count
            .unwrap_or_else(|| n.div_ceil(self.target_size.max(1) as u64) as usize);
        k.clamp(1, n.max(1) as usize)
    }
}

impl SpillParams {
    /// Default ε (`m3 build --spill-epsilon`).
    pub const DEFAULT_EPSILON: f32 = 0.1;
    /// Default extra copies: none (`m3 build --spill`; docs/decisions/0004-spill-default.md).
    pub const DEFAULT_MAX_COPIES: usize = 0;
}

impl CrossLinkParams {
    /// Default neighbouring clusters (`m3 build --cross-clusters`).
    pub const DEFAULT_CLUSTERS: usize = 2;
    /// Default links per record (`m3 build --cross-links`).
    pub const DEFAULT_LINKS: usize = 4;
}

impl PqBuildParams {
    /// Subspaces for dimension `dim`: the explicit value, else ⌈dim / 2⌉ capped at 64 (2
    /// dimensions per byte: 25 bytes for 50-d, 64 for 128-d and more).
    pub fn resolve(&self, dim: usize) -> usize {
        self.subspaces
            .unwrap_or_else(|| dim.div_ceil(2).min(64))
            .clamp(1, dim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(budget: u64) -> BuildParams {
        let mut p = BuildParams::new(PathBuf::from("b"), Metric::L2, PathBuf::from("o"));
        p.ram_budget_bytes = budget;
        p
    }

    #[test]
    fn the_sort_gets_what_the_model_leaves_of_the_budget() {
        let rec = crate::build::extsort::RecordSorter::record_bytes(16) as u64 + 4;
        let budget = 1u64 << 20;
        let p = params(budget);
        // Records that fill exactly half the budget sort in memory without a model ...
        let n = (budget / 2) / rec;
        assert_eq!(p.sort_run_records(n, 16, 0), usize::MAX);
        // ... and in runs of a quarter of what is left once a model holds part of it.
        let model = budget / 4;
        assert_eq!(
            p.sort_run_records(n, 16, model),
            ((budget - model) / 4 / rec) as usize
        );
        // A model larger than the budget leaves the minimum run, never zero.
        assert_eq!(p.sort_run_records(n, 16, budget * 2), 256);
        // Spill copies count as records.
        let mut spilled = params(budget);
        spilled.spill.max_copies = 1;
        assert_ne!(spilled.sort_run_records(n, 16, 0), usize::MAX);
    }
}

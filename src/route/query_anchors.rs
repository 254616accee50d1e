//! The build side of routing, DESIGN §4.2: query-modality anchors and their cross-modal edges
//! to base clusters.
//!
//! The training queries are clustered into query anchors. Each training query's exact nearest
//! neighbours *within the base sample* vote for the base clusters holding them; each query
//! anchor keeps edges to the clusters its queries voted for most. The sample's neighbours are a
//! uniform thinning of the full base's neighbours, so they land in the same clusters, at the
//! cost of one exact search per training query over at most `vote_sample_rows` sample rows —
//! not an exact k-NN over the whole base as RoarGraph needs.

use std::collections::HashMap;

use rand::SeedableRng;
use rand::seq::index;
use rand_chacha::ChaCha8Rng;

use crate::data::{DataError, Matrix, MatrixView};
use crate::distance::Metric;
use crate::exact::exact_knn;
use crate::kmeans::{BalancedKMeansParams, KMeansError, assign_capped};
use crate::stats::Welford;

/// Query-modality anchors and cross-modal edges (DESIGN §4.2).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RoutingParams {
    /// Query anchors; default ⌈training queries / 40⌉ capped at 4096.
    pub query_anchors: Option<usize>,
    /// Base clusters kept per query anchor.
    pub edges_per_anchor: usize,
    /// Neighbours per training query whose clusters vote for the edges.
    pub votes_per_query: usize,
    /// At most this many base-sample rows are searched for the voters (the exact search costs
    /// training queries × rows × dim).
    pub vote_sample_rows: usize,
    /// Exact answers kept per training query in `hints.m3` (record-level routing, decision
    /// 0007); 0 = no hints. Costs training queries × N × dim at build time and
    /// training queries × (dim + depth) × 4 bytes of RAM at search time.
    pub hint_depth: usize,
}

impl RoutingParams {
    /// Default `edges_per_anchor` (`m3 build --edges-per-anchor`).
    pub const DEFAULT_EDGES_PER_ANCHOR: usize = 32;
    /// Default `votes_per_query`.
    pub const DEFAULT_VOTES_PER_QUERY: usize = 10;
    /// Default `vote_sample_rows`.
    pub const DEFAULT_VOTE_SAMPLE_ROWS: usize = 65_536;
    /// Default `hint_depth` (`m3 build --hint-depth`).
    pub const DEFAULT_HINT_DEPTH: usize = 100;

    /// Query anchors for `training_queries` training queries: `query_anchors`, by default
    /// ⌈training queries / 40⌉ capped at 4096, never more than the training queries.
    pub fn resolve_anchors(&self, training_queries: usize) -> usize {
        self.query_anchors
            .unwrap_or_else(|| training_queries.div_ceil(40).clamp(1, 4096))
            .clamp(1, training_queries.max(1))
    }
}

/// What the query anchors are trained from: the training queries and the base sample, both in
/// the build's coordinates (normalised under cosine, block-scaled), and the build's k-means
/// settings.
#[derive(Debug)]
pub struct RoutingInputs<'a> {
    /// The training queries.
    pub queries: Matrix<f32>,
    /// The base sample whose rows vote.
    pub sample: MatrixView<'a, f32>,
    /// The base cluster of each sample row.
    pub sample_labels: &'a [u32],
    /// The index's metric.
    pub metric: Metric,
    /// Lloyd iterations of the build's k-means.
    pub kmeans_iters: usize,
    /// The build's seed (the query anchors' k-means and the voters' subset derive theirs).
    pub seed: u64,
}

/// Why query routing could not be trained.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The k-means of the training queries failed.
    #[error("k-means of the training queries: {0}")]
    KMeans(#[source] KMeansError),
    /// The exact search for the voters failed, or a table had no columns.
    #[error(transparent)]
    Data(#[from] DataError),
}

/// Query anchors with their edges to base clusters.
#[derive(Debug)]
pub struct QueryRouting {
    /// `K_q × dim`.
    pub anchors: Matrix<f32>,
    /// `K_q × E` cluster ids, most voted first, `u32::MAX` padding.
    pub edges: Matrix<u32>,
    /// Statistics of the training queries.
    pub stats: Welford,
    /// Share of votes covered by the kept edges (how well E edges summarise the anchor).
    pub vote_coverage: f64,
    /// The training queries in the build's coordinates, for the hints stage (`hints.m3`).
    pub queries: Matrix<f32>,
}

impl QueryRouting {
    /// Clusters the training queries into query anchors and gives each anchor the base
    /// clusters its queries' nearest sample rows vote for.
    pub fn train(
        params: &RoutingParams,
        inputs: RoutingInputs<'_>,
        pool: &rayon::ThreadPool,
    ) -> Result<Self, RouteError> {
        let RoutingInputs {
            queries,
            sample,
            sample_labels,
            metric,
            kmeans_iters,
            seed,
        } = inputs;
        let dim = queries.dim();
        let mut stats = Welford::new(dim);
        stats.add_rows(queries.view());

        let kq = params.resolve_anchors(queries.rows());
        let mut km = BalancedKMeansParams::new(kq);
        km.kmeans.iters = kmeans_iters.max(1);
        km.kmeans.seed = seed.wrapping_add(7);
        km.max_size_factor = 4.0;
        let anchors = km.train(queries.view(), pool).map_err(RouteError::KMeans)?;
        let cap = km.cap(queries.rows());
        let (labels, _) =
            pool.install(|| assign_capped(queries.view(), anchors.centroids.view(), cap, 8));

        // The voters: a seeded subset of the training sample (every row when it is small).
        let rows = sample.rows();
        let keep = params.vote_sample_rows.clamp(1, rows);
        let voter_rows: Vec<usize> = if keep < rows {
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7E57_AB1E);
            let mut v = index::sample(&mut rng, rows, keep).into_vec();
            v.sort_unstable();
            v
        } else {
            (0..rows).collect()
        };
        let mut voters = Vec::with_capacity(keep * dim);
        for &r in &voter_rows {
            voters.extend_from_slice(sample.row(r));
        }
        let voters = Matrix::from_vec(voters, dim)?;
        let votes = params.votes_per_query.clamp(1, voters.rows());
        let metric = match metric {
            Metric::Cosine => Metric::InnerProduct, // both sides are normalised already
            m => m,
        };
        let neighbours =
            pool.install(|| exact_knn(voters.view(), queries.view(), votes, metric))?;

        let mut counts: Vec<HashMap<u32, u32>> = vec![HashMap::new(); kq];
        for (q, list) in neighbours.iter().enumerate() {
            let tally = &mut counts[labels[q] as usize];
            for n in list {
                let row = voter_rows[n.id as usize];
                *tally.entry(sample_labels[row]).or_insert(0) += 1;
            }
        }
        let e = params.edges_per_anchor.max(1);
        let mut edges = vec![u32::MAX; kq * e];
        let (mut kept, mut total) = (0u64, 0u64);
        for (a, tally) in counts.iter().enumerate() {
            let mut v: Vec<(u32, u32)> = tally.iter().map(|(&c, &n)| (c, n)).collect();
            v.sort_unstable_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
            total += v.iter().map(|x| x.1 as u64).sum::<u64>();
            for (slot, &(c, n)) in edges[a * e..(a + 1) * e].iter_mut().zip(&v) {
                *slot = c;
                kept += n as u64;
            }
        }
        Ok(Self {
            anchors: anchors.centroids,
            edges: Matrix::from_vec(edges, e)?,
            stats,
            vote_coverage: if total == 0 {
                0.0
            } else {
                kept as f64 / total as f64
            },
            queries,
        })
    }
}

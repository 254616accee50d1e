//! Stage 2, query-modality anchors and cross-modal edges (DESIGN §4.2).
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

use super::source::BaseSource;
use super::train::Trained;
use super::{BuildError, BuildParams};
use crate::data::{DataError, Matrix, VectorFile};
use crate::distance::Metric;
use crate::exact::exact_knn;
use crate::kmeans::{BalancedKMeansParams, assign_capped};
use crate::stats::Welford;

/// Query anchors with their edges to base clusters.
#[doc(hidden)]
#[derive(Debug)]
pub struct QueryRouting {
    /// `K_q × dim`.
    pub anchors: Matrix<f32>,
    /// `K_q × E` cluster ids, most voted first, `u32::MAX` padding.
    pub edges: Matrix<u32>,
    pub stats: Welford,
    /// Share of votes covered by the kept edges (how well E edges summarise the anchor).
    pub vote_coverage: f64,
    /// The training queries in the build's coordinates (normalised under cosine,
    /// block-scaled), for the hints stage (`hints.m3`).
    pub queries: Matrix<f32>,
}

#[doc(hidden)]
pub fn train_routing(
    params: &BuildParams,
    base: &BaseSource,
    trained: &Trained,
    pool: &rayon::ThreadPool,
) -> Result<Option<QueryRouting>, BuildError> {
    let Some(path) = &params.train_queries else {
        return Ok(None);
    };
    let file = VectorFile::open(path)?;
    let dim = trained.sample.dim();
    if file.dim() != dim {
        return Err(DataError::DimMismatch {
            expected_what: format!("base {}", base.path().display()),
            expected: dim,
            found_what: format!("training queries {}", path.display()),
            found: file.dim(),
        }
        .into());
    }
    let mut queries = file.read_all_f32()?;
    // Training queries are full rows (every block, raw values): the same normalisation and
    // block scales as the base.
    base.prepare_rows(&mut queries, 0, params.metric, Some(path))?;
    let mut stats = Welford::new(dim);
    stats.add_rows(queries.view());

    let kq = params.routing.resolve_anchors(queries.rows());
    let mut km = BalancedKMeansParams::new(kq);
    km.kmeans.iters = params.clusters.kmeans_iters.max(1);
    km.kmeans.seed = params.seed.wrapping_add(7);
    km.max_size_factor = 4.0;
    let anchors = km
        .train(queries.view(), pool)
        .map_err(|source| BuildError::KMeans {
            what: "training queries",
            source,
        })?;
    let cap = km.cap(queries.rows());
    let (labels, _) =
        pool.install(|| assign_capped(queries.view(), anchors.centroids.view(), cap, 8));

    // The voters: a seeded subset of the training sample (every row when it is small).
    let rows = trained.sample.rows();
    let keep = params.routing.vote_sample_rows.clamp(1, rows);
    let voter_rows: Vec<usize> = if keep < rows {
        let mut rng = ChaCha8Rng::seed_from_u64(params.seed ^ 0x7E57_AB1E);
        let mut v = index::sample(&mut rng, rows, keep).into_vec();
        v.sort_unstable();
        v
    } else {
        (0..rows).collect()
    };
    let mut voters = Vec::with_capacity(keep * dim);
    for &r in &voter_rows {
        voters.extend_from_slice(trained.sample.row(r));
    }
    let voters = Matrix::from_vec(voters, dim)?;
    let votes = params.routing.votes_per_query.clamp(1, voters.rows());
    let metric = match params.metric {
        Metric::Cosine => Metric::InnerProduct, // both sides are normalised already
        m => m,
    };
    let neighbours = pool.install(|| exact_knn(voters.view(), queries.view(), votes, metric))?;

    let mut counts: Vec<HashMap<u32, u32>> = vec![HashMap::new(); kq];
    for (q, list) in neighbours.iter().enumerate() {
        let tally = &mut counts[labels[q] as usize];
        for n in list {
            let row = voter_rows[n.id as usize];
            *tally.entry(trained.sample_labels[row]).or_insert(0) += 1;
        }
    }
    let e = params.routing.edges_per_anchor.max(1);
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
    Ok(Some(QueryRouting {
        anchors: anchors.centroids,
        edges: Matrix::from_vec(edges, e)?,
        stats,
        vote_coverage: if total == 0 {
            0.0
        } else {
            kept as f64 / total as f64
        },
        queries,
    }))
}

//! Stage 1, train: one streaming pass over the base collects the per-dimension statistics and
//! a seeded uniform sample; the sample trains the balanced k-means anchors, the anchor graph
//! and the PQ codebooks (on residuals to the anchors).

use rand::SeedableRng;
use rand::seq::index;
use rand_chacha::ChaCha8Rng;

use super::source::BaseSource;
use super::{BuildError, BuildParams};
use crate::data::Matrix;
use crate::distance::{self, Metric};
use crate::kmeans::{BalancedKMeansParams, CentroidSearch, KMeans, TwoLevel, assign_capped_with};
use crate::pq::{PqParams, ProductQuantizer};
use crate::stats::Welford;

/// What training produced.
#[doc(hidden)]
#[derive(Debug)]
pub struct Trained {
    pub stats: Welford,
    /// The training sample (normalised under cosine) and each row's base id.
    pub sample: Matrix<f32>,
    pub sample_ids: Vec<u32>,
    /// Primary cluster of each sample row (capacity-constrained labels of the last iteration).
    pub sample_labels: Vec<u32>,
    pub anchors: KMeans,
    /// The coarse level over the anchors when there are many (see [`CentroidSearch`]).
    pub two_level: Option<TwoLevel>,
    /// `K × anchor_degree` nearest other anchors, nearest first.
    pub anchor_graph: Matrix<u32>,
    pub pq: ProductQuantizer,
}

/// Normalises every row in place (cosine); zero rows were rejected before.
#[doc(hidden)]
pub fn normalize_rows(m: &mut Matrix<f32>) {
    for i in 0..m.rows() {
        let row = m.row_mut(i);
        let n = distance::dot(row, row).sqrt();
        if n > 0.0 {
            row.iter_mut().for_each(|v| *v /= n);
        }
    }
}

/// Reads the base once: statistics over every row, and the rows of a seeded sample of
/// `sample_rows` (sorted ids). Under cosine rows are normalised first and zero rows rejected.
#[doc(hidden)]
pub fn scan_base(
    base: &BaseSource,
    metric: Metric,
    sample_rows: usize,
    seed: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(Welford, Matrix<f32>, Vec<u32>), BuildError> {
    let n = base.rows();
    let dim = base.dim();
    let want = (sample_rows as u64).min(n) as usize;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5A3F_1E00);
    let ids: Vec<u32> = if want as u64 == n {
        (0..n as u32).collect()
    } else {
        let mut v: Vec<u32> = index::sample(&mut rng, n as usize, want)
            .into_iter()
            .map(|i| i as u32)
            .collect();
        v.sort_unstable();
        v
    };
    let mut stats = Welford::new(dim);
    let mut sample = Vec::with_capacity(want * dim);
    let mut next = 0usize;
    for item in base.chunks_prepared(1 << 14, metric) {
        let (first, chunk) = item?;
        stats.add_rows(chunk.view());
        let end = first + chunk.rows() as u64;
        while next < ids.len() && (ids[next] as u64) < end {
            sample.extend_from_slice(chunk.row((ids[next] as u64 - first) as usize));
            next += 1;
        }
        progress(end);
    }
    Ok((stats, Matrix::from_vec(sample, dim)?, ids))
}

/// Trains anchors, anchor graph and PQ (subspaces `pq_bounds`) from the sample.
#[doc(hidden)]
pub fn train(
    params: &BuildParams,
    clusters: usize,
    pq_bounds: Vec<usize>,
    stats: Welford,
    sample: Matrix<f32>,
    sample_ids: Vec<u32>,
    pool: &rayon::ThreadPool,
) -> Result<Trained, BuildError> {
    let mut km = BalancedKMeansParams::new(clusters);
    km.kmeans.iters = params.clusters.kmeans_iters.max(1);
    km.kmeans.seed = params.seed;
    km.max_size_factor = params.clusters.max_size_factor;
    km.nearest = params.clusters.nearest;
    km.nearest.seed = params.seed ^ 0x2_1E7E1;
    let anchors = km
        .train(sample.view(), pool)
        .map_err(|source| BuildError::KMeans {
            what: "base sample",
            source,
        })?;
    let cap = km.cap(sample.rows());
    let search = CentroidSearch::new(anchors.centroids.view(), &km.nearest, pool);
    let (sample_labels, _) = pool.install(|| assign_capped_with(sample.view(), &search, cap, 8));

    let degree = params
        .clusters
        .anchor_degree
        .min(clusters.saturating_sub(1));
    let anchor_graph = pool.install(|| anchor_graph(&search, degree))?;
    let two_level = search.into_two_level();

    // PQ on residuals to the assigned anchor.
    let mut residuals = sample.clone();
    for (i, &l) in sample_labels.iter().enumerate() {
        let c = anchors.centroids.row(l as usize);
        residuals
            .row_mut(i)
            .iter_mut()
            .zip(c)
            .for_each(|(x, c)| *x -= c);
    }
    let mut pqp = PqParams::new(pq_bounds.len() - 1);
    pqp.bounds = Some(pq_bounds);
    pqp.iters = params.pq.iters;
    pqp.sample = params.pq.train_rows;
    pqp.seed = params.seed.wrapping_add(1);
    let pq = pqp.train(residuals.view(), pool)?;
    Ok(Trained {
        stats,
        sample,
        sample_ids,
        sample_labels,
        anchors,
        two_level,
        anchor_graph,
        pq,
    })
}

/// Each anchor's `degree` nearest other anchors (u32::MAX padding when fewer exist).
fn anchor_graph(search: &CentroidSearch<'_>, degree: usize) -> Result<Matrix<u32>, BuildError> {
    let centroids = search.centroids();
    let k = centroids.rows();
    let width = degree.max(1);
    let mut out = vec![u32::MAX; k * width];
    if degree > 0 {
        let t = (degree + 1).min(k);
        let (ids, _) = search.nearest(centroids, t);
        for a in 0..k {
            let row = ids[a * t..(a + 1) * t].iter().filter(|&&j| j as usize != a);
            for (slot, &j) in out[a * width..(a + 1) * width].iter_mut().zip(row) {
                *slot = j;
            }
        }
    }
    Ok(Matrix::from_vec(out, width)?)
}

impl Trained {
    /// Nearest-anchor search over the trained anchors (two levels when they are many).
    pub fn centroid_search(&self) -> CentroidSearch<'_> {
        CentroidSearch::from_parts(self.anchors.centroids.view(), self.two_level.as_ref())
    }

    /// Drops the training sample, its ids and labels (up to a quarter of the RAM budget) once
    /// query routing has used them; later stages need only the model.
    pub fn release_sample(&mut self) {
        self.sample = Matrix::from_vec(Vec::new(), self.sample.dim().max(1))
            .expect("an empty matrix of positive width");
        self.sample_ids = Vec::new();
        self.sample_labels = Vec::new();
    }

    /// Bytes the model keeps in RAM through the later stages: anchors, their two-level
    /// search structure, the anchor graph and the PQ codebooks (the sample once released is
    /// not counted). The assign stage's sort budget is what the RAM budget leaves after it.
    pub fn model_bytes(&self) -> u64 {
        (self.anchors.centroids.as_slice().len() * 4
            + self.two_level.as_ref().map_or(0, TwoLevel::heap_bytes)
            + self.anchor_graph.as_slice().len() * 4
            + self.pq.codebooks().len() * 4
            + self.sample.as_slice().len() * 4
            + self.sample_ids.len() * 4
            + self.sample_labels.len() * 4) as u64
    }
}

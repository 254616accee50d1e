//! `--distance auto`: choosing the rerank distance from calibration pairs (DESIGN §4.3).
//!
//! Calibration pairs are query vectors and the base id of each one's true partner (the image
//! of a caption, the `xmodal` partner file). For every pair the candidates are the query's
//! exact native top-`pool` (what a rerank sees, and more) plus its partner; every setting of
//! the grid (the native metric, and LC-CMD for α × β) ranks the candidates, and the partner's
//! rank gives hit@1 and hit@10. The pairs are split, by a seeded shuffle, into a fitting half
//! and a held-out half: the setting with the best fitting hit@1 (then hit@10; the native metric
//! wins ties) is kept only if on the held-out half its hit@10 is not lower than the native
//! metric's and its hit@1 is higher by more than chance (a one-sided McNemar test at 5% on the
//! pairs where exactly one of the two ranks the partner first). Otherwise the choice is the
//! native metric: a setting that only looked better on a few hundred pairs is not taken.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rayon::prelude::*;

use std::path::Path;

use super::EvalError;
use crate::data::{GroundTruth, MatrixView, VectorFile};
use crate::distance::{self, Metric};
use crate::exact::Neighbor;
use crate::format::files::CALIBRATION_FILE;
use crate::multivec::BlockFiles;
use crate::search::{ExactSearcher, Index, RerankDistance, SearchError, lccmd_weights};

/// Where calibration reads the candidates' full vectors: the base file a single-vector index
/// was built from, or the block files of a multi-vector index (DESIGN §4.6; its calibration
/// queries are full rows, every block, like its training queries, and are ranked with the
/// build's block weights on stored coordinates).
#[derive(Debug, Clone, Copy)]
pub enum CalibrationBase<'a> {
    /// The base file of a single-vector index.
    Single(&'a VectorFile),
    /// The block files of a multi-vector index.
    Blocks(&'a BlockFiles),
}

impl CalibrationBase<'_> {
    fn rows(&self) -> u64 {
        match self {
            Self::Single(f) => f.rows(),
            Self::Blocks(b) => b.rows(),
        }
    }

    fn dim(&self) -> usize {
        match self {
            Self::Single(f) => f.dim(),
            Self::Blocks(b) => b.dim(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Single(f) => f.path().display().to_string(),
            Self::Blocks(b) => (0..b.layout().len())
                .map(|i| format!("{}={}", b.layout().blocks()[i].name, b.path(i).display()))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// Checks the base against the index: shape, and for blocks the same names and dims.
    fn check(&self, index: &Index) -> Result<(), SearchError> {
        let param = |what: String| SearchError::Param {
            name: "calibration",
            what,
        };
        if self.dim() != index.dim() || self.rows() != index.n_vectors() {
            return Err(param(format!(
                "{}: {} × {}, the index has {} × {}",
                self.describe(),
                self.rows(),
                self.dim(),
                index.n_vectors(),
                index.dim()
            )));
        }
        match (self, index.blocks()) {
            (Self::Single(_), None) => Ok(()),
            (Self::Single(f), Some(_)) => Err(param(format!(
                "{}: the index is multi-vector; calibrate it with its block files",
                f.path().display()
            ))),
            (Self::Blocks(_), None) => Err(param(
                "block files given, but the index was built from a single base".into(),
            )),
            (Self::Blocks(b), Some(t)) => {
                if b.layout() != &t.layout() {
                    return Err(param(format!(
                        "the blocks {} differ from the index's ({})",
                        self.describe(),
                        t.blocks
                            .iter()
                            .map(|x| format!("{}:{}", x.name, x.dim))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                Ok(())
            }
        }
    }

    /// Row `id` in the coordinates of [`to_stored`].
    fn stored_row(&self, index: &Index, id: u32, row: &mut Vec<f32>) -> Result<(), SearchError> {
        row.clear();
        match self {
            Self::Single(f) => f.read_rows_f32(id as u64, 1, row)?,
            Self::Blocks(b) => row.extend_from_slice(b.read_rows_f32(id as u64, 1)?.row(0)),
        }
        to_stored(index, row);
        Ok(())
    }
}

/// A full row (base or query) in the coordinates where the index's native distance is the
/// plain metric: normalised under cosine (each block for a multi-vector index); for blocks,
/// block b multiplied by `c_b √ω_b` with the build weights' factors ω_b (module
/// [`crate::search::IndexBlocks`]), so `Σ_b ω_b D_b(c_b q_b, c_b x_b)` is a plain distance and LC-CMD's
/// per-dimension weights act as in the rerank, `Σ_b ω_b Σ_k u_k (c_b q_k − c_b x_k)²`.
fn to_stored(index: &Index, row: &mut [f32]) {
    match index.index_blocks() {
        Some(b) => {
            if index.metric() == Metric::Cosine {
                for blk in b.layout.blocks() {
                    normalize(&mut row[blk.range()]);
                }
            }
            let w = b.weighting(None);
            let factors: Vec<f32> = b
                .scales
                .iter()
                .zip(&w.omega)
                .map(|(&c, &o)| c * o.sqrt())
                .collect();
            crate::multivec::scale::scale_row(&b.layout, row, &factors);
        }
        None if index.metric() == Metric::Cosine => normalize(row),
        None => {}
    }
}

/// The partner (base row) of each of `queries` calibration queries: `identity` (query i's
/// partner is base row i), or an id file (.ibin/.ivecs) whose first column gives each
/// query's partner and which has at least `queries` rows.
pub fn read_partners(spec: &str, queries: usize) -> Result<Vec<u32>, EvalError> {
    if spec == "identity" {
        return Ok((0..queries as u32).collect());
    }
    let gt = GroundTruth::read(Path::new(spec))?;
    if gt.queries() < queries {
        return Err(EvalError::PartnerRows {
            path: spec.into(),
            found: gt.queries(),
            queries,
        });
    }
    Ok(gt
        .ids
        .view()
        .iter_rows()
        .take(queries)
        .map(|r| r[0])
        .collect())
}

/// How calibration runs.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationParams {
    /// Native nearest neighbours per query ranked with the partner.
    pub pool: usize,
    /// Share of the pairs held out to confirm the choice.
    pub holdout: f32,
    /// Seed of the split into fitting and held-out pairs.
    pub seed: u64,
    /// LC-CMD α values tried.
    pub alphas: Vec<f32>,
    /// Shrinkages tried (β = 0 would be plain L2; the native metric is always a candidate).
    pub betas: Vec<f32>,
}

impl Default for CalibrationParams {
    fn default() -> Self {
        Self {
            pool: 100,
            holdout: 0.5,
            seed: 42,
            alphas: vec![0.0, 0.25, 0.5, 0.75, 1.0],
            betas: vec![0.1, 0.25, 0.5, 0.75, 1.0],
        }
    }
}

/// Partner hit rates of one setting on the fitting and the held-out pairs.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CalibrationPoint {
    /// The setting.
    pub distance: RerankDistance,
    /// Share of the fitting pairs whose partner it ranks first.
    pub fit_hit1: f64,
    /// Share of the fitting pairs whose partner it ranks in the first 10.
    pub fit_hit10: f64,
    /// Share of the held-out pairs whose partner it ranks first.
    pub held_hit1: f64,
    /// Share of the held-out pairs whose partner it ranks in the first 10.
    pub held_hit10: f64,
}

/// What calibration measured and chose.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Calibration {
    /// The distance to use: LC-CMD with the chosen (α, β), or the native metric.
    pub choice: RerankDistance,
    /// The setting with the best fitting score (the choice unless the held-out pairs refused it).
    pub best_fit: RerankDistance,
    /// Pairs the settings were fitted on.
    pub fit_pairs: usize,
    /// Pairs held out to confirm the choice.
    pub held_pairs: usize,
    /// Held-out pairs whose partner the best fitting setting ranks first and the native
    /// metric does not.
    pub held_gained: usize,
    /// Held-out pairs whose partner the native metric ranks first and the best fitting
    /// setting does not.
    pub held_lost: usize,
    /// The native metric first, then every LC-CMD setting.
    pub grid: Vec<CalibrationPoint>,
}

impl Calibration {
    /// Stores the choice in the index at `dir`: the manifest's rerank distance (read by
    /// `--distance auto`, [`Index::calibrated_distance`]) and this report as
    /// `calibration.json` (informational), by one crash-safe manifest update
    /// ([`crate::format::update_published`]). The index must not be open for writing
    /// elsewhere; an [`Index`] opened before keeps the distance it read.
    pub fn store(&self, dir: &Path) -> Result<(), EvalError> {
        let json = serde_json::to_vec_pretty(self)?;
        let choice = self.choice;
        crate::format::update_published(dir, &[(CALIBRATION_FILE, &json)], |meta| match choice {
            RerankDistance::LcCmd { alpha, beta } => meta.set_lccmd_distance(alpha, beta),
            RerankDistance::Native => meta.set_native_distance(),
        })?;
        Ok(())
    }

    /// The grid point of the chosen distance.
    pub fn chosen(&self) -> &CalibrationPoint {
        self.grid
            .iter()
            .find(|p| p.distance == self.choice)
            .expect("the choice is on the grid")
    }

    /// The grid point of the native metric.
    pub fn native(&self) -> &CalibrationPoint {
        &self.grid[0]
    }
}

/// One pair's candidates: the query (transformed as the index does) and the candidates'
/// vectors, the partner's position among them.
struct PairCandidates {
    query: Vec<f32>,
    ids: Vec<u32>,
    vectors: Vec<f32>,
    partner: usize,
}

/// Calibrates the rerank distance of `index` on `queries` whose partners are `partners`
/// (base row ids), reading candidate vectors from `base` (the file the index was built from).
pub fn calibrate(
    index: &Index,
    base: CalibrationBase<'_>,
    queries: MatrixView<'_, f32>,
    partners: &[u32],
    params: &CalibrationParams,
    pool: &rayon::ThreadPool,
) -> Result<Calibration, SearchError> {
    check_pairs(index, base, queries, partners, params)?;
    // The LC-CMD settings (errors early when the index has no query statistics).
    let mut settings = vec![(RerankDistance::Native, None)];
    for &beta in &params.betas {
        for &alpha in &params.alphas {
            let w = lccmd_weights(index.stats(), alpha, beta)?;
            settings.push((RerankDistance::LcCmd { alpha, beta }, Some(w)));
        }
    }
    let k_pool = params.pool.clamp(1, index.n_vectors() as usize);
    let metric = index.metric();
    let pairs: Vec<PairCandidates> = pool.install(|| {
        (0..queries.rows())
            .into_par_iter()
            .map_init(
                || ExactSearcher::new(index),
                |s, i| candidates(s, index, base, queries.row(i), partners[i], k_pool),
            )
            .collect::<Result<_, _>>()
    })?;
    // Seeded split into fitting and held-out pairs.
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(params.seed));
    let held = ((pairs.len() as f64 * params.holdout as f64).round() as usize).min(pairs.len() - 1);
    let (held_set, fit_set) = order.split_at(held);
    let dim = index.dim();
    let ranks: Vec<Vec<usize>> = pool.install(|| {
        settings
            .par_iter()
            .map(|(d, w)| {
                pairs
                    .iter()
                    .map(|p| partner_rank(p, dim, metric, *d, w.as_deref()))
                    .collect()
            })
            .collect()
    });
    let rate = |r: &[usize], set: &[usize], within: usize| {
        set.iter().filter(|&&i| r[i] < within).count() as f64 / set.len().max(1) as f64
    };
    let grid: Vec<CalibrationPoint> = settings
        .iter()
        .zip(&ranks)
        .map(|((d, _), r)| CalibrationPoint {
            distance: *d,
            fit_hit1: rate(r, fit_set, 1),
            fit_hit10: rate(r, fit_set, 10),
            held_hit1: rate(r, held_set, 1),
            held_hit10: rate(r, held_set, 10),
        })
        .collect();
    Ok(choose(grid, &ranks, fit_set.len(), held_set))
}

/// Refuses calibration pairs that cannot calibrate `index`: counts that disagree, fewer
/// than 4 pairs, a base that is not the index's, a partner that is not a base row, a holdout
/// outside `[0, 1)`, a query the index cannot score.
fn check_pairs(
    index: &Index,
    base: CalibrationBase<'_>,
    queries: MatrixView<'_, f32>,
    partners: &[u32],
    params: &CalibrationParams,
) -> Result<(), SearchError> {
    let param = |what: String| SearchError::Param {
        name: "calibration",
        what,
    };
    if partners.len() != queries.rows() {
        return Err(param(format!(
            "{} queries but {} partners",
            queries.rows(),
            partners.len()
        )));
    }
    if queries.rows() < 4 {
        return Err(param("need at least 4 calibration pairs".into()));
    }
    base.check(index)?;
    if let Some((i, &p)) = partners
        .iter()
        .enumerate()
        .find(|&(_, &p)| p as u64 >= index.n_vectors())
    {
        return Err(param(format!(
            "pair {i}: partner {p} is not a base row (< {})",
            index.n_vectors()
        )));
    }
    if !(0.0..1.0).contains(&params.holdout) {
        return Err(param(format!("holdout {} not in [0, 1)", params.holdout)));
    }
    for (i, q) in queries.iter_rows().enumerate() {
        index.check_query(i, q)?;
    }
    Ok(())
}

/// The choice from the scored `grid` (`ranks[setting][pair]`: the partner's rank): the
/// setting with the best fitting score (the native metric, first, wins ties), kept only when
/// the held-out pairs confirm it.
fn choose(
    grid: Vec<CalibrationPoint>,
    ranks: &[Vec<usize>],
    fit_pairs: usize,
    held_set: &[usize],
) -> Calibration {
    // Best fitting score; the native metric (first) wins ties.
    let best = grid.iter().enumerate().fold(0, |b, (i, p)| {
        let bp = &grid[b];
        if (p.fit_hit1, p.fit_hit10) > (bp.fit_hit1, bp.fit_hit10) {
            i
        } else {
            b
        }
    });
    // Confirmation on the held-out pairs: hit@10 not lower, and hit@1 better than the native
    // metric by more than chance (one-sided McNemar test on the pairs where exactly one of the
    // two finds the partner first: gained − lost ≥ 1.645·√(gained + lost), and ≥ 1).
    let native = &grid[0];
    let (gained, lost) = held_set.iter().fold((0usize, 0usize), |(g, l), &i| {
        match (ranks[best][i] == 0, ranks[0][i] == 0) {
            (true, false) => (g + 1, l),
            (false, true) => (g, l + 1),
            _ => (g, l),
        }
    });
    let margin = gained as f64 - lost as f64;
    let confirmed = best != 0
        && grid[best].held_hit10 >= native.held_hit10
        && margin >= 1.0
        && margin >= 1.645 * ((gained + lost) as f64).sqrt();
    Calibration {
        choice: if confirmed {
            grid[best].distance
        } else {
            RerankDistance::Native
        },
        best_fit: grid[best].distance,
        fit_pairs,
        held_pairs: held_set.len(),
        held_gained: gained,
        held_lost: lost,
        grid,
    }
}

fn candidates(
    s: &mut ExactSearcher<'_>,
    index: &Index,
    base: CalibrationBase<'_>,
    q: &[f32],
    partner: u32,
    k: usize,
) -> Result<PairCandidates, SearchError> {
    let (near, _) = s.knn(q, k)?;
    let mut ids: Vec<u32> = near.iter().map(|n| n.id).collect();
    let partner_pos = ids.iter().position(|&id| id == partner).unwrap_or_else(|| {
        ids.push(partner);
        ids.len() - 1
    });
    let dim = base.dim();
    let mut vectors = Vec::with_capacity(ids.len() * dim);
    let mut row = Vec::with_capacity(dim);
    for &id in &ids {
        base.stored_row(index, id, &mut row)?;
        vectors.extend_from_slice(&row);
    }
    let mut query = q.to_vec();
    to_stored(index, &mut query);
    Ok(PairCandidates {
        query,
        ids,
        vectors,
        partner: partner_pos,
    })
}

fn normalize(v: &mut [f32]) {
    let n = distance::dot(v, v).sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// The partner's rank among its candidates under `d` (0 = nearest; ties by id, as in search).
fn partner_rank(
    p: &PairCandidates,
    dim: usize,
    metric: Metric,
    d: RerankDistance,
    weights: Option<&[f32]>,
) -> usize {
    let dist = |x: &[f32]| match (d, weights) {
        (RerankDistance::LcCmd { .. }, Some(w)) => distance::weighted_l2_sq(&p.query, x, w),
        _ => match metric {
            Metric::L2 => distance::l2_sq(&p.query, x),
            _ => -distance::dot(&p.query, x),
        },
    };
    let all: Vec<Neighbor> = p
        .vectors
        .chunks_exact(dim)
        .zip(&p.ids)
        .map(|(x, &id)| Neighbor { id, dist: dist(x) })
        .collect();
    let target = all[p.partner];
    all.iter()
        .filter(|n| n.cmp_total(&target) == std::cmp::Ordering::Less)
        .count()
}

/// Partner hit@1 and hit@10 of `distance` on pairs (`queries`, `partners`), ranking each
/// partner among the query's exact native top-`pool` the way [`calibrate`] does: for judging
/// a choice on pairs calibration did not see.
pub fn partner_hits(
    index: &Index,
    base: CalibrationBase<'_>,
    queries: MatrixView<'_, f32>,
    partners: &[u32],
    distance: RerankDistance,
    pool_size: usize,
    pool: &rayon::ThreadPool,
) -> Result<(f64, f64), SearchError> {
    if partners.len() != queries.rows() || queries.rows() == 0 {
        return Err(SearchError::Param {
            name: "calibration",
            what: format!("{} queries but {} partners", queries.rows(), partners.len()),
        });
    }
    base.check(index)?;
    let weights = match distance {
        RerankDistance::LcCmd { alpha, beta } => Some(lccmd_weights(index.stats(), alpha, beta)?),
        RerankDistance::Native => None,
    };
    let metric = index.metric();
    let k = pool_size.clamp(1, index.n_vectors() as usize);
    let ranks: Vec<usize> = pool.install(|| {
        (0..queries.rows())
            .into_par_iter()
            .map_init(
                || ExactSearcher::new(index),
                |s, i| {
                    candidates(s, index, base, queries.row(i), partners[i], k).map(|p| {
                        partner_rank(&p, index.dim(), metric, distance, weights.as_deref())
                    })
                },
            )
            .collect::<Result<_, _>>()
    })?;
    let n = ranks.len() as f64;
    Ok((
        ranks.iter().filter(|&&r| r < 1).count() as f64 / n,
        ranks.iter().filter(|&&r| r < 10).count() as f64 / n,
    ))
}

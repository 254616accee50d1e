//! How cross-modal is a data set? The statistics that `docs/GENERATOR.md` compares between the
//! real FashionCLIP fixture and generated sets, computed on in-memory matrices:
//!
//! - the modality gap `|mean(base) − mean(queries)|` and the two mean norms;
//! - the per-dimension variance ratio base/queries (min, 5%, median, 95%, max);
//! - with partners: partner hit@1 / hit@10 under inner product (rank = number of base rows
//!   scoring strictly higher than the partner);
//! - with a k-means of the base (K clusters, [`crate::kmeans`]): how many distinct clusters hold
//!   a query's exact inner-product top-10, and the share of the top-10 inside the cluster of
//!   the query's nearest centroid (L2), i.e. what probing one cluster would find;
//! - how far the queries sit from the base: the mean inner product of a query with its exact
//!   top-1 and over its top-k;
//! - what probing `nprobe` clusters finds: the share of a query's top-k inside the `nprobe`
//!   clusters whose centroids score highest by inner product (the order the index ranks base
//!   centroids in for the ip and cosine metrics), for each `nprobe` of [`StatsParams::nprobe`].
//!
//! Nothing here needs partners: on a real set without them (`partners = None`) only the two
//! partner hit rates are missing.

use rayon::prelude::*;

use crate::data::MatrixView;
use crate::kmeans::{KMeansError, KMeansParams};
use crate::linalg;

/// Errors of [`CrossModalStats::measure`].
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("base has dimension {base}, queries have {queries}")]
    DimMismatch { base: usize, queries: usize },
    #[error("base and queries must both hold rows")]
    Empty,
    #[error("{found} partner ids for {queries} queries")]
    PartnerCount { queries: usize, found: usize },
    #[error("partner id {id} of query {query} is outside the {rows} base rows")]
    PartnerRange { query: usize, id: u32, rows: usize },
    #[error("top_k = {top_k} must be in 1..={rows} (the base rows)")]
    TopK { top_k: usize, rows: usize },
    #[error(transparent)]
    KMeans(#[from] KMeansError),
}

/// What to measure.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsParams {
    /// Clusters of the base k-means.
    pub kmeans_k: usize,
    pub kmeans_seed: u64,
    pub kmeans_iters: usize,
    /// Size of the exact neighbour lists (10 in every table of the docs).
    pub top_k: usize,
    /// Probe widths whose coverage of the top-k is measured (each capped at `kmeans_k`).
    pub nprobe: Vec<usize>,
}

impl StatsParams {
    pub fn new(kmeans_k: usize) -> Self {
        Self {
            kmeans_k,
            kmeans_seed: 0,
            kmeans_iters: 20,
            top_k: 10,
            nprobe: vec![1, 4, 16, 64],
        }
    }
}

/// The measured statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct CrossModalStats {
    pub base_rows: usize,
    pub query_rows: usize,
    pub dim: usize,
    pub base_mean_norm: f64,
    pub query_mean_norm: f64,
    /// `|mean(base) − mean(queries)|`.
    pub modality_gap: f64,
    /// Per-dimension variance ratio base/queries: min, 5%, median, 95%, max.
    pub var_ratio: [f64; 5],
    /// Partner hit@1 and hit@top_k under inner product (when partners were given).
    pub partner_hit_at_1: Option<f64>,
    pub partner_hit_at_k: Option<f64>,
    pub kmeans_k: usize,
    pub top_k: usize,
    /// Mean number of distinct base clusters holding a query's exact top-k.
    pub clusters_per_query_mean: f64,
    /// `clusters_per_query_hist[c]` = queries whose top-k lies in exactly `c` clusters.
    pub clusters_per_query_hist: Vec<usize>,
    /// Mean share of a query's top-k inside the cluster of its nearest centroid (L2).
    pub top_k_in_nearest_cluster: f64,
    /// Norm of the k-means centroids, 5% / median / 95%. On unit-norm rows `|c|²` is about
    /// the mean inner product between two rows of the cluster: how tight the clusters are.
    pub centroid_norm: [f64; 3],
    /// Mean inner product of a query with its exact nearest base row.
    pub top1_ip_mean: f64,
    /// Mean inner product of a query with the rows of its exact top-k (over all of them).
    pub top_k_ip_mean: f64,
    /// What the `nprobe` clusters whose centroids have the largest inner product with the
    /// query hold, one entry per [`StatsParams::nprobe`].
    pub probe_coverage: Vec<ProbeCoverage>,
}

/// The share of the exact answers inside a query's `nprobe` best clusters, averaged over the
/// queries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeCoverage {
    pub nprobe: usize,
    /// Share of the top-k.
    pub top_k: f64,
    /// Share of queries whose top-1 is inside.
    pub top_1: f64,
}

impl CrossModalStats {
    pub fn measure(
        base: MatrixView<'_, f32>,
        queries: MatrixView<'_, f32>,
        partners: Option<&[u32]>,
        params: &StatsParams,
        pool: &rayon::ThreadPool,
    ) -> Result<Self, StatsError> {
        check_inputs(base, queries, partners, params.top_k)?;
        let top_k = params.top_k;
        let (mean_b, var_b) = mean_var(base);
        let (mean_q, var_q) = mean_var(queries);
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let diff: Vec<f64> = mean_b.iter().zip(&mean_q).map(|(a, b)| a - b).collect();
        let mut ratios: Vec<f64> = var_b
            .iter()
            .zip(&var_q)
            .map(|(b, q)| if *q > 0.0 { b / q } else { f64::INFINITY })
            .collect();
        ratios.sort_unstable_by(f64::total_cmp);
        let quantile = |q: f64| ratios[((ratios.len() - 1) as f64 * q).round() as usize];

        let (top, top_scores, partner_rank) = exact_top_k_ip(base, queries, partners, top_k, pool);
        let (hit1, hitk) = match &partner_rank {
            Some(ranks) => {
                let n = ranks.len() as f64;
                (
                    Some(ranks.iter().filter(|&&r| r < 1).count() as f64 / n),
                    Some(ranks.iter().filter(|&&r| r < top_k).count() as f64 / n),
                )
            }
            None => (None, None),
        };
        let spread = ClusterSpread::measure(base, queries, &top, params, pool)?;
        let nq = queries.rows() as f64;
        let top1_ip_mean = top_scores
            .chunks_exact(top_k)
            .map(|s| s[0] as f64)
            .sum::<f64>()
            / nq;
        let top_k_ip_mean = top_scores.iter().map(|&s| s as f64).sum::<f64>() / (nq * top_k as f64);
        let clusters_mean = spread
            .hist
            .iter()
            .enumerate()
            .map(|(c, &n)| (c * n) as f64)
            .sum::<f64>()
            / nq;

        Ok(Self {
            base_rows: base.rows(),
            query_rows: queries.rows(),
            dim: base.dim(),
            base_mean_norm: norm(&mean_b),
            query_mean_norm: norm(&mean_q),
            modality_gap: norm(&diff),
            var_ratio: [
                quantile(0.0),
                quantile(0.05),
                quantile(0.5),
                quantile(0.95),
                quantile(1.0),
            ],
            partner_hit_at_1: hit1,
            partner_hit_at_k: hitk,
            kmeans_k: params.kmeans_k,
            top_k,
            clusters_per_query_mean: clusters_mean,
            clusters_per_query_hist: spread.hist,
            top_k_in_nearest_cluster: spread.in_nearest / nq,
            centroid_norm: spread.centroid_norm,
            top1_ip_mean,
            top_k_ip_mean,
            probe_coverage: spread.probe_coverage,
        })
    }

    /// `log10(max / min)` of the per-dimension variance ratio.
    pub fn var_ratio_orders(&self) -> f64 {
        (self.var_ratio[4] / self.var_ratio[0]).log10()
    }
}

/// Refuses inputs the statistics cannot be measured on.
fn check_inputs(
    base: MatrixView<'_, f32>,
    queries: MatrixView<'_, f32>,
    partners: Option<&[u32]>,
    top_k: usize,
) -> Result<(), StatsError> {
    if base.dim() != queries.dim() {
        return Err(StatsError::DimMismatch {
            base: base.dim(),
            queries: queries.dim(),
        });
    }
    if base.is_empty() || queries.is_empty() {
        return Err(StatsError::Empty);
    }
    if top_k == 0 || top_k > base.rows() {
        return Err(StatsError::TopK {
            top_k,
            rows: base.rows(),
        });
    }
    if let Some(p) = partners {
        if p.len() != queries.rows() {
            return Err(StatsError::PartnerCount {
                queries: queries.rows(),
                found: p.len(),
            });
        }
        if let Some((query, &id)) = p
            .iter()
            .enumerate()
            .find(|(_, id)| **id as usize >= base.rows())
        {
            return Err(StatsError::PartnerRange {
                query,
                id,
                rows: base.rows(),
            });
        }
    }
    Ok(())
}

/// Where the queries' exact answers fall among k-means clusters of the base.
struct ClusterSpread {
    /// `hist[c]` = queries whose top-k lies in exactly `c` clusters.
    hist: Vec<usize>,
    /// Sum over the queries of the share of the top-k inside the nearest centroid's cluster.
    in_nearest: f64,
    probe_coverage: Vec<ProbeCoverage>,
    /// Norm of the centroids, 5% / median / 95%.
    centroid_norm: [f64; 3],
}

impl ClusterSpread {
    /// Clusters the base (`params.kmeans_k`) and places every query's exact top-k (`top`,
    /// `queries × top_k` base rows) in them.
    fn measure(
        base: MatrixView<'_, f32>,
        queries: MatrixView<'_, f32>,
        top: &[u32],
        params: &StatsParams,
        pool: &rayon::ThreadPool,
    ) -> Result<Self, StatsError> {
        let top_k = params.top_k;
        let km = KMeansParams {
            seed: params.kmeans_seed,
            iters: params.kmeans_iters,
            ..KMeansParams::new(params.kmeans_k)
        }
        .train(base, pool)?;
        let labels = km.assign(base, pool);
        let mut hist = vec![0usize; top_k + 1];
        let mut in_nearest = 0.0f64;
        for (qi, ids) in top.chunks_exact(top_k).enumerate() {
            let mut clusters: Vec<u32> = ids.iter().map(|&i| labels[i as usize]).collect();
            let home = km.nearest_n(queries.row(qi), 1)[0];
            in_nearest += clusters.iter().filter(|&&c| c == home).count() as f64 / top_k as f64;
            clusters.sort_unstable();
            clusters.dedup();
            hist[clusters.len()] += 1;
        }
        let probe_coverage = probe_coverage(
            km.centroids.view(),
            queries,
            top,
            &labels,
            top_k,
            &params.nprobe,
        );
        let mut norms: Vec<f64> = km
            .centroids
            .view()
            .iter_rows()
            .map(|c| (c.iter().map(|&x| x as f64 * x as f64).sum::<f64>()).sqrt())
            .collect();
        norms.sort_unstable_by(f64::total_cmp);
        let at = |q: f64| norms[((norms.len() - 1) as f64 * q).round() as usize];
        let centroid_norm = [at(0.05), at(0.5), at(0.95)];
        Ok(Self {
            hist,
            in_nearest,
            probe_coverage,
            centroid_norm,
        })
    }
}

/// A Markdown table with one column per data set, the rows of [`CrossModalStats`].
pub fn comparison_table(columns: &[(&str, &CrossModalStats)]) -> String {
    let mut out = String::new();
    let header: Vec<&str> = columns.iter().map(|c| c.0).collect();
    out.push_str(&format!("| statistic | {} |\n", header.join(" | ")));
    out.push_str(&format!("|---|{}\n", "---|".repeat(columns.len())));
    let opt = |v: Option<f64>| v.map_or("–".to_string(), |x| format!("{x:.3}"));
    let hist = |s: &CrossModalStats| {
        s.clusters_per_query_hist
            .iter()
            .enumerate()
            .skip(1)
            .map(|(_, &n)| format!("{:.0}", 100.0 * n as f64 / s.query_rows as f64))
            .collect::<Vec<_>>()
            .join("/")
    };
    type Row = (String, Box<dyn Fn(&CrossModalStats) -> String>);
    let rows: Vec<Row> = vec![
        (
            "base × queries × dim".into(),
            Box::new(|s| format!("{} × {} × {}", s.base_rows, s.query_rows, s.dim)),
        ),
        (
            "\\|mean(base)\\| / \\|mean(queries)\\|".into(),
            Box::new(|s| format!("{:.3} / {:.3}", s.base_mean_norm, s.query_mean_norm)),
        ),
        (
            "modality gap \\|mean(base) − mean(queries)\\|".into(),
            Box::new(|s| format!("{:.3}", s.modality_gap)),
        ),
        (
            "variance ratio base/queries: min".into(),
            Box::new(|s| format!("{:.4}", s.var_ratio[0])),
        ),
        (
            "… 5% / median / 95%".into(),
            Box::new(|s| {
                format!(
                    "{:.2} / {:.2} / {:.2}",
                    s.var_ratio[1], s.var_ratio[2], s.var_ratio[3]
                )
            }),
        ),
        (
            "… max".into(),
            Box::new(|s| format!("{:.1}", s.var_ratio[4])),
        ),
        (
            "… orders of magnitude log10(max/min)".into(),
            Box::new(|s| format!("{:.2}", s.var_ratio_orders())),
        ),
        (
            "partner hit@1 (ip)".into(),
            Box::new(move |s| opt(s.partner_hit_at_1)),
        ),
        (
            "partner hit@10 (ip)".into(),
            Box::new(move |s| opt(s.partner_hit_at_k)),
        ),
        (
            "k-means K (base rows per cluster)".into(),
            Box::new(|s| {
                format!(
                    "{} ({:.0})",
                    s.kmeans_k,
                    s.base_rows as f64 / s.kmeans_k as f64
                )
            }),
        ),
        (
            "k-means centroid norm 5% / median / 95%".into(),
            Box::new(|s| {
                let c = s.centroid_norm;
                format!("{:.2} / {:.2} / {:.2}", c[0], c[1], c[2])
            }),
        ),
        (
            "clusters holding a query's top-10: mean".into(),
            Box::new(|s| format!("{:.2}", s.clusters_per_query_mean)),
        ),
        (
            "… % of queries with 1/2/…/10 clusters".into(),
            Box::new(hist),
        ),
        (
            "share of top-10 in the nearest centroid's cluster".into(),
            Box::new(|s| format!("{:.3}", s.top_k_in_nearest_cluster)),
        ),
        (
            "mean ip with top-1 / over the top-10".into(),
            Box::new(|s| format!("{:.3} / {:.3}", s.top1_ip_mean, s.top_k_ip_mean)),
        ),
        (
            "top-10 covered by the nprobe best centroids (ip): nprobe → share".into(),
            Box::new(|s| {
                s.probe_coverage
                    .iter()
                    .map(|c| format!("{}: {:.3}", c.nprobe, c.top_k))
                    .collect::<Vec<_>>()
                    .join(", ")
            }),
        ),
        (
            "… the same for the top-1".into(),
            Box::new(|s| {
                s.probe_coverage
                    .iter()
                    .map(|c| format!("{}: {:.3}", c.nprobe, c.top_1))
                    .collect::<Vec<_>>()
                    .join(", ")
            }),
        ),
    ];
    for (name, f) in rows {
        let cells: Vec<String> = columns.iter().map(|(_, s)| f(s)).collect();
        out.push_str(&format!("| {name} | {} |\n", cells.join(" | ")));
    }
    out
}

/// Per-dimension mean and (population) variance, in f64.
fn mean_var(m: MatrixView<'_, f32>) -> (Vec<f64>, Vec<f64>) {
    let n = m.rows() as f64;
    let mut mean = vec![0.0f64; m.dim()];
    for r in m.iter_rows() {
        mean.iter_mut().zip(r).for_each(|(s, &v)| *s += v as f64);
    }
    mean.iter_mut().for_each(|s| *s /= n);
    let mut var = vec![0.0f64; m.dim()];
    for r in m.iter_rows() {
        var.iter_mut()
            .zip(r)
            .zip(&mean)
            .for_each(|((s, &v), mu)| *s += (v as f64 - mu).powi(2));
    }
    var.iter_mut().for_each(|s| *s /= n);
    (mean, var)
}

/// Mean share of each query's top-k (flattened `queries × k` ids) inside the `nprobe` clusters
/// whose centroids have the largest inner product with the query (ties to the lower id), for
/// every `nprobe` of `widths` (capped at the number of centroids).
fn probe_coverage(
    centroids: MatrixView<'_, f32>,
    queries: MatrixView<'_, f32>,
    top: &[u32],
    labels: &[u32],
    k: usize,
    widths: &[usize],
) -> Vec<ProbeCoverage> {
    let kc = centroids.rows();
    let widest = widths.iter().copied().max().unwrap_or(0).min(kc);
    let mut covered = vec![0usize; widths.len()];
    let mut first = vec![0usize; widths.len()];
    let mut scores = Vec::new();
    // rank[c] = position of cluster c in the query's probe order (kc when beyond `widest`).
    let mut rank = vec![kc; kc];
    let mut order: Vec<u32> = Vec::with_capacity(kc);
    for (qi, ids) in top.chunks_exact(k).enumerate() {
        linalg::dot_products(queries.slice_rows(qi, qi + 1), centroids, &mut scores);
        order.clear();
        order.extend(0..kc as u32);
        let better = |a: &u32, b: &u32| {
            scores[*b as usize]
                .total_cmp(&scores[*a as usize])
                .then(a.cmp(b))
        };
        if widest > 0 && widest < kc {
            order.select_nth_unstable_by(widest - 1, better);
        }
        order.truncate(widest);
        order.sort_unstable_by(better);
        for (pos, &c) in order.iter().enumerate() {
            rank[c as usize] = pos;
        }
        let inside = |i: u32, n: usize| rank[labels[i as usize] as usize] < n.min(kc);
        for ((w, f), &n) in covered.iter_mut().zip(first.iter_mut()).zip(widths) {
            *w += ids.iter().filter(|&&i| inside(i, n)).count();
            *f += usize::from(inside(ids[0], n));
        }
        for &c in &order {
            rank[c as usize] = kc;
        }
    }
    let total = top.len().max(1) as f64;
    let queries = (top.len() / k).max(1) as f64;
    widths
        .iter()
        .zip(covered.iter().zip(&first))
        .map(|(&nprobe, (&c, &f))| ProbeCoverage {
            nprobe,
            top_k: c as f64 / total,
            top_1: f as f64 / queries,
        })
        .collect()
}

/// Exact top-k base rows of every query by inner product (best first, ties to the lower id),
/// flattened `queries × k`, their scores, and the partner rank (rows scoring strictly higher)
/// when partners are given.
fn exact_top_k_ip(
    base: MatrixView<'_, f32>,
    queries: MatrixView<'_, f32>,
    partners: Option<&[u32]>,
    k: usize,
    pool: &rayon::ThreadPool,
) -> (Vec<u32>, Vec<f32>, Option<Vec<usize>>) {
    const BLOCK: usize = 64;
    let n = base.rows();
    let per_block: Vec<(Vec<u32>, Vec<f32>, Vec<usize>)> = pool.install(|| {
        (0..queries.rows().div_ceil(BLOCK))
            .into_par_iter()
            .map(|b| {
                let start = b * BLOCK;
                let end = (start + BLOCK).min(queries.rows());
                let mut scores = Vec::new();
                linalg::dot_products(queries.slice_rows(start, end), base, &mut scores);
                let mut top = Vec::with_capacity((end - start) * k);
                let mut top_scores = Vec::with_capacity((end - start) * k);
                let mut ranks = Vec::new();
                let mut order: Vec<u32> = Vec::with_capacity(n);
                for (i, row) in scores.chunks_exact(n).enumerate() {
                    order.clear();
                    order.extend(0..n as u32);
                    let better = |a: &u32, b: &u32| {
                        row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b))
                    };
                    if k < n {
                        order.select_nth_unstable_by(k - 1, better);
                    }
                    order.truncate(k);
                    order.sort_unstable_by(better);
                    top.extend_from_slice(&order);
                    top_scores.extend(order.iter().map(|&j| row[j as usize]));
                    if let Some(p) = partners {
                        let s = row[p[start + i] as usize];
                        ranks.push(row.iter().filter(|&&x| x > s).count());
                    }
                }
                (top, top_scores, ranks)
            })
            .collect()
    });
    let mut top = Vec::with_capacity(queries.rows() * k);
    let mut top_scores = Vec::with_capacity(queries.rows() * k);
    let mut ranks = Vec::new();
    for (t, s, r) in per_block {
        top.extend(t);
        top_scores.extend(s);
        ranks.extend(r);
    }
    (top, top_scores, partners.map(|_| ranks))
}

//! How cross-modal is a data set? The statistics that `docs/GENERATOR.md` compares between the
//! real FashionCLIP fixture and generated sets, computed on in-memory matrices:
//!
//! - the modality gap `|mean(base) − mean(queries)|` and the two mean norms;
//! - the per-dimension variance ratio base/queries (min, 5%, median, 95%, max);
//! - with partners: partner hit@1 / hit@10 under inner product (rank = number of base rows
//!   scoring strictly higher than the partner);
//! - with a k-means of the base (K clusters, [`crate::kmeans`]): how many distinct clusters hold
//!   a query's exact inner-product top-10, and the share of the top-10 inside the cluster of
//!   the query's nearest centroid (L2), i.e. what probing one cluster would find.

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
}

impl StatsParams {
    pub fn new(kmeans_k: usize) -> Self {
        Self {
            kmeans_k,
            kmeans_seed: 0,
            kmeans_iters: 20,
            top_k: 10,
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
}

impl CrossModalStats {
    pub fn measure(
        base: MatrixView<'_, f32>,
        queries: MatrixView<'_, f32>,
        partners: Option<&[u32]>,
        params: &StatsParams,
        pool: &rayon::ThreadPool,
    ) -> Result<Self, StatsError> {
        if base.dim() != queries.dim() {
            return Err(StatsError::DimMismatch {
                base: base.dim(),
                queries: queries.dim(),
            });
        }
        if base.is_empty() || queries.is_empty() {
            return Err(StatsError::Empty);
        }
        let top_k = params.top_k;
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

        let (top, partner_rank) = exact_top_k_ip(base, queries, partners, top_k, pool);
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
        let nq = queries.rows() as f64;
        let clusters_mean = hist
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
            clusters_per_query_hist: hist,
            top_k_in_nearest_cluster: in_nearest / nq,
        })
    }

    /// `log10(max / min)` of the per-dimension variance ratio.
    pub fn var_ratio_orders(&self) -> f64 {
        (self.var_ratio[4] / self.var_ratio[0]).log10()
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

/// Exact top-k base rows of every query by inner product (best first, ties to the lower id),
/// flattened `queries × k`, and the partner rank (rows scoring strictly higher) when given.
fn exact_top_k_ip(
    base: MatrixView<'_, f32>,
    queries: MatrixView<'_, f32>,
    partners: Option<&[u32]>,
    k: usize,
    pool: &rayon::ThreadPool,
) -> (Vec<u32>, Option<Vec<usize>>) {
    const BLOCK: usize = 64;
    let n = base.rows();
    let per_block: Vec<(Vec<u32>, Vec<usize>)> = pool.install(|| {
        (0..queries.rows().div_ceil(BLOCK))
            .into_par_iter()
            .map(|b| {
                let start = b * BLOCK;
                let end = (start + BLOCK).min(queries.rows());
                let mut scores = Vec::new();
                linalg::dot_products(queries.slice_rows(start, end), base, &mut scores);
                let mut top = Vec::with_capacity((end - start) * k);
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
                    if let Some(p) = partners {
                        let s = row[p[start + i] as usize];
                        ranks.push(row.iter().filter(|&&x| x > s).count());
                    }
                }
                (top, ranks)
            })
            .collect()
    });
    let mut top = Vec::with_capacity(queries.rows() * k);
    let mut ranks = Vec::new();
    for (t, r) in per_block {
        top.extend(t);
        ranks.extend(r);
    }
    (top, partners.map(|_| ranks))
}

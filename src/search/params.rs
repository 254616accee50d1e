//! Search parameters (the knobs `m3 search`, `bench` and `tune` turn, and the server's
//! `knobs`): their defaults, defined once here, and the one check of a setting against an
//! index ([`SearchParams::validate`]).

use super::SearchError;
use super::index::Index;

/// Per-query knobs. The defaults favour recall@10 ≈ 0.95 on the data sets in
/// docs/BENCHMARKS.md; `m3 tune` finds the cheapest setting for a recall target.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SearchParams {
    /// Neighbours returned.
    pub k: usize,
    /// Base clusters probed, nearest anchors first.
    pub nprobe: usize,
    /// Query-modality anchors consulted (multi-entry routing); 0 = base anchors only.
    pub qprobe: usize,
    /// Cross-modal edges followed per consulted query anchor.
    pub edges: usize,
    /// Nearest training queries whose exact answers (`hints.m3`) are scored as candidates,
    /// wherever their clusters are; 0 = none. Ignored by an index without hints and by
    /// weighted multi-vector queries.
    pub hints: usize,
    /// Answers taken from each of those training queries (best first); 0 = all stored.
    pub hint_depth: usize,
    /// Candidates (best by PQ) whose records are read and reranked exactly.
    pub rerank: usize,
    /// Candidates (best by PQ) re-ranked in RAM with the refinement codes (`refine.m3`,
    /// decision 0008) before the best `rerank` of them are read; 0 = no refinement. Ignored
    /// when it is not above `rerank`, by an index without refinement codes and by weighted
    /// multi-vector queries.
    pub refine: usize,
    /// Rounds along the neighbour lists of the best results (each one I/O round).
    pub expand_rounds: usize,
    /// Best results whose neighbour lists feed a round.
    pub expand_from: usize,
    /// Records read per round (best by PQ among the new neighbours).
    pub expand_read: usize,
    /// Skip a probed cluster when the triangle-inequality lower bound of its members'
    /// distances (from the anchor distance and the cluster radius r_max) cannot beat the
    /// current worst rerank candidate.
    pub early_stop: bool,
    /// Distance used by the exact rerank.
    pub distance: RerankDistance,
    /// Multi-vector indexes only: one weight w_b ≥ 0 per block of the index (0 = the query
    /// does not give the block); `None` = every block with its build weight. Distances are
    /// `Σ_b w_b · D_b` on standardised blocks ([`crate::multivec::scale`]);
    /// [`super::Index::block_weights`] makes this from names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_weights: Option<Vec<f32>>,
    /// Coarse groups searched by two-level routing (indexes with many anchors, see
    /// `route::Router`); 0 = automatic (max(16, n/4) for n anchors wanted). Ignored when the
    /// anchors are few enough to be scanned.
    pub route_groups: usize,
}

/// The distance of the exact rerank (DESIGN §4.3).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum RerankDistance {
    /// The index's metric.
    Native,
    /// LC-CMD: `Σ_k w_k (q_k − x_k)²` with `w_k = 1 / (α σ²_query,k + (1 − α) σ²_base,k + ε)`,
    /// normalised to mean 1 and blended toward isotropic: `(1 − β) + β·w_k` (β = 0 is plain
    /// L2, which ranks unit vectors like the inner product).
    LcCmd {
        /// α in `[0, 1]`: weight of the query modality's variance.
        alpha: f32,
        /// β in `[0, 1]`: blend toward the LC-CMD weights (0 = isotropic).
        beta: f32,
    },
}

impl SearchParams {
    /// Neighbours per query when the caller does not say (`m3 search --k`, the server's `k`).
    pub const DEFAULT_K: usize = 10;
    /// Base clusters probed by default.
    pub const DEFAULT_NPROBE: usize = 16;
    /// Query-modality anchors consulted by default.
    pub const DEFAULT_QPROBE: usize = 4;
    /// Cross-modal edges followed per query anchor by default.
    pub const DEFAULT_EDGES: usize = 8;
    /// Nearest training queries whose answers are scored, by default.
    pub const DEFAULT_HINTS: usize = 16;
    /// 0: every answer the index stores.
    pub const DEFAULT_HINT_DEPTH: usize = 0;
    /// Candidates re-ranked by the refinement codes, by default.
    pub const DEFAULT_REFINE: usize = 100;
    /// Rounds along neighbour lists are opt-in.
    pub const DEFAULT_EXPAND_ROUNDS: usize = 0;
    /// 0: automatic.
    pub const DEFAULT_ROUTE_GROUPS: usize = 0;
    /// LC-CMD α when a caller asks for LC-CMD without one.
    pub const DEFAULT_LCCMD_ALPHA: f32 = 0.5;
    /// LC-CMD β when a caller asks for LC-CMD without one.
    pub const DEFAULT_LCCMD_BETA: f32 = 1.0;

    /// Candidates reranked by default for `k`: 4·max(k, 10).
    pub fn default_rerank(k: usize) -> usize {
        4 * k.max(10)
    }

    /// Best results whose neighbour lists feed a round, by default: k.
    pub fn default_expand_from(k: usize) -> usize {
        k
    }

    /// Records read per round by default: 2·max(k, 10).
    pub fn default_expand_read(k: usize) -> usize {
        2 * k.max(10)
    }

    /// Every knob at its default for `k` (the constants above), the native rerank distance
    /// and the build's block weights.
    pub fn new(k: usize) -> Self {
        Self {
            k,
            nprobe: Self::DEFAULT_NPROBE,
            qprobe: Self::DEFAULT_QPROBE,
            edges: Self::DEFAULT_EDGES,
            hints: Self::DEFAULT_HINTS,
            hint_depth: Self::DEFAULT_HINT_DEPTH,
            rerank: Self::default_rerank(k),
            refine: Self::DEFAULT_REFINE,
            expand_rounds: Self::DEFAULT_EXPAND_ROUNDS,
            expand_from: Self::default_expand_from(k),
            expand_read: Self::default_expand_read(k),
            early_stop: true,
            distance: RerankDistance::Native,
            block_weights: None,
            route_groups: Self::DEFAULT_ROUTE_GROUPS,
        }
    }

    /// Checks these parameters against `index`: the one contract of every search (the
    /// searcher checks it before each query, the server before it queues a request).
    ///
    /// - `k` is in `1..=n_vectors`;
    /// - block weights are given only to a multi-vector index, one per block, finite, ≥ 0,
    ///   one at least positive;
    /// - some cluster is probed: `nprobe > 0`, or query anchors that lead somewhere (the
    ///   index has some, `qprobe > 0`, `edges > 0`), or hints (the index has some,
    ///   `hints > 0`, and the query is not a weighted multi-vector one);
    /// - LC-CMD only on an index built with training queries, with α and β in `[0, 1]`.
    ///
    /// Errors name the knob at fault (`SearchError::Param { name, .. }`, or `KZero` /
    /// `KTooLarge` for `k`).
    pub fn validate(&self, index: &Index) -> Result<(), SearchError> {
        if self.k == 0 {
            return Err(SearchError::KZero);
        }
        if self.k as u64 > index.live_vectors() {
            return Err(SearchError::KTooLarge {
                k: self.k,
                n: index.live_vectors(),
            });
        }
        match (&index.blocks, &self.block_weights) {
            (None, Some(_)) => {
                return Err(SearchError::Param {
                    name: "block_weights",
                    what: "the index has no blocks (built from a single --base)".into(),
                });
            }
            (Some(b), Some(w)) => b.check_weights(w)?,
            _ => {}
        }
        self.check_route(index)?;
        if let RerankDistance::LcCmd { alpha, beta } = self.distance {
            if !index.stats().has_query_stats {
                return Err(SearchError::Param {
                    name: "distance",
                    what: "LC-CMD needs query-modality statistics; this index was built \
                           without training queries"
                        .into(),
                });
            }
            for (name, v) in [("alpha", alpha), ("beta", beta)] {
                if !(0.0..=1.0).contains(&v) {
                    return Err(SearchError::Param {
                        name,
                        what: format!("LC-CMD {name} must be in [0, 1], got {v}"),
                    });
                }
            }
        }
        Ok(())
    }

    /// The nprobe rule: `nprobe = 0` needs another route to some cluster.
    fn check_route(&self, index: &Index) -> Result<(), SearchError> {
        // Hints alone are a route too (for queries they serve: not weighted multi-vector ones).
        let hinted = self.hints > 0 && index.n_hint_queries() > 0 && self.block_weights.is_none();
        if self.nprobe > 0 || hinted {
            return Ok(());
        }
        let why = if index.n_query_anchors() == 0 {
            "the index has no query anchors (built without training queries)"
        } else if self.qprobe == 0 {
            "qprobe is 0 too"
        } else if self.edges == 0 {
            "edges is 0, so the query anchors lead nowhere"
        } else {
            return Ok(());
        };
        Err(SearchError::Param {
            name: "nprobe",
            what: format!("nprobe = 0 probes no cluster: {why}"),
        })
    }

    /// Sets one knob by name (for `--sweep knob=v1,v2` and `m3 tune`).
    pub fn set(&mut self, name: &str, value: usize) -> Result<(), SearchError> {
        match name {
            "k" => self.k = value,
            "nprobe" => self.nprobe = value,
            "qprobe" => self.qprobe = value,
            "edges" => self.edges = value,
            "hints" => self.hints = value,
            "hint_depth" => self.hint_depth = value,
            "rerank" => self.rerank = value,
            "refine" => self.refine = value,
            "expand_rounds" | "rounds" => self.expand_rounds = value,
            "expand_from" => self.expand_from = value,
            "expand_read" => self.expand_read = value,
            "early_stop" => self.early_stop = value != 0,
            "route_groups" => self.route_groups = value,
            _ => {
                return Err(SearchError::Param {
                    name: "knob",
                    what: format!(
                        "unknown knob '{name}' (nprobe, qprobe, edges, hints, hint_depth, rerank, \
                         refine, expand_rounds, expand_from, expand_read, route_groups)"
                    ),
                });
            }
        }
        Ok(())
    }

    /// The knobs as `--name value` flags, for printing a command line.
    pub fn as_flags(&self) -> String {
        format!(
            "--nprobe {} --qprobe {} --edges {} --hints {} --hint-depth {} --rerank {} --refine {} --expand-rounds {} --expand-from {} --expand-read {} --route-groups {}",
            self.nprobe,
            self.qprobe,
            self.edges,
            self.hints,
            self.hint_depth,
            self.rerank,
            self.refine,
            self.expand_rounds,
            self.expand_from,
            self.expand_read,
            self.route_groups
        )
    }
}

/// What one query cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct QueryStats {
    /// Read requests (coalesced sector ranges).
    pub reads: u64,
    /// 4 KiB sectors read.
    pub sectors: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Batches waited on (I/O round trips).
    pub io_rounds: u64,
    /// Exact distance computations (records reranked).
    pub dist_comps: u64,
    /// PQ codes scored.
    pub pq_scored: u64,
    /// Candidates re-ranked by the refinement codes.
    pub refined: u64,
    /// Distinct clusters chosen to probe (those skipped by the early stop included).
    pub clusters_probed: u64,
    /// Probed clusters skipped by the early stop.
    pub clusters_skipped: u64,
    /// Anchors (base and query-modality, coarse centres included) scored while routing.
    pub anchors_scored: u64,
}

impl std::ops::AddAssign for QueryStats {
    fn add_assign(&mut self, o: Self) {
        self.reads += o.reads;
        self.sectors += o.sectors;
        self.bytes += o.bytes;
        self.io_rounds += o.io_rounds;
        self.dist_comps += o.dist_comps;
        self.pq_scored += o.pq_scored;
        self.refined += o.refined;
        self.clusters_probed += o.clusters_probed;
        self.clusters_skipped += o.clusters_skipped;
        self.anchors_scored += o.anchors_scored;
    }
}

/// LC-CMD per-dimension weights for (α, β) from an index's per-modality variances (DESIGN
/// §4.3): `w_k = 1 / (α σ²_query,k + (1 − α) σ²_base,k + ε)`, normalised to mean 1, blended
/// toward isotropic as `(1 − β) + β·w_k`.
pub fn lccmd_weights(
    stats: &crate::format::Stats,
    alpha: f32,
    beta: f32,
) -> Result<Vec<f32>, super::SearchError> {
    if !stats.has_query_stats {
        return Err(SearchError::Param {
            name: "distance",
            what: "LC-CMD needs query-modality statistics: build with --train-queries".into(),
        });
    }
    if !(0.0..=1.0).contains(&alpha) || !(0.0..=1.0).contains(&beta) {
        return Err(SearchError::Param {
            name: "distance",
            what: format!("LC-CMD needs α, β in [0, 1], got {alpha}, {beta}"),
        });
    }
    let raw: Vec<f32> = stats
        .query_var
        .iter()
        .zip(&stats.base_var)
        .map(|(&t, &v)| 1.0 / (alpha * t + (1.0 - alpha) * v + 1e-6))
        .collect();
    let mean = raw.iter().map(|&w| w as f64).sum::<f64>() / raw.len() as f64;
    Ok(raw
        .iter()
        .map(|&w| (1.0 - beta) + beta * (w as f64 / mean) as f32)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_params_defaults_scale_with_k() {
        let p = SearchParams::new(10);
        assert_eq!(
            (p.k, p.rerank, p.expand_from, p.expand_read),
            (10, 40, 10, 20)
        );
        assert_eq!(p.expand_rounds, 0, "rounds are opt-in");
        let p = SearchParams::new(1);
        assert_eq!((p.rerank, p.expand_from, p.expand_read), (40, 1, 20));
        let p = SearchParams::new(100);
        assert_eq!((p.rerank, p.expand_from, p.expand_read), (400, 100, 200));
    }

    #[test]
    fn search_params_set_names_every_knob_and_rejects_unknown_ones() {
        let mut p = SearchParams::new(10);
        for (i, name) in [
            "k",
            "nprobe",
            "qprobe",
            "edges",
            "rerank",
            "expand_rounds",
            "expand_from",
            "expand_read",
        ]
        .into_iter()
        .enumerate()
        {
            p.set(name, 100 + i).unwrap();
        }
        assert_eq!(
            (p.k, p.nprobe, p.qprobe, p.edges, p.rerank),
            (100, 101, 102, 103, 104)
        );
        assert_eq!(
            (p.expand_rounds, p.expand_from, p.expand_read),
            (105, 106, 107)
        );
        p.set("rounds", 3).unwrap();
        assert_eq!(p.expand_rounds, 3);
        let err = p.set("nprobes", 1).unwrap_err();
        assert!(
            matches!(err, super::super::SearchError::Param { name: "knob", .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("'nprobes'"), "{err}");
    }

    /// `as_flags` prints every knob as `--name value`, in a form `m3 search` parses back (the
    /// flag names are the knob names with dashes).
    #[test]
    fn search_params_as_flags_round_trips_through_set() {
        let mut p = SearchParams::new(10);
        p.nprobe = 7;
        p.qprobe = 2;
        p.edges = 5;
        p.hints = 24;
        p.hint_depth = 50;
        p.rerank = 33;
        p.refine = 150;
        p.expand_rounds = 1;
        p.expand_from = 4;
        p.expand_read = 9;
        p.route_groups = 12;
        let flags = p.as_flags();
        let tokens: Vec<&str> = flags.split_whitespace().collect();
        assert_eq!(tokens.len(), 22, "{flags}");
        let mut q = SearchParams::new(10);
        for pair in tokens.chunks(2) {
            let name = pair[0].strip_prefix("--").unwrap().replace('-', "_");
            q.set(&name, pair[1].parse().unwrap()).unwrap();
        }
        assert_eq!(p, q);
    }

    #[test]
    fn search_query_stats_add_up() {
        let a = QueryStats {
            reads: 1,
            sectors: 2,
            bytes: 8192,
            io_rounds: 1,
            dist_comps: 40,
            pq_scored: 500,
            refined: 100,
            clusters_probed: 4,
            clusters_skipped: 1,
            anchors_scored: 300,
        };
        let mut s = QueryStats::default();
        s += a;
        s += a;
        assert_eq!(
            s,
            QueryStats {
                reads: 2,
                sectors: 4,
                bytes: 16384,
                io_rounds: 2,
                dist_comps: 80,
                pq_scored: 1000,
                refined: 200,
                clusters_probed: 8,
                clusters_skipped: 2,
                anchors_scored: 600,
            }
        );
    }
}

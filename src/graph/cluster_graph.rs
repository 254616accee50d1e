//! The neighbour lists of one cluster (DESIGN §2 step 3, §4.4).
//!
//! 1. Candidates: the exact L = `candidates` nearest members of every member (squared L2,
//!    blocked matrix products, the member itself and its other copies excluded). A cluster of
//!    S members costs S² · dim multiply-adds, fine for S of a few thousand.
//! 2. LID of every member from its first `lid_k` candidate distances, and its α from
//!    [`AlphaMode`] and the population [`LidStats`] (from [`lid_stats_of_sample`] or from a
//!    first pass over the base).
//! 3. Robust prune of every candidate list with the member's own α ([`robust_prune`]).
//! 4. Reverse edges (`reverse_edges`, on by default, as in Vamana): every kept edge p → q offers
//!    p to q; q takes the offers outright while it has room and otherwise re-prunes its list
//!    plus the offers with its own α. All offers come from the forward lists of step 3, so the
//!    result does not depend on the order members are visited. Without this step a member that
//!    no one else kept is unreachable along the lists; with it, most such members gain in-edges,
//!    but not all: when q's list is full, the re-prune can drop the offer again (measured on
//!    2,000 Gaussian points in 16-d, R = 16, α = 1.2: 14 members without in-edges → 4).
//! 5. In-edge repair (`repair_in_degree`, on by default): each member still without in-edges
//!    (in member order) is written into the list of its nearest candidate q that has room, or
//!    else replaces the farthest entry of q's list whose target keeps another in-edge. No
//!    member loses its last in-edge, so afterwards every member of a cluster with at least two
//!    distinct vectors has one (unless no candidate list has a replaceable entry). The repaired
//!    edge ignores the pruning rule: reachability is worth one redundant slot.
//!
//! Single-threaded and deterministic: the build runs one cluster per task.

use super::GraphError;
use super::knn::knn_within;
use super::lid::{AlphaMode, LidStats, lid_mle_sq};
use super::prune::{PruneParams, robust_prune};
use crate::data::MatrixView;
use crate::distance;
use crate::neighbor::Neighbor;

/// Parameters of the per-cluster build.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClusterGraphParams {
    /// R: the most neighbour ids per stored record.
    pub max_degree: usize,
    /// L: exact nearest neighbours considered per member before pruning (typically 2R–4R).
    pub candidates: usize,
    /// k of the LID estimate (its first k candidate distances).
    pub lid_k: usize,
    /// Fixed α or α from LID, in either direction.
    pub alpha: AlphaMode,
    /// Top up pruned lists with the nearest pruned candidates (see [`super::prune`]).
    pub fill_to_degree: bool,
    /// Offer every kept edge back to its target (Vamana's second half-step).
    pub reverse_edges: bool,
    /// Give every member at least one in-edge (step 5 of the module docs).
    pub repair_in_degree: bool,
}

impl ClusterGraphParams {
    /// Default R (`m3 build --degree`).
    pub const DEFAULT_MAX_DEGREE: usize = 32;
    /// Default L (`m3 build --candidates`).
    pub const DEFAULT_CANDIDATES: usize = 96;
}

impl Default for ClusterGraphParams {
    fn default() -> Self {
        Self {
            max_degree: Self::DEFAULT_MAX_DEGREE,
            candidates: Self::DEFAULT_CANDIDATES,
            lid_k: 20,
            alpha: AlphaMode::default(),
            fill_to_degree: false,
            reverse_edges: true,
            repair_in_degree: true,
        }
    }
}

impl ClusterGraphParams {
    /// R ≥ 1, L ≥ R, lid_k ≥ 2, α valid ([`AlphaMode::validate`]).
    pub fn validate(&self) -> Result<(), GraphError> {
        let param = |name, reason: String| Err(GraphError::Param { name, reason });
        if self.max_degree == 0 {
            return param("max_degree", "must be at least 1".into());
        }
        if self.candidates < self.max_degree {
            return param(
                "candidates",
                format!("{} < max_degree {}", self.candidates, self.max_degree),
            );
        }
        if self.lid_k < 2 {
            return param("lid_k", format!("{} < 2", self.lid_k));
        }
        self.alpha.validate()
    }
}

/// The neighbour lists of one cluster, indexed by local member number.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterGraph {
    /// Up to R distinct local ids per member, nearest first; never the member itself nor a copy
    /// of it (same original id).
    pub neighbours: Vec<Vec<u32>>,
    /// Each member's LID estimate; NaN where undefined (fewer than two distinct non-zero
    /// neighbour distances, see [`super::lid`]).
    pub lid: Vec<f32>,
    /// The α each member was pruned with.
    pub alpha: Vec<f32>,
}

impl ClusterGraph {
    pub fn len(&self) -> usize {
        self.neighbours.len()
    }

    pub fn is_empty(&self) -> bool {
        self.neighbours.is_empty()
    }

    /// How many lists name each member.
    pub fn in_degrees(&self) -> Vec<u32> {
        let mut deg = vec![0u32; self.len()];
        for list in &self.neighbours {
            for &q in list {
                deg[q as usize] += 1;
            }
        }
        deg
    }
}

/// Builds the neighbour lists of one cluster. `original_ids[i]` identifies the original vector
/// stored at member i, so that spilled copies of one vector never point to each other.
///
/// Errors: invalid parameters, `original_ids` of the wrong length, more than `u32::MAX` members.
pub fn build_cluster_graph(
    vectors: MatrixView<'_, f32>,
    original_ids: &[u32],
    params: &ClusterGraphParams,
    lid_stats: &LidStats,
) -> Result<ClusterGraph, GraphError> {
    params.validate()?;
    let n = vectors.rows();
    if original_ids.len() != n {
        return Err(GraphError::IdsLen {
            expected: n,
            found: original_ids.len(),
        });
    }
    if u32::try_from(n).is_err() {
        return Err(GraphError::TooManyRows { rows: n });
    }
    let knn = knn_within(
        vectors,
        original_ids,
        params.candidates.max(params.lid_k),
        false,
    );
    let pair = |a: u32, b: u32| distance::l2_sq(vectors.row(a as usize), vectors.row(b as usize));

    let mut lid = Vec::with_capacity(n);
    let mut alpha = Vec::with_capacity(n);
    let mut lists: Vec<Vec<Neighbor>> = Vec::with_capacity(n);
    let mut all_cands: Vec<Vec<Neighbor>> = Vec::with_capacity(n);
    for (p, found) in knn.into_iter().enumerate() {
        let lid_dists: Vec<f32> = found.iter().take(params.lid_k).map(|nb| nb.dist).collect();
        let l = lid_mle_sq(&lid_dists);
        let a = params.alpha.alpha(l, lid_stats);
        lid.push(l.unwrap_or(f32::NAN));
        alpha.push(a);
        let mut cands = found;
        cands.truncate(params.candidates);
        let prune = prune_params(params, a);
        lists.push(robust_prune(&mut cands, &prune, |_| false, pair));
        debug_assert!(
            lists[p]
                .iter()
                .all(|nb| original_ids[nb.id as usize] != original_ids[p])
        );
        all_cands.push(cands);
    }

    if params.reverse_edges {
        let mut offers: Vec<Vec<u32>> = vec![Vec::new(); n];
        for (p, list) in lists.iter().enumerate() {
            for nb in list {
                offers[nb.id as usize].push(p as u32);
            }
        }
        for (q, offered) in offers.into_iter().enumerate() {
            let list = &mut lists[q];
            let mut merged = list.clone();
            for p in offered {
                if original_ids[p as usize] != original_ids[q] && !list.iter().any(|nb| nb.id == p)
                {
                    merged.push(Neighbor {
                        id: p,
                        dist: pair(q as u32, p),
                    });
                }
            }
            if merged.len() == list.len() {
                continue;
            }
            *list = if merged.len() <= params.max_degree {
                merged.sort_by(Neighbor::cmp_total);
                merged
            } else {
                let prune = prune_params(params, alpha[q]);
                robust_prune(&mut merged, &prune, |_| false, pair)
            };
        }
    }

    if params.repair_in_degree {
        repair_in_degree(&mut lists, &all_cands, params.max_degree);
    }

    Ok(ClusterGraph {
        neighbours: lists
            .into_iter()
            .map(|l| l.into_iter().map(|nb| nb.id).collect())
            .collect(),
        lid,
        alpha,
    })
}

/// Step 5 of the module docs. `cands[p]` are p's candidates, nearest first.
fn repair_in_degree(lists: &mut [Vec<Neighbor>], cands: &[Vec<Neighbor>], max_degree: usize) {
    let mut deg = vec![0u32; lists.len()];
    for nb in lists.iter().flatten() {
        deg[nb.id as usize] += 1;
    }
    for p in 0..lists.len() {
        if deg[p] > 0 {
            continue;
        }
        for c in &cands[p] {
            let list = &mut lists[c.id as usize];
            // d(q, p) = d(p, q): the candidate's distance is the one q's list is sorted by.
            let edge = Neighbor {
                id: p as u32,
                dist: c.dist,
            };
            if list.len() < max_degree {
                list.push(edge);
            } else if let Some(pos) = list.iter().rposition(|nb| deg[nb.id as usize] >= 2) {
                deg[list[pos].id as usize] -= 1;
                list[pos] = edge;
            } else {
                continue;
            }
            list.sort_by(Neighbor::cmp_total);
            deg[p] += 1;
            break;
        }
    }
}

fn prune_params(params: &ClusterGraphParams, alpha: f32) -> PruneParams {
    PruneParams {
        alpha,
        max_degree: params.max_degree,
        fill_to_degree: params.fill_to_degree,
    }
}

/// LID statistics of a sample (every row a distinct point): exact kNN within the sample, the
/// MLE over each row's first `k` distances, then mean and standard deviation of the defined
/// values. Uses the current rayon pool; the result does not depend on the thread count.
///
/// Caveat: the MLE is scale invariant, but a sample of n′ out of N points sees neighbourhoods
/// about (N/n′)^{1/LID} times wider than the base at the same k, so where the LID of the data
/// changes with scale the sample's μ and σ are those of the coarser scale. The z-scores only
/// need the spread to be comparable, but for exact statistics run a first pass over the
/// clusters (their [`ClusterGraph::lid`]) and feed [`LidStats::from_values`].
pub fn lid_stats_of_sample(sample: MatrixView<'_, f32>, k: usize) -> Result<LidStats, GraphError> {
    if k < 2 {
        return Err(GraphError::Param {
            name: "lid_k",
            reason: format!("{k} < 2"),
        });
    }
    let n = sample.rows();
    let ids: Vec<u32> = (0..n)
        .map(|i| u32::try_from(i).map_err(|_| GraphError::TooManyRows { rows: n }))
        .collect::<Result<_, _>>()?;
    let knn = knn_within(sample, &ids, k, true);
    Ok(LidStats::from_values(knn.iter().map(|found| {
        let d: Vec<f32> = found.iter().map(|nb| nb.dist).collect();
        lid_mle_sq(&d)
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Matrix;
    use crate::graph::lid::{AlphaMap, Direction};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};
    use std::collections::{BTreeSet, BinaryHeap};

    fn gaussian(n: usize, dim: usize, seed: u64) -> Matrix<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let data: Vec<f32> = (0..n * dim)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        Matrix::from_vec(data, dim).unwrap()
    }

    fn ids(n: usize) -> Vec<u32> {
        (0..n as u32).collect()
    }

    fn params(r: usize, alpha: AlphaMode) -> ClusterGraphParams {
        ClusterGraphParams {
            max_degree: r,
            candidates: 3 * r,
            lid_k: 20,
            alpha,
            fill_to_degree: false,
            reverse_edges: true,
            repair_in_degree: true,
        }
    }

    /// Best-first search with a beam of `beam` from `entry`; returns the visited ids.
    fn beam_search(
        g: &ClusterGraph,
        base: MatrixView<'_, f32>,
        query: &[f32],
        entry: u32,
        beam: usize,
    ) -> Vec<Neighbor> {
        #[derive(PartialEq)]
        struct Near(Neighbor);
        impl Eq for Near {}
        impl PartialOrd for Near {
            fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(o))
            }
        }
        impl Ord for Near {
            fn cmp(&self, o: &Self) -> std::cmp::Ordering {
                o.0.cmp_total(&self.0) // min-heap
            }
        }
        let dist = |i: u32| distance::l2_sq(query, base.row(i as usize));
        let mut seen = BTreeSet::from([entry]);
        let mut frontier = BinaryHeap::from([Near(Neighbor {
            id: entry,
            dist: dist(entry),
        })]);
        let mut best: Vec<Neighbor> = vec![frontier.peek().unwrap().0];
        while let Some(Near(cur)) = frontier.pop() {
            if best.len() >= beam && cur.dist > best[beam - 1].dist {
                break;
            }
            for &nb in &g.neighbours[cur.id as usize] {
                if seen.insert(nb) {
                    let cand = Neighbor {
                        id: nb,
                        dist: dist(nb),
                    };
                    best.push(cand);
                    best.sort_by(Neighbor::cmp_total);
                    best.truncate(beam);
                    frontier.push(Near(cand));
                }
            }
        }
        best
    }

    fn check_lists(g: &ClusterGraph, orig: &[u32], r: usize) {
        for (p, list) in g.neighbours.iter().enumerate() {
            assert!(list.len() <= r, "node {p} has {} > {r}", list.len());
            let distinct: BTreeSet<u32> = list.iter().copied().collect();
            assert_eq!(distinct.len(), list.len(), "node {p}: repeated ids");
            for &q in list {
                assert_ne!(
                    orig[q as usize], orig[p],
                    "node {p} links to a copy of itself"
                );
            }
        }
    }

    #[test]
    fn greedy_search_finds_the_true_nearest_neighbour() {
        let (n, dim, r) = (2000, 16, 24);
        let base = gaussian(n, dim, 11);
        let queries = gaussian(300, dim, 12);
        let stats = lid_stats_of_sample(base.view(), 20).unwrap();
        assert!(stats.count == n as u64 && stats.std > 0.0);
        let modes = [
            AlphaMode::Fixed(1.2),
            AlphaMode::default(),
            AlphaMode::Lid(AlphaMap {
                alpha_min: 1.0,
                alpha_max: 1.5,
                direction: Direction::RisesWithLid,
            }),
        ];
        for mode in modes {
            let g = build_cluster_graph(base.view(), &ids(n), &params(r, mode), &stats).unwrap();
            check_lists(&g, &ids(n), r);
            let truth = crate::exact::exact_knn(
                base.view(),
                queries.view(),
                1,
                crate::distance::Metric::L2,
            )
            .unwrap();
            let hits = (0..queries.rows())
                .filter(|&q| {
                    let found = beam_search(&g, base.view(), queries.row(q), 0, 16);
                    found[0].id == truth[q][0].id
                })
                .count();
            let recall = hits as f64 / queries.rows() as f64;
            assert!(recall >= 0.95, "{mode}: 1-NN recall {recall}");
        }
    }

    #[test]
    fn reverse_edges_and_repair_raise_in_degrees() {
        let (n, dim, r) = (2000, 16, 16);
        let base = gaussian(n, dim, 21);
        let stats = lid_stats_of_sample(base.view(), 20).unwrap();
        let build = |reverse_edges, repair_in_degree| {
            let p = ClusterGraphParams {
                reverse_edges,
                repair_in_degree,
                ..params(r, AlphaMode::Fixed(1.2))
            };
            let g = build_cluster_graph(base.view(), &ids(n), &p, &stats).unwrap();
            check_lists(&g, &ids(n), r);
            g
        };
        let orphans = |g: &ClusterGraph| g.in_degrees().iter().filter(|&&d| d == 0).count();
        let min_in = |g: &ClusterGraph| *g.in_degrees().iter().min().unwrap();
        let plain = build(false, false);
        let reverse = build(true, false);
        let repaired = build(false, true);
        let both = build(true, true);
        // Reverse edges alone halve the members nobody points to, but (as in Vamana) a full
        // list can re-prune the offer away, so some remain; the repair removes the rest.
        assert!(orphans(&plain) >= 8, "{}", orphans(&plain));
        assert!(
            2 * orphans(&reverse) <= orphans(&plain),
            "{} → {}",
            orphans(&plain),
            orphans(&reverse)
        );
        assert_eq!(min_in(&plain), 0);
        assert!(min_in(&repaired) >= 1 && min_in(&both) >= 1);
        // More edges in total with reverse edges (lists fill up towards R).
        let edges = |g: &ClusterGraph| g.neighbours.iter().map(Vec::len).sum::<usize>();
        assert!(edges(&reverse) > edges(&plain));
    }

    #[test]
    fn copies_never_link_to_each_other_and_output_is_deterministic() {
        let (n, dim, r) = (600, 8, 12);
        let mut base = gaussian(n, dim, 31);
        // Members 500.. are spilled copies of members 0..100 (identical vectors, same id).
        let mut orig = ids(n);
        for (i, id) in orig.iter_mut().enumerate().skip(500) {
            let src = base.row(i - 500).to_vec();
            base.row_mut(i).copy_from_slice(&src);
            *id = (i - 500) as u32;
        }
        // Members 400..410 are distinct vectors identical to member 300.
        for i in 400..410 {
            let src = base.row(300).to_vec();
            base.row_mut(i).copy_from_slice(&src);
        }
        let stats = lid_stats_of_sample(base.view(), 20).unwrap();
        let twins_of_300 = |g: &ClusterGraph| {
            g.neighbours[300]
                .iter()
                .filter(|&&q| (400..410).contains(&q))
                .count()
        };
        for (fill, repair) in [(false, false), (true, false), (false, true), (true, true)] {
            let p = ClusterGraphParams {
                fill_to_degree: fill,
                repair_in_degree: repair,
                ..params(r, AlphaMode::default())
            };
            let g = build_cluster_graph(base.view(), &orig, &p, &stats).unwrap();
            check_lists(&g, &orig, r);
            assert_eq!(g.len(), n);
            assert!(g.alpha.iter().all(|a| (1.0..=1.5).contains(a)));
            if !repair {
                // Identical vectors under different ids: pruning keeps at most one of them.
                assert!(twins_of_300(&g) <= 1);
            } else {
                // ... and the repair makes the others reachable (from each other).
                let deg = g.in_degrees();
                assert!((400..410).all(|i| deg[i] >= 1), "{:?}", &deg[400..410]);
            }
            if fill {
                assert!(g.neighbours.iter().all(|l| l.len() == r));
            }
            let again = build_cluster_graph(base.view(), &orig, &p, &stats).unwrap();
            assert_eq!(g.neighbours, again.neighbours);
            assert_eq!(bits(&g.lid), bits(&again.lid));
            assert_eq!(bits(&g.alpha), bits(&again.alpha));
        }
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn mean_degree_grows_with_alpha() {
        let (n, dim, r) = (1500, 12, 64);
        let base = gaussian(n, dim, 51);
        let stats = lid_stats_of_sample(base.view(), 20).unwrap();
        let mean_degree = |alpha: f32| {
            let p = ClusterGraphParams {
                reverse_edges: false,
                repair_in_degree: false,
                ..params(r, AlphaMode::Fixed(alpha))
            };
            let g = build_cluster_graph(base.view(), &ids(n), &p, &stats).unwrap();
            g.neighbours.iter().map(Vec::len).sum::<usize>() as f64 / n as f64
        };
        let degrees: Vec<f64> = [1.0, 1.1, 1.2, 1.35, 1.5].map(mean_degree).to_vec();
        assert!(degrees.windows(2).all(|w| w[1] > w[0]), "{degrees:?}");
        assert!(
            degrees[0] < 0.5 * r as f64,
            "α = 1 prunes hard: {degrees:?}"
        );
    }

    #[test]
    fn lid_adaptive_alpha_follows_its_direction() {
        let (n, dim) = (1000, 12);
        let base = gaussian(n, dim, 41);
        let stats = lid_stats_of_sample(base.view(), 20).unwrap();
        for dir in [Direction::FallsWithLid, Direction::RisesWithLid] {
            let mode = AlphaMode::Lid(AlphaMap {
                alpha_min: 1.0,
                alpha_max: 1.5,
                direction: dir,
            });
            let g = build_cluster_graph(base.view(), &ids(n), &params(16, mode), &stats).unwrap();
            let mut by_lid: Vec<(f32, f32)> = g.lid.iter().copied().zip(g.alpha.clone()).collect();
            by_lid.sort_by(|a, b| a.0.total_cmp(&b.0));
            for w in by_lid.windows(2) {
                match dir {
                    Direction::FallsWithLid => assert!(w[1].1 <= w[0].1),
                    Direction::RisesWithLid => assert!(w[1].1 >= w[0].1),
                }
            }
            let spread = by_lid.last().unwrap().1 - by_lid[0].1;
            assert!(spread.abs() > 0.3, "{dir:?}: α spread {spread}");
        }
    }

    #[test]
    fn small_and_bad_inputs() {
        let stats = LidStats {
            count: 0,
            mean: 0.0,
            std: 0.0,
        };
        let p = ClusterGraphParams::default();
        let empty = Matrix::<f32>::zeros(0, 4).unwrap();
        assert!(
            build_cluster_graph(empty.view(), &[], &p, &stats)
                .unwrap()
                .is_empty()
        );
        let one = Matrix::from_vec(vec![1.0f32; 4], 4).unwrap();
        let g = build_cluster_graph(one.view(), &[7], &p, &stats).unwrap();
        assert_eq!(g.neighbours, vec![Vec::<u32>::new()]);
        assert!(g.lid[0].is_nan());
        let two = Matrix::from_vec(vec![0.0f32, 0.0, 1.0, 1.0], 2).unwrap();
        let g = build_cluster_graph(two.view(), &[0, 1], &p, &stats).unwrap();
        assert_eq!(g.neighbours, vec![vec![1], vec![0]]);
        let g = build_cluster_graph(two.view(), &[5, 5], &p, &stats).unwrap();
        assert_eq!(g.neighbours, vec![Vec::<u32>::new(), Vec::new()]);
        assert!(matches!(
            build_cluster_graph(two.view(), &[0], &p, &stats),
            Err(GraphError::IdsLen {
                expected: 2,
                found: 1
            })
        ));
        for bad in [
            ClusterGraphParams { max_degree: 0, ..p },
            ClusterGraphParams {
                candidates: p.max_degree - 1,
                ..p
            },
            ClusterGraphParams { lid_k: 1, ..p },
            ClusterGraphParams {
                alpha: AlphaMode::Fixed(0.5),
                ..p
            },
        ] {
            assert!(matches!(
                build_cluster_graph(two.view(), &[0, 1], &bad, &stats),
                Err(GraphError::Param { .. })
            ));
        }
        assert!(lid_stats_of_sample(two.view(), 1).is_err());
    }
}

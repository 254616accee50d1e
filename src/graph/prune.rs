//! Robust prune: the edge selection of Vamana/DiskANN (Subramanya et al., NeurIPS 2019,
//! Algorithm 2), with the per-node α of MCGI (DESIGN §4.4).
//!
//! For a point p and its candidates sorted by distance to p: take the nearest remaining
//! candidate p*, keep it, and drop every remaining candidate p′ with `α · d(p*, p′) ≤ d(p, p′)`
//! (p* "occludes" p′: p′ is reachable through p*); stop when R are kept or none remain. α = 1
//! keeps a subset of the relative-neighbourhood-graph edges among the candidates; larger α
//! drops less and keeps longer edges.
//!
//! The count kept is *not* monotone in α for a single point: a larger α can keep a candidate
//! that then occludes two others a smaller α kept (`larger_alpha_can_keep_fewer`, found by a
//! property test). Over a data set the mean degree does grow with α.
//!
//! **Squared distances.** Every distance here is squared L2, so the rule is applied as
//! `α² · d²(p*, p′) ≤ d²(p, p′)`, which for non-negative distances is the same test with no
//! square roots. For inner-product data the caller supplies vectors on which L2 is the right
//! geometry (unit-norm, where it orders like cosine, or the augmented vectors of DESIGN §4.1).
//!
//! **Duplicates.** A kept p* at distance 0 from p (an identical vector stored under another
//! id) would occlude every candidate (`d(p*, p′) = d(p, p′)`) and cut p off; such a witness
//! occludes only candidates at distance 0 from itself (further identical vectors), so p keeps
//! at most one identical neighbour and still reaches the rest. Copies of p itself (the same
//! original vector spilled twice) are never kept: the caller names them with `excluded`.
//!
//! **Filling.** With `fill_to_degree`, a list left with fewer than R after pruning is topped up
//! with the nearest pruned candidates. Trade-off: on SSD a record reserves R slots whatever it
//! holds, so the extra ids cost no space and give the neighbour-list rounds of a search (DESIGN
//! §3 step 5) more candidates at no extra I/O; but they are exactly the edges the rule found
//! redundant, so they cost PQ scoring per round and make the graph less sparse to walk. Off by
//! default (plain Vamana); measure.

use crate::neighbor::Neighbor;

/// Parameters of one prune.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PruneParams {
    /// The pruning factor α (≥ 1 in practice), in distance units (not squared).
    pub alpha: f32,
    /// R: the most neighbours kept.
    pub max_degree: usize,
    /// Top up to R with the nearest pruned candidates (see the module docs).
    pub fill_to_degree: bool,
}

/// Prunes the candidate list of one point p.
///
/// - `candidates`: ids with their squared distance to p, in any order, possibly with repeats;
///   they are sorted (distance, then id) and deduplicated by id in place.
/// - `excluded(id)`: true for p itself and its copies; such candidates are never kept.
/// - `pair_dist_sq(a, b)`: squared distance between two candidates.
///
/// Returns at most `max_degree` distinct neighbours, nearest first.
pub fn robust_prune(
    candidates: &mut Vec<Neighbor>,
    params: &PruneParams,
    excluded: impl Fn(u32) -> bool,
    mut pair_dist_sq: impl FnMut(u32, u32) -> f32,
) -> Vec<Neighbor> {
    sort_dedup(candidates);
    let r = params.max_degree;
    let alpha_sq = params.alpha * params.alpha;
    let mut alive: Vec<bool> = candidates.iter().map(|c| !excluded(c.id)).collect();
    let mut kept: Vec<Neighbor> = Vec::with_capacity(r.min(candidates.len()));
    let mut is_kept = vec![false; candidates.len()];
    for i in 0..candidates.len() {
        if kept.len() >= r {
            break;
        }
        if !alive[i] {
            continue;
        }
        let star = candidates[i];
        kept.push(star);
        is_kept[i] = true;
        alive[i] = false;
        let duplicate_of_p = star.dist <= 0.0;
        for j in i + 1..candidates.len() {
            if !alive[j] {
                continue;
            }
            let other = candidates[j];
            if duplicate_of_p && other.dist > 0.0 {
                continue;
            }
            let d_star = pair_dist_sq(star.id, other.id);
            let occluded = if duplicate_of_p {
                d_star <= 0.0
            } else {
                alpha_sq * d_star <= other.dist
            };
            if occluded {
                alive[j] = false;
            }
        }
    }
    if params.fill_to_degree && kept.len() < r {
        for (i, c) in candidates.iter().enumerate() {
            if kept.len() >= r {
                break;
            }
            if !is_kept[i] && !excluded(c.id) {
                kept.push(*c);
            }
        }
        kept.sort_by(Neighbor::cmp_total);
    }
    kept
}

/// Sorts by (distance, id) and keeps the first occurrence of each id (its smallest distance).
fn sort_dedup(candidates: &mut Vec<Neighbor>) {
    candidates.sort_by(|a, b| a.id.cmp(&b.id).then(a.dist.total_cmp(&b.dist)));
    candidates.dedup_by_key(|c| c.id);
    candidates.sort_by(Neighbor::cmp_total);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distance;
    use proptest::prelude::*;

    /// Prunes around point `p` of `points` (rows of `dim`), all other points as candidates.
    fn prune_around(
        points: &[f32],
        dim: usize,
        p: usize,
        params: &PruneParams,
        copies_of_p: &[usize],
    ) -> Vec<Neighbor> {
        let row = |i: usize| &points[i * dim..(i + 1) * dim];
        let n = points.len() / dim;
        let mut cands: Vec<Neighbor> = (0..n)
            .map(|j| Neighbor {
                id: j as u32,
                dist: distance::l2_sq(row(p), row(j)),
            })
            .collect();
        robust_prune(
            &mut cands,
            params,
            |id| id as usize == p || copies_of_p.contains(&(id as usize)),
            |a, b| distance::l2_sq(row(a as usize), row(b as usize)),
        )
    }

    fn params(alpha: f32, max_degree: usize, fill: bool) -> PruneParams {
        PruneParams {
            alpha,
            max_degree,
            fill_to_degree: fill,
        }
    }

    #[test]
    fn alpha_one_on_a_line_keeps_one_neighbour_per_side() {
        // Irregular spacing so that no two distances tie.
        let xs: Vec<f32> = (0..40).map(|i| i as f32 + 0.01 * (i * i) as f32).collect();
        for p in 0..xs.len() {
            let kept = prune_around(&xs, 1, p, &params(1.0, 10, false), &[]);
            let mut expected = Vec::new();
            if p > 0 {
                expected.push(p as u32 - 1);
            }
            if p + 1 < xs.len() {
                expected.push(p as u32 + 1);
            }
            let mut ids: Vec<u32> = kept.iter().map(|n| n.id).collect();
            ids.sort_unstable();
            assert_eq!(ids, expected, "point {p}");
        }
    }

    #[test]
    fn larger_alpha_reaches_further_along_a_line() {
        // Points at 2^i: from 0, with α = 1 only 1 survives on the right; with α large enough
        // (α · (2^j − 2^i) > 2^j for j = i + 1, i.e. α > 2) every point is kept.
        let xs: Vec<f32> = (0..8)
            .map(|i| if i == 0 { 0.0 } else { (1 << i) as f32 })
            .collect();
        assert_eq!(
            prune_around(&xs, 1, 0, &params(1.0, 10, false), &[]).len(),
            1
        );
        assert_eq!(
            prune_around(&xs, 1, 0, &params(2.5, 10, false), &[]).len(),
            7
        );
    }

    #[test]
    fn copies_and_self_are_never_kept_but_distinct_duplicates_are_once() {
        // Point 0 at the origin; 1 and 2 are copies of 0 (same original vector); 3 and 4 are
        // distinct vectors identical to 0; 5..=10 on the unit circle, 60° apart (chord 1, so
        // with α = 1.2 none occludes another: 1.2 · 1 > 1).
        let mut pts = vec![0.0f32; 10];
        for k in 0..6 {
            let t = k as f32 * std::f32::consts::FRAC_PI_3;
            pts.extend([t.cos(), t.sin()]);
        }
        for fill in [false, true] {
            let kept = prune_around(&pts, 2, 0, &params(1.2, 64, fill), &[1, 2]);
            let ids: Vec<u32> = kept.iter().map(|n| n.id).collect();
            assert!(
                !ids.contains(&0) && !ids.contains(&1) && !ids.contains(&2),
                "{ids:?}"
            );
            if fill {
                assert_eq!(ids.len(), 8, "everything but self and copies: {ids:?}");
            } else {
                // One identical neighbour (the smaller id), then all 6 circle points: the
                // duplicate witness does not occlude them, and they do not occlude each other.
                assert_eq!(ids, vec![3, 5, 6, 7, 8, 9, 10], "{ids:?}");
            }
        }
    }

    /// Found by a property test: the kept count is not monotone in α. A larger α keeps a
    /// candidate that a smaller α drops, and that candidate can then occlude two others that the
    /// smaller α kept. Only the average degree grows with α (see the cluster tests).
    #[test]
    fn larger_alpha_can_keep_fewer() {
        let pts = [
            4.0f32, 0.0, -0.5, 0.0, 0.0, -1.5, 0.0, -0.5, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.5, 0.0,
            0.0, -1.5, 0.0, 0.0, -1.5, 4.0, 0.0, 0.0, 0.0, -2.0, 0.0, 0.0, 0.5, -1.0, 0.0, 0.0,
            -1.5, 0.0, 0.0, -1.5, 0.0, 0.0, 0.5, 3.5, -1.5, -1.5, 0.0, -0.5, 0.0, 0.0, 0.0, 0.5,
            0.0, 0.0, 0.5, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.5, 3.0, 1.0, -3.0, 0.0, 0.0,
            0.5, 0.0, 0.0, 0.5, 0.0, 0.0, 0.5, 1.5, 3.5, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.5,
        ];
        let small = prune_around(&pts, 3, 0, &params(1.044_532, 5, false), &[]);
        let large = prune_around(&pts, 3, 0, &params(1.169_274_4, 5, false), &[]);
        assert_eq!((small.len(), large.len()), (5, 4));
    }

    #[test]
    fn dedups_repeated_candidates() {
        let pts = [0.0f32, 1.0, -1.0];
        let row = |i: u32| &pts[i as usize..i as usize + 1];
        let mut cands = vec![
            Neighbor { id: 1, dist: 1.0 },
            Neighbor { id: 2, dist: 1.0 },
            Neighbor { id: 1, dist: 1.0 },
            Neighbor { id: 2, dist: 1.0 },
        ];
        let kept = robust_prune(
            &mut cands,
            &params(1.0, 8, true),
            |id| id == 0,
            |a, b| distance::l2_sq(row(a), row(b)),
        );
        assert_eq!(kept.iter().map(|n| n.id).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(cands.len(), 2);
    }

    fn points_strategy() -> impl Strategy<Value = (usize, Vec<f32>)> {
        (1usize..6).prop_flat_map(|dim| {
            (
                Just(dim),
                proptest::collection::vec(-10i32..10, dim * 2..dim * 60)
                    .prop_map(|v| v.into_iter().map(|x| x as f32 * 0.5).collect()),
            )
        })
    }

    proptest! {
        #[test]
        fn kept_lists_are_bounded_sorted_distinct_and_exclude_self(
            (dim, pts) in points_strategy(),
            alpha in 1.0f32..2.0,
            r in 1usize..12,
            fill: bool,
        ) {
            let n = pts.len() / dim;
            let pts = &pts[..n * dim];
            let p = n / 2;
            // Odd-numbered points play copies of p.
            let copies: Vec<usize> = (1..n).step_by(7).collect();
            let kept = prune_around(pts, dim, p, &params(alpha, r, fill), &copies);
            prop_assert!(kept.len() <= r);
            let mut ids: Vec<u32> = kept.iter().map(|n| n.id).collect();
            prop_assert!(!ids.contains(&(p as u32)));
            prop_assert!(ids.iter().all(|&i| !copies.contains(&(i as usize))));
            prop_assert!(kept.windows(2).all(|w| w[0].cmp_total(&w[1]).is_lt()));
            ids.sort_unstable();
            ids.dedup();
            prop_assert_eq!(ids.len(), kept.len());
            let eligible = (0..n).filter(|&j| j != p && !copies.contains(&j)).count();
            if fill {
                prop_assert_eq!(kept.len(), r.min(eligible));
            }
            if eligible > 0 {
                // The nearest eligible candidate is always kept.
                prop_assert!(!kept.is_empty());
            }
        }

        /// The kept list is exactly what the greedy rule defines: no kept neighbour is
        /// occluded by a nearer kept one, and every dropped candidate is occluded by a nearer
        /// kept one (unless the list stopped at R).
        #[test]
        fn kept_and_dropped_follow_the_occlusion_rule(
            (dim, pts) in points_strategy(),
            alpha in 1.0f32..2.0,
            r in 1usize..40,
        ) {
            let n = pts.len() / dim;
            let pts = &pts[..n * dim];
            let row = |i: u32| &pts[i as usize * dim..(i as usize + 1) * dim];
            let kept = prune_around(pts, dim, 0, &params(alpha, r, false), &[]);
            let d_p = |i: u32| distance::l2_sq(row(0), row(i));
            let occludes = |star: &Neighbor, other: u32| {
                let d_star = distance::l2_sq(row(star.id), row(other));
                if star.dist <= 0.0 {
                    d_star <= 0.0 && d_p(other) <= 0.0
                } else {
                    alpha * alpha * d_star <= d_p(other)
                }
            };
            for (j, kj) in kept.iter().enumerate() {
                for ki in &kept[..j] {
                    prop_assert!(!occludes(ki, kj.id), "{} occludes kept {}", ki.id, kj.id);
                }
            }
            if kept.len() < r {
                for c in 1..n as u32 {
                    if kept.iter().any(|k| k.id == c) {
                        continue;
                    }
                    let cand = Neighbor { id: c, dist: d_p(c) };
                    prop_assert!(
                        kept.iter().any(|k| k.cmp_total(&cand).is_lt() && occludes(k, c)),
                        "dropped {} has no occluding witness", c
                    );
                }
            }
        }
    }
}

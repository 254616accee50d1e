//! The parts of a per-cluster merge (decision 0012, `docs/UPDATES.md`) that decide where
//! merged records go and what they link to: record numbers (first fit into the holes, so the
//! per-record files stay bounded), the merged clusters' neighbour lists (the build's own
//! cluster-local lists and cross links, inserts included), LIRE's reassignment after a split,
//! compact vids and the training queries' answers renumbered.

use std::collections::HashMap;

use crate::data::{Matrix, MatrixView};
use crate::distance;
use crate::format::clusters::NO_ID;
use crate::format::manifest::META_FLAG_LID_ADAPTIVE;
use crate::format::{IndexMeta, Stats};
use crate::graph::{
    AlphaMap, AlphaMode, ClusterGraphParams, Direction, LidStats, build_cluster_graph,
};

/// Neighbouring clusters a merged record's cross links go to, and links per record: the
/// build's defaults (`build::CrossLinkParams`, `m3 build --cross-clusters/--cross-links`),
/// which the manifest does not record.
pub(super) const CROSS_CLUSTERS: usize = 2;
pub(super) const CROSS_LINKS: usize = 4;

/// Neighbouring clusters (by centroid distance) merged with a split cluster and offered its
/// members (LIRE's reassignment).
pub(super) const SPLIT_NEIGHBOURS: usize = 6;

/// Record numbers of the merged groups. `kept`: the `[first, end)` ranges of the clusters
/// that keep their records (and numbers); `own`: each group's old range (the cluster it
/// continues, if it held records); `sizes`: each group's records. A group takes its own old
/// range when it fits there, else the lowest free range that holds it (first fit), else
/// numbers after the last one. With nothing kept and no own ranges the groups are numbered
/// from 0 in order (no holes). Returns each group's first record number and the number of record numbers.
pub(super) fn place_records(
    kept: &[(u64, u64)],
    own: &[Option<(u64, u64)>],
    sizes: &[u64],
) -> (Vec<u64>, u64) {
    let mut kept = kept.to_vec();
    kept.sort_unstable();
    // Free ranges, sorted; the last one is unbounded.
    let mut free: Vec<(u64, u64)> = Vec::new();
    let mut at = 0u64;
    for &(a, b) in &kept {
        if a > at {
            free.push((at, a));
        }
        at = at.max(b);
    }
    free.push((at, u64::MAX));
    let take = |free: &mut Vec<(u64, u64)>, i: usize, start: u64, n: u64| {
        let (a, b) = free[i];
        let mut parts = Vec::with_capacity(2);
        if start > a {
            parts.push((a, start));
        }
        if start + n < b {
            parts.push((start + n, b));
        }
        free.splice(i..=i, parts);
    };
    let mut firsts = Vec::with_capacity(sizes.len());
    let mut end = kept.iter().map(|k| k.1).max().unwrap_or(0);
    for (k, &n) in sizes.iter().enumerate() {
        let home = own.get(k).copied().flatten().filter(|&(a, b)| b - a >= n);
        let slot = home
            .and_then(|(a, _)| {
                free.iter()
                    .position(|&(fa, fb)| fa <= a && a + n <= fb)
                    .map(|i| (i, a))
            })
            .or_else(|| {
                free.iter()
                    .position(|&(fa, fb)| fb - fa >= n)
                    .map(|i| (i, free[i].0))
            });
        let (i, start) = slot.expect("the last free range is unbounded");
        if n > 0 {
            take(&mut free, i, start, n);
        }
        firsts.push(start);
        end = end.max(start + n);
    }
    (firsts, end)
}

/// The build's neighbour-list parameters as the manifest records them (degree, LID's k,
/// α fixed or LID-adaptive in `[alpha_min, alpha_max]`), and the LID population of
/// `stats.m3`.
pub(super) fn graph_params(meta: &IndexMeta, stats: &Stats) -> (ClusterGraphParams, LidStats) {
    let max_degree = (meta.max_degree as usize).max(1);
    let alpha = if meta.flags & META_FLAG_LID_ADAPTIVE != 0 {
        AlphaMode::Lid(AlphaMap {
            alpha_min: meta.alpha_min,
            alpha_max: meta.alpha_max,
            direction: Direction::FallsWithLid,
        })
    } else {
        AlphaMode::Fixed(meta.alpha_min)
    };
    let mut params = ClusterGraphParams {
        max_degree,
        candidates: ClusterGraphParams::DEFAULT_CANDIDATES.max(max_degree),
        lid_k: (meta.lid_k as usize).max(2),
        alpha,
        ..ClusterGraphParams::default()
    };
    if params.alpha.validate().is_err() {
        params.alpha = AlphaMode::default();
    }
    let lid = LidStats {
        count: 1,
        mean: f64::from(stats.lid_mean),
        std: f64::from(stats.lid_std),
    };
    (params, lid)
}

/// One merged group's members as the neighbour lists see them: stored vectors, vids, and
/// the record number of member 0 (members are numbered in order from it).
pub(super) struct GroupView<'a> {
    pub(super) vectors: MatrixView<'a, f32>,
    pub(super) vids: &'a [u32],
    pub(super) first: u64,
}

/// Records a cross link may name: stored vectors, their record numbers and vids.
pub(super) struct LinkTargets {
    pub(super) vectors: Vec<f32>,
    pub(super) records: Vec<u32>,
    pub(super) vids: Vec<u32>,
}

/// The neighbour lists of one merged group, as the build writes them
/// (`build::layout::write_graphs`): the cluster-local lists of [`build_cluster_graph`]
/// (global record numbers), cut to leave room for up to [`CROSS_LINKS`] cross links to the
/// nearest records of `targets` (the neighbouring clusters' live records), never a copy of
/// the member itself.
pub(super) fn group_lists(
    g: &GroupView<'_>,
    targets: &LinkTargets,
    params: &ClusterGraphParams,
    lid: &LidStats,
) -> Result<Vec<Vec<u32>>, String> {
    let n = g.vectors.rows();
    if n == 0 {
        return Ok(Vec::new());
    }
    let graph = build_cluster_graph(g.vectors, g.vids, params, lid).map_err(|e| e.to_string())?;
    let links = CROSS_LINKS.min(params.max_degree);
    let mut cross = vec![Vec::new(); n];
    if !targets.records.is_empty() && links > 0 {
        let extra = Matrix::from_vec(targets.vectors.clone(), g.vectors.dim())
            .map_err(|e| e.to_string())?;
        let k = (links + 2).min(extra.rows());
        let found = crate::exact::exact_knn(extra.view(), g.vectors, k, distance::Metric::L2)
            .map_err(|e| e.to_string())?;
        for (i, list) in found.into_iter().enumerate() {
            cross[i] = list
                .into_iter()
                .filter(|nb| targets.vids[nb.id as usize] != g.vids[i])
                .take(links)
                .map(|nb| targets.records[nb.id as usize])
                .collect();
        }
    }
    Ok(graph
        .neighbours
        .iter()
        .zip(cross)
        .map(|(local, cross)| {
            let room = params.max_degree.saturating_sub(cross.len());
            let mut out: Vec<u32> = local
                .iter()
                .take(room)
                .map(|&l| (g.first + u64::from(l)) as u32)
                .collect();
            out.extend(cross);
            out
        })
        .collect())
}

/// The `count` clusters nearest to cluster `c` by centroid distance (squared L2), `c`
/// excluded, nearest first; `centroid(i)` for `i < n`.
pub(super) fn nearest_clusters<'a>(
    c: usize,
    n: usize,
    count: usize,
    centroid: impl Fn(usize) -> &'a [f32],
) -> Vec<u32> {
    let own = centroid(c);
    let mut d: Vec<(f32, u32)> = (0..n)
        .filter(|&i| i != c)
        .map(|i| (distance::l2_sq(own, centroid(i)), i as u32))
        .collect();
    d.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    d.into_iter().take(count).map(|(_, i)| i).collect()
}

/// LIRE's reassignment (Xu et al., SPFresh, SOSP 2023): for every vector of `involved`
/// groups, the involved group whose centroid is nearest (squared L2; ties keep the current
/// group). Returns `(vector index in its group, from group, to group)` for the vectors that
/// move; a member is never moved to a group it is not nearer to.
pub(super) fn reassignments(
    involved: &[usize],
    vectors: impl Fn(usize) -> Vec<Vec<f32>>,
    centroid: impl Fn(usize) -> Vec<f32>,
) -> Vec<(usize, usize, usize)> {
    let cens: Vec<(usize, Vec<f32>)> = involved.iter().map(|&g| (g, centroid(g))).collect();
    let mut moves = Vec::new();
    for &g in involved {
        let own = &cens.iter().find(|(x, _)| *x == g).expect("involved").1;
        for (i, v) in vectors(g).iter().enumerate() {
            let mut best = (distance::l2_sq(v, own), g);
            for (h, c) in &cens {
                let d = distance::l2_sq(v, c);
                if d < best.0 {
                    best = (d, *h);
                }
            }
            if best.1 != g {
                moves.push((i, g, best.1));
            }
        }
    }
    moves
}

/// The training queries' answers (`hints.m3`) of the next generation: a record of a kept
/// cluster keeps its number, a record written again takes its new one (`renumber`), any
/// other (dead, or a hole that a merged record may now take) is dropped; each list stays
/// best first, [`NO_ID`] after its last answer.
pub(super) fn renumber_answers(
    answers: &Matrix<u32>,
    renumber: &HashMap<u32, u32>,
    kept: impl Fn(u32) -> bool,
) -> Matrix<u32> {
    let depth = answers.dim();
    let mut out = Vec::with_capacity(answers.rows() * depth);
    for row in answers.view().iter_rows() {
        let mut list: Vec<u32> = row
            .iter()
            .filter(|&&r| r != NO_ID)
            .filter_map(|&r| renumber.get(&r).copied().or(kept(r).then_some(r)))
            .collect();
        list.resize(depth, NO_ID);
        out.extend(list);
    }
    Matrix::from_vec(out, depth).expect("same shape")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_reuse_holes_first_fit_and_own_range_first() {
        // Kept: [0,10) and [20,30); free: [10,20), [30,∞).
        let kept = [(20, 30), (0, 10)];
        let (firsts, end) = place_records(&kept, &[None, Some((30, 40)), None], &[10, 8, 4]);
        assert_eq!(firsts, vec![10, 30, 38]);
        assert_eq!(end, 42);
        // A group that outgrew its own range goes to the first hole that holds it.
        let (firsts, end) = place_records(&kept, &[Some((10, 15))], &[6]);
        assert_eq!((firsts, end), (vec![10], 30));
        let (firsts, end) = place_records(&kept, &[None], &[11]);
        assert_eq!((firsts, end), (vec![30], 41));
        // Nothing kept and no own ranges: numbered from 0 in order, no holes.
        let (firsts, end) = place_records(&[], &[None, None], &[5, 7]);
        assert_eq!((firsts, end), (vec![0, 5], 12));
    }

    #[test]
    fn answers_keep_kept_renumber_merged_and_drop_the_rest() {
        let a = Matrix::from_vec(vec![5, 9, 2, NO_ID, 1, 7, 3, 4], 4).unwrap();
        let renumber: HashMap<u32, u32> = [(9, 100), (7, 101)].into_iter().collect();
        let out = renumber_answers(&a, &renumber, |r| r < 3);
        assert_eq!(
            out.as_slice(),
            &[100, 2, NO_ID, NO_ID, 1, 101, NO_ID, NO_ID]
        );
    }

    #[test]
    fn reassignment_moves_only_to_a_strictly_nearer_centroid() {
        let groups = [vec![vec![0.0f32], vec![4.0]], vec![vec![5.0f32], vec![2.0]]];
        let cens = [vec![0.0f32], vec![5.0]];
        let moves = reassignments(&[0, 1], |g| groups[g].clone(), |g| cens[g].clone());
        assert_eq!(moves, vec![(1, 0, 1), (1, 1, 0)]);
    }
}

//! A query's first pass (DESIGN §3, steps 1–3), as [`super::query::Searcher`] runs it before
//! the first read: [`prepare`] the query and its PQ table, [`route`] it to clusters, score the
//! records its nearest training queries answered ([`score_hints`]), and [`scan_clusters`] by
//! PQ. What comes out is the candidate list whose best records are read and reranked.

use super::SearchError;
use super::blocks::{IndexBlocks, Weighting};
use super::hints::{HintQuery, nearest_training_queries};
use super::index::Index;
use super::params::SearchParams;
use super::query::approx_dist;
use super::task::Task;
use crate::distance::{self, Metric};
use crate::exact::{Neighbor, TopK};
use crate::pq::{adc_scan, adc_scan_span, adc_score};

/// The block factors of a weighted multi-vector query (module `blocks`), `None` for every
/// other query: only its present blocks count, and every anchor is scored with the factors
/// (no two-level routing for it yet).
fn weighted<'t>(
    idx: &'t Index,
    weighting: &'t Option<Weighting>,
) -> Option<(&'t Weighting, &'t IndexBlocks)> {
    weighting
        .as_ref()
        .filter(|w| !w.unit)
        .zip(idx.blocks.as_ref())
}

/// Step 1: the query as the index compares it (normalised under cosine, standardised per
/// block for a multi-vector index), its block factors, `|q|²` into the anchor scores, and its
/// PQ inner-product table. Returns `|q|²`.
pub(super) fn prepare(
    idx: &Index,
    t: &mut Task<'_>,
    qi: usize,
    q: &[f32],
    params: &SearchParams,
) -> Result<f32, SearchError> {
    t.query.clear();
    t.query.extend_from_slice(q);
    t.weighting = idx
        .blocks
        .as_ref()
        .map(|b| b.weighting(params.block_weights.as_deref()));
    if let (Some(b), Some(w)) = (&idx.blocks, &t.weighting) {
        b.prepare(&mut t.query, w, idx.metric)
            .map_err(|()| SearchError::ZeroQuery { query: qi })?;
    } else if idx.metric == Metric::Cosine {
        let n = distance::dot(&t.query, &t.query).sqrt();
        t.query.iter_mut().for_each(|v| *v /= n);
    }
    let q = &t.query;
    let qn = distance::dot(q, q);
    let weighted = weighted(idx, &t.weighting);
    t.centroid_scores.reset(qn);
    t.anchor_scores.reset(qn);
    if let Some((w, b)) = weighted {
        for c in 0..idx.n_clusters() {
            t.centroid_scores.insert(
                c,
                w.distance(&b.layout, idx.metric, q, idx.centroids.row(c)),
            );
        }
        w.weighted_query(&b.layout, q, &mut t.weighted_query);
        idx.pq
            .ip_table_spans(&t.weighted_query, &w.spans, &mut t.table);
    } else {
        idx.pq.ip_table(q, &mut t.table);
    }
    Ok(qn)
}

/// Step 2: the clusters to probe, into `t.clusters` (distinct, in routing order): the nprobe
/// best base anchors, then the clusters behind the qprobe nearest query anchors (module
/// `route`).
pub(super) fn route(idx: &Index, t: &mut Task<'_>, params: &SearchParams) {
    let weighted = weighted(idx, &t.weighting);
    let q = &t.query;
    let mut clusters = std::mem::take(&mut t.clusters);
    clusters.clear();
    let k_clusters = idx.n_clusters();
    let nprobe = params.nprobe.min(k_clusters);
    if nprobe > 0 && weighted.is_some() {
        // Every anchor was scored with the block factors above.
        t.ranked.clear();
        for c in 0..k_clusters {
            let sc = t.centroid_scores.get(&idx.router, &idx.centroids, q, c);
            t.ranked.push((sc, c as u32));
        }
        t.stats.anchors_scored += k_clusters as u64;
        let by = |a: &(f32, u32), b: &(f32, u32)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
        if nprobe < k_clusters {
            t.ranked.select_nth_unstable_by(nprobe - 1, by);
        }
        t.ranked.truncate(nprobe);
        t.ranked.sort_unstable_by(by);
        clusters.extend(t.ranked.iter().map(|&(_, c)| c));
    } else if nprobe > 0 {
        t.stats.anchors_scored += idx.router.nearest(
            idx.centroids.view(),
            q,
            nprobe,
            params.route_groups,
            &mut t.centroid_scores,
            &mut t.ranked,
        );
        clusters.extend(t.ranked.iter().map(|&(_, c)| c));
    }
    if params.qprobe > 0 && idx.n_query_anchors() > 0 {
        if let Some((w, b)) = weighted {
            let anchors = &idx.routing.anchors;
            t.ranked.clear();
            t.ranked.extend((0..anchors.rows()).map(|a| {
                (
                    w.distance(&b.layout, Metric::L2, q, anchors.row(a)),
                    a as u32,
                )
            }));
            t.stats.anchors_scored += anchors.rows() as u64;
            let take = params.qprobe.min(t.ranked.len());
            let by = |a: &(f32, u32), b: &(f32, u32)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
            t.ranked.select_nth_unstable_by(take - 1, by);
            t.ranked.truncate(take);
            t.ranked.sort_unstable_by(by);
        } else {
            t.stats.anchors_scored += idx.query_router.nearest(
                idx.routing.anchors.view(),
                q,
                params.qprobe,
                params.route_groups,
                &mut t.anchor_scores,
                &mut t.ranked,
            );
        }
        for &(_, a) in &t.ranked {
            for &c in idx.routing.edges.row(a as usize).iter().take(params.edges) {
                if (c as usize) < k_clusters {
                    clusters.push(c);
                }
            }
        }
    }
    for &c in &clusters {
        t.probed[c as usize] = false;
    }
    clusters.retain(|&c| !std::mem::replace(&mut t.probed[c as usize], true));
    t.stats.clusters_probed = clusters.len() as u64;

    t.clusters = clusters;
}

/// The query's nearest training queries (`hints.m3`), into `t.ranked`, for an index with
/// hints and a query that uses them (`params.hints > 0`, no block weights); `None` otherwise.
pub(super) fn hint_training_queries<'i>(
    idx: &'i Index,
    t: &mut Task<'_>,
    params: &SearchParams,
    qn: f32,
) -> Option<&'i crate::format::Hints> {
    let weighted = weighted(idx, &t.weighting);
    let (Some(h), Some(router), Some(codes), None) =
        (&idx.hints, &idx.hint_router, &idx.hint_codes, weighted)
    else {
        return None;
    };
    if params.hints == 0 {
        return None;
    }
    let hq = HintQuery {
        metric: idx.metric,
        queries: &h.queries,
        router,
        codes,
        centroids: &idx.centroids,
        base_router: &idx.router,
        q: &t.query,
        table: &t.table,
        qn,
    };
    let (by_pq, exact, coarse) = nearest_training_queries(
        &hq,
        params.hints,
        params.route_groups,
        &mut t.centroid_scores,
        &mut t.hint_scratch,
        &mut t.ranked,
    );
    t.stats.pq_scored += by_pq;
    t.stats.anchors_scored += exact + coarse;
    Some(h)
}

/// Step 2b: the records that answer the query's nearest training queries (`hints.m3`),
/// scored by PQ into `cands` first, wherever their clusters are, so that the early stop of
/// the scan starts from a tight threshold. Their ids stay in `t.hint_records` (sorted) so the
/// scan skips them.
pub(super) fn score_hints(
    idx: &Index,
    t: &mut Task<'_>,
    params: &SearchParams,
    qn: f32,
    cands: &mut TopK,
) {
    let m = idx.pq.subspaces();
    t.hint_records.clear();
    if let Some(h) = hint_training_queries(idx, t, params, qn) {
        let depth = match params.hint_depth {
            0 => h.depth(),
            d => d.min(h.depth()),
        };
        let n_records = idx.meta.n_records;
        for &(_, tq) in &t.ranked {
            let answers = &h.answers.row(tq as usize)[..depth];
            t.hint_records
                .extend(answers.iter().copied().filter(|&r| (r as u64) < n_records));
        }
        // A few thousand u32 ids: an LSD radix sort (four byte passes) beats a comparison sort.
        radsort::sort(&mut t.hint_records);
        t.hint_records.dedup();
        let codes = idx.codes.as_slice();
        let mut cluster = 0usize;
        for (j, &r) in t.hint_records.iter().enumerate() {
            // The records are scattered over the codes: ask for the lines a few ahead.
            if let Some(&next) = t.hint_records.get(j + 8) {
                crate::simd::prefetch(codes, next as usize * m);
                crate::simd::prefetch(&idx.correction, next as usize);
            }
            if idx.live.base_record_dead(r) {
                continue; // deleted (or a hole of a merged index): never a candidate, never read
            }
            let c = if idx.is_merged() {
                idx.cluster_of(r)
            } else {
                // The records are sorted, so their clusters only move forward (the last
                // cluster starting at or before r, as `Index::cluster_of`).
                while cluster + 1 < idx.entries.len()
                    && idx.entries[cluster + 1].first_record <= u64::from(r)
                {
                    cluster += 1;
                }
                cluster
            };
            let cs = t
                .centroid_scores
                .get(&idx.router, &idx.centroids, &t.query, c);
            let code = &codes[r as usize * m..(r as usize + 1) * m];
            let approx = approx_dist(
                idx.metric,
                cs,
                adc_score(&t.table, code),
                idx.correction[r as usize],
            );
            cands.push(Neighbor {
                id: r,
                dist: approx,
            });
        }
        t.stats.pq_scored += t.hint_records.len() as u64;
    }
}

/// Step 3: PQ scan of the probed clusters, nearest anchors first so that the early stop's
/// threshold tightens quickly; a cluster whose bound cannot beat the current candidates is
/// skipped. Records scored as hints are not scored again. `scores` is scratch.
pub(super) fn scan_clusters(
    idx: &Index,
    t: &mut Task<'_>,
    params: &SearchParams,
    qn: f32,
    scores: &mut Vec<f32>,
    cands: &mut TopK,
) {
    let weighted = weighted(idx, &t.weighting);
    let m = idx.pq.subspaces();
    let mut scan_order = std::mem::take(&mut t.scan_order);
    scan_order.clear();
    scan_order.extend(t.clusters.iter().map(|&c| {
        let s = t
            .centroid_scores
            .get(&idx.router, &idx.centroids, &t.query, c as usize);
        (s, c)
    }));
    scan_order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    // Triangle-inequality bounds under block factors ω: |x − c|_ω ≤ √max ω · |x − c|,
    // and |⟨ω⊙q, x − c⟩| ≤ |ω⊙q| · |x − c|.
    let (q_norm, radius_factor) = match weighted {
        Some((w, _)) => (
            distance::dot(&t.weighted_query, &t.weighted_query).sqrt(),
            w.omega_max.sqrt(),
        ),
        None => (qn.sqrt(), 1.0),
    };
    let block_corr = weighted.and_then(|(w, b)| b.corrections.as_ref().map(|c| (w, c)));
    for &(s, c) in &scan_order {
        let e = &idx.entries[c as usize];
        let (first, n) = (e.first_record as usize, e.records as usize);
        let delta = idx.live.in_cluster(c as usize);
        if n == 0 && delta.is_empty() {
            continue;
        }
        // The radius over base and live inserted records alike.
        let r_max = idx.live.radii.get(c as usize).map_or(e.r_max, |r| r[1]);
        if params.early_stop && cands.len() == cands.k() {
            let lower = match idx.metric {
                // |q − x| ≥ |q − c| − r_max
                Metric::L2 => {
                    let gap = (s.max(0.0).sqrt() - radius_factor * r_max).max(0.0);
                    gap * gap
                }
                // −q·x ≥ −q·c − |q|·|x − c| ≥ −q·c − |q|·r_max
                _ => s - q_norm * r_max,
            };
            if lower > cands.threshold() {
                t.stats.clusters_skipped += 1;
                continue;
            }
        }
        scores.resize(n, 0.0);
        let codes = &idx.codes.as_slice()[first * m..(first + n) * m];
        match weighted {
            None => adc_scan(&t.table, codes, m, scores),
            Some((w, _)) => {
                for (i, span) in w.spans.iter().enumerate() {
                    adc_scan_span(&t.table, codes, m, span.clone(), scores, i > 0);
                }
            }
        }
        t.stats.pq_scored += n as u64;
        let base = s;
        let corr = &idx.correction[first..first + n];
        let mut threshold = cands.threshold();
        // The hint records inside this cluster (sorted): skipped, scored already.
        let mut hint = t.hint_records.partition_point(|&r| (r as usize) < first);
        for (i, (&s, &cr)) in scores.iter().zip(corr).enumerate() {
            if t.hint_records.get(hint) == Some(&((first + i) as u32)) {
                hint += 1;
                continue;
            }
            if idx.live.base_record_dead((first + i) as u32) {
                continue; // deleted: never a candidate, never read
            }
            let cr = match block_corr {
                Some((w, bc)) => w.correction(bc, first + i),
                None => cr,
            };
            let approx = approx_dist(idx.metric, base, s, cr);
            if approx <= threshold
                && cands.push(Neighbor {
                    id: (first + i) as u32,
                    dist: approx,
                })
            {
                threshold = cands.threshold();
            }
        }
        // Live inserts of the cluster (a multi-vector index takes none: no weighting here).
        for &r in delta {
            let d = (r as u64 - idx.meta.n_records) as usize;
            let code = idx.live.codes.row(d);
            let approx = approx_dist(
                idx.metric,
                base,
                adc_score(&t.table, code),
                idx.live.correction[d],
            );
            t.stats.pq_scored += 1;
            if approx <= threshold
                && cands.push(Neighbor {
                    id: r,
                    dist: approx,
                })
            {
                threshold = cands.threshold();
            }
        }
    }
    t.scan_order = scan_order;
}

/// Whether this query re-ranks its candidates with the refinement codes: the index has them,
/// `refine` asks for more candidates than are read, and the query is not a weighted
/// multi-vector one under L2 (its first estimate uses per-block corrections, which the
/// refinement codes do not have; decision 0008). A weighted query under inner product or
/// cosine refines over its present blocks' subspaces.
pub(super) fn refines(idx: &Index, t: &Task<'_>, params: &SearchParams) -> bool {
    idx.refine.is_some()
        && params.refine > params.rerank.max(params.k)
        && (weighted(idx, &t.weighting).is_none() || idx.metric != Metric::L2)
}

/// Step 3b: re-ranks the candidates with both codes (`r̂₁ + r̂₂`, decision 0008) and keeps the
/// best `read` of them in `cands`. Under inner product (and cosine) the refined estimate is the
/// first one minus `q·r̂₂`; under L2 it is `|q − c|² + corr₁₂ − 2 q·(r̂₁ + r̂₂)`, the first one
/// plus `corr₁₂ − corr₁ − 2 q·r̂₂`. A weighted multi-vector query (inner product or cosine
/// only, see [`refines`]) subtracts `(ω⊙q)·r̂₂` over its present blocks' subspaces, as its first
/// estimate scored `r̂₁` (the refinement codes split the dimensions as the first ones). A live
/// insert keeps its first estimate.
pub(super) fn refine(idx: &Index, t: &mut Task<'_>, read: usize, cands: &mut TopK) {
    let Some(r) = &idx.refine else {
        return;
    };
    match weighted(idx, &t.weighting) {
        Some((w, _)) => {
            r.pq.ip_table_spans(&t.weighted_query, &w.spans, &mut t.refine_table)
        }
        None => r.pq.ip_table(&t.query, &mut t.refine_table),
    }
    cands.drain_sorted_into(&mut t.sorted);
    cands.reset(read);
    let m = r.pq.subspaces();
    let codes = r.codes.as_slice();
    for (j, nb) in t.sorted.iter().enumerate() {
        if let Some(next) = t.sorted.get(j + 8) {
            crate::simd::prefetch(codes, next.id as usize * m);
        }
        let i = nb.id as usize;
        if i >= r.correction.len() {
            // A live insert (`delta.m3`) has no refinement code: its first estimate stays.
            cands.push(*nb);
            continue;
        }
        let second = adc_score(&t.refine_table, &codes[i * m..(i + 1) * m]);
        let dist = match idx.metric {
            Metric::L2 => nb.dist + (r.correction[i] - idx.correction[i]) - 2.0 * second,
            _ => nb.dist - second,
        };
        cands.push(Neighbor { id: nb.id, dist });
    }
    t.stats.refined += t.sorted.len() as u64;
}

//! One query, DESIGN §3: prepare → route (base anchors ∪ cross-modal edges) → PQ scan in RAM →
//! one batch of sector reads → exact rerank → optional rounds along neighbour lists.

use std::collections::{HashMap, HashSet};

use super::SearchError;
use super::index::Index;
use super::params::{QueryStats, SearchParams};
use crate::data::DType;
use crate::distance::{self, Metric};
use crate::exact::{Neighbor, TopK};
use crate::format::{FormatError, SECTOR_BYTES};
use crate::io::{AlignedBuf, ReadRequest};
use crate::pq::adc_scan;

/// Longest coalesced read, in sectors.
const MAX_RANGE_SECTORS: u32 = 16;

/// Per-thread scratch for searching one index; reuse it across queries.
pub struct Searcher<'a> {
    index: &'a Index,
    query: Vec<f32>,
    centroid_scores: Vec<f32>,
    probed: Vec<bool>,
    table: Vec<f32>,
    scores: Vec<f32>,
    buf: AlignedBuf,
    vec_scratch: Vec<f32>,
    /// LC-CMD weights and the (α, β) they were computed for.
    weights: Option<((f32, f32), Vec<f32>)>,
}

impl<'a> Searcher<'a> {
    pub fn new(index: &'a Index) -> Self {
        Self {
            index,
            query: Vec::with_capacity(index.dim),
            centroid_scores: vec![0.0; index.n_clusters()],
            probed: vec![false; index.n_clusters()],
            table: Vec::new(),
            scores: Vec::new(),
            buf: AlignedBuf::new(),
            vec_scratch: vec![0.0; index.dim],
            weights: None,
        }
    }

    /// LC-CMD weights for (α, β) from the index's per-modality variances (DESIGN §4.3).
    fn lccmd_weights(&mut self, alpha: f32, beta: f32) -> Result<(), SearchError> {
        if self
            .weights
            .as_ref()
            .is_some_and(|(ab, _)| *ab == (alpha, beta))
        {
            return Ok(());
        }
        let st = &self.index.stats;
        if !st.has_query_stats {
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
        let raw: Vec<f32> = st
            .query_var
            .iter()
            .zip(&st.base_var)
            .map(|(&t, &v)| 1.0 / (alpha * t + (1.0 - alpha) * v + 1e-6))
            .collect();
        let mean = raw.iter().map(|&w| w as f64).sum::<f64>() / raw.len() as f64;
        let w = raw
            .iter()
            .map(|&w| (1.0 - beta) + beta * (w as f64 / mean) as f32)
            .collect();
        self.weights = Some(((alpha, beta), w));
        Ok(())
    }

    /// Checks a query and the parameters against the index.
    pub fn check(&self, qi: usize, q: &[f32], params: &SearchParams) -> Result<(), SearchError> {
        let idx = self.index;
        if q.len() != idx.dim {
            return Err(SearchError::QueryDim {
                expected: idx.dim,
                found: q.len(),
            });
        }
        if let Some((col, &value)) = q.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(SearchError::NonFinite {
                query: qi,
                col,
                value,
            });
        }
        if idx.metric == Metric::Cosine && q.iter().all(|&v| v == 0.0) {
            return Err(SearchError::ZeroQuery { query: qi });
        }
        if params.k == 0 {
            return Err(SearchError::KZero);
        }
        if params.k as u64 > idx.n_vectors() {
            return Err(SearchError::KTooLarge {
                k: params.k,
                n: idx.n_vectors(),
            });
        }
        if params.nprobe == 0 {
            let why = if idx.n_query_anchors() == 0 {
                Some("the index has no query anchors (built without training queries)")
            } else if params.qprobe == 0 {
                Some("qprobe is 0 too")
            } else if params.edges == 0 {
                Some("edges is 0, so the query anchors lead nowhere")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(SearchError::Param {
                    name: "nprobe",
                    what: format!("nprobe = 0 probes no cluster: {why}"),
                });
            }
        }
        Ok(())
    }

    /// The `k` nearest vectors of `q` (ids and internal distances, best first) and the cost.
    pub fn search(
        &mut self,
        qi: usize,
        q: &[f32],
        params: &SearchParams,
    ) -> Result<(Vec<Neighbor>, QueryStats), SearchError> {
        self.check(qi, q, params)?;
        if let super::RerankDistance::LcCmd { alpha, beta } = params.distance {
            self.lccmd_weights(alpha, beta)?;
        }
        let idx = self.index;
        let mut stats = QueryStats::default();
        // 1. Prepare.
        self.query.clear();
        self.query.extend_from_slice(q);
        if idx.metric == Metric::Cosine {
            let n = distance::dot(&self.query, &self.query).sqrt();
            self.query.iter_mut().for_each(|v| *v /= n);
        }
        let q = &self.query;
        let qn = distance::dot(q, q);
        for (c, s) in self.centroid_scores.iter_mut().enumerate() {
            let dot = distance::dot(q, idx.centroids.row(c));
            *s = match idx.metric {
                Metric::L2 => qn + idx.centroid_norms[c] - 2.0 * dot,
                _ => -dot,
            };
        }
        idx.pq.ip_table(q, &mut self.table);

        // 2. Route.
        let mut clusters: Vec<u32> =
            Vec::with_capacity(params.nprobe + params.qprobe * params.edges);
        let k_clusters = idx.n_clusters();
        let nprobe = params.nprobe.min(k_clusters);
        if nprobe > 0 {
            let mut order: Vec<u32> = (0..k_clusters as u32).collect();
            let by = |a: &u32, b: &u32| {
                self.centroid_scores[*a as usize]
                    .total_cmp(&self.centroid_scores[*b as usize])
                    .then(a.cmp(b))
            };
            if nprobe < k_clusters {
                order.select_nth_unstable_by(nprobe - 1, by);
            }
            order.truncate(nprobe);
            order.sort_unstable_by(by);
            clusters.extend(order);
        }
        if params.qprobe > 0 && idx.n_query_anchors() > 0 {
            let anchors = &idx.routing.anchors;
            let mut qa: Vec<(f32, u32)> = (0..anchors.rows())
                .map(|a| (distance::l2_sq(q, anchors.row(a)), a as u32))
                .collect();
            let take = params.qprobe.min(qa.len());
            qa.select_nth_unstable_by(take - 1, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            qa.truncate(take);
            qa.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            for &(_, a) in &qa {
                for &c in idx.routing.edges.row(a as usize).iter().take(params.edges) {
                    if (c as usize) < k_clusters {
                        clusters.push(c);
                    }
                }
            }
        }
        for &c in &clusters {
            self.probed[c as usize] = false;
        }
        clusters.retain(|&c| !std::mem::replace(&mut self.probed[c as usize], true));
        stats.clusters_probed = clusters.len() as u64;

        // 3. PQ scan of the probed clusters, nearest anchors first so that the early stop's
        // threshold tightens quickly.
        let m = idx.pq.subspaces();
        let mut cands = TopK::new(params.rerank.max(params.k));
        let mut scan_order = clusters.clone();
        scan_order.sort_by(|a, b| {
            self.centroid_scores[*a as usize]
                .total_cmp(&self.centroid_scores[*b as usize])
                .then(a.cmp(b))
        });
        let q_norm = qn.sqrt();
        for &c in &scan_order {
            let e = &idx.entries[c as usize];
            let (first, n) = (e.first_record as usize, e.records as usize);
            if n == 0 {
                continue;
            }
            if params.early_stop && cands.len() == cands.k() {
                let s = self.centroid_scores[c as usize];
                let lower = match idx.metric {
                    // |q − x| ≥ |q − c| − r_max
                    Metric::L2 => {
                        let gap = (s.max(0.0).sqrt() - e.r_max).max(0.0);
                        gap * gap
                    }
                    // −q·x ≥ −q·c − |q|·|x − c| ≥ −q·c − |q|·r_max
                    _ => s - q_norm * e.r_max,
                };
                if lower > cands.threshold() {
                    stats.clusters_skipped += 1;
                    continue;
                }
            }
            self.scores.resize(n, 0.0);
            adc_scan(
                &self.table,
                &idx.codes.as_slice()[first * m..(first + n) * m],
                m,
                &mut self.scores,
            );
            stats.pq_scored += n as u64;
            let base = self.centroid_scores[c as usize];
            let corr = &idx.correction[first..first + n];
            let mut threshold = cands.threshold();
            for (i, (&s, &cr)) in self.scores.iter().zip(corr).enumerate() {
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
        }

        // 4. Read the best candidates, rerank exactly.
        let mut results = TopK::new(params.k);
        let mut result_ids: HashSet<u32> = HashSet::with_capacity(params.k * 2);
        let mut seen: HashSet<u32> = HashSet::new();
        let mut lists: HashMap<u32, Vec<u32>> = HashMap::new();
        let to_read: Vec<u32> = cands.into_sorted().into_iter().map(|n| n.id).collect();
        seen.extend(&to_read);
        let mut best: Vec<(Neighbor, u32)> = Vec::new(); // (result, record)
        if let Err(e) = self.read_and_rerank(
            &to_read,
            params,
            &mut results,
            &mut result_ids,
            &mut best,
            &mut lists,
            &mut stats,
        ) {
            self.unmark(&clusters);
            return Err(e);
        }

        // 5. Rounds along the neighbour lists of the best results.
        for _ in 0..params.expand_rounds {
            best.sort_by(|a, b| a.0.cmp_total(&b.0));
            let mut fresh = TopK::new(params.expand_read.max(1));
            let mut any = false;
            for (_, rec) in best.iter().take(params.expand_from) {
                let Some(list) = lists.get(rec) else { continue };
                for &nb in list {
                    if nb as u64 >= idx.meta.n_records || !seen.insert(nb) {
                        continue;
                    }
                    let c = idx.cluster_of(nb);
                    if self.probed[c] {
                        continue; // scored by PQ already and not among the best
                    }
                    let code = &idx.codes.as_slice()[nb as usize * m..(nb as usize + 1) * m];
                    let s = pq_score(&self.table, code);
                    stats.pq_scored += 1;
                    let approx = approx_dist(
                        idx.metric,
                        self.centroid_scores[c],
                        s,
                        idx.correction[nb as usize],
                    );
                    fresh.push(Neighbor {
                        id: nb,
                        dist: approx,
                    });
                    any = true;
                }
            }
            if !any {
                break;
            }
            let next: Vec<u32> = fresh.into_sorted().into_iter().map(|n| n.id).collect();
            if let Err(e) = self.read_and_rerank(
                &next,
                params,
                &mut results,
                &mut result_ids,
                &mut best,
                &mut lists,
                &mut stats,
            ) {
                self.unmark(&clusters);
                return Err(e);
            }
        }
        self.unmark(&clusters);
        Ok((results.into_sorted(), stats))
    }

    /// Clears the `probed` marks of a query's clusters. Every exit of [`Searcher::search`]
    /// after routing must call it: a failed query (an I/O error) used to leave its marks
    /// behind, and the next query on this searcher would then skip the neighbours in those
    /// clusters during its rounds.
    fn unmark(&mut self, clusters: &[u32]) {
        for &c in clusters {
            self.probed[c as usize] = false;
        }
    }

    /// Reads the records in one batch (coalescing neighbouring sectors), computes exact
    /// distances and offers them to `results` (one entry per original id).
    #[allow(clippy::too_many_arguments)]
    fn read_and_rerank(
        &mut self,
        records: &[u32],
        params: &SearchParams,
        results: &mut TopK,
        result_ids: &mut HashSet<u32>,
        best: &mut Vec<(Neighbor, u32)>,
        lists: &mut HashMap<u32, Vec<u32>>,
        stats: &mut QueryStats,
    ) -> Result<(), SearchError> {
        if records.is_empty() {
            return Ok(());
        }
        let idx = self.index;
        // (file sector, offset, sectors) of every record.
        let mut locs: Vec<(u64, u32, u32, u32)> = records
            .iter()
            .map(|&r| {
                let c = idx.cluster_of(r);
                let e = &idx.entries[c];
                let loc = idx.layout.locate(r as u64 - e.first_record);
                (
                    1 + e.first_sector + loc.sector,
                    loc.offset_bytes,
                    loc.sectors,
                    r,
                )
            })
            .collect();
        locs.sort_unstable();
        // Coalesce into ranges of consecutive sectors.
        let mut reqs: Vec<ReadRequest> = Vec::new();
        let mut range_start: Vec<u64> = Vec::new(); // first sector of each request
        for &(s, _, n, _) in &locs {
            if let (Some(last), Some(&start)) = (reqs.last_mut(), range_start.last()) {
                let end = start + last.sectors() as u64;
                if s < end && s + n as u64 <= end {
                    continue; // inside the current range
                }
                let new_end = (s + n as u64).max(end);
                if s <= end && (new_end - start) as u32 <= MAX_RANGE_SECTORS {
                    *last = ReadRequest::new(start, (new_end - start) as u32).expect("small range");
                    continue;
                }
            }
            reqs.push(ReadRequest::new(s, n).expect("record range"));
            range_start.push(s);
        }
        let rs = idx.reader.read_batch(&reqs, &mut self.buf)?;
        stats.reads += rs.reads;
        stats.sectors += rs.sectors;
        stats.bytes += rs.bytes;
        stats.io_rounds += rs.rounds;
        // Byte position of every request in the buffer.
        let mut pos = Vec::with_capacity(reqs.len());
        let mut acc = 0usize;
        for r in &reqs {
            pos.push(acc);
            acc += r.len_bytes();
        }
        let q = &self.query;
        let rb = idx.codec.record_bytes() as usize;
        for &(s, off, _, r) in &locs {
            let ri = range_start.partition_point(|&st| st <= s) - 1;
            let start = pos[ri] + (s - range_start[ri]) as usize * SECTOR_BYTES + off as usize;
            let bytes = &self.buf[start..start + rb];
            let rec = idx
                .codec
                .decode(bytes, &idx.dir, s * SECTOR_BYTES as u64 + off as u64)?;
            let v: &[f32] = match idx.codec.dtype() {
                DType::F32 => match bytemuck::try_cast_slice::<u8, f32>(rec.vector_bytes()) {
                    Ok(v) => v,
                    Err(_) => {
                        for (o, c) in self
                            .vec_scratch
                            .iter_mut()
                            .zip(rec.vector_bytes().chunks_exact(4))
                        {
                            *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                        }
                        &self.vec_scratch
                    }
                },
                DType::U8 => {
                    for (o, &b) in self.vec_scratch.iter_mut().zip(rec.vector_bytes()) {
                        *o = b as f32;
                    }
                    &self.vec_scratch
                }
                DType::I8 => {
                    for (o, &b) in self.vec_scratch.iter_mut().zip(rec.vector_bytes()) {
                        *o = b as i8 as f32;
                    }
                    &self.vec_scratch
                }
            };
            if v.len() != q.len() {
                return Err(FormatError::corrupt(
                    &idx.dir,
                    s * SECTOR_BYTES as u64,
                    "record dimension",
                )
                .into());
            }
            let dist = match (params.distance, &self.weights) {
                (super::RerankDistance::LcCmd { .. }, Some((_, w))) => {
                    distance::weighted_l2_sq(q, v, w)
                }
                _ => match idx.metric {
                    Metric::L2 => distance::l2_sq(q, v),
                    _ => -distance::dot(q, v),
                },
            };
            stats.dist_comps += 1;
            let id = rec.id();
            if params.expand_rounds > 0 {
                lists.insert(r, rec.neighbours().collect());
            }
            let n = Neighbor { id, dist };
            best.push((n, r));
            if result_ids.insert(id) {
                results.push(n);
            }
        }
        Ok(())
    }
}

#[inline]
fn approx_dist(metric: Metric, centroid_score: f32, table_sum: f32, correction: f32) -> f32 {
    match metric {
        // |q − c − r̂|² = |q − c|² + (|r̂|² + 2c·r̂) − 2 q·r̂
        Metric::L2 => centroid_score + correction - 2.0 * table_sum,
        // −q·(c + r̂)
        _ => centroid_score - table_sum,
    }
}

#[inline]
fn pq_score(table: &[f32], code: &[u8]) -> f32 {
    code.iter()
        .enumerate()
        .map(|(s, &c)| table[s * crate::pq::CODEWORDS + c as usize])
        .sum()
}

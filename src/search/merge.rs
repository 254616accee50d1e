//! Writing the next generation of a merged index (decision 0012, `docs/FORMAT.md` "Format
//! 2.0"): the chosen clusters' live records (base records whose vid lives, and the live
//! inserts routed to them) rewritten into one new data segment, sorted by key, with record
//! numbers after the last one; the old numbers become holes. Segments that still hold a
//! cluster not chosen are hard-linked; the RAM-sized files are written whole. The caller
//! (`update::merge`) chooses the clusters, publishes and re-inserts what stayed in the log.

use std::collections::HashMap;
use std::path::Path;

use super::SearchError;
use super::index::Index;
use super::merge_plan::{
    CROSS_CLUSTERS, GroupView, LinkTargets, SPLIT_NEIGHBOURS, group_lists, nearest_clusters,
};
use crate::data::MatrixView;
use crate::distance;
use crate::format::files::{
    CLUSTERS_FILE, COARSE_FILE, HINTS_FILE, IDS_FILE, KEYS_FILE, MANIFEST_FILE, PQ_FILE,
    REFINE_FILE, SECTORS_FILE, SEGMENTS_FILE, STATS_FILE,
};
use crate::format::manifest::{META_FLAG_IDS, META_FLAG_SEGMENTS};
use crate::format::pq::REFINE_KIND;
use crate::format::{
    ClusterEntry, ClusterTable, DataFileParams, DataFileWriter, FileEntry, FormatError, Hints,
    Manifest, PqFile, RecordKeys, SECTOR_BYTES, SectorCrcs, SegmentEntry, Segments, Stats, UserIds,
};
use crate::io::ReadRequest;
use bytemuck::Zeroable;
use rayon::prelude::*;

/// One cluster's updates since its records were written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterChurn {
    /// Records the cluster holds (in its segment).
    pub records: u32,
    /// Of them, records of dead vids (deleted or replaced).
    pub dead: u32,
    /// Live inserts routed to it (in `delta.m3`).
    pub inserts: u32,
    /// The segment holding its records.
    pub segment: u32,
}

/// A live record as [`Index::cluster_records`] reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterRecord {
    /// Its record number.
    pub record: u32,
    /// Its vid ([`Index::user_id`] gives the user id).
    pub vid: u32,
    /// The stored vector.
    pub vector: Vec<f32>,
    /// Its neighbour list (record numbers).
    pub neighbours: Vec<u32>,
}

/// One live record of a merged cluster, as it is written.
struct Member {
    vector: Vec<f32>,
    vid: u32,
    /// Old record number (base records only: neighbour lists name it).
    old: Option<u32>,
    neighbours: Vec<u32>,
    code: Vec<u8>,
    correction: f32,
    error: f32,
    key: f32,
    refine: Option<(Vec<u8>, f32)>,
}

/// What [`Index::write_merged`] wrote.
#[derive(Debug)]
pub(crate) struct MergeOutput {
    pub(crate) manifest: Manifest,
    /// Clusters rewritten (the chosen ones and a split cluster's neighbours).
    pub(crate) clusters: usize,
    /// Vectors LIRE's reassignment moved to another cluster after a split, and the
    /// clusters it involved (the halves of split clusters and their nearest clusters).
    pub(crate) reassigned: usize,
    pub(crate) lire_clusters: Vec<u32>,
    /// Records written into the new segment.
    pub(crate) records_written: u64,
    /// Bytes of the files written (the new segment and the RAM-sized files).
    pub(crate) bytes_written: u64,
    /// Segments no longer listed.
    pub(crate) segments_dropped: usize,
    /// Live inserts of clusters not merged: (user id, stored vector), to be inserted again
    /// into the new generation's log.
    pub(crate) unmerged: Vec<(u64, Vec<f32>)>,
}

impl Index {
    /// Per cluster: its records, dead records, live inserts and segment.
    pub fn cluster_churn(&self) -> Vec<ClusterChurn> {
        let starts = self.segments.starts();
        self.entries
            .iter()
            .enumerate()
            .map(|(c, e)| {
                let first = e.first_record as u32;
                let dead = (first..first + e.records)
                    .filter(|&r| self.live.base_record_dead(r))
                    .count() as u32;
                ClusterChurn {
                    records: e.records,
                    dead,
                    inserts: self.live.in_cluster(c).len() as u32,
                    segment: segment_of(&starts, e.first_sector) as u32,
                }
            })
            .collect()
    }

    /// Records each segment holds (its header's count) and of them the live ones.
    pub fn segment_liveness(&self, churn: &[ClusterChurn]) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = self
            .segments
            .segments
            .iter()
            .map(|s| (s.records, 0))
            .collect();
        for c in churn {
            if let Some(o) = out.get_mut(c.segment as usize) {
                o.1 += u64::from(c.records - c.dead);
            }
        }
        out
    }

    /// The live base records of cluster `c` (its inserts in the log not included): vid,
    /// stored vector and neighbour list, in record order. For checks and tests; reads the
    /// cluster's sectors.
    pub fn cluster_records(&self, c: usize) -> Result<Vec<ClusterRecord>, SearchError> {
        if c >= self.entries.len() {
            return Err(merge_error(format!(
                "cluster {c}: the index has {}",
                self.entries.len()
            )));
        }
        Ok(self
            .live_members(c)?
            .into_iter()
            .filter_map(|m| {
                Some(ClusterRecord {
                    record: m.old?,
                    vid: m.vid,
                    vector: m.vector,
                    neighbours: m.neighbours,
                })
            })
            .collect())
    }

    /// The vids of the live inserts in cluster `c` (in `delta.m3`, not yet merged), one per
    /// delta record, in log order: an insert with a spill copy there is listed in its primary
    /// cluster and in the copy's. For checks and tests.
    pub fn cluster_inserts(&self, c: usize) -> Vec<u32> {
        let n = self.meta.n_records;
        self.live
            .in_cluster(c)
            .iter()
            .map(|&r| self.live.vids[(u64::from(r) - n) as usize])
            .collect()
    }

    /// The centroid of cluster `c` (stored coordinates).
    pub fn centroid(&self, c: usize) -> &[f32] {
        self.centroids.row(c)
    }

    /// The file names of the data segments.
    pub fn segment_names(&self) -> Vec<String> {
        let s = &self.segments.segments;
        s.iter()
            .map(|e| e.name_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Writes the next generation with `chosen` (sorted, unique) clusters merged into the
    /// directory `out` (module doc); the manifest is returned, not written. A cluster that
    /// will be split brings its [`SPLIT_NEIGHBOURS`] nearest clusters into the merge (LIRE's
    /// reassignment).
    pub(crate) fn write_merged(
        &self,
        chosen: &[u32],
        max_records: Option<u32>,
        out: &Path,
    ) -> Result<MergeOutput, SearchError> {
        let chosen = self.with_split_neighbours(chosen, max_records);
        let mut members = self.merged_members(&chosen)?;
        let (groups, centroids) = self.split_large(&chosen, &mut members, max_records);
        let (lire_clusters, reassigned) =
            self.reassign_after_splits(&groups, &centroids, &mut members);
        for m in &mut members {
            m.sort_by(|a, b| a.key.total_cmp(&b.key));
        }
        let merged_out: Vec<bool> = {
            let mut v = vec![false; self.entries.len()];
            chosen.iter().for_each(|&c| v[c as usize] = true);
            v
        };
        let churn = self.cluster_churn();
        // When every cluster holding records is merged, no record keeps its number: numbering
        // starts again at 0 (no holes) and vids are numbered again (no dead vid is kept).
        let everything = churn
            .iter()
            .zip(&merged_out)
            .all(|(ch, &m)| m || ch.records == 0);
        let sizes: Vec<u64> = members.iter().map(|m| m.len() as u64).collect();
        let (firsts, n_new) = self.place_groups(&groups, &sizes, &merged_out, everything);
        self.link_groups(&mut members, &groups, &firsts, &centroids)?;
        let mut renumber: HashMap<u32, u32> = HashMap::new();
        for (list, &first) in members.iter().zip(&firsts) {
            for (i, m) in list.iter().enumerate() {
                if let Some(old) = m.old {
                    renumber.insert(old, (first + i as u64) as u32);
                }
            }
        }
        let old_vids = everything.then(|| compact_vids(&mut members));
        let seg_no = self.segments.next_segment;
        let seg_name = Segments::file_name(seg_no);
        let (seg_entry, seg_crcs, local) = self.write_segment(&out.join(&seg_name), &members)?;
        let mut w = Written::default();
        w.add(&seg_entry);
        let split = centroids.iter().any(|(c, _, p)| c != p);
        let (segments, kept_files, old_to_new) =
            self.kept_segments(&churn, &merged_out, out, (seg_entry, &seg_name), split)?;
        let new_starts = segments.iter().fold(vec![0u64], |mut s, e| {
            s.push(s.last().copied().unwrap_or(0) + 1 + e.data_sectors);
            s
        });
        let places = Places {
            old_to_new: &old_to_new,
            new_starts: &new_starts,
            local: &local,
            firsts: &firsts,
        };
        let entries = self.new_entries(&members, &groups, &churn, &places);
        let sectors = self.new_sector_crcs(&segments, &old_to_new, &seg_crcs, out)?;
        w.add(&SectorCrcs { crcs: sectors }.write(&out.join(SECTORS_FILE))?);
        let per_record = PerRecord {
            members: &members,
            firsts: &firsts,
            n_records: n_new,
            merged_out: &merged_out,
        };
        for e in self.write_per_record(&per_record, &entries, &centroids, out)? {
            w.add(&e);
        }
        if let Some(e) = self.write_coarse(&centroids, out)? {
            w.add(&e);
        }
        if let Some(h) = &self.hints {
            let kept = |r: u32| {
                let c = self.cluster_of(r);
                let e = &self.entries[c];
                !merged_out[c] && u64::from(r) >= e.first_record && u64::from(r) < end_of(e)
            };
            let answers = super::merge_plan::renumber_answers(&h.answers, &renumber, kept);
            let hints = Hints {
                queries: h.queries.clone(),
                answers,
            };
            w.add(&hints.write(&out.join(HINTS_FILE))?);
        }
        let mut files = kept_files;
        files.extend(w.entries.iter().copied());
        let (ids_entry, seg_file, unmerged, n_vids) = self.write_ids_and_segments(
            &merged_out,
            segments,
            seg_no + 1,
            old_vids.as_deref(),
            out,
        )?;
        w.add(&ids_entry);
        w.add(&seg_file);
        files.push(ids_entry);
        files.push(seg_file);
        let kept = old_to_new.iter().flatten().count();
        let mut meta = self.meta;
        meta.flags |= META_FLAG_SEGMENTS | META_FLAG_IDS;
        meta.n_vectors = n_vids;
        meta.n_records = n_new;
        meta.n_clusters = entries.len() as u32;
        meta.data_sectors = new_starts.last().copied().unwrap_or(1) - 1;
        Ok(MergeOutput {
            manifest: Manifest { meta, files },
            clusters: chosen.len(),
            records_written: sizes.iter().sum(),
            reassigned,
            lire_clusters,
            bytes_written: w.bytes,
            segments_dropped: self.segments.segments.len() - kept,
            unmerged,
        })
    }

    /// The live members of each of the `chosen` clusters (sorted), but for the inserts that
    /// stay in the log: an insert with a spill copy in a cluster not merged is inserted again
    /// whole (its copies placed again by the rule), not written here (decision 0014).
    fn merged_members(&self, chosen: &[u32]) -> Result<Vec<Vec<Member>>, SearchError> {
        let staying = self.inserts_staying_in_the_log(chosen);
        chosen
            .iter()
            .map(|&c| {
                let mut list = self.live_members(c as usize)?;
                list.retain(|m| m.old.is_some() || !staying.contains(&m.vid));
                Ok(list)
            })
            .collect()
    }

    /// The vids of the live inserts with a delta record (primary or spill copy) in a cluster
    /// not in `chosen` (a sorted list): they stay in the log, inserted again into the next
    /// generation's, so every one of their copies is placed by the same rule again.
    fn inserts_staying_in_the_log(&self, chosen: &[u32]) -> std::collections::HashSet<u32> {
        let n = self.meta.n_records;
        let l = &self.live;
        (0..l.by_cluster.len() as u32)
            .filter(|c| chosen.binary_search(c).is_err())
            .flat_map(|c| l.in_cluster(c as usize).iter())
            .map(|&r| l.vids[(u64::from(r) - n) as usize])
            .collect()
    }

    /// `chosen` and, for each chosen cluster whose live records pass `max_records` (it will
    /// be split), its [`SPLIT_NEIGHBOURS`] nearest clusters by centroid distance; sorted.
    fn with_split_neighbours(&self, chosen: &[u32], max_records: Option<u32>) -> Vec<u32> {
        let mut out = chosen.to_vec();
        if let Some(cap) = max_records {
            let churn = self.cluster_churn();
            for &c in chosen {
                let ch = churn[c as usize];
                if ch.records - ch.dead + ch.inserts > cap {
                    out.extend(nearest_clusters(
                        c as usize,
                        self.entries.len(),
                        SPLIT_NEIGHBOURS,
                        |i| self.centroids.row(i),
                    ));
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Record numbers of the merged groups ([`super::merge_plan::place_records`]): kept
    /// clusters keep theirs; a group takes its own old range when it fits, else the first
    /// hole that holds it; from 0 in order when `everything` is merged.
    fn place_groups(
        &self,
        groups: &[u32],
        sizes: &[u64],
        merged_out: &[bool],
        everything: bool,
    ) -> (Vec<u64>, u64) {
        let kept: Vec<(u64, u64)> = self
            .entries
            .iter()
            .zip(merged_out)
            .filter(|(e, m)| !**m && e.records > 0)
            .map(|(e, _)| (e.first_record, end_of(e)))
            .collect();
        let own: Vec<Option<(u64, u64)>> = groups
            .iter()
            .map(|&c| {
                let e = self.entries.get(c as usize)?;
                (!everything && e.records > 0).then(|| (e.first_record, end_of(e)))
            })
            .collect();
        let (firsts, end) = super::merge_plan::place_records(&kept, &own, sizes);
        // Neighbour lists of kept clusters may name any old number: the count never shrinks
        // while a cluster keeps its records.
        let floor = if kept.is_empty() {
            0
        } else {
            self.meta.n_records
        };
        (firsts, end.max(floor))
    }

    /// Predicted record numbers and records after merging `chosen` (live records per
    /// cluster as [`Index::cluster_churn`] counts them; splits not counted): what the merge
    /// policy checks the holes against.
    pub fn records_after_merge(&self, chosen: &[u32]) -> (u64, u64) {
        let churn = self.cluster_churn();
        let n = self.entries.len();
        let mut merged_out = vec![false; n];
        chosen
            .iter()
            .filter(|&&c| (c as usize) < n)
            .for_each(|&c| merged_out[c as usize] = true);
        let everything = churn
            .iter()
            .zip(&merged_out)
            .all(|(ch, &m)| m || ch.records == 0);
        let groups: Vec<u32> = (0..self.entries.len() as u32)
            .filter(|&c| merged_out[c as usize])
            .collect();
        let sizes: Vec<u64> = groups
            .iter()
            .map(|&c| {
                let ch = churn[c as usize];
                u64::from(ch.records - ch.dead + ch.inserts)
            })
            .collect();
        let (_, n) = self.place_groups(&groups, &sizes, &merged_out, everything);
        let kept: u64 = churn
            .iter()
            .zip(&merged_out)
            .filter(|(_, m)| !**m)
            .map(|(ch, _)| u64::from(ch.records))
            .sum();
        (n, kept + sizes.iter().sum::<u64>())
    }

    /// Neighbour lists for every member of the merged groups, inserts included: the build's
    /// cluster-local lists and cross links to the [`CROSS_CLUSTERS`] nearest clusters by
    /// centroid (their members as written now: new numbers for merged ones, kept numbers
    /// for the others). Built on the rayon pool the merge runs in (`m3 merge --threads`).
    fn link_groups(
        &self,
        members: &mut [Vec<Member>],
        groups: &[u32],
        firsts: &[u64],
        centroids: &[NewCentroid],
    ) -> Result<(), SearchError> {
        let (params, lid) = super::merge_plan::graph_params(&self.meta, &self.stats);
        let n_all = groups
            .iter()
            .map(|&g| g as usize + 1)
            .max()
            .unwrap_or(0)
            .max(self.entries.len());
        let cen = |c: usize| -> &[f32] {
            match centroids.iter().find(|(x, _, _)| *x as usize == c) {
                Some((_, v, _)) => v,
                None => self.centroids.row(c),
            }
        };
        let mut kept_cache: HashMap<u32, LinkTargets> = HashMap::new();
        let mut lists = Vec::with_capacity(members.len());
        let ks: Vec<usize> = (0..members.len()).collect();
        // The inputs of a window of groups are gathered in order (reads of kept clusters),
        // then their lists are built on the caller's rayon pool; the result does not depend
        // on the number of threads.
        for window in ks.chunks(64) {
            let mut inputs = Vec::with_capacity(window.len());
            for &k in window {
                let mut targets = LinkTargets {
                    vectors: Vec::new(),
                    records: Vec::new(),
                    vids: Vec::new(),
                };
                for near in nearest_clusters(groups[k] as usize, n_all, CROSS_CLUSTERS, cen) {
                    if let Some(j) = groups.iter().position(|&g| g == near) {
                        for (i, m) in members[j].iter().enumerate() {
                            targets.vectors.extend_from_slice(&m.vector);
                            targets.records.push((firsts[j] + i as u64) as u32);
                            targets.vids.push(m.vid);
                        }
                        continue;
                    }
                    if let std::collections::hash_map::Entry::Vacant(e) = kept_cache.entry(near) {
                        e.insert(self.kept_targets(near as usize)?);
                    }
                    let t = &kept_cache[&near];
                    targets.vectors.extend_from_slice(&t.vectors);
                    targets.records.extend_from_slice(&t.records);
                    targets.vids.extend_from_slice(&t.vids);
                }
                let list = &members[k];
                let vectors: Vec<f32> =
                    list.iter().flat_map(|m| m.vector.iter().copied()).collect();
                let vids: Vec<u32> = list.iter().map(|m| m.vid).collect();
                inputs.push((k, targets, vectors, vids));
            }
            let built: Vec<Result<Vec<Vec<u32>>, String>> = inputs
                .par_iter()
                .map(|(k, targets, vectors, vids)| {
                    let view = GroupView {
                        vectors: MatrixView::new(vectors, self.dim).map_err(|e| e.to_string())?,
                        vids,
                        first: firsts[*k],
                    };
                    group_lists(&view, targets, &params, &lid)
                })
                .collect();
            for b in built {
                lists.push(b.map_err(merge_error)?);
            }
        }
        for (list, nbs) in members.iter_mut().zip(lists) {
            for (m, n) in list.iter_mut().zip(nbs) {
                m.neighbours = n;
            }
        }
        Ok(())
    }

    /// The live records of kept cluster `c` as cross-link targets (its inserts stay in the
    /// log: no record number).
    fn kept_targets(&self, c: usize) -> Result<LinkTargets, SearchError> {
        let mut t = LinkTargets {
            vectors: Vec::new(),
            records: Vec::new(),
            vids: Vec::new(),
        };
        if c >= self.entries.len() || self.entries[c].records == 0 {
            return Ok(t);
        }
        for m in self.live_members(c)? {
            if let Some(old) = m.old {
                t.vectors.extend_from_slice(&m.vector);
                t.records.push(old);
                t.vids.push(m.vid);
            }
        }
        Ok(t)
    }

    /// The live records of cluster `c`: its base records whose vid lives, then its live
    /// inserts, each with its vector, coding and key.
    fn live_members(&self, c: usize) -> Result<Vec<Member>, SearchError> {
        let e = self.entries[c];
        let aux = self.exact_aux()?;
        let m = self.pq.subspaces();
        let bytes = self.read_cluster(&e)?;
        let rb = self.codec.record_bytes() as usize;
        let mut out = Vec::with_capacity(e.records as usize);
        for i in 0..u64::from(e.records) {
            let r = (e.first_record + i) as u32;
            if self.live.base_record_dead(r) {
                continue;
            }
            let loc = self.layout.locate(i);
            let at = loc.sector as usize * SECTOR_BYTES + loc.offset_bytes as usize;
            let rec = self.codec.decode(&bytes[at..at + rb], &self.dir, 0)?;
            let key = match &aux.keys {
                Some(k) => k[r as usize],
                None => distance::l2_sq(&rec.vector_f32(), self.centroids.row(c)).sqrt(),
            };
            out.push(Member {
                vector: rec.vector_f32(),
                vid: rec.id(),
                old: Some(r),
                neighbours: rec.neighbours().collect(),
                code: self.codes.as_slice()[r as usize * m..(r as usize + 1) * m].to_vec(),
                correction: self.correction[r as usize],
                error: aux.error[r as usize],
                key,
                refine: self.refine.as_ref().map(|f| {
                    let fm = f.pq.subspaces();
                    (
                        f.codes.as_slice()[r as usize * fm..(r as usize + 1) * fm].to_vec(),
                        f.correction[r as usize],
                    )
                }),
            });
        }
        for &r in self.live.in_cluster(c) {
            out.push(self.delta_member(c, r)?);
        }
        Ok(out)
    }

    /// A live insert (record `r` ≥ `n_records`) as a member of cluster `c`.
    fn delta_member(&self, c: usize, r: u32) -> Result<Member, SearchError> {
        let l = &self.live;
        let d = (u64::from(r) - self.meta.n_records) as usize;
        let vector = self.read_delta_vector(l.slots[d], l.record_crcs[d])?;
        let code = l.codes.row(d).to_vec();
        let refine = self.refine.as_ref().map(|f| {
            // What the build's refine stage computes (`build::refine`): the second code of
            // what the first leaves, the L2 correction of both reconstructions together.
            let cen = self.centroids.row(c);
            let mut r1 = vec![0f32; self.dim];
            self.pq.decode(&code, &mut r1);
            let left: Vec<f32> = vector
                .iter()
                .zip(cen)
                .zip(&r1)
                .map(|((x, c), a)| x - c - a)
                .collect();
            let mut code2 = vec![0u8; f.pq.subspaces()];
            f.pq.encode(&left, &mut code2);
            let mut r2 = vec![0f32; self.dim];
            f.pq.decode(&code2, &mut r2);
            r1.iter_mut().zip(&r2).for_each(|(a, b)| *a += b);
            (
                code2,
                distance::dot(&r1, &r1) + 2.0 * distance::dot(cen, &r1),
            )
        });
        Ok(Member {
            vector,
            vid: l.vids[d],
            old: None,
            neighbours: Vec::new(),
            code,
            correction: l.correction[d],
            error: l.error[d],
            key: l.keys[d],
            refine,
        })
    }

    /// The stored vector of the committed insert in slot `slot` of `delta.m3`, whose record
    /// the log gives CRC32C `record_crc32c` (checked: a damaged record is a
    /// [`FormatError::Checksum`] naming the slot). Any slot the log has committed can be read,
    /// also one committed after this generation was opened (the merge beside a writer carries
    /// those into its log).
    pub(crate) fn read_delta_vector(
        &self,
        slot: u64,
        record_crc32c: u32,
    ) -> Result<Vec<f32>, SearchError> {
        use std::os::unix::fs::FileExt;
        let path = self.dir.join(crate::format::files::DELTA_FILE);
        let file = std::fs::File::open(&path).map_err(|e| FormatError::io(&path, e))?;
        let mut bytes = vec![0u8; self.codec.record_bytes() as usize];
        let (offset, _, _) = crate::format::delta::slot_location(self.layout, slot);
        file.read_exact_at(&mut bytes, offset)
            .map_err(|e| FormatError::io(&path, e))?;
        let computed = crc32c::crc32c(&bytes);
        if computed != record_crc32c {
            return Err(FormatError::Checksum {
                path,
                what: format!("inserted record in slot {slot} (checked against wal.m3 when read)"),
                stored: record_crc32c,
                computed,
            }
            .into());
        }
        // The bytes are the ones the log committed (checked above); the vid was numbered by
        // the writer, possibly after this generation (no bound of this generation applies).
        let rec = self
            .codec
            .with_n_vectors(u64::MAX)
            .decode(&bytes, &path, offset)?;
        Ok(rec.vector_f32())
    }

    /// The sectors of cluster `e`, read through the data reader.
    fn read_cluster(&self, e: &ClusterEntry) -> Result<Vec<u8>, SearchError> {
        let sectors = self.layout.sectors_for(u64::from(e.records));
        let mut out = Vec::with_capacity(sectors as usize * SECTOR_BYTES);
        let mut buf = crate::io::AlignedBuf::new();
        let mut done = 0u64;
        while done < sectors {
            let take = (sectors - done).min(256);
            let req =
                ReadRequest::new(1 + e.first_sector + done, take as u32).expect("a small range");
            self.data_reader.read_batch(&[req], &mut buf)?;
            out.extend_from_slice(&buf[..take as usize * SECTOR_BYTES]);
            done += take;
        }
        Ok(out)
    }

    /// Writes the new segment: the merged groups in order, each member with its neighbour
    /// list (already in the next generation's record numbers). Returns its manifest entry,
    /// its data sectors' CRC32Cs and its cluster entries.
    fn write_segment(
        &self,
        path: &Path,
        members: &[Vec<Member>],
    ) -> Result<(FileEntry, Vec<u32>, Vec<ClusterEntry>), SearchError> {
        let sizes: Vec<u32> = members.iter().map(|m| m.len() as u32).collect();
        let w = DataFileWriter::create(
            path,
            &DataFileParams {
                dim: self.meta.dim,
                dtype: self.codec.dtype(),
                max_degree: self.meta.max_degree,
                cluster_sizes: &sizes,
            },
        )?;
        let mut buf = vec![0u8; self.codec.record_bytes() as usize];
        for (k, list) in members.iter().enumerate() {
            for (i, mem) in list.iter().enumerate() {
                w.codec()
                    .encode_f32(&mem.vector, mem.vid, &mem.neighbours, &mut buf)?;
                w.write_record(k as u32, i as u32, &buf)?;
            }
        }
        let local = w.cluster_entries().to_vec();
        let scratch = path.with_extension("sectors.scratch");
        let (entry, _) = w.finish(&scratch)?;
        let crcs = SectorCrcs::read(&scratch)?.crcs;
        std::fs::remove_file(&scratch).map_err(|e| FormatError::io(&scratch, e))?;
        Ok((entry, crcs, local))
    }
}

/// The segments of the next generation, the manifest entries of the files carried over, and
/// each old segment's place in the new list.
type KeptSegments = (Vec<SegmentEntry>, Vec<FileEntry>, Vec<Option<usize>>);

/// What `write_ids_and_segments` wrote (`ids.m3`, `segments.m3`), the inserts left in the
/// log, and the number of vids.
type IdsAndSegments = (FileEntry, FileEntry, Vec<(u64, Vec<f32>)>, u64);

impl Index {
    /// LIRE's split (decision 0012): every group of more than `max_records` members is split
    /// in two by 2-means (a few Lloyd rounds from its nearest and farthest member); the
    /// first half keeps the cluster id, the second gets a new one after the last; both get
    /// the mean of their members as centroid and are coded again against it. Returns the
    /// cluster id of each group and the new centroids. On an index with two-level routing
    /// the new cluster joins its parent's coarse group ([`Index::write_coarse`]).
    fn split_large(
        &self,
        chosen: &[u32],
        members: &mut Vec<Vec<Member>>,
        max_records: Option<u32>,
    ) -> (Vec<u32>, Vec<NewCentroid>) {
        let mut groups = chosen.to_vec();
        let mut centroids = Vec::new();
        let Some(cap) = max_records else {
            return (groups, centroids);
        };
        let mut next = self.entries.len() as u32;
        for k in 0..chosen.len() {
            if members[k].len() <= cap as usize {
                continue;
            }
            let Some((a, b)) = two_means(&members[k]) else {
                continue;
            };
            let (ca, cb) = (mean(&members[k], &a), mean(&members[k], &b));
            let all = std::mem::take(&mut members[k]);
            let (mut left, mut right) = (Vec::new(), Vec::new());
            for (i, mut m) in all.into_iter().enumerate() {
                let to_a = a.contains(&i);
                self.recode(&mut m, if to_a { &ca } else { &cb });
                if to_a { left.push(m) } else { right.push(m) }
            }
            members[k] = left;
            members.push(right);
            groups.push(next);
            centroids.push((chosen[k], ca, chosen[k]));
            centroids.push((next, cb, chosen[k]));
            next += 1;
        }
        (groups, centroids)
    }

    /// LIRE's reassignment after the splits ([`super::merge_plan::reassignments`]): every
    /// member of a split cluster's two halves and of its [`SPLIT_NEIGHBOURS`] nearest
    /// clusters (merged with it) moves to the nearest of their centroids and is coded again
    /// against it. Returns the clusters involved (sorted) and how many members moved.
    fn reassign_after_splits(
        &self,
        groups: &[u32],
        centroids: &[NewCentroid],
        members: &mut [Vec<Member>],
    ) -> (Vec<u32>, usize) {
        let pos = |x: u32| groups.iter().position(|&g| g == x);
        let mut involved: Vec<usize> = Vec::new();
        for (c, _, parent) in centroids.iter().filter(|(c, _, p)| c != p) {
            involved.extend(pos(*c));
            involved.extend(pos(*parent));
            let near = nearest_clusters(
                *parent as usize,
                self.entries.len(),
                SPLIT_NEIGHBOURS,
                |i| self.centroids.row(i),
            );
            involved.extend(near.into_iter().filter_map(pos));
        }
        involved.sort_unstable();
        involved.dedup();
        let cen = |k: usize| -> Vec<f32> {
            match centroids.iter().find(|(x, _, _)| *x == groups[k]) {
                Some((_, v, _)) => v.clone(),
                None => self.centroids.row(groups[k] as usize).to_vec(),
            }
        };
        let mut moves = super::merge_plan::reassignments(
            &involved,
            |k| members[k].iter().map(|m| m.vector.clone()).collect(),
            cen,
        );
        // Taken out from the highest index down, so the lower ones stay valid.
        moves.sort_unstable_by(|a, b| (a.1, b.0).cmp(&(b.1, a.0)));
        let mut moved = Vec::with_capacity(moves.len());
        for &(i, from, to) in &moves {
            moved.push((members[from].remove(i), to));
        }
        for (mut m, to) in moved {
            // A spilled copy moving to a cluster that holds the vector already is dropped.
            if members[to].iter().any(|x| x.vid == m.vid) {
                continue;
            }
            self.recode(&mut m, &cen(to));
            members[to].push(m);
        }
        let mut clusters: Vec<u32> = involved.iter().map(|&k| groups[k]).collect();
        clusters.sort_unstable();
        (clusters, moves.len())
    }

    /// Codes member `m` against centroid `cen`: what the build's assign and refine stages
    /// compute (code of the residual, L2 correction, error, key, refinement code).
    fn recode(&self, m: &mut Member, cen: &[f32]) {
        let r: Vec<f32> = m.vector.iter().zip(cen).map(|(x, c)| x - c).collect();
        self.pq.encode(&r, &mut m.code);
        let mut rhat = vec![0f32; self.dim];
        self.pq.decode(&m.code, &mut rhat);
        m.correction = distance::dot(&rhat, &rhat) + 2.0 * distance::dot(cen, &rhat);
        m.error = distance::l2_sq(&r, &rhat).sqrt();
        m.key = distance::dot(&r, &r).sqrt();
        if let Some(f) = &self.refine {
            let left: Vec<f32> = r.iter().zip(&rhat).map(|(a, b)| a - b).collect();
            let mut code2 = vec![0u8; f.pq.subspaces()];
            f.pq.encode(&left, &mut code2);
            let mut r2 = vec![0f32; self.dim];
            f.pq.decode(&code2, &mut r2);
            rhat.iter_mut().zip(&r2).for_each(|(a, b)| *a += b);
            let corr = distance::dot(&rhat, &rhat) + 2.0 * distance::dot(cen, &rhat);
            m.refine = Some((code2, corr));
        }
    }
}

/// A centroid a split set: the cluster, its centroid, the cluster it was split from (itself
/// for the half that keeps the id).
type NewCentroid = (u32, Vec<f32>, u32);

/// 2-means of the members' vectors (10 Lloyd rounds from the first and last by key):
/// the indices of the two halves, or `None` when one would be empty.
fn two_means(members: &[Member]) -> Option<(Vec<usize>, Vec<usize>)> {
    let by_key = |i: usize| members[i].key;
    let first = (0..members.len()).min_by(|&a, &b| by_key(a).total_cmp(&by_key(b)))?;
    let last = (0..members.len()).max_by(|&a, &b| by_key(a).total_cmp(&by_key(b)))?;
    let (mut ca, mut cb) = (members[first].vector.clone(), members[last].vector.clone());
    let mut split = (Vec::new(), Vec::new());
    for _ in 0..10 {
        let (a, b): (Vec<usize>, Vec<usize>) = (0..members.len()).partition(|&i| {
            let v = &members[i].vector;
            distance::l2_sq(v, &ca) <= distance::l2_sq(v, &cb)
        });
        if a.is_empty() || b.is_empty() {
            return None;
        }
        ca = mean(members, &a);
        cb = mean(members, &b);
        split = (a, b);
    }
    Some(split)
}

/// The mean vector of `members[i]` for `i` in `which` (not empty).
fn mean(members: &[Member], which: &[usize]) -> Vec<f32> {
    let mut out = vec![0f32; members[which[0]].vector.len()];
    for &i in which {
        out.iter_mut()
            .zip(&members[i].vector)
            .for_each(|(o, x)| *o += x);
    }
    out.iter_mut().for_each(|o| *o /= which.len() as f32);
    out
}

/// Where the merged clusters go: each old segment's place in the new list, the new
/// segments' first sectors, the new segment's cluster entries, each group's first record
/// number.
struct Places<'a> {
    old_to_new: &'a [Option<usize>],
    new_starts: &'a [u64],
    local: &'a [ClusterEntry],
    firsts: &'a [u64],
}

/// What the per-record files of the next generation hold: the merged groups' members from
/// their first record numbers on, `n_records` numbers in all; the old ranges of merged
/// clusters not written again are holes (zero).
struct PerRecord<'a> {
    members: &'a [Vec<Member>],
    firsts: &'a [u64],
    n_records: u64,
    merged_out: &'a [bool],
}

/// One past the last record number of `e`.
fn end_of(e: &ClusterEntry) -> u64 {
    e.first_record + u64::from(e.records)
}

fn merge_error(what: String) -> SearchError {
    SearchError::Param {
        name: "merge",
        what,
    }
}

/// Numbers the members' vids again from 0 in order (every copy of a vector gets the same
/// new vid); returns the old vid of each new one.
fn compact_vids(members: &mut [Vec<Member>]) -> Vec<u32> {
    let mut map: HashMap<u32, u32> = HashMap::new();
    let mut olds = Vec::new();
    for m in members.iter_mut().flatten() {
        m.vid = *map.entry(m.vid).or_insert_with(|| {
            olds.push(m.vid);
            (olds.len() - 1) as u32
        });
    }
    olds
}

/// Bytes and entries of the files a merge wrote.
#[derive(Default)]
struct Written {
    bytes: u64,
    entries: Vec<FileEntry>,
}

impl Written {
    fn add(&mut self, e: &FileEntry) {
        self.bytes += e.bytes;
        self.entries.push(*e);
    }
}

/// The segment holding data sector `sector` (`starts`: [`Segments::starts`]).
fn segment_of(starts: &[u64], sector: u64) -> usize {
    starts.partition_point(|&b| b <= sector).saturating_sub(1)
}

impl Index {
    /// The segments of the next generation: those that still hold a cluster not merged
    /// (hard-linked into `out`), then the new one. Returns them, the manifest entries of
    /// every file carried over unchanged (kept segments, routing, …; `coarse.m3` unless a
    /// cluster was `split`), and each old segment's index in the new list.
    fn kept_segments(
        &self,
        churn: &[ClusterChurn],
        merged_out: &[bool],
        out: &Path,
        (seg_entry, seg_name): (FileEntry, &str),
        split: bool,
    ) -> Result<KeptSegments, SearchError> {
        let old = &self.segments.segments;
        let mut holds = vec![false; old.len()];
        for (c, ch) in churn.iter().enumerate() {
            if !merged_out[c] && ch.records > 0 {
                holds[ch.segment as usize] = true;
            }
        }
        let manifest = Manifest::read(&self.dir.join(MANIFEST_FILE))?;
        let rewritten = [
            CLUSTERS_FILE,
            HINTS_FILE,
            PQ_FILE,
            REFINE_FILE,
            KEYS_FILE,
            SECTORS_FILE,
            STATS_FILE,
            IDS_FILE,
            SEGMENTS_FILE,
        ];
        let mut segments = Vec::new();
        let mut old_to_new = vec![None; old.len()];
        let mut files = Vec::new();
        for f in &manifest.files {
            let name = f.name_str().unwrap_or_default();
            let seg = old.iter().position(|s| s.name_str() == Some(name));
            let coarse = split && name == COARSE_FILE;
            if coarse || rewritten.contains(&name) || seg.is_some_and(|k| !holds[k]) {
                continue;
            }
            link(&self.dir.join(name), &out.join(name))?;
            files.push(*f);
        }
        for (k, s) in old.iter().enumerate().filter(|(k, _)| holds[*k]) {
            old_to_new[k] = Some(segments.len());
            segments.push(*s);
        }
        let header = crate::format::DataFileHeader::read(&out.join(seg_name))?;
        segments.push(SegmentEntry::new(
            seg_name,
            header.data_sectors,
            header.n_records,
        )?);
        debug_assert_eq!(seg_entry.name_str(), Some(seg_name));
        Ok((segments, files, old_to_new))
    }

    /// The cluster table of the next generation: merged clusters in the new segment, the
    /// others moved with their segment.
    fn new_entries(
        &self,
        members: &[Vec<Member>],
        groups: &[u32],
        churn: &[ClusterChurn],
        places: &Places<'_>,
    ) -> Vec<ClusterEntry> {
        let (old_to_new, new_starts, local) = (places.old_to_new, places.new_starts, places.local);
        let old_starts = self.segments.starts();
        let seg_start = new_starts[new_starts.len() - 2];
        let mut entries = self.entries.clone();
        let n = groups.iter().map(|&g| g as usize + 1).max().unwrap_or(0);
        entries.resize(n.max(entries.len()), ClusterEntry::zeroed());
        for (c, e) in entries.iter_mut().enumerate() {
            if let Some(k) = groups.iter().position(|&x| x as usize == c) {
                let l = local[k];
                let keys: Vec<f32> = members[k].iter().map(|m| m.key).collect();
                *e = ClusterEntry {
                    first_sector: seg_start + l.first_sector,
                    first_record: places.firsts[k],
                    records: l.records,
                    r_min: keys.first().copied().unwrap_or(0.0),
                    r_max: keys.last().copied().unwrap_or(0.0),
                    reserved: 0,
                };
            } else if e.records > 0 {
                let k = churn[c].segment as usize;
                let to = old_to_new[k].expect("a segment holding a cluster is kept");
                e.first_sector = e.first_sector - old_starts[k] + new_starts[to];
            } else {
                // An empty cluster holds nothing: place it at the start of the data.
                e.first_sector = 0;
                e.first_record = 0;
            }
        }
        entries
    }

    /// `sectors.m3` of the next generation: every data sector of the kept segments (their
    /// header sectors too, but the first's) and of the new one, in order.
    fn new_sector_crcs(
        &self,
        segments: &[SegmentEntry],
        old_to_new: &[Option<usize>],
        seg_crcs: &[u32],
        out: &Path,
    ) -> Result<Vec<u32>, SearchError> {
        let old = SectorCrcs::read(&self.dir.join(SECTORS_FILE))?.crcs;
        let old_starts = self.segments.starts();
        let mut crcs = Vec::new();
        for (j, s) in segments.iter().enumerate() {
            let name = s.name_str().unwrap_or_default();
            if j > 0 {
                crcs.push(header_sector_crc(&out.join(name))?);
            }
            match old_to_new.iter().position(|&t| t == Some(j)) {
                Some(k) => {
                    let b = old_starts[k] as usize;
                    let range = old.get(b..b + s.data_sectors as usize).ok_or_else(|| {
                        FormatError::corrupt(self.dir.join(SECTORS_FILE), 32, "too few sectors")
                    })?;
                    crcs.extend_from_slice(range);
                }
                None => crcs.extend_from_slice(seg_crcs),
            }
        }
        Ok(crcs)
    }

    /// `pq.m3`, `refine.m3`, `keys.m3`, `clusters.m3` and `stats.m3` of the next
    /// generation (holes: zero); their manifest entries (refine and keys when the index has
    /// them).
    fn write_per_record(
        &self,
        p: &PerRecord<'_>,
        entries: &[ClusterEntry],
        centroids: &[NewCentroid],
        out: &Path,
    ) -> Result<Vec<FileEntry>, SearchError> {
        let mut pq = PqFile::read(&self.dir.join(PQ_FILE))?;
        let mut refine = match &self.refine {
            Some(_) => Some(PqFile::read_as(&self.dir.join(REFINE_FILE), &REFINE_KIND)?),
            None => None,
        };
        let keys_path = self.dir.join(KEYS_FILE);
        let mut keys = keys_path
            .exists()
            .then(|| RecordKeys::read(&keys_path))
            .transpose()?;
        let n = p.n_records as usize;
        // Kept clusters keep their numbers; the old ranges of merged ones become holes
        // unless a merged record takes them below.
        let holes: Vec<(u64, u64)> = self
            .entries
            .iter()
            .zip(p.merged_out)
            .filter(|(e, m)| **m && e.records > 0 && e.first_record < p.n_records)
            .map(|(e, _)| (e.first_record, end_of(e).min(p.n_records)))
            .collect();
        resize_pq(&mut pq, n, &holes)?;
        if let Some(f) = refine.as_mut() {
            resize_pq(f, n, &holes)?;
        }
        if let Some(k) = keys.as_mut() {
            k.keys.resize(n, 0.0);
            for &(a, b) in &holes {
                k.keys[a as usize..b.max(a) as usize].fill(0.0);
            }
        }
        let mut max_norm = 0f32;
        let m = pq.codes.dim();
        for (list, &first) in p.members.iter().zip(p.firsts) {
            for (i, mem) in list.iter().enumerate() {
                let r = first as usize + i;
                pq.codes.as_mut_slice()[r * m..(r + 1) * m].copy_from_slice(&mem.code);
                pq.correction[r] = mem.correction;
                pq.error[r] = mem.error;
                if let (Some(f), Some((code, corr))) = (refine.as_mut(), &mem.refine) {
                    let fm = f.codes.dim();
                    f.codes.as_mut_slice()[r * fm..(r + 1) * fm].copy_from_slice(code);
                    f.correction[r] = *corr;
                    f.error[r] = 0.0;
                }
                if let Some(k) = keys.as_mut() {
                    k.keys[r] = mem.key;
                }
                max_norm = max_norm.max(distance::dot(&mem.vector, &mem.vector).sqrt());
            }
        }
        let mut files = vec![pq.write(&out.join(PQ_FILE))?];
        if let Some(f) = refine {
            files.push(f.write_as(&out.join(REFINE_FILE), &REFINE_KIND)?);
        }
        if let Some(k) = keys {
            files.push(k.write(&out.join(KEYS_FILE))?);
        }
        let mut table = ClusterTable::read(&self.dir.join(CLUSTERS_FILE))?;
        table.entries = entries.to_vec();
        for (c, cen, parent) in centroids {
            let (c, parent) = (*c as usize, *parent as usize);
            if c < table.centroids.rows() {
                table.centroids.row_mut(c).copy_from_slice(cen);
            } else {
                // A cluster split off: its anchor-graph row is its parent's nearest first.
                append_rows(&mut table.centroids, cen)?;
                let mut row = vec![parent as u32];
                row.extend_from_slice(table.anchor_graph.row(parent));
                row.truncate(table.anchor_graph.dim());
                append_rows(&mut table.anchor_graph, &row)?;
            }
        }
        files.push(table.write(&out.join(CLUSTERS_FILE))?);
        let mut stats = Stats::read(&self.dir.join(STATS_FILE))?;
        stats.max_base_norm = stats.max_base_norm.max(max_norm);
        files.push(stats.write(&out.join(STATS_FILE))?);
        Ok(files)
    }

    /// `coarse.m3` of the next generation when a cluster was split on an index with
    /// two-level routing: each new cluster joins its parent's coarse group (the group
    /// centres are kept). `None`: nothing to write (no coarse level, or no split).
    fn write_coarse(
        &self,
        centroids: &[NewCentroid],
        out: &Path,
    ) -> Result<Option<FileEntry>, SearchError> {
        let Some(coarse) = &self.coarse else {
            return Ok(None);
        };
        let mut added: Vec<(u32, u32)> = centroids
            .iter()
            .filter(|(c, _, p)| c != p)
            .map(|(c, _, p)| (*c, *p))
            .collect();
        if added.is_empty() {
            return Ok(None);
        }
        added.sort_unstable();
        let mut level = coarse.clone();
        for (_, parent) in added {
            let label = level.labels.get(parent as usize).copied().unwrap_or(0);
            level.labels.push(label);
        }
        Ok(Some(level.write(&out.join(COARSE_FILE))?))
    }

    /// `ids.m3` (the user id of every vid) and `segments.m3` (the dead vids: deleted,
    /// replaced, or inserts that stay in the log and are inserted again) of the next
    /// generation, those inserts, and the number of vids. With `old_vids` (vids numbered
    /// again by [`compact_vids`]) the vids are exactly the written records' and none is dead.
    fn write_ids_and_segments(
        &self,
        merged_out: &[bool],
        segments: Vec<SegmentEntry>,
        next_segment: u64,
        old_vids: Option<&[u32]>,
        out: &Path,
    ) -> Result<IdsAndSegments, SearchError> {
        let base = self.user_ids.as_deref();
        let user = |v: u32| match self.live_ids() {
            Some(ids) => ids.user_id(base, v),
            None => base.map_or(u64::from(v), |b| b[v as usize]),
        };
        let dead_now = |v: u32| self.live_ids().is_some_and(|i| i.is_dead(v));
        let (ids, n_vids): (Vec<u64>, u64) = match old_vids {
            Some(olds) => (olds.iter().map(|&v| user(v)).collect(), olds.len() as u64),
            None => {
                let n = self
                    .live_ids()
                    .map_or(self.meta.n_vectors, |i| i.next_vid());
                ((0..n as u32).map(user).collect(), n)
            }
        };
        let mut dead = vec![0u64; n_vids.div_ceil(64) as usize];
        let mut set = |v: u32| dead[v as usize / 64] |= 1 << (v % 64);
        if old_vids.is_none() {
            (0..n_vids as u32)
                .filter(|&v| dead_now(v))
                .for_each(&mut set);
        }
        let mut unmerged = Vec::new();
        let l = &self.live;
        let n = self.meta.n_records;
        let mut seen = std::collections::HashSet::new();
        for (c, list) in l.by_cluster.iter().enumerate() {
            if merged_out[c] {
                continue;
            }
            for &r in list.iter() {
                let d = (u64::from(r) - n) as usize;
                if !seen.insert(l.vids[d]) {
                    continue; // another spill copy of an insert taken already
                }
                if old_vids.is_none() {
                    set(l.vids[d]);
                }
                unmerged.push((
                    user(l.vids[d]),
                    self.read_delta_vector(l.slots[d], l.record_crcs[d])?,
                ));
            }
        }
        let ids_entry = UserIds { ids }.write(&out.join(IDS_FILE))?;
        let segs = Segments {
            segments,
            n_vids,
            next_segment,
            dead,
        };
        let seg_file = segs.write(&out.join(SEGMENTS_FILE))?;
        Ok((ids_entry, seg_file, unmerged, n_vids))
    }
}

/// `pq` (or `refine.m3`'s codes) with `rows` records: cut or zero-extended, the `holes`
/// zeroed.
fn resize_pq(pq: &mut PqFile, rows: usize, holes: &[(u64, u64)]) -> Result<(), FormatError> {
    let m = pq.codes.dim();
    let bad = |e: crate::data::DataError| FormatError::invalid(e.to_string());
    let mut codes = std::mem::replace(
        &mut pq.codes,
        crate::data::Matrix::zeros(0, m).map_err(bad)?,
    )
    .into_vec();
    codes.resize(rows * m, 0);
    pq.correction.resize(rows, 0.0);
    pq.error.resize(rows, 0.0);
    for &(a, b) in holes {
        let (a, b) = (a as usize, (b as usize).max(a as usize));
        codes[a * m..b * m].fill(0);
        pq.correction[a..b].fill(0.0);
        pq.error[a..b].fill(0.0);
    }
    pq.codes = crate::data::Matrix::from_vec(codes, m).map_err(bad)?;
    Ok(())
}

/// Appends `rows` (whole rows) to `m`.
fn append_rows<T: bytemuck::Pod + Default>(
    m: &mut crate::data::Matrix<T>,
    rows: &[T],
) -> Result<(), FormatError> {
    let dim = m.dim();
    let bad = |e: crate::data::DataError| FormatError::invalid(e.to_string());
    let mut v = std::mem::replace(m, crate::data::Matrix::zeros(0, dim).map_err(bad)?).into_vec();
    v.extend_from_slice(rows);
    *m = crate::data::Matrix::from_vec(v, dim).map_err(bad)?;
    Ok(())
}

/// The CRC32C of the header sector of the data file at `path`.
fn header_sector_crc(path: &Path) -> Result<u32, FormatError> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| FormatError::io(path, e))?;
    let mut b = vec![0u8; SECTOR_BYTES];
    f.read_exact(&mut b).map_err(|e| FormatError::io(path, e))?;
    Ok(crc32c::crc32c(&b))
}

/// Hard-links `from` to `to` (a file carried into the next generation unchanged).
fn link(from: &Path, to: &Path) -> Result<(), FormatError> {
    std::fs::hard_link(from, to).map_err(|e| FormatError::io(to, e))
}

//! Live updates as the query engine sees them (`docs/UPDATES.md`): the state that the
//! committed batches of `wal.m3` make, replayed when the index is opened. Internally a vector
//! is named by a `u32` *vid*: base row `0..n_vectors`, then one per committed insert in log
//! order. [`LiveIds`] maps user ids to vids and holds the tombstones; [`Live`] adds the delta
//! records (`delta.m3`: cluster, PQ code, correction, error, key per insert), grouped by
//! cluster for the scan, and which base record is which vid once a base vector was deleted.
//!
//! A deleted vid is never returned and costs no read: the first pass drops its records
//! before they become candidates (approximate search: PQ scan, hint records, neighbour-list
//! rounds; exact and range search: before any bound is used).

use super::SearchError;
use super::index::Index;
use super::shared_rows::SharedRows;
use crate::distance::{self, Metric};
use crate::format::delta::{DeltaFile, slot_location};
use crate::format::delta_codes::DeltaCodes;
use crate::format::files::{DATA_FILE, DELTA_CODES_FILE, DELTA_FILE, MANIFEST_FILE, WAL_FILE};
use crate::format::{FormatError, SECTOR_BYTES, WalOp, WalTail, read_wal_from};
use crate::io::{ConcatReader, ReadRequest, open_reader};
use crate::route::SpillRule;
use std::sync::Arc;

/// A set of vids: a bitmap whose words generations share ([`SharedRows`]), so a copy costs
/// one pointer per 65,536 vids and an insert copies at most one 8 KiB chunk.
#[derive(Debug, Clone)]
pub(crate) struct VidSet {
    words: SharedRows<u64>,
    count: u64,
}

impl Default for VidSet {
    fn default() -> Self {
        Self {
            words: SharedRows::new(1),
            count: 0,
        }
    }
}

impl VidSet {
    pub(crate) fn insert(&mut self, vid: u32) {
        let (w, b) = (vid as usize / 64, vid % 64);
        while w >= self.words.len() {
            self.words.push(0);
        }
        let word = &mut self.words.row_mut(w)[0];
        if *word & (1 << b) == 0 {
            *word |= 1 << b;
            self.count += 1;
        }
    }

    #[inline]
    pub(crate) fn contains(&self, vid: u32) -> bool {
        let w = vid as usize / 64;
        w < self.words.len() && self.words.get(w) & (1 << (vid % 64)) != 0
    }

    pub(crate) fn len(&self) -> u64 {
        self.count
    }
}

/// User id ↔ vid, and the tombstones: the replay of the log's operations (and what an
/// [`crate::update::IndexWriter`] keeps up to date as it commits).
#[derive(Debug, Clone)]
pub(crate) struct LiveIds {
    n_vectors: u32,
    /// Base rows sorted by user id (`ids.m3`); `None`: user id = row. Never changes after
    /// open: generations share it.
    sorted_rows: Option<Arc<Vec<u32>>>,
    /// User ids whose vid is not what the base says: a newer vid, or none (deleted). A
    /// persistent map: a generation's copy shares it, an update copies O(log n) of it.
    overrides: imbl::HashMap<u64, Option<u32>>,
    /// The user id of delta vid `n_vectors + i`.
    delta_users: SharedRows<u64>,
    dead: VidSet,
}

impl LiveIds {
    pub(crate) fn new(n_vectors: u64, base_ids: Option<&[u64]>) -> Self {
        let sorted_rows = base_ids.map(|ids| {
            let mut rows: Vec<u32> = (0..ids.len() as u32).collect();
            rows.sort_unstable_by_key(|&r| ids[r as usize]);
            rows
        });
        Self {
            n_vectors: n_vectors as u32,
            sorted_rows: sorted_rows.map(Arc::new),
            overrides: imbl::HashMap::new(),
            delta_users: SharedRows::new(1),
            dead: VidSet::default(),
        }
    }

    /// The id map of a merged index (format 2.0) before its log: every vid of `ids.m3`, those
    /// `dead` names dead (and not found by their user id).
    pub(crate) fn merged(n_vectors: u64, base_ids: &[u64], dead: impl Fn(u32) -> bool) -> Self {
        let mut rows: Vec<u32> = (0..base_ids.len() as u32).filter(|&v| !dead(v)).collect();
        rows.sort_unstable_by_key(|&r| base_ids[r as usize]);
        let mut set = VidSet::default();
        (0..n_vectors as u32)
            .filter(|&v| dead(v))
            .for_each(|v| set.insert(v));
        Self {
            n_vectors: n_vectors as u32,
            sorted_rows: Some(Arc::new(rows)),
            overrides: imbl::HashMap::new(),
            delta_users: SharedRows::new(1),
            dead: set,
        }
    }

    /// The live vid of `user`, if any.
    pub(crate) fn lookup(&self, base_ids: Option<&[u64]>, user: u64) -> Option<u32> {
        if let Some(&v) = self.overrides.get(&user) {
            return v;
        }
        match (&self.sorted_rows, base_ids) {
            (Some(rows), Some(ids)) => rows
                .binary_search_by_key(&user, |&r| ids[r as usize])
                .ok()
                .map(|i| rows[i]),
            _ => (user < u64::from(self.n_vectors)).then_some(user as u32),
        }
    }

    /// The vid the next insert gets.
    pub(crate) fn next_vid(&self) -> u64 {
        u64::from(self.n_vectors) + self.delta_users.len() as u64
    }

    /// Applies an insert of `user`: a new vid (returned); the vid it replaces, if any, dies.
    /// The caller checked that [`LiveIds::next_vid`] is below `u32::MAX`.
    pub(crate) fn insert(&mut self, base_ids: Option<&[u64]>, user: u64) -> u32 {
        if let Some(old) = self.lookup(base_ids, user) {
            self.dead.insert(old);
        }
        let vid = self.next_vid() as u32;
        self.delta_users.push(user);
        self.overrides.insert(user, Some(vid));
        vid
    }

    /// Applies a delete of `user`: `true` if it was live.
    pub(crate) fn delete(&mut self, base_ids: Option<&[u64]>, user: u64) -> bool {
        match self.lookup(base_ids, user) {
            Some(old) => {
                self.dead.insert(old);
                self.overrides.insert(user, None);
                true
            }
            None => false,
        }
    }

    #[inline]
    pub(crate) fn is_dead(&self, vid: u32) -> bool {
        self.dead.contains(vid)
    }

    /// The user id of `vid`.
    pub(crate) fn user_id(&self, base_ids: Option<&[u64]>, vid: u32) -> u64 {
        if vid >= self.n_vectors {
            return self.delta_users.get((vid - self.n_vectors) as usize);
        }
        base_ids.map_or(u64::from(vid), |ids| ids[vid as usize])
    }

    /// Vectors that are live (base and inserted, minus the dead).
    pub(crate) fn live_count(&self) -> u64 {
        self.next_vid() - self.dead.len()
    }

    /// Tombstones: vids deleted or replaced.
    pub(crate) fn dead_count(&self) -> u64 {
        self.dead.len()
    }

    /// Whether any base vector is dead.
    pub(crate) fn any_base_dead(&self) -> bool {
        let n = self.n_vectors as usize;
        self.dead
            .words
            .firsts()
            .take(n.div_ceil(64))
            .enumerate()
            .any(|(w, bits)| {
                let valid = if (w + 1) * 64 <= n {
                    u64::MAX
                } else {
                    (1u64 << (n % 64)) - 1
                };
                bits & valid != 0
            })
    }
}

/// An inserted vector's place in its cluster: what the build computes for a record
/// (`build::assign`), so the PQ scan and the exact bounds treat it like a base record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CodedVector {
    pub(crate) cluster: u32,
    pub(crate) code: Vec<u8>,
    /// `|r̂|² + 2 c·r̂` (L2's correction).
    pub(crate) correction: f32,
    /// `|r − r̂|`.
    pub(crate) error: f32,
    /// `|r|`, the distance to the centroid.
    pub(crate) key: f32,
}

impl CodedVector {
    /// Appends its `delta_codes.m3` entry (for the record in `slot` whose bytes have CRC32C
    /// `record_crc32c`) to `out`.
    pub(crate) fn encode_entry(&self, slot: u64, record_crc32c: u32, out: &mut Vec<u8>) {
        let entry = crate::format::delta_codes::DeltaCodeEntry {
            crc32c: 0,
            cluster: self.cluster,
            slot,
            record_crc32c,
            correction: self.correction,
            error: self.error,
            key: self.key,
        };
        crate::format::delta_codes::encode_entry(&entry, &self.code, out);
    }
}

impl Index {
    /// The vector as the index stores it: normalised under cosine. Fails on a wrong
    /// dimension, a non-finite component, (under cosine) a zero vector, or, on a u8 or i8
    /// index, a component that is not an integer within the type's range (nothing is
    /// rounded or clamped).
    pub(crate) fn prepare_stored(&self, v: &[f32], out: &mut Vec<f32>) -> Result<(), String> {
        if v.len() != self.dim {
            return Err(format!(
                "dimension {} (the index has {})",
                v.len(),
                self.dim
            ));
        }
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(format!("component {i} is {}", v[i]));
        }
        let dtype = self.codec.dtype();
        if let Some((lo, hi)) = dtype.integer_range()
            && let Some(i) = v.iter().position(|&x| !dtype.holds(x))
        {
            return Err(format!(
                "component {i} is {}: a {dtype} index stores integers {lo}..={hi}",
                v[i]
            ));
        }
        out.clear();
        out.extend_from_slice(v);
        if self.metric == Metric::Cosine {
            let n = distance::dot(v, v).sqrt();
            if !(n > 0.0 && n.is_finite()) {
                return Err("a zero vector has no direction under cosine".into());
            }
            out.iter_mut().for_each(|x| *x /= n);
        }
        Ok(())
    }

    /// Routes a stored vector to its nearest centroid (L2: the smallest residual) and codes
    /// its residual with the index's codebooks.
    pub(crate) fn code_vector(&self, v: &[f32]) -> CodedVector {
        let mut best = (f32::INFINITY, 0u32);
        for c in 0..self.centroids.rows() {
            let d = distance::l2_sq(v, self.centroids.row(c));
            if d < best.0 {
                best = (d, c as u32);
            }
        }
        self.code_in(v, best.1)
    }

    /// The spill rule of the index's build (the manifest's `spill_max` and `spill_epsilon`).
    pub(crate) fn spill_rule(&self) -> SpillRule {
        SpillRule::new(self.meta.spill_max as usize, self.meta.spill_epsilon)
    }

    /// The nearest anchors of each row of `rows` (stored vectors) that the spill rule looks
    /// at, found like the build's assign stage finds them (`kmeans::nearest_centroids`: one
    /// matrix product per block of rows, on the current rayon pool; ties to the lower
    /// cluster): ids and squared distances, `t` per row, and `t`.
    pub(crate) fn spill_candidates(
        &self,
        rows: crate::data::MatrixView<'_, f32>,
    ) -> (Vec<u32>, Vec<f32>, usize) {
        let rule = self.spill_rule();
        let k = self.centroids.rows();
        if rule.max_copies == 0 || k == 0 || rows.rows() == 0 {
            return (Vec::new(), Vec::new(), 0);
        }
        // As many candidates as the build looks up per row.
        let t = (rule.max_copies + 1).max(8).min(k);
        let (cand, dists) = crate::kmeans::nearest_centroids(rows, self.centroids.view(), t);
        (cand, dists, t)
    }

    /// The spill copies of each row of `rows` (stored vectors) whose primary record is in
    /// cluster `primary[j]`, coded against their clusters: the build's rule
    /// ([`SpillRule::copies`]) over each row's nearest anchors `near` (ids, squared distances,
    /// per row: [`Index::spill_candidates`]), the residuals coded in one batch
    /// (`ProductQuantizer::encode_all`, as the build's assign stage codes its records). None
    /// on an index built without spill.
    pub(crate) fn spill_copies(
        &self,
        rows: crate::data::MatrixView<'_, f32>,
        primary: &[u32],
        (cand, dists, t): (&[u32], &[f32], usize),
    ) -> Vec<Vec<CodedVector>> {
        let rule = self.spill_rule();
        let mut out = vec![Vec::new(); rows.rows()];
        let mut which: Vec<(usize, u32)> = Vec::new();
        for (j, &p) in primary.iter().enumerate().filter(|_| t > 0) {
            let at = j * t..(j + 1) * t;
            which.extend(
                rule.copies(&cand[at.clone()], &dists[at], p)
                    .map(|c| (j, c)),
            );
        }
        if which.is_empty() {
            return out;
        }
        let mut residuals = Vec::with_capacity(which.len() * self.dim);
        for &(j, c) in &which {
            let cen = self.centroids.row(c as usize);
            residuals.extend(rows.row(j).iter().zip(cen).map(|(x, c)| x - c));
        }
        let residuals =
            crate::data::MatrixView::new(&residuals, self.dim).expect("dim rows of dim values");
        let codes = self.pq.encode_all(residuals);
        let mut rhat = vec![0f32; self.dim];
        for (i, &(j, c)) in which.iter().enumerate() {
            let (cen, r) = (self.centroids.row(c as usize), residuals.row(i));
            self.pq.decode(codes.row(i), &mut rhat);
            out[j].push(CodedVector {
                cluster: c,
                code: codes.row(i).to_vec(),
                correction: distance::dot(&rhat, &rhat) + 2.0 * distance::dot(cen, &rhat),
                error: distance::l2_sq(r, &rhat).sqrt(),
                key: distance::dot(r, r).sqrt(),
            });
        }
        out
    }

    /// Codes a stored vector as a record of cluster `cluster`: what the build's assign stage
    /// computes (PQ code of the residual, L2 correction, error, key).
    fn code_in(&self, v: &[f32], cluster: u32) -> CodedVector {
        let c = self.centroids.row(cluster as usize);
        let r: Vec<f32> = v.iter().zip(c).map(|(x, c)| x - c).collect();
        let mut code = vec![0u8; self.pq.subspaces()];
        self.pq.encode(&r, &mut code);
        let mut rhat = vec![0f32; self.dim];
        self.pq.decode(&code, &mut rhat);
        CodedVector {
            cluster,
            correction: distance::dot(&rhat, &rhat) + 2.0 * distance::dot(c, &rhat),
            error: distance::l2_sq(&r, &rhat).sqrt(),
            key: distance::dot(&r, &r).sqrt(),
            code,
        }
    }

    /// Bytes of a PQ code (what `delta_codes.m3` entries hold).
    pub(crate) fn code_bytes(&self) -> usize {
        self.pq.subspaces()
    }

    /// Delta records whose coding this generation took from `delta_codes.m3`, from the first
    /// on without a gap: a writer keeps that many entries and appends the others.
    pub(crate) fn codes_stored(&self) -> u64 {
        self.live.codes_stored
    }

    /// Appends the `delta_codes.m3` entry of insert `i` (the log's `i`-th; whose record has
    /// CRC32C `record_crc32c`) from this generation's live state: its primary record's coding.
    pub(crate) fn encode_delta_code(&self, i: usize, record_crc32c: u32, out: &mut Vec<u8>) {
        let l = &self.live;
        let d = l.insert_entries.get(i) as usize;
        let m = self.pq.subspaces();
        let coded = CodedVector {
            cluster: l.clusters.get(d),
            code: l.codes.row(d).to_vec(),
            correction: l.correction.get(d),
            error: l.error.get(d),
            key: l.keys.get(d),
        };
        debug_assert_eq!(l.codes.row(d).len(), m);
        coded.encode_entry(l.slots.get(d), record_crc32c, out);
    }

    /// The replayed id map (`None`: no log).
    pub(crate) fn live_ids(&self) -> Option<&LiveIds> {
        self.live.ids.as_ref()
    }

    /// The base vectors' user ids (`ids.m3`; `None`: row numbers).
    pub(crate) fn base_user_ids(&self) -> Option<&[u64]> {
        self.user_ids.as_deref()
    }

    /// The first slot of `delta.m3` after every committed record.
    pub(crate) fn live_slot_end(&self) -> u64 {
        self.live.slots.firsts().max().map_or(0, |s| s + 1)
    }

    /// Whether `more` inserts after the state `ids` would run out of u32 vids or record numbers.
    pub(crate) fn live_vids_exhausted(&self, ids: &LiveIds, more: usize) -> bool {
        let inserted = ids.next_vid() - self.meta.n_vectors;
        // Every insert takes up to 1 + spill_max delta records.
        let records = (inserted + more as u64) * (1 + u64::from(self.meta.spill_max));
        ids.next_vid() + more as u64 >= u64::from(u32::MAX)
            || self.meta.n_records + records >= u64::from(u32::MAX)
    }

    /// How records are packed into sectors.
    pub(crate) fn record_layout(&self) -> crate::format::RecordLayout {
        self.layout
    }

    /// The record codec of `data.m3` (and `delta.m3`).
    pub(crate) fn record_codec(&self) -> crate::format::RecordCodec {
        self.codec
    }

    /// Whether the index can take live updates: single-vector (f32, u8 or i8).
    pub(crate) fn check_updatable(&self) -> Result<(), String> {
        if self.blocks.is_some() {
            return Err("live updates of a multi-vector index are not supported".into());
        }
        Ok(())
    }
}

/// The live state of one generation of an open index (module doc). Empty for an index
/// without `wal.m3`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Live {
    pub(crate) ids: Option<LiveIds>,
    pub(crate) generation: u64,
    /// What replay cut after the last commit, if anything.
    pub(crate) tail: Option<WalTail>,
    /// Where the log's last replayed commit record ends: the next refresh reads from there.
    pub(crate) wal_end: u64,
    /// The first delta record of the log's `i`-th insert (its primary record); its spill
    /// copies (on an index built with spill) are the delta records that follow it, up to the
    /// next insert's first.
    pub(crate) insert_entries: SharedRows<u32>,
    /// Delta record `d` is record `n_records + d`: its vid, slot, cluster and coding (PQ code
    /// rows of `m` bytes); the spill copies of an insert share its vid, slot and record CRC.
    /// Shared with the generations before and after ([`SharedRows`]): a refresh copies O(its
    /// batch), not O(every insert).
    pub(crate) vids: SharedRows<u32>,
    pub(crate) slots: SharedRows<u64>,
    pub(crate) clusters: SharedRows<u32>,
    pub(crate) codes: SharedRows<u8>,
    pub(crate) correction: SharedRows<f32>,
    pub(crate) error: SharedRows<f32>,
    pub(crate) keys: SharedRows<f32>,
    /// The CRC32C of each delta record's bytes, as its log record holds it: every read of
    /// the record is checked against it.
    pub(crate) record_crcs: SharedRows<u32>,
    /// The live delta records (record numbers) of each cluster, in log order; a refresh
    /// copies only the lists it changes.
    pub(crate) by_cluster: Vec<Arc<Vec<u32>>>,
    /// Each cluster's radii over its base and live delta records (an interval that covers
    /// them: a record deleted since may have widened it).
    pub(crate) radii: Vec<[f32; 2]>,
    /// The vid of every base record, once some base vector is dead (else not needed); shared
    /// by the generations that follow.
    pub(crate) record_vids: Option<std::sync::Arc<Vec<u32>>>,
    /// Sector of the block reader's space where `delta.m3` starts.
    pub(crate) delta_start: u64,
    /// Bytes of `delta.m3`.
    pub(crate) delta_bytes: u64,
    /// Inserts `0..codes_stored` took their coding from `delta_codes.m3` (the prefix a
    /// writer keeps; it appends after it).
    pub(crate) codes_stored: u64,
    /// Inserts coded again from `delta.m3` (no usable `delta_codes.m3` entry).
    pub(crate) coded_again: u64,
}

impl Live {
    /// Delta records of cluster `c` (live ones).
    #[inline]
    pub(crate) fn in_cluster(&self, c: usize) -> &[u32] {
        self.by_cluster.get(c).map_or(&[], |l| l.as_slice())
    }

    /// Committed inserts this generation has seen (delta records minus spill copies).
    pub(crate) fn n_inserts(&self) -> usize {
        self.insert_entries.len()
    }

    /// The delta records of the log's `i`-th insert: its primary record and its copies.
    pub(crate) fn entries_of(&self, i: usize) -> std::ops::Range<usize> {
        let first = self.insert_entries.get(i) as usize;
        let end = if i + 1 < self.insert_entries.len() {
            self.insert_entries.get(i + 1) as usize
        } else {
            self.vids.len()
        };
        first..end
    }

    /// Whether base record `r` belongs to a dead vid.
    #[inline]
    pub(crate) fn base_record_dead(&self, r: u32) -> bool {
        match (&self.record_vids, &self.ids) {
            // u32::MAX: a hole of a merged index (no cluster holds the record number).
            (Some(rv), Some(ids)) => {
                let v = rv[r as usize];
                v == u32::MAX || ids.is_dead(v)
            }
            _ => false,
        }
    }
}

/// The generation after `idx`: the batches `wal.m3` committed since `idx` was made, applied to
/// a copy of its live state (only the new inserts are read from `delta.m3` and coded), or a
/// fresh open when the published files changed (a compaction or a rebuild). `None`: nothing
/// new. Opening an index is `advance` from the published files alone.
pub(crate) fn advance(idx: &Index) -> Result<Option<Index>, SearchError> {
    advance_placing(idx, true)
}

/// [`advance`], placing the new inserts' spill copies or not (`copies`: false only for a
/// writer's index, which never searches).
pub(crate) fn advance_placing(idx: &Index, copies: bool) -> Result<Option<Index>, SearchError> {
    let dir = idx.dir.clone();
    let manifest_path = dir.join(MANIFEST_FILE);
    let (_, manifest_crc) = crate::format::file_crc32c(&manifest_path)?;
    if manifest_crc != idx.manifest_crc32c {
        // A new generation of the published files: its log starts over.
        let backend = idx.delta_backend;
        return Ok(Some(Index::open(&dir, backend, &idx.delta_options)?));
    }
    let wal_path = dir.join(WAL_FILE);
    // The committed part of a log never changes under one manifest (a writer only cuts what
    // follows the last commit): read from where the last replayed commit ended.
    let after = (idx.live.wal_end > 0).then_some((idx.live.wal_end, idx.live.generation));
    let Some(replay) = read_wal_from(&wal_path, after)? else {
        return match idx.live.generation {
            0 => Ok(None),
            _ => Err(FormatError::corrupt(&wal_path, 0, "the log of a live index is gone").into()),
        };
    };
    let h = replay.header;
    if h.manifest_crc32c != manifest_crc
        || h.n_vectors != idx.meta.n_vectors
        || h.dim as usize != idx.dim
        || h.record_bytes != idx.codec.record_bytes()
    {
        return Err(FormatError::corrupt(
            &wal_path,
            32,
            "the log belongs to another index (manifest CRC, vectors, dim or record size differ)",
        )
        .into());
    }
    let from = idx.live.generation;
    if replay.generation() < from {
        return Err(FormatError::corrupt(
            &wal_path,
            0,
            format!(
                "the log holds {} commits, the open index has seen {from}",
                replay.generation()
            ),
        )
        .into());
    }
    if replay.generation() == from && (from > 0 || idx.live.ids.is_some()) {
        return Ok(None);
    }
    idx.check_updatable()
        .map_err(|e| FormatError::corrupt(&wal_path, 0, e))?;
    let base_ids = idx.user_ids.as_deref();
    let mut live = Live::clone(&idx.live);
    let mut ids = live
        .ids
        .take()
        .unwrap_or_else(|| LiveIds::new(idx.meta.n_vectors, base_ids));
    if live.radii.is_empty() {
        live.radii = idx.entries.iter().map(|e| [e.r_min, e.r_max]).collect();
        live.by_cluster = (0..idx.entries.len())
            .map(|_| Arc::new(Vec::new()))
            .collect();
        live.codes = SharedRows::new(idx.pq.subspaces());
    }
    let mut killed = Vec::new();
    let mut inserts = Vec::new();
    let skip = (from - replay.first_generation) as usize;
    for op in replay.batches[skip..].iter().flatten() {
        match *op {
            WalOp::Insert {
                user_id,
                slot,
                record_crc32c,
            } => {
                if ids.next_vid() >= u64::from(u32::MAX) {
                    return Err(
                        FormatError::corrupt(&wal_path, 0, "more vectors than u32 vids").into(),
                    );
                }
                killed.extend(ids.lookup(base_ids, user_id));
                let vid = ids.insert(base_ids, user_id);
                inserts.push((vid, slot, record_crc32c));
            }
            WalOp::Delete { user_id } => {
                killed.extend(ids.lookup(base_ids, user_id));
                ids.delete(base_ids, user_id);
            }
            WalOp::Commit { .. } => {}
        }
    }
    live.generation = replay.generation();
    live.wal_end = replay.valid_bytes;
    live.tail = replay.tail.clone();
    let n_records = idx.meta.n_records;
    if n_records + (live.vids.len() + inserts.len()) as u64 >= u64::from(u32::MAX) {
        return Err(
            FormatError::corrupt(&wal_path, 0, "more records than u32 record numbers").into(),
        );
    }
    drop_killed_inserts(&mut live, &ids, &killed, idx.meta.n_vectors, n_records);
    let mut next = Index {
        core: idx.core.clone(),
        router: idx.router.clone(),
        query_router: idx.query_router.clone(),
        hint_router: idx.hint_router.clone(),
        hint_codes: idx.hint_codes.clone(),
        live: idx.live.clone(),
        codec: idx.codec,
        reader: idx.reader.clone(),
        norm_bound: idx.norm_bound,
    };
    if !inserts.is_empty() {
        load_delta(&mut next, &mut live, &ids, &inserts, (manifest_crc, copies))?;
    }
    if live.record_vids.is_none() && ids.any_base_dead() {
        live.record_vids = Some(std::sync::Arc::new(base_record_vids(idx)?));
    }
    live.ids = Some(ids);
    next.live = std::sync::Arc::new(live);
    Ok(Some(next))
}

/// Takes the delta records of vids that died in a refresh's batches (`killed`: the vids the
/// batches' upserts replaced and deletes removed) out of their clusters' lists. Only the
/// clusters of those records are touched: delta vid `n_vectors + d` is the log's `d`-th
/// insert, whose delta records are [`Live::entries_of`]`(d)`, checked against the record's
/// own vid.
fn drop_killed_inserts(
    live: &mut Live,
    ids: &LiveIds,
    killed: &[u32],
    n_vectors: u64,
    n_records: u64,
) {
    let mut clusters = Vec::new();
    for &vid in killed {
        let Some(d) = u64::from(vid).checked_sub(n_vectors) else {
            continue; // a base vector: the per-record filter drops it
        };
        let d = d as usize;
        if d < live.n_inserts() && live.vids.get(live.entries_of(d).start) == vid {
            clusters.extend(live.entries_of(d).map(|e| live.clusters.get(e)));
        } else if d < live.n_inserts() {
            // Not where the numbering puts it: look in every list.
            clusters = (0..live.by_cluster.len() as u32).collect();
            break;
        }
        // d past the end: inserted and killed in this very refresh, never listed.
    }
    clusters.sort_unstable();
    clusters.dedup();
    let n = n_records as u32;
    for c in clusters {
        let list = Arc::make_mut(&mut live.by_cluster[c as usize]);
        list.retain(|&r| !ids.is_dead(live.vids.get((r - n) as usize)));
    }
}

/// Reads the records of the log's new inserts from `delta.m3` (each checked against the CRC32C
/// the log holds, its vid and finite components), codes them into `live` (taking what
/// `delta_codes.m3` holds for an insert when its entry is whole and names the same slot and
/// record CRC32C; coding the others again), widens the norm bound and puts a reader over
/// `data.m3` and `delta.m3` (as it is now) in place.
fn load_delta(
    idx: &mut Index,
    live: &mut Live,
    ids: &LiveIds,
    inserts: &[(u32, u64, u32)],
    (manifest_crc, place_copies): (u32, bool),
) -> Result<(), SearchError> {
    let mut max_norm = 0f64;
    let delta_path = idx.dir.join(DELTA_FILE);
    let file = std::fs::File::open(&delta_path).map_err(|e| FormatError::io(&delta_path, e))?;
    let header = DeltaFile::read_header(&delta_path, &file)?;
    if header.record_bytes != idx.codec.record_bytes() || header.manifest_crc32c != manifest_crc {
        return Err(
            FormatError::corrupt(&delta_path, 32, "delta.m3 belongs to another index").into(),
        );
    }
    let codec = idx.codec.with_n_vectors(ids.next_vid());
    let mut bytes = vec![0u8; codec.record_bytes() as usize];
    let mut v = vec![0f32; idx.dim];
    let d0 = live.n_inserts();
    let stored = DeltaCodes::read(
        &idx.dir.join(DELTA_CODES_FILE),
        manifest_crc,
        idx.pq.subspaces(),
        d0 as u64,
    )?;
    // Inserts in chunks: their vectors read, then their nearest anchors found in one matrix
    // product per block (the build's search) for the spill copies, then placed in log order.
    const CHUNK: usize = 4096;
    for (ci, chunk) in inserts.chunks(CHUNK).enumerate() {
        let first = d0 + ci * CHUNK;
        let mut rows = Vec::with_capacity(chunk.len() * idx.dim);
        let window = Window::read(&file, idx.layout, codec.record_bytes(), chunk);
        for (j, &(vid, slot, crc)) in chunk.iter().enumerate() {
            let at = DeltaInsert {
                path: &delta_path,
                file: &file,
                codec,
                layout: idx.layout,
                d: first + j,
                vid,
                slot,
                crc,
            };
            at.read_vector(window.as_ref(), &mut bytes, &mut v)?;
            max_norm = max_norm.max(f64::from(distance::dot(&v, &v)).sqrt());
            rows.extend_from_slice(&v);
        }
        let rows = crate::data::MatrixView::new(&rows, idx.dim)
            .map_err(|e| FormatError::corrupt(&delta_path, 0, format!("inserted vectors: {e}")))?;
        let mut primary = Vec::with_capacity(chunk.len());
        for (j, &insert) in chunk.iter().enumerate() {
            let d = first + j;
            primary.push(
                match stored
                    .as_ref()
                    .and_then(|s| stored_coding(idx, s, d, insert.1, insert.2))
                {
                    Some(c) => {
                        if live.codes_stored == d as u64 {
                            live.codes_stored += 1;
                        }
                        c
                    }
                    None => {
                        live.coded_again += 1;
                        idx.code_vector(rows.row(j))
                    }
                },
            );
        }
        let copies = match place_copies {
            true => {
                let (cand, dists, t) = idx.spill_candidates(rows);
                let clusters: Vec<u32> = primary.iter().map(|c| c.cluster).collect();
                idx.spill_copies(rows, &clusters, (&cand, &dists, t))
            }
            false => vec![Vec::new(); chunk.len()],
        };
        for ((&insert, coded), copies) in chunk.iter().zip(primary).zip(copies) {
            let records = idx.meta.n_records + (live.vids.len() + 1 + copies.len()) as u64;
            if records >= u64::from(u32::MAX) {
                let what = "more records (spill copies included) than u32 record numbers";
                return Err(FormatError::corrupt(idx.dir.join(WAL_FILE), 0, what).into());
            }
            live.insert_entries.push(live.vids.len() as u32);
            for coded in std::iter::once(coded).chain(copies) {
                push_delta_record(idx, live, ids, insert, coded);
            }
        }
    }
    live.delta_bytes = file
        .metadata()
        .map_err(|e| FormatError::io(&delta_path, e))?
        .len();
    let base_sectors = idx.data_reader.len_bytes().div_ceil(SECTOR_BYTES as u64);
    live.delta_start = base_sectors + 1;
    let delta_reader = open_reader(&delta_path, idx.delta_backend, &idx.delta_options)?;
    idx.reader = std::sync::Arc::new(ConcatReader::new(
        idx.data_reader.clone(),
        delta_reader,
        live.delta_start,
    )?);
    idx.codec = codec;
    idx.norm_bound = idx.norm_bound.max(max_norm);
    Ok(())
}

/// Appends a delta record of insert `(vid, slot, record CRC32C)` coded as `coded` (its primary
/// record or a spill copy): listed in its cluster, and the cluster's radii widened, when the
/// vid lives.
fn push_delta_record(
    idx: &Index,
    live: &mut Live,
    ids: &LiveIds,
    (vid, slot, crc): (u32, u64, u32),
    coded: CodedVector,
) {
    let r = (idx.meta.n_records + live.vids.len() as u64) as u32;
    if !ids.is_dead(vid) {
        let c = coded.cluster as usize;
        Arc::make_mut(&mut live.by_cluster[c]).push(r);
        let radii = &mut live.radii[c];
        if idx.entries[c].records == 0 && live.by_cluster[c].len() == 1 {
            *radii = [coded.key, coded.key];
        } else {
            radii[0] = radii[0].min(coded.key);
            radii[1] = radii[1].max(coded.key);
        }
    }
    live.vids.push(vid);
    live.slots.push(slot);
    live.clusters.push(coded.cluster);
    live.codes.push_row(&coded.code);
    live.correction.push(coded.correction);
    live.error.push(coded.error);
    live.keys.push(coded.key);
    live.record_crcs.push(crc);
}

/// The coding `delta_codes.m3` holds for insert `d`, if its entry is whole, names the
/// slot and record CRC32C the log gives (so it was coded from these very record bytes, for
/// this index: the file's header names the manifest) and its values are sane.
fn stored_coding(
    idx: &Index,
    stored: &DeltaCodes,
    d: usize,
    slot: u64,
    crc: u32,
) -> Option<CodedVector> {
    let (e, code) = stored.entry(d as u64)?;
    let sane = e.slot == slot
        && e.record_crc32c == crc
        && (e.cluster as usize) < idx.entries.len()
        && e.correction.is_finite()
        && e.error.is_finite()
        && e.error >= 0.0
        && e.key.is_finite()
        && e.key >= 0.0;
    sane.then(|| CodedVector {
        cluster: e.cluster,
        code: code.to_vec(),
        correction: e.correction,
        error: e.error,
        key: e.key,
    })
}

/// One committed insert as the log names it, to be read from `delta.m3`.
struct DeltaInsert<'a> {
    path: &'a std::path::Path,
    file: &'a std::fs::File,
    codec: crate::format::RecordCodec,
    layout: crate::format::RecordLayout,
    /// Its number among the log's inserts.
    d: usize,
    vid: u32,
    slot: u64,
    crc: u32,
}

impl DeltaInsert<'_> {
    /// Reads the record into `bytes` and its vector into `v`, checking it against the log's
    /// CRC32C, its vid and finite components.
    fn read_vector(
        &self,
        window: Option<&Window>,
        bytes: &mut [u8],
        v: &mut [f32],
    ) -> Result<(), SearchError> {
        use std::os::unix::fs::FileExt;
        let (slot, path) = (self.slot, self.path);
        let (offset, _, _) = slot_location(self.layout, slot);
        match window.and_then(|w| w.get(offset, bytes.len())) {
            Some(held) => bytes.copy_from_slice(held),
            None => self
                .file
                .read_exact_at(bytes, offset)
                .map_err(|e| FormatError::io(path, e))?,
        }
        let computed = crc32c::crc32c(bytes);
        if computed != self.crc {
            return Err(FormatError::Checksum {
                path: path.to_path_buf(),
                what: format!("slot {slot} (insert {} of the log)", self.d),
                stored: self.crc,
                computed,
            }
            .into());
        }
        let rec = self.codec.decode(bytes, path, offset)?;
        if rec.id() != self.vid {
            return Err(FormatError::corrupt(
                path,
                offset,
                format!(
                    "slot {slot} holds vid {}, the log says {}",
                    rec.id(),
                    self.vid
                ),
            )
            .into());
        }
        rec.vector_f32_into(v);
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(FormatError::corrupt(
                path,
                offset,
                format!("slot {slot}: component {i} is not finite"),
            )
            .into());
        }
        Ok(())
    }
}

/// A span of `delta.m3` read in one call: the records of a chunk of inserts (a commit's
/// inserts sit in consecutive slots), so opening does not issue one read per insert.
struct Window {
    start: u64,
    bytes: Vec<u8>,
}

impl Window {
    /// Spans wider than this are read record by record.
    const MAX_BYTES: u64 = 64 << 20;

    /// The span holding the records of `inserts` (`(vid, slot, crc)`), if it is at most
    /// [`Self::MAX_BYTES`] and can be read whole; `None` sends every read to the file (which
    /// then names the slot that cannot be read).
    fn read(
        file: &std::fs::File,
        layout: crate::format::RecordLayout,
        record_bytes: u32,
        inserts: &[(u32, u64, u32)],
    ) -> Option<Self> {
        use std::os::unix::fs::FileExt;
        let offsets = inserts
            .iter()
            .map(|&(_, slot, _)| slot_location(layout, slot).0);
        let start = offsets.clone().min()?;
        let end = offsets.max()? + u64::from(record_bytes);
        if end - start > Self::MAX_BYTES {
            return None;
        }
        let mut bytes = vec![0u8; (end - start) as usize];
        file.read_exact_at(&mut bytes, start).ok()?;
        Some(Self { start, bytes })
    }

    /// The `len` bytes at file offset `offset`, if the window holds them.
    fn get(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let at = usize::try_from(offset.checked_sub(self.start)?).ok()?;
        self.bytes.get(at..at.checked_add(len)?)
    }
}

/// What [`Index::for_each_live`] calls with each live vector: its user id and the vector.
pub(crate) type LiveSink<'a> = dyn FnMut(u64, &[f32]) -> Result<(), SearchError> + 'a;

impl Index {
    /// Calls `sink` with every live vector of this generation (stored coordinates: normalised
    /// under cosine) and its user id, each once: the base vectors in `data.m3` order (a
    /// spilled copy is skipped), then the live inserts in log order. Returns how many. Reads
    /// `data.m3` once sequentially and each live insert's record from `delta.m3`.
    pub(crate) fn for_each_live(&self, sink: &mut LiveSink<'_>) -> Result<u64, SearchError> {
        self.check_updatable().map_err(|what| SearchError::Param {
            name: "index",
            what,
        })?;
        let base_ids = self.user_ids.as_deref();
        let user = |vid: u32| match &self.live.ids {
            Some(ids) => ids.user_id(base_ids, vid),
            None => base_ids.map_or(u64::from(vid), |b| b[vid as usize]),
        };
        let dead = |vid: u32| self.live.ids.as_ref().is_some_and(|i| i.is_dead(vid));
        let mut seen = VidSet::default();
        let mut v = vec![0f32; self.dim];
        let mut buf = crate::io::AlignedBuf::new();
        let codec = self.codec;
        let rb = codec.record_bytes() as usize;
        let data_path = self.dir.join(DATA_FILE);
        for e in &self.entries {
            let sectors = self.layout.sectors_for(u64::from(e.records));
            let mut done = 0u64;
            while done < sectors {
                let take = (sectors - done).min(256);
                let req = ReadRequest::new(1 + e.first_sector + done, take as u32)
                    .expect("a small range");
                self.data_reader.read_batch(&[req], &mut buf)?;
                for i in 0..u64::from(e.records) {
                    let loc = self.layout.locate(i);
                    if loc.sector < done || loc.sector >= done + take {
                        continue;
                    }
                    let at =
                        (loc.sector - done) as usize * SECTOR_BYTES + loc.offset_bytes as usize;
                    let rec = codec.decode(&buf[at..at + rb], &data_path, 0)?;
                    let vid = rec.id();
                    if dead(vid) || seen.contains(vid) {
                        continue;
                    }
                    seen.insert(vid);
                    rec.vector_f32_into(&mut v);
                    sink(user(vid), &v)?;
                }
                done += take;
            }
        }
        let delta_path = self.dir.join(DELTA_FILE);
        if !self.live.vids.is_empty() {
            let file =
                std::fs::File::open(&delta_path).map_err(|e| FormatError::io(&delta_path, e))?;
            let mut bytes = vec![0u8; rb];
            use std::os::unix::fs::FileExt;
            for (vid, slot) in self.live.vids.firsts().zip(self.live.slots.firsts()) {
                if dead(vid) || seen.contains(vid) {
                    continue; // dead, or a spill copy of an insert given already
                }
                let (offset, _, _) = slot_location(self.layout, slot);
                file.read_exact_at(&mut bytes, offset)
                    .map_err(|e| FormatError::io(&delta_path, e))?;
                let rec = codec.decode(&bytes, &delta_path, offset)?;
                seen.insert(vid);
                rec.vector_f32_into(&mut v);
                sink(user(vid), &v)?;
            }
        }
        Ok(seen.len())
    }
}

/// The live state of a merged index (format 2.0) before its log: the dead vids of
/// `segments.m3` and the vid of every record (holes: `u32::MAX`), so the per-record filter
/// drops holes and dead vids everywhere (decision 0012).
pub(crate) fn merged_live(
    idx: &Index,
    segs: &crate::format::Segments,
) -> Result<Live, SearchError> {
    let base_ids = idx.user_ids.as_deref().ok_or_else(|| {
        FormatError::corrupt(
            idx.dir.join(MANIFEST_FILE),
            39,
            "a merged index without ids.m3",
        )
    })?;
    let ids = LiveIds::merged(idx.meta.n_vectors, base_ids, |v| segs.is_dead(u64::from(v)));
    Ok(Live {
        ids: Some(ids),
        record_vids: Some(Arc::new(base_record_vids(idx)?)),
        ..Live::default()
    })
}

/// The vid (base row) of every base record, read from `data.m3` cluster by cluster: what a
/// tombstone on a base vector needs to drop its records (spilled copies included) without
/// reading them at query time. Costs one sequential read of `data.m3` at open.
fn base_record_vids(idx: &Index) -> Result<Vec<u32>, SearchError> {
    let mut out = vec![u32::MAX; idx.meta.n_records as usize];
    let mut buf = crate::io::AlignedBuf::new();
    let codec = idx.codec;
    let rb = codec.record_bytes() as usize;
    let data_path = idx.dir.join(DATA_FILE);
    for e in &idx.entries {
        let sectors = idx.layout.sectors_for(u64::from(e.records));
        let mut done = 0u64;
        while done < sectors {
            let take = (sectors - done).min(256);
            let req =
                ReadRequest::new(1 + e.first_sector + done, take as u32).expect("a small range");
            idx.data_reader.read_batch(&[req], &mut buf)?;
            for i in 0..u64::from(e.records) {
                let loc = idx.layout.locate(i);
                if loc.sector < done || loc.sector >= done + take {
                    continue;
                }
                let at = (loc.sector - done) as usize * SECTOR_BYTES + loc.offset_bytes as usize;
                let rec = codec.decode(&buf[at..at + rb], &data_path, 0)?;
                out[(e.first_record + i) as usize] = rec.id();
            }
            done += take;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_maps_ids_and_tombstones() {
        let base = [100u64, 7, 55];
        let mut ids = LiveIds::new(3, Some(&base));
        assert_eq!(ids.lookup(Some(&base), 7), Some(1));
        assert_eq!(ids.lookup(Some(&base), 8), None);
        // Upsert of a base id: a new vid, the old one dead.
        assert_eq!(ids.insert(Some(&base), 7), 3);
        assert!(ids.is_dead(1) && !ids.is_dead(3));
        assert_eq!(ids.lookup(Some(&base), 7), Some(3));
        assert_eq!(ids.user_id(Some(&base), 3), 7);
        assert!(ids.delete(Some(&base), 100));
        assert!(!ids.delete(Some(&base), 100), "deleted already");
        assert_eq!(ids.lookup(Some(&base), 100), None);
        // A deleted id inserted again.
        assert_eq!(ids.insert(Some(&base), 100), 4);
        assert_eq!(ids.live_count(), 3);
        assert_eq!(ids.dead_count(), 2);
        assert!(ids.any_base_dead());
        // Row-number ids.
        let mut rows = LiveIds::new(70, None);
        assert_eq!(rows.lookup(None, 69), Some(69));
        assert_eq!(rows.insert(None, 1000), 70);
        assert!(!rows.any_base_dead());
        assert!(rows.delete(None, 1000));
        assert!(!rows.any_base_dead());
        assert!(rows.delete(None, 65));
        assert!(rows.any_base_dead());
    }
}

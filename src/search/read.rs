//! The I/O half of a query: turning records into coalesced sector reads, and reranking the
//! records once their sectors are in memory.

use super::SearchError;
use super::index::Index;
use super::params::SearchParams;
use super::task::{Reranked, Task};
use crate::data::DType;
use crate::distance::{self, Metric};
use crate::exact::Neighbor;
use crate::format::{FormatError, RecordView, SECTOR_BYTES};
use crate::io::ReadRequest;

/// Longest coalesced read, in sectors.
const MAX_RANGE_SECTORS: u32 = 16;

/// The sector reads of a set of records: each record's place, the coalesced requests, and where
/// each request lands in the read buffer. Reused across batches (no allocation in steady state).
#[derive(Debug, Default)]
pub(super) struct ReadPlan {
    /// (file sector, offset in it, sectors, record) of every record, sorted.
    pub(super) locs: Vec<(u64, u32, u32, u32)>,
    /// The coalesced requests, the first sector of each and its byte position in the buffer.
    pub(super) reqs: Vec<ReadRequest>,
    range_start: Vec<u64>,
    pos: Vec<usize>,
}

impl ReadPlan {
    /// Plans the reads of `records`, coalescing neighbouring sectors into one request.
    pub(super) fn plan(&mut self, idx: &Index, records: &[u32]) {
        self.locs.clear();
        let n_records = idx.meta.n_records;
        self.locs.extend(records.iter().map(|&r| {
            if u64::from(r) >= n_records {
                // A live insert: its slot of delta.m3, after data.m3 in the reader's sectors.
                let slot = idx.live.slots[(u64::from(r) - n_records) as usize];
                let (offset, file_sector, sectors) =
                    crate::format::delta::slot_location(idx.layout, slot);
                return (
                    idx.live.delta_start + file_sector,
                    (offset % SECTOR_BYTES as u64) as u32,
                    sectors,
                    r,
                );
            }
            let c = idx.cluster_of(r);
            let e = &idx.entries[c];
            let loc = idx.layout.locate(r as u64 - e.first_record);
            (
                1 + e.first_sector + loc.sector,
                loc.offset_bytes,
                loc.sectors,
                r,
            )
        }));
        self.locs.sort_unstable();
        self.reqs.clear();
        self.range_start.clear();
        for &(s, _, n, _) in &self.locs {
            if let (Some(last), Some(&start)) = (self.reqs.last_mut(), self.range_start.last()) {
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
            self.reqs
                .push(ReadRequest::new(s, n).expect("record range"));
            self.range_start.push(s);
        }
        self.pos.clear();
        let mut acc = 0usize;
        for r in &self.reqs {
            self.pos.push(acc);
            acc += r.len_bytes();
        }
    }

    /// Checks every data sector just read into `buf` (by `reqs`) against its CRC32C in
    /// `sectors.m3` (kept in RAM, 4 bytes per sector), so that a sector damaged on the device
    /// or in the file is a typed error naming the file and the sector, never a wrong answer.
    /// Sectors past the data sectors (inserts in `delta.m3`) are not covered by `sectors.m3`:
    /// their records are checked one by one against the log ([`ReadPlan::record`]).
    pub(super) fn verify_sectors(&self, idx: &Index, buf: &[u8]) -> Result<(), SearchError> {
        let crcs = &idx.sector_crcs;
        for (req, &pos) in self.reqs.iter().zip(&self.pos) {
            for k in 0..req.sectors() as usize {
                // File sector 0 is the header; data sector d is file sector d + 1.
                let Some(d) = (req.first_sector() + k as u64).checked_sub(1) else {
                    continue;
                };
                let Some(&stored) = crcs.get(d as usize) else {
                    continue;
                };
                let at = pos + k * SECTOR_BYTES;
                let computed = crc32c::crc32c(&buf[at..at + SECTOR_BYTES]);
                if computed != stored {
                    let (path, file_sector) = sector_file(idx, d + 1);
                    return Err(FormatError::Checksum {
                        path,
                        what: format!(
                            "data sector {d} (file sector {file_sector}; checked against \
                             sectors.m3 when read)"
                        ),
                        stored,
                        computed,
                    }
                    .into());
                }
            }
        }
        Ok(())
    }

    /// The decoded record `i` of [`ReadPlan::locs`] in `buf` (filled by reading `reqs`), and
    /// its global record index.
    pub(super) fn record<'b>(
        &self,
        idx: &Index,
        buf: &'b [u8],
        i: usize,
    ) -> Result<(RecordView<'b>, u32), SearchError> {
        let (s, off, _, r) = self.locs[i];
        let ri = self.range_start.partition_point(|&st| st <= s) - 1;
        let start =
            self.pos[ri] + (s - self.range_start[ri]) as usize * SECTOR_BYTES + off as usize;
        let rb = idx.codec.record_bytes() as usize;
        let bytes = &buf[start..start + rb];
        if let Some(d) = u64::from(r).checked_sub(idx.meta.n_records) {
            check_delta_record(idx, d as usize, bytes)?;
        }
        let rec = idx
            .codec
            .decode(
                bytes,
                idx.reader.path(),
                s * SECTOR_BYTES as u64 + off as u64,
            )
            .map_err(|e| e.within(format_args!("record {r}")))?;
        Ok((rec, r))
    }
}

/// Checks the bytes just read of delta record `d` (an insert in `delta.m3`, which
/// `sectors.m3` does not cover) against the CRC32C its log record holds: damage to
/// `delta.m3` after the index was opened is a typed error naming the file and the slot.
fn check_delta_record(idx: &Index, d: usize, bytes: &[u8]) -> Result<(), SearchError> {
    let stored = idx.live.record_crcs[d];
    let computed = crc32c::crc32c(bytes);
    if computed == stored {
        return Ok(());
    }
    Err(FormatError::Checksum {
        path: idx.dir.join(crate::format::files::DELTA_FILE),
        what: format!(
            "inserted record {d} (slot {}; checked against wal.m3 when read)",
            idx.live.slots[d]
        ),
        stored,
        computed,
    }
    .into())
}

/// The file holding sector `r` of the reader's space (`data.m3`, or the merge segment of a
/// merged index) and the sector's number in that file.
fn sector_file(idx: &Index, r: u64) -> (std::path::PathBuf, u64) {
    let starts = idx.segments.starts();
    let k = starts.partition_point(|&b| b <= r).saturating_sub(1);
    let name = idx
        .segments
        .segments
        .get(k)
        .and_then(|e| e.name_str())
        .unwrap_or(crate::format::files::DATA_FILE);
    (idx.dir.join(name), r - starts[k])
}

/// A record's vector as f32: borrowed from the record when it is aligned f32, else converted
/// into `scratch` (`idx.dim` long). Errors when the record's dimension is not the index's.
pub(super) fn record_vector<'v>(
    idx: &Index,
    rec: &RecordView<'v>,
    scratch: &'v mut [f32],
) -> Result<&'v [f32], SearchError> {
    let bytes = rec.vector_bytes();
    let v: &[f32] = match idx.codec.dtype() {
        DType::F32 => match bytemuck::try_cast_slice::<u8, f32>(bytes) {
            Ok(v) => v,
            Err(_) => {
                for (o, c) in scratch.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
                scratch
            }
        },
        DType::U8 => {
            for (o, &b) in scratch.iter_mut().zip(bytes) {
                *o = b as f32;
            }
            scratch
        }
        DType::I8 => {
            for (o, &b) in scratch.iter_mut().zip(bytes) {
                *o = b as i8 as f32;
            }
            scratch
        }
    };
    if v.len() != idx.dim {
        return Err(FormatError::corrupt(idx.reader.path(), 0, "record dimension").into());
    }
    Ok(v)
}

/// `dist`, the distance of the query to record `i` of `plan`, once it is finite. The query
/// was checked so that no distance to a vector of the index's norms overflows
/// ([`Index::check_query_as`]), so a non-finite one means the record is corrupt (a NaN or
/// infinite component, or a norm beyond `stats.m3`'s `max_base_norm`): an error naming
/// `data.m3` and the record, never a NaN among the results.
pub(super) fn checked_distance(
    idx: &Index,
    plan: &ReadPlan,
    i: usize,
    dist: f32,
) -> Result<f32, SearchError> {
    if dist.is_finite() {
        return Ok(dist);
    }
    let (s, off, _, r) = plan.locs[i];
    Err(FormatError::corrupt(
        idx.reader.path(),
        s * SECTOR_BYTES as u64 + off as u64,
        format!(
            "record {r}: its distance to the query is {dist}: the record holds a non-finite \
             component or a norm beyond the index's max_base_norm"
        ),
    )
    .into())
}

/// Submits the reads of `records` (coalescing neighbouring sectors) for the query in `t`;
/// `false` (nothing submitted) when there are none.
pub(super) fn submit_records<'a>(
    idx: &'a Index,
    t: &mut Task<'a>,
    records: &[u32],
) -> Result<bool, SearchError> {
    if records.is_empty() {
        return Ok(false);
    }
    t.plan.plan(idx, records);
    let buf = std::mem::take(&mut t.buf);
    t.pending = Some(idx.reader.submit(&t.plan.reqs, buf)?);
    Ok(true)
}

/// Computes the exact distances of the records just read into `t.buf` and offers them to the
/// results (one entry per original id).
pub(super) fn rerank(
    idx: &Index,
    t: &mut Task<'_>,
    params: &SearchParams,
    vec_scratch: &mut [f32],
    weights: Option<&((f32, f32), Vec<f32>)>,
) -> Result<(), SearchError> {
    let Some(results) = t.results.as_mut() else {
        return Ok(());
    };
    let q = &t.query;
    t.plan.verify_sectors(idx, &t.buf)?;
    for i in 0..t.plan.locs.len() {
        let (rec, _) = t.plan.record(idx, &t.buf, i)?;
        let v = record_vector(idx, &rec, vec_scratch)?;
        let blocks = t
            .weighting
            .as_ref()
            .filter(|w| !w.unit)
            .zip(idx.blocks.as_ref());
        let dist = match (params.distance, &weights, blocks) {
            (super::RerankDistance::LcCmd { .. }, Some((_, w)), Some((bw, b))) => {
                bw.weighted_l2_dims(&b.layout, q, v, w)
            }
            (super::RerankDistance::LcCmd { .. }, Some((_, w)), None) => {
                distance::weighted_l2_sq(q, v, w)
            }
            (_, _, Some((w, b))) => w.distance(&b.layout, idx.metric, q, v),
            _ => match idx.metric {
                Metric::L2 => distance::l2_sq(q, v),
                _ => -distance::dot(q, v),
            },
        };
        t.stats.dist_comps += 1;
        let dist = checked_distance(idx, &t.plan, i, dist)?;
        let id = rec.id();
        let list_start = t.list_ids.len();
        if params.expand_rounds > 0 {
            t.list_ids.extend(rec.neighbours());
        }
        let n = Neighbor { id, dist };
        t.best.push(Reranked {
            result: n,
            list: list_start..t.list_ids.len(),
        });
        if t.result_ids.insert(id) {
            results.push(n);
        }
    }
    Ok(())
}

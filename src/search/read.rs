//! The I/O half of a query: turning records into coalesced sector reads, and reranking the
//! records once their sectors are in memory.

use super::SearchError;
use super::index::Index;
use super::params::SearchParams;
use super::query::Task;
use crate::data::DType;
use crate::distance::{self, Metric};
use crate::exact::Neighbor;
use crate::format::{FormatError, SECTOR_BYTES};
use crate::io::ReadRequest;

/// Longest coalesced read, in sectors.
const MAX_RANGE_SECTORS: u32 = 16;

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
    // (file sector, offset, sectors) of every record.
    t.locs.clear();
    t.locs.extend(records.iter().map(|&r| {
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
    t.locs.sort_unstable();
    // Coalesce into ranges of consecutive sectors.
    let reqs = &mut t.reqs;
    let range_start = &mut t.range_start; // first sector of each request
    reqs.clear();
    range_start.clear();
    for &(s, _, n, _) in &t.locs {
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
    // Byte position of every request in the buffer.
    t.pos.clear();
    let mut acc = 0usize;
    for r in &t.reqs {
        t.pos.push(acc);
        acc += r.len_bytes();
    }
    let buf = std::mem::take(&mut t.buf);
    t.pending = Some(idx.reader.submit(&t.reqs, buf)?);
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
    let rb = idx.codec.record_bytes() as usize;
    for &(s, off, _, r) in &t.locs {
        let ri = t.range_start.partition_point(|&st| st <= s) - 1;
        let start = t.pos[ri] + (s - t.range_start[ri]) as usize * SECTOR_BYTES + off as usize;
        let bytes = &t.buf[start..start + rb];
        let rec = idx
            .codec
            .decode(bytes, &idx.dir, s * SECTOR_BYTES as u64 + off as u64)?;
        let v: &[f32] = match idx.codec.dtype() {
            DType::F32 => match bytemuck::try_cast_slice::<u8, f32>(rec.vector_bytes()) {
                Ok(v) => v,
                Err(_) => {
                    for (o, c) in vec_scratch
                        .iter_mut()
                        .zip(rec.vector_bytes().chunks_exact(4))
                    {
                        *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                    }
                    vec_scratch
                }
            },
            DType::U8 => {
                for (o, &b) in vec_scratch.iter_mut().zip(rec.vector_bytes()) {
                    *o = b as f32;
                }
                vec_scratch
            }
            DType::I8 => {
                for (o, &b) in vec_scratch.iter_mut().zip(rec.vector_bytes()) {
                    *o = b as i8 as f32;
                }
                vec_scratch
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
        let blocks = t
            .weighting
            .as_ref()
            .filter(|w| !w.unit)
            .zip(idx.blocks.as_ref());
        let dist = match (params.distance, &weights, blocks) {
            (super::RerankDistance::LcCmd { .. }, Some((_, w)), _) => {
                distance::weighted_l2_sq(q, v, w)
            }
            (_, _, Some((w, b))) => w.distance(&b.layout, idx.metric, q, v),
            _ => match idx.metric {
                Metric::L2 => distance::l2_sq(q, v),
                _ => -distance::dot(q, v),
            },
        };
        t.stats.dist_comps += 1;
        let id = rec.id();
        if params.expand_rounds > 0 {
            t.lists.insert(r, rec.neighbours().collect());
        }
        let n = Neighbor { id, dist };
        t.best.push((n, r));
        if t.result_ids.insert(id) {
            results.push(n);
        }
    }
    Ok(())
}

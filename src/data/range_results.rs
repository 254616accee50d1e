//! Range-search results in the big-ann-benchmarks range layout: `nq` (u32), `total` (u32),
//! then `nq` u32 result counts, `total` u32 ids and `total` f32 distances, little-endian; the
//! results of query i follow those of queries 0..i. Written atomically (`.partial` + rename).

use std::path::Path;

use super::DataError;
use super::format::atomic::PartialFile;

/// Variable-length results of a batch of range queries.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeResults {
    /// Results per query.
    pub counts: Vec<u32>,
    /// The ids of every query's results, query after query (`counts` says how many each).
    pub ids: Vec<u32>,
    /// Distances in the metric's natural unit.
    pub dists: Vec<f32>,
}

impl RangeResults {
    /// The `(ids, distances)` of query `i`.
    pub fn query(&self, i: usize) -> (&[u32], &[f32]) {
        let start: usize = self.counts[..i].iter().map(|&c| c as usize).sum();
        let end = start + self.counts[i] as usize;
        (&self.ids[start..end], &self.dists[start..end])
    }

    /// Writes the big-ann range layout to `path` (through `<path>.partial`, renamed when
    /// complete). Fails when `counts` do not add up to the lengths of `ids` and `dists`.
    pub fn write(&self, path: &Path) -> Result<(), DataError> {
        let total: u64 = self.counts.iter().map(|&c| c as u64).sum();
        if total != self.ids.len() as u64 || total != self.dists.len() as u64 {
            return Err(DataError::Param(format!(
                "range results for {}: counts add up to {total}, but {} ids and {} distances",
                path.display(),
                self.ids.len(),
                self.dists.len()
            )));
        }
        let too_large = |what| DataError::TooLarge {
            path: path.to_path_buf(),
            what,
            limit: u64::from(u32::MAX),
        };
        let nq = u32::try_from(self.counts.len()).map_err(|_| too_large("query count"))?;
        let total = u32::try_from(total).map_err(|_| too_large("result count"))?;
        let out = PartialFile::create(path)?;
        let mut offset = 0u64;
        let mut put = |bytes: &[u8]| -> Result<(), DataError> {
            out.write_at(bytes, offset)?;
            offset += bytes.len() as u64;
            Ok(())
        };
        put(&nq.to_le_bytes())?;
        put(&total.to_le_bytes())?;
        put(bytemuck::cast_slice(&self.counts))?;
        put(bytemuck::cast_slice(&self.ids))?;
        put(bytemuck::cast_slice(&self.dists))?;
        out.commit()
    }

    /// Reads a file in the big-ann range layout, checking its counts against its length.
    pub fn read(path: &Path) -> Result<Self, DataError> {
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        let truncated = |expected: u64| DataError::Truncated {
            path: path.to_path_buf(),
            expected_bytes: expected,
            found_bytes: bytes.len() as u64,
        };
        if bytes.len() < 8 {
            return Err(truncated(8));
        }
        let word = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        let (nq, total) = (word(0) as u64, word(4) as u64);
        let expected = 8 + 4 * nq + 8 * total;
        if (bytes.len() as u64) != expected {
            return Err(if (bytes.len() as u64) < expected {
                truncated(expected)
            } else {
                DataError::Header {
                    path: path.to_path_buf(),
                    what: format!(
                        "{} bytes, {nq} queries and {total} results need {expected}",
                        bytes.len()
                    ),
                }
            });
        }
        let u32s = |from: usize, n: usize| -> Vec<u32> {
            bytes[from..from + 4 * n]
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect()
        };
        let (nq, total) = (nq as usize, total as usize);
        let counts = u32s(8, nq);
        if counts.iter().map(|&c| c as u64).sum::<u64>() != total as u64 {
            return Err(DataError::Header {
                path: path.to_path_buf(),
                what: format!("per-query counts do not add up to {total}"),
            });
        }
        let ids = u32s(8 + 4 * nq, total);
        let dists = u32s(8 + 4 * nq + 4 * total, total)
            .into_iter()
            .map(f32::from_bits)
            .collect();
        Ok(Self { counts, ids, dists })
    }
}

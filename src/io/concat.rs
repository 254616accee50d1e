//! [`ConcatReader`]: two files read as one sector space, so that one batch of
//! [`ReadRequest`]s may read from both (an index's `data.m3` and the `delta.m3` of its live
//! inserts). Sectors below `second_start` are the first file's; sector `second_start + s` is
//! sector `s` of the second file. A request must lie wholly on one side.

use std::path::Path;
use std::sync::Arc;

use super::{
    AlignedBuf, BlockReader, InFlight, IoError, PendingRead, ReadRequest, ReadStats, ReaderInfo,
    SECTOR_BYTES,
};

/// Two block readers as one (see the module doc). Its info, path and length are the first
/// reader's.
#[derive(Debug)]
pub struct ConcatReader {
    first: Arc<dyn BlockReader>,
    second: Arc<dyn BlockReader>,
    second_start: u64,
    /// What [`BlockReader::len_bytes`] reports: the first reader's length ([`Self::new`]) or
    /// the whole sector space's ([`Self::chain`]).
    len_bytes: u64,
}

impl ConcatReader {
    /// Like [`Self::new`], but its length is the whole space's (`second_start` sectors, then
    /// the second file): chained, several files read as one (the data segments of a merged
    /// index, decision 0012).
    pub fn chain(
        first: Arc<dyn BlockReader>,
        second: Arc<dyn BlockReader>,
        second_start: u64,
    ) -> Result<Self, IoError> {
        let mut r = Self::new(first, second, second_start)?;
        r.len_bytes = second_start * SECTOR_BYTES as u64 + r.second.len_bytes();
        Ok(r)
    }

    /// `second`'s sector 0 appears at sector `second_start`, which must not be below the
    /// first file's end.
    pub fn new(
        first: Arc<dyn BlockReader>,
        second: Arc<dyn BlockReader>,
        second_start: u64,
    ) -> Result<Self, IoError> {
        let first_sectors = first.len_bytes().div_ceil(SECTOR_BYTES as u64);
        if second_start < first_sectors {
            return Err(IoError::Unsupported {
                what: format!(
                    "{} would start at sector {second_start}, inside {} ({first_sectors} sectors)",
                    second.path().display(),
                    first.path().display()
                ),
            });
        }
        Ok(Self {
            len_bytes: first.len_bytes(),
            first,
            second,
            second_start,
        })
    }

    /// Sector where the second file starts.
    pub fn second_start(&self) -> u64 {
        self.second_start
    }
}

/// Both halves of a batch in flight, and how to interleave them back into request order.
struct Split<'r> {
    first: Option<PendingRead<'r>>,
    second: Option<PendingRead<'r>>,
    /// For each request in order: from the second file, and its sectors.
    order: Vec<(bool, u32)>,
    out: Option<AlignedBuf>,
    done: Option<(AlignedBuf, Result<ReadStats, IoError>)>,
}

impl Split<'_> {
    fn assemble(&mut self) {
        if self.done.is_some() {
            return;
        }
        let (a, ra) = self.first.take().expect("first half").finish();
        let (b, rb) = self.second.take().expect("second half").finish();
        let mut out = self.out.take().unwrap_or_default();
        let result = match (ra, rb) {
            (Err(e), _) | (_, Err(e)) => Err(e),
            (Ok(sa), Ok(sb)) => {
                let total: usize = self.order.iter().map(|&(_, s)| s as usize).sum();
                out.resize_sectors(total);
                let (mut pa, mut pb, mut po) = (0usize, 0usize, 0usize);
                for &(second, sectors) in &self.order {
                    let n = sectors as usize * SECTOR_BYTES;
                    let (src, p) = if second { (&b, &mut pb) } else { (&a, &mut pa) };
                    out[po..po + n].copy_from_slice(&src[*p..*p + n]);
                    *p += n;
                    po += n;
                }
                Ok(ReadStats {
                    reads: sa.reads + sb.reads,
                    sectors: sa.sectors + sb.sectors,
                    bytes: sa.bytes + sb.bytes,
                    // The two halves are in flight together: one round trip.
                    rounds: sa.rounds.max(sb.rounds),
                })
            }
        };
        self.done = Some((out, result));
    }
}

impl InFlight for Split<'_> {
    fn poll(&mut self) -> bool {
        let a = self.first.as_mut().is_none_or(PendingRead::try_complete);
        let b = self.second.as_mut().is_none_or(PendingRead::try_complete);
        a && b
    }

    fn block(&mut self) {
        self.assemble();
    }

    fn take(&mut self) -> (AlignedBuf, Result<ReadStats, IoError>) {
        self.assemble();
        self.done.take().expect("taken once")
    }
}

impl BlockReader for ConcatReader {
    fn submit<'r>(
        &'r self,
        reqs: &[ReadRequest],
        buf: AlignedBuf,
    ) -> Result<PendingRead<'r>, IoError> {
        let split = self.second_start;
        if reqs.iter().all(|r| r.first_sector() < split) {
            return self.first.submit(reqs, buf);
        }
        let mut a = Vec::new();
        let mut b = Vec::new();
        let mut order = Vec::with_capacity(reqs.len());
        for r in reqs {
            let s = r.first_sector();
            if s >= split {
                b.push(ReadRequest::new(s - split, r.sectors()).expect("a smaller request"));
                order.push((true, r.sectors()));
            } else if s + u64::from(r.sectors()) <= split {
                a.push(*r);
                order.push((false, r.sectors()));
            } else {
                return Err(IoError::Unsupported {
                    what: format!(
                        "a read of sectors {s}..{} crosses from {} into {}",
                        s + u64::from(r.sectors()),
                        self.first.path().display(),
                        self.second.path().display()
                    ),
                });
            }
        }
        if a.is_empty() {
            let pending = self.second.submit(&b, buf)?;
            return Ok(pending);
        }
        let first = self.first.submit(&a, AlignedBuf::new())?;
        let second = self.second.submit(&b, AlignedBuf::new())?;
        Ok(PendingRead::running(Box::new(Split {
            first: Some(first),
            second: Some(second),
            order,
            out: Some(buf),
            done: None,
        })))
    }

    fn info(&self) -> &ReaderInfo {
        self.first.info()
    }

    fn path(&self) -> &Path {
        self.first.path()
    }

    fn len_bytes(&self) -> u64 {
        self.len_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{IoBackend, ReaderOptions, open_reader};

    fn file(dir: &Path, name: &str, sectors: usize, tag: u8) -> std::path::PathBuf {
        let p = dir.join(name);
        let bytes: Vec<u8> = (0..sectors * SECTOR_BYTES)
            .map(|i| tag.wrapping_add((i / SECTOR_BYTES) as u8))
            .collect();
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn reads_both_files_in_request_order() {
        let dir = tempfile::tempdir().unwrap();
        let a = file(dir.path(), "a", 4, 0);
        let b = file(dir.path(), "b", 3, 100);
        let opts = ReaderOptions::default();
        let ra = open_reader(&a, IoBackend::Pread, &opts).unwrap();
        let rb = open_reader(&b, IoBackend::Pread, &opts).unwrap();
        assert!(
            ConcatReader::new(ra.clone(), rb.clone(), 3).is_err(),
            "overlap"
        );
        let r = ConcatReader::new(ra, rb, 5).unwrap();
        let reqs = [
            ReadRequest::new(6, 2).unwrap(), // b sectors 1, 2
            ReadRequest::new(1, 1).unwrap(), // a sector 1
            ReadRequest::new(5, 1).unwrap(), // b sector 0
            ReadRequest::new(3, 1).unwrap(), // a sector 3
        ];
        let mut buf = AlignedBuf::new();
        let stats = r.read_batch(&reqs, &mut buf).unwrap();
        let tags: Vec<u8> = buf.chunks(SECTOR_BYTES).map(|s| s[0]).collect();
        assert_eq!(tags, [101, 102, 1, 100, 3]);
        assert_eq!((stats.reads, stats.sectors, stats.rounds), (4, 5, 1));
        // One side only, either side.
        r.read_batch(&reqs[1..2], &mut buf).unwrap();
        assert_eq!(buf[0], 1);
        r.read_batch(&reqs[2..3], &mut buf).unwrap();
        assert_eq!(buf[0], 100);
        // A request across the boundary (the gap sector 4 belongs to neither) is refused.
        assert!(
            r.read_batch(&[ReadRequest::new(3, 2).unwrap()], &mut buf)
                .is_err()
        );
    }
}

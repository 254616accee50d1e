//! [`FaultyReader`]: a reader wrapper whose N-th read fails or comes back short, for tests that
//! show errors surface cleanly (redb's fault-injecting backend, STYLE 14).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{
    AlignedBuf, BlockReader, InFlight, IoError, PendingRead, ReadRequest, ReadStats, ReaderInfo,
    SECTOR_BYTES, batch_slices,
};

/// What an injected fault does to its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The read fails like a device error: [`IoError::Read`] with an "injected fault" source.
    Error,
    /// The read comes back short, as at a truncated file: [`IoError::UnexpectedEof`] with
    /// `got` = one sector less than asked, and the missing bytes of the output overwritten.
    Short,
}

/// A fault on the read (request) with index `at_read`, counting every request passed to
/// [`FaultyReader::read_batch`] or [`FaultyReader::submit`] from 0, across batches and
/// threads (in the order the batches were submitted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// Index of the faulty request, counted from 0.
    pub at_read: u64,
    /// What goes wrong with it.
    pub kind: FaultKind,
}

/// Wraps a reader and injects [`Fault`]s; reads without a fault pass through unchanged.
#[derive(Debug)]
pub struct FaultyReader<R> {
    inner: R,
    faults: Vec<Fault>,
    reads_seen: AtomicU64,
}

impl<R: BlockReader> FaultyReader<R> {
    /// Wraps `inner`, injecting `faults`.
    pub fn new(inner: R, faults: impl IntoIterator<Item = Fault>) -> Self {
        Self {
            inner,
            faults: faults.into_iter().collect(),
            reads_seen: AtomicU64::new(0),
        }
    }

    /// Requests seen so far.
    pub fn reads_seen(&self) -> u64 {
        self.reads_seen.load(Ordering::Relaxed)
    }

    /// The wrapped reader.
    pub fn inner(&self) -> &R {
        &self.inner
    }
}

/// Applies the first fault among requests `first .. first + reqs.len()` to a batch that the
/// inner reader read successfully into `out` (`Ok` passes through when none hits).
fn inject(
    faults: &[Fault],
    path: &Path,
    first: u64,
    reqs: &[ReadRequest],
    out: &mut AlignedBuf,
    stats: ReadStats,
) -> Result<ReadStats, IoError> {
    let hit = faults
        .iter()
        .filter(|f| (first..first + reqs.len() as u64).contains(&f.at_read))
        .min_by_key(|f| f.at_read);
    let Some(fault) = hit else {
        return Ok(stats);
    };
    let i = (fault.at_read - first) as usize;
    let req = reqs[i];
    let path = path.to_path_buf();
    Err(match fault.kind {
        FaultKind::Error => IoError::Read {
            path,
            offset: req.offset_bytes(),
            len: req.len_bytes() as u64,
            source: std::io::Error::other("injected fault"),
        },
        FaultKind::Short => {
            let got = req.len_bytes() - SECTOR_BYTES;
            let start: usize = batch_slices(&reqs[..i], out).map(<[u8]>::len).sum();
            out[start + got..start + req.len_bytes()].fill(0xA5);
            IoError::UnexpectedEof {
                path,
                offset: req.offset_bytes(),
                expected: req.len_bytes() as u64,
                got: got as u64,
            }
        }
    })
}

/// A pending read of the inner reader whose outcome gets the faults when it completes.
struct FaultyPending<'r> {
    inner: Option<PendingRead<'r>>,
    faults: &'r [Fault],
    path: &'r Path,
    first: u64,
    reqs: Vec<ReadRequest>,
}

impl InFlight for FaultyPending<'_> {
    fn poll(&mut self) -> bool {
        self.inner.as_mut().is_none_or(PendingRead::try_complete)
    }

    fn block(&mut self) {
        if let Some(p) = self.inner.as_mut() {
            p.block();
        }
    }

    fn take(&mut self) -> (AlignedBuf, Result<ReadStats, IoError>) {
        let Some(p) = self.inner.take() else {
            return (AlignedBuf::new(), Ok(ReadStats::default()));
        };
        let (mut buf, r) = p.finish();
        let r =
            r.and_then(|st| inject(self.faults, self.path, self.first, &self.reqs, &mut buf, st));
        (buf, r)
    }
}

impl<R: BlockReader> BlockReader for FaultyReader<R> {
    fn submit<'r>(
        &'r self,
        reqs: &[ReadRequest],
        buf: AlignedBuf,
    ) -> Result<PendingRead<'r>, IoError> {
        let first = self
            .reads_seen
            .fetch_add(reqs.len() as u64, Ordering::Relaxed);
        let inner = self.inner.submit(reqs, buf)?;
        Ok(PendingRead::running(Box::new(FaultyPending {
            inner: Some(inner),
            faults: &self.faults,
            path: self.inner.path(),
            first,
            reqs: reqs.to_vec(),
        })))
    }

    fn read_batch(&self, reqs: &[ReadRequest], out: &mut AlignedBuf) -> Result<ReadStats, IoError> {
        let first = self
            .reads_seen
            .fetch_add(reqs.len() as u64, Ordering::Relaxed);
        let stats = self.inner.read_batch(reqs, out)?;
        inject(&self.faults, self.inner.path(), first, reqs, out, stats)
    }

    fn info(&self) -> &ReaderInfo {
        self.inner.info()
    }

    fn path(&self) -> &Path {
        self.inner.path()
    }

    fn len_bytes(&self) -> u64 {
        self.inner.len_bytes()
    }
}

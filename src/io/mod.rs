//! Block readers: how sectors of an index data file get from the SSD into memory.
//!
//! A query needs one batch of sector ranges at a time (tens to hundreds of 1–8 sector reads)
//! and cannot go on until all of them are in memory. [`BlockReader::read_batch`] is that
//! operation: it takes the batch as [`ReadRequest`]s, which are sector-aligned by construction,
//! and fills one [`AlignedBuf`] with the requests' bytes back to back, in request order. Since
//! every request is a whole number of sectors and the buffer starts on a sector boundary, every
//! request's destination is sector-aligned too, which is what O_DIRECT needs.
//!
//! [`BlockReader::submit`] is the same operation without the wait: it starts the reads and
//! returns a [`PendingRead`] that owns the buffer while reads are in flight, can be polled
//! ([`PendingRead::try_complete`]) and is completed with [`PendingRead::finish`] /
//! [`PendingRead::wait`]; dropping it early waits for the reads already started. This lets one
//! thread keep several queries' batches in flight (batch search, DESIGN §3). `read_batch` is
//! `submit` + `finish`.
//!
//! Two backends implement the trait and pass the same test battery (`io/tests.rs`):
//! - [`UringReader`]: io_uring. One ring per pending batch, taken from a pool; all requests
//!   of a batch are in flight at once (up to the ring's queue depth).
//! - [`PreadReader`]: `pread(2)` on a persistent pool of I/O threads; always available.
//!
//! [`open_reader`] with [`IoBackend::Auto`] probes io_uring (a ring and one read) and falls
//! back to pread when the kernel or a sandbox refuses it; [`ReaderInfo::fallback_reason`] says
//! why, in one line the caller may log (the library never prints). `M3_IO_FORCE_FALLBACK=1`
//! (or [`ReaderOptions::force_uring_failure`]) makes the probe fail on purpose.
//!
//! Both backends open the file with O_DIRECT when the file system allows it (tmpfs does not)
//! and check every completion: errors name the file and offset, short reads are resubmitted
//! for their remainder, and a file that ends inside a request is [`IoError::UnexpectedEof`].
//! [`FaultyReader`] wraps any reader and injects failures for tests.

mod aligned;
mod concat;
mod error;
mod faulty;
mod file;
mod pread;
mod priority;
mod uring;

#[cfg(test)]
mod tests;

use std::ops::AddAssign;
use std::path::Path;
use std::sync::Arc;

pub use aligned::AlignedBuf;
pub use concat::ConcatReader;
pub use error::IoError;
pub use faulty::{Fault, FaultKind, FaultyReader};
pub use pread::PreadReader;
pub use priority::lower_current_thread_priority;
pub use uring::UringReader;

/// The unit of I/O and alignment: one 4 KiB sector. Every read is whole sectors at sector
/// offsets into a buffer aligned to it ([`AlignedBuf`]); the index format lays `data.m3` out
/// in these sectors (`crate::format::layout`).
pub const SECTOR_BYTES: usize = 4096;

/// Environment variable that, set to `1`, makes the io_uring probe fail on purpose so that
/// tests and CI exercise the pread fallback.
pub const FORCE_FALLBACK_ENV: &str = "M3_IO_FORCE_FALLBACK";

/// Largest request, in sectors (256 MiB). It keeps a request's byte length within the `u32` of
/// an io_uring read and below the 2 GiB a single `pread` can return.
pub const MAX_REQUEST_SECTORS: u32 = 1 << 16;

/// A read of `sectors` whole sectors starting at sector `first_sector`: byte offset
/// `first_sector · 4096`, length `sectors · 4096`. Only [`ReadRequest::new`] builds one, so a
/// request is a witness that its offset and length are sector-aligned and in range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReadRequest {
    first_sector: u64,
    sectors: u32,
}

impl ReadRequest {
    /// A request for `sectors` sectors from `first_sector` on; `None` when `sectors` is 0 or
    /// above [`MAX_REQUEST_SECTORS`], or when the end byte does not fit an `i64` file offset.
    ///
    /// `ReadRequest::new(10, 2)` reads bytes 40,960..49,152.
    pub const fn new(first_sector: u64, sectors: u32) -> Option<Self> {
        if sectors == 0 || sectors > MAX_REQUEST_SECTORS {
            return None;
        }
        let Some(end_sector) = first_sector.checked_add(sectors as u64) else {
            return None;
        };
        if end_sector > (i64::MAX as u64) / SECTOR_BYTES as u64 {
            return None;
        }
        Some(Self {
            first_sector,
            sectors,
        })
    }

    /// First sector read.
    pub const fn first_sector(&self) -> u64 {
        self.first_sector
    }

    /// Number of sectors read (≥ 1).
    pub const fn sectors(&self) -> u32 {
        self.sectors
    }

    /// Byte offset in the file: `first_sector · 4096`.
    pub const fn offset_bytes(&self) -> u64 {
        self.first_sector * SECTOR_BYTES as u64
    }

    /// Length in bytes: `sectors · 4096`.
    pub const fn len_bytes(&self) -> usize {
        self.sectors as usize * SECTOR_BYTES
    }
}

/// Total sectors of a batch: the size, in sectors, that `read_batch` gives its output buffer.
pub fn batch_sectors(reqs: &[ReadRequest]) -> usize {
    reqs.iter().map(|r| r.sectors as usize).sum()
}

/// The slices of a filled batch buffer, one per request, in request order.
///
/// `buf` is the buffer that [`BlockReader::read_batch`] filled for `reqs`; when it is shorter
/// than the batch (it was not filled for these requests), the iterator stops early.
pub fn batch_slices<'a>(
    reqs: &'a [ReadRequest],
    buf: &'a [u8],
) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut start = 0usize;
    reqs.iter().map_while(move |r| {
        let s = buf.get(start..start + r.len_bytes())?;
        start += r.len_bytes();
        Some(s)
    })
}

/// What one or more batches cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Requests read.
    pub reads: u64,
    /// Sectors read.
    pub sectors: u64,
    /// Bytes read (`sectors · 4096`).
    pub bytes: u64,
    /// Batches waited on: one per non-empty batch. A query's latency is roughly
    /// `rounds ×` one device round trip (~0.1 ms here), almost independent of `reads`.
    pub rounds: u64,
}

impl ReadStats {
    pub(crate) fn for_batch(reqs: &[ReadRequest]) -> Self {
        if reqs.is_empty() {
            return Self::default();
        }
        let sectors = batch_sectors(reqs) as u64;
        Self {
            reads: reqs.len() as u64,
            sectors,
            bytes: sectors * SECTOR_BYTES as u64,
            rounds: 1,
        }
    }
}

impl AddAssign for ReadStats {
    fn add_assign(&mut self, o: Self) {
        self.reads += o.reads;
        self.sectors += o.sectors;
        self.bytes += o.bytes;
        self.rounds += o.rounds;
    }
}

/// A batch whose reads are in flight: returned by [`BlockReader::submit`], which does not wait.
///
/// It owns the output buffer while the kernel (io_uring) or the I/O threads (pread) may write
/// into it, so no borrow of the buffer outlives the call that started the reads; [`finish`]
/// or [`wait`] hand it back once nothing is in flight. Several pending reads may be
/// outstanding at once, from one thread or many, and complete in any order.
///
/// **Dropping a pending read before it completed blocks** until every read already handed to
/// the kernel or to an I/O thread has finished (requests not yet started are abandoned), and
/// only then frees the buffer: the memory can never be written after it was freed. Leaking it
/// (`std::mem::forget`) leaks the buffer too, which is equally safe.
///
/// [`finish`]: PendingRead::finish
/// [`wait`]: PendingRead::wait
#[must_use = "a pending read must be completed (finish/wait) to get its data; dropping it waits"]
pub struct PendingRead<'r> {
    state: PendingState<'r>,
}

enum PendingState<'r> {
    /// Completed at submission (empty batch, or read synchronously); `None` once taken.
    Ready(Option<(AlignedBuf, Result<ReadStats, IoError>)>),
    /// Reads in flight. The backend's type waits for them in its `Drop`.
    Running(Box<dyn InFlight + 'r>),
}

/// A backend's in-flight batch (see [`PendingRead`]). Implementations must wait for all
/// started reads in `Drop` before their buffer is freed.
pub(crate) trait InFlight: Send {
    /// Makes progress without blocking (submits what is left, reaps completions); `true` when
    /// nothing is in flight any more and [`InFlight::take`] may be called.
    fn poll(&mut self) -> bool;
    /// Blocks until nothing is in flight.
    fn block(&mut self);
    /// The buffer and the outcome; called once, after `poll` returned `true` or `block`
    /// returned.
    fn take(&mut self) -> (AlignedBuf, Result<ReadStats, IoError>);
}

impl<'r> PendingRead<'r> {
    /// A pending read that is already complete.
    pub(crate) fn ready(buf: AlignedBuf, result: Result<ReadStats, IoError>) -> Self {
        Self {
            state: PendingState::Ready(Some((buf, result))),
        }
    }

    pub(crate) fn running(op: Box<dyn InFlight + 'r>) -> Self {
        Self {
            state: PendingState::Running(op),
        }
    }

    /// Makes progress without blocking and says whether the batch is complete, i.e. whether
    /// [`finish`](Self::finish) / [`wait`](Self::wait) would return at once. Cheap: for
    /// io_uring it reaps the completion queue (a syscall only when reads of the batch still
    /// wait to be submitted), for pread it is an atomic load.
    pub fn try_complete(&mut self) -> bool {
        match &mut self.state {
            PendingState::Ready(_) => true,
            PendingState::Running(op) => op.poll(),
        }
    }

    /// Same as [`try_complete`](Self::try_complete).
    pub fn is_done(&mut self) -> bool {
        self.try_complete()
    }

    /// Blocks until complete without consuming the pending read.
    pub(crate) fn block(&mut self) {
        if let PendingState::Running(op) = &mut self.state {
            op.block();
        }
    }

    /// Blocks until every read is complete and returns the buffer with the outcome. The buffer
    /// comes back on error too (its contents then unspecified), so it can be reused.
    pub fn finish(mut self) -> (AlignedBuf, Result<ReadStats, IoError>) {
        match &mut self.state {
            PendingState::Ready(r) => r
                .take()
                .unwrap_or_else(|| (AlignedBuf::new(), Ok(ReadStats::default()))),
            PendingState::Running(op) => {
                op.block();
                op.take()
            }
        }
    }

    /// Blocks until every read is complete: the filled buffer (as
    /// [`BlockReader::read_batch`] would have filled it) and the batch's cost.
    pub fn wait(self) -> Result<(AlignedBuf, ReadStats), IoError> {
        let (buf, r) = self.finish();
        r.map(|stats| (buf, stats))
    }
}

impl std::fmt::Debug for PendingRead<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            PendingState::Ready(_) => "ready",
            PendingState::Running(_) => "running",
        };
        f.debug_struct("PendingRead")
            .field("state", &state)
            .finish()
    }
}

/// Reads batches of sectors from one read-only file. Usable from many threads at once.
pub trait BlockReader: Send + Sync + std::fmt::Debug {
    /// Starts reading every request of `reqs` into `buf` and returns without waiting.
    ///
    /// `buf` is resized and filled exactly as [`read_batch`](Self::read_batch) fills `out`;
    /// the returned [`PendingRead`] owns it until the batch completes. Any number of batches
    /// may be pending at once. An `Err` here means the batch could not be started (e.g. no
    /// io_uring ring could be created); read errors are returned by the pending read.
    fn submit<'r>(
        &'r self,
        reqs: &[ReadRequest],
        buf: AlignedBuf,
    ) -> Result<PendingRead<'r>, IoError>;

    /// Reads every request of `reqs` and returns when all are in memory.
    ///
    /// `out` is resized to [`batch_sectors`]`(reqs)` sectors and holds the requests' bytes back
    /// to back in request order ([`batch_slices`] splits it). Reuse one buffer per thread: it
    /// reallocates only when a batch is larger than any before. Requests may overlap, repeat
    /// and come in any order. An empty batch succeeds with zero stats.
    ///
    /// On error the contents of `out` are unspecified; the error names the file and the offset
    /// of a failed request. No request is still in flight when this returns, either way.
    ///
    /// The default is [`submit`](Self::submit) followed by [`PendingRead::finish`].
    fn read_batch(&self, reqs: &[ReadRequest], out: &mut AlignedBuf) -> Result<ReadStats, IoError> {
        let pending = self.submit(reqs, std::mem::take(out))?;
        let (buf, r) = pending.finish();
        *out = buf;
        r
    }

    /// Which backend this is and how it is configured.
    fn info(&self) -> &ReaderInfo;

    /// The file read.
    fn path(&self) -> &Path;

    /// Length of the file in bytes when it was opened.
    fn len_bytes(&self) -> u64;
}

impl<T: BlockReader + ?Sized> BlockReader for Arc<T> {
    fn submit<'r>(
        &'r self,
        reqs: &[ReadRequest],
        buf: AlignedBuf,
    ) -> Result<PendingRead<'r>, IoError> {
        (**self).submit(reqs, buf)
    }
    fn read_batch(&self, reqs: &[ReadRequest], out: &mut AlignedBuf) -> Result<ReadStats, IoError> {
        (**self).read_batch(reqs, out)
    }
    fn info(&self) -> &ReaderInfo {
        (**self).info()
    }
    fn path(&self) -> &Path {
        (**self).path()
    }
    fn len_bytes(&self) -> u64 {
        (**self).len_bytes()
    }
}

impl<T: BlockReader + ?Sized> BlockReader for Box<T> {
    fn submit<'r>(
        &'r self,
        reqs: &[ReadRequest],
        buf: AlignedBuf,
    ) -> Result<PendingRead<'r>, IoError> {
        (**self).submit(reqs, buf)
    }
    fn read_batch(&self, reqs: &[ReadRequest], out: &mut AlignedBuf) -> Result<ReadStats, IoError> {
        (**self).read_batch(reqs, out)
    }
    fn info(&self) -> &ReaderInfo {
        (**self).info()
    }
    fn path(&self) -> &Path {
        (**self).path()
    }
    fn len_bytes(&self) -> u64 {
        (**self).len_bytes()
    }
}

/// Which backend to use (`--io auto|uring|pread`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoBackend {
    /// io_uring when the probe succeeds, else pread.
    #[default]
    Auto,
    /// io_uring or an error.
    Uring,
    /// pread on a thread pool.
    Pread,
}

impl std::str::FromStr for IoBackend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "uring" | "io_uring" => Ok(Self::Uring),
            "pread" => Ok(Self::Pread),
            other => Err(format!(
                "unknown I/O backend {other:?} (expected auto, uring or pread)"
            )),
        }
    }
}

/// The backend a reader actually uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// io_uring ([`UringReader`]).
    Uring,
    /// `pread(2)` on I/O threads ([`PreadReader`]).
    Pread,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Uring => "io_uring",
            Self::Pread => "pread",
        })
    }
}

/// How an opened reader works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderInfo {
    /// The backend in use.
    pub backend: BackendKind,
    /// The file is read with O_DIRECT (bypassing the page cache). `false` when it was not asked
    /// for or the file system refused it (tmpfs).
    pub direct: bool,
    /// Reads in flight per batch at most: the ring size for io_uring, I/O threads + the
    /// calling thread for pread.
    pub queue_depth: usize,
    /// I/O worker threads (pread; 0 for io_uring, which needs none).
    pub threads: usize,
    /// Why `Auto` did not choose io_uring, as one line for the log; `None` otherwise.
    pub fallback_reason: Option<String>,
}

/// Options of [`open_reader`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderOptions {
    /// Try O_DIRECT (falls back to buffered reads where the file system refuses it).
    pub direct: bool,
    /// io_uring: entries of each ring, i.e. reads in flight per batch (a larger batch is
    /// submitted in waves that keep this many in flight).
    pub queue_depth: u32,
    /// pread: I/O worker threads shared by all batches of the reader.
    pub pread_threads: usize,
    /// pread: a batch with fewer requests than this is read on the calling thread alone; from
    /// this size on, worker threads help. 2 by default: with O_DIRECT every read is a ~0.1 ms
    /// device round trip, far more than the few µs of waking a worker.
    pub pread_parallel_min: usize,
    /// Make the io_uring probe fail as if the kernel refused it (also: `M3_IO_FORCE_FALLBACK=1`).
    pub force_uring_failure: bool,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        Self {
            direct: true,
            queue_depth: 128,
            pread_threads: 16,
            pread_parallel_min: 2,
            force_uring_failure: false,
        }
    }
}

impl ReaderOptions {
    /// Whether the io_uring probe must fail on purpose (option or environment).
    pub(crate) fn uring_forced_off(&self) -> bool {
        self.force_uring_failure || std::env::var_os(FORCE_FALLBACK_ENV).is_some_and(|v| v == "1")
    }
}

/// Opens `path` for batched sector reads with the chosen backend.
///
/// With [`IoBackend::Auto`], an io_uring that cannot be set up or cannot read (EPERM, ENOSYS,
/// EACCES under Docker's default seccomp profile, `kernel.io_uring_disabled`, gVisor, or
/// `M3_IO_FORCE_FALLBACK=1`) gives a [`PreadReader`] whose [`ReaderInfo::fallback_reason`] says
/// why. Errors that pread would hit as well (the file cannot be opened) are returned as they are.
pub fn open_reader(
    path: &Path,
    backend: IoBackend,
    options: &ReaderOptions,
) -> Result<Arc<dyn BlockReader>, IoError> {
    match backend {
        IoBackend::Pread => Ok(Arc::new(PreadReader::open(path, options)?)),
        IoBackend::Uring => Ok(Arc::new(UringReader::open(path, options)?)),
        IoBackend::Auto => match UringReader::open(path, options) {
            Ok(r) => Ok(Arc::new(r)),
            Err(e @ (IoError::Setup { .. } | IoError::Unsupported { .. })) => {
                let mut r = PreadReader::open(path, options)?;
                r.set_fallback_reason(format!(
                    "io_uring unavailable ({e}); reading with pread on {} threads",
                    r.info().threads
                ));
                Ok(Arc::new(r))
            }
            Err(e) => Err(e),
        },
    }
}

/// Progress of one request through one or more partial reads; shared by both backends so that
/// short reads, retries and end of file mean the same everywhere.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Progress {
    /// Byte offset of the request in the file.
    pub offset: u64,
    /// Byte length of the request.
    pub len: usize,
    /// Bytes read so far.
    pub done: usize,
    /// EINTR/EAGAIN results in a row (reset by every read that makes progress).
    pub retries: u32,
}

/// What to do after a (partial) read result.
#[derive(Debug)]
pub(crate) enum Step {
    /// The request is complete.
    Done,
    /// Read the remainder: `offset + done`, `len − done` bytes.
    Again,
    /// The request failed.
    Fail(Failure),
}

#[derive(Debug)]
pub(crate) enum Failure {
    Io(std::io::Error),
    Eof { got: usize },
}

/// EINTR/EAGAIN results in a row tolerated per request before the error is returned.
const MAX_RETRIES: u32 = 1000;

impl Progress {
    pub(crate) fn new(offset: u64, len: usize) -> Self {
        Self {
            offset,
            len,
            done: 0,
            retries: 0,
        }
    }

    /// Offset of the remainder.
    pub(crate) fn next_offset(&self) -> u64 {
        self.offset + self.done as u64
    }

    /// Accounts for the result of reading the remainder. `direct`: the file is open with
    /// O_DIRECT, so a remainder can only be read from a sector-aligned offset; a short read that
    /// ends inside a sector can only be the end of the file.
    pub(crate) fn on_result(&mut self, result: std::io::Result<usize>, direct: bool) -> Step {
        use std::io::ErrorKind;
        match result {
            Ok(0) => Step::Fail(Failure::Eof { got: self.done }),
            Ok(n) if n > self.len - self.done => {
                Step::Fail(Failure::Io(std::io::Error::other(format!(
                    "read returned {n} bytes, more than the {} asked",
                    self.len - self.done
                ))))
            }
            Ok(n) => {
                self.done += n;
                self.retries = 0;
                if self.done == self.len {
                    Step::Done
                } else if direct && !self.next_offset().is_multiple_of(SECTOR_BYTES as u64) {
                    Step::Fail(Failure::Eof { got: self.done })
                } else {
                    Step::Again
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::WouldBlock) => {
                self.retries += 1;
                if self.retries > MAX_RETRIES {
                    Step::Fail(Failure::Io(e))
                } else {
                    Step::Again
                }
            }
            Err(e) => Step::Fail(Failure::Io(e)),
        }
    }

    /// The error for a failed request.
    pub(crate) fn error(&self, path: &Path, failure: Failure) -> IoError {
        match failure {
            Failure::Io(source) => IoError::Read {
                path: path.to_path_buf(),
                offset: self.offset,
                len: self.len as u64,
                source,
            },
            Failure::Eof { got } => IoError::UnexpectedEof {
                path: path.to_path_buf(),
                offset: self.offset,
                expected: self.len as u64,
                got: got as u64,
            },
        }
    }
}

/// Where each request of a batch goes: (file offset, length, destination offset in the output
/// buffer), destinations back to back from 0. Resizes `out` to the batch.
pub(crate) fn plan_batch(reqs: &[ReadRequest], out: &mut AlignedBuf) -> Vec<(u64, usize, usize)> {
    out.resize_sectors(batch_sectors(reqs));
    let mut dst = 0usize;
    reqs.iter()
        .map(|r| {
            let item = (r.offset_bytes(), r.len_bytes(), dst);
            dst += r.len_bytes();
            item
        })
        .collect()
}

#[cfg(test)]
mod unit_tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    #[test]
    fn read_request_is_aligned_and_rejects_bad_sizes() {
        let r = ReadRequest::new(10, 2).unwrap();
        assert_eq!((r.offset_bytes(), r.len_bytes()), (40_960, 8_192));
        assert!(ReadRequest::new(0, 0).is_none());
        assert!(ReadRequest::new(0, MAX_REQUEST_SECTORS + 1).is_none());
        assert!(ReadRequest::new(0, MAX_REQUEST_SECTORS).is_some());
        assert!(ReadRequest::new(u64::MAX, 1).is_none());
        assert!(ReadRequest::new(i64::MAX as u64 / 4096, 1).is_none());
        assert!(ReadRequest::new(i64::MAX as u64 / 4096 - 1, 1).is_some());
    }

    #[test]
    fn batch_slices_follow_request_order() {
        let reqs = [
            ReadRequest::new(5, 2).unwrap(),
            ReadRequest::new(1, 1).unwrap(),
        ];
        let mut buf = AlignedBuf::new();
        let plan = plan_batch(&reqs, &mut buf);
        assert_eq!(buf.len_sectors(), 3);
        assert_eq!(plan, vec![(5 * 4096, 8192, 0), (4096, 4096, 8192)]);
        let lens: Vec<usize> = batch_slices(&reqs, &buf).map(<[u8]>::len).collect();
        assert_eq!(lens, vec![8192, 4096]);
        assert_eq!(batch_slices(&reqs, &buf[..4096]).count(), 0);
    }

    #[test]
    fn io_progress_resubmits_short_reads_and_retries_eintr() {
        let mut p = Progress::new(4096, 3 * 4096);
        assert!(matches!(p.on_result(Ok(4096), true), Step::Again));
        assert_eq!(p.next_offset(), 8192);
        assert!(matches!(
            p.on_result(Err(Error::from(ErrorKind::Interrupted)), true),
            Step::Again
        ));
        assert!(matches!(
            p.on_result(Err(Error::from_raw_os_error(libc::EAGAIN)), true),
            Step::Again
        ));
        assert!(matches!(p.on_result(Ok(100), false), Step::Again));
        assert!(matches!(p.on_result(Ok(2 * 4096 - 100), false), Step::Done));
        // O_DIRECT: a short read ending inside a sector is the end of the file.
        let mut p = Progress::new(0, 2 * 4096);
        assert!(matches!(
            p.on_result(Ok(4096 + 10), true),
            Step::Fail(Failure::Eof { got: 4106 })
        ));
        // Zero bytes: end of file.
        let mut p = Progress::new(0, 4096);
        assert!(matches!(
            p.on_result(Ok(0), false),
            Step::Fail(Failure::Eof { got: 0 })
        ));
        // Too many bytes, other errors.
        let mut p = Progress::new(0, 4096);
        assert!(matches!(
            p.on_result(Ok(8192), false),
            Step::Fail(Failure::Io(_))
        ));
        let mut p = Progress::new(0, 4096);
        let f = match p.on_result(Err(Error::from_raw_os_error(libc::EIO)), false) {
            Step::Fail(f) => f,
            s => panic!("{s:?}"),
        };
        let e = p.error(Path::new("/x/data"), f);
        assert!(
            e.to_string().contains("/x/data") && e.to_string().contains("offset 0"),
            "{e}"
        );
        // Endless EINTR gives up.
        let mut p = Progress::new(0, 4096);
        let mut last = Step::Again;
        for _ in 0..=MAX_RETRIES {
            last = p.on_result(Err(Error::from(ErrorKind::Interrupted)), false);
        }
        assert!(matches!(last, Step::Fail(Failure::Io(_))));
    }
}

//! [`UringReader`]: io_uring reads, all requests of a batch in flight at once.
//!
//! A ring is not `Sync`, and a batch owns its ring from first submission to last completion.
//! Rings live in a pool (a `Mutex<Vec<Ring>>` free list): a batch pops a ring (or creates one
//! when all are busy), runs, and pushes it back. So there are as many rings as batches ever
//! were pending at the same time — query threads × queries in flight per thread — and they are
//! freed with the reader. A `thread_local!` ring per thread would avoid the (uncontended,
//! ~20 ns) lock but could not be freed when the reader is dropped and would keep rings on every
//! thread that ever read, which for tokio's blocking pool is an unbounded set.
//!
//! Within a batch, up to `queue_depth` reads are in flight; as completions arrive, the rest
//! of the batch, and the remainders of short reads, are submitted in their place.
//!
//! [`BlockReader::submit`] returns after the first wave is submitted; the batch is a
//! [`UringBatch`] state machine that [`PendingRead::try_complete`] advances without blocking
//! (reap the completion queue, push remainders, submit) and [`PendingRead::finish`] drives to
//! the end with `io_uring_enter(…, min_complete = 1)`. One ring per pending batch (rather than
//! one ring per thread holding many batches, told apart by `user_data`) keeps pending reads
//! independent: each can be polled, finished or dropped on its own, moved to another thread,
//! and a dropped one drains only its own reads. The price is that a thread waiting on several
//! batches cannot sleep until *any* of them completes; the search waits on its oldest batch,
//! which with batches of similar size is usually the next one to complete anyway (ADR 0006).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use io_uring::{IoUring, opcode, types};

use super::Failure;
use super::file::open_data_file;
use super::{
    AlignedBuf, BackendKind, BlockReader, InFlight, IoError, PendingRead, Progress, ReadRequest,
    ReadStats, ReaderInfo, ReaderOptions, Step, plan_batch,
};

/// One ring with the data file registered in it (or not, when registration was refused).
struct Ring {
    ring: IoUring,
    fixed: bool,
}

/// Reads batches with io_uring (see the module docs).
pub struct UringReader {
    // Rings are dropped before the file (field order), though registered files hold their own
    // reference anyway.
    rings: Mutex<Vec<Ring>>,
    /// Rings created over the reader's life (idle or held by a pending batch).
    rings_created: AtomicUsize,
    file: File,
    path: PathBuf,
    direct: bool,
    len_bytes: u64,
    depth: u32,
    info: ReaderInfo,
}

impl std::fmt::Debug for UringReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringReader")
            .field("path", &self.path)
            .field("info", &self.info)
            .finish()
    }
}

impl UringReader {
    /// Opens `path` (O_DIRECT when `options.direct` and the file system allows it), sets up a
    /// first ring of `options.queue_depth` entries and reads the first sector through it.
    /// `Setup`/`Unsupported` errors mean io_uring is not usable here (see [`super::open_reader`]).
    pub fn open(path: &Path, options: &ReaderOptions) -> Result<Self, IoError> {
        if options.uring_forced_off() {
            return Err(IoError::Unsupported {
                what: format!(
                    "io_uring (forced off by {}=1 or ReaderOptions::force_uring_failure)",
                    super::FORCE_FALLBACK_ENV
                ),
            });
        }
        let depth = options.queue_depth.clamp(1, 4096);
        let df = open_data_file(path, options.direct)?;
        let reader = Self {
            rings: Mutex::new(Vec::new()),
            rings_created: AtomicUsize::new(0),
            file: df.file,
            path: path.to_path_buf(),
            direct: df.direct,
            len_bytes: df.len_bytes,
            depth,
            info: ReaderInfo {
                backend: BackendKind::Uring,
                direct: df.direct,
                queue_depth: depth as usize,
                threads: 0,
                fallback_reason: None,
            },
        };
        // Probe: a ring, and one read through it (seccomp filters and gVisor may allow the
        // setup and refuse the operation).
        let ring = reader.new_ring()?;
        reader.put_ring(ring);
        if reader.len_bytes > 0 {
            const FIRST: ReadRequest = match ReadRequest::new(0, 1) {
                Some(r) => r,
                None => panic!("sector 0 is a valid request"),
            };
            let r = reader
                .submit(&[FIRST], AlignedBuf::with_sectors(1))
                .and_then(PendingRead::wait);
            match r {
                Ok(_) | Err(IoError::UnexpectedEof { .. }) => {}
                Err(IoError::Read { source, .. }) => {
                    return Err(IoError::Setup {
                        what: "io_uring probe read".into(),
                        source,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(reader)
    }

    fn new_ring(&self) -> Result<Ring, IoError> {
        let ring = IoUring::builder()
            .setup_cqsize(2 * self.depth)
            .build(self.depth)
            .map_err(|source| IoError::Setup {
                what: format!("io_uring ring of {} entries", self.depth),
                source,
            })?;
        let fixed = ring
            .submitter()
            .register_files(&[self.file.as_raw_fd()])
            .is_ok();
        self.rings_created.fetch_add(1, Ordering::Relaxed);
        Ok(Ring { ring, fixed })
    }

    fn take_ring(&self) -> Result<Ring, IoError> {
        let pooled = self
            .rings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match pooled {
            Some(r) => Ok(r),
            None => self.new_ring(),
        }
    }

    /// Returns a ring to the pool. Only a ring with nothing in flight and nothing queued in
    /// its submission queue may be returned (the next batch must not see foreign entries).
    fn put_ring(&self, ring: Ring) {
        self.rings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(ring);
    }

    /// Rings created so far (for tests).
    #[cfg(test)]
    pub(crate) fn rings_created(&self) -> usize {
        self.rings_created.load(Ordering::Relaxed)
    }

    /// Rings created so far and now idle (for tests).
    #[cfg(test)]
    pub(crate) fn idle_rings(&self) -> usize {
        self.rings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// One batch in flight on its own ring: the state of the read loop between calls.
///
/// Invariant: while `in_flight > 0` (entries pushed to the submission queue and not yet
/// reaped from the completion queue), the kernel may write into the regions
/// `buf + dst .. + len` of the items, so `buf` is neither read, resized nor dropped; `Drop`
/// waits for `in_flight == 0` before the fields (and `buf`) are dropped. `ring` is `Some`
/// until the batch is over, then back in the reader's pool.
struct UringBatch<'r> {
    reader: &'r UringReader,
    ring: Option<Ring>,
    /// (file offset, length, destination offset in `buf`), laid out by `plan_batch`.
    items: Vec<(u64, usize, usize)>,
    progress: Vec<Progress>,
    /// Next item never submitted.
    next: usize,
    /// Items whose remainder (short read, EINTR/EAGAIN) must be submitted again.
    again: Vec<usize>,
    in_flight: usize,
    /// The failed item with the smallest index; after an error nothing new is submitted.
    first_error: Option<(usize, IoError)>,
    /// Submit nothing new (an error happened, or the batch is being dropped).
    stop: bool,
    buf: AlignedBuf,
    stats: ReadStats,
}

impl UringBatch<'_> {
    /// Pushes entries for unsubmitted items and remainders while fewer than `depth` are in
    /// flight (unless stopped). They reach the kernel with the next `enter`.
    fn fill(&mut self) {
        let Some(ring) = self.ring.as_mut() else {
            return;
        };
        if self.stop {
            return;
        }
        let depth = self.reader.depth as usize;
        let fd = self.reader.file.as_raw_fd();
        let out = self.buf.as_mut_ptr();
        let mut sq = ring.ring.submission();
        while self.in_flight < depth {
            let i = match self.again.pop() {
                Some(i) => i,
                None if self.next < self.items.len() => {
                    self.next += 1;
                    self.next - 1
                }
                None => break,
            };
            let p = &self.progress[i];
            let dst = self.items[i].2 + p.done;
            let len = (p.len - p.done) as u32; // ≤ MAX_REQUEST_SECTORS · 4096 < 2³²
            // SAFETY: `plan_batch` sized `buf` to hold every item's region and `done < len`,
            // so `dst` is inside the allocation behind `out`.
            let ptr = unsafe { out.add(dst) };
            let entry = if ring.fixed {
                opcode::Read::new(types::Fixed(0), ptr, len)
            } else {
                opcode::Read::new(types::Fd(fd), ptr, len)
            }
            .offset(p.next_offset())
            .build()
            .user_data(i as u64);
            // SAFETY: the region `ptr .. + len` lies inside item `i`'s region of `buf`
            // (sector-aligned by `plan_batch`, disjoint from the other items' regions, and
            // item `i` has no other entry in flight). By the struct invariant `buf` stays
            // allocated and untouched until this entry's completion is reaped (`Drop` waits).
            // The SQ has room for `depth` entries and at most `depth` are in flight or queued.
            if unsafe { sq.push(&entry) }.is_err() {
                self.again.push(i);
                break;
            }
            self.in_flight += 1;
        }
    }

    /// Reaps every completion available, without blocking.
    fn reap(&mut self) {
        let Some(ring) = self.ring.as_mut() else {
            return;
        };
        for cqe in ring.ring.completion() {
            self.in_flight -= 1;
            let i = cqe.user_data() as usize;
            let res = cqe.result();
            let r = if res < 0 {
                Err(std::io::Error::from_raw_os_error(-res))
            } else {
                Ok(res as usize)
            };
            match self.progress[i].on_result(r, self.reader.direct) {
                Step::Done => {}
                Step::Again => self.again.push(i),
                Step::Fail(f) => {
                    self.stop = true;
                    if self.first_error.as_ref().is_none_or(|(j, _)| i < *j) {
                        self.first_error = Some((i, self.progress[i].error(&self.reader.path, f)));
                    }
                }
            }
        }
    }

    /// `io_uring_enter`: submits the queued entries and, with `wait`, sleeps until at least one
    /// completion is available. `false` when the kernel was busy or interrupted (try again).
    fn enter(&mut self, wait: bool) -> bool {
        let Some(ring) = self.ring.as_mut() else {
            return true;
        };
        match ring.ring.submit_and_wait(usize::from(wait)) {
            Ok(_) => true,
            Err(e) => match e.raw_os_error() {
                // Interrupted, or short of resources / completion space: reap and retry.
                Some(libc::EINTR | libc::EAGAIN | libc::EBUSY) => {
                    if wait {
                        std::thread::yield_now();
                    }
                    false
                }
                // Reads may be in flight into `buf`, so returning (or unwinding) could let the
                // kernel write into freed memory. This cannot happen for a valid ring
                // (io_uring_enter fails otherwise only on bad arguments), so it is treated as
                // a fatal bug.
                _ => std::process::abort(),
            },
        }
    }

    fn sq_empty(&mut self) -> bool {
        self.ring
            .as_mut()
            .is_none_or(|r| r.ring.submission().is_empty())
    }

    /// Called when nothing is in flight: notes a batch that could not be submitted completely
    /// (unreachable; checked so that a bug can never pass unread bytes off as a success) and
    /// returns the ring, which is empty, to the pool.
    fn release(&mut self) {
        debug_assert_eq!(self.in_flight, 0);
        if !self.stop && (self.next < self.items.len() || !self.again.is_empty()) {
            let i = self.again.last().copied().unwrap_or(self.next);
            self.stop = true;
            self.first_error = Some((
                i,
                self.progress[i].error(
                    &self.reader.path,
                    Failure::Io(std::io::Error::other("io_uring submission queue full")),
                ),
            ));
        }
        if let Some(ring) = self.ring.take() {
            self.reader.put_ring(ring);
        }
    }
}

impl InFlight for UringBatch<'_> {
    fn poll(&mut self) -> bool {
        loop {
            if self.ring.is_none() {
                return true;
            }
            self.reap();
            self.fill();
            if self.in_flight == 0 {
                self.release();
                return true;
            }
            if self.sq_empty() || !self.enter(false) {
                // Everything is with the device (or the kernel is busy): come back later.
                return false;
            }
            // Buffered reads may have completed during the submission: reap them.
        }
    }

    fn block(&mut self) {
        while self.ring.is_some() {
            self.reap();
            self.fill();
            if self.in_flight == 0 {
                self.release();
                return;
            }
            self.enter(true);
        }
    }

    fn take(&mut self) -> (AlignedBuf, Result<ReadStats, IoError>) {
        debug_assert!(self.ring.is_none());
        let result = match self.first_error.take() {
            Some((_, e)) => Err(e),
            None => Ok(self.stats),
        };
        (std::mem::take(&mut self.buf), result)
    }
}

impl Drop for UringBatch<'_> {
    fn drop(&mut self) {
        // Abandon what was not submitted, wait for what was: only then may `buf` be freed.
        // (Entries still in the SQ are submitted by `block` and waited for too: the ring goes
        // back to the pool, where the next batch must find it empty.)
        self.stop = true;
        self.block();
    }
}

impl BlockReader for UringReader {
    fn submit<'r>(
        &'r self,
        reqs: &[ReadRequest],
        mut buf: AlignedBuf,
    ) -> Result<PendingRead<'r>, IoError> {
        let items = plan_batch(reqs, &mut buf);
        if items.is_empty() {
            return Ok(PendingRead::ready(buf, Ok(ReadStats::default())));
        }
        let ring = self.take_ring()?;
        let mut batch = UringBatch {
            reader: self,
            ring: Some(ring),
            progress: items.iter().map(|&(o, l, _)| Progress::new(o, l)).collect(),
            items,
            next: 0,
            again: Vec::new(),
            in_flight: 0,
            first_error: None,
            stop: false,
            buf,
            stats: ReadStats::for_batch(reqs),
        };
        // Submit the first wave now, so the device works while the caller does other things.
        batch.poll();
        Ok(PendingRead::running(Box::new(batch)))
    }

    fn info(&self) -> &ReaderInfo {
        &self.info
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn len_bytes(&self) -> u64 {
        self.len_bytes
    }
}

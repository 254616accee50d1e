//! [`UringReader`]: io_uring reads, all requests of a batch in flight at once.
//!
//! A ring is not `Sync`, and a batch owns its ring from first submission to last completion.
//! Rings live in a pool (a `Mutex<Vec<Ring>>` free list): a batch pops a ring (or creates one
//! when all are busy), runs, and pushes it back. So there are as many rings as batches ever ran
//! at the same time — the number of query threads — and they are freed with the reader. A
//! `thread_local!` ring per thread would avoid the (uncontended, ~20 ns) lock but could not be
//! freed when the reader is dropped and would keep rings on every thread that ever read, which
//! for tokio's blocking pool is an unbounded set.
//!
//! Within a batch, up to `queue_depth` reads are in flight; as completions arrive, the rest
//! of the batch, and the remainders of short reads, are submitted in their place.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use io_uring::{IoUring, opcode, types};

use super::Failure;
use super::file::open_data_file;
use super::{
    AlignedBuf, BackendKind, BlockReader, IoError, Progress, ReadRequest, ReadStats, ReaderInfo,
    ReaderOptions, Step, plan_batch,
};
use crate::format::SECTOR_BYTES;

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
        let mut ring = reader.new_ring()?;
        if reader.len_bytes > 0 {
            let mut buf = AlignedBuf::with_sectors(1);
            let items = [(0u64, SECTOR_BYTES, 0usize)];
            // SAFETY: `buf` is valid for the one sector item 0 covers, and not otherwise
            // accessed during the call.
            let r = unsafe { reader.run(&mut ring, &items, buf.as_mut_ptr()) };
            match r {
                Ok(()) | Err(IoError::UnexpectedEof { .. }) => {}
                Err(IoError::Read { source, .. }) => {
                    return Err(IoError::Setup {
                        what: "io_uring probe read".into(),
                        source,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        reader.put_ring(ring);
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

    fn put_ring(&self, ring: Ring) {
        self.rings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(ring);
    }

    /// Rings created so far and now idle (for tests).
    #[cfg(test)]
    pub(crate) fn idle_rings(&self) -> usize {
        self.rings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Reads every item `(file offset, len, dst)` into `out + dst` through `ring`, keeping up to
    /// `depth` reads in flight, resubmitting remainders of short reads and EINTR/EAGAIN. Returns
    /// only when nothing is in flight. On error, submits nothing new, drains what is in flight,
    /// and returns the error of the failed item with the smallest index.
    ///
    /// # Safety
    ///
    /// `out` must be valid for writes of `dst + len` bytes for every item, the regions must be
    /// disjoint, and nothing else may access them during the call. With O_DIRECT, `out + dst`
    /// and `len` must be sector-aligned (they are, for regions of an [`AlignedBuf`] laid out by
    /// `plan_batch`).
    unsafe fn run(
        &self,
        ring: &mut Ring,
        items: &[(u64, usize, usize)],
        out: *mut u8,
    ) -> Result<(), IoError> {
        let mut progress: Vec<Progress> =
            items.iter().map(|&(o, l, _)| Progress::new(o, l)).collect();
        let mut next = 0usize;
        let mut again: Vec<usize> = Vec::new();
        let mut in_flight = 0usize;
        let mut first_error: Option<(usize, IoError)> = None;
        let depth = self.depth as usize;
        let fd = self.file.as_raw_fd();

        loop {
            if first_error.is_none() {
                let mut sq = ring.ring.submission();
                while in_flight < depth {
                    let i = match again.pop() {
                        Some(i) => i,
                        None if next < items.len() => {
                            next += 1;
                            next - 1
                        }
                        None => break,
                    };
                    let p = &progress[i];
                    let dst = items[i].2 + p.done;
                    let len = (p.len - p.done) as u32; // ≤ MAX_REQUEST_SECTORS · 4096 < 2³²
                    // SAFETY: `dst + len` stays inside item `i`'s region (`done < len`), which
                    // the caller guarantees valid.
                    let buf = unsafe { out.add(dst) };
                    let entry = if ring.fixed {
                        opcode::Read::new(types::Fixed(0), buf, len)
                    } else {
                        opcode::Read::new(types::Fd(fd), buf, len)
                    }
                    .offset(p.next_offset())
                    .build()
                    .user_data(i as u64);
                    // SAFETY: the buffer stays valid and unaliased until this entry completes:
                    // the caller guarantees that for the duration of `run`, and `run` returns
                    // only when `in_flight == 0`. The SQ has room: it holds `depth` entries and
                    // at most `depth` are in flight or queued.
                    if unsafe { sq.push(&entry) }.is_err() {
                        again.push(i);
                        break;
                    }
                    in_flight += 1;
                }
            }
            if in_flight == 0 {
                if first_error.is_none() && (next < items.len() || !again.is_empty()) {
                    // Unreachable: the SQ holds `depth` entries and fewer are in use. Checked
                    // so that a bug can never pass unread bytes off as a successful batch.
                    let i = again.last().copied().unwrap_or(next);
                    first_error = Some((
                        i,
                        progress[i].error(
                            &self.path,
                            Failure::Io(std::io::Error::other("io_uring submission queue full")),
                        ),
                    ));
                }
                break;
            }
            if let Err(e) = ring.ring.submit_and_wait(1) {
                match e.raw_os_error() {
                    // Interrupted, or short of resources / completion space: reap and retry.
                    Some(libc::EINTR | libc::EAGAIN | libc::EBUSY) => std::thread::yield_now(),
                    // Reads may be in flight into the caller's buffer, so returning (or
                    // unwinding) could let the kernel write into freed memory. This cannot
                    // happen for a valid ring (io_uring_enter fails otherwise only on bad
                    // arguments), so it is treated as a fatal bug.
                    _ => std::process::abort(),
                }
            }
            for cqe in ring.ring.completion() {
                in_flight -= 1;
                let i = cqe.user_data() as usize;
                let res = cqe.result();
                let r = if res < 0 {
                    Err(std::io::Error::from_raw_os_error(-res))
                } else {
                    Ok(res as usize)
                };
                match progress[i].on_result(r, self.direct) {
                    Step::Done => {}
                    Step::Again => again.push(i),
                    Step::Fail(f) => {
                        if first_error.as_ref().is_none_or(|(j, _)| i < *j) {
                            first_error = Some((i, progress[i].error(&self.path, f)));
                        }
                    }
                }
            }
        }
        match first_error {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }
}

impl BlockReader for UringReader {
    fn read_batch(&self, reqs: &[ReadRequest], out: &mut AlignedBuf) -> Result<ReadStats, IoError> {
        let items = plan_batch(reqs, out);
        if items.is_empty() {
            return Ok(ReadStats::default());
        }
        let mut ring = self.take_ring()?;
        // SAFETY: `plan_batch` sized `out` to the sum of the lengths and laid the items out
        // back to back from offset 0 of the sector-aligned buffer, so the regions are inside
        // `out`, disjoint and sector-aligned; `out` is borrowed mutably for the whole call.
        let r = unsafe { self.run(&mut ring, &items, out.as_mut_ptr()) };
        // `run` drained the ring even on error, so it is fit for reuse.
        self.put_ring(ring);
        r.map(|()| ReadStats::for_batch(reqs))
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

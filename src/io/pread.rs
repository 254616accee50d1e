//! [`PreadReader`]: `pread(2)` on a persistent pool of I/O threads. Always available.
//!
//! A batch is a shared work list: the calling thread and up to `threads` workers take requests
//! from it by an atomic counter until none is left, so a batch of `n` requests has up to
//! `min(n, threads + 1)` reads in flight. The caller reads too, so a batch progresses even when
//! every worker is busy with other queries' batches, and a worker that arrives after the last
//! request was taken leaves at once. A batch smaller than
//! [`ReaderOptions::pread_parallel_min`] is read by the calling thread alone.
//!
//! [`BlockReader::submit`] hands the whole batch to the workers and returns at once (with no
//! worker threads it reads the batch before returning). The returned [`PendingRead`] polls the
//! batch's `finished` counter (an atomic load); finishing it makes the caller take and read
//! the requests no worker has claimed yet and then sleep on the batch's condvar until the
//! workers' reads are done. Dropping it marks the batch failed (unclaimed requests are
//! skipped) and waits for the reads in progress.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use crossbeam::channel::{Receiver, Sender};

use super::file::open_data_file;
use super::{
    AlignedBuf, BackendKind, BlockReader, InFlight, IoError, PendingRead, Progress, ReadRequest,
    ReadStats, ReaderInfo, ReaderOptions, Step, plan_batch,
};

/// What the caller and the workers share about the file.
#[derive(Debug)]
struct Shared {
    file: File,
    path: PathBuf,
    direct: bool,
}

/// Reads batches with `pread` on a pool of I/O threads (see the module docs).
pub struct PreadReader {
    shared: Arc<Shared>,
    len_bytes: u64,
    /// `None` when the pool has no threads.
    tx: Option<Sender<Arc<Batch>>>,
    workers: Vec<JoinHandle<()>>,
    parallel_min: usize,
    info: ReaderInfo,
}

impl std::fmt::Debug for PreadReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreadReader")
            .field("path", &self.shared.path)
            .field("info", &self.info)
            .finish()
    }
}

impl PreadReader {
    /// Opens `path` (O_DIRECT when `options.direct` and the file system allows it) and starts
    /// `options.pread_threads` I/O threads.
    pub fn open(path: &Path, options: &ReaderOptions) -> Result<Self, IoError> {
        let df = open_data_file(path, options.direct)?;
        let shared = Arc::new(Shared {
            file: df.file,
            path: path.to_path_buf(),
            direct: df.direct,
        });
        let threads = options.pread_threads;
        let (tx, rx) = crossbeam::channel::unbounded::<Arc<Batch>>();
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let rx: Receiver<Arc<Batch>> = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("m3-pread-{i}"))
                .stack_size(256 * 1024)
                .spawn(move || {
                    for batch in rx.iter() {
                        batch.work();
                    }
                });
            match spawned {
                Ok(h) => workers.push(h),
                Err(source) => {
                    drop(tx);
                    for h in workers {
                        let _ = h.join();
                    }
                    return Err(IoError::Setup {
                        what: format!("pread I/O thread {i} of {threads}"),
                        source,
                    });
                }
            }
        }
        Ok(Self {
            shared,
            len_bytes: df.len_bytes,
            tx: (threads > 0).then_some(tx),
            workers,
            parallel_min: options.pread_parallel_min.max(2),
            info: ReaderInfo {
                backend: BackendKind::Pread,
                direct: df.direct,
                queue_depth: threads + 1,
                threads,
                fallback_reason: None,
            },
        })
    }

    pub(crate) fn set_fallback_reason(&mut self, reason: String) {
        self.info.fallback_reason = Some(reason);
    }
}

impl Drop for PreadReader {
    fn drop(&mut self) {
        // Closing the channel ends the workers' loops once they are idle.
        self.tx = None;
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

/// Reads `buf.len()` bytes at `offset` into `buf` with as many `pread`s as it takes.
fn read_full(
    read_at: &mut impl FnMut(&mut [u8], u64) -> std::io::Result<usize>,
    buf: &mut [u8],
    offset: u64,
    direct: bool,
    path: &Path,
) -> Result<(), IoError> {
    let mut p = Progress::new(offset, buf.len());
    loop {
        let r = read_at(&mut buf[p.done..], p.next_offset());
        match p.on_result(r, direct) {
            Step::Done => return Ok(()),
            Step::Again => {}
            Step::Fail(f) => return Err(p.error(path, f)),
        }
    }
}

fn read_item(shared: &Shared, buf: &mut [u8], offset: u64) -> Result<(), IoError> {
    read_full(
        &mut |b, o| shared.file.read_at(b, o),
        buf,
        offset,
        shared.direct,
        &shared.path,
    )
}

/// The output buffer of a batch, handed to worker threads.
#[derive(Clone, Copy)]
struct OutPtr(*mut u8);

// SAFETY: the pointer is only dereferenced under `Batch`'s invariant (disjoint regions, each
// written by exactly one thread, while the owner of the buffer waits).
unsafe impl Send for OutPtr {}
// SAFETY: as above; sharing the pointer value itself is harmless.
unsafe impl Sync for OutPtr {}

/// One batch as a work list shared by the calling thread and the workers.
///
/// Invariant (established by [`Batch::new`]'s caller): until `finished == items.len()`, `out`
/// is valid for writes of `dst + len` bytes for every item and nothing else accesses those
/// bytes. Each item index is claimed by exactly one thread through `next`, so each region is
/// written by one thread; after `finished` reaches the item count no thread touches `out`.
struct Batch {
    shared: Arc<Shared>,
    /// (file offset, length, destination offset in `out`), destinations disjoint.
    items: Vec<(u64, usize, usize)>,
    out: OutPtr,
    next: AtomicUsize,
    finished: AtomicUsize,
    failed: AtomicBool,
    /// The failed request with the smallest index, so errors do not depend on scheduling.
    error: Mutex<Option<(usize, IoError)>>,
    wake: Mutex<()>,
    all_done: Condvar,
}

impl Batch {
    /// # Safety
    ///
    /// `out` must be valid for writes of `dst + len` bytes for every `(_, len, dst)` in `items`,
    /// the regions must be disjoint, and nothing else may access them (nor free them) until
    /// every item is finished ([`Batch::wait`] has returned or [`Batch::is_finished`] is true).
    unsafe fn new(shared: Arc<Shared>, items: Vec<(u64, usize, usize)>, out: *mut u8) -> Self {
        Self {
            shared,
            items,
            out: OutPtr(out),
            next: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
            error: Mutex::new(None),
            wake: Mutex::new(()),
            all_done: Condvar::new(),
        }
    }

    /// Takes and reads items until none is left. After an error the remaining items are skipped.
    fn work(&self) {
        let n = self.items.len();
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                return;
            }
            if !self.failed.load(Ordering::Relaxed) {
                let (offset, len, dst) = self.items[i];
                // SAFETY: by the struct invariant, `out + dst .. + len` is valid, and item `i`
                // was claimed by this thread alone (`fetch_add`), so no other reference to
                // this region exists; `finished` has not reached `n` since `i` is unfinished.
                let buf = unsafe { std::slice::from_raw_parts_mut(self.out.0.add(dst), len) };
                if let Err(e) = read_item(&self.shared, buf, offset) {
                    self.failed.store(true, Ordering::Relaxed);
                    let mut slot = self.error.lock().unwrap_or_else(PoisonError::into_inner);
                    if slot.as_ref().is_none_or(|(j, _)| i < *j) {
                        *slot = Some((i, e));
                    }
                }
            }
            // Release: the bytes written above happen before the caller sees the count.
            if self.finished.fetch_add(1, Ordering::AcqRel) + 1 == n {
                let _guard = self.wake.lock().unwrap_or_else(PoisonError::into_inner);
                self.all_done.notify_all();
            }
        }
    }

    /// Every item is finished (read, failed or skipped); no thread touches `out` any more.
    fn is_finished(&self) -> bool {
        // Acquire: pairs with the workers' AcqRel increments, so their bytes are visible.
        self.finished.load(Ordering::Acquire) == self.items.len()
    }

    /// The first error by request index, if any.
    fn take_error(&self) -> Option<IoError> {
        self.error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .map(|(_, e)| e)
    }

    /// Blocks until every item is finished (read, failed or skipped).
    fn wait(&self) {
        let n = self.items.len();
        if self.finished.load(Ordering::Acquire) == n {
            return;
        }
        let mut guard = self.wake.lock().unwrap_or_else(PoisonError::into_inner);
        while self.finished.load(Ordering::Acquire) < n {
            guard = self
                .all_done
                .wait(guard)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// A batch handed to the I/O threads by [`PreadReader::submit`].
///
/// Invariant: `batch.out` points into `buf`'s allocation, and `buf` is neither read, resized
/// nor dropped until `batch.is_finished()`; `Drop` abandons the unclaimed requests and waits
/// for the claimed ones before the fields (and `buf`) are dropped.
struct PreadPending {
    batch: Arc<Batch>,
    buf: AlignedBuf,
    stats: ReadStats,
}

impl InFlight for PreadPending {
    fn poll(&mut self) -> bool {
        self.batch.is_finished()
    }

    fn block(&mut self) {
        // Read what no worker has claimed yet on this thread, which would only wait otherwise.
        self.batch.work();
        self.batch.wait();
    }

    fn take(&mut self) -> (AlignedBuf, Result<ReadStats, IoError>) {
        debug_assert!(self.batch.is_finished());
        let r = match self.batch.take_error() {
            Some(e) => Err(e),
            None => Ok(self.stats),
        };
        (std::mem::take(&mut self.buf), r)
    }
}

impl Drop for PreadPending {
    fn drop(&mut self) {
        if !self.batch.is_finished() {
            // Skip the requests nobody started (claiming each is a counter increment), then
            // wait for the reads in progress: only then may `buf` be freed.
            self.batch.failed.store(true, Ordering::Relaxed);
            self.batch.work();
            self.batch.wait();
        }
    }
}

impl BlockReader for PreadReader {
    fn submit<'r>(
        &'r self,
        reqs: &[ReadRequest],
        mut buf: AlignedBuf,
    ) -> Result<PendingRead<'r>, IoError> {
        let items = plan_batch(reqs, &mut buf);
        let stats = ReadStats::for_batch(reqs);
        let tx = match &self.tx {
            Some(tx) if !items.is_empty() => tx,
            _ => {
                // Empty batch, or no I/O threads: read it now on the calling thread.
                let r = items.iter().try_for_each(|&(offset, len, dst)| {
                    read_item(&self.shared, &mut buf[dst..dst + len], offset)
                });
                return Ok(PendingRead::ready(buf, r.map(|()| stats)));
            }
        };
        // SAFETY: `plan_batch` sized `buf` to the sum of the lengths and laid the items out
        // back to back from 0, so every region is inside `buf` and disjoint. `buf` moves into
        // the `PreadPending` below (moving it does not move its heap allocation), which does
        // not touch it until the batch is finished and waits for that in `Drop`.
        let batch = Arc::new(unsafe { Batch::new(self.shared.clone(), items, buf.as_mut_ptr()) });
        let helpers = self.info.threads.min(batch.items.len());
        for _ in 0..helpers {
            // A send fails only when the workers are gone; `finish` then reads on the caller.
            if tx.send(batch.clone()).is_err() {
                break;
            }
        }
        Ok(PendingRead::running(Box::new(PreadPending {
            batch,
            buf,
            stats,
        })))
    }

    fn read_batch(&self, reqs: &[ReadRequest], out: &mut AlignedBuf) -> Result<ReadStats, IoError> {
        let items = plan_batch(reqs, out);
        let stats = ReadStats::for_batch(reqs);
        let tx = match &self.tx {
            Some(tx) if items.len() >= self.parallel_min => tx,
            _ => {
                for &(offset, len, dst) in &items {
                    read_item(&self.shared, &mut out[dst..dst + len], offset)?;
                }
                return Ok(stats);
            }
        };
        // SAFETY: `plan_batch` sized `out` to the sum of the lengths and laid the items out
        // back to back from 0, so every region is inside `out` and disjoint. `out` is borrowed
        // mutably for this whole call and not touched until `batch.wait()` below has returned.
        let batch = Arc::new(unsafe { Batch::new(self.shared.clone(), items, out.as_mut_ptr()) });
        let helpers = self.info.threads.min(batch.items.len() - 1);
        for _ in 0..helpers {
            // A send fails only when the workers are gone; the caller then reads alone.
            if tx.send(batch.clone()).is_err() {
                break;
            }
        }
        batch.work();
        batch.wait();
        let error = batch
            .error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match error {
            Some((_, e)) => Err(e),
            None => Ok(stats),
        }
    }

    fn info(&self) -> &ReaderInfo {
        &self.info
    }

    fn path(&self) -> &Path {
        &self.shared.path
    }

    fn len_bytes(&self) -> u64 {
        self.len_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    /// A fake `pread` over `data` that returns at most `chunk` bytes per call and fails with
    /// EINTR / EAGAIN on every third call.
    fn flaky(
        data: &[u8],
        chunk: usize,
    ) -> impl FnMut(&mut [u8], u64) -> std::io::Result<usize> + '_ {
        let mut calls = 0u32;
        move |buf, off| {
            calls += 1;
            match calls % 3 {
                1 => return Err(Error::from(ErrorKind::Interrupted)),
                2 if calls.is_multiple_of(2) => return Err(Error::from_raw_os_error(libc::EAGAIN)),
                _ => {}
            }
            let off = off as usize;
            let n = buf.len().min(chunk).min(data.len().saturating_sub(off));
            buf[..n].copy_from_slice(&data[off..off + n]);
            Ok(n)
        }
    }

    #[test]
    fn io_pread_loop_resubmits_short_reads_and_retries_eintr_eagain() {
        let data: Vec<u8> = (0..5 * 4096).map(|i| (i % 253) as u8).collect();
        let path = Path::new("/fake");
        for chunk in [1, 100, 4096, 5000] {
            let mut buf = vec![0u8; 3 * 4096];
            read_full(&mut flaky(&data, chunk), &mut buf, 4096, false, path).unwrap();
            assert_eq!(&buf[..], &data[4096..4 * 4096], "chunk {chunk}");
        }
        // Aligned short reads are fine with O_DIRECT too.
        let mut buf = vec![0u8; 3 * 4096];
        read_full(&mut flaky(&data, 4096), &mut buf, 0, true, path).unwrap();
        assert_eq!(&buf[..], &data[..3 * 4096]);
        // The file ends inside the request.
        let mut buf = vec![0u8; 2 * 4096];
        let e = read_full(&mut flaky(&data, 1000), &mut buf, 4 * 4096, false, path).unwrap_err();
        assert!(
            matches!(
                e,
                IoError::UnexpectedEof {
                    offset: 16384,
                    expected: 8192,
                    got: 4096,
                    ..
                }
            ),
            "{e:?}"
        );
    }
}

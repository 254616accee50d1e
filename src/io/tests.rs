//! The test battery every backend runs (STYLE 11): random batches checked byte by byte,
//! reads past the end of the file, empty batches, 8 threads at once, and a property test.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

/// Whole sectors of the test file; a 100-byte tail follows them.
const FILE_SECTORS: u64 = 300;
const TAIL_BYTES: usize = 100;

/// Byte `j` of sector `s`: the sector index (u64 LE) in the first 8 bytes, then a pattern of
/// both, so a sector read from the wrong place or a shifted copy is caught.
fn pattern(s: u64, j: usize) -> u8 {
    if j < 8 {
        s.to_le_bytes()[j]
    } else {
        ((s * 7 + j as u64 * 13) % 251) as u8
    }
}

fn expected_sector(s: u64) -> Vec<u8> {
    (0..SECTOR_BYTES).map(|j| pattern(s, j)).collect()
}

fn write_test_file(dir: &Path) -> PathBuf {
    let path = dir.join("data.m3");
    let mut bytes = Vec::with_capacity(FILE_SECTORS as usize * SECTOR_BYTES + TAIL_BYTES);
    for s in 0..FILE_SECTORS {
        bytes.extend(expected_sector(s));
    }
    bytes.extend((0..TAIL_BYTES).map(|j| pattern(FILE_SECTORS, j)));
    std::fs::write(&path, bytes).unwrap();
    path
}

fn req(first: u64, sectors: u32) -> ReadRequest {
    ReadRequest::new(first, sectors).unwrap()
}

/// A random batch of 1..=200 requests of 1..=8 sectors inside the whole sectors of the file,
/// with repeated and adjacent requests mixed in.
fn random_batch(rng: &mut impl Rng) -> Vec<ReadRequest> {
    let n = rng.random_range(1..=200usize);
    let mut reqs: Vec<ReadRequest> = Vec::with_capacity(n);
    for _ in 0..n {
        let r = match (reqs.last(), rng.random_range(0..10)) {
            (Some(&prev), 0) => prev,
            (Some(prev), 1) if prev.first_sector() + prev.sectors() as u64 + 8 <= FILE_SECTORS => {
                req(
                    prev.first_sector() + prev.sectors() as u64,
                    rng.random_range(1..=8),
                )
            }
            _ => {
                let sectors = rng.random_range(1..=8u32);
                req(rng.random_range(0..=FILE_SECTORS - sectors as u64), sectors)
            }
        };
        reqs.push(r);
    }
    reqs
}

/// Checks every byte of a filled batch buffer against the file's pattern.
fn check_batch(reqs: &[ReadRequest], out: &AlignedBuf, stats: ReadStats) -> Result<(), String> {
    let sectors = batch_sectors(reqs);
    if out.len_sectors() != sectors {
        return Err(format!(
            "buffer has {} sectors, batch {sectors}",
            out.len_sectors()
        ));
    }
    let want = ReadStats {
        reads: reqs.len() as u64,
        sectors: sectors as u64,
        bytes: (sectors * SECTOR_BYTES) as u64,
        rounds: u64::from(!reqs.is_empty()),
    };
    if stats != want {
        return Err(format!("stats {stats:?}, expected {want:?}"));
    }
    let mut n = 0;
    for (r, got) in reqs.iter().zip(batch_slices(reqs, out)) {
        n += 1;
        for (k, sector) in got.chunks(SECTOR_BYTES).enumerate() {
            let s = r.first_sector() + k as u64;
            if sector != expected_sector(s).as_slice() {
                return Err(format!("request {r:?}: sector {s} has wrong bytes"));
            }
        }
    }
    if n != reqs.len() {
        return Err(format!("{n} slices for {} requests", reqs.len()));
    }
    Ok(())
}

fn random_batches_read_every_byte(reader: &dyn BlockReader) {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut out = AlignedBuf::new();
    for _ in 0..40 {
        let reqs = random_batch(&mut rng);
        let stats = reader.read_batch(&reqs, &mut out).unwrap();
        check_batch(&reqs, &out, stats).unwrap();
    }
    // The whole file in one request, and every sector once in one batch.
    let all = [req(0, FILE_SECTORS as u32)];
    let stats = reader.read_batch(&all, &mut out).unwrap();
    check_batch(&all, &out, stats).unwrap();
    let each: Vec<ReadRequest> = (0..FILE_SECTORS).rev().map(|s| req(s, 1)).collect();
    let stats = reader.read_batch(&each, &mut out).unwrap();
    check_batch(&each, &out, stats).unwrap();
}

fn past_eof_is_an_error_naming_path_and_offset(reader: &dyn BlockReader) {
    let path = reader.path().to_path_buf();
    let mut out = AlignedBuf::new();
    // The partial last sector: 100 bytes, then the end.
    let e = reader
        .read_batch(&[req(0, 1), req(FILE_SECTORS, 1)], &mut out)
        .unwrap_err();
    match &e {
        IoError::UnexpectedEof {
            path: p,
            offset,
            expected,
            got,
        } => {
            assert_eq!(
                (p, *offset, *expected, *got),
                (&path, FILE_SECTORS * 4096, 4096, TAIL_BYTES as u64)
            );
        }
        other => panic!("expected UnexpectedEof, got {other:?}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("1228800"),
        "{msg}"
    );
    // A request that starts in the file and runs past its end.
    let e = reader
        .read_batch(&[req(FILE_SECTORS - 2, 8)], &mut out)
        .unwrap_err();
    assert!(
        matches!(
            e,
            IoError::UnexpectedEof {
                offset: 1_220_608,
                expected: 32_768,
                got: 8292,
                ..
            }
        ),
        "{e:?}"
    );
    // Far past the end, inside a large batch: the error is the first failing request's.
    let mut reqs: Vec<ReadRequest> = (0..150).map(|s| req(s, 1)).collect();
    reqs[70] = req(10_000, 2);
    reqs[120] = req(20_000, 1);
    let e = reader.read_batch(&reqs, &mut out).unwrap_err();
    assert!(
        matches!(
            e,
            IoError::UnexpectedEof {
                offset: 40_960_000,
                expected: 8192,
                got: 0,
                ..
            }
        ),
        "{e:?}"
    );
    // The reader is still usable.
    let ok = [req(5, 3), req(0, 1)];
    let stats = reader.read_batch(&ok, &mut out).unwrap();
    check_batch(&ok, &out, stats).unwrap();
}

fn empty_batch_is_ok(reader: &dyn BlockReader) {
    let mut out = AlignedBuf::with_sectors(4);
    let stats = reader.read_batch(&[], &mut out).unwrap();
    assert_eq!(stats, ReadStats::default());
    assert_eq!(out.len(), 0);
}

fn concurrent_from_8_threads(reader: &dyn BlockReader) {
    std::thread::scope(|scope| {
        for t in 0..8u64 {
            scope.spawn(move || {
                let mut rng = ChaCha8Rng::seed_from_u64(100 + t);
                let mut out = AlignedBuf::new();
                for _ in 0..15 {
                    let reqs = random_batch(&mut rng);
                    let stats = reader.read_batch(&reqs, &mut out).unwrap();
                    check_batch(&reqs, &out, stats).unwrap();
                }
            });
        }
    });
}

fn property_random_batches(reader: &dyn BlockReader) {
    let strategy = prop::collection::vec((0..FILE_SECTORS, 1..=8u32), 0..=200).prop_map(|v| {
        v.into_iter()
            .map(|(first, sectors)| req(first.min(FILE_SECTORS - sectors as u64), sectors))
            .collect::<Vec<_>>()
    });
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let out = std::cell::RefCell::new(AlignedBuf::new());
    runner
        .run(&strategy, |reqs| {
            let out = &mut *out.borrow_mut();
            let stats = reader
                .read_batch(&reqs, out)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            check_batch(&reqs, out, stats).map_err(TestCaseError::fail)?;
            Ok(())
        })
        .unwrap();
}

/// Checks a completed pending read of `reqs` (buffer and stats).
fn check_pending(reqs: &[ReadRequest], pending: PendingRead<'_>) -> Result<(), String> {
    let (buf, stats) = pending.wait().map_err(|e| e.to_string())?;
    check_batch(reqs, &buf, stats)
}

/// 32 batches pending at once from one thread, completed in an order other than submission:
/// first by polling (`try_complete`) whichever is done, then by waiting on the rest in a
/// shuffled order. Every byte of every batch is checked.
fn many_pending_from_one_thread(reader: &dyn BlockReader) {
    use rand::seq::SliceRandom;
    let mut rng = ChaCha8Rng::seed_from_u64(32);
    for round in 0..3 {
        let mut pending: Vec<(usize, Vec<ReadRequest>, PendingRead<'_>)> = (0..32)
            .map(|i| {
                let mut reqs = random_batch(&mut rng);
                reqs.truncate(rng.random_range(1..=64));
                // Reuse buffers of different sizes, as a searcher would.
                let buf = AlignedBuf::with_sectors(rng.random_range(0..40));
                let p = reader.submit(&reqs, buf).unwrap();
                (i, reqs, p)
            })
            .collect();
        let mut order = Vec::new();
        // Poll for a while: complete whatever is done, in completion order.
        for _ in 0..(round * 200) {
            let mut k = 0;
            while k < pending.len() {
                if pending[k].2.try_complete() {
                    let (i, reqs, p) = pending.swap_remove(k);
                    check_pending(&reqs, p).unwrap();
                    order.push(i);
                } else {
                    k += 1;
                }
            }
            if pending.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_micros(20));
        }
        // Wait on the rest in a random order.
        pending.shuffle(&mut rng);
        for (i, reqs, mut p) in pending {
            check_pending(&reqs, {
                // Polling after completion keeps saying "done".
                p.block();
                assert!(p.try_complete() && p.is_done());
                p
            })
            .unwrap();
            order.push(i);
        }
        assert_eq!(order.len(), 32);
        if round == 0 {
            assert_ne!(
                order,
                (0..32).collect::<Vec<_>>(),
                "completed in submission order"
            );
        }
    }
    // The reader still works the blocking way.
    let mut out = AlignedBuf::new();
    let reqs = random_batch(&mut rng);
    let stats = reader.read_batch(&reqs, &mut out).unwrap();
    check_batch(&reqs, &out, stats).unwrap();
}

/// Pending reads dropped before completion (right after submission, after some polling,
/// large batches that need several waves) wait for their reads; nothing leaks into later
/// batches, and the reader keeps working.
fn drop_before_complete(reader: &dyn BlockReader) {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let whole: Vec<ReadRequest> = (0..FILE_SECTORS).rev().map(|s| req(s, 1)).collect();
    for k in 0..20 {
        let a = reader.submit(&whole, AlignedBuf::new()).unwrap();
        let reqs = random_batch(&mut rng);
        let mut b = reader.submit(&reqs, AlignedBuf::new()).unwrap();
        if k % 2 == 1 {
            let _ = b.try_complete();
        }
        let c = reader.submit(&reqs, AlignedBuf::new()).unwrap();
        drop(a);
        drop(b);
        // A batch submitted before the drops completes correctly.
        check_pending(&reqs, c).unwrap();
    }
    // Errors while dropping (a request past the end) are dropped too.
    let bad = [req(0, 1), req(FILE_SECTORS + 10, 1), req(1, 1)];
    drop(reader.submit(&bad, AlignedBuf::new()).unwrap());
    // Leaking a pending read is safe: its buffer is leaked with it.
    std::mem::forget(reader.submit(&[req(3, 2)], AlignedBuf::new()).unwrap());
    random_batches_read_every_byte(reader);
}

/// Errors come out of the pending read exactly as out of `read_batch`, with the buffer.
fn submit_errors_name_path_and_offset(reader: &dyn BlockReader) {
    let mut reqs: Vec<ReadRequest> = (0..150).map(|s| req(s, 1)).collect();
    reqs[70] = req(10_000, 2);
    reqs[120] = req(20_000, 1);
    let ok: Vec<ReadRequest> = (0..40).map(|s| req(s * 5, 3)).collect();
    let p_ok = reader.submit(&ok, AlignedBuf::new()).unwrap();
    let p_bad = reader.submit(&reqs, AlignedBuf::new()).unwrap();
    let (buf, r) = p_bad.finish();
    assert_eq!(buf.len_sectors(), 151, "the buffer comes back on error");
    match r.unwrap_err() {
        IoError::UnexpectedEof {
            path,
            offset: 40_960_000,
            expected: 8192,
            got: 0,
        } => assert_eq!(path, reader.path()),
        e => panic!("{e:?}"),
    }
    check_pending(&ok, p_ok).unwrap();
    // Empty batches complete at once.
    let mut p = reader.submit(&[], AlignedBuf::with_sectors(3)).unwrap();
    assert!(p.try_complete());
    let (buf, stats) = p.wait().unwrap();
    assert_eq!((buf.len(), stats), (0, ReadStats::default()));
}

/// 8 threads, each keeping 8 batches pending.
fn concurrent_pending_from_8_threads(reader: &dyn BlockReader) {
    std::thread::scope(|scope| {
        for t in 0..8u64 {
            scope.spawn(move || {
                let mut rng = ChaCha8Rng::seed_from_u64(200 + t);
                let mut window: std::collections::VecDeque<(Vec<ReadRequest>, PendingRead<'_>)> =
                    std::collections::VecDeque::new();
                for _ in 0..40 {
                    let reqs = random_batch(&mut rng);
                    let p = reader.submit(&reqs, AlignedBuf::new()).unwrap();
                    window.push_back((reqs, p));
                    if window.len() == 8 {
                        let (reqs, p) = window.pop_front().unwrap();
                        check_pending(&reqs, p).unwrap();
                    }
                }
                for (reqs, p) in window {
                    check_pending(&reqs, p).unwrap();
                }
            });
        }
    });
}

/// Opens a uring reader, or `None` (with a message) when the kernel refuses io_uring here.
fn uring_or_skip(path: &Path, options: &ReaderOptions) -> Option<UringReader> {
    match UringReader::open(path, options) {
        Ok(r) => Some(r),
        Err(e @ (IoError::Setup { .. } | IoError::Unsupported { .. })) => {
            crate::testing::skip(
                crate::testing::Requirement::Uring,
                format!("io_uring is not available here: {e}"),
            );
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// Runs the battery against the backend `open` builds for a test file (`None`: skipped).
macro_rules! battery {
    ($name:ident, $open:expr) => {
        mod $name {
            use super::*;

            fn with_reader(check: impl FnOnce(&dyn BlockReader)) {
                let dir = tempfile::tempdir().unwrap();
                let path = write_test_file(dir.path());
                let open: fn(&Path) -> Option<Box<dyn BlockReader>> = $open;
                if let Some(reader) = open(&path) {
                    assert_eq!(reader.path(), path);
                    assert_eq!(reader.len_bytes(), FILE_SECTORS * 4096 + TAIL_BYTES as u64);
                    check(&*reader);
                }
            }

            #[test]
            fn io_random_batches_read_every_byte() {
                with_reader(random_batches_read_every_byte);
            }

            #[test]
            fn io_past_eof_is_an_error_naming_path_and_offset() {
                with_reader(past_eof_is_an_error_naming_path_and_offset);
            }

            #[test]
            fn io_empty_batch_is_ok() {
                with_reader(empty_batch_is_ok);
            }

            #[test]
            fn io_concurrent_from_8_threads() {
                with_reader(concurrent_from_8_threads);
            }

            #[test]
            fn io_property_random_batches() {
                with_reader(property_random_batches);
            }

            #[test]
            fn io_many_pending_from_one_thread() {
                with_reader(many_pending_from_one_thread);
            }

            #[test]
            fn io_drop_before_complete() {
                with_reader(drop_before_complete);
            }

            #[test]
            fn io_submit_errors_name_path_and_offset() {
                with_reader(submit_errors_name_path_and_offset);
            }

            #[test]
            fn io_concurrent_pending_from_8_threads() {
                with_reader(concurrent_pending_from_8_threads);
            }
        }
    };
}

fn boxed<R: BlockReader + 'static>(r: R) -> Option<Box<dyn BlockReader>> {
    Some(Box::new(r))
}

battery!(pread_direct, |p| {
    let r = PreadReader::open(p, &ReaderOptions::default()).unwrap();
    assert_eq!(r.info().backend, BackendKind::Pread);
    boxed(r)
});
battery!(pread_buffered, |p| {
    let opts = ReaderOptions {
        direct: false,
        ..ReaderOptions::default()
    };
    let r = PreadReader::open(p, &opts).unwrap();
    assert!(!r.info().direct);
    boxed(r)
});
battery!(pread_no_threads, |p| {
    let opts = ReaderOptions {
        pread_threads: 0,
        ..ReaderOptions::default()
    };
    boxed(PreadReader::open(p, &opts).unwrap())
});
battery!(uring_direct, |p| {
    let r = uring_or_skip(p, &ReaderOptions::default())?;
    assert_eq!(r.info().backend, BackendKind::Uring);
    boxed(r)
});
battery!(uring_buffered, |p| {
    let opts = ReaderOptions {
        direct: false,
        ..ReaderOptions::default()
    };
    let r = uring_or_skip(p, &opts)?;
    assert!(!r.info().direct);
    boxed(r)
});
battery!(uring_ring_of_4, |p| {
    // Batches of up to 200 requests go through a ring of 4 entries in waves.
    let opts = ReaderOptions {
        queue_depth: 4,
        ..ReaderOptions::default()
    };
    boxed(uring_or_skip(p, &opts)?)
});
battery!(faulty_without_faults, |p| {
    let inner = PreadReader::open(p, &ReaderOptions::default()).unwrap();
    boxed(FaultyReader::new(inner, []))
});
battery!(auto_forced_fallback, |p| {
    let opts = ReaderOptions {
        force_uring_failure: true,
        ..ReaderOptions::default()
    };
    let r = open_reader(p, IoBackend::Auto, &opts).unwrap();
    assert_eq!(r.info().backend, BackendKind::Pread);
    let reason = r.info().fallback_reason.clone().unwrap();
    assert!(
        reason.contains("forced off") && !reason.contains('\n'),
        "{reason}"
    );
    Some(Box::new(r))
});

#[test]
fn io_direct_is_used_where_the_file_system_allows_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_test_file(dir.path());
    let on_tmpfs = std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 2 && f[2] == "tmpfs" && dir.path().starts_with(f[1]) && f[1] != "/"
        });
    let r = PreadReader::open(&path, &ReaderOptions::default()).unwrap();
    if on_tmpfs {
        eprintln!("temp dir is on tmpfs: O_DIRECT not expected");
    } else {
        assert!(r.info().direct, "O_DIRECT refused on {}", path.display());
    }
}

/// tmpfs refused O_DIRECT before Linux 6.6 and accepts it (as a no-op) since; either way both
/// backends must read correctly there. The refusal path itself is tested in `file.rs`.
#[test]
fn io_tmpfs_files_read_correctly_with_or_without_o_direct() {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("SKIPPED: no /dev/shm");
        return;
    }
    let dir = tempfile::tempdir_in(shm).unwrap();
    let path = write_test_file(dir.path());
    let opts = ReaderOptions::default();
    let mut readers: Vec<Box<dyn BlockReader>> =
        vec![Box::new(PreadReader::open(&path, &opts).unwrap())];
    if let Some(u) = uring_or_skip(&path, &opts) {
        readers.push(Box::new(u));
    }
    for r in &readers {
        eprintln!(
            "{} on tmpfs: direct = {}",
            r.info().backend,
            r.info().direct
        );
        random_batches_read_every_byte(&**r);
        past_eof_is_an_error_naming_path_and_offset(&**r);
    }
}

#[test]
fn io_open_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.m3");
    for backend in [IoBackend::Auto, IoBackend::Uring, IoBackend::Pread] {
        match open_reader(&missing, backend, &ReaderOptions::default()) {
            Err(IoError::Open { path, source }) => {
                assert_eq!(path, missing);
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            Err(IoError::Setup { .. } | IoError::Unsupported { .. })
                if backend == IoBackend::Uring => {}
            Err(e) => panic!("{backend:?}: {e:?}"),
            Ok(_) => panic!("{backend:?}: opened a missing file"),
        }
    }
}

#[test]
fn io_auto_prefers_uring_and_explicit_uring_fails_when_forced_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_test_file(dir.path());
    let auto = open_reader(&path, IoBackend::Auto, &ReaderOptions::default()).unwrap();
    match auto.info().backend {
        BackendKind::Uring => assert_eq!(auto.info().fallback_reason, None),
        BackendKind::Pread => crate::testing::skip(
            crate::testing::Requirement::Uring,
            format!(
                "auto fell back to pread: {}",
                auto.info().fallback_reason.as_deref().unwrap()
            ),
        ),
    }
    let forced = ReaderOptions {
        force_uring_failure: true,
        ..ReaderOptions::default()
    };
    let e = open_reader(&path, IoBackend::Uring, &forced).unwrap_err();
    assert!(matches!(e, IoError::Unsupported { .. }), "{e:?}");
    let p = open_reader(&path, IoBackend::Pread, &forced).unwrap();
    assert_eq!(p.info().fallback_reason, None);
}

#[test]
fn io_uring_pool_holds_one_ring_per_concurrent_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_test_file(dir.path());
    let Some(r) = uring_or_skip(&path, &ReaderOptions::default()) else {
        return;
    };
    assert_eq!(r.idle_rings(), 1);
    concurrent_from_8_threads(&r);
    assert!(
        (1..=8).contains(&r.idle_rings()),
        "{} rings",
        r.idle_rings()
    );
}

#[test]
fn io_uring_pending_reads_hold_one_ring_each_and_give_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_test_file(dir.path());
    let Some(r) = uring_or_skip(&path, &ReaderOptions::default()) else {
        return;
    };
    assert_eq!(r.idle_rings(), 1);
    let reqs: Vec<ReadRequest> = (0..50).map(|s| req(s * 2, 2)).collect();
    let pending: Vec<PendingRead<'_>> = (0..32)
        .map(|_| r.submit(&reqs, AlignedBuf::new()).unwrap())
        .collect();
    // A batch that completed while later ones were submitted gave its ring back for reuse;
    // the others each hold one.
    let created = r.rings_created();
    assert!((1..=32).contains(&created), "{created} rings");
    assert!(r.idle_rings() < created, "pending batches hold rings");
    let mut pending = pending.into_iter();
    // Dropped and finished pending reads both return their rings, drained.
    for p in pending.by_ref().take(16) {
        drop(p);
    }
    for p in pending {
        check_pending(&reqs, p).unwrap();
    }
    assert_eq!(r.idle_rings(), r.rings_created());
    many_pending_from_one_thread(&r);
    assert_eq!(r.idle_rings(), r.rings_created());
    assert!(r.rings_created() <= 32);
}

/// Faults through `submit`: counted in submission order, surfaced by the pending read that
/// holds the faulty request whatever the completion order, for both backends.
#[test]
fn io_faulty_reader_faults_surface_through_pending_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_test_file(dir.path());
    let mut inners: Vec<Box<dyn BlockReader>> = vec![Box::new(
        PreadReader::open(&path, &ReaderOptions::default()).unwrap(),
    )];
    if let Some(u) = uring_or_skip(&path, &ReaderOptions::default()) {
        inners.push(Box::new(u));
    }
    for inner in inners {
        let faults = [
            Fault {
                at_read: 5,
                kind: FaultKind::Error,
            },
            Fault {
                at_read: 13,
                kind: FaultKind::Short,
            },
            Fault {
                at_read: 17,
                kind: FaultKind::Error,
            },
        ];
        let r = FaultyReader::new(inner, faults);
        let reqs: Vec<ReadRequest> = (0..10).map(|i| req(i * 3, 2)).collect();
        // Reads 0..10, 10..20, 20..30 pending at once; completed last to first.
        let p0 = r.submit(&reqs, AlignedBuf::new()).unwrap();
        let p1 = r.submit(&reqs, AlignedBuf::new()).unwrap();
        let mut p2 = r.submit(&reqs, AlignedBuf::new()).unwrap();
        assert_eq!(r.reads_seen(), 30);
        while !p2.try_complete() {
            std::thread::yield_now();
        }
        check_pending(&reqs, p2).unwrap();
        let (buf, e) = p1.finish();
        let e = e.unwrap_err();
        assert!(
            matches!(
                e,
                IoError::UnexpectedEof {
                    offset: 36_864,
                    expected: 8192,
                    got: 4096,
                    ..
                }
            ),
            "{e:?}"
        );
        // The short request's missing sector was overwritten, as a short read would leave it.
        assert!(buf[3 * 8192 + 4096..4 * 8192].iter().all(|&b| b == 0xA5));
        match p0.wait().unwrap_err() {
            IoError::Read {
                path: p,
                offset,
                len,
                source,
            } => {
                assert_eq!((&p, offset, len), (&path, 15 * 4096, 8192));
                assert_eq!(source.to_string(), "injected fault");
            }
            other => panic!("{other:?}"),
        }
        // A faulty pending read dropped unfinished is fine; the reader recovers.
        drop(r.submit(&reqs, AlignedBuf::new()).unwrap());
        let stats = r.read_batch(&reqs, &mut AlignedBuf::new());
        assert!(stats.is_ok());
        assert_eq!(r.reads_seen(), 50);
    }
}

#[test]
fn io_faulty_reader_errors_surface_and_the_reader_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_test_file(dir.path());
    let inner = PreadReader::open(&path, &ReaderOptions::default()).unwrap();
    let faults = [
        Fault {
            at_read: 5,
            kind: FaultKind::Error,
        },
        Fault {
            at_read: 13,
            kind: FaultKind::Short,
        },
        Fault {
            at_read: 17,
            kind: FaultKind::Error,
        },
    ];
    let r = FaultyReader::new(inner, faults);
    let reqs: Vec<ReadRequest> = (0..10).map(|i| req(i * 3, 2)).collect();
    let mut out = AlignedBuf::new();
    // Reads 0..10: read 5 fails.
    let e = r.read_batch(&reqs, &mut out).unwrap_err();
    match &e {
        IoError::Read {
            path: p,
            offset,
            len,
            source,
        } => {
            assert_eq!((p, *offset, *len), (&path, 15 * 4096, 8192));
            assert_eq!(source.to_string(), "injected fault");
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains(&path.display().to_string()));
    // Reads 10..20: 13 is short and comes before 17.
    let e = r.read_batch(&reqs, &mut out).unwrap_err();
    assert!(
        matches!(
            e,
            IoError::UnexpectedEof {
                offset: 36_864,
                expected: 8192,
                got: 4096,
                ..
            }
        ),
        "{e:?}"
    );
    // Reads 20..30: clean.
    let stats = r.read_batch(&reqs, &mut out).unwrap();
    check_batch(&reqs, &out, stats).unwrap();
    assert_eq!(r.reads_seen(), 30);
}

#[test]
fn io_faulty_reader_under_concurrency_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_test_file(dir.path());
    let inner = open_reader(&path, IoBackend::Auto, &ReaderOptions::default()).unwrap();
    let faults = (0..2000).step_by(37).map(|at_read| Fault {
        at_read,
        kind: if at_read % 2 == 0 {
            FaultKind::Error
        } else {
            FaultKind::Short
        },
    });
    let r = FaultyReader::new(inner, faults);
    let (ok, failed) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8u64)
            .map(|t| {
                let r = &r;
                scope.spawn(move || {
                    let mut rng = ChaCha8Rng::seed_from_u64(t);
                    let mut out = AlignedBuf::new();
                    let (mut ok, mut failed) = (0, 0);
                    for _ in 0..10 {
                        let n = rng.random_range(1..=20);
                        let reqs: Vec<ReadRequest> =
                            (0..n).map(|_| req(rng.random_range(0..290), 2)).collect();
                        match r.read_batch(&reqs, &mut out) {
                            Ok(stats) => {
                                check_batch(&reqs, &out, stats).unwrap();
                                ok += 1;
                            }
                            Err(IoError::Read { .. } | IoError::UnexpectedEof { .. }) => {
                                failed += 1
                            }
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    });
    assert_eq!(ok + failed, 80);
    assert!(failed > 0 && ok > 0, "ok {ok}, failed {failed}");
}

/// Runs in a child process with `M3_IO_FORCE_FALLBACK=1` (see the next test); a no-op when the
/// variable is not set.
#[test]
fn io_env_fallback_child() {
    if std::env::var_os(FORCE_FALLBACK_ENV).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = write_test_file(dir.path());
    let r = open_reader(&path, IoBackend::Auto, &ReaderOptions::default()).unwrap();
    assert_eq!(r.info().backend, BackendKind::Pread);
    assert!(
        r.info()
            .fallback_reason
            .as_deref()
            .unwrap()
            .contains(FORCE_FALLBACK_ENV)
    );
    random_batches_read_every_byte(&*r);
}

#[test]
fn io_env_var_forces_the_pread_fallback() {
    // The variable is set only in a child process: setting it here would race other tests.
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "io::tests::io_env_fallback_child", "--nocapture"])
        .env(FORCE_FALLBACK_ENV, "1")
        .status()
        .unwrap();
    assert!(status.success());
}

//! Random-read throughput of the block readers (O_DIRECT), pread vs io_uring, at batch sizes
//! (queue depths) 1, 4, 16, 64, on a 256 MiB file under the target directory: 4 KiB reads
//! (one sector, `block_reader_4k_random`, throughput in reads = IOPS) and 32 KiB reads (eight
//! sectors, the size M³ issues when it coalesces a record's neighbouring sectors,
//! `block_reader_32k_random`, throughput in bytes).
//!
//! `cargo bench --bench block_reader`. Results beside the device's fio figures:
//! `docs/BENCHMARKS.md` ("Micro-benchmarks"); the defaults they decided:
//! `docs/decisions/0003-block-readers.md`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use m3::io::{AlignedBuf, BlockReader, IoBackend, ReadRequest, ReaderOptions, open_reader};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const FILE_BYTES: u64 = 256 << 20;
const SECTORS: u64 = FILE_BYTES / 4096;

/// The bench file, written once with non-zero bytes (a sparse file would not touch the disk).
fn bench_file() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("block_reader_bench.bin");
    if std::fs::metadata(&path).map(|m| m.len()).ok() != Some(FILE_BYTES) {
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8 + 1).collect();
        for _ in 0..FILE_BYTES >> 20 {
            f.write_all(&chunk).unwrap();
        }
        f.sync_all().unwrap();
    }
    path
}

fn bench_reader(
    c: &mut Criterion,
    name: &str,
    reader: Arc<dyn BlockReader>,
    depths: &[usize],
    sectors: u32,
) {
    let mut group = c.benchmark_group(format!("block_reader_{}k_random", sectors * 4));
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    for &depth in depths {
        let mut rng = ChaCha8Rng::seed_from_u64(depth as u64);
        let mut out = AlignedBuf::new();
        group.throughput(if sectors == 1 {
            Throughput::Elements(depth as u64)
        } else {
            Throughput::Bytes(depth as u64 * sectors as u64 * 4096)
        });
        group.bench_function(BenchmarkId::new(name, format!("qd={depth}")), |b| {
            b.iter(|| {
                let reqs: Vec<ReadRequest> = (0..depth)
                    .map(|_| {
                        let first = rng.random_range(0..SECTORS - sectors as u64);
                        ReadRequest::new(first, sectors).unwrap()
                    })
                    .collect();
                reader.read_batch(&reqs, &mut out).unwrap()
            })
        });
    }
    group.finish();
}

fn block_readers(c: &mut Criterion) {
    let path = bench_file();
    let depths = [1, 4, 16, 64];
    let uring = open_reader(&path, IoBackend::Uring, &ReaderOptions::default());
    match uring {
        Ok(r) => {
            assert!(
                r.info().direct,
                "O_DIRECT refused: numbers would measure the page cache"
            );
            bench_reader(c, "uring", r.clone(), &depths, 1);
            bench_reader(c, "uring", r, &depths, 8);
        }
        Err(e) => eprintln!("io_uring not available, skipped: {e}"),
    }
    let pread = open_reader(&path, IoBackend::Pread, &ReaderOptions::default()).unwrap();
    assert!(pread.info().direct);
    let name = format!("pread-t{}", pread.info().threads);
    bench_reader(c, &name, pread.clone(), &depths, 1);
    bench_reader(c, &name, pread, &depths, 8);
    for threads in [8, 32] {
        let opts = ReaderOptions {
            pread_threads: threads,
            ..ReaderOptions::default()
        };
        let r = open_reader(&path, IoBackend::Pread, &opts).unwrap();
        bench_reader(c, &format!("pread-t{threads}"), r, &[16, 64], 1);
    }
}

criterion_group!(benches, block_readers);
criterion_main!(benches);

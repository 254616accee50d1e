//! The per-record state of the assign stage, sorted into index order (cluster, key, id) within
//! a memory bound: an external merge sort whose runs are zstd-compressed files.
//!
//! Each record is `20 + M` bytes: cluster, key (f32), id, correction (f32), error (f32), then
//! its M-byte PQ code, little-endian. Records are buffered; when the buffer reaches
//! `run_records`, it is sorted and written as one run (a zstd stream) into a scratch directory
//! beside the index output. `finish_into` merges the runs (k-way, a binary heap on the sort
//! key) and hands the records, in order, to a sink (the build writes them straight into
//! `pq.m3`, `keys.m3` and a scratch file of record ids). Without any spill the buffer is sorted in memory. The order is a
//! total order on (cluster, key bits, id) and (cluster, id) is unique, so both paths give the
//! same stream, byte for byte.
//!
//! Memory: the buffer (`run_records × (20 + M)` bytes) and one read buffer per run during the
//! merge; the sorted records are never all in RAM.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;

use super::BuildError;

/// zstd level of the runs (1: the fastest; the records are mostly PQ codes, see the docs).
const ZSTD_LEVEL: i32 = 1;

/// The sorted columns (tests).
#[cfg(test)]
#[derive(Debug)]
pub struct SortedRecords {
    pub clusters: Vec<u32>,
    pub ids: Vec<u32>,
    pub keys: Vec<f32>,
    pub codes: Vec<u8>,
    pub correction: Vec<f32>,
    pub error: Vec<f32>,
    pub spill: SpillReport,
}

/// What spilling did (all zero when everything fit).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SpillReport {
    /// Sorted runs spilled to disk (0 when the records fit in RAM).
    pub runs: u64,
    /// Record bytes written to runs, before compression.
    pub raw_bytes: u64,
    /// The same bytes after zstd compression (what the runs take on disk).
    pub compressed_bytes: u64,
    /// Seconds spent sorting, compressing and writing runs.
    pub write_seconds: f64,
    /// Seconds spent merging the runs.
    pub merge_seconds: f64,
}

/// Buffers records and spills sorted, compressed runs past `run_records`.
pub struct RecordSorter {
    m: usize,
    rec_bytes: usize,
    run_records: usize,
    buf: Vec<u8>,
    dir: PathBuf,
    runs: Vec<PathBuf>,
    report: SpillReport,
}

impl RecordSorter {
    /// `m` code bytes; spill runs of `run_records` records into `dir` (created on the first
    /// spill, removed when the sorter is dropped).
    pub fn new(m: usize, run_records: usize, dir: PathBuf) -> Self {
        Self {
            m,
            rec_bytes: 20 + m,
            run_records: run_records.max(1),
            buf: Vec::new(),
            dir,
            runs: Vec::new(),
            report: SpillReport::default(),
        }
    }

    /// Bytes one buffered record takes.
    pub fn record_bytes(m: usize) -> usize {
        20 + m
    }

    pub fn push(
        &mut self,
        cluster: u32,
        key: f32,
        id: u32,
        correction: f32,
        error: f32,
        code: &[u8],
    ) -> Result<(), BuildError> {
        debug_assert_eq!(code.len(), self.m);
        self.buf.extend_from_slice(&cluster.to_le_bytes());
        self.buf.extend_from_slice(&key.to_le_bytes());
        self.buf.extend_from_slice(&id.to_le_bytes());
        self.buf.extend_from_slice(&correction.to_le_bytes());
        self.buf.extend_from_slice(&error.to_le_bytes());
        self.buf.extend_from_slice(code);
        if self.buf.len() >= self.run_records.saturating_mul(self.rec_bytes) {
            self.spill()?;
        }
        Ok(())
    }

    fn io(path: &Path) -> impl Fn(std::io::Error) -> BuildError + '_ {
        move |source| BuildError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// The buffer's records sorted by the index order, as one byte vector.
    fn sorted_buffer(&mut self) -> Vec<u8> {
        let rb = self.rec_bytes;
        let n = self.buf.len() / rb;
        let buf = &self.buf;
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.par_sort_unstable_by(|&a, &b| {
            compare(
                &buf[a as usize * rb..a as usize * rb + 12],
                &buf[b as usize * rb..b as usize * rb + 12],
            )
        });
        let mut out = Vec::with_capacity(buf.len());
        for &i in &order {
            out.extend_from_slice(&buf[i as usize * rb..(i as usize + 1) * rb]);
        }
        self.buf.clear();
        out
    }

    fn spill(&mut self) -> Result<(), BuildError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let start = Instant::now();
        std::fs::create_dir_all(&self.dir).map_err(Self::io(&self.dir))?;
        let sorted = self.sorted_buffer();
        let path = self.dir.join(format!("run-{:05}.zst", self.runs.len()));
        let file = File::create(&path).map_err(Self::io(&path))?;
        let mut enc =
            zstd::Encoder::new(BufWriter::new(file), ZSTD_LEVEL).map_err(Self::io(&path))?;
        enc.write_all(&sorted).map_err(Self::io(&path))?;
        enc.finish()
            .and_then(|mut w| w.flush())
            .map_err(Self::io(&path))?;
        self.report.runs += 1;
        self.report.raw_bytes += sorted.len() as u64;
        self.report.compressed_bytes += std::fs::metadata(&path).map_err(Self::io(&path))?.len();
        self.report.write_seconds += start.elapsed().as_secs_f64();
        self.runs.push(path);
        Ok(())
    }

    /// Hands every record to `sink` in index order and returns what spilling did. Without a
    /// spill the records go straight from the buffer through a sorted permutation (no sorted
    /// copy); otherwise the runs are merged, one record at a time.
    pub fn finish_into(
        mut self,
        sink: &mut dyn FnMut(SortedRecord<'_>) -> Result<(), BuildError>,
    ) -> Result<SpillReport, BuildError> {
        if self.runs.is_empty() {
            let rb = self.rec_bytes;
            let n = self.buf.len() / rb;
            let buf = std::mem::take(&mut self.buf);
            let mut order: Vec<u32> = (0..n as u32).collect();
            order.par_sort_unstable_by(|&a, &b| {
                compare(
                    &buf[a as usize * rb..a as usize * rb + 12],
                    &buf[b as usize * rb..b as usize * rb + 12],
                )
            });
            for &i in &order {
                sink(SortedRecord::parse(
                    &buf[i as usize * rb..(i as usize + 1) * rb],
                ))?;
            }
        } else {
            self.spill()?;
            let start = Instant::now();
            let mut readers: Vec<(Box<dyn Read>, PathBuf)> = Vec::with_capacity(self.runs.len());
            for path in &self.runs {
                let file = File::open(path).map_err(Self::io(path))?;
                let dec = zstd::Decoder::with_buffer(BufReader::with_capacity(1 << 16, file))
                    .map_err(Self::io(path))?;
                readers.push((Box::new(dec), path.clone()));
            }
            merge_sorted(readers, self.rec_bytes, sink)?;
            self.report.merge_seconds = start.elapsed().as_secs_f64();
        }
        Ok(std::mem::take(&mut self.report))
    }

    /// All records in index order, as columns (the tests' view of [`Self::finish_into`]).
    #[cfg(test)]
    pub fn finish(self) -> Result<SortedRecords, BuildError> {
        let m = self.m;
        let mut cols = SortedRecords {
            clusters: Vec::new(),
            ids: Vec::new(),
            keys: Vec::new(),
            codes: Vec::new(),
            correction: Vec::new(),
            error: Vec::new(),
            spill: SpillReport::default(),
        };
        cols.spill = self.finish_into(&mut |r| {
            cols.clusters.push(r.cluster);
            cols.keys.push(r.key);
            cols.ids.push(r.id);
            cols.correction.push(r.correction);
            cols.error.push(r.error);
            cols.codes.extend_from_slice(r.code);
            Ok(())
        })?;
        debug_assert_eq!(cols.codes.len(), cols.ids.len() * m);
        Ok(cols)
    }
}

/// Merges streams of records of `rec_bytes` bytes, each already in index order, into `sink`
/// in index order (k-way, a binary heap on the sort key). A stream that ends inside a record
/// is an error naming its path.
pub fn merge_sorted(
    mut readers: Vec<(Box<dyn Read>, PathBuf)>,
    rec_bytes: usize,
    sink: &mut dyn FnMut(SortedRecord<'_>) -> Result<(), BuildError>,
) -> Result<(), BuildError> {
    let mut heap = BinaryHeap::with_capacity(readers.len());
    for (r, (dec, path)) in readers.iter_mut().enumerate() {
        let mut rec = vec![0u8; rec_bytes];
        if read_record(dec, &mut rec, path)? {
            heap.push(Head { rec, run: r });
        }
    }
    while let Some(Head { mut rec, run }) = heap.pop() {
        sink(SortedRecord::parse(&rec))?;
        let (dec, path) = &mut readers[run];
        if read_record(dec, &mut rec, path)? {
            heap.push(Head { rec, run });
        }
    }
    Ok(())
}

/// One record of the sorted stream, borrowed from the sorter.
#[derive(Debug, Clone, Copy)]
pub struct SortedRecord<'a> {
    pub cluster: u32,
    pub key: f32,
    pub id: u32,
    pub correction: f32,
    pub error: f32,
    /// The M-byte PQ code.
    pub code: &'a [u8],
}

impl<'a> SortedRecord<'a> {
    fn parse(rec: &'a [u8]) -> Self {
        Self {
            cluster: u32_at(rec, 0),
            key: f32_at(rec, 4),
            id: u32_at(rec, 8),
            correction: f32_at(rec, 12),
            error: f32_at(rec, 16),
            code: &rec[20..],
        }
    }
}

impl Drop for RecordSorter {
    fn drop(&mut self) {
        if !self.runs.is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Reads one record; `false` at the clean end of the run.
fn read_record(r: &mut impl Read, rec: &mut [u8], path: &Path) -> Result<bool, BuildError> {
    let mut got = 0;
    while got < rec.len() {
        match r.read(&mut rec[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => {
                return Err(BuildError::Io {
                    path: path.to_path_buf(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "sort run ends inside a record",
                    ),
                });
            }
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(BuildError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    }
    Ok(true)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn f32_at(b: &[u8], at: usize) -> f32 {
    f32::from_bits(u32_at(b, at))
}

/// Index order: cluster, then key (total order), then id.
fn compare(a: &[u8], b: &[u8]) -> Ordering {
    u32_at(a, 0)
        .cmp(&u32_at(b, 0))
        .then(f32_at(a, 4).total_cmp(&f32_at(b, 4)))
        .then(u32_at(a, 8).cmp(&u32_at(b, 8)))
}

/// A run's next record in the merge heap (a max-heap, so the order is reversed; ties, which
/// cannot occur for distinct records, go to the lower run).
struct Head {
    rec: Vec<u8>,
    run: usize,
}

impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        compare(&other.rec, &self.rec).then(other.run.cmp(&self.run))
    }
}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Head {}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// (cluster, key, id, correction, error, code)
    type Rec = (u32, f32, u32, f32, f32, Vec<u8>);

    fn records(n: usize, m: usize, seed: u64) -> Vec<Rec> {
        // A deterministic scramble: few clusters, repeated keys (ties broken by id).
        (0..n)
            .map(|i| {
                let h = (i as u64 ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let cluster = (h % 7) as u32;
                let key = ((h >> 8) % 5) as f32 * 0.5;
                let code = (0..m).map(|j| (h >> (j % 50)) as u8).collect();
                (cluster, key, i as u32, i as f32, -(i as f32), code)
            })
            .collect()
    }

    fn sort_with(run_records: usize, recs: &[Rec], m: usize, dir: &Path) -> SortedRecords {
        let mut s = RecordSorter::new(m, run_records, dir.to_path_buf());
        for r in recs {
            s.push(r.0, r.1, r.2, r.3, r.4, &r.5).unwrap();
        }
        s.finish().unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn spilled_runs_merge_to_the_in_memory_sort(
            n in 1usize..3000, m in 1usize..24, run in 1usize..700, seed in 0u64..1000,
        ) {
            let tmp = tempfile::tempdir().unwrap();
            let recs = records(n, m, seed);
            let a = sort_with(usize::MAX, &recs, m, &tmp.path().join("a"));
            let b = sort_with(run, &recs, m, &tmp.path().join("b"));
            prop_assert_eq!(a.spill.runs, 0);
            // Runs only once the buffer first fills; the rest then goes out as a last run.
            prop_assert_eq!(b.spill.runs as usize, if n >= run { n.div_ceil(run) } else { 0 });
            prop_assert_eq!(&a.clusters, &b.clusters);
            prop_assert_eq!(&a.ids, &b.ids);
            prop_assert_eq!(&a.codes, &b.codes);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&a.keys), bits(&b.keys));
            prop_assert_eq!(bits(&a.correction), bits(&b.correction));
            prop_assert_eq!(bits(&a.error), bits(&b.error));
            // Index order, and every record's fields travelled together.
            for i in 1..n {
                let prev = (a.clusters[i - 1], a.keys[i - 1], a.ids[i - 1]);
                let cur = (a.clusters[i], a.keys[i], a.ids[i]);
                prop_assert!(prev.0 < cur.0 || (prev.0 == cur.0 && (prev.1 < cur.1 || (prev.1 == cur.1 && prev.2 < cur.2))));
            }
            for i in 0..n {
                let id = a.ids[i] as usize;
                prop_assert_eq!(a.correction[i], id as f32);
                prop_assert_eq!(&a.codes[i * m..(i + 1) * m], &recs[id].5[..]);
            }
            // The scratch directory is gone once the sorter is done.
            prop_assert!(!tmp.path().join("b").exists());
        }
    }

    #[test]
    fn a_truncated_run_is_an_error_not_a_panic() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("runs");
        let mut s = RecordSorter::new(4, 10, dir.clone());
        for (c, k, id, co, e, code) in records(25, 4, 1) {
            s.push(c, k, id, co, e, &code).unwrap();
        }
        // Two runs are on disk; cut the first one short (a valid zstd frame of a partial record).
        let run0 = dir.join("run-00000.zst");
        let short = zstd::encode_all(&[1u8, 2, 3][..], 1).unwrap();
        std::fs::write(&run0, short).unwrap();
        let err = s.finish().unwrap_err();
        assert!(err.to_string().contains("run-00000.zst"), "{err}");
    }
}

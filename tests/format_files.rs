//! Round trips and corruption of every index file kind (`docs/FORMAT.md`).

mod format_support;

use std::path::Path;

use format_support::*;
use m3::data::DType;
use m3::format::files::*;
use m3::format::header::COMMON_HEADER_BYTES;
use m3::format::*;
use proptest::prelude::*;

type Reader = fn(&Path) -> Result<(), FormatError>;

fn read_clusters(p: &Path) -> Result<(), FormatError> {
    ClusterTable::read(p).map(drop)
}
fn read_routing(p: &Path) -> Result<(), FormatError> {
    Routing::read(p).map(drop)
}
fn read_stats(p: &Path) -> Result<(), FormatError> {
    Stats::read(p).map(drop)
}
fn read_pq(p: &Path) -> Result<(), FormatError> {
    PqFile::read(p).map(drop)
}
fn read_manifest(p: &Path) -> Result<(), FormatError> {
    Manifest::read(p).map(drop)
}
fn read_sectors(p: &Path) -> Result<(), FormatError> {
    SectorCrcs::read(p).map(drop)
}
fn read_data(p: &Path) -> Result<(), FormatError> {
    DataFileHeader::read(p).map(drop)
}

/// An index in a temp dir: its directory and manifest.
fn index() -> (tempfile::TempDir, std::path::PathBuf, Manifest) {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("idx");
    let m = publish_index(&target);
    (tmp, target, m)
}

/// Each small file, its reader, and the `*_offset` fields of its header (file offsets).
fn small_files() -> Vec<(&'static str, Reader, Vec<usize>)> {
    let offs = |t: Vec<(&'static str, usize, usize)>| {
        t.into_iter()
            .filter(|(n, _, _)| n.ends_with("_offset"))
            .map(|(_, o, _)| o)
            .collect::<Vec<_>>()
    };
    vec![
        (MANIFEST_FILE, read_manifest as Reader, vec![]),
        (
            CLUSTERS_FILE,
            read_clusters,
            offs(ClustersHeader::layout_table()),
        ),
        (
            ROUTING_FILE,
            read_routing,
            offs(RoutingHeader::layout_table()),
        ),
        (STATS_FILE, read_stats, offs(StatsHeader::layout_table())),
        (PQ_FILE, read_pq, offs(PqHeader::layout_table())),
        (SECTORS_FILE, read_sectors, vec![]),
        (DATA_FILE, read_data, vec![]),
    ]
}

#[test]
fn format_small_files_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (table, _) = write_data(dir.path());
    let p = dir.path().join("c.m3");
    let e = table.write(&p).unwrap();
    assert_eq!(ClusterTable::read(&p).unwrap(), table);
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(e.bytes, bytes.len() as u64);
    assert_eq!(e.crc32c, crc32c::crc32c(&bytes));
    assert_eq!(e.name_str(), Some("c.m3"));

    for k in [0, 3] {
        let r = sample_routing(5, k);
        r.write(&p).unwrap();
        assert_eq!(Routing::read(&p).unwrap(), r);
    }
    let s = sample_stats(6);
    s.write(&p).unwrap();
    assert_eq!(Stats::read(&p).unwrap(), s);
    for n in [0, 1, 50] {
        let q = sample_pq(7, n);
        q.write(&p).unwrap();
        assert_eq!(PqFile::read(&p).unwrap(), q);
    }
    let crcs = SectorCrcs {
        crcs: vec![1, 2, 3],
    };
    crcs.write(&p).unwrap();
    assert_eq!(SectorCrcs::read(&p).unwrap(), crcs);
    let m = Manifest {
        meta: sample_meta(6, 2),
        files: vec![
            FileEntry::new("a.m3", 1, 2).unwrap(),
            FileEntry::new("b", 3, 4).unwrap(),
        ],
    };
    let me = m.write(&p).unwrap();
    assert_eq!(Manifest::read(&p).unwrap(), m);
    assert_eq!(me.bytes as usize, COMMON_HEADER_BYTES + 104 + 2 * 48);
}

/// `pq.m3` and `keys.m3` streamed record by record (as the build writes them) are the same
/// bytes, and the same manifest entry, as the whole-file writers; a short stream is refused.
#[test]
fn format_streamed_pq_and_keys_equal_the_whole_file_writers() {
    let dir = tempfile::tempdir().unwrap();
    let (whole, streamed) = (dir.path().join("whole.m3"), dir.path().join("pq.m3"));
    for n in [0, 1, 50, 3001] {
        let q = sample_pq(7, n);
        let want = q.write(&whole).unwrap();
        let mut w =
            PqFile::writer(&streamed, &q.bounds, &q.codebooks, n as u64, q.residual).unwrap();
        for r in 0..n {
            w.push(q.codes.row(r), q.correction[r], q.error[r]).unwrap();
        }
        let got = w.finish().unwrap();
        assert_eq!(
            (got.bytes, got.crc32c),
            (want.bytes, want.crc32c),
            "n = {n}"
        );
        assert_eq!(
            std::fs::read(&streamed).unwrap(),
            std::fs::read(&whole).unwrap()
        );
        assert_eq!(PqFile::read(&streamed).unwrap(), q);

        let keys = RecordKeys {
            keys: (0..n).map(|i| i as f32 * 0.25).collect(),
        };
        let want = keys.write(&whole).unwrap();
        let mut w = RecordKeys::writer(&dir.path().join("keys.m3"), n as u64).unwrap();
        for &k in &keys.keys {
            w.push(k).unwrap();
        }
        let got = w.finish().unwrap();
        assert_eq!(
            (got.bytes, got.crc32c),
            (want.bytes, want.crc32c),
            "n = {n}"
        );
        assert_eq!(RecordKeys::read(&dir.path().join("keys.m3")).unwrap(), keys);
    }
    let q = sample_pq(7, 4);
    let mut w = PqFile::writer(&streamed, &q.bounds, &q.codebooks, 4, true).unwrap();
    w.push(q.codes.row(0), 0.0, 0.0).unwrap();
    assert!(
        w.push(&[1, 2], 0.0, 0.0).is_err(),
        "a code of the wrong length"
    );
    assert!(matches!(w.finish(), Err(FormatError::Invalid { .. })));
}

#[test]
fn format_writers_refuse_inconsistent_input() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x");
    let mut q = sample_pq(1, 4);
    q.bounds = vec![0, 30, 25, 50];
    assert!(matches!(q.write(&p), Err(FormatError::Invalid { .. })));
    let mut s = sample_stats(1);
    s.query_var.pop();
    assert!(matches!(s.write(&p), Err(FormatError::Invalid { .. })));
    assert!(FileEntry::new("../x", 0, 0).is_err());
    assert!(FileEntry::new(&"x".repeat(33), 0, 0).is_err());
}

#[test]
fn format_data_file_round_trip() {
    let (_tmp, dir, m) = index();
    let path = dir.join(DATA_FILE);
    let h = DataFileHeader::read(&path).unwrap();
    assert_eq!(
        (h.dim, h.max_degree, h.n_records, h.data_sectors),
        (DIM, R, N_RECORDS, 6)
    );
    assert_eq!(h.record_bytes, 336);
    assert_eq!(h.layout().records_per_sector(), 12);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), 7 * SECTOR_BYTES);
    assert_eq!(m.file(DATA_FILE).unwrap().crc32c, crc32c::crc32c(&bytes));
    assert!(
        bytes[72..SECTOR_BYTES].iter().all(|&b| b == 0),
        "header sector padding"
    );
    let table = ClusterTable::read(&dir.join(CLUSTERS_FILE)).unwrap();
    let codec = h.codec().unwrap();
    let mut used = vec![false; bytes.len()];
    for g in 0..N_RECORDS {
        let loc = locate_record(&table.entries, h.layout(), g).unwrap();
        let off = loc.file_offset() as usize;
        let rec = codec.decode(&bytes[off..], &path, off as u64).unwrap();
        assert_eq!(rec.vector::<f32>().unwrap(), record_vector(g));
        assert_eq!(rec.id() as u64, g % N_VECTORS);
        assert_eq!(rec.neighbours().collect::<Vec<_>>(), record_neighbours(g));
        used[off..off + 336].iter_mut().for_each(|u| *u = true);
    }
    assert!(locate_record(&table.entries, h.layout(), N_RECORDS).is_none());
    // Cluster 2 (13 records) starts on data sector 3, i.e. file sector 4.
    assert_eq!(
        locate_record(&table.entries, h.layout(), 30)
            .unwrap()
            .file_sector,
        4
    );
    assert_eq!(
        locate_record(&table.entries, h.layout(), 42)
            .unwrap()
            .file_sector,
        5
    );
    // Everything that is not a record in a data sector is zero.
    for (i, (&b, &u)) in bytes.iter().zip(&used).enumerate().skip(SECTOR_BYTES) {
        assert!(u || b == 0, "byte {i} outside records is {b}");
    }
    let crcs = SectorCrcs::read(&dir.join(SECTORS_FILE)).unwrap();
    let want: Vec<u32> = bytes[SECTOR_BYTES..]
        .chunks(SECTOR_BYTES)
        .map(crc32c::crc32c)
        .collect();
    assert_eq!(crcs.crcs, want);
}

#[test]
fn format_data_writer_checks_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let params = DataFileParams {
        dim: 3,
        dtype: DType::U8,
        max_degree: 2,
        cluster_sizes: &[2, 1],
    };
    let w = DataFileWriter::create(&dir.path().join("d"), &params).unwrap();
    assert_eq!(w.codec().record_bytes(), 4 + 8 + 8);
    assert!(w.write_record(0, 2, &[0; 20]).is_err());
    assert!(w.write_record(2, 0, &[0; 20]).is_err());
    assert!(w.write_record(0, 0, &[0; 19]).is_err());
    assert!(w.write_sector_range(1, &[0; SECTOR_BYTES]).is_ok());
    assert!(w.write_sector_range(2, &[0; SECTOR_BYTES]).is_err());
    assert!(w.write_sector_range(0, &[0; 100]).is_err());
    let (d, s) = w.finish(&dir.path().join("s")).unwrap();
    assert_eq!(d.bytes, 3 * SECTOR_BYTES as u64);
    assert_eq!(
        SectorCrcs::read(&dir.path().join(s.name_str().unwrap()))
            .unwrap()
            .crcs
            .len(),
        2
    );
}

#[test]
fn format_every_flipped_or_truncated_header_byte_is_a_typed_error() {
    let (_tmp, dir, _) = index();
    let scratch = tempfile::tempdir().unwrap();
    for (name, read, offsets) in small_files() {
        let good = std::fs::read(dir.join(name)).unwrap();
        let p = scratch.path().join(name);
        std::fs::write(&p, &good).unwrap();
        read(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
        let hb = header_bytes(&good);
        for i in 0..hb {
            for bit in [0x01u8, 0x40] {
                let mut bad = good.clone();
                bad[i] ^= bit;
                std::fs::write(&p, &bad).unwrap();
                assert!(
                    read(&p).is_err(),
                    "{name}: flip of header byte {i} accepted"
                );
            }
        }
        // Truncation at every header byte, and at and around every section boundary, both
        // as is and with the recorded length patched to match (CRC fixed).
        let mut cuts: Vec<usize> = (0..=hb).collect();
        for &o in &offsets {
            let v = u64::from_le_bytes(good[o..o + 8].try_into().unwrap()) as usize;
            cuts.extend([v - 1, v, v + 1]);
        }
        cuts.push(good.len() - 1);
        for cut in cuts.into_iter().filter(|&c| c < good.len()) {
            std::fs::write(&p, &good[..cut]).unwrap();
            assert!(read(&p).is_err(), "{name}: truncation at {cut} accepted");
            if cut >= hb {
                let mut bad = good[..cut].to_vec();
                set_file_bytes(&mut bad, cut as u64);
                std::fs::write(&p, &bad).unwrap();
                let err = read(&p);
                assert!(
                    matches!(
                        err,
                        Err(FormatError::Truncated { .. } | FormatError::Corrupt { .. })
                    ),
                    "{name}: patched truncation at {cut}: {err:?}"
                );
            }
        }
    }
}

#[test]
fn format_huge_counts_with_valid_crc_are_refused_without_allocating() {
    let (_tmp, dir, _) = index();
    let scratch = tempfile::tempdir().unwrap();
    let huge32 = u32::MAX.to_le_bytes();
    let huge64 = (1u64 << 60).to_le_bytes();
    let max64 = u64::MAX.to_le_bytes();
    // (file, field offset, value)
    let cases: Vec<(&str, usize, &[u8])> = vec![
        (CLUSTERS_FILE, 32, &huge32),                   // n_clusters
        (CLUSTERS_FILE, 36, &huge32),                   // dim
        (CLUSTERS_FILE, 40, &huge32),                   // anchor_degree
        (CLUSTERS_FILE, 48, &huge64),                   // centroids_offset
        (CLUSTERS_FILE, 56, &[1, 0, 0, 0, 0, 0, 0, 0]), // misaligned table_offset
        (ROUTING_FILE, 32, &huge32),
        (ROUTING_FILE, 36, &huge32),
        (ROUTING_FILE, 40, &huge32),
        (STATS_FILE, 32, &huge32),
        (STATS_FILE, 36, &[2, 0, 0, 0]),
        (PQ_FILE, 32, &huge32),         // dim
        (PQ_FILE, 36, &huge32),         // subspaces
        (PQ_FILE, 40, &[255, 0, 0, 0]), // codewords
        (PQ_FILE, 48, &huge64),         // n_records
        (PQ_FILE, 48, &max64),
        (SECTORS_FILE, 32, &huge64),
        (SECTORS_FILE, 32, &max64),
        (MANIFEST_FILE, 32, &[0, 0, 0, 0]), // dim 0
        (MANIFEST_FILE, 36, &[9]),          // dtype
        (MANIFEST_FILE, 92, &huge32),       // file_count
        (MANIFEST_FILE, 92, &[1, 0, 0, 0]), // file_count too small for header_bytes
        (DATA_FILE, 48, &huge64),           // n_records
        (DATA_FILE, 56, &huge64),           // data_sectors
        (DATA_FILE, 44, &[7, 0, 0, 0]),     // record_bytes
    ];
    let readers = small_files();
    for (name, off, value) in cases {
        let read = readers.iter().find(|r| r.0 == name).unwrap().1;
        let mut bad = std::fs::read(dir.join(name)).unwrap();
        patch(&mut bad, off, value);
        let p = scratch.path().join(name);
        std::fs::write(&p, &bad).unwrap();
        let err = read(&p);
        assert!(
            matches!(
                err,
                Err(FormatError::Truncated { .. } | FormatError::Corrupt { .. })
            ),
            "{name} @ {off}: {err:?}"
        );
    }
}

#[test]
fn format_flipped_body_bytes_never_panic_small_readers() {
    let (_tmp, dir, _) = index();
    let scratch = tempfile::tempdir().unwrap();
    for (name, read, _) in small_files() {
        let good = std::fs::read(dir.join(name)).unwrap();
        let p = scratch.path().join(name);
        let step = (good.len() / 2000).max(1);
        for i in (header_bytes(&good)..good.len()).step_by(step) {
            let mut bad = good.clone();
            bad[i] ^= 0xff;
            std::fs::write(&p, &bad).unwrap();
            let _ = read(&p); // a typed error or a value, never a panic
        }
    }
}

proptest! {
    #[test]
    fn format_record_codec_round_trip(
        dim in 1u32..300,
        dtype in prop_oneof![Just(DType::F32), Just(DType::U8), Just(DType::I8)],
        max_degree in 0u32..80,
        seed in any::<u64>(),
    ) {
        use rand::{Rng, SeedableRng};
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let codec = RecordCodec::new(dim, dtype, max_degree).unwrap();
        let esize = dtype.size_bytes() as u32;
        prop_assert_eq!(codec.record_bytes(), (dim * esize).div_ceil(4) * 4 + 8 + 4 * max_degree);
        let degree = r.random_range(0..=max_degree) as usize;
        let n_records = 1000u64;
        let nbrs: Vec<u32> = (0..degree).map(|_| r.random_range(0..n_records as u32)).collect();
        let id = r.random();
        let mut out = vec![0xAAu8; codec.record_bytes() as usize + 5];
        match dtype {
            DType::F32 => {
                let v: Vec<f32> = (0..dim).map(|_| r.random()).collect();
                codec.encode(&v, id, &nbrs, &mut out).unwrap();
                prop_assert!(codec.encode(&v[1..], id, &nbrs, &mut out).is_err());
                let rec = codec.with_n_records(n_records).decode(&out, Path::new("x"), 0).unwrap();
                prop_assert_eq!(rec.vector::<f32>().unwrap(), v);
                prop_assert!(rec.vector::<u8>().is_none());
            }
            DType::U8 => {
                let v: Vec<u8> = (0..dim).map(|_| r.random()).collect();
                codec.encode(&v, id, &nbrs, &mut out).unwrap();
                prop_assert!(codec.encode(&[0.0f32; 1], id, &nbrs, &mut out).is_err());
                let rec = codec.decode(&out, Path::new("x"), 0).unwrap();
                prop_assert_eq!(rec.vector::<u8>().unwrap(), v);
            }
            DType::I8 => {
                let v: Vec<i8> = (0..dim).map(|_| r.random()).collect();
                codec.encode(&v, id, &nbrs, &mut out).unwrap();
                let rec = codec.decode(&out, Path::new("x"), 0).unwrap();
                prop_assert_eq!(rec.vector::<i8>().unwrap(), v);
            }
        }
        // Vector padding is zero, the byte after the record untouched.
        let vb = (dim * esize) as usize;
        prop_assert!(out[vb..vb.div_ceil(4) * 4].iter().all(|&b| b == 0));
        prop_assert_eq!(out[codec.record_bytes() as usize], 0xAA);
        let rec = codec.decode(&out, Path::new("x"), 0).unwrap();
        prop_assert_eq!(rec.id(), id);
        prop_assert_eq!(rec.neighbours().collect::<Vec<_>>(), nbrs.clone());
        // Too short, a degree above R, a neighbour past n_records: typed errors.
        let short = codec.decode(&out[..codec.record_bytes() as usize - 1], Path::new("x"), 0);
        prop_assert!(matches!(short, Err(FormatError::Truncated { .. })), "short record accepted");
        let deg_at = vb.div_ceil(4) * 4 + 4;
        let mut bad = out.clone();
        bad[deg_at..deg_at + 4].copy_from_slice(&(max_degree + 1).to_le_bytes());
        prop_assert!(matches!(codec.decode(&bad, Path::new("x"), 0), Err(FormatError::Corrupt { .. })), "degree above R accepted");
        if degree > 0 {
            let limited = codec.with_n_records(nbrs.iter().copied().max().unwrap() as u64);
            prop_assert!(limited.decode(&out, Path::new("x"), 0).is_err());
        }
    }
}

/// `coarse.m3`: round trip; every flipped header byte and every truncation is a typed error;
/// a group id past G, a non-finite centre and a level that disagrees with the manifest are
/// `Corrupt`, naming the file.
#[test]
fn format_coarse_level_round_trip_and_corruption() {
    use m3::data::Matrix;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("coarse.m3");
    let meta = sample_meta(6, 2); // l2, DIM dims, SIZES.len() clusters
    let k = meta.n_clusters as usize;
    let d = meta.dim as usize;
    let level = CoarseLevel {
        coarse: Matrix::from_vec((0..2 * d).map(|i| i as f32 * 0.5).collect(), d).unwrap(),
        labels: (0..k as u32).map(|j| j % 2).collect(),
        probe: 2,
        augmented: false,
    };
    let e = level.write(&p).unwrap();
    assert_eq!(CoarseLevel::read(&p).unwrap(), level);
    level.check_against(&meta, &p).unwrap();
    let good = std::fs::read(&p).unwrap();
    assert_eq!(e.bytes, good.len() as u64);
    let hb = header_bytes(&good);
    for i in 0..hb {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        std::fs::write(&p, &bad).unwrap();
        assert!(CoarseLevel::read(&p).is_err(), "flip of header byte {i}");
    }
    for cut in [0, 10, hb, hb + 1, good.len() - 1] {
        std::fs::write(&p, &good[..cut]).unwrap();
        assert!(CoarseLevel::read(&p).is_err(), "truncation at {cut}");
    }
    let corrupt = |l: &CoarseLevel, what: &str| {
        l.write(&p).unwrap();
        match CoarseLevel::read(&p).and_then(|r| r.check_against(&meta, &p)) {
            Err(FormatError::Corrupt { path, .. }) => assert_eq!(path, p, "{what}"),
            other => panic!("{what}: {other:?}"),
        }
    };
    let mut bad = level.clone();
    bad.labels[1] = 2;
    corrupt(&bad, "group id past G");
    let mut bad = level.clone();
    bad.coarse.row_mut(1)[3] = f32::NAN;
    corrupt(&bad, "NaN centre");
    let mut bad = level.clone();
    bad.labels.pop();
    corrupt(&bad, "one group fewer than clusters");
    let mut bad = level.clone();
    bad.augmented = true;
    corrupt(&bad, "augmented under l2");
    let mut bad = level;
    bad.coarse = Matrix::from_vec(vec![0.0; 2 * (d + 1)], d + 1).unwrap();
    corrupt(&bad, "wrong dimension");
}

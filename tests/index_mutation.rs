//! Mutation tests of opening an index (issue 13, "never a silently different answer"): every
//! file of a small built index is mutated — every header field, NaN and ±∞ in every float
//! section, ids, counts and offsets out of range, records of `data.m3` with a bad id, degree,
//! neighbour or component — and each mutation is tried three ways:
//!
//! - **stale**: the bytes changed, every checksum left as it was;
//! - **header**: the file's own header CRC recomputed, the manifest's CRC32C of it left stale;
//! - **sealed**: every checksum recomputed over the wrong value (the file's header CRC,
//!   `sectors.m3` for `data.m3`, the manifest's entry and header CRC), so only the semantic
//!   checks can catch it.
//!
//! Each copy is opened and asked a fixed query set (approximate search through the coarse level,
//! the query anchors and a neighbour-list round; exact k-NN; range). The outcome must be a typed
//! error or exactly the intact index's answers (same ids, same distance bits). Besides that:
//! a stale or header-only copy of a file held in RAM never opens (the CRC32C is checked at
//! open); a sealed copy of a value that can never be valid (NaN, ∞, an id out of range) never
//! answers; and `verify` refuses every copy that open refuses, and every stale or bad-record
//! copy of `data.m3`.
//!
//! The indexes (`index_support`) are built once per test binary from seeded generated data.

mod index_support;

use std::panic::AssertUnwindSafe;
use std::path::Path;

use index_support::*;
use m3::format::files::*;
use m3::format::header::COMMON_HEADER_BYTES;
use m3::format::{
    BlockEntry, BlocksHeader, ClusterEntry, ClusterTable, ClustersHeader, CoarseHeader,
    DataFileHeader, FormatError, HintsHeader, IndexInfo, IndexMeta, KeysHeader, LayoutTable,
    Manifest, PqHeader, RecordKeys, RecordLayout, RoutingHeader, SECTOR_BYTES, SectorsHeader,
    StatsHeader, verify,
};
use m3::io::{IoBackend, ReaderOptions};
use m3::search::{Index, SearchError};

// ---------------------------------------------------------------------------------------------
// Mutations
// ---------------------------------------------------------------------------------------------

/// One mutation of one file: byte patches, and whether no valid index can hold the new value
/// (so a sealed copy must be refused).
struct Mutation {
    file: &'static str,
    what: String,
    patches: Vec<(usize, Vec<u8>)>,
    never_valid: bool,
    /// The value may be valid and different (a PQ code): only the stale variants apply.
    stale_only: bool,
}

impl Mutation {
    fn one(file: &'static str, what: String, at: usize, value: Vec<u8>, never_valid: bool) -> Self {
        Self {
            file,
            what,
            patches: vec![(at, value)],
            never_valid,
            stale_only: false,
        }
    }
}

/// Floats every file field or section of this name must hold as finite values.
const FLOAT_FIELDS: [&str; 13] = [
    "lccmd_alpha",
    "lccmd_beta",
    "spill_epsilon",
    "alpha_min",
    "alpha_max",
    "lid_mean",
    "lid_std",
    "max_base_norm",
    "r_min",
    "r_max",
    "spread",
    "weight",
    "scale",
];

/// Build settings the manifest records for people: any value opens and answers the same.
const INFORMATIONAL_FLOATS: [&str; 3] = ["spill_epsilon", "alpha_min", "alpha_max"];

fn read_u(bytes: &[u8], at: usize, size: usize) -> u64 {
    let mut b = [0u8; 8];
    b[..size].copy_from_slice(&bytes[at..at + size]);
    u64::from_le_bytes(b)
}

/// NaN and ±∞ (never valid), then −1, 3e38 and 0 (valid in some fields).
fn float_values(name: &str, informational: bool) -> Vec<(String, f32, bool)> {
    let bad = !informational;
    vec![
        (format!("{name} = NaN"), f32::NAN, bad),
        (format!("{name} = +inf"), f32::INFINITY, bad),
        (format!("{name} = -inf"), f32::NEG_INFINITY, bad),
        (format!("{name} = -1"), -1.0, false),
        (format!("{name} = 3e38"), 3e38, false),
        (format!("{name} = 0"), 0.0, false),
    ]
}

/// Mutations of every field of a header table (`base`: where the table's offsets start).
fn field_mutations(
    file: &'static str,
    bytes: &[u8],
    table: LayoutTable,
    base: usize,
) -> Vec<Mutation> {
    let mut out = Vec::new();
    for (name, offset, size) in table {
        if name.contains("reserved") || name == "pad" || name == "name" {
            continue;
        }
        let at = base + offset;
        if FLOAT_FIELDS.contains(&name) {
            let info = file == MANIFEST_FILE && INFORMATIONAL_FLOATS.contains(&name);
            for (what, v, bad) in float_values(name, info) {
                out.push(Mutation::one(file, what, at, v.to_le_bytes().to_vec(), bad));
            }
            continue;
        }
        let v = read_u(bytes, at, size);
        let max = if size == 8 {
            u64::MAX
        } else {
            (1u64 << (8 * size)) - 1
        };
        let mut values = vec![0, v + 1, v.wrapping_sub(1) & max, max, (v * 2) & max, v / 2];
        if size == 8 {
            values.push(v + 8);
        }
        values.sort_unstable();
        values.dedup();
        for n in values.into_iter().filter(|&n| n != v) {
            let mut m = Mutation::one(
                file,
                format!("{name} {v} -> {n}"),
                at,
                n.to_le_bytes()[..size].to_vec(),
                false,
            );
            // Another metric is another valid index description (l2 and inner product cannot
            // be told apart from the files): only the checksum guards it.
            m.stale_only = file == MANIFEST_FILE && name == "metric" && n <= 2;
            out.push(m);
        }
    }
    out
}

/// NaN and ±∞ at the first and last element of an f32 section (plus 3e38: may be valid).
fn section_floats(
    file: &'static str,
    what: &str,
    offset: usize,
    count: usize,
    extra: &[(f32, bool)],
) -> Vec<Mutation> {
    let mut out = Vec::new();
    if count == 0 {
        return out;
    }
    for i in [0, count - 1] {
        let mut values = vec![
            (f32::NAN, true),
            (f32::INFINITY, true),
            (f32::NEG_INFINITY, true),
        ];
        values.extend_from_slice(extra);
        for (v, bad) in values {
            out.push(Mutation::one(
                file,
                format!("{what}[{i}] = {v}"),
                offset + 4 * i,
                v.to_le_bytes().to_vec(),
                bad,
            ));
        }
        // A finite value far off: possibly valid and different (a moved centroid), so only
        // the checksums can tell it from the intact one.
        let mut m = Mutation::one(
            file,
            format!("{what}[{i}] = 3e38"),
            offset + 4 * i,
            3e38f32.to_le_bytes().to_vec(),
            false,
        );
        m.stale_only = true;
        out.push(m);
    }
    out
}

/// u32 ids set out of range at the first and last element of a section.
fn section_ids(
    file: &'static str,
    what: &str,
    offset: usize,
    count: usize,
    bad_ids: &[u32],
) -> Vec<Mutation> {
    let mut out = Vec::new();
    for i in [0, count.saturating_sub(1)].into_iter().take(count.min(2)) {
        for &id in bad_ids {
            out.push(Mutation::one(
                file,
                format!("{what}[{i}] = {id}"),
                offset + 4 * i,
                id.to_le_bytes().to_vec(),
                true,
            ));
        }
    }
    out
}

fn header<S: bytemuck::Pod>(bytes: &[u8]) -> S {
    bytemuck::pod_read_unaligned(&bytes[COMMON_HEADER_BYTES..COMMON_HEADER_BYTES + size_of::<S>()])
}

fn file_bytes(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap()
}

fn manifest_mutations(dir: &Path) -> Vec<Mutation> {
    let b = file_bytes(dir, MANIFEST_FILE);
    let mut out = field_mutations(MANIFEST_FILE, &b, IndexMeta::layout_table(), 0);
    // The entries: each file's listed length and CRC32C.
    let m = Manifest::read(&dir.join(MANIFEST_FILE)).unwrap();
    let start = b.len() - 48 * m.files.len();
    for (i, e) in m.files.iter().enumerate() {
        let name = e.name_str().unwrap();
        let at = start + 48 * i;
        let informational = INFORMATIONAL_FILES.contains(&name);
        out.push(Mutation::one(
            MANIFEST_FILE,
            format!("entry {name}: bytes + 1"),
            at + 32,
            (e.bytes + 1).to_le_bytes().to_vec(),
            !informational,
        ));
        // data.m3's CRC is checked by verify only.
        out.push(Mutation::one(
            MANIFEST_FILE,
            format!("entry {name}: crc32c ^ 1"),
            at + 40,
            (e.crc32c ^ 1).to_le_bytes().to_vec(),
            !informational && name != DATA_FILE && name != SECTORS_FILE,
        ));
    }
    out
}

fn sectors_mutations(dir: &Path) -> Vec<Mutation> {
    const F: &str = SECTORS_FILE;
    let b = file_bytes(dir, F);
    let mut out = field_mutations(F, &b, SectorsHeader::layout_table(), 0);
    let first = header_bytes(&b).div_ceil(8) * 8;
    for at in [first, b.len() - 4] {
        out.push(Mutation::one(
            F,
            format!("sector CRC at byte {at} ^ 1"),
            at,
            vec![b[at] ^ 1],
            false,
        ));
    }
    out
}

fn header_bytes(b: &[u8]) -> usize {
    u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize
}

fn clusters_mutations(dir: &Path) -> Vec<Mutation> {
    const F: &str = CLUSTERS_FILE;
    let b = file_bytes(dir, F);
    let h: ClustersHeader = header(&b);
    let (n, d) = (h.n_clusters as usize, h.dim as usize);
    let mut out = field_mutations(F, &b, ClustersHeader::layout_table(), 0);
    out.extend(section_floats(
        F,
        "centroid",
        h.centroids_offset as usize,
        n * d,
        &[],
    ));
    for c in [0, n / 2] {
        let at = h.table_offset as usize + c * size_of::<ClusterEntry>();
        out.extend(field_mutations(F, &b, ClusterEntry::layout_table(), at));
    }
    out.extend(section_ids(
        F,
        "anchor graph",
        h.graph_offset as usize,
        n * h.anchor_degree as usize,
        &[h.n_clusters, h.n_clusters + 7, u32::MAX - 1],
    ));
    out
}

fn routing_mutations(dir: &Path) -> Vec<Mutation> {
    const F: &str = ROUTING_FILE;
    let b = file_bytes(dir, F);
    let h: RoutingHeader = header(&b);
    let n_clusters = Manifest::read(&dir.join(MANIFEST_FILE))
        .unwrap()
        .meta
        .n_clusters;
    let k = h.n_query_anchors as usize;
    assert!(k > 0, "the fixture has query anchors");
    let mut out = field_mutations(F, &b, RoutingHeader::layout_table(), 0);
    out.extend(section_floats(
        F,
        "anchor",
        h.anchors_offset as usize,
        k * h.dim as usize,
        &[],
    ));
    out.extend(section_ids(
        F,
        "edge",
        h.edges_offset as usize,
        k * h.edges_per_anchor as usize,
        &[n_clusters, n_clusters + 5, u32::MAX - 1],
    ));
    out
}

fn stats_mutations(dir: &Path) -> Vec<Mutation> {
    const F: &str = STATS_FILE;
    let b = file_bytes(dir, F);
    let h: StatsHeader = header(&b);
    let d = h.dim as usize;
    let mut out = field_mutations(F, &b, StatsHeader::layout_table(), 0);
    for (what, offset, variance) in [
        ("base mean", h.base_mean_offset, false),
        ("base variance", h.base_var_offset, true),
        ("query mean", h.query_mean_offset, false),
        ("query variance", h.query_var_offset, true),
    ] {
        let extra: &[(f32, bool)] = if variance { &[(-1.0, true)] } else { &[] };
        out.extend(section_floats(F, what, offset as usize, d, extra));
    }
    out
}

/// Mutations of `pq.m3` or of `refine.m3` (the same layout, decision 0008).
fn pq_mutations(dir: &Path, file: &'static str) -> Vec<Mutation> {
    let b = file_bytes(dir, file);
    let h: PqHeader = header(&b);
    let n = h.n_records as usize;
    let mut out = field_mutations(file, &b, PqHeader::layout_table(), 0);
    for (i, v) in [(1, 0u32), (1, h.dim + 1), (h.subspaces as usize, h.dim + 1)] {
        out.push(Mutation::one(
            file,
            format!("bounds[{i}] = {v}"),
            h.bounds_offset as usize + 4 * i,
            v.to_le_bytes().to_vec(),
            true,
        ));
    }
    out.extend(section_floats(
        file,
        "codebook",
        h.codebooks_offset as usize,
        256 * h.dim as usize,
        &[],
    ));
    out.extend(section_floats(
        file,
        "correction",
        h.correction_offset as usize,
        n,
        &[],
    ));
    out.extend(section_floats(
        file,
        "error",
        h.error_offset as usize,
        n,
        &[(-1.0, true)],
    ));
    // A code byte names another codeword: a valid, different index, which only the CRC can
    // tell from the intact one.
    for i in [0, n * h.subspaces as usize - 1] {
        let at = h.codes_offset as usize + i;
        out.push(Mutation {
            file,
            what: format!("code byte {i} ^ 0x5a"),
            patches: vec![(at, vec![b[at] ^ 0x5a])],
            never_valid: false,
            stale_only: true,
        });
    }
    out
}

fn keys_mutations(dir: &Path) -> Vec<Mutation> {
    const F: &str = KEYS_FILE;
    let b = file_bytes(dir, F);
    let h: KeysHeader = header(&b);
    let n = h.n_records as usize;
    let mut out = field_mutations(F, &b, KeysHeader::layout_table(), 0);
    out.extend(section_floats(
        F,
        "key",
        h.keys_offset as usize,
        n,
        &[(-1.0, true)],
    ));
    // Keys are ascending inside [r_min, r_max] in each cluster: break both.
    let table = ClusterTable::read(&dir.join(CLUSTERS_FILE)).unwrap();
    let keys = RecordKeys::read(&dir.join(F)).unwrap().keys;
    let e = table
        .entries
        .iter()
        .find(|e| e.records >= 2 && keys[e.first_record as usize + 1] < e.r_max)
        .unwrap();
    let key_at = |r: u64| h.keys_offset as usize + 4 * r as usize;
    let last = e.first_record + e.records as u64 - 1;
    out.push(Mutation::one(
        F,
        "first key of a cluster above its second".into(),
        key_at(e.first_record),
        (e.r_max).to_le_bytes().to_vec(),
        true,
    ));
    out.push(Mutation::one(
        F,
        "last key of a cluster above r_max".into(),
        key_at(last),
        (e.r_max * 2.0 + 1.0).to_le_bytes().to_vec(),
        true,
    ));
    out
}

fn coarse_mutations(dir: &Path) -> Vec<Mutation> {
    const F: &str = COARSE_FILE;
    let b = file_bytes(dir, F);
    let h: CoarseHeader = header(&b);
    let mut out = field_mutations(F, &b, CoarseHeader::layout_table(), 0);
    out.extend(section_floats(
        F,
        "coarse centre",
        h.coarse_offset as usize,
        h.n_groups as usize * h.dim as usize,
        &[],
    ));
    out.extend(section_ids(
        F,
        "anchor group",
        h.labels_offset as usize,
        h.n_anchors as usize,
        &[h.n_groups, u32::MAX],
    ));
    out
}

fn hints_mutations(dir: &Path) -> Vec<Mutation> {
    const F: &str = HINTS_FILE;
    let b = file_bytes(dir, F);
    let h: HintsHeader = header(&b);
    let n_records = Manifest::read(&dir.join(MANIFEST_FILE))
        .unwrap()
        .meta
        .n_records as u32;
    let n = h.n_queries as usize;
    assert!(n > 0, "the fixture has hints");
    let mut out = field_mutations(F, &b, HintsHeader::layout_table(), 0);
    out.extend(section_floats(
        F,
        "training query",
        h.queries_offset as usize,
        n * h.dim as usize,
        &[],
    ));
    // u32::MAX is the padding of a short list (valid); the ids past the records are not.
    out.extend(section_ids(
        F,
        "answer",
        h.answers_offset as usize,
        n * h.depth as usize,
        &[n_records, n_records + 5, u32::MAX - 1],
    ));
    out
}

fn blocks_mutations(dir: &Path) -> Vec<Mutation> {
    const F: &str = BLOCKS_FILE;
    let b = file_bytes(dir, F);
    let h: BlocksHeader = header(&b);
    let mut out = field_mutations(F, &b, BlocksHeader::layout_table(), 0);
    for i in 0..h.n_blocks as usize {
        let at = h.table_offset as usize + i * size_of::<BlockEntry>();
        let mut m = field_mutations(F, &b, BlockEntry::layout_table(), at);
        // A spread, weight or scale ≤ 0 is never valid either.
        for x in &mut m {
            if x.what.ends_with("= -1") || x.what.ends_with("= 0") {
                x.never_valid = true;
            }
        }
        out.extend(m);
    }
    out
}

/// `data.m3`: every header field, and records with an id ≥ n_vectors, a degree above R, a
/// neighbour ≥ n_records, a non-finite component (in every record, so that every query meets
/// one; and in one record, which only `verify` must catch).
fn data_mutations(dir: &Path) -> Vec<Mutation> {
    const F: &str = DATA_FILE;
    let b = file_bytes(dir, F);
    let h: DataFileHeader = header(&b);
    let meta = Manifest::read(&dir.join(MANIFEST_FILE)).unwrap().meta;
    let mut out = field_mutations(F, &b, DataFileHeader::layout_table(), 0);
    let table = ClusterTable::read(&dir.join(CLUSTERS_FILE)).unwrap();
    let layout = RecordLayout::new(h.record_bytes).unwrap();
    let vbytes = (h.dim as usize * 4).div_ceil(4) * 4;
    // File offset of every record.
    let records: Vec<usize> = table
        .entries
        .iter()
        .flat_map(|e| {
            (0..e.records as u64).map(move |i| {
                let loc = layout.locate(i);
                (1 + e.first_sector as usize + loc.sector as usize) * SECTOR_BYTES
                    + loc.offset_bytes as usize
            })
        })
        .collect();
    assert_eq!(records.len() as u64, meta.n_records);
    let every = |what: &str, field: usize, value: u32| Mutation {
        file: F,
        what: format!("every record: {what}"),
        patches: records
            .iter()
            .map(|&r| (r + field, value.to_le_bytes().to_vec()))
            .collect(),
        never_valid: true,
        stale_only: false,
    };
    let n_vectors = meta.n_vectors as u32;
    out.push(every("id = n_vectors", vbytes, n_vectors));
    out.push(every("id = u32::MAX", vbytes, u32::MAX));
    out.push(every("degree = R + 1", vbytes + 4, h.max_degree + 1));
    out.push(every(
        "neighbour slot 0 = n_records",
        vbytes + 8,
        meta.n_records as u32,
    ));
    out.push(every("component 0 = NaN", 0, f32::NAN.to_bits()));
    out.push(every("component 3 = +inf", 12, f32::INFINITY.to_bits()));
    // One record: open may answer (if no query reads it), verify must not pass.
    let mid = records[records.len() / 2];
    out.push(Mutation::one(
        F,
        "one record: id = n_vectors".into(),
        mid + vbytes,
        n_vectors.to_le_bytes().to_vec(),
        false,
    ));
    out.push(Mutation::one(
        F,
        "one record: component 1 = NaN".into(),
        mid + 4,
        f32::NAN.to_le_bytes().to_vec(),
        false,
    ));
    out
}

// ---------------------------------------------------------------------------------------------
// Applying a mutation
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Seal {
    /// Every checksum left as it was.
    Stale,
    /// The file's own header CRC recomputed; the manifest's CRC32C of it stale.
    Header,
    /// Every checksum recomputed over the new bytes.
    Sealed,
}

/// Writes the mutated copy of the fixture's index into `dir`, sealed as `seal` says.
fn apply(fixture: &Path, dir: &Path, m: &Mutation, seal: Seal) {
    copy_index(fixture, dir);
    let path = dir.join(m.file);
    let mut bytes = std::fs::read(&path).unwrap();
    for (at, v) in &m.patches {
        bytes[*at..*at + v.len()].copy_from_slice(v);
    }
    std::fs::write(&path, &bytes).unwrap();
    match seal {
        Seal::Stale => {}
        Seal::Header => {
            fix_header_crc(&mut bytes);
            std::fs::write(&path, &bytes).unwrap();
        }
        Seal::Sealed => reseal(dir, m.file),
    }
}

/// What happened to one mutated copy.
#[derive(Debug, Default)]
struct Tally {
    refused_at_open: usize,
    refused_at_answer: usize,
    same_answers: usize,
}

/// Runs every mutation of `muts` on `f` in every way (see the module doc).
fn run(f: &Fixture, muts: Vec<Mutation>) -> Tally {
    assert!(!muts.is_empty());
    let tmp = tempfile::tempdir().unwrap();
    let mut tally = Tally::default();
    let ram_resident = |file: &str| !matches!(file, DATA_FILE | SECTORS_FILE | MANIFEST_FILE);
    for (n, m) in muts.iter().enumerate() {
        // A patch that writes the bytes already there changes nothing: not a mutation.
        let intact = std::fs::read(f.index.join(m.file)).unwrap();
        if m.patches
            .iter()
            .all(|(at, v)| intact[*at..*at + v.len()] == v[..])
        {
            continue;
        }
        for seal in [Seal::Stale, Seal::Header, Seal::Sealed] {
            if (m.stale_only && seal == Seal::Sealed)
                || (m.file == MANIFEST_FILE && seal == Seal::Header)
            {
                continue;
            }
            let dir = tmp.path().join(format!("{n}-{seal:?}"));
            apply(&f.index, &dir, m, seal);
            let label = format!("{} {} ({seal:?})", m.file, m.what);
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| answers(f, &dir)))
                .unwrap_or_else(|_| panic!("{label}: panicked"));
            let opened = Index::open(&dir, IoBackend::Pread, &ReaderOptions::default()).is_ok();
            match &outcome {
                Ok(a) => {
                    assert!(
                        *a == f.answers,
                        "{label}: opened and answered differently from the intact index"
                    );
                    tally.same_answers += 1;
                }
                Err(e) => {
                    assert!(
                        matches!(e, SearchError::Format(_) | SearchError::QueryNorm { .. }),
                        "{label}: not a typed index error: {e:?}"
                    );
                    if opened {
                        tally.refused_at_answer += 1;
                    } else {
                        tally.refused_at_open += 1;
                        // inspect opens the same way.
                        assert!(IndexInfo::gather(&dir).is_err(), "{label}: inspect passed");
                    }
                }
            }
            if seal != Seal::Sealed && ram_resident(m.file) {
                match Index::open(&dir, IoBackend::Pread, &ReaderOptions::default()) {
                    Err(SearchError::Format(
                        FormatError::Checksum { path, .. }
                        | FormatError::HeaderChecksum { path, .. },
                    )) => assert_eq!(path, dir.join(m.file), "{label}"),
                    other => panic!("{label}: a stale checksum was not caught: {other:?}"),
                }
            }
            if seal == Seal::Sealed && m.never_valid {
                assert!(outcome.is_err(), "{label}: a never-valid value answered");
            }
            // verify checks everything open checks, and every byte of data.m3.
            let must_fail = outcome.is_err()
                || (seal != Seal::Sealed && m.file != MANIFEST_FILE)
                || (m.file == DATA_FILE && (m.never_valid || m.what.starts_with("one record")))
                || (m.file == SECTORS_FILE && m.what.starts_with("sector CRC"));
            if must_fail {
                assert!(verify(&dir).is_err(), "{label}: verify passed");
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
    eprintln!("{tally:?}");
    tally
}

// ---------------------------------------------------------------------------------------------
// Tests, one per file
// ---------------------------------------------------------------------------------------------

#[test]
fn mutation_intact_copies_open_and_answer_alike() {
    for f in [single(), multi()] {
        let tmp = tempfile::tempdir().unwrap();
        copy_index(&f.index, tmp.path());
        assert_eq!(answers(f, tmp.path()).unwrap(), f.answers);
        let r = verify(tmp.path()).unwrap();
        assert!(r.informational.is_empty(), "{:?}", r.informational);
        let idx = Index::open(&f.index, IoBackend::Pread, &ReaderOptions::default()).unwrap();
        assert_eq!(r.records, idx.meta().n_records);
    }
    // The fixture has every optional file the mutations below cover.
    let m = Manifest::read(&single().index.join(MANIFEST_FILE)).unwrap();
    for name in [KEYS_FILE, COARSE_FILE, REPORT_FILE] {
        assert!(m.file(name).is_some(), "{name}");
    }
    let m = Manifest::read(&multi().index.join(MANIFEST_FILE)).unwrap();
    assert!(m.file(BLOCKS_FILE).is_some());
}

#[test]
fn mutation_manifest() {
    let t = run(single(), manifest_mutations(&single().index));
    assert!(t.refused_at_open > 0 && t.same_answers > 0, "{t:?}");
    run(multi(), manifest_mutations(&multi().index));
}

#[test]
fn mutation_sectors() {
    run(single(), sectors_mutations(&single().index));
}

#[test]
fn mutation_clusters() {
    let t = run(single(), clusters_mutations(&single().index));
    assert!(t.refused_at_open > 0, "{t:?}");
}

#[test]
fn mutation_routing() {
    run(single(), routing_mutations(&single().index));
}

#[test]
fn mutation_stats() {
    run(single(), stats_mutations(&single().index));
    run(multi(), stats_mutations(&multi().index));
}

#[test]
fn mutation_pq() {
    run(single(), pq_mutations(&single().index, PQ_FILE));
    run(multi(), pq_mutations(&multi().index, PQ_FILE));
}

#[test]
fn mutation_refine() {
    assert!(
        single().index.join(REFINE_FILE).exists(),
        "the build writes refine.m3"
    );
    run(single(), pq_mutations(&single().index, REFINE_FILE));
    run(multi(), pq_mutations(&multi().index, REFINE_FILE));
}

#[test]
fn mutation_keys() {
    run(single(), keys_mutations(&single().index));
}

#[test]
fn mutation_coarse() {
    run(single(), coarse_mutations(&single().index));
}

#[test]
fn mutation_hints() {
    run(single(), hints_mutations(&single().index));
}

#[test]
fn mutation_blocks() {
    run(multi(), blocks_mutations(&multi().index));
}

#[test]
fn mutation_data() {
    let t = run(single(), data_mutations(&single().index));
    assert!(t.refused_at_answer > 0, "{t:?}");
    run(multi(), data_mutations(&multi().index));
}

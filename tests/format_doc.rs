//! `docs/FORMAT.md` is normative: every `| offset | size | field | meaning |` table in it must
//! match, row for row, the `layout_table()` of the struct the code writes under that heading.

use std::collections::BTreeMap;

use m3::data::DType;
use m3::format::header::{COMMON_HEADER_BYTES, CommonHeader};
use m3::format::*;

type Rows = Vec<(String, usize, usize)>;

/// Heading (without `#`s and backticks) → offset tables under it.
fn doc_tables() -> BTreeMap<String, Vec<Rows>> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/FORMAT.md"))
        .expect("docs/FORMAT.md");
    let cell = |s: &str| s.trim().trim_matches('`').to_string();
    let mut out: BTreeMap<String, Vec<Rows>> = BTreeMap::new();
    let mut heading = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.starts_with('#') {
            heading = cell(line.trim_start_matches('#'));
            continue;
        }
        let cols: Vec<String> = line.split('|').map(cell).collect();
        if cols.len() != 6 || cols[1..5] != ["offset", "size", "field", "meaning"] {
            continue;
        }
        lines.next(); // |---|---|
        let mut rows = Rows::new();
        while let Some(row) = lines.next_if(|l| l.starts_with('|')) {
            let c: Vec<String> = row.split('|').map(cell).collect();
            let num = |s: &str| {
                s.parse::<usize>()
                    .unwrap_or_else(|_| panic!("{heading}: bad number {s:?} in {row}"))
            };
            rows.push((c[3].clone(), num(&c[1]), num(&c[2])));
        }
        out.entry(heading.clone()).or_default().push(rows);
    }
    out
}

#[test]
fn format_doc_offset_tables_match_the_code() {
    let doc = doc_tables();
    let code = layout_tables();
    let sizes: BTreeMap<&str, (usize, usize)> = [
        ("Common header", (0, size_of::<CommonHeader>())),
        ("manifest.m3", (COMMON_HEADER_BYTES, size_of::<IndexMeta>())),
        ("Manifest file entry", (0, size_of::<FileEntry>())),
        (
            "clusters.m3",
            (COMMON_HEADER_BYTES, size_of::<ClustersHeader>()),
        ),
        ("Cluster entry", (0, size_of::<ClusterEntry>())),
        (
            "routing.m3",
            (COMMON_HEADER_BYTES, size_of::<RoutingHeader>()),
        ),
        ("stats.m3", (COMMON_HEADER_BYTES, size_of::<StatsHeader>())),
        ("pq.m3", (COMMON_HEADER_BYTES, size_of::<PqHeader>())),
        (
            "data.m3",
            (COMMON_HEADER_BYTES, size_of::<DataFileHeader>()),
        ),
        (
            "sectors.m3",
            (COMMON_HEADER_BYTES, size_of::<SectorsHeader>()),
        ),
        ("keys.m3", (COMMON_HEADER_BYTES, size_of::<KeysHeader>())),
        (
            "blocks.m3",
            (COMMON_HEADER_BYTES, size_of::<BlocksHeader>()),
        ),
        ("Block entry", (0, size_of::<BlockEntry>())),
        (
            "coarse.m3",
            (COMMON_HEADER_BYTES, size_of::<CoarseHeader>()),
        ),
        ("hints.m3", (COMMON_HEADER_BYTES, size_of::<HintsHeader>())),
        ("ids.m3", (COMMON_HEADER_BYTES, size_of::<IdsHeader>())),
        (
            "segments.m3",
            (COMMON_HEADER_BYTES, size_of::<SegmentsHeader>()),
        ),
        ("Segment entry", (0, size_of::<SegmentEntry>())),
        (
            "shards.m3",
            (COMMON_HEADER_BYTES, size_of::<ShardsHeader>()),
        ),
        ("wal.m3", (COMMON_HEADER_BYTES, size_of::<WalHeader>())),
        ("WAL record frame", (0, size_of::<WalFrame>())),
        (
            "delta.m3",
            (COMMON_HEADER_BYTES, size_of::<delta::DeltaHeader>()),
        ),
        (
            "delta_codes.m3",
            (
                COMMON_HEADER_BYTES,
                size_of::<delta_codes::DeltaCodesHeader>(),
            ),
        ),
        (
            "Delta code entry",
            (0, size_of::<delta_codes::DeltaCodeEntry>()),
        ),
    ]
    .into();
    for (heading, rows) in &code {
        let tables = doc
            .get(*heading)
            .unwrap_or_else(|| panic!("docs/FORMAT.md has no offset table under {heading:?}"));
        assert_eq!(tables.len(), 1, "{heading}: one offset table expected");
        let want: Rows = rows
            .iter()
            .map(|&(f, o, s)| (f.to_string(), o, s))
            .collect();
        assert_eq!(tables[0], want, "{heading}: doc and code differ");
        // The code's table covers its struct without gaps (no field left out).
        let (base, size) = sizes[heading];
        let mut at = base;
        for (f, o, s) in rows {
            assert_eq!(*o, at, "{heading}: gap before {f}");
            at += s;
        }
        assert_eq!(at, base + size, "{heading}: fields do not cover the struct");
        assert_eq!(size % 8, 0, "{heading}: size not a multiple of 8");
    }
    for heading in doc.keys() {
        assert!(
            code.iter().any(|(h, _)| h == heading),
            "docs/FORMAT.md table under {heading:?} is not checked against code"
        );
    }
}

#[test]
fn format_doc_worked_record_example_holds() {
    let rb = record::record_bytes(50, DType::F32, 32).unwrap();
    assert_eq!(rb, 336);
    let l = RecordLayout::new(rb).unwrap();
    assert_eq!(l.records_per_sector(), 12);
    assert_eq!(l.sectors_for(30), 3);
    let entries = [ClusterEntry {
        first_sector: 3,
        first_record: 100,
        records: 40,
        r_min: 0.0,
        r_max: 1.0,
        reserved: 0,
    }];
    let loc = locate_record(&entries, l, 130).unwrap();
    assert_eq!((loc.file_sector, loc.offset_bytes), (6, 2016));
    assert_eq!(loc.file_offset(), 26_592);
    assert_eq!(record::record_bytes(960, DType::F32, 64), Some(4104));
    assert_eq!(RecordLayout::new(4104).unwrap().sectors_per_record(), 2);
}

//! What opening an index guarantees (issue 13), case by case, on a small built index: the
//! reported cases of silently wrong answers (a NaN centroid or codeword, a flipped byte in
//! `clusters.m3`, record ids past `n_vectors`, queries whose distances overflow), informational
//! files that must not gate opening, and I/O errors on the manifest reported as themselves.
//! `index_mutation` runs the same checks over every field of every file.

mod index_support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use index_support::*;
use m3::data::Matrix;
use m3::data::format::write_matrix;
use m3::format::files::*;
use m3::format::header::COMMON_HEADER_BYTES;
use m3::format::{
    ClustersHeader, FormatError, IndexInfo, Manifest, PqHeader, RoutingHeader, StatsHeader, verify,
};
use m3::io::{IoBackend, ReaderOptions};
use m3::search::{
    BatchOptions, ExactSearcher, Index, QueryScoring, SearchError, SearchParams, Searcher,
    exact_batch, search_batch,
};
use m3::serve::{ServeConfig, ServerHandle};

fn open(dir: &Path) -> Result<Index, SearchError> {
    Index::open(dir, IoBackend::Pread, &ReaderOptions::default())
}

fn header<S: bytemuck::Pod>(bytes: &[u8]) -> S {
    bytemuck::pod_read_unaligned(&bytes[COMMON_HEADER_BYTES..COMMON_HEADER_BYTES + size_of::<S>()])
}

/// A copy of the single-vector fixture in a temporary directory.
fn copy() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    copy_index(&single().index, &dir);
    (tmp, dir)
}

/// Writes `value` at byte `at` of `file` in `dir`.
fn patch(dir: &Path, file: &str, at: usize, value: &[u8]) {
    let path = dir.join(file);
    let mut b = std::fs::read(&path).unwrap();
    b[at..at + value.len()].copy_from_slice(value);
    std::fs::write(&path, b).unwrap();
}

fn corrupt_at(e: SearchError) -> (std::path::PathBuf, String) {
    match e {
        SearchError::Format(FormatError::Corrupt { path, what, .. }) => (path, what),
        other => panic!("not a Corrupt error: {other:?}"),
    }
}

fn m3() -> Command {
    Command::new(env!("CARGO_BIN_EXE_m3"))
}

// ---------------------------------------------------------------------------------------------
// Files loaded into RAM are checked like `m3 verify` checks them
// ---------------------------------------------------------------------------------------------

/// The reported cases: a NaN in a centroid or a PQ codeword, with every checksum recomputed,
/// opened fine and answered exact search with recall 0.18; one flipped byte in `clusters.m3`
/// silently lowered approximate recall. Now each is refused at open, naming the file.
#[test]
fn open_refuses_non_finite_centroids_and_codewords_and_flipped_bytes() {
    let f = single();
    let clusters = std::fs::read(f.index.join(CLUSTERS_FILE)).unwrap();
    let ch: ClustersHeader = header(&clusters);
    let pq = std::fs::read(f.index.join(PQ_FILE)).unwrap();
    let ph: PqHeader = header(&pq);
    for (file, at, what) in [
        (
            CLUSTERS_FILE,
            ch.centroids_offset as usize + 4 * 5,
            "centroid 0 component 5",
        ),
        (
            PQ_FILE,
            ph.codebooks_offset as usize + 4 * 7,
            "codebook value 7",
        ),
    ] {
        for v in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let (_tmp, dir) = copy();
            patch(&dir, file, at, &v.to_le_bytes());
            reseal(&dir, file);
            let (path, msg) = corrupt_at(open(&dir).unwrap_err());
            assert_eq!(path, dir.join(file));
            assert!(msg.contains(what), "{msg}");
            assert!(IndexInfo::gather(&dir).is_err());
            assert!(verify(&dir).is_err());
        }
    }
    // One flipped byte anywhere in clusters.m3's body: the CRC32C listed in the manifest.
    for at in [
        ch.centroids_offset as usize,
        clusters.len() / 2,
        clusters.len() - 1,
    ] {
        let (_tmp, dir) = copy();
        patch(&dir, CLUSTERS_FILE, at, &[clusters[at] ^ 0x04]);
        match open(&dir) {
            Err(SearchError::Format(FormatError::Checksum { path, what, .. })) => {
                assert_eq!(path, dir.join(CLUSTERS_FILE));
                assert_eq!(what, "whole file");
            }
            other => panic!("byte {at}: {other:?}"),
        }
    }
}

/// `Index::open` skipped `Stats::check_against` and `Routing::check_against`, which verify and
/// inspect ran: a routing edge past the clusters and statistics of another dimension opened.
#[test]
fn open_checks_routing_and_stats_against_the_manifest() {
    let f = single();
    let n_clusters = Manifest::read(&f.index.join(MANIFEST_FILE))
        .unwrap()
        .meta
        .n_clusters;
    let routing = std::fs::read(f.index.join(ROUTING_FILE)).unwrap();
    let rh: RoutingHeader = header(&routing);
    let (_tmp, dir) = copy();
    patch(
        &dir,
        ROUTING_FILE,
        rh.edges_offset as usize,
        &n_clusters.to_le_bytes(),
    );
    reseal(&dir, ROUTING_FILE);
    let (path, msg) = corrupt_at(open(&dir).unwrap_err());
    assert_eq!(path, dir.join(ROUTING_FILE));
    assert!(
        msg.contains("query anchor 0 edge 0") && msg.contains("n_clusters"),
        "{msg}"
    );

    let stats = std::fs::read(f.index.join(STATS_FILE)).unwrap();
    let sh: StatsHeader = header(&stats);
    for (at, v, what) in [
        (
            sh.base_var_offset as usize + 8,
            -1.0f32,
            "base variance of dimension 2",
        ),
        (
            sh.query_mean_offset as usize,
            f32::NAN,
            "query mean of dimension 0",
        ),
        (COMMON_HEADER_BYTES + 32, f32::INFINITY, "max_base_norm"),
    ] {
        let (_tmp, dir) = copy();
        patch(&dir, STATS_FILE, at, &v.to_le_bytes());
        reseal(&dir, STATS_FILE);
        let (path, msg) = corrupt_at(open(&dir).unwrap_err());
        assert_eq!(path, dir.join(STATS_FILE));
        assert!(msg.contains(what), "{msg}");
    }
    // Statistics of another dimension (all of stats.m3 consistent with itself).
    let (_tmp, dir) = copy();
    let mut s = m3::format::Stats::read(&dir.join(STATS_FILE)).unwrap();
    for v in [
        &mut s.base_mean,
        &mut s.base_var,
        &mut s.query_mean,
        &mut s.query_var,
    ] {
        v.pop();
    }
    s.write(&dir.join(STATS_FILE)).unwrap();
    reseal(&dir, STATS_FILE);
    let (path, msg) = corrupt_at(open(&dir).unwrap_err());
    assert_eq!(path, dir.join(STATS_FILE));
    assert!(msg.contains("dim 15 but manifest says 16"), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// Record ids
// ---------------------------------------------------------------------------------------------

/// A manifest whose `n_vectors` is below the ids its records hold: `m3 verify` passed it and
/// search returned those ids. Now verify names the first such record, and search returns
/// only ids below `n_vectors` or refuses with an error naming `data.m3`.
#[test]
fn record_ids_past_n_vectors_are_refused_by_search_and_verify() {
    let f = single();
    let (_tmp, dir) = copy();
    let mpath = dir.join(MANIFEST_FILE);
    let mut m = Manifest::read(&mpath).unwrap();
    // Below the largest id, still n_records ≤ n_vectors · (1 + spill_max).
    let n = m.meta.n_records.div_ceil(1 + m.meta.spill_max as u64);
    assert!(n < m.meta.n_vectors);
    m.meta.n_vectors = n;
    m.write(&mpath).unwrap();
    match verify(&dir) {
        Err(FormatError::Corrupt { path, what, .. }) => {
            assert_eq!(path, dir.join(DATA_FILE));
            assert!(what.contains(&format!("≥ n_vectors {n}")), "{what}");
        }
        other => panic!("verify: {other:?}"),
    }
    let idx = open(&dir).unwrap();
    let mut s = Searcher::new(&idx);
    let p = SearchParams::new(K);
    let mut refused = 0;
    for (i, q) in f.queries.view().iter_rows().enumerate() {
        match s.search(i, q, &p) {
            Ok((r, _)) => assert!(r.iter().all(|x| (x.id as u64) < n), "query {i}: {r:?}"),
            Err(e) => {
                let (path, msg) = corrupt_at(e);
                assert_eq!(path, dir.join(DATA_FILE));
                assert!(msg.contains("record id"), "{msg}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "no query met a record past n_vectors");
    let mut e = ExactSearcher::new(&idx);
    assert!(e.knn(f.queries.row(0), K).is_err());
}

// ---------------------------------------------------------------------------------------------
// Informational files
// ---------------------------------------------------------------------------------------------

/// A deleted or damaged `build_report.json` made the index unopenable. It is informational:
/// the index opens and answers as before, inspect says the report is missing, verify passes
/// and lists it.
#[test]
fn a_missing_or_damaged_build_report_does_not_gate_opening() {
    let f = single();
    for damage in ["delete", "truncate", "rewrite"] {
        let (_tmp, dir) = copy();
        let report = dir.join(REPORT_FILE);
        match damage {
            "delete" => std::fs::remove_file(&report).unwrap(),
            "truncate" => std::fs::write(&report, b"{").unwrap(),
            _ => std::fs::write(&report, b"{\"threads\": 3}").unwrap(),
        }
        assert_eq!(answers(f, &dir).unwrap(), f.answers, "{damage}");
        let info = IndexInfo::gather(&dir).unwrap();
        assert!(info.report.is_none(), "{damage}");
        let problem = info.report_problem.unwrap();
        if damage == "delete" {
            assert!(problem.contains("missing"), "{problem}");
        }
        let r = verify(&dir).unwrap();
        assert_eq!(r.informational.len(), 1, "{damage}");
        assert!(r.informational[0].contains(REPORT_FILE));
        // The CLI: inspect shows it, verify passes and says so.
        let out = m3().arg("inspect").arg(&dir).output().unwrap();
        assert!(out.status.success(), "{damage}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("build report") && text.contains("unreadable"),
            "{text}"
        );
        let out = m3().arg("verify").arg(&dir).output().unwrap();
        assert!(out.status.success(), "{damage}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(REPORT_FILE), "{err}");
    }
}

// ---------------------------------------------------------------------------------------------
// I/O errors on the manifest
// ---------------------------------------------------------------------------------------------

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|u| u.split_whitespace().nth(1))
        == Some("0")
}

/// A manifest that cannot be reached read "missing manifest". Only a manifest that is not
/// there means "not an index"; any other error is reported as itself, with the path.
#[test]
fn an_unreachable_manifest_is_an_io_error_not_a_missing_index() {
    let tmp = tempfile::tempdir().unwrap();
    // The "directory" is a regular file: ENOTDIR (also as root).
    let file = tmp.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    match open(&file) {
        Err(SearchError::Format(FormatError::Io { path, source })) => {
            assert_eq!(path, file.join(MANIFEST_FILE));
            assert_eq!(source.kind(), std::io::ErrorKind::NotADirectory);
        }
        other => panic!("{other:?}"),
    }
    let out = m3().arg("inspect").arg(&file).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("Not a directory") && !err.contains("no index here"),
        "{err}"
    );
    // A directory without a manifest is still "not an index".
    assert!(matches!(
        open(tmp.path()),
        Err(SearchError::Format(FormatError::NotAnIndex { .. }))
    ));
    // Permission denied (root reads anything, so this part needs another user).
    if !running_as_root() {
        let (_t, dir) = copy();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o000)).unwrap();
        let r = open(&dir);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        match r {
            Err(SearchError::Format(FormatError::Io { path, source })) => {
                assert_eq!(path, dir.join(MANIFEST_FILE));
                assert_eq!(source.kind(), std::io::ErrorKind::PermissionDenied);
            }
            other => panic!("{other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Queries whose distances would overflow
// ---------------------------------------------------------------------------------------------

/// Finite but huge query values (3e38 in the CLI, 1e19 over HTTP) answered ids 4294967295 and
/// NaN distances with exit 0 / HTTP 200. Now the library refuses them, naming the query, for
/// approximate and exact search alike, the CLI exits 1 and the server answers 400.
#[test]
fn queries_whose_distances_overflow_are_refused_naming_the_row() {
    for f in [single(), multi()] {
        let idx = open(&f.index).unwrap();
        let d = idx.dim();
        let p = SearchParams {
            block_weights: f.block_weights.clone(),
            ..SearchParams::new(K)
        };
        let mut s = Searcher::new(&idx);
        let mut e = ExactSearcher::new(&idx);
        e.set_block_weights(f.block_weights.as_deref()).unwrap();
        for v in [3e38f32, 1e19, -2e18] {
            let q = vec![v; d];
            let err = s.search(4, &q, &p).unwrap_err();
            assert!(
                matches!(err, SearchError::QueryNorm { query: 4, .. }),
                "{v}: {err:?}"
            );
            assert!(err.to_string().contains("query 4"), "{err}");
            assert!(matches!(
                e.knn(&q, K).unwrap_err(),
                SearchError::QueryNorm { .. }
            ));
            assert!(matches!(
                e.range(&q, 1.0).unwrap_err(),
                SearchError::QueryNorm { .. }
            ));
        }
        // A batch names the row.
        let mut batch = Matrix::from_vec(f.queries.as_slice()[..6 * d].to_vec(), d).unwrap();
        batch.row_mut(3).fill(1e19);
        let err =
            search_batch(&idx, batch.view(), &p, &pool(), &BatchOptions::default()).unwrap_err();
        assert!(
            matches!(err, SearchError::QueryNorm { query: 3, .. }),
            "{err:?}"
        );
        let err = exact_batch(
            &idx,
            batch.view(),
            m3::search::ExactQuery::Knn(K),
            f.block_weights.as_deref(),
            m3::search::ExactParams::default(),
            &pool(),
        )
        .unwrap_err();
        assert!(
            matches!(err, SearchError::QueryNorm { query: 3, .. }),
            "{err:?}"
        );
        // Large but representable queries still answer, with finite distances.
        let q: Vec<f32> = f.queries.row(0).iter().map(|v| v * 1e6).collect();
        let (r, _) = s.search(0, &q, &p).unwrap();
        assert_eq!(r.len(), K);
        assert!(r.iter().all(|n| n.dist.is_finite()));
        // The bound is the one the error states: a query just below it is accepted and
        // answers with finite distances, one just above is refused.
        let scoring = QueryScoring {
            block_weights: f.block_weights.as_deref(),
            lccmd: None,
            any_lccmd: false,
        };
        let Err(SearchError::QueryNorm { max, .. }) =
            idx.check_query_as(0, &vec![3e38; d], scoring)
        else {
            panic!("3e38 accepted");
        };
        let q0 = f.queries.row(0);
        let n0 = q0.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
        let scaled =
            |t: f64| -> Vec<f32> { q0.iter().map(|&v| (f64::from(v) * t / n0) as f32).collect() };
        let below = scaled(max * 0.99);
        idx.check_query_as(0, &below, scoring).unwrap();
        let (r, _) = s.search(0, &below, &p).unwrap();
        assert!(r.iter().all(|n| n.dist.is_finite()), "{r:?}");
        let (r, _) = e.knn(&below, K).unwrap();
        assert!(r.iter().all(|n| n.dist.is_finite()), "{r:?}");
        assert!(matches!(
            idx.check_query_as(0, &scaled(max * 1.01), scoring),
            Err(SearchError::QueryNorm { .. })
        ));
        idx.check_query_as(0, q0, QueryScoring::ANY).unwrap();
    }
    // Cosine normalises in f32: a norm too small to normalise is refused too.
    let idx = open(&single().index).unwrap();
    let tiny = vec![1e-25f32; idx.dim()];
    assert!(matches!(
        idx.check_query(2, &tiny),
        Err(SearchError::QueryNorm { query: 2, .. })
    ));
}

#[test]
fn queries_whose_distances_overflow_fail_the_cli_and_get_400_over_http() {
    let f = single();
    let tmp = tempfile::tempdir().unwrap();
    let d = f.queries.dim();
    let mut m = Matrix::from_vec(f.queries.as_slice()[..5 * d].to_vec(), d).unwrap();
    m.row_mut(2).fill(3e38);
    let path = tmp.path().join("huge.fbin");
    write_matrix(&path, m.view()).unwrap();
    let out = m3()
        .arg("search")
        .arg("--index")
        .arg(&f.index)
        .arg("--queries")
        .arg(&path)
        .args(["--threads", "2"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("query 2: its norm"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let idx = Arc::new(open(&f.index).unwrap());
    let config = ServeConfig {
        workers: 1,
        inflight_per_worker: 2,
        http_threads: 1,
        ..ServeConfig::default()
    };
    let server = ServerHandle::start(idx, config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr: SocketAddr = server.addr();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let post = |body: serde_json::Value| {
        let mut r = agent
            .post(format!("http://{addr}/v1/search"))
            .header("content-type", "application/json")
            .send(serde_json::to_vec(&body).unwrap())
            .unwrap();
        let status = r.status().as_u16();
        let body: serde_json::Value =
            serde_json::from_slice(&r.body_mut().read_to_vec().unwrap()).unwrap();
        (status, body)
    };
    let good = f.queries.row(0).to_vec();
    for exact in [false, true] {
        let (status, body) = post(serde_json::json!({
            "vectors": [good, vec![1e19f32; d]],
            "k": K,
            "exact": exact,
        }));
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["field"], "vectors[1]", "{body}");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains("norm"), "{msg}");
    }
    let (status, _) = post(serde_json::json!({ "vectors": [good], "k": K }));
    assert_eq!(status, 200);
    server.shutdown().unwrap();
}

/// The search contract: at most k results, each id below `n_vectors`, each distance finite —
/// fewer than k only when the probed clusters hold fewer vectors, never padding.
#[test]
fn results_are_never_padded_with_placeholders() {
    let f = single();
    let idx = open(&f.index).unwrap();
    let mut s = Searcher::new(&idx);
    let mut p = SearchParams::new(200);
    p.nprobe = 1;
    p.qprobe = 0;
    p.rerank = 200;
    let mut short = 0;
    for (i, q) in f.queries.view().iter_rows().enumerate() {
        let (r, _) = s.search(i, q, &p).unwrap();
        assert!(r.len() <= 200);
        short += usize::from(r.len() < 200);
        for n in &r {
            assert!(
                (n.id as u64) < idx.n_vectors() && n.dist.is_finite(),
                "{n:?}"
            );
        }
    }
    assert!(short > 0, "one cluster of ~50 records cannot fill k = 200");
}

// ---------------------------------------------------------------------------------------------
// Data sectors
// ---------------------------------------------------------------------------------------------

/// One flipped low mantissa bit in a stored vector component: the value stays finite and near
/// its old one, so nothing about the record looks wrong, and a query that read the sector used
/// to rank with a slightly wrong distance. Every sector a query reads is now checked against
/// `sectors.m3`: searches that read the damaged sector fail with a checksum error naming
/// `data.m3` and the sector, the others answer as before, and exact search (which reads it
/// for some query) fails the same way.
#[test]
fn a_damaged_data_sector_is_a_checksum_error_when_read() {
    let f = single();
    let (_tmp, dir) = copy();
    let m = Manifest::read(&dir.join(MANIFEST_FILE)).unwrap();
    // Data sector 0 holds record 0 at its start: its vector is the record's first bytes
    // (docs/FORMAT.md, data.m3).
    let damaged = 0u64;
    let at = 4096 * (1 + damaged as usize);
    let path = dir.join(DATA_FILE);
    let mut b = std::fs::read(&path).unwrap();
    // Record 0's own vector: its exact search has to read record 0.
    let dim = m.meta.dim as usize;
    let record0: Vec<f32> = b[at..at + 4 * dim]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let old = f32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    b[at] ^= 1;
    let new = f32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    assert!(new.is_finite() && new != old, "{old} → {new}");
    std::fs::write(&path, b).unwrap();
    assert!(m.meta.data_sectors > 1);

    let idx = open(&dir).unwrap();
    let mut s = Searcher::new(&idx);
    let mut p = SearchParams::new(K);
    p.nprobe = idx.n_clusters();
    p.rerank = 200;
    let (mut refused, mut answered) = (0, 0);
    for (i, q) in f.queries.view().iter_rows().enumerate() {
        match s.search(i, q, &p) {
            Ok(_) => answered += 1,
            Err(SearchError::Format(FormatError::Checksum { path, what, .. })) => {
                assert_eq!(path, dir.join(DATA_FILE));
                assert!(what.contains(&format!("data sector {damaged}")), "{what}");
                refused += 1;
            }
            Err(other) => panic!("query {i}: {other:?}"),
        }
    }
    assert!(refused > 0, "no query read the damaged sector");
    assert!(answered > 0, "every query read the damaged sector");
    let mut e = ExactSearcher::new(&idx);
    match e.knn(&record0, K) {
        Err(SearchError::Format(FormatError::Checksum { path, what, .. })) => {
            assert_eq!(path, dir.join(DATA_FILE));
            assert!(what.contains(&format!("data sector {damaged}")), "{what}");
        }
        other => panic!("exact search of record 0's vector: {other:?}"),
    }
}

//! `m3 serve` against a hostile or unlucky world (issue 13): the index rebuilt in place under
//! a running server, clients that stall their headers or bodies, a drain deadline that must
//! hold, a search worker that panics, and `m3 loadtest` against a server that refuses.
//!
//! Each test asserts behaviour, not speed: timeouts are configured short (hundreds of
//! milliseconds) and every wait has a generous bound. Servers listen on 127.0.0.1 only.

mod serve_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use m3::build::{Silent, build_index};
use m3::io::{IoBackend, ReaderOptions};
use m3::search::{ExactSearcher, Index, SearchParams};
use m3::serve::{Knobs, SearchResponse};
use serve_support::*;

/// `(ids, natural distances)` of every result of a 200 answer.
fn answers_of(r: &Reply) -> Vec<(Vec<u32>, Vec<f32>)> {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json::<SearchResponse>()
        .results
        .into_iter()
        .map(|x| (x.ids, x.distances))
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        assert!(e.file_type().unwrap().is_file(), "{:?}", e.path());
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// The index replaced under a running server
// ---------------------------------------------------------------------------------------------

/// A served index is the generation it was opened on: rebuilding the index in place (the
/// build publishes a new directory over the old one, which is then deleted) while it is
/// served leaves exact, range and approximate answers those of the old index, never 500.
/// Exact and range search load `keys.m3` and the PQ errors at their first use, after the
/// rebuild here: through the handles opened at start, not by path.
#[test]
fn serve_keeps_answering_from_the_opened_index_after_a_rebuild_in_place() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("idx");
    copy_dir(&f.index, &served);
    let index =
        Arc::new(Index::open(&served, IoBackend::Pread, &ReaderOptions::default()).unwrap());
    let server = start_with(index, config());
    let addr = server.addr();

    // The old generation's answers, from the untouched original (same bytes as the copy).
    let old = Index::open(&f.index, IoBackend::Pread, &ReaderOptions::default()).unwrap();
    let rows: Vec<Vec<f32>> = (0..8).map(|i| f.queries.row(i).to_vec()).collect();
    let natural = |r: &[m3::exact::Neighbor]| -> (Vec<u32>, Vec<f32>) {
        (
            r.iter().map(|n| n.id).collect(),
            r.iter().map(|n| old.metric().to_natural(n.dist)).collect(),
        )
    };
    let mut ex = ExactSearcher::new(&old);
    let want_exact: Vec<_> = rows
        .iter()
        .map(|q| natural(&ex.knn(q, K).unwrap().0))
        .collect();
    let radius = want_exact[0].1[4];
    let want_range: Vec<_> = rows
        .iter()
        .map(|q| natural(&ex.range(q, radius).unwrap().0))
        .collect();
    let knobs = Knobs {
        nprobe: Some(6),
        rerank: Some(40),
        ..Knobs::default()
    };
    let approx_body = serde_json::json!({"vectors": rows, "k": K, "knobs": knobs});
    let want_approx = answers_of(&post_json(addr, "/v1/search", &approx_body));

    // Rebuild in place with another seed: a different index at the same path.
    let p = fixture_params(&f.base_path, f.training_path.clone(), &served, 12);
    build_index(&p, pool(), &Silent).unwrap();
    let new = Index::open(&served, IoBackend::Pread, &ReaderOptions::default()).unwrap();
    let mut params = SearchParams::new(K);
    params.nprobe = 6;
    params.rerank = 40;
    let mut s = m3::search::Searcher::new(&new);
    let differs = rows.iter().enumerate().any(|(qi, q)| {
        let (r, _) = s.search(qi, q, &params).unwrap();
        r.iter().map(|n| n.id).collect::<Vec<_>>() != want_approx[qi].0
    });
    assert!(differs, "the rebuilt index answers like the old one");

    let exact = post_json(
        addr,
        "/v1/search",
        &serde_json::json!({"vectors": rows, "k": K, "exact": true}),
    );
    assert_same_answers(&answers_of(&exact), &want_exact, "exact after the rebuild");
    let range = post_json(
        addr,
        "/v1/range",
        &serde_json::json!({"vectors": rows, "radius": radius}),
    );
    assert_same_answers(&answers_of(&range), &want_range, "range after the rebuild");
    let approx = post_json(addr, "/v1/search", &approx_body);
    assert_same_answers(
        &answers_of(&approx),
        &want_approx,
        "approx after the rebuild",
    );
    server.shutdown().unwrap();
}

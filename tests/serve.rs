//! `m3 serve` end to end: real servers on loopback ports (in-process through
//! `m3::serve::ServerHandle`, and the `m3 serve` binary) talked to with a real HTTP client
//! (`ureq`) and, where a test needs a client that stalls mid-request, a raw TCP stream.
//!
//! Covered: answers equal the library's `search_batch` and `m3 search --out`; every error
//! path's status and named field; the API key; overload (429 with Retry-After); deadlines
//! (408, 504) with abandoned work dropped; exact and range answers, with block weights on a
//! multi-vector index; an injected I/O fault (500) after which the server
//! goes on; `GET /v1/index` equal to `m3 inspect --json`; `/metrics` counts; a slow client
//! that does not hold the only search worker; SIGTERM draining a request in flight and
//! exiting 0.
//!
//! The index is built once per test binary and kept in `CARGO_TARGET_TMPDIR` (same scheme as
//! tests/search_engine.rs: keyed by the test executable, under a file lock).

mod serve_support;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use m3::build::{BuildParams, Silent, build_index};
use m3::data::{DType, GroundTruth, Matrix, VectorFile};
use m3::distance::Metric;
use m3::format::files::DATA_FILE;
use m3::io::{BlockReader, Fault, FaultKind, FaultyReader, IoBackend, ReaderOptions, open_reader};
use m3::search::{BatchOptions, ExactSearcher, Index, RerankDistance, SearchParams, search_batch};
use m3::serve::{ApiKey, Knobs, Limits, SearchRequest, SearchResponse, ServeConfig};
use m3::synth::{SplitSizes, WriteSpec, write_dataset};
use serve_support::*;

// ---------------------------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------------------------

/// The server's answers equal the library's (same knobs, queries spread over concurrent
/// requests of several vectors, so queries of different requests interleave on the workers)
/// and `m3 search --out`'s.
#[test]
fn serve_answers_equal_the_library_and_m3_search() {
    let f = fixture();
    let index = open_index();
    let mut params = SearchParams::new(K);
    params.nprobe = 4;
    params.qprobe = 2;
    params.edges = 4;
    params.rerank = 30;
    let want = library_answers(&index, &params);
    let server = start_with(index.clone(), config());
    let got = server_answers(server.addr(), &Knobs::from_params(&params), 7, 4);
    assert_same_answers(&got, &want, "server vs library");

    let out = tempfile::tempdir().unwrap();
    let res = out.path().join("res.ibin");
    let st = m3()
        .arg("search")
        .arg("--index")
        .arg(&f.index)
        .arg("--queries")
        .arg(&f.queries_path)
        .args(["--threads", "2", "--io", "pread", "--k", "10"])
        .args([
            "--nprobe", "4", "--qprobe", "2", "--edges", "4", "--rerank", "30",
        ])
        .arg("--out")
        .arg(&res)
        .status()
        .unwrap();
    assert!(st.success());
    let table = GroundTruth::read(&res).unwrap();
    let dists = table
        .dists
        .as_ref()
        .expect("m3 search --out writes distances");
    let cli: Vec<(Vec<u64>, Vec<f32>)> = (0..table.queries())
        .map(|q| {
            (
                table.ids.row(q).iter().map(|&i| u64::from(i)).collect(),
                dists.row(q).to_vec(),
            )
        })
        .collect();
    assert_same_answers(&got, &cli, "server vs m3 search");
    // Cosine similarities, best first.
    assert!(got[0].1.windows(2).all(|w| w[0] >= w[1]), "{:?}", got[0].1);
    server.shutdown().unwrap();
}

/// Default knobs (none sent), LC-CMD reranking and neighbour-list rounds also match the
/// library; the response reports the I/O the queries did and `/metrics` counts it.
#[test]
fn serve_knob_variants_match_the_library_and_metrics_count_the_reads() {
    let index = open_index();
    let server = start_with(index.clone(), config());
    let addr = server.addr();

    let r = post(addr, "/v1/search", &search_body(0..5, None), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let resp: SearchResponse = r.json();
    let want = library_answers(&index, &SearchParams::new(K));
    for (j, res) in resp.results.iter().enumerate() {
        assert_eq!(res.ids, want[j].0, "default knobs, query {j}");
    }
    assert_eq!(resp.stats.queries, 5);
    assert!(resp.stats.reads > 0 && resp.stats.bytes >= 4096 * resp.stats.reads);
    assert!(resp.stats.io_rounds >= 5);

    let mut p = SearchParams::new(K);
    p.nprobe = 3;
    p.expand_rounds = 1;
    p.distance = RerankDistance::LcCmd {
        alpha: 0.5,
        beta: 0.5,
    };
    let got = server_answers(addr, &Knobs::from_params(&p), 50, 2);
    assert_same_answers(&got, &library_answers(&index, &p), "lccmd + rounds");

    let text = get(addr, "/metrics", &[]).text();
    let answered = metric_in(&text, "m3_queries_total{kind=\"approx\"}").unwrap();
    assert_eq!(answered, 5.0 + QUERIES as f64, "{text}");
    let ok = metric_in(
        &text,
        "m3_http_requests_total{endpoint=\"/v1/search\",status=\"200\"}",
    )
    .unwrap();
    assert_eq!(ok, 1.0 + 4.0, "{text}");
    let bytes = metric_in(&text, "m3_read_bytes_total").unwrap();
    assert!(bytes >= resp.stats.bytes as f64, "{text}");
    assert_eq!(
        metric_in(&text, "m3_queries_in_flight"),
        Some(0.0),
        "{text}"
    );
    let count = metric_in(
        &text,
        "m3_http_request_duration_seconds_count{endpoint=\"/v1/search\"}",
    )
    .unwrap();
    assert_eq!(count, 5.0, "{text}");
    server.shutdown().unwrap();
}

/// `GET /v1/index` is what `m3 inspect --json` prints; `/healthz` answers.
#[test]
fn serve_index_endpoint_equals_m3_inspect_json() {
    let f = fixture();
    let server = start(config());
    let r = get(server.addr(), "/v1/index", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    let served: serde_json::Value = r.json();
    let out = m3()
        .arg("inspect")
        .arg("--json")
        .arg(&f.index)
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(served, printed);
    assert_eq!(served["params"]["n_vectors"], 8000);
    assert_eq!(served["live"]["generation"], 0);
    let h = get(server.addr(), "/healthz", &[]);
    assert_eq!((h.status, h.text().as_str()), (200, "ok\n"));
    server.shutdown().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Every kind of bad request gets its status and, for a bad field, the field's JSON path.
#[test]
fn serve_bad_requests_get_400_naming_the_field() {
    let limits = Limits {
        max_vectors: 8,
        max_k: 50,
        max_nprobe: 64,
        max_body_bytes: 64 << 10,
        ..Limits::default()
    };
    let server = start(ServeConfig { limits, ..config() });
    let addr = server.addr();
    let q: Vec<f32> = fixture().queries.row(0).to_vec();
    let v = serde_json::json!(q);
    let mut short = q.clone();
    short.pop();
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "wrong dimension",
            serde_json::json!({"vectors": [q, short]}),
            "vectors[1]",
        ),
        ("no vectors", serde_json::json!({"vectors": []}), "vectors"),
        (
            "too many vectors",
            serde_json::json!({"vectors": vec![v.clone(); 9]}),
            "vectors",
        ),
        (
            "unknown field",
            serde_json::json!({"vectors": [v], "kk": 3}),
            "kk",
        ),
        (
            "unknown knob",
            serde_json::json!({"vectors": [v], "knobs": {"nprobes": 3}}),
            "knobs.nprobes",
        ),
        ("k = 0", serde_json::json!({"vectors": [v], "k": 0}), "k"),
        (
            "k over the limit",
            serde_json::json!({"vectors": [v], "k": 51}),
            "k",
        ),
        (
            "k negative",
            serde_json::json!({"vectors": [v], "k": -1}),
            "k",
        ),
        (
            "knob over its limit",
            serde_json::json!({"vectors": [v], "knobs": {"nprobe": 65}}),
            "knobs.nprobe",
        ),
        (
            "knob of the wrong type",
            serde_json::json!({"vectors": [v], "knobs": {"rerank": "many"}}),
            "knobs.rerank",
        ),
        (
            "no cluster probed",
            serde_json::json!({"vectors": [v], "knobs": {"nprobe": 0, "qprobe": 0, "hints": 0}}),
            "knobs.nprobe",
        ),
        (
            "alpha without lccmd",
            serde_json::json!({"vectors": [v], "knobs": {"alpha": 0.3}}),
            "knobs.alpha",
        ),
        (
            "beta out of range",
            serde_json::json!({"vectors": [v], "knobs": {"distance": "lccmd", "beta": 2.0}}),
            "knobs.beta",
        ),
        (
            "unknown distance",
            serde_json::json!({"vectors": [v], "knobs": {"distance": "manhattan"}}),
            "knobs.distance",
        ),
        (
            "exact with knobs",
            serde_json::json!({"vectors": [v], "exact": true, "knobs": {"nprobe": 2}}),
            "knobs",
        ),
        (
            "vector of strings",
            serde_json::json!({"vectors": [["a"]]}),
            "vectors[0][0]",
        ),
        (
            "block weights on a single-vector index",
            serde_json::json!({"vectors": [v], "knobs": {"block_weights": {"image": 1.0}}}),
            "knobs.block_weights",
        ),
        (
            "exact with block weights on a single-vector index",
            serde_json::json!({"vectors": [v], "exact": true,
                               "knobs": {"block_weights": {"image": 1.0}}}),
            "knobs.block_weights",
        ),
    ];
    for (what, body, field) in cases {
        let r = post_json(addr, "/v1/search", &body);
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        let e = r.error();
        assert_eq!(e.error.status, 400);
        assert_eq!(
            e.error.field.as_deref(),
            Some(field),
            "{what}: {}",
            r.text()
        );
        assert!(!e.error.message.is_empty());
    }
    // NaN is not JSON; a number too large for f32 becomes infinity: both name the component.
    let rest: Vec<String> = q[1..].iter().map(|x| x.to_string()).collect();
    let text = format!("{{\"vectors\": [[NaN, {}]]}}", rest.join(", "));
    let r = post(addr, "/v1/search", text.as_bytes(), &[]);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.error().error.field.as_deref(), Some("vectors[0][0]"));
    let mut big = q.clone();
    big[3] = 0.0;
    let text = serde_json::to_string(&serde_json::json!({"vectors": [big]}))
        .unwrap()
        .replacen(",0.0,", ",1e39,", 1);
    assert!(text.contains("1e39"), "{text}");
    let r = post(addr, "/v1/search", text.as_bytes(), &[]);
    assert_eq!(r.status, 400, "{}", r.text());
    let e = r.error();
    assert!(
        e.error.field.as_deref().unwrap().starts_with("vectors[0]["),
        "{}",
        r.text()
    );
    assert!(e.error.message.contains("inf"), "{}", r.text());
    // Range requests are checked the same way.
    let r = post_json(
        addr,
        "/v1/range",
        &serde_json::json!({"vectors": [v], "radius": 0.5, "max_results": 0}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.error().error.field.as_deref(), Some("max_results"));
    let text = format!("{{\"vectors\": [{v}], \"radius\": 1e39}}");
    let r = post(addr, "/v1/range", text.as_bytes(), &[]);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.error().error.field.as_deref(), Some("radius"));
    let r = post_json(addr, "/v1/range", &serde_json::json!({"vectors": [v]}));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.error().error.message.contains("radius"), "{}", r.text());

    // Not JSON, trailing garbage, wrong content type, too large, unknown endpoint, wrong method.
    let r = post(addr, "/v1/search", b"{\"vectors\": [", &[]);
    assert_eq!(r.status, 400, "{}", r.text());
    let mut body = serde_json::to_vec(&serde_json::json!({"vectors": [v]})).unwrap();
    body.extend_from_slice(b" {}");
    let r = post(addr, "/v1/search", &body, &[]);
    assert_eq!(r.status, 400, "{}", r.text());
    let r = post(
        addr,
        "/v1/search",
        b"vectors=1",
        &[("content-type", "text/plain")],
    );
    assert_eq!(r.status, 415, "{}", r.text());
    let huge = search_body(0..8, None).repeat(40);
    assert!(huge.len() > 64 << 10);
    let r = post(addr, "/v1/search", &huge, &[]);
    assert_eq!(r.status, 413, "{}", r.text());
    let r = post(addr, "/v1/searc", &search_body(0..1, None), &[]);
    assert_eq!(r.status, 404, "{}", r.text());
    let r = get(addr, "/v1/search", &[]);
    assert_eq!(r.status, 405);
    // A body over the limit without a Content-Length (chunked) is refused as well.
    let mut s = TcpStream::connect(addr).unwrap();
    let chunk = vec![b' '; 70 << 10];
    write!(
        s,
        "POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n",
        chunk.len()
    )
    .unwrap();
    s.write_all(&chunk).unwrap();
    s.write_all(b"\r\n0\r\n\r\n").unwrap();
    let (status, _) = SlowRequest {
        stream: s,
        rest: vec![],
    }
    .read_response();
    assert_eq!(status, 413);

    let text = get(addr, "/metrics", &[]).text();
    let bad = metric_in(
        &text,
        "m3_http_errors_total{endpoint=\"/v1/search\",status=\"400\"}",
    )
    .unwrap();
    assert!(bad >= 20.0, "{text}");
    assert!(
        metric_in(
            &text,
            "m3_http_errors_total{endpoint=\"other\",status=\"404\"}"
        )
        .is_some()
    );
    server.shutdown().unwrap();
}

/// With a key, every endpoint but `/healthz` needs `Authorization: Bearer <key>`.
#[test]
fn serve_api_key_is_required_everywhere_but_healthz() {
    let server = start(ServeConfig {
        api_key: Some(ApiKey::new(b"k3y-for-tests").unwrap()),
        ..config()
    });
    let addr = server.addr();
    let body = search_body(0..1, None);
    let right = [("authorization", "Bearer k3y-for-tests")];
    for headers in [
        &[][..],
        &[("authorization", "Bearer k3y-for-test")][..],
        &[("authorization", "Bearer k3y-for-tests2")][..],
        &[("authorization", "k3y-for-tests")][..],
        &[("authorization", "Basic k3y-for-tests")][..],
    ] {
        let r = post(addr, "/v1/search", &body, headers);
        assert_eq!(r.status, 401, "{headers:?}: {}", r.text());
        assert_eq!(r.www_authenticate.as_deref(), Some("Bearer"));
        assert!(r.error().error.message.contains("API key"));
        assert_eq!(get(addr, "/v1/index", headers).status, 401);
        assert_eq!(get(addr, "/metrics", headers).status, 401);
        assert_eq!(post(addr, "/v1/range", b"{}", headers).status, 401);
    }
    let r = post(addr, "/v1/search", &body, &right);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get(addr, "/v1/index", &right).status, 200);
    assert_eq!(get(addr, "/metrics", &right).status, 200);
    assert_eq!(get(addr, "/healthz", &[]).status, 200);
    server.shutdown().unwrap();
}

/// Beyond `max_concurrent_requests` a search gets 429 with `Retry-After` at once; the request
/// being searched still completes, and after it the server admits again.
#[test]
fn serve_overload_gives_429_with_retry_after() {
    let gate = Gate::new();
    let server = start(ServeConfig {
        limits: Limits {
            max_concurrent_requests: 1,
            ..Limits::default()
        },
        query_hook: Some(gate.hook()),
        ..config()
    });
    let addr = server.addr();
    let body = search_body(0..3, None);
    // Holds the one permit: its query is held on a worker.
    let held = std::thread::spawn(move || {
        post(addr, "/v1/search", &marked_body(0, GATE_MARK, false), &[])
    });
    gate.wait_held(1);
    let r = post(addr, "/v1/search", &body, &[]);
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.retry_after.as_deref(), Some("1"));
    assert!(r.error().error.message.contains("concurrent"));
    let range = serde_json::json!({"vectors": [fixture().queries.row(0)], "radius": 0.5});
    let r = post_json(addr, "/v1/range", &range);
    assert_eq!(
        r.status,
        429,
        "range requests share the limit: {}",
        r.text()
    );
    // Other endpoints are not limited.
    assert_eq!(get(addr, "/healthz", &[]).status, 200);
    assert_eq!(get(addr, "/v1/index", &[]).status, 200);
    gate.open();
    let r = held.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json::<SearchResponse>().results.len(), 1);
    let r = post(addr, "/v1/search", &body, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let text = get(addr, "/metrics", &[]).text();
    assert_eq!(
        metric_in(
            &text,
            "m3_http_requests_total{endpoint=\"/v1/search\",status=\"429\"}"
        ),
        Some(1.0),
        "{text}"
    );
    server.shutdown().unwrap();
}

/// A body that does not arrive within the deadline gets 408; a search that does not finish
/// within it gets 504, and its queued queries are dropped unstarted.
#[test]
fn serve_deadline_gives_408_then_504() {
    let limits = Limits {
        deadline: Duration::from_millis(300),
        max_vectors: 2000,
        max_body_bytes: 16 << 20,
        ..Limits::default()
    };
    let server = start(ServeConfig {
        workers: 1,
        inflight_per_worker: 1,
        limits,
        ..config()
    });
    let addr = server.addr();
    let body = search_body(0..2, None);
    let t = Instant::now();
    let (status, resp) = SlowRequest::start(addr, "/v1/search", &body, 10, "").read_response();
    assert_eq!(status, 408, "{}", String::from_utf8_lossy(&resp));
    assert!(t.elapsed() >= Duration::from_millis(300));

    // 2,000 queries, each probing every cluster and reranking 2,000 records, on one worker
    // with one query in flight: far more than 300 ms of work.
    let q = &fixture().queries;
    let heavy = Knobs {
        nprobe: Some(1024),
        rerank: Some(2000),
        early_stop: Some(false),
        ..Knobs::default()
    };
    let body = serde_json::to_vec(&SearchRequest {
        vectors: (0..2000).map(|i| q.row(i % q.rows()).to_vec()).collect(),
        k: K,
        knobs: Some(heavy),
        exact: false,
    })
    .unwrap();
    let r = post(addr, "/v1/search", &body, &[]);
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(r.error().error.message.contains("deadline"));
    // The worker drops the rest of the request's queries instead of running them.
    let t = Instant::now();
    loop {
        let text = get(addr, "/metrics", &[]).text();
        let abandoned = metric_in(&text, "m3_queries_abandoned_total").unwrap();
        let in_flight = metric_in(&text, "m3_queries_in_flight").unwrap();
        if in_flight == 0.0 && abandoned > 0.0 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = post(addr, "/v1/search", &search_body(0..1, None), &[]);
    assert_eq!(r.status, 200, "the server goes on: {}", r.text());
    server.shutdown().unwrap();
}

/// A failed read is 500 naming the cause, and the server goes on answering.
#[test]
fn serve_io_fault_gives_500_and_the_server_goes_on() {
    let f = fixture();
    let inner = open_reader(
        &f.index.join(DATA_FILE),
        IoBackend::Pread,
        &ReaderOptions::default(),
    )
    .unwrap();
    let faulty: Arc<FaultyReader<Arc<dyn BlockReader>>> = Arc::new(FaultyReader::new(
        inner,
        [Fault {
            at_read: 0,
            kind: FaultKind::Error,
        }],
    ));
    let index = Arc::new(Index::open_with_reader(&f.index, faulty.clone()).unwrap());
    let server = start_with(index, config());
    let r = post(server.addr(), "/v1/search", &search_body(0..1, None), &[]);
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.error().error.message.contains("injected"), "{}", r.text());
    let r = post(server.addr(), "/v1/search", &search_body(1..3, None), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(faulty.reads_seen() > 1);
    server.shutdown().unwrap();
}

/// `"exact": true` and `/v1/range` answer what `ExactSearcher` answers for the same vectors
/// (natural distances, best first); `max_results` truncates a range answer to its best and
/// says so.
#[test]
fn serve_exact_and_range_equal_the_exact_searcher() {
    let index = open_index();
    let server = start_with(index.clone(), config());
    let addr = server.addr();
    let q = &fixture().queries;
    let metric = index.metric();
    let mut ex = ExactSearcher::new(&index);
    let natural = |r: &[m3::exact::Neighbor]| -> (Vec<u64>, Vec<f32>) {
        (
            r.iter().map(|n| u64::from(n.id)).collect(),
            r.iter().map(|n| metric.to_natural(n.dist)).collect(),
        )
    };
    let rows: Vec<Vec<f32>> = (0..20).map(|i| q.row(i).to_vec()).collect();
    let r = post_json(
        addr,
        "/v1/search",
        &serde_json::json!({"vectors": rows, "k": K, "exact": true}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let resp: SearchResponse = r.json();
    let got: Vec<_> = resp
        .results
        .iter()
        .map(|r| (r.ids.clone(), r.distances.clone()))
        .collect();
    let want: Vec<_> = (0..20)
        .map(|i| natural(&ex.knn(q.row(i), K).unwrap().0))
        .collect();
    assert_same_answers(&got, &want, "exact");
    assert!(resp.stats.reads > 0);

    // A radius holding query 0's 5 nearest: similarity ≥ its 5th best.
    let radius = want[0].1[4];
    let r = post_json(
        addr,
        "/v1/range",
        &serde_json::json!({"vectors": rows, "radius": radius}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let resp: SearchResponse = r.json();
    let ranges: Vec<_> = (0..20)
        .map(|i| natural(&ex.range(q.row(i), radius).unwrap().0))
        .collect();
    let got: Vec<_> = resp
        .results
        .iter()
        .map(|r| (r.ids.clone(), r.distances.clone()))
        .collect();
    assert_same_answers(&got, &ranges, "range");
    assert!(resp.results.iter().all(|r| !r.truncated));
    assert!(got[0].0.len() >= 5, "{:?}", got[0]);
    assert!(got.iter().flat_map(|g| &g.1).all(|&d| d >= radius));

    let r = post_json(
        addr,
        "/v1/range",
        &serde_json::json!({"vectors": rows, "radius": radius, "max_results": 2}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let resp: SearchResponse = r.json();
    for (res, full) in resp.results.iter().zip(&ranges) {
        let n = full.0.len().min(2);
        assert_eq!(res.ids, full.0[..n]);
        assert_eq!(res.truncated, full.0.len() > 2);
    }
    assert!(resp.results[0].truncated);

    let text = get(addr, "/metrics", &[]).text();
    assert_eq!(
        metric_in(&text, "m3_queries_total{kind=\"exact\"}"),
        Some(20.0)
    );
    assert_eq!(
        metric_in(&text, "m3_queries_total{kind=\"range\"}"),
        Some(40.0)
    );
    server.shutdown().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Slow clients and shutdown
// ---------------------------------------------------------------------------------------------

/// With one search worker, a client stalled in the middle of its request body holds no worker:
/// other requests are answered meanwhile, and the stalled one completes when it resumes.
#[test]
fn serve_a_slow_client_does_not_hold_the_worker() {
    let server = start(ServeConfig {
        workers: 1,
        inflight_per_worker: 1,
        ..config()
    });
    let addr = server.addr();
    let body = search_body(0..4, None);
    let stalled = SlowRequest::start(addr, "/v1/search", &body, 100, "");
    wait_in_flight(addr, 2.0);
    for i in 0..5 {
        let r = post(addr, "/v1/search", &search_body(i..i + 1, None), &[]);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let (status, resp) = stalled.finish();
    assert_eq!(status, 200);
    let resp: SearchResponse = serde_json::from_slice(&resp).unwrap();
    assert_eq!(resp.results.len(), 4);
    server.shutdown().unwrap();
}

/// The `m3 serve` binary on SIGTERM: stops accepting connections, finishes the request in
/// flight (whose body is still arriving) with a full answer, and exits 0.
#[test]
fn serve_binary_drains_on_sigterm_and_exits_0() {
    let f = fixture();
    let mut child = m3()
        .arg("serve")
        .arg("--index")
        .arg(&f.index)
        .args(["--addr", "127.0.0.1:0", "--threads", "2", "--io", "pread"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let addr = listening_addr(&mut child, &mut stderr);
    let body = search_body(0..6, None);
    let in_flight = SlowRequest::start(addr, "/v1/search", &body, body.len() / 3, "");
    wait_in_flight(addr, 2.0);
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // New connections are refused once the listener is closed.
    let t = Instant::now();
    while TcpStream::connect(addr).is_ok() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "still accepting after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited with a request in flight"
    );
    let (status, resp) = in_flight.finish();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
    let resp: SearchResponse = serde_json::from_slice(&resp).unwrap();
    assert_eq!(resp.results.len(), 6);
    assert!(resp.results.iter().all(|r| r.ids.len() == K));
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("SIGTERM"), "{rest}");
    assert!(rest.contains("stopped"), "{rest}");
}

/// `m3 serve` refuses to start on a bad index directory or key file, naming it.
#[test]
fn serve_binary_refuses_a_bad_index_or_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = m3()
        .arg("serve")
        .arg("--index")
        .arg(dir.path())
        .args(["--addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
    let key = dir.path().join("key");
    std::fs::write(&key, "\n").unwrap();
    let out = m3()
        .arg("serve")
        .arg("--index")
        .arg(&fixture().index)
        .args(["--addr", "127.0.0.1:0", "--verify", "full"])
        .arg("--api-key-file")
        .arg(&key)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("empty") && err.contains("key"), "{err}");
    assert!(
        err.contains("verified"),
        "full verification ran first: {err}"
    );
}

/// `m3 loadtest` against a server: one JSON line per level, every request answered, and the
/// recall of the served answers equal to the library's on the same queries; a target that
/// is not a loopback address is refused before any request.
#[test]
fn serve_loadtest_reports_each_level_and_targets_only_loopback() {
    let f = fixture();
    let index = open_index();
    let dir = tempfile::tempdir().unwrap();
    // Exact ground truth of the fixture queries.
    let base = VectorFile::open(&f.index.parent().unwrap().join("data").join("base.fbin"))
        .unwrap()
        .read_all_f32()
        .unwrap();
    let exact = pool().install(|| {
        m3::exact::exact_knn(base.view(), f.queries.view(), K, Metric::Cosine).unwrap()
    });
    let gt_path = dir.path().join("gt.ibin");
    m3::exact::to_ground_truth(&exact, K, Metric::Cosine)
        .unwrap()
        .write(&gt_path)
        .unwrap();
    let mut params = SearchParams::new(K);
    params.nprobe = 4;
    params.qprobe = 2;
    params.edges = 4;
    params.rerank = 30;
    let served = 60;
    let sub = Matrix::from_vec(f.queries.as_slice()[..served * 32].to_vec(), 32).unwrap();
    let lib = search_batch(
        &index,
        sub.view(),
        &params,
        pool(),
        &BatchOptions::default(),
    )
    .unwrap();
    let table = m3::search::results_table(&lib.results, &params, Metric::Cosine).unwrap();
    let gt = GroundTruth::read(&gt_path).unwrap();
    let gt_sub = GroundTruth {
        ids: Matrix::from_vec(gt.ids.as_slice()[..served * K].to_vec(), K).unwrap(),
        dists: gt
            .dists
            .as_ref()
            .map(|d| Matrix::from_vec(d.as_slice()[..served * K].to_vec(), K).unwrap()),
    };
    let want = m3::exact::recall_at_k(
        table.ids.view(),
        table.dists.as_ref().map(|d| d.view()),
        &gt_sub,
        K,
        Metric::Cosine,
    )
    .unwrap()
    .mean;

    let server = start_with(index, config());
    let out = m3()
        .arg("loadtest")
        .arg("--url")
        .arg(format!("http://{}", server.addr()))
        .arg("--queries")
        .arg(&f.queries_path)
        .arg("--gt")
        .arg(&gt_path)
        .args([
            "--k", "10", "--nprobe", "4", "--qprobe", "2", "--edges", "4",
        ])
        .args(["--rerank", "30", "--concurrency", "1,3", "--requests"])
        .arg(served.to_string())
        .args(["--duration-secs", "60", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let levels: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(levels.len(), 2);
    for (level, c) in levels.iter().zip([1, 3]) {
        assert_eq!(level["concurrency"], c);
        assert_eq!(level["ok"], served);
        assert_eq!(level["errors"], 0);
        let recall = level["recall_at_k"].as_f64().unwrap();
        assert!((recall - want).abs() < 1e-9, "{recall} vs {want}");
        assert!(level["lat_p50_us"].as_f64().unwrap() > 0.0);
    }
    server.shutdown().unwrap();

    let out = m3()
        .arg("loadtest")
        .args(["--url", "http://10.0.0.1:7700", "--queries"])
        .arg(&f.queries_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

/// Exact and range search over HTTP on a multi-vector index take block weights and answer
/// as the library's `ExactSearcher` with the same weights; a block the index lacks is a 400
/// naming the field.
#[test]
fn serve_exact_and_range_take_block_weights_on_a_multi_vector_index() {
    use m3::build::BlockInput;
    use m3::synth::multiblock::{MultiblockModel, MultiblockParams};

    let tmp = tempfile::tempdir().unwrap();
    let names = ["img", "txt"];
    let model = MultiblockModel::new(
        MultiblockParams {
            dims: vec![6, 4],
            scales: vec![1.0, 10.0],
            concepts: 8,
            seed: 3,
            ..MultiblockParams::default()
        },
        SplitSizes {
            base: 600,
            queries: 6,
            training: 0,
        },
    )
    .unwrap();
    let files: Vec<_> = (0..2)
        .map(|b| {
            let spec = WriteSpec {
                out_dir: tmp.path().join(names[b]),
                dtype: DType::F32,
                batch_chunks: 2,
            };
            write_dataset(&model.block(b), &spec, pool()).unwrap()
        })
        .collect();
    let blocks = files
        .iter()
        .zip(names)
        .map(|(f, name)| BlockInput {
            name: name.into(),
            path: f.base.clone(),
            weight: 1.0,
        })
        .collect();
    let out = tmp.path().join("idx");
    let mut p = BuildParams::with_blocks(blocks, Metric::L2, out.clone());
    p.clusters.target_size = 64;
    p.pq.subspaces = Some(5);
    p.pq.train_rows = 600;
    build_index(&p, pool(), &Silent).unwrap();
    let index = Arc::new(Index::open(&out, IoBackend::Pread, &ReaderOptions::default()).unwrap());
    let server = start_with(index.clone(), config());
    let addr = server.addr();
    // Query vectors are the blocks concatenated.
    let parts: Vec<_> = files
        .iter()
        .map(|f| {
            VectorFile::open(&f.queries)
                .unwrap()
                .read_all_f32()
                .unwrap()
        })
        .collect();
    let rows: Vec<Vec<f32>> = (0..6)
        .map(|i| [parts[0].row(i), parts[1].row(i)].concat())
        .collect();
    let mut ex = ExactSearcher::new(&index);
    let natural = |r: &[m3::exact::Neighbor]| -> (Vec<u64>, Vec<f32>) {
        (
            r.iter().map(|n| u64::from(n.id)).collect(),
            r.iter().map(|n| Metric::L2.to_natural(n.dist)).collect(),
        )
    };
    for given in [
        vec![("img", 1.0f32), ("txt", 0.0)],
        vec![("img", 0.2), ("txt", 3.0)],
    ] {
        let by_name: serde_json::Map<String, serde_json::Value> = given
            .iter()
            .map(|(n, w)| (n.to_string(), serde_json::json!(w)))
            .collect();
        let pairs: Vec<(String, f32)> = given.iter().map(|(n, w)| (n.to_string(), *w)).collect();
        let w = index.block_weights(&pairs, &[true, true]).unwrap();
        ex.set_block_weights(Some(&w)).unwrap();
        let want: Vec<_> = rows
            .iter()
            .map(|r| natural(&ex.knn(r, K).unwrap().0))
            .collect();
        let r = post_json(
            addr,
            "/v1/search",
            &serde_json::json!({"vectors": rows, "k": K, "exact": true,
                                "knobs": {"block_weights": by_name}}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let resp: SearchResponse = r.json();
        let got: Vec<_> = resp
            .results
            .iter()
            .map(|r| (r.ids.clone(), r.distances.clone()))
            .collect();
        assert_same_answers(&got, &want, &format!("exact {given:?}"));

        let radius = want[0].1[4];
        let want: Vec<_> = rows
            .iter()
            .map(|r| natural(&ex.range(r, radius).unwrap().0))
            .collect();
        let r = post_json(
            addr,
            "/v1/range",
            &serde_json::json!({"vectors": rows, "radius": radius, "block_weights": by_name}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let resp: SearchResponse = r.json();
        let got: Vec<_> = resp
            .results
            .iter()
            .map(|r| (r.ids.clone(), r.distances.clone()))
            .collect();
        assert_same_answers(&got, &want, &format!("range {given:?}"));
        assert!(got[0].0.len() >= 5, "{:?}", got[0]);
    }
    // The weights change the answer: text-only and image-only exact top-k differ.
    let answer = |w: serde_json::Value| {
        let r = post_json(
            addr,
            "/v1/search",
            &serde_json::json!({"vectors": [rows[0]], "k": K, "exact": true,
                                "knobs": {"block_weights": w}}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json::<SearchResponse>().results[0].ids.clone()
    };
    assert_ne!(
        answer(serde_json::json!({"img": 1.0, "txt": 0.0})),
        answer(serde_json::json!({"img": 0.0, "txt": 1.0}))
    );
    let r = post_json(
        addr,
        "/v1/range",
        &serde_json::json!({"vectors": [rows[0]], "radius": 1.0, "block_weights": {"audio": 1.0}}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.error().error.field.as_deref(), Some("block_weights"));
}

// ---------------------------------------------------------------------------------------------
// Live updates: POST /v1/upsert, POST /v1/delete
// ---------------------------------------------------------------------------------------------

/// A copy of the fixture index that a test may update.
fn writable_copy(to: &std::path::Path) -> std::path::PathBuf {
    let dst = to.join("idx");
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&fixture().index).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    dst
}

fn open_at(dir: &std::path::Path) -> Arc<Index> {
    Arc::new(Index::open(dir, IoBackend::Pread, &ReaderOptions::default()).unwrap())
}

/// Exact top ids of `vector` from the server.
fn exact_top(addr: std::net::SocketAddr, key: &[(&str, &str)], vector: &[f32]) -> Vec<u64> {
    let body = serde_json::json!({"vectors": [vector], "k": 3, "exact": true});
    let r = post(addr, "/v1/search", &serde_json::to_vec(&body).unwrap(), key);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json::<SearchResponse>().results[0].ids.clone()
}

/// Upserts and deletes over HTTP need the key (401 without), refuse bad ids, dimensions and
/// values (400 naming the field), and once answered 200 are seen by the next search (exact
/// and approximate) and survive a restart.
#[test]
fn serve_upsert_and_delete_are_durable_and_searched() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = writable_copy(tmp.path());
    let server = start_with(
        open_at(&dir),
        ServeConfig {
            api_key: Some(ApiKey::new(b"w-key").unwrap()),
            ..config()
        },
    );
    let addr = server.addr();
    let key = [("authorization", "Bearer w-key")];
    let q = &fixture().queries;
    let v = |i: usize| q.row(i).to_vec();
    let upsert = |ids: &[u64], rows: &[Vec<f32>]| {
        let body = serde_json::json!({"ids": ids, "vectors": rows});
        post(
            addr,
            "/v1/upsert",
            &serde_json::to_vec(&body).unwrap(),
            &key,
        )
    };
    // No key, a wrong key.
    for headers in [&[][..], &[("authorization", "Bearer nope")][..]] {
        let body = br#"{"ids":[1],"vectors":[[0.5]]}"#;
        assert_eq!(post(addr, "/v1/upsert", body, headers).status, 401);
        assert_eq!(
            post(addr, "/v1/delete", br#"{"ids":[1]}"#, headers).status,
            401
        );
    }
    // Bad requests: each 400, naming the field.
    let dim = q.dim();
    let mut long = v(0);
    long.push(1.0);
    let bad: Vec<(Vec<u8>, &str, &str)> = vec![
        (
            serde_json::to_vec(&serde_json::json!({"ids": [1, 2], "vectors": [v(0)]})).unwrap(),
            "/v1/upsert",
            "ids",
        ),
        (
            serde_json::to_vec(&serde_json::json!({"ids": [1], "vectors": [long]})).unwrap(),
            "/v1/upsert",
            "vectors[0]",
        ),
        (
            format!(
                r#"{{"ids":[-1],"vectors":[[{}]]}}"#,
                vec!["0.5"; dim].join(",")
            )
            .into_bytes(),
            "/v1/upsert",
            "ids[0]",
        ),
        (
            format!(
                r#"{{"ids":["a"],"vectors":[[{}]]}}"#,
                vec!["0.5"; dim].join(",")
            )
            .into_bytes(),
            "/v1/upsert",
            "ids[0]",
        ),
        (
            // Beyond f32: infinite once parsed.
            format!(
                r#"{{"ids":[1],"vectors":[[1e39{}]]}}"#,
                ",0.5".repeat(dim - 1)
            )
            .into_bytes(),
            "/v1/upsert",
            "vectors[0][0]",
        ),
        (br#"{"ids":[]}"#.to_vec(), "/v1/delete", "ids"),
        (br#"{"ids":[1.5]}"#.to_vec(), "/v1/delete", "ids[0]"),
    ];
    for (body, path, field) in &bad {
        let r = post(addr, path, body, &key);
        assert_eq!(
            r.status,
            400,
            "{path} {}: {}",
            String::from_utf8_lossy(body),
            r.text()
        );
        assert_eq!(
            r.error().error.field.as_deref(),
            Some(*field),
            "{}",
            r.text()
        );
    }
    // NaN is not JSON: refused as a body that does not parse.
    let nan = format!(
        r#"{{"ids":[1],"vectors":[[NaN{}]]}}"#,
        ",0.5".repeat(dim - 1)
    );
    assert_eq!(post(addr, "/v1/upsert", nan.as_bytes(), &key).status, 400);
    // Nothing of the refused requests was written.
    let r = get(addr, "/v1/index", &key);
    assert_eq!(r.json::<serde_json::Value>()["live"]["generation"], 0);

    // Three new vectors: each the nearest of its own query once the 200 is back.
    let new_ids = [1u64 << 40, (1 << 40) + 1, (1 << 40) + 2];
    let r = upsert(&new_ids, &[v(0), v(1), v(2)]);
    assert_eq!(r.status, 200, "{}", r.text());
    let w: m3::serve::WriteResponse = r.json();
    assert_eq!((w.generation, w.requests_in_commit), (1, 1));
    for (i, id) in new_ids.iter().enumerate() {
        assert_eq!(exact_top(addr, &key, &v(i))[0], *id);
    }
    // Delete one of them and the base vector nearest to query 5.
    let base_top = exact_top(addr, &key, &v(5))[0];
    let body = serde_json::json!({"ids": [new_ids[1], base_top]});
    let r = post(
        addr,
        "/v1/delete",
        &serde_json::to_vec(&body).unwrap(),
        &key,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json::<m3::serve::WriteResponse>().generation, 2);
    assert!(!exact_top(addr, &key, &v(1)).contains(&new_ids[1]));
    assert!(!exact_top(addr, &key, &v(5)).contains(&base_top));
    // Upsert of a base id: its vector is replaced.
    let r = upsert(&[7], &[v(9)]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(exact_top(addr, &key, &v(9))[0], 7);
    // Approximate search never returns a deleted id.
    for i in [1usize, 5] {
        let r = post(addr, "/v1/search", &search_body(i..i + 1, None), &key);
        let ids = &r.json::<SearchResponse>().results[0].ids;
        assert!(
            !ids.contains(&new_ids[1]) && !ids.contains(&base_top),
            "{ids:?}"
        );
    }
    assert_eq!(
        get(addr, "/v1/index", &key).json::<serde_json::Value>()["live"]["generation"],
        3
    );
    server.shutdown().unwrap();
    // Durable: a fresh open answers the same.
    let index = open_at(&dir);
    assert_eq!(index.live_info().generation, 3);
    let mut ex = ExactSearcher::new(&index);
    let top =
        |ex: &mut ExactSearcher<'_>, i: usize| index.user_id(ex.knn(&v(i), 1).unwrap().0[0].id);
    assert_eq!(top(&mut ex, 0), new_ids[0]);
    assert_eq!(top(&mut ex, 9), 7);
    assert_ne!(top(&mut ex, 5), base_top);
    m3::verify(&dir).unwrap();
}

/// Concurrent write requests share one commit: the writer thread is held (by the test's write
/// hook) on the first request until the others are queued, then commits them all with one
/// fsync: one commit for every request, each answered with the same generation; searches run
/// meanwhile, and every written vector is found afterwards.
#[test]
fn serve_group_commit_batches_concurrent_writes() {
    const N: usize = 8;
    let tmp = tempfile::tempdir().unwrap();
    let dir = writable_copy(tmp.path());
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let hook = m3::serve::WriteHook::new(move |queued| {
        if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
            let t = Instant::now();
            while queued() < N - 1 {
                assert!(
                    t.elapsed() < Duration::from_secs(60),
                    "requests never queued"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
    let server = start_with(
        open_at(&dir),
        ServeConfig {
            write_hook: Some(hook),
            ..config()
        },
    );
    let addr = server.addr();
    let q = &fixture().queries;
    let replies: Vec<m3::serve::WriteResponse> = std::thread::scope(|s| {
        let writers: Vec<_> = (0..N)
            .map(|i| {
                s.spawn(move || {
                    let body = serde_json::json!({"ids": [5000 + i as u64 * 1000], "vectors": [q.row(20 + i)]});
                    let r = post_json(addr, "/v1/upsert", &body);
                    assert_eq!(r.status, 200, "{}", r.text());
                    r.json()
                })
            })
            .collect();
        // Searches are answered while the writer is held.
        let r = post(addr, "/v1/search", &search_body(0..4, None), &[]);
        assert_eq!(r.status, 200, "{}", r.text());
        writers.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for w in &replies {
        assert_eq!((w.generation, w.requests_in_commit), (1, N), "{w:?}");
    }
    let text = get(addr, "/metrics", &[]).text();
    assert_eq!(metric_in(&text, "m3_commits_total"), Some(1.0), "{text}");
    assert_eq!(metric_in(&text, "m3_write_requests_total"), Some(N as f64));
    for i in 0..N {
        assert_eq!(
            exact_top(addr, &[], q.row(20 + i))[0],
            5000 + i as u64 * 1000
        );
    }
    server.shutdown().unwrap();
}

/// An upsert of one id to `m3 serve`: `Some(status)`, or `None` when the connection failed
/// (the server was killed before it answered).
fn try_upsert(addr: std::net::SocketAddr, id: u64, vector: &[f32]) -> Option<u16> {
    let body = serde_json::json!({"ids": [id], "vectors": [vector]});
    agent()
        .post(format!("http://{addr}/v1/upsert"))
        .header("content-type", "application/json")
        .send(&serde_json::to_vec(&body).unwrap()[..])
        .ok()
        .map(|r| reply(r).status)
}

/// `m3 serve` killed with SIGKILL while a client streams upserts, twice on the same index:
/// every upsert answered 200 is in the index afterwards (its vector's exact nearest is its
/// id), the one in flight is wholly in or wholly out (the live count says which), and the
/// index verifies.
#[test]
fn serve_binary_killed_during_upserts_keeps_every_acknowledged_write() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = writable_copy(tmp.path());
    let q = &fixture().queries;
    let base_live = open_at(&dir).live_vectors();
    // A vector of its own per id: a query row moved along its first component.
    let vector = |id: u64| {
        let mut v = q.row((id % q.rows() as u64) as usize).to_vec();
        v[0] += 0.01 * (1 + (id & 0xffff)) as f32;
        v
    };
    let mut acked: Vec<u64> = Vec::new();
    let mut maybe = 0u64;
    for (run, kill_after) in [3usize, 9].into_iter().enumerate() {
        let mut child = m3()
            .arg("serve")
            .arg("--index")
            .arg(&dir)
            .args(["--addr", "127.0.0.1:0", "--threads", "2", "--io", "pread"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let addr = listening_addr(&mut child, &mut stderr);
        // Keep the pipe drained so that the server never blocks on its log.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        let (tx, rx) = std::sync::mpsc::channel::<(u64, bool)>();
        let first = (run as u64 + 1) << 32;
        let client = std::thread::spawn(move || {
            for id in first..first + 500 {
                let ok = try_upsert(addr, id, &vector(id)) == Some(200);
                if tx.send((id, ok)).is_err() || !ok {
                    break;
                }
            }
        });
        for _ in 0..kill_after {
            let (id, ok) = rx.recv().unwrap();
            assert!(ok, "upsert {id} failed before the kill");
            acked.push(id);
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        client.join().unwrap();
        // Answers that arrived before the kill landed are acknowledged too; the first
        // failure is the request in flight.
        for (id, ok) in rx.iter() {
            if ok {
                acked.push(id);
            } else {
                maybe += 1;
            }
        }
        let index = open_at(&dir);
        let live = index.live_vectors() - base_live;
        assert!(
            live >= acked.len() as u64 && live <= acked.len() as u64 + maybe,
            "run {run}: {live} inserted, {} acknowledged, {maybe} in flight",
            acked.len()
        );
        let mut ex = ExactSearcher::new(&index);
        for &id in &acked {
            let (got, _) = ex.knn(&vector(id), 1).unwrap();
            assert_eq!(index.user_id(got[0].id), id, "run {run}: id {id} lost");
        }
        eprintln!(
            "run {run}: {} acknowledged, {maybe} cut by the kill, {live} inserted",
            acked.len()
        );
        maybe = live - acked.len() as u64; // an in-flight write that landed is acknowledged now
        m3::verify(&dir).unwrap();
    }
}

/// The writer thread merges per cluster (decision 0012) after a commit that takes clusters
/// past the default thresholds (`merge_min_change` 0: whatever the changes add up to):
/// `m3_merges_total` counts it, every upserted vector is found by exact search afterwards
/// (searches answered meanwhile), the index on disk is format 2.0 and verifies, and writes go
/// on on top of it.
#[test]
fn serve_merges_per_cluster_after_commits_past_the_thresholds() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = writable_copy(tmp.path());
    let config = ServeConfig {
        merge_min_change: 0.0,
        ..config()
    };
    let server = start_with(open_at(&dir), config);
    let addr = server.addr();
    let q = &fixture().queries;
    let rows = q.rows().min(300);
    for chunk in (0..rows).collect::<Vec<_>>().chunks(50) {
        let ids: Vec<u64> = chunk.iter().map(|&i| 90_000 + i as u64).collect();
        let vectors: Vec<&[f32]> = chunk.iter().map(|&i| q.row(i)).collect();
        let body = serde_json::json!({"ids": ids, "vectors": vectors});
        let r = post_json(addr, "/v1/upsert", &body);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    for i in (0..rows).step_by(37) {
        assert_eq!(exact_top(addr, &[], q.row(i))[0], 90_000 + i as u64);
    }
    // The writer thread starts a merge beside it after a commit; a compaction is answered
    // after that merge is published (and its own, if it chooses any cluster).
    let body = serde_json::json!({"ids": [90_000u64]});
    assert_eq!(post_json(addr, "/v1/delete", &body).status, 200);
    assert_eq!(post(addr, "/v1/compact", b"{}", &[]).status, 200);
    let text = get(addr, "/metrics", &[]).text();
    let merges = metric_in(&text, "m3_merges_total").unwrap_or(0.0);
    assert!(merges >= 1.0, "no merge ran: {text}");
    assert_ne!(exact_top(addr, &[], q.row(0))[0], 90_000);
    for i in (1..rows).step_by(37) {
        assert_eq!(exact_top(addr, &[], q.row(i))[0], 90_000 + i as u64);
    }
    server.shutdown().unwrap();
    let m = m3::format::Manifest::read(&dir.join("manifest.m3")).unwrap();
    assert_eq!(m.meta.flags & 32, 32, "the merged index is format 2.0");
    m3::verify(&dir).unwrap();
}

/// `POST /v1/compact` (behind the API key): 401 without the key or with a wrong one (nothing
/// merged); with the key a merge of every cluster (`{"all": true}`) runs now and is answered
/// once the merged generation is installed: the reply counts the clusters and records, the
/// next search sees the upserted vectors, the index on disk is a verified 2.0 index with no
/// log; a second `{}` (default policy, nothing left past it) answers `merged: false`; a bad
/// body is 400.
#[test]
fn serve_compact_merges_now_behind_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = writable_copy(tmp.path());
    let server = start_with(
        open_at(&dir),
        ServeConfig {
            api_key: Some(ApiKey::new(b"c-key").unwrap()),
            ..config()
        },
    );
    let addr = server.addr();
    let key = [("authorization", "Bearer c-key")];
    let q = &fixture().queries;
    let ids: Vec<u64> = (0..20).map(|i| 70_000 + i).collect();
    let vectors: Vec<&[f32]> = (0..20).map(|i| q.row(i)).collect();
    let body = serde_json::to_vec(&serde_json::json!({"ids": ids, "vectors": vectors})).unwrap();
    assert_eq!(post(addr, "/v1/upsert", &body, &key).status, 200);
    for headers in [&[][..], &[("authorization", "Bearer nope")][..]] {
        let r = post(addr, "/v1/compact", br#"{"all": true}"#, headers);
        assert_eq!(r.status, 401);
    }
    let m = m3::format::Manifest::read(&dir.join("manifest.m3")).unwrap();
    assert_eq!(m.meta.flags & 32, 0, "nothing merged without the key");
    assert_eq!(post(addr, "/v1/compact", br#"{"al": 1}"#, &key).status, 400);
    let r = post(addr, "/v1/compact", br#"{"all": true}"#, &key);
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
    assert_eq!(v["merged"], true, "{v}");
    assert!(v["clusters"].as_u64().unwrap() > 0, "{v}");
    let live = open_at(&dir).live_vectors();
    assert!(v["records_written"].as_u64().unwrap() >= live, "{v}");
    let text = get(addr, "/metrics", &[("authorization", "Bearer c-key")]).text();
    assert!(metric_in(&text, "m3_merges_total").unwrap_or(0.0) >= 1.0);
    for i in (0..20).step_by(3) {
        assert_eq!(exact_top(addr, &key, q.row(i))[0], 70_000 + i as u64);
    }
    let m = m3::format::Manifest::read(&dir.join("manifest.m3")).unwrap();
    assert_eq!(m.meta.flags & 32, 32, "the merged index is format 2.0");
    assert!(!dir.join("wal.m3").exists() || open_at(&dir).live_info().inserted == 0);
    let r = post(addr, "/v1/compact", b"{}", &key);
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
    assert_eq!(v["merged"], false, "{v}");
    server.shutdown().unwrap();
    m3::verify(&dir).unwrap();
}

/// `merge_min_change` holds merges back until the chosen clusters' changes reach that
/// fraction of the index: at 1.0 the writes that make the default server merge (above) leave
/// the index unmerged (format 1.x, no merge counted), and every write is still found.
#[test]
fn serve_holds_merges_below_the_minimum_change() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = writable_copy(tmp.path());
    let config = ServeConfig {
        merge_min_change: 1.0,
        ..config()
    };
    let server = start_with(open_at(&dir), config);
    let addr = server.addr();
    let q = &fixture().queries;
    let rows = q.rows().min(300);
    for chunk in (0..rows).collect::<Vec<_>>().chunks(50) {
        let ids: Vec<u64> = chunk.iter().map(|&i| 90_000 + i as u64).collect();
        let vectors: Vec<&[f32]> = chunk.iter().map(|&i| q.row(i)).collect();
        let body = serde_json::json!({"ids": ids, "vectors": vectors});
        assert_eq!(post_json(addr, "/v1/upsert", &body).status, 200);
    }
    let body = serde_json::json!({"ids": [90_000u64]});
    assert_eq!(post_json(addr, "/v1/delete", &body).status, 200);
    let text = get(addr, "/metrics", &[]).text();
    assert_eq!(
        metric_in(&text, "m3_merges_total").unwrap_or(0.0),
        0.0,
        "{text}"
    );
    for i in (1..rows).step_by(37) {
        assert_eq!(exact_top(addr, &[], q.row(i))[0], 90_000 + i as u64);
    }
    server.shutdown().unwrap();
    let m = m3::format::Manifest::read(&dir.join("manifest.m3")).unwrap();
    assert_eq!(m.meta.flags & 32, 0, "the index was merged");
    m3::verify(&dir).unwrap();
}

/// Writes are committed while a merge runs beside the writer: with the merge held (a hook on
/// the merge thread, after the merge is written and before its publication) upserts and a
/// delete are answered 200 and found by the next search, no merge is published yet; released,
/// the merge is published with those writes carried into it (`m3_merge_carried_ops_total`
/// counts them), and after a compaction every write is found, the delete holds, the index on
/// disk is a verified 2.0 index and every id is there after a reopen.
#[test]
fn serve_commits_writes_while_a_merge_runs_and_carries_them_into_it() {
    use std::sync::Mutex;
    use std::sync::mpsc::channel;
    let tmp = tempfile::tempdir().unwrap();
    let dir = writable_copy(tmp.path());
    let (started_tx, started_rx) = channel::<()>();
    let (release_tx, release_rx) = channel::<()>();
    let (started_tx, release_rx) = (Mutex::new(started_tx), Mutex::new(release_rx));
    let hook = m3::serve::MergeHook::new(move || {
        let _ = started_tx.lock().unwrap().send(());
        // Released once by the test; later merges pass (the sender is dropped).
        let _ = release_rx.lock().unwrap().recv();
    });
    let config = ServeConfig {
        merge_min_change: 0.0,
        merge_hook: Some(hook),
        ..config()
    };
    let server = start_with(open_at(&dir), config);
    let addr = server.addr();
    let q = &fixture().queries;
    let rows = q.rows().min(300);
    let upsert = |ids: &[u64], rows: &[usize]| {
        let vectors: Vec<&[f32]> = rows.iter().map(|&i| q.row(i)).collect();
        let body = serde_json::json!({"ids": ids, "vectors": vectors});
        let r = post_json(addr, "/v1/upsert", &body);
        assert_eq!(r.status, 200, "{}", r.text());
    };
    // 60 vectors close to query 0 all go to its cluster: past the policy's threshold.
    let near: Vec<Vec<f32>> = (0..60)
        .map(|j| {
            let mut v = q.row(0).to_vec();
            let d = v.len();
            v[j % d] += 0.01 * (1 + j / d) as f32;
            v
        })
        .collect();
    let ids: Vec<u64> = (0..60).map(|j| 80_000 + j).collect();
    let body = serde_json::json!({"ids": ids, "vectors": near});
    assert_eq!(post_json(addr, "/v1/upsert", &body).status, 200);
    started_rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the commit past the thresholds started a merge");
    // The merge is written and held: writes go on.
    let second: Vec<usize> = (1..rows).collect();
    for chunk in second.chunks(25) {
        let ids: Vec<u64> = chunk.iter().map(|&i| 90_000 + i as u64).collect();
        upsert(&ids, chunk);
    }
    let body = serde_json::json!({"ids": [90_001u64]});
    assert_eq!(post_json(addr, "/v1/delete", &body).status, 200);
    let text = get(addr, "/metrics", &[]).text();
    assert_eq!(metric_in(&text, "m3_merges_total"), Some(0.0), "{text}");
    for i in (2..rows).step_by(17) {
        assert_eq!(exact_top(addr, &[], q.row(i))[0], 90_000 + i as u64);
    }
    assert_ne!(exact_top(addr, &[], q.row(1))[0], 90_001);
    release_tx.send(()).unwrap();
    drop(release_tx);
    assert_eq!(post(addr, "/v1/compact", b"{}", &[]).status, 200);
    let text = get(addr, "/metrics", &[]).text();
    assert!(
        metric_in(&text, "m3_merges_total").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    let carried = metric_in(&text, "m3_merge_carried_ops_total").unwrap_or(0.0);
    assert!(carried >= rows as f64, "{carried}: {text}");
    assert_ne!(exact_top(addr, &[], q.row(1))[0], 90_001);
    for i in (2..rows).step_by(13) {
        assert_eq!(exact_top(addr, &[], q.row(i))[0], 90_000 + i as u64);
    }
    server.shutdown().unwrap();
    let m = m3::format::Manifest::read(&dir.join("manifest.m3")).unwrap();
    assert_eq!(m.meta.flags & 32, 32, "the merged index is format 2.0");
    m3::verify(&dir).unwrap();
    let index = open_at(&dir);
    let mut exact = ExactSearcher::new(&index);
    for i in (2..rows).step_by(7) {
        let (got, _) = exact.knn(q.row(i), 1).unwrap();
        assert_eq!(index.user_id(got[0].id), 90_000 + i as u64);
    }
}

/// On a u8 index `POST /v1/upsert` takes integers in 0..=255 (as JSON numbers) and answers
/// 400 naming `vectors[i][j]` for 300.0 or 1.5, writing nothing; accepted upserts are found
/// by exact search, a deleted one by neither exact nor approximate search, and the writes
/// survive a restart in the index's own type.
#[test]
fn serve_upsert_on_a_u8_index_checks_the_values() {
    use rand::{Rng, SeedableRng};
    const DIM: usize = 16;
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(13);
    let mut row = || -> Vec<f32> { (0..DIM).map(|_| f32::from(rng.random::<u8>())).collect() };
    let base: Vec<u8> = (0..600).flat_map(|_| row()).map(|x| x as u8).collect();
    let base_path = tmp.path().join("base.u8bin");
    m3::data::format::write_matrix(&base_path, Matrix::from_vec(base, DIM).unwrap().view())
        .unwrap();
    let dir = tmp.path().join("idx");
    let mut p = BuildParams::new(base_path, Metric::L2, dir.clone());
    p.clusters.target_size = 60;
    p.pq.subspaces = Some(4);
    p.graph.max_degree = 8;
    p.graph.candidates = 16;
    p.seed = 5;
    build_index(&p, pool(), &Silent).unwrap();
    assert_eq!(open_at(&dir).element_type(), DType::U8);
    let server = start_with(
        open_at(&dir),
        ServeConfig {
            api_key: Some(ApiKey::new(b"u8-key").unwrap()),
            ..config()
        },
    );
    let addr = server.addr();
    let key = [("authorization", "Bearer u8-key")];
    let upsert = |ids: &[u64], rows: &[Vec<f32>]| {
        let body = serde_json::json!({"ids": ids, "vectors": rows});
        post(
            addr,
            "/v1/upsert",
            &serde_json::to_vec(&body).unwrap(),
            &key,
        )
    };
    let (a, b) = (row(), row());
    for (x, field) in [(300.0f32, "vectors[1][3]"), (1.5, "vectors[1][3]")] {
        let mut bad = b.clone();
        bad[3] = x;
        let r = upsert(&[1 << 40, (1 << 40) + 1], &[a.clone(), bad]);
        assert_eq!(r.status, 400, "{x}: {}", r.text());
        assert_eq!(
            r.error().error.field.as_deref(),
            Some(field),
            "{}",
            r.text()
        );
        assert!(r.text().contains("u8"), "{}", r.text());
    }
    let live = |addr| get(addr, "/v1/index", &key).json::<serde_json::Value>()["live"].clone();
    assert_eq!(
        live(addr)["generation"],
        0,
        "nothing of the refused requests written"
    );
    let ids = [1u64 << 40, (1 << 40) + 1];
    let r = upsert(&ids, &[a.clone(), b.clone()]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(exact_top(addr, &key, &a)[0], ids[0]);
    assert_eq!(exact_top(addr, &key, &b)[0], ids[1]);
    let body = serde_json::json!({"ids": [ids[1]]});
    let r = post(
        addr,
        "/v1/delete",
        &serde_json::to_vec(&body).unwrap(),
        &key,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!exact_top(addr, &key, &b).contains(&ids[1]));
    let body = serde_json::json!({"vectors": [b], "k": 10});
    let r = post(
        addr,
        "/v1/search",
        &serde_json::to_vec(&body).unwrap(),
        &key,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.json::<SearchResponse>().results[0].ids.contains(&ids[1]));
    assert_eq!(live(addr)["generation"], 2);
    server.shutdown().unwrap();
    let index = open_at(&dir);
    assert_eq!(
        (index.element_type(), index.live_vectors()),
        (DType::U8, 601)
    );
    let (got, _) = ExactSearcher::new(&index).knn(&a, 1).unwrap();
    assert_eq!(index.user_id(got[0].id), ids[0]);
    m3::verify(&dir).unwrap();
}

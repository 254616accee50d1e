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
use m3::serve::{Knobs, Limits, SearchRequest, SearchResponse, ServeConfig};
use serve_support::*;

/// `(ids, natural distances)` of every result of a 200 answer.
fn answers_of(r: &Reply) -> Vec<(Vec<u64>, Vec<f32>)> {
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
    let natural = |r: &[m3::exact::Neighbor]| -> (Vec<u64>, Vec<f32>) {
        (
            r.iter().map(|n| u64::from(n.id)).collect(),
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
        r.iter().map(|n| u64::from(n.id)).collect::<Vec<_>>() != want_approx[qi].0
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

// ---------------------------------------------------------------------------------------------
// Clients that stall
// ---------------------------------------------------------------------------------------------

/// As many clients as there are admission slots (64, the default), each stalled half-way
/// through its body, hold no slot: a real search still gets 200 (not 429), and so do exact
/// and range requests. Their bodies are read before a slot is taken.
#[test]
fn serve_stalled_bodies_do_not_hold_admission_slots() {
    let slots = Limits::default().max_concurrent_requests;
    let server = start(ServeConfig {
        limits: Limits {
            deadline: Duration::from_secs(120),
            ..Limits::default()
        },
        body_timeout: Duration::from_secs(120),
        ..config()
    });
    let addr = server.addr();
    let body = search_body(0..4, None);
    let stalled: Vec<SlowRequest> = (0..slots)
        .map(|_| SlowRequest::start(addr, "/v1/search", &body, body.len() / 2, ""))
        .collect();
    // Every stalled request is being handled (the /metrics request counts itself).
    wait_in_flight(addr, slots as f64 + 1.0);
    for i in 0..3 {
        let r = post(addr, "/v1/search", &search_body(i..i + 2, None), &[]);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = post(addr, "/v1/search", &marked_body(0, 0.5, true), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    // The stalled clients can still finish.
    for s in stalled.into_iter().take(2) {
        let (status, resp) = s.finish();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
    }
    server.shutdown().unwrap_or_else(|e| panic!("{e}"));
}

/// A body that pauses longer than the body timeout gets 408 naming it, long before the
/// request deadline.
#[test]
fn serve_a_stalled_body_gets_408_after_the_body_timeout() {
    let server = start(ServeConfig {
        limits: Limits {
            deadline: Duration::from_secs(600),
            ..Limits::default()
        },
        body_timeout: Duration::from_millis(300),
        ..config()
    });
    let addr = server.addr();
    let body = search_body(0..2, None);
    let t = Instant::now();
    let (status, resp) = SlowRequest::start(addr, "/v1/search", &body, 10, "").read_response();
    let text = String::from_utf8_lossy(&resp);
    assert_eq!(status, 408, "{text}");
    assert!(text.contains("body timeout"), "{text}");
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    let r = post(addr, "/v1/search", &body, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    server.shutdown().unwrap();
}

/// Reads from `stream` until the server closes it (end of stream or a reset); returns what
/// arrived and when it closed. Fails if the connection is still open after 60 s.
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("the server did not close the connection: {e}"),
        }
    }
}

/// A connection that sends part of its headers and then nothing is closed by the server after
/// the header timeout; so is a keep-alive connection left idle after a response. Other
/// connections are served meanwhile.
#[test]
fn serve_closes_partial_header_and_idle_connections_after_the_header_timeout() {
    let timeout = Duration::from_millis(400);
    let server = start(ServeConfig {
        header_timeout: timeout,
        ..config()
    });
    let addr = server.addr();
    let partial: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"POST /v1/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
                .unwrap();
            s
        })
        .collect();
    let t = Instant::now();
    assert_eq!(get(addr, "/healthz", &[]).status, 200);
    for mut s in partial {
        let got = read_until_closed(&mut s);
        let text = String::from_utf8_lossy(&got);
        assert!(got.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
    }
    assert!(t.elapsed() >= timeout);

    // Keep-alive: one full request and response, then silence.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let t = Instant::now();
    let got = read_until_closed(&mut s);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.ends_with("ok\n"),
        "one whole response, then the close: {text}"
    );
    assert!(t.elapsed() >= timeout);
    server.shutdown().unwrap();
}

/// A client that sends a request and never reads its (large) answer has its connection closed
/// after the send timeout: it never gets the whole answer, even when it reads at last.
#[test]
fn serve_closes_a_connection_whose_client_does_not_read_after_the_send_timeout() {
    let server = start(ServeConfig {
        send_timeout: Duration::from_millis(300),
        ..config()
    });
    let addr = server.addr();
    // Every one of the 8,000 vectors is within similarity -1: about 140 KB of answer per
    // query vector, 80 MB in all, far more than the socket buffers hold.
    let q = &fixture().queries;
    let rows: Vec<Vec<f32>> = (0..600).map(|i| q.row(i % q.rows()).to_vec()).collect();
    let body = serde_json::to_vec(&serde_json::json!({"vectors": rows, "radius": -1.0})).unwrap();
    let mut stream = SlowRequest::start(addr, "/v1/range", &body, body.len(), "").stream;
    // The handler has produced the answer (the server is writing it) ...
    let t = Instant::now();
    while metric(
        addr,
        "m3_http_requests_total{endpoint=\"/v1/range\",status=\"200\"}",
    )
    .is_none()
    {
        assert!(t.elapsed() < Duration::from_secs(120), "no answer");
        std::thread::sleep(Duration::from_millis(20));
    }
    // ... and stalls on a client that does not read, far longer than the send timeout.
    std::thread::sleep(Duration::from_secs(3));
    let got = read_until_closed(&mut stream);
    let split = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("the head of the answer arrived")
        + 4;
    let head = String::from_utf8_lossy(&got[..split]).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .expect("content-length")
        .trim()
        .parse()
        .unwrap();
    assert!(length > 40 << 20, "{length}");
    assert!(
        got.len() - split < length,
        "the whole answer ({length} bytes) arrived"
    );
    assert_eq!(get(addr, "/healthz", &[]).status, 200);
    server.shutdown().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Drain deadline
// ---------------------------------------------------------------------------------------------

/// `m3 serve --drain-timeout-secs 1` with requests that cannot finish (a body that never
/// completes, and a search far longer than a second on the only worker) exits 1 well before
/// 4 s after SIGTERM, saying requests were still in flight; those requests' connections are
/// closed without a byte of answer, never with a cut-short one.
#[test]
fn serve_binary_holds_the_drain_deadline() {
    let f = fixture();
    let mut child = m3()
        .arg("serve")
        .arg("--index")
        .arg(&f.index)
        .args(["--addr", "127.0.0.1:0", "--threads", "1", "--inflight", "1"])
        .args(["--io", "pread", "--drain-timeout-secs", "1"])
        .args(["--deadline-ms", "600000", "--body-timeout-ms", "600000"])
        .args(["--max-vectors", "8000", "--max-body-bytes", "67108864"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let addr = listening_addr(&mut child, &mut stderr);
    let body = search_body(0..6, None);
    let stalled = SlowRequest::start(addr, "/v1/search", &body, body.len() / 3, "");
    // 8,000 queries, each probing every cluster and reranking 2,000 records, on one worker.
    let q = &f.queries;
    let heavy = serde_json::to_vec(&SearchRequest {
        vectors: (0..8000).map(|i| q.row(i % q.rows()).to_vec()).collect(),
        k: K,
        knobs: Some(Knobs {
            nprobe: Some(1024),
            rerank: Some(2000),
            early_stop: Some(false),
            ..Knobs::default()
        }),
        exact: false,
    })
    .unwrap();
    let heavy = SlowRequest::start(addr, "/v1/search", &heavy, heavy.len(), "");
    wait_queries_in_flight(addr);
    wait_in_flight(addr, 3.0);
    let sent = Instant::now();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(60),
            "still running 60 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = sent.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "exited {took:?} after SIGTERM"
    );
    assert!(
        took >= Duration::from_secs(1),
        "exited {took:?} after SIGTERM"
    );
    assert_eq!(status.code(), Some(1), "{status:?}");
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("still in flight"), "{rest}");
    for mut s in [stalled.stream, heavy.stream] {
        let got = read_until_closed(&mut s);
        assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    }
}

/// Waits until `/metrics` shows queries queued or running on the workers.
fn wait_queries_in_flight(addr: SocketAddr) {
    let t = Instant::now();
    while metric(addr, "m3_queries_in_flight").unwrap() < 1.0 {
        assert!(t.elapsed() < Duration::from_secs(60), "no query in flight");
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------------
// Panics on the search workers
// ---------------------------------------------------------------------------------------------

/// Queries that make their worker panic (approximate and exact, more panics than there are
/// workers, while other requests run on the same workers) are answered 500 naming the panic;
/// the other requests' answers equal the library's; afterwards both workers are alive (two
/// queries are held on workers at once) and the pool answers as before.
#[test]
fn serve_survives_worker_panics_with_all_workers() {
    let gate = Gate::new();
    let index = open_index();
    let server = start_with(
        index.clone(),
        ServeConfig {
            query_hook: Some(gate.hook()),
            ..config()
        },
    );
    let addr = server.addr();
    let knobs = Knobs {
        nprobe: Some(8),
        rerank: Some(60),
        ..Knobs::default()
    };
    let mut params = SearchParams::new(K);
    params.nprobe = 8;
    params.rerank = 60;
    let want = library_answers(&index, &params);
    let panics = 12;
    let served = std::thread::scope(|s| {
        let normal = s.spawn(|| server_answers(addr, &knobs, 5, 3));
        for i in 0..panics {
            let r = post(
                addr,
                "/v1/search",
                &marked_body(i, PANIC_MARK, i % 3 == 0),
                &[],
            );
            assert_eq!(r.status, 500, "{}", r.text());
            let msg = r.error().error.message;
            assert!(
                msg.contains("panicked") && msg.contains("injected"),
                "{msg}"
            );
        }
        normal.join().unwrap()
    });
    assert_same_answers(&served, &want, "answers around the panics");
    assert_eq!(metric(addr, "m3_worker_panics_total"), Some(panics as f64));
    // Both workers are alive: each holds one gated query at the same time.
    let held: Vec<_> = (0..2)
        .map(|i| {
            std::thread::spawn(move || {
                post(addr, "/v1/search", &marked_body(i, GATE_MARK, false), &[])
            })
        })
        .collect();
    gate.wait_held(2);
    gate.open();
    for h in held {
        let r = h.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_same_answers(
        &server_answers(addr, &knobs, 10, 2),
        &want,
        "after the panics",
    );
    server.shutdown().unwrap();
}

// ---------------------------------------------------------------------------------------------
// m3 loadtest
// ---------------------------------------------------------------------------------------------

/// `m3 loadtest` exits non-zero when the share of failed requests passes `--max-error-rate`
/// (default 1%): here every search is refused (k above the server's --max-k), though the
/// server itself answers; with `--max-error-rate 1` the same run exits 0. A port nothing
/// listens on is an error too.
#[test]
fn serve_loadtest_fails_when_requests_fail() {
    let f = fixture();
    let server = start(ServeConfig {
        limits: Limits {
            max_k: 5,
            ..Limits::default()
        },
        ..config()
    });
    let run = |extra: &[&str]| {
        m3().arg("loadtest")
            .arg("--url")
            .arg(format!("http://{}", server.addr()))
            .arg("--queries")
            .arg(&f.queries_path)
            .args(["--k", "10", "--concurrency", "1,2", "--requests", "20"])
            .args(["--duration-secs", "60", "--warmup", "0", "--json"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("max-error-rate"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let level: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(level["errors"], 20, "{stdout}");
    assert_eq!(
        stdout.lines().count(),
        1,
        "stops after the failing level: {stdout}"
    );
    let out = run(&["--max-error-rate", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    server.shutdown().unwrap();

    // A loopback port with no server behind it.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let out = m3()
        .arg("loadtest")
        .args(["--url", &format!("http://127.0.0.1:{port}"), "--queries"])
        .arg(&f.queries_path)
        .args(["--requests", "5", "--duration-secs", "10"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// At `max_connections` open connections the server accepts no more until one closes: a third
/// client's request waits (unanswered) while two idle connections hold the slots, and is
/// answered once one of them is closed.
#[test]
fn serve_accepts_at_most_max_connections_at_once() {
    let server = start(ServeConfig {
        max_connections: 2,
        header_timeout: Duration::from_secs(60),
        ..config()
    });
    let addr = server.addr();
    let mut idle: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
    // Prove both idle connections were accepted (and hold their slots): a request on each
    // is answered; they stay open afterwards (keep-alive).
    for s in &mut idle {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    }
    let mut third = TcpStream::connect(addr).unwrap(); // the kernel's backlog takes it
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 256];
    match third.read(&mut buf) {
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{e}"
        ),
        Ok(n) => panic!(
            "answered beyond the limit: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
    }
    drop(idle.pop());
    let got = read_until_closed(&mut third);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    server.shutdown().unwrap();
}

//! The fixture and client helpers of the `m3 serve` tests (tests/serve.rs,
//! tests/serve_hardening.rs): a cross-modal index built once per test binary, servers on
//! loopback ports, a real HTTP client (`ureq`) and a raw-TCP client that stalls mid-request.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use m3::build::{BuildParams, Silent, build_index};
use m3::data::{DType, Matrix, VectorFile};
use m3::distance::Metric;
use m3::io::{IoBackend, ReaderOptions};
use m3::search::{BatchOptions, Index, RerankDistance, SearchParams, search_batch};
use m3::serve::{ErrorBody, Knobs, SearchRequest, SearchResponse, ServeConfig, ServerHandle};
use m3::synth::xmodal::{XmodalModel, XmodalParams};
use m3::synth::{SplitSizes, WriteSpec, write_dataset};

pub const K: usize = 10;
pub const QUERIES: u64 = 200;

// ---------------------------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------------------------

pub struct Fixture {
    pub index: PathBuf,
    /// The base and training files the index was built from (`data/`).
    pub base_path: PathBuf,
    pub training_path: Option<PathBuf>,
    pub queries_path: PathBuf,
    pub queries: Matrix<f32>,
}

pub fn pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap()
    })
}

pub fn exe_key() -> String {
    let exe = std::env::current_exe().unwrap();
    let m = std::fs::metadata(&exe).unwrap();
    let mtime = m
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{:x}-{:x}", m.len(), mtime.as_nanos())
}

/// `CARGO_TARGET_TMPDIR/serve/<test binary>-<name>-<exe key>`, made once by the first process
/// to take the lock (marked complete by `READY`); directories of older executables of the
/// same test binary are removed.
pub fn cached_dir(name: &str, make: impl FnOnce(&Path)) -> PathBuf {
    let name = &format!("{}-{name}", env!("CARGO_CRATE_NAME"));
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve");
    std::fs::create_dir_all(&root).unwrap();
    let lock = File::create(root.join(format!("{name}.lock"))).unwrap();
    lock.lock().unwrap();
    let dir = root.join(format!("{name}-{}", exe_key()));
    if !dir.join("READY").exists() {
        for e in std::fs::read_dir(&root).unwrap() {
            let e = e.unwrap();
            let n = e.file_name().into_string().unwrap();
            if e.path().is_dir() && n.starts_with(&format!("{name}-")) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        std::fs::create_dir_all(&dir).unwrap();
        make(&dir);
        File::create(dir.join("READY")).unwrap();
    }
    lock.unlock().unwrap();
    dir
}

/// Cross-modal: 8,000 × 32 'images' (cosine), 200 'text' queries, 1,000 training queries, so
/// the index has query anchors and the statistics LC-CMD needs.
pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = cached_dir("xmodal", |dir| {
            let model = XmodalModel::new(
                XmodalParams {
                    dim: 32,
                    clusters: 32,
                    seed: 21,
                    latent_dim: 8,
                    ..XmodalParams::fashion_clip()
                },
                SplitSizes {
                    base: 8_000,
                    queries: QUERIES,
                    training: 1_000,
                },
            )
            .unwrap();
            let data = dir.join("data");
            let spec = WriteSpec {
                out_dir: data.clone(),
                dtype: DType::F32,
                batch_chunks: 4,
            };
            let files = write_dataset(&model, &spec, pool()).unwrap();
            std::fs::rename(&files.queries, data.join("query.fbin")).unwrap();
            let p = fixture_params(&files.base, files.training.clone(), &dir.join("idx"), 11);
            build_index(&p, pool(), &Silent).unwrap();
        });
        let queries_path = dir.join("data").join("query.fbin");
        let training = dir.join("data").join("train_query.fbin");
        Fixture {
            index: dir.join("idx"),
            base_path: dir.join("data").join("base.fbin"),
            training_path: training.exists().then_some(training),
            queries: VectorFile::open(&queries_path)
                .unwrap()
                .read_all_f32()
                .unwrap(),
            queries_path,
        }
    })
}

/// The build parameters of the fixture index, from `base` (and training queries) into `out`
/// with `seed`.
pub fn fixture_params(
    base: &Path,
    training: Option<PathBuf>,
    out: &Path,
    seed: u64,
) -> BuildParams {
    let mut p = BuildParams::new(base.to_path_buf(), Metric::Cosine, out.to_path_buf());
    p.clusters.target_size = 96;
    p.pq.subspaces = Some(16);
    p.pq.iters = 6;
    p.pq.train_rows = 4096;
    p.graph.max_degree = 16;
    p.graph.candidates = 32;
    p.routing.edges_per_anchor = 16;
    p.seed = seed;
    p.train_queries = training;
    p
}

pub fn open_index() -> Arc<Index> {
    Arc::new(
        Index::open(
            &fixture().index,
            IoBackend::Pread,
            &ReaderOptions::default(),
        )
        .unwrap(),
    )
}

pub fn config() -> ServeConfig {
    ServeConfig {
        workers: 2,
        inflight_per_worker: 4,
        http_threads: 2,
        ..ServeConfig::default()
    }
}

pub fn start(config: ServeConfig) -> ServerHandle {
    start_with(open_index(), config)
}

pub fn start_with(index: Arc<Index>, config: ServeConfig) -> ServerHandle {
    ServerHandle::start(index, config, "127.0.0.1:0".parse().unwrap()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Client helpers
// ---------------------------------------------------------------------------------------------

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// A response: status, headers we look at, body.
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    pub www_authenticate: Option<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not the expected JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    pub fn error(&self) -> ErrorBody {
        self.json()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn reply(mut r: ureq::http::Response<ureq::Body>) -> Reply {
    let h = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let (retry_after, www_authenticate, content_type) =
        (h("retry-after"), h("www-authenticate"), h("content-type"));
    Reply {
        status: r.status().as_u16(),
        retry_after,
        www_authenticate,
        content_type,
        body: r
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .unwrap(),
    }
}

pub fn post(addr: SocketAddr, path: &str, body: &[u8], headers: &[(&str, &str)]) -> Reply {
    let mut req = agent().post(format!("http://{addr}{path}"));
    let mut typed = false;
    for (k, v) in headers {
        typed |= k.eq_ignore_ascii_case("content-type");
        req = req.header(*k, *v);
    }
    if !typed {
        req = req.header("content-type", "application/json");
    }
    reply(req.send(body).unwrap())
}

pub fn post_json(addr: SocketAddr, path: &str, body: &serde_json::Value) -> Reply {
    post(addr, path, &serde_json::to_vec(body).unwrap(), &[])
}

pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = agent().get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    reply(req.call().unwrap())
}

/// The value of an unlabelled or labelled sample line of `/metrics` (`None` when absent).
pub fn metric(addr: SocketAddr, sample: &str) -> Option<f64> {
    metric_in(&get(addr, "/metrics", &[]).text(), sample)
}

pub fn metric_in(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

/// Waits until `/metrics` shows `min` HTTP requests in flight (the `/metrics` request itself
/// counts as one).
pub fn wait_in_flight(addr: SocketAddr, min: f64) {
    let t = Instant::now();
    loop {
        let n = metric(addr, "m3_http_requests_in_flight").unwrap();
        if n >= min {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "never saw {min} requests in flight (last {n})"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn search_body(rows: std::ops::Range<usize>, knobs: Option<Knobs>) -> Vec<u8> {
    let q = &fixture().queries;
    serde_json::to_vec(&SearchRequest {
        vectors: rows.map(|i| q.row(i).to_vec()).collect(),
        k: K,
        knobs,
        exact: false,
    })
    .unwrap()
}

/// A request written by hand on a raw connection, stopped after `sent` bytes of its body, so
/// that it stays in flight until [`SlowRequest::finish`].
pub struct SlowRequest {
    pub stream: TcpStream,
    pub rest: Vec<u8>,
}

impl SlowRequest {
    pub fn start(addr: SocketAddr, path: &str, body: &[u8], sent: usize, extra: &str) -> Self {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n{extra}\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&body[..sent]).unwrap();
        stream.flush().unwrap();
        Self {
            stream,
            rest: body[sent..].to_vec(),
        }
    }

    /// Sends the rest of the body and reads the whole response (status, body).
    pub fn finish(mut self) -> (u16, Vec<u8>) {
        self.stream.write_all(&self.rest).unwrap();
        self.read_response()
    }

    /// Reads the response without sending anything more.
    pub fn read_response(mut self) -> (u16, Vec<u8>) {
        let mut raw = Vec::new();
        self.stream.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8_lossy(&raw);
        let status: u16 = text
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("no status line in {text:?}"))
            .parse()
            .unwrap();
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("end of headers")
            + 4;
        (status, raw[split..].to_vec())
    }
}

/// The library's answers for the fixture queries with `params` (natural distances).
pub fn library_answers(index: &Index, params: &SearchParams) -> Vec<(Vec<u64>, Vec<f32>)> {
    let q = &fixture().queries;
    let res = search_batch(index, q.view(), params, pool(), &BatchOptions::default()).unwrap();
    let lccmd = matches!(params.distance, RerankDistance::LcCmd { .. });
    res.results
        .iter()
        .map(|r| {
            (
                r.iter().map(|n| u64::from(n.id)).collect(),
                r.iter()
                    .map(|n| {
                        if lccmd {
                            n.dist
                        } else {
                            index.metric().to_natural(n.dist)
                        }
                    })
                    .collect(),
            )
        })
        .collect()
}

/// All fixture queries through the server, in requests of `batch` vectors from `clients`
/// threads at once; answers in query order.
pub fn server_answers(
    addr: SocketAddr,
    knobs: &Knobs,
    batch: usize,
    clients: usize,
) -> Vec<(Vec<u64>, Vec<f32>)> {
    let nq = fixture().queries.rows();
    let groups: Vec<usize> = (0..nq).step_by(batch).collect();
    let mut out: Vec<Option<(Vec<u64>, Vec<f32>)>> = vec![None; nq];
    let chunks: Vec<Vec<(usize, SearchResponse)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let groups = &groups;
                s.spawn(move || {
                    let mut got = Vec::new();
                    for &first in groups.iter().skip(c).step_by(clients) {
                        let rows = first..(first + batch).min(nq);
                        let r = post(
                            addr,
                            "/v1/search",
                            &search_body(rows, Some(knobs.clone())),
                            &[],
                        );
                        assert_eq!(r.status, 200, "{}", r.text());
                        got.push((first, r.json::<SearchResponse>()));
                    }
                    got
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (first, resp) in chunks.into_iter().flatten() {
        assert_eq!(resp.stats.queries as usize, resp.results.len());
        for (j, r) in resp.results.into_iter().enumerate() {
            assert!(!r.truncated);
            out[first + j] = Some((r.ids, r.distances));
        }
    }
    out.into_iter().map(Option::unwrap).collect()
}

pub fn assert_same_answers(
    got: &[(Vec<u64>, Vec<f32>)],
    want: &[(Vec<u64>, Vec<f32>)],
    what: &str,
) {
    assert_eq!(got.len(), want.len());
    for (q, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.0, w.0, "{what}: query {q}: ids differ");
        assert_eq!(g.1.len(), w.1.len());
        for (a, b) in g.1.iter().zip(&w.1) {
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "{what}: query {q}: distance {a} vs {b}"
            );
        }
    }
}

pub fn m3() -> Command {
    Command::new(env!("CARGO_BIN_EXE_m3"))
}

/// Reads `m3 serve`'s stderr up to its `listening on http://ADDR` line.
pub fn listening_addr(child: &mut Child, stderr: &mut impl BufRead) -> SocketAddr {
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            panic!("m3 serve ended before listening: {seen}");
        }
        if let Some(a) = line.trim().strip_prefix("m3 serve: listening on http://") {
            return a.parse().unwrap();
        }
        seen.push_str(&line);
    }
}

// ---------------------------------------------------------------------------------------------
// Fault injection on the search workers
// ---------------------------------------------------------------------------------------------

/// A query whose first value is this is held by a [`Gate`] hook.
pub const GATE_MARK: f32 = 7777.0;
/// A query whose first value is this makes a [`Gate`] hook panic.
pub const PANIC_MARK: f32 = -6666.0;

/// A query hook for [`ServeConfig::query_hook`]: holds every query marked [`GATE_MARK`] on its
/// worker until [`Gate::open`] (at most 60 s), and panics on every query marked
/// [`PANIC_MARK`].
#[derive(Default)]
pub struct Gate {
    /// (open, queries held now)
    state: std::sync::Mutex<(bool, usize)>,
    cv: std::sync::Condvar,
}

impl Gate {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn hook(self: &Arc<Self>) -> m3::serve::QueryHook {
        let gate = self.clone();
        m3::serve::QueryHook::new(move |v: &[f32]| {
            if v.first() == Some(&PANIC_MARK) {
                panic!("injected panic (test hook)");
            }
            if v.first() == Some(&GATE_MARK) {
                let mut s = gate.state.lock().unwrap();
                s.1 += 1;
                gate.cv.notify_all();
                let t = Instant::now();
                while !s.0 && t.elapsed() < Duration::from_secs(60) {
                    s = gate
                        .cv
                        .wait_timeout(s, Duration::from_millis(50))
                        .unwrap()
                        .0;
                }
                s.1 -= 1;
            }
        })
    }

    /// Waits until `n` queries are held at once (panics after 30 s: fewer workers are alive
    /// than the test needs).
    pub fn wait_held(&self, n: usize) {
        let t = Instant::now();
        let mut s = self.state.lock().unwrap();
        while s.1 < n {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "only {} of {n} gated queries are held",
                s.1
            );
            s = self
                .cv
                .wait_timeout(s, Duration::from_millis(50))
                .unwrap()
                .0;
        }
    }

    pub fn open(&self) {
        self.state.lock().unwrap().0 = true;
        self.cv.notify_all();
    }
}

/// A search body of fixture query `row` with its first value replaced by `mark`.
pub fn marked_body(row: usize, mark: f32, exact: bool) -> Vec<u8> {
    let mut v = fixture().queries.row(row).to_vec();
    v[0] = mark;
    serde_json::to_vec(&SearchRequest {
        vectors: vec![v],
        k: K,
        knobs: None,
        exact,
    })
    .unwrap()
}

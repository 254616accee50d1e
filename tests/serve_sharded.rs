//! `m3 serve` of a sharded index with every shard local (loopback only, bounded in time): the
//! server's answers equal `ShardedIndex::search` and `exact` in this process (with a query's
//! shards run one after the other or concurrently on a fan-out pool), the write
//! endpoints answer 403 naming why, and `m3 serve --index SHARDED` in a separate process
//! answers the same over HTTP and exits 0 on SIGTERM.

mod serve_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use m3::build::build_shards;
use m3::io::{IoBackend, ReaderOptions};
use m3::search::{SearchParams, ShardedIndex};
use m3::serve::{Knobs, SearchRequest, SearchResponse, Served, ServerHandle};
use serve_support::*;

fn sharded(dir: &std::path::Path) -> Arc<ShardedIndex> {
    let out = dir.join("sharded");
    build_shards(&fixture().index, 3, 7, &out).unwrap();
    Arc::new(ShardedIndex::open(&out, IoBackend::Pread, &ReaderOptions::default()).unwrap())
}

fn params() -> SearchParams {
    let mut p = SearchParams::new(K);
    p.nprobe = 4;
    p.rerank = 30;
    p
}

/// The library's answers (ids, natural distances) for the first `n` fixture queries.
fn library(index: &ShardedIndex, p: &SearchParams, n: usize, exact: bool) -> Vec<Vec<u64>> {
    let mut searchers = index.searchers();
    let q = &fixture().queries;
    (0..n)
        .map(|qi| {
            let (r, _) = if exact {
                index.exact(q.row(qi), K).unwrap()
            } else {
                index.search(&mut searchers, qi, q.row(qi), p).unwrap()
            };
            r.iter().map(|nb| u64::from(nb.id)).collect()
        })
        .collect()
}

fn request(n: usize, knobs: Option<Knobs>, exact: bool) -> SearchRequest {
    SearchRequest {
        vectors: (0..n).map(|i| fixture().queries.row(i).to_vec()).collect(),
        k: K,
        knobs,
        exact,
    }
}

fn ids(addr: std::net::SocketAddr, req: &SearchRequest) -> Vec<Vec<u64>> {
    let r = post(addr, "/v1/search", &serde_json::to_vec(req).unwrap(), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let resp: SearchResponse = r.json();
    resp.results.into_iter().map(|q| q.ids).collect()
}

#[test]
fn serve_a_sharded_index_answers_like_the_library_and_refuses_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let index = sharded(tmp.path());
    let p = params();
    let want = library(&index, &p, 20, false);
    let want_exact = library(&index, &p, 5, true);
    let mut read_only = config();
    read_only.updates = false;
    let server = ServerHandle::start_served(
        Served::Sharded(index.clone()),
        read_only,
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let addr = server.addr();
    assert_eq!(
        ids(addr, &request(20, Some(Knobs::from_params(&p)), false)),
        want
    );
    assert_eq!(ids(addr, &request(5, None, true)), want_exact);
    let info = get(addr, "/v1/index", &[]);
    assert_eq!(info.status, 200, "{}", info.text());
    let info: serde_json::Value = info.json();
    assert_eq!(info["n_shards"], 3, "{info}");
    let upsert = serde_json::json!({ "ids": [1], "vectors": [vec![0.5f32; 32]] });
    let delete = serde_json::json!({ "ids": [1] });
    for (path, body) in [("/v1/upsert", upsert), ("/v1/delete", delete)] {
        let r = post_json(addr, path, &body);
        assert_eq!(r.status, 403, "{path}: {}", r.text());
        assert!(r.text().contains("sharded index"), "{path}: {}", r.text());
    }
    server.shutdown().unwrap();
    // Writes cannot be switched on for a sharded index.
    let mut with_updates = config();
    with_updates.updates = true;
    let e = ServerHandle::start_served(
        Served::Sharded(index),
        with_updates,
        "127.0.0.1:0".parse().unwrap(),
    );
    // The server runs on its own thread: the refusal comes back from its shutdown.
    let refused = match e {
        Err(e) => e.to_string(),
        Ok(h) => h.shutdown().unwrap_err().to_string(),
    };
    assert!(refused.contains("sharded index"), "{refused}");
}

#[test]
fn a_server_running_a_query_s_shards_concurrently_answers_like_one_after_the_other() {
    let tmp = tempfile::tempdir().unwrap();
    let sequential = sharded(tmp.path());
    let p = params();
    let want = library(&sequential, &p, 20, false);
    let want_exact = library(&sequential, &p, 10, true);
    let mut concurrent = ShardedIndex::open(
        &tmp.path().join("sharded"),
        IoBackend::Pread,
        &ReaderOptions::default(),
    )
    .unwrap();
    concurrent.set_fanout_threads(2).unwrap();
    let mut read_only = config();
    read_only.updates = false;
    let server = ServerHandle::start_served(
        Served::Sharded(Arc::new(concurrent)),
        read_only,
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let addr = server.addr();
    assert_eq!(
        ids(addr, &request(20, Some(Knobs::from_params(&p)), false)),
        want
    );
    assert_eq!(ids(addr, &request(10, None, true)), want_exact);
    server.shutdown().unwrap();
}

#[test]
fn m3_serve_serves_a_sharded_index_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let index = sharded(tmp.path());
    let p = params();
    let want = library(&index, &p, 10, false);
    let mut child = Command::new(env!("CARGO_BIN_EXE_m3"))
        .arg("serve")
        .arg("--index")
        .arg(tmp.path().join("sharded"))
        .args(["--addr", "127.0.0.1:0", "--threads", "2", "--io", "pread"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut addr = None;
    let mut said_sharded = false;
    while addr.is_none() && Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        said_sharded |= line.contains("sharded index (3 shards, all local, search only)");
        if let Some(a) = line.strip_prefix("m3 serve: listening on http://") {
            addr = Some(a.trim().parse::<std::net::SocketAddr>().unwrap());
        }
    }
    let addr = addr.expect("m3 serve announced its address");
    assert!(said_sharded);
    assert_eq!(
        ids(addr, &request(10, Some(Knobs::from_params(&p)), false)),
        want
    );
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "m3 serve exits 0 on SIGTERM: {status:?}");
}

//! `m3 loadtest`: drive a running `m3 serve` on this machine with a query file at several
//! concurrency levels; print throughput, latency percentiles, errors and recall per level.
//!
//! Bounded by construction: every level stops after `--requests` requests or `--duration-secs`
//! seconds, whichever comes first, and only loopback addresses are accepted as targets.
//!
//! A level whose share of failed requests (any status but 200, or no answer) passes
//! `--max-error-rate` ends the run with an error, after its line is printed: numbers measured
//! on refusals are not a measurement of the server.

use std::collections::BTreeMap;
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use m3::data::{GroundTruth, Matrix};
use m3::distance::Metric;
use m3::exact::recall_at_k;
use m3::serve::{SearchRequest, SearchResponse};
use m3::stats::percentile;

use crate::knobs::{KnobArgs, read_gt};

#[derive(Args, Debug)]
pub struct LoadtestArgs {
    /// The server, e.g. http://127.0.0.1:7700 (loopback addresses only).
    #[arg(long, default_value = "http://127.0.0.1:7700")]
    pub url: String,
    /// Query vectors, sent in file order (cycled).
    #[arg(long)]
    pub queries: PathBuf,
    /// Use only the first N queries.
    #[arg(long)]
    pub max_queries: Option<usize>,
    #[arg(long, default_value_t = m3::search::SearchParams::DEFAULT_K)]
    pub k: usize,
    /// Query vectors per request.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Concurrent clients (each one connection, one request at a time), one level after the
    /// other.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    pub concurrency: Vec<usize>,
    /// Requests per level (upper bound).
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
    /// Seconds per level (upper bound).
    #[arg(long, default_value_t = 30)]
    pub duration_secs: u64,
    /// Requests per client sent first and not measured (connection set-up, warm caches).
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// File holding the server's API key.
    #[arg(long)]
    pub api_key_file: Option<PathBuf>,
    /// Ground truth (.ibin/.ivecs) to print recall@k of the answers.
    #[arg(long)]
    pub gt: Option<PathBuf>,
    /// Print one JSON object per level instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Largest share of failed requests (0–1) a level may have; beyond it the load test stops
    /// after that level and exits non-zero.
    #[arg(long, default_value_t = 0.01)]
    pub max_error_rate: f64,
    #[command(flatten)]
    pub knobs: KnobArgs,
}

/// One query's answer: ids and natural distances, best first.
type Answer = (Vec<u32>, Vec<f32>);

/// What every level sends and checks: the server, its key and metric, the request bodies
/// (first query of each, JSON), the query count and the ground truth.
struct Workload<'a> {
    base: String,
    key: Option<String>,
    metric: Metric,
    bodies: Vec<(usize, Vec<u8>)>,
    nq: usize,
    gt: Option<&'a GroundTruth>,
}

/// One measured level.
#[derive(Debug, serde::Serialize)]
struct Level {
    concurrency: usize,
    batch: usize,
    requests: usize,
    ok: usize,
    errors: usize,
    /// Error statuses (or "transport") and their counts.
    error_kinds: Vec<(String, usize)>,
    seconds: f64,
    requests_per_s: f64,
    queries_per_s: f64,
    lat_p50_us: f64,
    lat_p99_us: f64,
    lat_p999_us: f64,
    recall_at_k: Option<f64>,
    load1_before: String,
}

pub fn run(args: LoadtestArgs) -> anyhow::Result<()> {
    let base = args.url.trim_end_matches('/').to_string();
    check_loopback(&base)?;
    anyhow::ensure!(args.batch >= 1, "--batch must be at least 1");
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.max_error_rate),
        "--max-error-rate must be a share between 0 and 1, not {}",
        args.max_error_rate
    );
    anyhow::ensure!(
        args.concurrency.iter().all(|&c| (1..=1024).contains(&c)),
        "--concurrency levels must be in 1..=1024"
    );
    let key = args.api_key_file.as_deref().map(read_key).transpose()?;
    let queries = m3::eval::read_query_rows(&args.queries, args.max_queries)?;
    let nq = queries.rows();
    anyhow::ensure!(nq > 0, "no queries in {}", args.queries.display());
    let metric = server_metric(&base, key.as_deref())?;
    let gt = args
        .gt
        .as_deref()
        .map(|g| read_gt(g, None, nq, args.k))
        .transpose()?;
    // One body per group of `batch` consecutive queries, serialised before the clock starts.
    let knobs = args.knobs.serve_knobs(args.k);
    let bodies: Vec<(usize, Vec<u8>)> = (0..nq.div_ceil(args.batch))
        .map(|b| {
            let first = b * args.batch;
            let req = SearchRequest {
                vectors: (first..(first + args.batch).min(nq))
                    .map(|i| queries.row(i).to_vec())
                    .collect(),
                k: args.k,
                knobs: Some(knobs.clone()),
                exact: false,
            };
            Ok((first, serde_json::to_vec(&req)?))
        })
        .collect::<anyhow::Result<_>>()?;
    let work = Workload {
        base,
        key,
        metric,
        bodies,
        nq,
        gt: gt.as_ref(),
    };
    if !args.json {
        println!(
            "{:>11} {:>8} {:>6} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}  load1",
            "concurrency",
            "requests",
            "errors",
            "seconds",
            "req/s",
            "p50 µs",
            "p99 µs",
            "p999 µs",
            "QPS",
            "recall"
        );
    }
    for &c in &args.concurrency {
        let level = run_level(&args, &work, c)?;
        if args.json {
            println!("{}", serde_json::to_string(&level)?);
        } else {
            println!(
                "{:>11} {:>8} {:>6} {:>7.2} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>7}  {}",
                level.concurrency,
                level.requests,
                level.errors,
                level.seconds,
                level.requests_per_s,
                level.lat_p50_us,
                level.lat_p99_us,
                level.lat_p999_us,
                level.queries_per_s,
                level
                    .recall_at_k
                    .map_or_else(|| "-".into(), |r| format!("{r:.4}")),
                level.load1_before
            );
            if !level.error_kinds.is_empty() {
                println!("            errors: {:?}", level.error_kinds);
            }
        }
        anyhow::ensure!(
            level.requests > 0,
            "concurrency {c}: no request was measured (--requests, --duration-secs)"
        );
        let share = level.errors as f64 / level.requests as f64;
        if share > args.max_error_rate {
            bail!(
                "concurrency {c}: {} of {} requests failed ({:.1}%, above --max-error-rate {}): {:?}",
                level.errors,
                level.requests,
                100.0 * share,
                args.max_error_rate,
                level.error_kinds
            );
        }
    }
    Ok(())
}

/// Refuses any target that is not a loopback address (this tool generates load; it must
/// never be pointed at another machine).
fn check_loopback(base: &str) -> anyhow::Result<()> {
    let rest = base
        .strip_prefix("http://")
        .with_context(|| format!("--url {base}: only http:// URLs are supported"))?;
    let authority = rest.split('/').next().unwrap_or("");
    let with_port = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addrs: Vec<_> = with_port
        .to_socket_addrs()
        .with_context(|| format!("--url {base}: cannot resolve {authority}"))?
        .collect();
    if addrs.is_empty() || addrs.iter().any(|a| !a.ip().is_loopback()) {
        bail!("--url {base}: the load test only targets loopback addresses (127.0.0.0/8, ::1)");
    }
    Ok(())
}

/// The key in `path`, checked the way the server reads it.
fn read_key(path: &std::path::Path) -> anyhow::Result<String> {
    m3::serve::ApiKey::from_file(path)?;
    Ok(std::fs::read_to_string(path)?.trim().to_string())
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// The index metric, from `GET /v1/index` (for recall with ties).
fn server_metric(base: &str, key: Option<&str>) -> anyhow::Result<Metric> {
    let mut req = agent().get(format!("{base}/v1/index"));
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let mut resp = req.call().with_context(|| format!("GET {base}/v1/index"))?;
    let body = resp.body_mut().read_to_vec()?;
    anyhow::ensure!(
        resp.status() == 200,
        "GET {base}/v1/index: {} {}",
        resp.status(),
        String::from_utf8_lossy(&body)
    );
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    let m = v["params"]["metric"]
        .as_str()
        .context("GET /v1/index: no params.metric")?;
    m.parse().map_err(|e: String| anyhow::anyhow!(e))
}

/// Runs one level: `concurrency` clients, each on its own connection, send the workload's
/// requests one at a time after their warm-up, until `--requests` or `--duration-secs`.
fn run_level(
    args: &LoadtestArgs,
    work: &Workload<'_>,
    concurrency: usize,
) -> anyhow::Result<Level> {
    let load1_before = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into());
    let run = LevelRun {
        args,
        work,
        concurrency,
        url: format!("{}/v1/search", work.base),
        next: AtomicUsize::new(0),
        barrier: Barrier::new(concurrency + 1),
        latencies: Mutex::new(Vec::with_capacity(args.requests)),
        errors: Mutex::new(BTreeMap::new()),
        answers: Mutex::new(vec![None; work.nq]),
    };
    let mut start = Instant::now();
    std::thread::scope(|scope| {
        let clients: Vec<_> = (0..concurrency)
            .map(|c| {
                let run = &run;
                scope.spawn(move || run.client(c))
            })
            .collect();
        run.barrier.wait();
        start = Instant::now();
        for c in clients {
            let _ = c.join();
        }
    });
    run.finish(start.elapsed().as_secs_f64(), load1_before)
}

/// A level under way: what its clients share.
struct LevelRun<'a> {
    args: &'a LoadtestArgs,
    work: &'a Workload<'a>,
    concurrency: usize,
    url: String,
    /// The next request (cycling over the bodies).
    next: AtomicUsize,
    /// Where the clients wait for each other after their warm-up.
    barrier: Barrier,
    /// Latency of every answered request, µs.
    latencies: Mutex<Vec<f64>>,
    /// Failed requests by kind: a status, "unparsable 200" or a transport error.
    errors: Mutex<BTreeMap<String, usize>>,
    /// First answer (ids, natural distances) of each query.
    answers: Mutex<Vec<Option<Answer>>>,
}

impl LevelRun<'_> {
    /// One request: the status and the body, or the transport error.
    fn send(&self, agent: &ureq::Agent, body: &[u8]) -> Result<(u16, Vec<u8>), String> {
        let mut req = agent
            .post(&self.url)
            .header("content-type", "application/json");
        if let Some(k) = self.work.key.as_deref() {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let mut resp = req.send(body).map_err(|e| format!("transport: {e}"))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_vec()
            .map_err(|e| format!("transport: {e}"))?;
        Ok((status, bytes))
    }

    /// Client `c`: its warm-up requests, then measured requests until the level's count or
    /// time is used up.
    fn client(&self, c: usize) {
        let (args, bodies) = (self.args, &self.work.bodies);
        let agent = agent();
        for w in 0..args.warmup {
            let _ = self.send(&agent, &bodies[(c + w * self.concurrency) % bodies.len()].1);
        }
        self.barrier.wait();
        let limit = Duration::from_secs(args.duration_secs);
        let t0 = Instant::now();
        let mut mine = Vec::new();
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= args.requests || t0.elapsed() >= limit {
                break;
            }
            let (first, body) = &bodies[i % bodies.len()];
            let t = Instant::now();
            let r = self.send(&agent, body);
            let us = t.elapsed().as_secs_f64() * 1e6;
            match r {
                Ok((200, bytes)) => {
                    mine.push(us);
                    self.keep_answers(*first, &bytes);
                }
                Ok((status, _)) => self.count_error(status.to_string()),
                Err(e) => self.count_error(e),
            }
        }
        self.latencies
            .lock()
            .expect("no panics hold it")
            .extend(mine);
    }

    /// Keeps the first answer of each query of a 200 response (its queries from `first` on).
    fn keep_answers(&self, first: usize, bytes: &[u8]) {
        let Ok(resp) = serde_json::from_slice::<SearchResponse>(bytes) else {
            self.count_error("unparsable 200".into());
            return;
        };
        let mut a = self.answers.lock().expect("no panics hold it");
        for (j, r) in resp.results.into_iter().enumerate() {
            let slot = &mut a[first + j];
            if slot.is_none() {
                // The server answers with user ids; ground truth holds 32-bit ids (an id
                // beyond them cannot match).
                let ids = r.ids.iter().map(|&i| u32::try_from(i).unwrap_or(u32::MAX));
                *slot = Some((ids.collect(), r.distances));
            }
        }
    }

    fn count_error(&self, kind: String) {
        *self
            .errors
            .lock()
            .expect("no panics hold it")
            .entry(kind)
            .or_default() += 1;
    }

    /// The level's line, from what its clients measured in `seconds`.
    fn finish(self, seconds: f64, load1_before: String) -> anyhow::Result<Level> {
        let (args, work) = (self.args, self.work);
        let lat = self.latencies.into_inner().expect("no panics hold it");
        let errors = self.errors.into_inner().expect("no panics hold it");
        let n_err: usize = errors.values().sum();
        let ok = lat.len();
        let recall = match work.gt {
            Some(gt) => recall_of_answers(
                &self.answers.into_inner().expect("no panics hold it"),
                gt,
                args.k,
                work.metric,
            )?,
            None => None,
        };
        let queries_ok: usize = ok * args.batch; // approximate when nq is not a multiple of batch
        Ok(Level {
            concurrency: self.concurrency,
            batch: args.batch,
            requests: ok + n_err,
            ok,
            errors: n_err,
            error_kinds: errors.into_iter().collect(),
            seconds,
            requests_per_s: ok as f64 / seconds,
            queries_per_s: queries_ok as f64 / seconds,
            lat_p50_us: percentile(&lat, 50.0),
            lat_p99_us: percentile(&lat, 99.0),
            lat_p999_us: percentile(&lat, 99.9),
            recall_at_k: recall,
            load1_before,
        })
    }
}

/// recall@k over the queries that got an answer (the rule of `m3 search`: ties with the k-th
/// true distance count).
fn recall_of_answers(
    answers: &[Option<Answer>],
    gt: &GroundTruth,
    k: usize,
    metric: Metric,
) -> anyhow::Result<Option<f64>> {
    let (mut ids, mut dists, mut gt_ids, mut gt_dists) = (vec![], vec![], vec![], vec![]);
    let gk = gt.k();
    for (q, a) in answers.iter().enumerate() {
        let Some((i, d)) = a else { continue };
        for j in 0..k {
            ids.push(i.get(j).copied().unwrap_or(u32::MAX));
            dists.push(d.get(j).copied().unwrap_or(f32::NAN));
        }
        gt_ids.extend_from_slice(gt.ids.row(q));
        if let Some(gd) = &gt.dists {
            gt_dists.extend_from_slice(gd.row(q));
        }
    }
    if ids.is_empty() {
        return Ok(None);
    }
    let sub = GroundTruth {
        ids: Matrix::from_vec(gt_ids, gk)?,
        dists: if gt.dists.is_some() {
            Some(Matrix::from_vec(gt_dists, gk)?)
        } else {
            None
        },
    };
    let ids = Matrix::from_vec(ids, k)?;
    let dists = Matrix::from_vec(dists, k)?;
    Ok(Some(
        recall_at_k(ids.view(), Some(dists.view()), &sub, k, metric)?.mean,
    ))
}

//! `m3 serve`: serve an index over HTTP/JSON until SIGTERM or SIGINT, then drain and exit 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use m3::io::{IoBackend, ReaderOptions};
use m3::search::{Index, ShardedIndex};
use m3::serve::{ApiKey, Limits, ServeConfig, Served, serve_any, terminate_signal};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Index directory (built by `m3 build`). Searched; updated by `POST /v1/upsert` and
    /// `POST /v1/delete` unless --read-only (the writer is opened at the first write). A
    /// sharded index (`shards.m3`) is served with every shard open in this process, for
    /// search only (the write endpoints answer 403).
    #[arg(long)]
    pub index: PathBuf,
    /// Refuse writes (`POST /v1/upsert` and `/v1/delete` answer 403).
    #[arg(long)]
    pub read_only: bool,
    /// Write requests one commit takes at most (group commit: one fsync for all of them).
    #[arg(long, default_value_t = ServeConfig::default().max_write_batch,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_write_batch: usize,
    /// Nice value of the writer thread (0..=19): coding inserts, refreshing the searchers and
    /// merging yield the cores to searches when both want them (0: the process's priority).
    #[arg(long, default_value_t = ServeConfig::default().writer_nice,
          value_parser = clap::value_parser!(i32).range(0..=19))]
    pub writer_nice: i32,
    /// Merge after a commit only when the clusters the merge policy picks hold at least this
    /// fraction of the index's records in changes (0: whenever it picks one).
    #[arg(long, default_value_t = ServeConfig::default().merge_min_change,
          value_parser = parse_unit_fraction)]
    pub merge_min_change: f64,
    /// Threads a merge runs on, beside the writer (at the writer's nice value): writes are
    /// committed while a merge runs, and carried into the merged generation.
    #[arg(long, default_value_t = ServeConfig::default().merge_threads,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub merge_threads: usize,
    /// Address to listen on (loopback by default; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7700")]
    pub addr: SocketAddr,
    /// File holding the API key; every endpoint but /healthz then needs
    /// `Authorization: Bearer <key>`.
    #[arg(long)]
    pub api_key_file: Option<PathBuf>,
    /// Search worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Queries in flight per search worker.
    #[arg(long, default_value_t = m3::search::DEFAULT_INFLIGHT,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    pub inflight: usize,
    /// Sharded index: threads that run a query's shards concurrently, shared by the search
    /// workers (0 = one per shard, at most one per core; 1 = one shard after the other).
    #[arg(long, default_value_t = 0)]
    pub shard_threads: usize,
    /// Threads handling connections (parsing, checking, answering).
    #[arg(long, default_value_t = 2,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256))]
    pub http_threads: usize,
    /// Block reader: auto (io_uring, falling back to pread), uring or pread.
    #[arg(long, default_value = "auto")]
    pub io: IoBackend,
    /// Start-up check: `open` checks the manifest, every header and length (what opening
    /// always does); `full` also checks every file's and every data sector's checksum
    /// (`m3 verify`; reads the whole index).
    #[arg(long, value_enum, default_value_t = VerifyMode::Open)]
    pub verify: VerifyMode,
    #[command(flatten)]
    pub limits: LimitArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VerifyMode {
    Open,
    Full,
}

/// Per-request limits (see `m3::serve::Limits`).
#[derive(Args, Debug)]
pub struct LimitArgs {
    /// Largest request body in bytes (beyond: 413).
    #[arg(long, default_value_t = Limits::default().max_body_bytes)]
    pub max_body_bytes: usize,
    /// Query vectors per request.
    #[arg(long, default_value_t = Limits::default().max_vectors)]
    pub max_vectors: usize,
    #[arg(long, default_value_t = Limits::default().max_k)]
    pub max_k: usize,
    #[arg(long, default_value_t = Limits::default().max_nprobe)]
    pub max_nprobe: usize,
    #[arg(long, default_value_t = Limits::default().max_qprobe)]
    pub max_qprobe: usize,
    #[arg(long, default_value_t = Limits::default().max_edges)]
    pub max_edges: usize,
    #[arg(long, default_value_t = Limits::default().max_hints)]
    pub max_hints: usize,
    #[arg(long, default_value_t = Limits::default().max_rerank)]
    pub max_rerank: usize,
    #[arg(long, default_value_t = Limits::default().max_expand_rounds)]
    pub max_expand_rounds: usize,
    #[arg(long, default_value_t = Limits::default().max_expand_from)]
    pub max_expand_from: usize,
    #[arg(long, default_value_t = Limits::default().max_expand_read)]
    pub max_expand_read: usize,
    /// Results per range query.
    #[arg(long, default_value_t = Limits::default().max_range_results)]
    pub max_range_results: usize,
    /// Per-request deadline in milliseconds (beyond: 408 while reading the body, 504 while
    /// searching).
    #[arg(long, default_value_t = Limits::default().deadline.as_millis() as u64)]
    pub deadline_ms: u64,
    /// Search/range requests searched at once, counted once their body has arrived (beyond:
    /// 429 with Retry-After).
    #[arg(long, default_value_t = Limits::default().max_concurrent_requests,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_concurrent: usize,
    /// Query vectors waiting for a search worker (handlers wait for room, up to the deadline).
    #[arg(long, default_value_t = ServeConfig::default().queue_capacity,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub queue_capacity: usize,
    /// After SIGTERM, seconds the requests in flight may take before the server stops anyway
    /// (and exits 1): connections still open then are closed, a request without its answer
    /// gets none. The process exits within this plus about half a second.
    #[arg(long, default_value_t = 30)]
    pub drain_timeout_secs: u64,
    /// Milliseconds a client has to send a request's headers, counted from the connection's
    /// accept or the end of the previous response on a keep-alive connection (so also how
    /// long an idle keep-alive connection stays open); then the connection is closed.
    #[arg(long, default_value_t = ServeConfig::default().header_timeout.as_millis() as u64,
          value_parser = clap::builder::RangedU64ValueParser::<u64>::new().range(1..))]
    pub header_timeout_ms: u64,
    /// Longest pause in milliseconds while a request body arrives (beyond: 408); the whole
    /// body must also arrive within --deadline-ms.
    #[arg(long, default_value_t = ServeConfig::default().body_timeout.as_millis() as u64,
          value_parser = clap::builder::RangedU64ValueParser::<u64>::new().range(1..))]
    pub body_timeout_ms: u64,
    /// Longest a response write may make no progress in milliseconds (the client does not
    /// read its answer); then the connection is closed.
    #[arg(long, default_value_t = ServeConfig::default().send_timeout.as_millis() as u64,
          value_parser = clap::builder::RangedU64ValueParser::<u64>::new().range(1..))]
    pub send_timeout_ms: u64,
    /// Connections open at once; at the limit new clients wait in the listen backlog until
    /// one closes.
    #[arg(long, default_value_t = ServeConfig::default().max_connections,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_connections: usize,
}

impl LimitArgs {
    fn limits(&self) -> Limits {
        Limits {
            max_body_bytes: self.max_body_bytes,
            max_vectors: self.max_vectors,
            max_k: self.max_k,
            max_nprobe: self.max_nprobe,
            max_qprobe: self.max_qprobe,
            max_edges: self.max_edges,
            max_hints: self.max_hints,
            max_rerank: self.max_rerank,
            max_expand_rounds: self.max_expand_rounds,
            max_expand_from: self.max_expand_from,
            max_expand_read: self.max_expand_read,
            max_range_results: self.max_range_results,
            deadline: Duration::from_millis(self.deadline_ms),
            max_concurrent_requests: self.max_concurrent,
        }
    }
}

/// Opens the sharded index of `--index` with its fan-out pool (`--shard-threads`).
fn open_sharded(args: &ServeArgs) -> anyhow::Result<ShardedIndex> {
    let mut s = ShardedIndex::open(&args.index, args.io, &ReaderOptions::default())
        .with_context(|| format!("opening sharded index {}", args.index.display()))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let fanout = match args.shard_threads {
        0 => s.n_shards().min(cores),
        t => t,
    };
    s.set_fanout_threads(fanout)?;
    Ok(s)
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let t = Instant::now();
    crate::common::recover_index("serve", &args.index);
    if args.verify == VerifyMode::Full && !m3::search::is_sharded(&args.index) {
        let r = m3::format::verify(&args.index)
            .with_context(|| format!("{} failed verification", args.index.display()))?;
        eprintln!(
            "m3 serve: verified {} files, {} data sectors in {:.2} s",
            r.files,
            r.data_sectors,
            t.elapsed().as_secs_f64()
        );
    }
    let sharded = m3::search::is_sharded(&args.index);
    let (index, served) = if sharded {
        let s = open_sharded(&args)?;
        if args.verify == VerifyMode::Full {
            for i in 0..s.n_shards() {
                let dir = s.router().shard_dir(i);
                m3::format::verify(&dir)
                    .with_context(|| format!("{} failed verification", dir.display()))?;
            }
            eprintln!("m3 serve: verified {} shards", s.n_shards());
        }
        let s = Arc::new(s);
        (s.shard_arc(0), Served::Sharded(s))
    } else {
        let i = Arc::new(
            Index::open(&args.index, args.io, &ReaderOptions::default())
                .with_context(|| format!("opening index {}", args.index.display()))?,
        );
        (i.clone(), Served::Index(i))
    };
    if let Some(reason) = &index.reader_info().fallback_reason {
        eprintln!("m3 serve: {reason}");
    }
    let api_key = args
        .api_key_file
        .as_deref()
        .map(ApiKey::from_file)
        .transpose()?;
    let workers = if args.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        args.threads
    };
    let config = ServeConfig {
        workers,
        inflight_per_worker: args.inflight,
        http_threads: args.http_threads,
        queue_capacity: args.limits.queue_capacity,
        limits: args.limits.limits(),
        api_key,
        drain_timeout: Duration::from_secs(args.limits.drain_timeout_secs),
        header_timeout: Duration::from_millis(args.limits.header_timeout_ms),
        body_timeout: Duration::from_millis(args.limits.body_timeout_ms),
        send_timeout: Duration::from_millis(args.limits.send_timeout_ms),
        max_connections: args.limits.max_connections,
        query_hook: None,
        // A sharded index is served for search only (the write endpoints answer 403).
        updates: !args.read_only && !sharded,
        max_write_batch: args.max_write_batch,
        write_queue_capacity: ServeConfig::default().write_queue_capacity,
        write_hook: None,
        writer_nice: args.writer_nice,
        merge_min_change: args.merge_min_change,
        merge_threads: args.merge_threads,
        merge_hook: None,
    };
    let what = match &served {
        Served::Sharded(s) => format!(
            "sharded index ({} shards, all local, search only)",
            s.n_shards()
        ),
        Served::Index(_) => "index".into(),
    };
    eprintln!(
        "m3 serve: {what} {}: {} vectors × {} ({}), {} clusters; {} search workers × {} in flight, {} I/O",
        args.index.display(),
        index.n_vectors(),
        index.dim(),
        index.metric(),
        index.n_clusters(),
        config.workers,
        config.inflight_per_worker,
        index.reader_info().backend,
    );
    if !args.addr.ip().is_loopback() && config.api_key.is_none() {
        eprintln!(
            "m3 serve: warning: listening on {} (not loopback) without --api-key-file",
            args.addr
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.http_threads)
        .thread_name("m3-http")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let outcome = runtime.block_on(async move {
        let signal = terminate_signal().context("installing the SIGTERM/SIGINT handler")?;
        let listener = tokio::net::TcpListener::bind(args.addr)
            .await
            .with_context(|| format!("cannot listen on {}", args.addr))?;
        let addr = listener.local_addr()?;
        eprintln!("m3 serve: listening on http://{addr}");
        let shutdown = async move {
            let name = signal.await;
            eprintln!("m3 serve: {name}: no new connections; finishing the requests in flight");
        };
        serve_any(listener, served, config, shutdown).await?;
        eprintln!("m3 serve: stopped");
        anyhow::Ok(())
    });
    // `serve` has closed every connection; do not wait for anything the runtime still holds.
    runtime.shutdown_timeout(Duration::from_millis(100));
    outcome
}

/// A fraction in 0..=1 (a `--merge-min-change`).
fn parse_unit_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("{s:?} is not a number from 0 to 1")),
    }
}

//! Running a server: [`serve`] on a listener until a shutdown future completes, then drain;
//! [`ServerHandle`] runs one on its own thread and runtime (for tests and embedding);
//! [`terminate_signal`] is the shutdown future of `m3 serve` (SIGTERM or SIGINT).
//!
//! Connections are HTTP/1.1 served by hyper with a header read timeout (hyper's own timer:
//! [`ServeConfig::header_timeout`]); request bodies pass tower-http's body timeout
//! ([`ServeConfig::body_timeout`]); writes to the socket pass tokio-io-timeout's write
//! timeout ([`ServeConfig::send_timeout`]). Shutdown: stop accepting, tell every connection
//! to finish its request in flight and close (hyper-util's graceful shutdown; idle
//! keep-alive connections close at once), wait for that at most `drain_timeout`, then close
//! what is still open and stop the workers.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_io_timeout::TimeoutWriter;

use super::http::{Shared, router};
use super::pool::WorkerPool;
use super::writes::WriterThread;
use super::{Metrics, ServeConfig, ServeError};
use crate::format::IndexInfo;
use crate::search::{Index, LiveIndex, ShardedIndex};

/// After the drain, how long the workers get to stop before [`serve`] returns without them
/// (a worker inside a long exact query finishes it on its own, or with the process).
const WORKER_STOP_GRACE: Duration = Duration::from_millis(500);

/// Serves `index` on `listener` until `shutdown` completes; then stops accepting connections,
/// lets the requests in flight finish (at most `config.drain_timeout`), closes the
/// connections still open, stops the workers and returns: within the drain timeout plus
/// half a second. `Err(DrainTimeout)` when requests were still running at the drain timeout
/// (their connections were closed without an answer).
pub async fn serve(
    listener: tokio::net::TcpListener,
    index: Arc<Index>,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_any(listener, Served::Index(index), config, shutdown).await
}

/// What a server serves: one index, or a sharded index with every shard local.
#[derive(Debug, Clone)]
pub enum Served {
    /// One index (searches, and writes unless `config.updates` is off).
    Index(Arc<Index>),
    /// A sharded index, all shards open in this process: search endpoints only; the write
    /// endpoints answer 403 naming why.
    Sharded(Arc<ShardedIndex>),
}

/// Why a sharded index takes no writes (the 403 of `/v1/upsert` and `/v1/delete`).
const SHARDED_READ_ONLY: &str = "a sharded index is served for search only: upsert and delete \
                                 are not implemented for sharded indexes (rebuild its shards)";

/// [`serve`] of a sharded index whose shards are all local (`config.updates` must be off).
pub async fn serve_sharded(
    listener: tokio::net::TcpListener,
    sharded: Arc<ShardedIndex>,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_any(listener, Served::Sharded(sharded), config, shutdown).await
}

/// [`serve`] of either kind.
pub async fn serve_any(
    listener: tokio::net::TcpListener,
    served: Served,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    check(&config)?;
    let index = match &served {
        Served::Index(i) => i.clone(),
        Served::Sharded(s) if config.updates => {
            return Err(ServeError::Config {
                name: "updates",
                what: format!("{}: {SHARDED_READ_ONLY}", s.router().dir().display()),
            });
        }
        Served::Sharded(s) => s.shard_arc(0),
    };
    let info = served_info(&served, &index)?;
    let metrics = Arc::new(Metrics::new(index.n_vectors(), config.workers));
    let live = Arc::new(LiveIndex::from_arc(index));
    let writer = match config.updates {
        true => Some(
            WriterThread::start(live.clone(), &config, metrics.clone())
                .map_err(ServeError::Runtime)?,
        ),
        false => None,
    };
    let (pool, read_only) = start_pool(served, &live, &config, &metrics)?;
    let shared = Arc::new(Shared {
        live,
        info,
        writes: writer.as_ref().map(WriterThread::queue),
        read_only,
        admission: Arc::new(Semaphore::new(config.limits.max_concurrent_requests)),
        body_timeout: config.body_timeout,
        limits: config.limits,
        api_key: config.api_key,
        queue: pool.queue(),
        metrics: metrics.clone(),
    });
    let app = router(shared);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout);
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            // At the connection limit, accept nothing until a connection ends (below).
            accepted = listener.accept(), if connections.len() < config.max_connections => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    let mut stream = TimeoutWriter::new(stream);
                    stream.set_timeout(Some(config.send_timeout));
                    let io = TokioIo::new(Box::pin(stream));
                    let service = TowerToHyperService::new(app.clone());
                    let conn = http.serve_connection(io, service);
                    let conn = graceful.watch(conn);
                    connections.spawn(async move {
                        // A connection ends in an error when the client misbehaves (a header
                        // timeout, a reset); nothing to do about it here.
                        let _ = conn.await;
                    });
                }
                Err(e) => accept_failed(&e).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drain_deadline = Instant::now() + config.drain_timeout;
    let drained = tokio::time::timeout_at(drain_deadline, graceful.shutdown())
        .await
        .is_ok();
    let unfinished = metrics.requests_in_flight();
    // Close the connections still open (dropping them drops their handlers, whose queued
    // queries the workers then skip).
    connections.abort_all();
    while connections.join_next().await.is_some() {}
    drop(app);
    let _ = tokio::time::timeout(WORKER_STOP_GRACE, pool.close_and_join()).await;
    if let Some(w) = writer {
        // Commits what was queued (each commit is short) and stops.
        let _ = tokio::task::spawn_blocking(move || w.close_and_join()).await;
    }
    if drained {
        Ok(())
    } else {
        Err(ServeError::DrainTimeout {
            requests: unfinished,
            seconds: config.drain_timeout.as_secs_f64(),
        })
    }
}

/// `GET /v1/index`'s body: `m3 inspect --json` of the index (of shard 0 under `shard_0`,
/// with the whole index's facts on top, for a sharded index).
fn served_info(served: &Served, index: &Index) -> Result<serde_json::Value, ServeError> {
    let config_error = |e: String| ServeError::Config {
        name: "index",
        what: e,
    };
    let info = IndexInfo::gather(index.dir()).map_err(|e| config_error(e.to_string()))?;
    let info = serde_json::to_value(&info).map_err(|e| config_error(e.to_string()))?;
    Ok(match served {
        Served::Index(_) => info,
        Served::Sharded(s) => serde_json::json!({
            "sharded": true,
            "dir": s.router().dir(),
            "n_shards": s.n_shards(),
            "n_vectors": index.n_vectors(),
            "shard_0": info,
        }),
    })
}

/// The search workers, and why writes are refused when they are.
fn start_pool(
    served: Served,
    live: &Arc<LiveIndex>,
    config: &ServeConfig,
    metrics: &Arc<Metrics>,
) -> Result<(WorkerPool, &'static str), ServeError> {
    Ok(match served {
        Served::Index(_) => (
            WorkerPool::start(
                live.clone(),
                config.workers,
                config.inflight_per_worker,
                config.queue_capacity,
                metrics.clone(),
                config.query_hook.clone(),
            )?,
            "this server takes no writes (m3 serve --read-only)",
        ),
        Served::Sharded(s) => (
            WorkerPool::start_sharded(s, config.workers, config.queue_capacity, metrics.clone())?,
            SHARDED_READ_ONLY,
        ),
    })
}

fn check(config: &ServeConfig) -> Result<(), ServeError> {
    if config.limits.max_concurrent_requests == 0 {
        return Err(ServeError::Config {
            name: "max_concurrent_requests",
            what: "must be at least 1".into(),
        });
    }
    if config.max_connections == 0 {
        return Err(ServeError::Config {
            name: "max_connections",
            what: "must be at least 1".into(),
        });
    }
    for (name, d) in [
        ("header_timeout", config.header_timeout),
        ("body_timeout", config.body_timeout),
        ("send_timeout", config.send_timeout),
    ] {
        if d.is_zero() {
            return Err(ServeError::Config {
                name,
                what: "must be longer than 0".into(),
            });
        }
    }
    Ok(())
}

/// After a failed accept: a connection that failed before it was accepted is no concern; a
/// lack of resources (file descriptors, memory) is waited out briefly instead of spinning.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if !matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for SIGTERM or SIGINT and says which came. Call it inside the runtime before
/// announcing the server, so that a signal sent right after the announcement is caught.
pub fn terminate_signal() -> std::io::Result<impl Future<Output = &'static str> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}

/// A server on its own thread with its own runtime: [`ServerHandle::start`] returns once it
/// listens; [`ServerHandle::shutdown`] drains it like a SIGTERM would.
pub struct ServerHandle {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), ServeError>>>,
}

impl ServerHandle {
    /// Binds `addr` (port 0 picks a free port) and serves `index` with `config`.
    pub fn start(
        index: Arc<Index>,
        config: ServeConfig,
        addr: SocketAddr,
    ) -> Result<Self, ServeError> {
        Self::start_served(Served::Index(index), config, addr)
    }

    /// [`Self::start`] of a sharded index or of one index.
    pub fn start_served(
        served: Served,
        config: ServeConfig,
        addr: SocketAddr,
    ) -> Result<Self, ServeError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.http_threads.max(1))
            .thread_name("m3-http")
            .enable_all()
            .build()
            .map_err(ServeError::Runtime)?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .map_err(|source| ServeError::Bind {
                addr: addr.to_string(),
                source,
            })?;
        let addr = listener.local_addr().map_err(ServeError::Runtime)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("m3-serve".into())
            .spawn(move || {
                runtime.block_on(serve_any(listener, served, config, async move {
                    let _ = stopped.await;
                }))
            })
            .map_err(ServeError::Runtime)?;
        Ok(Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address the server listens on (with the port the system chose for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets requests in flight finish, and waits for the server to end.
    pub fn shutdown(mut self) -> Result<(), ServeError> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(ServeError::Runtime(std::io::Error::other(
                "the server thread panicked",
            ))),
            None => Ok(()),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

//! Running a server: [`serve`] on a listener until a shutdown future completes, then drain;
//! [`ServerHandle`] runs one on its own thread and runtime (for tests and embedding);
//! [`terminate_signal`] is the shutdown future of `m3 serve` (SIGTERM or SIGINT).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{Semaphore, oneshot};

use super::http::{Shared, router};
use super::pool::WorkerPool;
use super::{Metrics, ServeConfig, ServeError};
use crate::format::IndexInfo;
use crate::search::Index;

/// Serves `index` on `listener` until `shutdown` completes; then stops accepting connections,
/// lets the requests in flight finish (at most `config.drain_timeout`), stops the workers and
/// returns. `Err(DrainTimeout)` when requests were still running at the drain timeout.
pub async fn serve(
    listener: tokio::net::TcpListener,
    index: Arc<Index>,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    if config.limits.max_concurrent_requests == 0 {
        return Err(ServeError::Config {
            name: "max_concurrent_requests",
            what: "must be at least 1".into(),
        });
    }
    let info = IndexInfo::gather(index.dir()).map_err(|e| ServeError::Config {
        name: "index",
        what: e.to_string(),
    })?;
    let info_json = serde_json::to_vec(&info).map_err(|e| ServeError::Config {
        name: "index",
        what: e.to_string(),
    })?;
    let metrics = Arc::new(Metrics::new(index.n_vectors(), config.workers));
    let pool = WorkerPool::start(
        index.clone(),
        config.workers,
        config.inflight_per_worker,
        config.queue_capacity,
        metrics.clone(),
    )?;
    let shared = Arc::new(Shared {
        index,
        info_json: info_json.into(),
        admission: Arc::new(Semaphore::new(config.limits.max_concurrent_requests)),
        limits: config.limits,
        api_key: config.api_key,
        queue: pool.queue(),
        metrics: metrics.clone(),
    });
    let app = router(shared);
    let (fired_tx, fired_rx) = oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        let _ = fired_tx.send(());
    };
    let server = axum::serve(listener, app).with_graceful_shutdown(signal);
    let drain_timeout = config.drain_timeout;
    let drain_clock = async move {
        if fired_rx.await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(drain_timeout).await;
    };
    let outcome = tokio::select! {
        r = server => r.map_err(ServeError::Runtime),
        () = drain_clock => Err(ServeError::DrainTimeout {
            requests: metrics.requests_in_flight(),
            seconds: drain_timeout.as_secs_f64(),
        }),
    };
    // The router (and with it every queue sender but the pool's) is gone once the server
    // future is; close the queue and wait for the workers off the async threads.
    let _ = tokio::task::spawn_blocking(move || pool.close_and_join()).await;
    outcome
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
                runtime.block_on(serve(listener, index, config, async move {
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

//! What a server is allowed to do: worker threads, limits per request, the API key.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use subtle::ConstantTimeEq;

use super::ServeError;

/// Limits on what one request may ask for. Every one is configurable (`m3 serve --max-…`);
/// the defaults keep one request's memory and work bounded on a small machine.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest request body; a longer one gets 413.
    pub max_body_bytes: usize,
    /// Query vectors in one request.
    pub max_vectors: usize,
    /// Largest `k`.
    pub max_k: usize,
    /// Largest `nprobe`.
    pub max_nprobe: usize,
    /// Largest `qprobe`.
    pub max_qprobe: usize,
    /// Largest `edges`.
    pub max_edges: usize,
    /// Largest `hints`.
    pub max_hints: usize,
    /// Largest `rerank`.
    pub max_rerank: usize,
    /// Largest `expand_rounds`.
    pub max_expand_rounds: usize,
    /// Largest `expand_from`.
    pub max_expand_from: usize,
    /// Largest `expand_read`.
    pub max_expand_read: usize,
    /// Results one range query may return (`max_results` of a range request defaults to it).
    pub max_range_results: usize,
    /// Time from the start of a request (body read included) to its answer; beyond it the
    /// request gets 408 (body not received in time) or 504 (search not finished in time).
    pub deadline: Duration,
    /// Search and range requests being searched at once (counted from when their whole body
    /// has arrived and been checked); one more gets 429 with `Retry-After`.
    pub max_concurrent_requests: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 << 20,
            max_vectors: 1024,
            max_k: 1000,
            max_nprobe: 1024,
            max_qprobe: 256,
            max_edges: 256,
            max_hints: 256,
            max_rerank: 10_000,
            max_expand_rounds: 8,
            max_expand_from: 1000,
            max_expand_read: 1000,
            max_range_results: 10_000,
            deadline: Duration::from_secs(10),
            max_concurrent_requests: 64,
        }
    }
}

/// How a server runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Search worker threads (each owns a `Searcher` and keeps several queries' reads in
    /// flight).
    pub workers: usize,
    /// Queries in flight per worker thread (see `search::BatchOptions`).
    pub inflight_per_worker: usize,
    /// Threads of the async runtime that handles connections (parsing, validation, replies).
    pub http_threads: usize,
    /// Queries waiting for a worker; a full queue makes handlers wait (without blocking a
    /// thread) until the deadline.
    pub queue_capacity: usize,
    /// Limits on what one request may ask for.
    pub limits: Limits,
    /// When set, every endpoint but `/healthz` needs `Authorization: Bearer <key>`.
    pub api_key: Option<ApiKey>,
    /// After a shutdown signal, how long in-flight requests may take before the server stops
    /// anyway (and reports that it did): connections still open then are closed, a request
    /// without its answer gets none.
    pub drain_timeout: Duration,
    /// Time a client has to send a request's headers, counted from when the server starts
    /// waiting for them: the connection's accept, or on a keep-alive connection the end of
    /// the previous response (so it is also how long an idle keep-alive connection stays
    /// open). Beyond it the connection is closed.
    pub header_timeout: Duration,
    /// Longest pause while a request body arrives (between two of its chunks); beyond it the
    /// request gets 408. The whole body must also arrive within `limits.deadline`.
    pub body_timeout: Duration,
    /// Longest a response write may make no progress (the client does not read what it is
    /// sent); then the connection is closed.
    pub send_timeout: Duration,
    /// Connections open at once. At the limit the server stops accepting until one closes:
    /// further clients wait in the kernel's listen backlog (each open connection costs a task
    /// and buffers; idle ones are closed after `header_timeout`).
    pub max_connections: usize,
    /// Called on a search worker before each query it starts. For fault-injection tests (a
    /// hook that panics exercises the worker's recovery); `None` in `m3 serve`.
    pub query_hook: Option<QueryHook>,
    /// Whether `POST /v1/upsert` and `POST /v1/delete` take writes (`m3 serve --read-only`:
    /// they answer 403). The writer is opened at the first write.
    pub updates: bool,
    /// Write requests one commit takes at most (group commit: the writer thread commits every
    /// request waiting when it starts a commit, up to this many, with one fsync).
    pub max_write_batch: usize,
    /// Write requests waiting for the writer thread; a full queue makes handlers wait until
    /// the deadline.
    pub write_queue_capacity: usize,
    /// Called on the writer thread when it has taken the first request of a group, before it
    /// gathers the others, with a function that counts the requests waiting. For tests that
    /// must know how requests are grouped; `None` in `m3 serve`.
    pub write_hook: Option<WriteHook>,
    /// Nice value of the writer thread (0..=19; 0 = the process's own). Its work — coding
    /// inserts, refreshing the searchers' generation, merging — then yields the cores to the
    /// search workers when both want them (docs/UPDATES.md, "Serving writes").
    pub writer_nice: i32,
    /// A merge runs after a commit only when the clusters the default merge policy picks hold
    /// at least this fraction of the index's records in changes (live inserts plus dead
    /// records). A merge rewrites the RAM-sized files whole, so merging a few clusters after
    /// every small commit would cost O(index) per commit; 0 merges whenever the policy picks
    /// a cluster.
    pub merge_min_change: f64,
    /// Threads of the pool a merge runs on (beside the writer, at [`Self::writer_nice`]): a
    /// merge takes no cores from the writer's commits, and with the nice value yields them
    /// to searches.
    pub merge_threads: usize,
    /// Called on the merge thread once a merge is written and before it is handed to the
    /// writer thread for publication. For tests that must commit writes while a merge is
    /// running; `None` in `m3 serve`.
    pub merge_hook: Option<MergeHook>,
}

/// See [`ServeConfig::merge_hook`].
#[derive(Clone)]
pub struct MergeHook(Arc<dyn Fn() + Send + Sync>);

impl MergeHook {
    /// A hook that calls `f`.
    pub fn new(f: impl Fn() + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    pub(super) fn call(&self) {
        (self.0)()
    }
}

impl std::fmt::Debug for MergeHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MergeHook")
    }
}

/// See [`ServeConfig::write_hook`].
#[derive(Clone)]
pub struct WriteHook(Arc<WriteHookFn>);

type WriteHookFn = dyn Fn(&dyn Fn() -> usize) + Send + Sync;

impl WriteHook {
    /// A hook that calls `f` with a function counting the write requests waiting.
    pub fn new(f: impl Fn(&dyn Fn() -> usize) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    pub(super) fn call(&self, queued: &dyn Fn() -> usize) {
        (self.0)(queued)
    }
}

impl std::fmt::Debug for WriteHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteHook")
    }
}

/// A function a search worker calls with each query vector before starting it (see
/// [`ServeConfig::query_hook`]).
#[derive(Clone)]
pub struct QueryHook(Arc<HookFn>);

type HookFn = dyn Fn(&[f32]) + Send + Sync;

impl QueryHook {
    /// A hook that calls `f`.
    pub fn new(f: impl Fn(&[f32]) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    pub(super) fn call(&self, vector: &[f32]) {
        (self.0)(vector)
    }
}

impl std::fmt::Debug for QueryHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueryHook")
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            inflight_per_worker: crate::search::DEFAULT_INFLIGHT,
            http_threads: 2,
            queue_capacity: 4096,
            limits: Limits::default(),
            api_key: None,
            drain_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(5),
            send_timeout: Duration::from_secs(30),
            max_connections: 1024,
            query_hook: None,
            updates: true,
            max_write_batch: 1024,
            write_queue_capacity: 4096,
            write_hook: None,
            writer_nice: 10,
            merge_min_change: 0.05,
            merge_threads: 1,
            merge_hook: None,
        }
    }
}

/// A secret that requests must present. Compared in constant time; never printed.
#[derive(Clone)]
pub struct ApiKey(Vec<u8>);

impl ApiKey {
    /// The key in `path`: its contents without surrounding whitespace (so a trailing newline
    /// does not count). An empty key, or one with whitespace or control characters inside,
    /// is an error (it could not be sent in a header).
    pub fn from_file(path: &Path) -> Result<Self, ServeError> {
        let raw = std::fs::read(path).map_err(|source| ServeError::KeyFile {
            path: path.to_path_buf(),
            what: source.to_string(),
        })?;
        Self::new(raw.trim_ascii()).map_err(|what| ServeError::KeyFile {
            path: path.to_path_buf(),
            what,
        })
    }

    /// A key from its bytes (visible ASCII, at least one).
    pub fn new(key: &[u8]) -> Result<Self, String> {
        if key.is_empty() {
            return Err("the key is empty".into());
        }
        if let Some(b) = key.iter().find(|b| !b.is_ascii_graphic()) {
            return Err(format!(
                "the key holds byte {b:#04x}; use visible ASCII characters only"
            ));
        }
        Ok(Self(key.to_vec()))
    }

    /// Whether `presented` is the key, in time independent of where they differ (the length
    /// of the key is not hidden).
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.ct_eq(presented).into()
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_api_key_trims_the_file_and_compares_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        std::fs::write(&p, "s3cret-key\n").unwrap();
        let key = ApiKey::from_file(&p).unwrap();
        assert!(key.matches(b"s3cret-key"));
        assert!(!key.matches(b"s3cret-kez"));
        assert!(!key.matches(b"s3cret-key\n"));
        assert!(!key.matches(b"s3cret"));
        assert!(!key.matches(b""));
        assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");
    }

    #[test]
    fn serve_api_key_rejects_empty_and_unprintable_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        std::fs::write(&p, " \n").unwrap();
        let e = ApiKey::from_file(&p).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        std::fs::write(&p, "two words").unwrap();
        let e = ApiKey::from_file(&p).unwrap_err();
        assert!(e.to_string().contains("0x20"), "{e}");
        let e = ApiKey::from_file(&dir.path().join("missing")).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }
}

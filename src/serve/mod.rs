//! `m3 serve`: an index served over HTTP/JSON (DESIGN §7).
//!
//! Endpoints: `POST /v1/search` (k-NN of one or many vectors, approximate with optional knobs,
//! or exact), `POST /v1/range` (every vector within a radius), `GET /v1/index` (what
//! `m3 inspect --json` prints), `GET /healthz`, `GET /metrics` (OpenMetrics text), and the
//! live updates `POST /v1/upsert` (ids and vectors) and `POST /v1/delete` (ids), answered once
//! durable and visible to searches, and `POST /v1/compact` (a per-cluster merge now), answered
//! once the merged generation is installed (`writes.rs`: one writer thread, group commit).
//!
//! The shape: an async front (`http.rs`: axum on tokio) parses and checks requests and never
//! blocks; a fixed pool of search threads (`pool.rs`) runs the engine's own query state
//! machine ([`crate::search::Searcher`]) with several queries' reads in flight per thread on
//! the index's block reader (io_uring or pread). Between them, a bounded queue of single
//! query vectors. Every request is bounded ([`Limits`]: body size, vectors, `k`, each knob,
//! a deadline, concurrent requests) and every refusal is a status with a JSON body naming the
//! field at fault ([`ErrorBody`]). Connections have a header timeout and bodies a pause timeout
//! ([`ServeConfig`]); a request takes its admission permit only once its whole body has
//! arrived. Shutdown stops accepting, drains what is in flight within the drain timeout,
//! closes what is left, then stops the workers ([`serve`]). A panic on a worker fails one
//! query, never the pool (`pool.rs`).

mod api;
mod config;
mod error;
mod http;
mod metrics;
mod pool;
mod server;
mod writes;

pub use api::{
    CompactRequest, CompactResponse, DeleteRequest, DistanceMode, Knobs, QueryResult, RangeRequest,
    ResponseStats, SearchRequest, SearchResponse, UpsertRequest, WriteResponse,
};
pub use config::{ApiKey, Limits, MergeHook, QueryHook, ServeConfig, WriteHook};
pub(crate) use error::ApiError;
pub use error::{ErrorBody, ErrorDetail, ServeError};
pub(crate) use metrics::Metrics;
pub use server::{Served, ServerHandle, serve, serve_any, serve_sharded, terminate_signal};

//! The routes, their handlers and the guards in front of them.
//!
//! Every request passes `observe` (in-flight gauge, latency, status counts); every route but
//! `/healthz` passes `authorize` when an API key is configured. A search or range handler
//! reads the whole body first (at most `max_body_bytes`; no pause longer than the body
//! timeout, all of it within the deadline), parses and checks it, and only then takes one of
//! `max_concurrent_requests` permits (or answers 429 at once): a client that is slow to send
//! its body holds a connection, never a permit. With the permit it queues one job per query
//! vector for the workers and awaits the answers until the deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::timeout_at;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutError};

use super::api::{
    CheckedRequest, CompactRequest, CompactResponse, DeleteRequest, QueryKind, QueryResult,
    RangeRequest, ResponseStats, SearchRequest, SearchResponse, UpsertRequest, WriteResponse,
    parse_json,
};
use super::metrics::{METRICS_CONTENT_TYPE, endpoint_label};
use super::pool::{Job, JobError};
use super::writes::{WriteAck, WriteJob, WriteOp};
use super::{ApiError, ApiKey, Limits, Metrics};
use crate::search::{LiveIndex, RerankDistance};

/// What every handler shares.
pub(super) struct Shared {
    /// The latest generation of the index (each search takes one when it starts).
    pub live: Arc<LiveIndex>,
    /// `m3 inspect --json` of the published files, gathered at start (the `live` object is
    /// the current generation's, filled in per request).
    pub info: serde_json::Value,
    /// The writer thread's queue (`None`: the server takes no writes).
    pub writes: Option<async_channel::Sender<WriteJob>>,
    /// Why writes are refused when `writes` is `None` (the 403's message).
    pub read_only: &'static str,
    pub limits: Limits,
    pub api_key: Option<ApiKey>,
    pub admission: Arc<Semaphore>,
    /// Longest pause in a request body (enforced by the body timeout layer; named in 408s).
    pub body_timeout: Duration,
    pub queue: async_channel::Sender<Job>,
    pub metrics: Arc<Metrics>,
}

type AppState = Arc<Shared>;

pub(super) fn router(state: AppState) -> Router {
    let body_timeout = state.body_timeout;
    Router::new()
        .route("/v1/search", post(search))
        .route("/v1/range", post(range))
        .route("/v1/upsert", post(upsert))
        .route("/v1/delete", post(delete))
        .route("/v1/compact", post(compact))
        .route("/v1/index", get(index_info))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(RequestBodyTimeoutLayer::new(body_timeout))
        .with_state(state)
}

async fn observe(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let endpoint = endpoint_label(req.uri().path());
    s.metrics.request_started();
    let resp = next.run(req).await;
    s.metrics
        .request_finished(endpoint, resp.status().as_u16(), start.elapsed());
    resp
}

async fn authorize(State(s): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(key) = &s.api_key {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        if !presented.is_some_and(|p| key.matches(p)) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// One of the `max_concurrent_requests` permits, held until the request ends, or 429.
fn admit(s: &Shared) -> Result<OwnedSemaphorePermit, ApiError> {
    s.admission.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "the server is handling its limit of {} concurrent search requests; retry later",
                s.limits.max_concurrent_requests
            ),
        )
        .with_retry_after(1)
    })
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn index_info(State(s): State<AppState>) -> Response {
    let mut v = s.info.clone();
    v["live"] = s.live.current().live_info().to_json();
    (
        [(header::CONTENT_TYPE, "application/json")],
        Bytes::from(v.to_string()),
    )
        .into_response()
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        s.metrics.render(),
    )
        .into_response()
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no endpoint {} {} (POST /v1/search, POST /v1/range, POST /v1/upsert, \
             POST /v1/delete, POST /v1/compact, GET /v1/index, GET /healthz, GET /metrics)",
            req.method(),
            req.uri().path()
        ),
    )
}

async fn search(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let start = Instant::now();
    let deadline = start + s.limits.deadline;
    let bytes = read_body(&s, &headers, body, deadline).await?;
    let req: SearchRequest = parse_json(&bytes)?;
    let checked = req.check(&s.live.current(), &s.limits)?;
    let _permit = admit(&s)?;
    answer(&s, checked, start, deadline).await
}

async fn range(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let start = Instant::now();
    let deadline = start + s.limits.deadline;
    let bytes = read_body(&s, &headers, body, deadline).await?;
    let req: RangeRequest = parse_json(&bytes)?;
    let checked = req.check(&s.live.current(), &s.limits)?;
    let _permit = admit(&s)?;
    answer(&s, checked, start, deadline).await
}

async fn upsert(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let deadline = Instant::now() + s.limits.deadline;
    let bytes = read_body(&s, &headers, body, deadline).await?;
    let req: UpsertRequest = parse_json(&bytes)?;
    let (ids, vectors) = req.check(&s.live.current(), &s.limits)?;
    write(&s, WriteOp::Upsert { ids, vectors }, deadline).await
}

async fn delete(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let deadline = Instant::now() + s.limits.deadline;
    let bytes = read_body(&s, &headers, body, deadline).await?;
    let req: DeleteRequest = parse_json(&bytes)?;
    let ids = req.check(&s.limits)?;
    write(&s, WriteOp::Delete { ids }, deadline).await
}

/// `POST /v1/compact` (behind the API key): a per-cluster merge run by the writer thread
/// after the writes queued before it; answered once the merged generation is installed for
/// the searchers. Only queueing is bounded by the deadline: a merge takes as long as it takes.
async fn compact(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let deadline = Instant::now() + s.limits.deadline;
    let bytes = read_body(&s, &headers, body, deadline).await?;
    let req: CompactRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
        CompactRequest::default()
    } else {
        parse_json(&bytes)?
    };
    let ack = queue_write(&s, WriteOp::Compact { all: req.all }, deadline, None).await?;
    let m = ack.merge;
    json_response(&CompactResponse {
        merged: m.is_some(),
        clusters: m.map_or(0, |m| m.clusters),
        records_written: m.map_or(0, |m| m.records_written),
        bytes_before: m.map_or(0, |m| m.bytes_before),
        bytes_after: m.map_or(0, |m| m.bytes_after),
        generation: ack.generation,
    })
}

/// Queues a checked write for the writer thread and answers once it is durable and visible
/// (`writes.rs`). A write still queued or being committed at the deadline is answered 504 and
/// may still be committed.
async fn write(s: &Shared, op: WriteOp, deadline: Instant) -> Result<Response, ApiError> {
    let ack = queue_write(s, op, deadline, Some(deadline)).await?;
    json_response(&WriteResponse {
        generation: ack.generation,
        requests_in_commit: ack.group,
    })
}

fn json_response<T: serde::Serialize>(body: &T) -> Result<Response, ApiError> {
    let body = serde_json::to_vec(body)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Queues `op` for the writer thread (by `deadline`) and awaits its answer (by
/// `answer_by`, if any): 504 past either, 503 when the writer has stopped, 403 read-only.
async fn queue_write(
    s: &Shared,
    op: WriteOp,
    deadline: Instant,
    answer_by: Option<Instant>,
) -> Result<WriteAck, ApiError> {
    let Some(queue) = &s.writes else {
        return Err(ApiError::new(StatusCode::FORBIDDEN, s.read_only));
    };
    let (tx, rx) = oneshot::channel();
    let gone = || ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the writer has stopped");
    let late = || {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "the write was not committed within the deadline of {} ms; it may still be",
                s.limits.deadline.as_millis()
            ),
        )
    };
    match timeout_at(deadline.into(), queue.send(WriteJob { op, reply: tx })).await {
        Err(_) => return Err(late()),
        Ok(Err(_)) => return Err(gone()),
        Ok(Ok(())) => {}
    }
    let answer = match answer_by {
        Some(t) => timeout_at(t.into(), rx).await.map_err(|_| late())?,
        None => rx.await,
    };
    match answer {
        Err(_) => Err(gone()),
        Ok(r) => r,
    }
}

/// The body, at most `max_body_bytes` (413 beyond), received before the deadline and without
/// a pause longer than the body timeout (408).
async fn read_body(
    s: &Shared,
    headers: &HeaderMap,
    body: Body,
    deadline: Instant,
) -> Result<Bytes, ApiError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let json = ct
            .to_str()
            .ok()
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "the body must be JSON (Content-Type: application/json), not {:?}",
                    ct.to_str().unwrap_or("?")
                ),
            ));
        }
    }
    let limit = s.limits.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than this server's limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match timeout_at(deadline.into(), Limited::new(body, limit).collect()).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the body did not arrive within the deadline of {} ms",
                s.limits.deadline.as_millis()
            ),
        )),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) if caused_by::<TimeoutError>(&*e) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the body paused for longer than the body timeout of {} ms",
                s.body_timeout.as_millis()
            ),
        )),
        Ok(Err(e)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("reading the body failed: {e}"),
        )),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

/// Whether `e` or an error in its chain of sources is an `E`.
fn caused_by<E: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if e.is::<E>() {
            return true;
        }
        cur = e.source();
    }
    false
}

fn deadline_error(s: &Shared) -> ApiError {
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        format!(
            "the search did not finish within the deadline of {} ms",
            s.limits.deadline.as_millis()
        ),
    )
}

/// Lowers the queries-in-flight gauge by what is still counted when the request ends, however
/// it ends (answer, error, or the client going away and the handler being dropped).
struct InFlight<'a> {
    metrics: &'a Metrics,
    left: usize,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.metrics.queries_left(self.left);
    }
}

/// Queues every vector of a checked request and gathers the answers, in request order.
async fn answer(
    s: &Shared,
    req: CheckedRequest,
    start: Instant,
    deadline: Instant,
) -> Result<Response, ApiError> {
    let n = req.vectors.len();
    let kind = Arc::new(req.kind);
    s.metrics.queries_queued(n);
    let mut in_flight = InFlight {
        metrics: &s.metrics,
        left: n,
    };
    let mut replies = Vec::with_capacity(n);
    for (qi, vector) in req.vectors.into_iter().enumerate() {
        let (tx, rx) = oneshot::channel();
        let job = Job {
            qi,
            vector,
            kind: kind.clone(),
            deadline,
            reply: tx,
        };
        match timeout_at(deadline.into(), s.queue.send(job)).await {
            Err(_) => return Err(deadline_error(s)),
            Ok(Err(_)) => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the search workers have stopped",
                ));
            }
            Ok(Ok(())) => replies.push(rx),
        }
    }
    let (metric_kind, lccmd) = match kind.as_ref() {
        QueryKind::Approx(p) => ("approx", matches!(p.distance, RerankDistance::LcCmd { .. })),
        QueryKind::Exact { .. } => ("exact", false),
        QueryKind::Range { .. } => ("range", false),
    };
    let metric = s.live.current().metric();
    let mut stats = ResponseStats::default();
    let mut results = Vec::with_capacity(n);
    for (qi, rx) in replies.into_iter().enumerate() {
        let (mut neighbours, st, index) = match timeout_at(deadline.into(), rx).await {
            Err(_) => return Err(deadline_error(s)),
            Ok(Err(_)) if Instant::now() >= deadline => return Err(deadline_error(s)),
            Ok(Err(_)) => {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("query {qi}: the search worker stopped before answering"),
                ));
            }
            Ok(Ok(Ok(r))) => r,
            Ok(Ok(Err(JobError::Search(e)))) => return Err(ApiError::from_search(qi, e)),
            Ok(Ok(Err(e @ JobError::Panicked(_)))) => {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("query {qi}: internal error: {e}; the server goes on"),
                ));
            }
        };
        in_flight.left -= 1;
        s.metrics.queries_left(1);
        s.metrics.query_answered(metric_kind, &st);
        stats.add(&st);
        let mut truncated = false;
        if let QueryKind::Range { max_results, .. } = kind.as_ref()
            && neighbours.len() > *max_results
        {
            neighbours.truncate(*max_results);
            truncated = true;
        }
        results.push(QueryResult {
            // The vids of the generation that answered.
            ids: neighbours.iter().map(|nb| index.user_id(nb.id)).collect(),
            distances: neighbours
                .iter()
                .map(|nb| {
                    if lccmd {
                        nb.dist
                    } else {
                        metric.to_natural(nb.dist)
                    }
                })
                .collect(),
            truncated,
        });
    }
    stats.took_us = start.elapsed().as_micros() as u64;
    let body = serde_json::to_vec(&SearchResponse { results, stats }).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the answer: {e}"),
        )
    })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

//! What `GET /metrics` reports, in the Prometheus / OpenMetrics text format: requests by
//! endpoint and status, their latency histogram, errors, requests and queries in flight, and
//! the I/O the queries did.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::search::QueryStats;

/// Content type of [`Metrics::render`]'s output.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The endpoints, as metric labels (anything else is `other`, so a scan of random paths
/// cannot grow the label set).
pub(super) const ENDPOINTS: [&str; 8] = [
    "/v1/search",
    "/v1/range",
    "/v1/upsert",
    "/v1/compact",
    "/v1/delete",
    "/v1/index",
    "/healthz",
    "/metrics",
];

pub(super) fn endpoint_label(path: &str) -> &'static str {
    ENDPOINTS
        .iter()
        .find(|e| **e == path)
        .copied()
        .unwrap_or("other")
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// The server's counters. Cheap to update from any thread.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    errors: Family<RequestLabels, Counter>,
    latency: Family<EndpointLabels, Histogram>,
    requests_in_flight: Gauge,
    queries: Family<KindLabels, Counter>,
    queries_in_flight: Gauge,
    queries_abandoned: Counter,
    worker_panics: Counter,
    reads: Counter,
    sectors: Counter,
    bytes: Counter,
    io_rounds: Counter,
    write_requests: Counter,
    commits: Counter,
    merges: Counter,
    merge_failures: Counter,
    merge_carried: Counter,
}

/// A counter registered in `registry` under `name` with `help`.
fn counter(registry: &mut Registry, name: &str, help: &str) -> Counter {
    let c = Counter::default();
    registry.register(name, help, c.clone());
    c
}

impl Metrics {
    pub fn new(index_vectors: u64, workers: usize) -> Self {
        let mut registry = Registry::with_prefix("m3");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by endpoint and status",
            requests.clone(),
        );
        let errors = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_errors",
            "HTTP requests answered with a status of 400 or more",
            errors.clone(),
        );
        // 50 µs … 50 µs·2^17 ≈ 6.6 s.
        let latency = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(50e-6, 2.0, 18))
        });
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its answer",
            latency.clone(),
        );
        let requests_in_flight = Gauge::default();
        registry.register(
            "http_requests_in_flight",
            "HTTP requests being handled",
            requests_in_flight.clone(),
        );
        let queries = Family::<KindLabels, Counter>::default();
        registry.register(
            "queries",
            "Query vectors answered (approx, exact, range)",
            queries.clone(),
        );
        let queries_in_flight = Gauge::default();
        registry.register(
            "queries_in_flight",
            "Query vectors queued for or running on the search workers",
            queries_in_flight.clone(),
        );
        let queries_abandoned = counter(
            &mut registry,
            "queries_abandoned",
            "Queued query vectors dropped unstarted because their request had ended (error, \
             deadline or disconnect)",
        );
        let worker_panics = counter(
            &mut registry,
            "worker_panics",
            "Panics caught on the search workers (each answered 500; the worker goes on)",
        );
        let reads = counter(
            &mut registry,
            "read_requests",
            "Read requests (coalesced sector ranges) of answered queries",
        );
        let sectors = counter(&mut registry, "read_sectors", "4 KiB sectors read");
        let bytes = counter(&mut registry, "read_bytes", "Bytes read from the data file");
        let io_rounds = counter(
            &mut registry,
            "io_rounds",
            "Batches of reads waited on (I/O round trips)",
        );
        let write_requests = counter(
            &mut registry,
            "write_requests",
            "Upsert and delete requests committed (or whose commit failed)",
        );
        let commits = counter(
            &mut registry,
            "commits",
            "Commits of the writer (each one fsync of the log for a group of write requests)",
        );
        let merges = counter(
            &mut registry,
            "merges",
            "Per-cluster merges published (decision 0012; they run beside the writer)",
        );
        let merge_failures = counter(
            &mut registry,
            "merge_failures",
            "Merges that failed (nothing published; the index is as it was)",
        );
        let merge_carried = counter(
            &mut registry,
            "merge_carried_ops",
            "Inserts and deletes committed while a merge ran, carried into its generation",
        );
        let vectors = Gauge::<i64>::default();
        vectors.set(index_vectors as i64);
        registry.register("index_vectors", "Vectors in the served index", vectors);
        let w = Gauge::<i64>::default();
        w.set(workers as i64);
        registry.register("search_workers", "Search worker threads", w);
        Self {
            registry,
            requests,
            errors,
            latency,
            requests_in_flight,
            queries,
            queries_in_flight,
            queries_abandoned,
            worker_panics,
            reads,
            sectors,
            bytes,
            io_rounds,
            write_requests,
            commits,
            merges,
            merge_failures,
            merge_carried,
        }
    }

    /// The text of `GET /metrics`.
    pub fn render(&self) -> String {
        let mut s = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }

    /// HTTP requests being handled now.
    pub fn requests_in_flight(&self) -> i64 {
        self.requests_in_flight.get()
    }

    pub(super) fn request_started(&self) {
        self.requests_in_flight.inc();
    }

    pub(super) fn request_finished(&self, endpoint: &'static str, status: u16, took: Duration) {
        self.requests_in_flight.dec();
        let l = RequestLabels { endpoint, status };
        self.requests.get_or_create(&l).inc();
        if status >= 400 {
            self.errors.get_or_create(&l).inc();
        }
        self.latency
            .get_or_create(&EndpointLabels { endpoint })
            .observe(took.as_secs_f64());
    }

    /// One commit for `requests` write requests.
    pub(super) fn writes_committed(&self, requests: usize) {
        self.commits.inc();
        self.write_requests.inc_by(requests as u64);
    }

    /// One per-cluster merge published, `carried` operations committed while it ran.
    pub(super) fn merged(&self, carried: usize) {
        self.merges.inc();
        self.merge_carried.inc_by(carried as u64);
    }

    /// One merge that failed.
    pub(super) fn merge_failed(&self) {
        self.merge_failures.inc();
    }

    pub(super) fn queries_queued(&self, n: usize) {
        self.queries_in_flight.inc_by(n as i64);
    }

    pub(super) fn queries_left(&self, n: usize) {
        self.queries_in_flight.dec_by(n as i64);
    }

    pub(super) fn query_abandoned(&self) {
        self.queries_abandoned.inc();
    }

    pub(super) fn worker_panicked(&self) {
        self.worker_panics.inc();
    }

    pub(super) fn query_answered(&self, kind: &'static str, s: &QueryStats) {
        self.queries.get_or_create(&KindLabels { kind }).inc();
        self.reads.inc_by(s.reads);
        self.sectors.inc_by(s.sectors);
        self.bytes.inc_by(s.bytes);
        self.io_rounds.inc_by(s.io_rounds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_metrics_render_counts_requests_errors_and_reads() {
        let m = Metrics::new(1000, 2);
        m.request_started();
        m.request_started();
        m.request_finished("/v1/search", 200, Duration::from_micros(300));
        m.request_finished("/v1/search", 429, Duration::from_micros(10));
        m.query_answered(
            "approx",
            &QueryStats {
                reads: 3,
                sectors: 5,
                bytes: 5 * 4096,
                io_rounds: 1,
                ..Default::default()
            },
        );
        let text = m.render();
        for line in [
            "m3_http_requests_total{endpoint=\"/v1/search\",status=\"200\"} 1",
            "m3_http_requests_total{endpoint=\"/v1/search\",status=\"429\"} 1",
            "m3_http_errors_total{endpoint=\"/v1/search\",status=\"429\"} 1",
            "m3_http_requests_in_flight 0",
            "m3_queries_total{kind=\"approx\"} 1",
            "m3_read_requests_total 3",
            "m3_read_bytes_total 20480",
            "m3_http_request_duration_seconds_count{endpoint=\"/v1/search\"} 2",
            "m3_index_vectors 1000",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in\n{text}"
            );
        }
        assert!(
            !text.contains("m3_http_errors_total{endpoint=\"/v1/search\",status=\"200\"}"),
            "a 200 is not an error:\n{text}"
        );
        assert_eq!(endpoint_label("/v1/search"), "/v1/search");
        assert_eq!(endpoint_label("/admin"), "other");
    }
}

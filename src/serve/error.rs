//! Errors of starting a server ([`ServeError`]) and of answering one request ([`ApiError`],
//! which is what the client sees: a status and a JSON body naming the field at fault).

use std::path::PathBuf;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::search::SearchError;

/// Why a server could not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The API key file cannot be read or holds no usable key.
    #[error("API key file {path}: {what}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A server setting is out of range.
    #[error("invalid server setting {name}: {what}")]
    Config {
        /// The setting.
        name: &'static str,
        /// What is wrong with it.
        what: String,
    },
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The async runtime or a server thread failed (could not start, or panicked).
    #[error("server runtime: {0}")]
    Runtime(std::io::Error),
    /// Requests were still unanswered when the drain timeout ran out.
    #[error(
        "{requests} request(s) still in flight {seconds:.1} s after the shutdown signal; closed their connections without an answer"
    )]
    DrainTimeout {
        /// Requests still in flight.
        requests: i64,
        /// Seconds since the shutdown signal.
        seconds: f64,
    },
}

/// A request that cannot be answered: the status, the request field at fault (a JSON path
/// such as `vectors[3][17]` or `knobs.nprobe`, when one is), and a message.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The request field at fault, as a JSON path.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
    /// Seconds, sent as `Retry-After` (429, 503).
    pub retry_after: Option<u64>,
}

/// The JSON body of an error response: `{"error": {"status", "field", "message"}}`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The `error` object of an error response.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ErrorDetail {
    /// The HTTP status code.
    pub status: u16,
    /// The request field at fault, as a JSON path (`vectors[3][17]`, `knobs.nprobe`); absent
    /// when no single field is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            field: None,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 for `field`.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            ..Self::new(StatusCode::BAD_REQUEST, message)
        }
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// An error of the search engine for query `qi` of a request. Bad input (which the
    /// server's own validation should have caught first) is 400 naming the field; a failed
    /// or corrupt read of the index is 500.
    pub fn from_search(qi: usize, e: SearchError) -> Self {
        match &e {
            SearchError::QueryDim { .. }
            | SearchError::ZeroQuery { .. }
            | SearchError::QueryNorm { .. } => Self::field(format!("vectors[{qi}]"), e.to_string()),
            SearchError::NonFinite { col, .. } => {
                Self::field(format!("vectors[{qi}][{col}]"), e.to_string())
            }
            SearchError::KZero | SearchError::KTooLarge { .. } => Self::field("k", e.to_string()),
            SearchError::Param { name, .. } => Self::field(format!("knobs.{name}"), e.to_string()),
            // Block weights of a multi-vector index (`knobs.block_weights`).
            SearchError::Block(_) => Self::field("knobs.block_weights", e.to_string()),
            SearchError::Io(_) | SearchError::Format(_) | SearchError::Data(_) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("query {qi}: reading the index failed: {e}"),
            ),
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                status: self.status.as_u16(),
                field: self.field.clone(),
                message: self.message.clone(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        let mut r = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

//! Why a request could not be proxied, and the response the client gets.

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use super::{BoxError, ProxyBody, text_body};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches this host and path")]
    NoRoute,
    #[error("the request header section is larger than {limit} bytes")]
    HeadersTooLarge { limit: usize },
    #[error("the request body is larger than limits.max_body_bytes")]
    BodyTooLarge,
    #[error("no healthy backend in upstream \"{upstream}\"")]
    NoHealthyBackend {
        upstream: String,
        retry_after_secs: u64,
    },
    #[error("the proxy is at its concurrency limit")]
    Overloaded,
    #[error("over rate limit \"{limit}\"")]
    RateLimited {
        limit: String,
        retry_after_secs: u64,
        policy: HeaderValue,
    },
    #[error("rate limit \"{limit}\" cannot reach its shared state")]
    RateLimiterUnavailable { limit: String },
    #[error("waited {waited:?} in the admission queue without a place")]
    QueueTimeout { waited: Duration },
    #[error("every backend of upstream \"{upstream}\" is at its in-flight limit")]
    BreakerOpen { upstream: String },
    #[error("cannot connect to backend {addr}: {source}")]
    Connect {
        backend: usize,
        addr: String,
        source: BoxError,
    },
    #[error("backend {addr} sent no response within {timeout:?}")]
    BackendTimeout {
        backend: usize,
        addr: String,
        timeout: Duration,
    },
    #[error("backend {addr} failed: {source}")]
    Backend {
        backend: usize,
        addr: String,
        source: BoxError,
    },
    /// The backend refused the request without processing it (an HTTP/2
    /// stream above a GOAWAY's last id, or reset with REFUSED_STREAM).
    #[error("backend {addr} refused the request unprocessed: {source}")]
    Refused {
        backend: usize,
        addr: String,
        source: BoxError,
    },
    #[error("reading the client's request body failed: {0}")]
    ClientBody(BoxError),
    #[error("reading the backend's response body for the cache failed: {0}")]
    BackendBody(String),
    #[error("the request did not complete within timeouts.request")]
    RequestTimeout,
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::ClientBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::NoHealthyBackend { .. }
            | ProxyError::BreakerOpen { .. }
            | ProxyError::Overloaded
            | ProxyError::QueueTimeout { .. }
            | ProxyError::RateLimiterUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::Connect { .. }
            | ProxyError::Backend { .. }
            | ProxyError::Refused { .. }
            | ProxyError::BackendBody(_) => StatusCode::BAD_GATEWAY,
            ProxyError::BackendTimeout { .. } | ProxyError::RequestTimeout => {
                StatusCode::GATEWAY_TIMEOUT
            }
        }
    }

    /// The backend this error happened on, if it happened on one.
    pub fn backend(&self) -> Option<usize> {
        match self {
            ProxyError::Connect { backend, .. }
            | ProxyError::BackendTimeout { backend, .. }
            | ProxyError::Refused { backend, .. }
            | ProxyError::Backend { backend, .. } => Some(*backend),
            _ => None,
        }
    }

    /// Whether the backend certainly did not process the request (no
    /// connection, or a refused stream): safe to send again, whatever the
    /// method.
    pub fn unprocessed(&self) -> bool {
        matches!(
            self,
            ProxyError::Connect { .. } | ProxyError::Refused { .. }
        )
    }

    /// What the client is told. Backend addresses stay in the log.
    pub fn public_text(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "no route for this host and path",
            ProxyError::ClientBody(_) => "the request body could not be read",
            ProxyError::HeadersTooLarge { .. } => "request headers too large",
            ProxyError::BodyTooLarge => "request body too large",
            ProxyError::NoHealthyBackend { .. } => "no healthy backend available",
            ProxyError::BreakerOpen { .. } => "backends at capacity",
            ProxyError::Overloaded => "over capacity, retry later",
            ProxyError::QueueTimeout { .. } => "over capacity: queued too long, retry later",
            ProxyError::RateLimited { .. } => "rate limit exceeded, retry later",
            ProxyError::RateLimiterUnavailable { .. } => "rate limiter unavailable, retry later",
            ProxyError::Connect { .. } => "backend unreachable",
            ProxyError::Backend { .. }
            | ProxyError::Refused { .. }
            | ProxyError::BackendBody(_) => "backend failed",
            ProxyError::BackendTimeout { .. } | ProxyError::RequestTimeout => "backend timed out",
        }
    }

    pub fn into_response(self) -> Response<ProxyBody> {
        let status = self.status();
        let mut resp = Response::new(text_body(format!(
            "{} {}: {}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            self.public_text()
        )));
        *resp.status_mut() = status;
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        match &self {
            ProxyError::NoHealthyBackend {
                retry_after_secs, ..
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            ProxyError::RateLimited {
                limit,
                retry_after_secs,
                policy,
            } => {
                crate::ratelimit::rejection_headers(headers, limit, *retry_after_secs, policy);
            }
            ProxyError::BreakerOpen { .. }
            | ProxyError::Overloaded
            | ProxyError::RateLimiterUnavailable { .. }
            | ProxyError::QueueTimeout { .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            // The body may be half read; do not reuse the connection.
            ProxyError::BodyTooLarge => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        resp
    }
}

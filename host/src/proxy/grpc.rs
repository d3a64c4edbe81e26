//! gRPC over the proxy: what differs from plain HTTP.
//!
//! - Errors the proxy answers itself go to a gRPC client as a
//!   trailers-only response (`200`, `grpc-status`, `grpc-message`), with
//!   the code gRPC's HTTP mapping gives: a timeout is `DEADLINE_EXCEEDED`,
//!   a backend that cannot be reached `UNAVAILABLE`, no route
//!   `UNIMPLEMENTED`. A bare 504 would reach the application as
//!   `UNAVAILABLE` or `UNKNOWN`, hiding what happened.
//! - `grpc-timeout` shortens the request's deadline.
//! - A call answered `UNAVAILABLE` in its headers (trailers-only: the
//!   service never ran) is retried on another backend, as Envoy's
//!   `retry_on: unavailable`; the request body is kept while it streams
//!   ([`Replayable`]) so it can be sent again.
//! - `switchyard_grpc_responses_total{route, grpc_status}` counts calls by
//!   the status in their headers or, for most, their trailers.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response, header};
use http_body::{Body, Frame};
use metrics::Counter;

use super::error::ProxyError;
use super::{BoxError, ProxyBody, empty_body};

pub const DEADLINE_EXCEEDED: u32 = 4;
pub const RESOURCE_EXHAUSTED: u32 = 8;
pub const UNIMPLEMENTED: u32 = 12;
pub const INTERNAL: u32 = 13;
pub const UNAVAILABLE: u32 = 14;

/// Request bodies up to this size are kept for a retry; a call that sends
/// more is not retried.
pub const MAX_REPLAY: usize = 64 * 1024;

/// Whether a request or response is gRPC (`application/grpc`, with or
/// without a `+codec` suffix; not gRPC-Web).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.as_bytes())
        .is_some_and(|v| {
            v.starts_with(b"application/grpc")
                && matches!(v.get(16), None | Some(b'+') | Some(b';'))
        })
}

/// Whether a request is a gRPC call: a POST (checked first: it spares
/// every other request a header lookup) of a gRPC content type.
pub fn is_call(method: &http::Method, headers: &HeaderMap) -> bool {
    method == http::Method::POST && is_grpc(headers)
}

/// The `grpc-status` in a header or trailer section.
pub fn status_of(headers: &HeaderMap) -> Option<u32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// A `grpc-timeout` value (`1-8 digits` and a unit: `H M S m u n`).
pub fn timeout_of(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.as_bytes();
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(n.saturating_mul(3600)),
        b"M" => Duration::from_secs(n.saturating_mul(60)),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The gRPC code for an error the proxy answers itself.
pub fn code_for(e: &ProxyError) -> u32 {
    match e {
        ProxyError::BackendTimeout { .. } | ProxyError::RequestTimeout => DEADLINE_EXCEEDED,
        ProxyError::NoRoute => UNIMPLEMENTED,
        ProxyError::HeadersTooLarge { .. }
        | ProxyError::BodyTooLarge
        | ProxyError::RateLimited { .. } => RESOURCE_EXHAUSTED,
        ProxyError::ClientBody(_) | ProxyError::BackendBody(_) => INTERNAL,
        ProxyError::NoHealthyBackend { .. }
        | ProxyError::Overloaded
        | ProxyError::QueueTimeout { .. }
        | ProxyError::RateLimiterUnavailable { .. }
        | ProxyError::BreakerOpen { .. }
        | ProxyError::Connect { .. }
        | ProxyError::Backend { .. }
        | ProxyError::Refused { .. } => UNAVAILABLE,
    }
}

/// The trailers-only answer a gRPC client gets for `e`.
pub fn error_response(e: &ProxyError) -> Response<ProxyBody> {
    let mut response = Response::new(empty_body());
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(code_for(e)));
    // The public text of the plain answer, percent-encoded as gRPC wants
    // (it is ASCII without `%`, so as it is).
    let plain = e.public_text();
    if let Ok(v) = HeaderValue::from_str(plain) {
        h.insert("grpc-message", v);
    }
    response
}

/// Whether a response is gRPC's `UNAVAILABLE` in its headers: the call
/// never reached the service's code.
pub fn unavailable(response: &Response<ProxyBody>) -> bool {
    status_of(response.headers()) == Some(UNAVAILABLE)
}

pin_project_lite::pin_project! {
    /// A gRPC response body that counts its call by the `grpc-status` of
    /// its trailers.
    pub struct StatusCounted {
        #[pin]
        inner: ProxyBody,
        count: Option<Box<dyn FnOnce(u32) + Send>>,
    }
}

impl StatusCounted {
    pub fn new(inner: ProxyBody, count: Box<dyn FnOnce(u32) + Send>) -> Self {
        StatusCounted {
            inner,
            count: Some(count),
        }
    }
}

impl Body for StatusCounted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = std::task::ready!(this.inner.poll_frame(cx));
        if let Some(Ok(frame)) = &polled
            && let Some(code) = frame.trailers_ref().and_then(status_of)
            && let Some(count) = this.count.take()
        {
            count(code);
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Counts one call with `code` on `counter_for(code)`.
pub fn counter(route: &str, code: u32) -> Counter {
    metrics::counter!(
        crate::telemetry::names::GRPC_RESPONSES,
        "route" => route.to_string(),
        "grpc_status" => code.to_string()
    )
}

/// A request body that can be read again from the start by a later
/// attempt: every attempt gets a [`reader`](Replayable::reader) over one
/// shared source, and what any reader took from the source is kept (up to
/// [`MAX_REPLAY`]) for the next. A reader dropped unread loses nothing, so
/// an attempt a closing connection never sent leaves the body whole.
#[derive(Clone)]
pub struct Replayable(Arc<Mutex<Source>>);

struct Source {
    body: ProxyBody,
    /// Everything read from `body` so far, while it fits.
    kept: BytesMut,
    /// Bytes read from `body` so far.
    total: usize,
    trailers: Option<HeaderMap>,
    ended: bool,
    /// More was read than kept, or the body failed: no new reader.
    spent: bool,
    /// Readers handed out, and which of them were read from.
    issued: usize,
    read_by: Vec<usize>,
}

impl Replayable {
    pub fn new(body: ProxyBody) -> Self {
        Replayable(Arc::new(Mutex::new(Source {
            body,
            kept: BytesMut::new(),
            total: 0,
            trailers: None,
            ended: false,
            spent: false,
            issued: 0,
            read_by: Vec::new(),
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Source> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The whole body from its start, and the reader's number; `None`
    /// once more of it was read than could be kept.
    pub fn reader(&self) -> Option<(ProxyBody, usize)> {
        use http_body_util::BodyExt;
        let mut s = self.lock();
        if s.spent {
            return None;
        }
        s.issued += 1;
        let id = s.issued;
        let reader = Reader {
            source: self.clone(),
            id,
            at: 0,
            trailers_sent: false,
        };
        Some((reader.boxed_unsync(), id))
    }

    /// Whether reader `id` was ever read from (its request was sent).
    pub fn was_read(&self, id: usize) -> bool {
        self.lock().read_by.contains(&id)
    }
}

struct Reader {
    source: Replayable,
    id: usize,
    /// Bytes of the body this reader has yielded.
    at: usize,
    trailers_sent: bool,
}

impl Body for Reader {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let mut guard = this.source.lock();
        let s = &mut *guard;
        if !s.read_by.contains(&this.id) {
            s.read_by.push(this.id);
        }
        if this.at < s.total {
            // What an earlier reader took from the source.
            if s.spent {
                return Poll::Ready(Some(Err(
                    "the request body is too large to send again".into()
                )));
            }
            let chunk = Bytes::copy_from_slice(&s.kept[this.at..s.total]);
            this.at = s.total;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if s.ended {
            if !this.trailers_sent
                && let Some(t) = &s.trailers
            {
                this.trailers_sent = true;
                return Poll::Ready(Some(Ok(Frame::trailers(t.clone()))));
            }
            return Poll::Ready(None);
        }
        let polled = std::task::ready!(Pin::new(&mut s.body).poll_frame(cx));
        match polled {
            None => {
                s.ended = true;
                Poll::Ready(None)
            }
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    s.total += data.len();
                    this.at = s.total;
                    if s.kept.len() + data.len() <= MAX_REPLAY && !s.spent {
                        s.kept.extend_from_slice(data);
                    } else {
                        s.spent = true;
                        s.kept = BytesMut::new();
                    }
                } else if let Some(t) = frame.trailers_ref() {
                    s.trailers = Some(t.clone());
                    s.ended = true;
                    this.trailers_sent = true;
                }
                // An HTTP/2 source says its end with its last frame.
                if s.body.is_end_stream() {
                    s.ended = true;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                s.spent = true;
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let s = self.source.lock();
        self.at == s.total
            && (s.ended || s.body.is_end_stream())
            && (s.trailers.is_none() || self.trailers_sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_by_the_spec() {
        let of = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("grpc-timeout", HeaderValue::from_static(v));
            timeout_of(&h)
        };
        assert_eq!(of("250m"), Some(Duration::from_millis(250)));
        assert_eq!(of("3S"), Some(Duration::from_secs(3)));
        assert_eq!(of("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(of("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "m", "123456789m", "1x", "-1S", "1.5S"] {
            assert_eq!(of(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_grpc_content_types_are_grpc() {
        let is = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(v));
            is_grpc(&h)
        };
        assert!(is("application/grpc"));
        assert!(is("application/grpc+proto"));
        assert!(!is("application/grpc-web"));
        assert!(!is("application/grpcx"));
        assert!(!is("text/plain"));
    }

    #[tokio::test]
    async fn a_replayable_body_reads_whole_from_every_reader_while_it_fits() {
        use http_body_util::BodyExt;
        let body = Replayable::new(crate::http1::text_body("hello"));
        // A reader dropped unread takes nothing with it.
        let (unread, first) = body.reader().expect("reader");
        drop(unread);
        assert!(!body.was_read(first));
        let (reader, second) = body.reader().expect("reader");
        let sent = reader.collect().await.expect("body").to_bytes();
        assert_eq!(sent, "hello");
        assert!(body.was_read(second));
        let (again, _) = body.reader().expect("kept");
        assert_eq!(again.collect().await.expect("replay").to_bytes(), "hello");

        let big = Replayable::new(crate::http1::text_body(vec![b'x'; MAX_REPLAY + 1]));
        let (reader, _) = big.reader().expect("reader");
        assert_eq!(
            reader.collect().await.expect("body").to_bytes().len(),
            MAX_REPLAY + 1
        );
        assert!(big.reader().is_none(), "too large to keep");
    }
}

//! Response compression: gzip, Brotli and zstd, negotiated from
//! `Accept-Encoding`.
//!
//! Two halves, on either side of the cache:
//!
//! - above it, the route phase calls [`negotiate_request`]: the request's
//!   `Accept-Encoding` becomes the one coding chosen (or `identity`). The
//!   cache then keys its `Vary: Accept-Encoding` variants by coding, not by
//!   each browser's spelling of the header, and the backend is asked for
//!   exactly what will be served (a backend that compresses itself is left
//!   to it).
//! - below it, [`CompressLayer`] compresses what the backend sent. The
//!   cache stores the compressed variant, so a hit is served as stored and
//!   never compressed again.
//!
//! A response is compressed when its type is in the route's list, its
//! length is unknown or at least `min_size`, and it has a body that may be
//! transformed: not a `1xx`, `204`, `206` or `304`, no `Content-Range`, no
//! `Content-Encoding` already, no `Cache-Control: no-transform`. Every such
//! response gets `Vary: Accept-Encoding`, compressed or not; a compressed
//! one loses `Content-Length`, `Accept-Ranges` and digests of the old
//! bytes, and its strong `ETag` becomes weak (`W/`), so a conditional
//! request still revalidates at the backend by weak comparison.

mod body;
mod negotiate;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use tower::Service;

pub use body::{Compressed, Levels};
pub use negotiate::{MediaRange, coding_of, negotiate};

use crate::config::Coding;
use crate::proxy::{Exchange, ProxyBody, ProxyError};

/// A route's compression settings.
#[derive(Debug)]
pub struct RouteCompression {
    /// Offered codings, most preferred first.
    pub codings: Box<[Coding]>,
    pub min_size: u64,
    pub types: Box<[MediaRange]>,
    pub levels: Levels,
    /// Counters per coding, indexed by `Coding as usize`.
    pub metrics: [CodingMetrics; 3],
}

/// `switchyard_compression_*` counters of one coding.
#[derive(Clone, Debug)]
pub struct CodingMetrics {
    pub responses: metrics::Counter,
    pub bytes_in: metrics::Counter,
    pub bytes_out: metrics::Counter,
}

impl CodingMetrics {
    pub fn for_coding(coding: Coding) -> CodingMetrics {
        let algorithm = coding.token();
        CodingMetrics {
            responses: metrics::counter!("switchyard_compressed_responses_total", "algorithm" => algorithm),
            bytes_in: metrics::counter!("switchyard_compression_bytes_total", "algorithm" => algorithm, "direction" => "in"),
            bytes_out: metrics::counter!("switchyard_compression_bytes_total", "algorithm" => algorithm, "direction" => "out"),
        }
    }

    pub fn all() -> [CodingMetrics; 3] {
        [Coding::Gzip, Coding::Br, Coding::Zstd].map(CodingMetrics::for_coding)
    }
}

/// Rewrites the request's `Accept-Encoding` to the coding negotiated for
/// it, or `identity`. Requests that are not content exchanges (upgrades,
/// gRPC) keep theirs.
pub fn negotiate_request(settings: &RouteCompression, headers: &mut HeaderMap) {
    if headers.contains_key(header::UPGRADE) {
        return;
    }
    let value = match negotiate(headers, &settings.codings) {
        Some(c) => HeaderValue::from_static(c.token()),
        None => HeaderValue::from_static("identity"),
    };
    headers.insert(header::ACCEPT_ENCODING, value);
}

/// The coding a negotiated request asks for.
fn requested(headers: &HeaderMap) -> Option<Coding> {
    let value = headers.get(header::ACCEPT_ENCODING)?.to_str().ok()?;
    coding_of(value)
}

crate::proxy::layer!(CompressLayer, Compress);

/// What a request's response may become.
struct Plan {
    settings: Arc<RouteCompression>,
    coding: Option<Coding>,
    head: bool,
    /// The request's `If-None-Match` names a weak validator: a
    /// revalidation of a stored compressed variant.
    weak_condition: bool,
}

impl<S> Service<Exchange> for Compress<S>
where
    S: Service<Exchange, Response = Response<ProxyBody>, Error = ProxyError>,
{
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = Compressing<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, ex: Exchange) -> Self::Future {
        let plan = ex.route.compression.as_ref().and_then(|settings| {
            let req = &ex.request;
            if req.headers().contains_key(header::UPGRADE)
                || crate::proxy::is_grpc_call(req.method(), req.headers())
            {
                return None;
            }
            Some(Plan {
                settings: settings.clone(),
                coding: requested(req.headers()),
                head: req.method() == Method::HEAD,
                weak_condition: req
                    .headers()
                    .get_all(header::IF_NONE_MATCH)
                    .iter()
                    .any(|v| v.as_bytes().windows(2).any(|w| w == b"W/")),
            })
        });
        Compressing {
            inner: self.inner.call(ex),
            plan,
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner future, its response transformed when it is ready.
    pub struct Compressing<F> {
        #[pin]
        inner: F,
        plan: Option<Plan>,
    }
}

impl<F> Future for Compressing<F>
where
    F: Future<Output = Result<Response<ProxyBody>, ProxyError>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        Poll::Ready(Ok(match this.plan.take() {
            Some(plan) => transform(response, &plan),
            None => response,
        }))
    }
}

/// Whether the response's content may be compressed at all, whoever asks.
fn eligible(response: &Response<ProxyBody>, settings: &RouteCompression, head: bool) -> bool {
    let status = response.status();
    let h = response.headers();
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || h.contains_key(header::CONTENT_RANGE)
        || h.contains_key(header::CONTENT_ENCODING)
        || no_transform(h)
    {
        return false;
    }
    let Some(content_type) = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    if !settings.types.iter().any(|t| t.matches(content_type)) {
        return false;
    }
    // The length the wire layer framed the body with (an empty body is
    // never compressed); a HEAD response carries it in the header only.
    let length = if head {
        h.get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
    } else {
        http_body::Body::size_hint(response.body()).exact()
    };
    length.is_none_or(|n| n > 0 && n >= settings.min_size)
}

fn no_transform(h: &HeaderMap) -> bool {
    h.get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
}

fn transform(mut response: Response<ProxyBody>, plan: &Plan) -> Response<ProxyBody> {
    if response.status() == StatusCode::NOT_MODIFIED {
        // A 304 refreshing a stored compressed variant (asked for by its
        // weak validator): the validator must read as the variant's does.
        // An uncompressed variant's strong one is left strong.
        if plan.coding.is_some() && plan.weak_condition {
            weaken_etag(response.headers_mut());
        }
        return response;
    }
    if !eligible(&response, &plan.settings, plan.head) {
        return response;
    }
    add_vary(response.headers_mut());
    let Some(coding) = plan.coding else {
        return response;
    };
    let (mut parts, body) = response.into_parts();
    let body = if plan.head {
        body
    } else {
        let settings = &plan.settings;
        let metrics = settings.metrics[coding as usize].clone();
        match Compressed::new(body, coding, settings.levels, metrics) {
            Ok(c) => http_body_util::BodyExt::boxed_unsync(c),
            Err((body, e)) => {
                // Only zstd can fail to start (out of memory): the
                // response goes as it came.
                tracing::warn!("response compression failed to start: {e}");
                return Response::from_parts(parts, body);
            }
        }
    };
    let h = &mut parts.headers;
    weaken_etag(h);
    for name in ["content-md5", "content-digest", "repr-digest", "digest"] {
        h.remove(name);
    }
    h.remove(header::CONTENT_LENGTH);
    h.remove(header::ACCEPT_RANGES);
    h.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(coding.token()),
    );
    Response::from_parts(parts, body)
}

/// Appends `Accept-Encoding` to `Vary` unless it is there (or `*` is).
fn add_vary(h: &mut HeaderMap) {
    let listed = h
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|n| {
            let n = n.trim();
            n == "*" || n.eq_ignore_ascii_case("accept-encoding")
        });
    if !listed {
        h.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// `"x"` becomes `W/"x"`: the compressed bytes are not the ones the strong
/// validator named.
fn weaken_etag(h: &mut HeaderMap) {
    let Some(etag) = h.get(header::ETAG) else {
        return;
    };
    if etag.as_bytes().first() != Some(&b'"') {
        return;
    }
    let mut weak = Vec::with_capacity(etag.len() + 2);
    weak.extend_from_slice(b"W/");
    weak.extend_from_slice(etag.as_bytes());
    if let Ok(v) = HeaderValue::from_bytes(&weak) {
        h.insert(header::ETAG, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_weaken_once() {
        let mut h = HeaderMap::new();
        h.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        weaken_etag(&mut h);
        assert_eq!(h[header::ETAG], "W/\"v1\"");
        weaken_etag(&mut h);
        assert_eq!(h[header::ETAG], "W/\"v1\"");
    }

    #[test]
    fn vary_is_added_once() {
        let mut h = HeaderMap::new();
        h.append(header::VARY, HeaderValue::from_static("Origin"));
        add_vary(&mut h);
        add_vary(&mut h);
        let all: Vec<_> = h.get_all(header::VARY).iter().collect();
        assert_eq!(all, ["Origin", "Accept-Encoding"]);
        let mut star = HeaderMap::new();
        star.insert(header::VARY, HeaderValue::from_static("*"));
        add_vary(&mut star);
        assert_eq!(star.get_all(header::VARY).iter().count(), 1);
    }

    #[test]
    fn no_transform_in_any_case_and_line() {
        let mut h = HeaderMap::new();
        h.append(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60"),
        );
        assert!(!no_transform(&h));
        h.append(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, No-Transform"),
        );
        assert!(no_transform(&h));
    }
}

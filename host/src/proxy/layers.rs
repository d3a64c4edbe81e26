//! The small phases of the request path: limits, route and forwarded
//! headers. Each is a tower `Layer` with its own service.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::future::{Either, Ready, ready};
use http::Response;
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use tower::Service;

use super::error::ProxyError;
use super::headers::{prepare_request, request_host};
use super::state::Route;
use super::{Arrival, Exchange, ProxyBody};

type Result<T> = std::result::Result<T, ProxyError>;

/// A phase's tower `Layer` and the service it wraps around the next
/// phase, `inner`.
macro_rules! layer {
    ($layer:ident, $service:ident) => {
        #[derive(Clone, Copy, Debug, Default)]
        pub struct $layer;
        impl<S> tower::Layer<S> for $layer {
            type Service = $service<S>;
            fn layer(&self, inner: S) -> $service<S> {
                $service { inner }
            }
        }
        #[derive(Clone, Debug)]
        pub struct $service<S> {
            inner: S,
        }
    };
}
pub(crate) use layer;

// ---- limits: header bytes (431), body bytes (413) ----

layer!(LimitsLayer, Limits);

/// Bytes of the request head as it would appear on the wire.
fn head_bytes(req: &http::Request<ProxyBody>) -> usize {
    let line = req.method().as_str().len()
        + req.uri().path_and_query().map_or(1, |p| p.as_str().len())
        + 12;
    line + req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
}

impl<S> Service<Arrival> for Limits<S>
where
    S: Service<Arrival, Response = Response<ProxyBody>, Error = ProxyError>,
{
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = Either<Ready<Result<Response<ProxyBody>>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut a: Arrival) -> Self::Future {
        let limits = &a.state.limits;
        if head_bytes(&a.request) > limits.max_header_bytes {
            return Either::Left(ready(Err(ProxyError::HeadersTooLarge {
                limit: limits.max_header_bytes,
            })));
        }
        // A gRPC stream may carry any amount over its life: its messages
        // are the service's to bound (gRPC servers cap each message).
        if super::grpc::is_call(a.request.method(), a.request.headers()) {
            return Either::Right(self.inner.call(a));
        }
        let max_body = limits.max_body_bytes;
        // The length the wire layer decided (the header itself is not
        // handed on).
        let declared = a.request.body().size_hint().exact();
        if declared.is_some_and(|n| n > max_body) {
            return Either::Left(ready(Err(ProxyError::BodyTooLarge)));
        }
        if !a.request.body().is_end_stream() && declared.is_none() {
            // Chunked or unknown length: count bytes as they stream.
            let body = std::mem::replace(a.request.body_mut(), super::empty_body());
            *a.request.body_mut() = Limited::new(body, max_body as usize).boxed_unsync();
        }
        Either::Right(self.inner.call(a))
    }
}

// ---- route: host and path prefix to an upstream (404) ----

layer!(RouteLayer, RoutePhase);

impl<S> Service<Arrival> for RoutePhase<S>
where
    S: Service<Exchange, Response = Response<ProxyBody>, Error = ProxyError> + Clone,
{
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = Either<Ready<Result<Response<ProxyBody>>>, Routed<S::Future>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, a: Arrival) -> Self::Future {
        let (mut parts, body) = a.request.into_parts();
        if let Some(answer) = a.state.challenges.answer(parts.uri.path()) {
            return Either::Left(ready(Ok(acme_answer(answer))));
        }
        let route = a
            .state
            .route(request_host(&parts), parts.uri.path())
            .cloned();
        let Some(route) = route else {
            a.state.unrouted.requests.record(Some(404));
            return Either::Left(ready(Err(ProxyError::NoRoute)));
        };
        if route.redirect_https && !a.conn.secure {
            route.metrics.requests.record(Some(308));
            let response = to_https(&parts, a.state.https_port);
            return Either::Left(ready(Ok(response)));
        }
        let grpc = super::grpc::is_call(&parts.method, &parts.headers);
        if let Some(settings) = &route.compression
            && !grpc
        {
            crate::compress::negotiate_request(settings, &mut parts.headers);
        }
        let mut limit = a.state.timeouts.request.get();
        if grpc && let Some(t) = super::grpc::timeout_of(&parts.headers) {
            // The client's own deadline, when it is the sooner.
            limit = limit.min(t);
        }
        let exchange = Exchange {
            request: http::Request::from_parts(parts, body),
            conn: a.conn,
            deadline: a.received + limit,
            state: a.state,
            route: route.clone(),
            received: a.received,
            added: Vec::new(),
        };
        Either::Right(Routed {
            inner: self.inner.clone().call(exchange),
            route,
            received: a.received,
            grpc,
        })
    }
}

/// The answer to an ACME HTTP-01 challenge the proxy has pending.
fn acme_answer(key_authorization: String) -> Response<ProxyBody> {
    let mut response = Response::new(super::text_body(key_authorization));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/octet-stream"),
    );
    response
}

/// `308 Permanent Redirect` to the same URL over HTTPS (308 keeps the
/// method and body, unlike 301). The host is the request's normalized one;
/// the port is the HTTPS listener's, left out when it is 443.
fn to_https(parts: &http::request::Parts, https_port: Option<u16>) -> Response<ProxyBody> {
    let host = request_host(parts);
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let location = match https_port {
        Some(443) | None => format!("https://{host}{path}"),
        Some(port) => format!("https://{host}:{port}{path}"),
    };
    let mut response = Response::new(super::empty_body());
    *response.status_mut() = http::StatusCode::PERMANENT_REDIRECT;
    if let Ok(value) = http::HeaderValue::try_from(location) {
        response.headers_mut().insert(http::header::LOCATION, value);
    }
    response
}

pin_project_lite::pin_project! {
    /// A routed request on its way: records the route's request count,
    /// latency and window figures when its response (or error) is ready.
    /// A named future rather than a boxed one: no allocation per request.
    pub struct Routed<F> {
        #[pin]
        inner: F,
        route: Arc<Route>,
        received: Instant,
        // A gRPC call: counted by its grpc-status too.
        grpc: bool,
    }
}

impl<F> Future for Routed<F>
where
    F: Future<Output = Result<Response<ProxyBody>>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let route = &*this.route;
        let status = match &result {
            Ok(r) => r.status().as_u16(),
            Err(e) => e.status().as_u16(),
        };
        route.metrics.requests.record(Some(status));
        let elapsed = this.received.elapsed();
        route.metrics.duration.record(elapsed.as_secs_f64());
        let now_ms = (crate::clock::ns_of(*this.received) + elapsed.as_nanos() as u64) / 1_000_000;
        // A request failed when the answer is a 5xx (ours or the
        // backend's). Answers the proxy gave without a backend (over
        // capacity, too large) count, but their latency would only
        // flatter the figures optimizers steer by.
        let measured = match &result {
            Ok(_) => true,
            Err(e) => e.backend().is_some() || matches!(e, ProxyError::RequestTimeout),
        };
        // Time spent queued for admission is demand, not service time.
        let queued = match &result {
            Ok(r) => r
                .extensions()
                .get::<super::QueueWait>()
                .map_or(0, |w| w.0.as_micros()),
            Err(_) => 0,
        };
        let latency = measured.then_some(elapsed.as_micros().saturating_sub(queued) as u64);
        route.windows.seconds.record(now_ms, latency, status >= 500);
        if *this.grpc {
            return Poll::Ready(count_grpc(route, result));
        }
        Poll::Ready(result)
    }
}

/// Counts a gRPC call by its status: an error's code now, a status in the
/// response headers now, else the one its trailers bring.
fn count_grpc(route: &Route, result: Result<Response<ProxyBody>>) -> Result<Response<ProxyBody>> {
    use super::grpc;
    match result {
        Err(e) => {
            grpc::counter(&route.label, grpc::code_for(&e)).increment(1);
            Err(e)
        }
        Ok(response) => {
            if let Some(code) = grpc::status_of(response.headers()) {
                grpc::counter(&route.label, code).increment(1);
                return Ok(response);
            }
            if !grpc::is_grpc(response.headers()) {
                return Ok(response);
            }
            let label = route.label.clone();
            let count = Box::new(move |code| grpc::counter(&label, code).increment(1));
            Ok(response.map(|body| grpc::StatusCounted::new(body, count).boxed_unsync()))
        }
    }
}

// ---- forwarded headers: hop-by-hop removal, X-Forwarded-*, Via ----

layer!(ForwardedHeadersLayer, ForwardedHeaders);

impl<S> Service<Exchange> for ForwardedHeaders<S>
where
    S: Service<Exchange>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut ex: Exchange) -> S::Future {
        let (mut parts, body) = ex.request.into_parts();
        ex.added = prepare_request(&mut parts, &ex.conn);
        ex.request = http::Request::from_parts(parts, body);
        self.inner.call(ex)
    }
}

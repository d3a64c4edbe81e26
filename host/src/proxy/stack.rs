//! The request path, assembled in one place, top to bottom.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use futures_util::FutureExt;
use futures_util::future::{Either, Ready, ready};
use http::{Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tower::{Service, ServiceBuilder};

use super::admission::{AdmissionLayer, Admit};
use super::layers::{
    ForwardedHeaders, ForwardedHeadersLayer, Limits, LimitsLayer, RouteLayer, RoutePhase,
};
use super::retry::Retry;
use super::{Arrival, ConnInfo, ProxyBody, ProxyError, ProxyState, empty_body};
use crate::cache::{Cache, CacheLayer};
use crate::compress::{Compress, CompressLayer};
use crate::http1::{error_response, normalize_h2, server::Handler};
use crate::ratelimit::{RateLimit, RateLimitLayer};

/// The phases a request passes through.
pub type Stack = Limits<RoutePhase<RateLimit<Cache<Compress<Admit<ForwardedHeaders<Retry>>>>>>>;

pub fn build_stack() -> Stack {
    ServiceBuilder::new()
        .layer(LimitsLayer) //            431, 413
        .layer(RouteLayer) //             host + path prefix → upstream, 404
        .layer(RateLimitLayer) //        [[rate_limits]], 429
        .layer(CacheLayer) //             RFC 9111 shared cache (routes that cache)
        .layer(CompressLayer) //          gzip / br / zstd, stored compressed by the cache
        .layer(AdmissionLayer) //         concurrency limit, 503
        .layer(ForwardedHeadersLayer) //  hop-by-hop, X-Forwarded-*, Via
        .service(Retry) //                budgeted retries; attempts: pick, breaker, send, outliers
}

/// The hyper-facing service of one client connection: loads the current
/// config snapshot once per request and turns errors into responses.
#[derive(Clone)]
pub struct ProxyService {
    state: Arc<ArcSwap<ProxyState>>,
    stack: Stack,
    conn: ConnInfo,
}

impl ProxyService {
    pub fn new(state: Arc<ArcSwap<ProxyState>>, conn: ConnInfo) -> Self {
        ProxyService {
            state,
            stack: build_stack(),
            conn,
        }
    }
}

/// Turns the outcome of the phases into the client's response.
fn respond(
    result: Result<Response<ProxyBody>, ProxyError>,
) -> Result<Response<ProxyBody>, Infallible> {
    Ok(result.unwrap_or_else(|e| {
        tracing::debug!("{e}");
        e.into_response()
    }))
}

/// The same for a gRPC call: errors become trailers-only gRPC answers.
fn respond_grpc(
    result: Result<Response<ProxyBody>, ProxyError>,
) -> Result<Response<ProxyBody>, Infallible> {
    Ok(result.unwrap_or_else(|e| {
        tracing::debug!("{e}");
        super::grpc::error_response(&e)
    }))
}

/// The future of one request through the stack.
pub type Dispatched = futures_util::future::Map<
    <Stack as Service<Arrival>>::Future,
    fn(Result<Response<ProxyBody>, ProxyError>) -> Result<Response<ProxyBody>, Infallible>,
>;

impl ProxyService {
    /// Runs a request, received at `received`, through the phases.
    pub fn dispatch(&self, request: Request<ProxyBody>, received: Instant) -> Dispatched {
        let answer: fn(_) -> _ = if super::grpc::is_call(request.method(), request.headers()) {
            respond_grpc
        } else {
            respond
        };
        let arrival = Arrival {
            request,
            conn: self.conn.clone(),
            state: self.state.load_full(),
            received,
        };
        self.stack.clone().call(arrival).map(answer)
    }
}

/// HTTP/1.1 connections, served by `crate::http1::server`, whose heads
/// arrive normalized.
impl Handler for ProxyService {
    type Future = futures_util::future::Map<
        Dispatched,
        fn(Result<Response<ProxyBody>, Infallible>) -> Response<ProxyBody>,
    >;

    fn handle(&self, request: Request<ProxyBody>, received: Instant) -> <Self as Handler>::Future {
        self.dispatch(request, received).map(|r| match r {
            Ok(response) => response,
            Err(never) => match never {},
        })
    }
}

/// HTTP/2 connections, served by hyper: the head is normalized as the
/// HTTP/1.1 parser normalizes one, or refused the same way.
impl hyper::service::Service<Request<Incoming>> for ProxyService {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Either<Dispatched, Ready<Result<Response<ProxyBody>, Infallible>>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let received = Instant::now();
        let (mut parts, body) = req.into_parts();
        if let Err(refusal) = normalize_h2(&mut parts, &self.conn.origin()) {
            tracing::debug!("HTTP/2 request refused: {refusal}");
            let response = error_response(refusal.status, refusal.reason);
            return Either::Right(ready(Ok(response)));
        }
        let body = if body.is_end_stream() {
            empty_body()
        } else {
            body.map_err(Into::into).boxed_unsync()
        };
        Either::Left(self.dispatch(Request::from_parts(parts, body), received))
    }
}

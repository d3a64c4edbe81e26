//! The last phase: pick a backend, send the request, record the outcome.
//!
//! The pick honours health, ejection, the per-backend circuit breaker and the
//! backends this request already tried. Every attempt feeds passive outlier
//! detection, the backend's Peak-EWMA latency and the per-backend metrics.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError};

use super::error::ProxyError;
use super::headers::prepare_response;
use super::state::Upstream;
use super::{ConnInfo, ProxyBody};
use crate::balance::{Eligibility, PickContext, hash_bytes};
use crate::clock;
use crate::config::HashKey;
use crate::health::{Outcome, record_outcome};
use crate::http1::client::{self as upstream, Outbound, UpstreamError};
use crate::http1::tunnel::{TunnelStats, UpgradeRequested, UpgradeSlot, Upgraded};
use crate::http2::{self, Guarded, H2Error, H2Pool};

/// Counts one request in flight on a backend (and its upstream) for as long
/// as it lives: until the response body's last byte, when the wire layer
/// drops it.
#[derive(Debug)]
pub struct InFlight {
    upstream: Arc<Upstream>,
    backend: usize,
}

impl InFlight {
    pub fn start(upstream: &Arc<Upstream>, backend: usize) -> Self {
        upstream.backends[backend]
            .state
            .in_flight
            .fetch_add(1, Relaxed);
        upstream.learned.in_flight.fetch_add(1, Relaxed);
        InFlight {
            upstream: upstream.clone(),
            backend,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.upstream.backends[self.backend]
            .state
            .in_flight
            .fetch_sub(1, Relaxed);
        self.upstream.learned.in_flight.fetch_sub(1, Relaxed);
    }
}

/// An upgraded connection, open: counted in flight on its backend (so
/// least-connections sees it) and in `switchyard_tunnels_open` until it
/// closes — or until it is dropped unopened, if the client went away.
struct OpenTunnel {
    guard: InFlight,
}

impl OpenTunnel {
    fn new(guard: InFlight) -> Self {
        guard.upstream.metrics.tunnels_open.increment(1.0);
        OpenTunnel { guard }
    }

    fn close(self, stats: TunnelStats) {
        let m = &self.guard.upstream.metrics;
        m.tunnel_bytes_to_backend.increment(stats.to_backend);
        m.tunnel_bytes_to_client.increment(stats.to_client);
        m.tunnel_duration.record(stats.duration.as_secs_f64());
    }
}

impl Drop for OpenTunnel {
    fn drop(&mut self) {
        self.guard.upstream.metrics.tunnels_open.decrement(1.0);
    }
}

/// One try of a request against one backend.
pub struct Attempt {
    /// The request head, shared by every attempt of one request.
    pub head: Arc<Outbound>,
    /// The body, for requests that are never retried.
    pub body: Option<ProxyBody>,
    pub upstream: Arc<Upstream>,
    /// Backends earlier attempts of this request failed on.
    pub tried: Vec<usize>,
    /// `timeouts.backend_response`, for this attempt.
    pub timeout: Duration,
    /// The whole exchange's deadline, which also bounds this attempt.
    pub deadline: Instant,
    pub hash: Option<u64>,
    /// `timeouts.tunnel_idle`, for an upgrade.
    pub tunnel_idle: Duration,
    /// The request body again, for a request whose body is kept for
    /// retries: an HTTP/2 stream refused unprocessed is sent again with it.
    /// With the number of the reader `body` is.
    pub replay: Option<(super::grpc::Replayable, usize)>,
}

/// A backend's response and which backend sent it.
pub struct Forwarded {
    pub response: Response<ProxyBody>,
    pub backend: usize,
}

/// The request's hash key for the `hash` strategy, if it has one. A key of
/// `header:host` reads the normalized authority, as everything else does.
pub fn hash_of<B>(upstream: &Upstream, req: &Request<B>, conn: &ConnInfo) -> Option<u64> {
    match upstream.hash_key.as_ref()? {
        HashKey::Header(name) if name == header::HOST => req
            .uri()
            .authority()
            .map(|a| hash_bytes(a.as_str().as_bytes())),
        HashKey::Header(name) => req.headers().get(name).map(|v| hash_bytes(v.as_bytes())),
        HashKey::Cookie(name) => req
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                (k == name).then(|| hash_bytes(v.as_bytes()))
            }),
        HashKey::Path => Some(hash_bytes(req.uri().path().as_bytes())),
        HashKey::ClientIp => Some(match conn.remote.ip() {
            std::net::IpAddr::V4(ip) => hash_bytes(&ip.octets()),
            std::net::IpAddr::V6(ip) => hash_bytes(&ip.octets()),
        }),
    }
}

/// Picks a backend, or says why none can take the request. Below the
/// panic threshold every backend may be picked, health and ejection
/// ignored (the breaker still holds).
fn pick(upstream: &Upstream, attempt: &Attempt, now_ns: u64) -> Result<usize, ProxyError> {
    let mut ctx = PickContext::new(now_ns);
    ctx.hash = attempt.hash;
    ctx.tried = &attempt.tried;
    ctx.upstream_in_flight = upstream.learned.in_flight.load(Relaxed);
    let panic_pick = |ctx: &mut PickContext<'_>| {
        ctx.eligibility = Eligibility::Any;
        let picked = upstream.balancer.pick(&upstream.backends, ctx);
        if picked.is_some() {
            upstream.metrics.panic_routed.increment(1);
        }
        picked
    };
    if upstream.in_panic(ctx.now_ms, false)
        && let Some(i) = panic_pick(&mut ctx)
    {
        return Ok(i);
    }
    if let Some(i) = upstream.balancer.pick(&upstream.backends, &ctx) {
        return Ok(i);
    }
    let backends = &upstream.backends;
    let healthy = |i: usize| {
        let b = &backends[i];
        b.state.is_healthy() && !b.state.is_ejected(ctx.now_ms) && !ctx.tried.contains(&i)
    };
    if (0..backends.len()).any(healthy) {
        upstream.metrics.breaker_rejections.increment(1);
        return Err(ProxyError::BreakerOpen {
            upstream: upstream.name.clone(),
        });
    }
    // Nothing available: the verdict is redone now rather than trusted.
    if upstream.in_panic(ctx.now_ms, true)
        && let Some(i) = panic_pick(&mut ctx)
    {
        return Ok(i);
    }
    upstream.metrics.no_healthy_backend.increment(1);
    Err(ProxyError::NoHealthyBackend {
        upstream: upstream.name.clone(),
        retry_after_secs: retry_after(upstream, ctx.now_ms),
    })
}

/// Seconds until a backend may plausibly be back: the soonest ejection end,
/// or one health-check interval.
fn retry_after(upstream: &Upstream, now_ms: u64) -> u64 {
    let ejection = upstream
        .backends
        .iter()
        .map(|b| b.state.ejected_until_ms())
        .filter(|&until| until > now_ms)
        .min()
        .map(|until| (until - now_ms).div_ceil(1000));
    let check = upstream
        .health
        .as_ref()
        .map(|h| h.interval.get().as_secs().max(1));
    ejection.or(check).unwrap_or(1).clamp(1, 300)
}

fn is_length_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        if s.is::<LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// One attempt: pick, breaker, send, outlier detection and latency. Over
/// HTTP/1.1 a pooled connection (or an upgrade); over HTTP/2 see
/// [`forward_h2`].
pub async fn forward(mut attempt: Attempt) -> Result<Forwarded, ProxyError> {
    let sent = Instant::now();
    let idx = pick(&attempt.upstream, &attempt, clock::ns_of(sent))?;
    let guard = InFlight::start(&attempt.upstream, idx);
    // One timer per attempt: the attempt's own limit or the whole exchange's
    // deadline, whichever comes first.
    let timer = Timer {
        sent,
        own: sent + attempt.timeout,
        until: (sent + attempt.timeout).min(attempt.deadline),
    };
    if let Some(pool) = attempt.upstream.h2.get(idx).cloned() {
        // Boxed: its future is large, and the HTTP/1.1 path's would
        // otherwise be as large and copied as often.
        return Box::pin(forward_h2(attempt, idx, guard, timer, &pool)).await;
    }
    let upstream = attempt.upstream.clone();
    let backend = &upstream.backends[idx];
    let exchange = upstream::send(
        &upstream.pools[idx],
        &backend.authority,
        upstream.connect_timeout,
        &attempt.head,
        attempt.body.take(),
        timer.sent,
    );
    let result = tokio::time::timeout_at(timer.until.into(), exchange).await;
    let (elapsed, done) = timer.elapsed();
    match result {
        Ok(Ok((conn, head))) if head.parts.status == StatusCode::SWITCHING_PROTOCOLS => {
            backend.state.ewma.observe(elapsed, done);
            if attempt
                .head
                .parts
                .extensions
                .get::<UpgradeRequested>()
                .is_none()
            {
                // Not asked for: the backend speaks something else now.
                let why = "the backend switched protocols without being asked";
                return Err(failed(&attempt, idx, timer, why, backend_error));
            }
            record_outcome(&upstream, idx, Outcome::Response(101), elapsed, done);
            let mut parts = head.parts;
            prepare_response(&mut parts);
            let (stream, leftover) = conn.into_io();
            let tunnel = OpenTunnel::new(guard);
            let up = Upgraded {
                backend: stream,
                leftover: leftover.freeze(),
                idle: attempt.tunnel_idle,
                done: Box::new(move |stats| tunnel.close(stats)),
            };
            let mut response = Response::from_parts(parts, super::empty_body());
            response.extensions_mut().insert(UpgradeSlot::new(up));
            Ok(Forwarded {
                response,
                backend: idx,
            })
        }
        Ok(Ok((conn, head))) => {
            backend.state.ewma.observe(elapsed, done);
            let status = head.parts.status.as_u16();
            record_outcome(&upstream, idx, Outcome::Response(status), elapsed, done);
            let mut parts = head.parts;
            prepare_response(&mut parts);
            let body = upstream::upstream_body(
                conn,
                head.framing,
                head.keep_alive,
                upstream.pools[idx].clone(),
                guard,
            );
            Ok(Forwarded {
                response: Response::from_parts(parts, body.boxed_unsync()),
                backend: idx,
            })
        }
        Ok(Err(UpstreamError::RequestBody(e))) if is_length_limit(e.as_ref()) => {
            Err(ProxyError::BodyTooLarge)
        }
        Ok(Err(UpstreamError::RequestBody(e))) => Err(ProxyError::ClientBody(e)),
        // Nothing was sent: a failed TLS handshake is retried like a
        // refused connection.
        Ok(Err(UpstreamError::Connect(io))) => Err(failed(&attempt, idx, timer, io, connect_error)),
        Ok(Err(e @ UpstreamError::Tls(_))) => Err(failed(&attempt, idx, timer, e, connect_error)),
        Ok(Err(e)) => Err(failed(&attempt, idx, timer, e, backend_error)),
        Err(_) => Err(timed_out(&attempt, idx, timer)),
    }
}

/// When an attempt started and when it gives up.
#[derive(Clone, Copy)]
struct Timer {
    sent: Instant,
    /// The attempt's own limit (`timeouts.backend_response`).
    own: Instant,
    /// That or the exchange's deadline, whichever is first.
    until: Instant,
}

impl Timer {
    /// How long the attempt took, and the clock time it ended at.
    fn elapsed(&self) -> (Duration, u64) {
        let elapsed = self.sent.elapsed();
        (elapsed, clock::ns_of(self.sent + elapsed))
    }
}

/// The answer to an attempt that saw no response in time.
fn timed_out(attempt: &Attempt, idx: usize, timer: Timer) -> ProxyError {
    let upstream = &attempt.upstream;
    let (elapsed, done) = timer.elapsed();
    upstream.backends[idx].state.ewma.observe(elapsed, done);
    record_outcome(upstream, idx, Outcome::Failed, elapsed, done);
    if timer.until < timer.own {
        ProxyError::RequestTimeout
    } else {
        ProxyError::BackendTimeout {
            backend: idx,
            addr: upstream.backends[idx].addr.to_string(),
            timeout: attempt.timeout,
        }
    }
}

/// The answer to an attempt that failed before or while talking to the
/// backend: counted against it, logged, and mapped by `make`.
fn failed(
    attempt: &Attempt,
    idx: usize,
    timer: Timer,
    e: impl Into<crate::proxy::BoxError> + std::fmt::Display,
    make: fn(usize, String, crate::proxy::BoxError) -> ProxyError,
) -> ProxyError {
    let upstream = &attempt.upstream;
    let (elapsed, done) = timer.elapsed();
    record_outcome(upstream, idx, Outcome::Failed, elapsed, done);
    let addr = upstream.backends[idx].addr.to_string();
    tracing::debug!(backend = %addr, "{e}");
    make(idx, addr, e.into())
}

fn connect_error(backend: usize, addr: String, source: crate::proxy::BoxError) -> ProxyError {
    ProxyError::Connect {
        backend,
        addr,
        source,
    }
}

fn backend_error(backend: usize, addr: String, source: crate::proxy::BoxError) -> ProxyError {
    ProxyError::Backend {
        backend,
        addr,
        source,
    }
}

fn refused_error(backend: usize, addr: String, source: crate::proxy::BoxError) -> ProxyError {
    ProxyError::Refused {
        backend,
        addr,
        source,
    }
}

/// An attempt over HTTP/2: a stream on one of the backend's multiplexed
/// connections. A stream the backend refused unprocessed (or that failed
/// before its body was read) is sent again at once on another connection,
/// when it has no body or its body can be read again.
async fn forward_h2(
    mut attempt: Attempt,
    idx: usize,
    guard: InFlight,
    timer: Timer,
    pool: &H2Pool,
) -> Result<Forwarded, ProxyError> {
    let upstream = attempt.upstream.clone();
    let backend = &upstream.backends[idx];
    if attempt
        .head
        .parts
        .extensions
        .get::<UpgradeRequested>()
        .is_some()
    {
        let why = "an upgrade needs an HTTP/1.1 upstream (RFC 8441 is not supported)";
        return Err(failed(&attempt, idx, timer, why, backend_error));
    }
    let mut body = attempt.body.take();
    let bodiless = body.is_none();
    let replay = attempt.replay.clone();
    let exchange = async {
        // The reader of the kept body this try sends, if any.
        let mut reading = replay.as_ref().map(|(_, id)| *id);
        for _ in 0..3 {
            let request = http2::to_h2(&attempt.head, upstream.tls, body.take())?;
            let sent = pool
                .send(&backend.authority, upstream.connect_timeout, request)
                .await;
            let unprocessed = match &sent {
                Err(H2Error::Refused(_)) => true,
                // Failed before its body was read: never sent.
                Err(H2Error::Failed(_)) => {
                    matches!((&replay, reading), (Some((r, _)), Some(id)) if !r.was_read(id))
                }
                _ => false,
            };
            if !unprocessed {
                return sent;
            }
            if !bodiless {
                let Some((again, id)) = replay.as_ref().and_then(|(r, _)| r.reader()) else {
                    return sent;
                };
                body = Some(again);
                reading = Some(id);
            }
            if let Err(e) = &sent {
                tracing::debug!(backend = %backend.addr, "sent again: {e}");
            }
        }
        Err(H2Error::Request("refused three times".into()))
    };
    let result = tokio::time::timeout_at(timer.until.into(), exchange).await;
    let (elapsed, done) = timer.elapsed();
    match result {
        Ok(Ok((response, stream))) => {
            backend.state.ewma.observe(elapsed, done);
            // gRPC's UNAVAILABLE in a trailers-only answer is the service
            // saying it is down: counted as a 503 for outlier detection.
            let status = match super::grpc::status_of(response.headers()) {
                Some(super::grpc::UNAVAILABLE) => 503,
                _ => response.status().as_u16(),
            };
            record_outcome(&upstream, idx, Outcome::Response(status), elapsed, done);
            let (mut parts, body) = response.into_parts();
            parts.version = http::Version::HTTP_11;
            prepare_response(&mut parts);
            let body = Guarded::new(body, (guard, stream)).boxed_unsync();
            Ok(Forwarded {
                response: Response::from_parts(parts, body),
                backend: idx,
            })
        }
        Ok(Err(H2Error::Connect(e))) => Err(failed(&attempt, idx, timer, e, connect_error)),
        Ok(Err(e @ H2Error::NoAlpn)) => Err(failed(&attempt, idx, timer, e, connect_error)),
        Ok(Err(e @ H2Error::Refused(_))) => Err(failed(&attempt, idx, timer, e, refused_error)),
        Ok(Err(e)) => Err(failed(&attempt, idx, timer, e, backend_error)),
        Err(_) => Err(timed_out(&attempt, idx, timer)),
    }
}

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

/// One attempt: pick, breaker, send, outlier detection and latency.
pub async fn forward(attempt: Attempt) -> Result<Forwarded, ProxyError> {
    let upstream = attempt.upstream.clone();
    let sent = Instant::now();
    let idx = pick(&upstream, &attempt, clock::ns_of(sent))?;
    let backend = &upstream.backends[idx];
    let guard = InFlight::start(&upstream, idx);
    // One timer per attempt: the attempt's own limit or the whole exchange's
    // deadline, whichever comes first.
    let attempt_deadline = sent + attempt.timeout;
    let until = attempt_deadline.min(attempt.deadline);
    let exchange = upstream::send(
        &upstream.pools[idx],
        &backend.authority,
        upstream.connect_timeout,
        &attempt.head,
        attempt.body,
        sent,
    );
    let result = tokio::time::timeout_at(until.into(), exchange).await;
    let elapsed = sent.elapsed();
    let done = clock::ns_of(sent + elapsed);
    let addr = || backend.addr.to_string();
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
                record_outcome(&upstream, idx, Outcome::Failed, elapsed, done);
                return Err(ProxyError::Backend {
                    backend: idx,
                    addr: addr(),
                    source: "the backend switched protocols without being asked".into(),
                });
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
        Ok(Err(e @ (UpstreamError::Connect(_) | UpstreamError::Tls(_)))) => {
            record_outcome(&upstream, idx, Outcome::Failed, elapsed, done);
            tracing::debug!(backend = %addr(), "{e}");
            let source: crate::proxy::BoxError = match e {
                UpstreamError::Connect(io) => io.into(),
                tls => tls.into(),
            };
            Err(ProxyError::Connect {
                backend: idx,
                addr: addr(),
                source,
            })
        }
        Ok(Err(e)) => {
            record_outcome(&upstream, idx, Outcome::Failed, elapsed, done);
            tracing::debug!(backend = %addr(), "request failed: {e}");
            Err(ProxyError::Backend {
                backend: idx,
                addr: addr(),
                source: e.into(),
            })
        }
        Err(_) => {
            backend.state.ewma.observe(elapsed, done);
            record_outcome(&upstream, idx, Outcome::Failed, elapsed, done);
            if until < attempt_deadline {
                Err(ProxyError::RequestTimeout)
            } else {
                Err(ProxyError::BackendTimeout {
                    backend: idx,
                    addr: addr(),
                    timeout: attempt.timeout,
                })
            }
        }
    }
}

//! Rate limits (`[[rate_limits]]`): how often requests may come, per key,
//! checked right after routing, before the cache and admission.
//!
//! Each limit is a GCRA (the `governor` crate): `rate` requests per `per`,
//! with `burst` allowed at once. A request is counted by its key, built
//! from the client's IP (behind a trusted proxy, the address it
//! forwarded), its route, and request headers; a request missing a keyed
//! header is not counted by that limit. Over the limit it gets 429
//! with `Retry-After`, `RateLimit-Policy` and `RateLimit` (draft IETF
//! httpapi-ratelimit-headers); a `shadow` limit only counts.
//!
//! With `redis_url`, the limit is shared: every instance checks one GCRA
//! state in Redis with one atomic script (its key expiring with the state),
//! so N proxies enforce one limit together. The local limiter runs first
//! as a pre-check: what one instance alone would refuse is refused without
//! a round trip, so a request costs at most one. When Redis does not
//! answer within `redis_timeout`, `on_redis_error` decides: `local` (the
//! default) lets each instance enforce the whole limit by itself, `deny`
//! answers 503. Either is logged once per outage and counted.
//!
//! Limiters live in the registry: a reload keeps the state of every limit
//! whose name and definition did not change.

mod shared;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::{BoxFuture, Either};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use http::{HeaderMap, Response};
use tower::Service;

use crate::config::{OnRedisError, RateLimitSection};
use crate::proxy::{Exchange, ProxyBody, ProxyError};

/// What a request is counted by.
#[derive(Clone, Debug, PartialEq, Eq)]
enum KeyPart {
    ClientIp,
    Route,
    Header(http::HeaderName),
}

impl KeyPart {
    fn parse(s: &str) -> Option<KeyPart> {
        match s {
            "client_ip" => Some(KeyPart::ClientIp),
            "route" => Some(KeyPart::Route),
            _ => {
                let name = s.strip_prefix("header:")?;
                http::HeaderName::from_bytes(name.as_bytes())
                    .ok()
                    .map(KeyPart::Header)
            }
        }
    }
}

/// Whether a `key` entry of a `[[rate_limits]]` is valid.
pub fn valid_key_part(s: &str) -> bool {
    KeyPart::parse(s).is_some()
}

/// The client's address: the connection's peer, or, when the peer is in
/// `listen.trusted_proxies` (a load balancer in front), the nearest
/// address of its `X-Forwarded-For` chain that is not itself trusted, read
/// right to left as each trusted hop appended it. A malformed hop ends the
/// walk: what lies left of it cannot be trusted.
fn client_ip(ex: &Exchange) -> std::borrow::Cow<'_, str> {
    let peer = std::str::from_utf8(ex.conn.ip_text()).unwrap_or("");
    if !ex.conn.trusted {
        return peer.into();
    }
    let lines: Vec<&str> = ex
        .request
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let mut nearest = peer.to_string();
    for hop in lines.iter().rev().flat_map(|l| l.rsplit(',')) {
        match hop.trim().parse::<std::net::IpAddr>() {
            Ok(ip) => {
                nearest = ip.to_string();
                if !ex.state.is_trusted(ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    nearest.into()
}

/// One configured limit with its state.
pub struct Limit {
    pub name: String,
    section: RateLimitSection,
    parts: Vec<KeyPart>,
    local: DefaultKeyedRateLimiter<String>,
    shared: Option<shared::Shared>,
    /// `RateLimit-Policy` value.
    policy: http::HeaderValue,
    rejected: metrics::Counter,
    shadowed: metrics::Counter,
}

impl std::fmt::Debug for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limit").field("name", &self.name).finish()
    }
}

/// The request's verdict from one limit.
enum Verdict {
    Pass,
    /// Over the limit; try again after this long.
    Over(Duration),
    /// Shared state unreachable and `on_redis_error = "deny"`.
    Unavailable,
}

impl Limit {
    fn new(section: &RateLimitSection) -> Option<Limit> {
        let burst = NonZeroU32::new(section.burst.unwrap_or(section.rate).max(1))?;
        let interval = section.per.get() / section.rate.max(1);
        let quota = Quota::with_period(interval)?.allow_burst(burst);
        let name = section.name.clone();
        let window = section.per.get().as_secs().max(1);
        let policy =
            http::HeaderValue::from_str(&format!("\"{}\";q={};w={window}", name, section.rate))
                .ok()?;
        Some(Limit {
            parts: section
                .key
                .iter()
                .filter_map(|k| KeyPart::parse(k))
                .collect(),
            local: governor::RateLimiter::dashmap(quota),
            shared: section.redis_url.as_deref().map(|url| {
                let fallback = match section.on_redis_error {
                    OnRedisError::Local => "each instance applies the whole limit by itself",
                    OnRedisError::Deny => "the requests it covers get 503",
                };
                shared::Shared::new(
                    url,
                    &name,
                    interval,
                    burst.get(),
                    section.redis_timeout.get(),
                    fallback,
                )
            }),
            policy,
            rejected: metrics::counter!("switchyard_rate_limited_total", "limit" => name.clone(), "action" => "rejected"),
            shadowed: metrics::counter!("switchyard_rate_limited_total", "limit" => name.clone(), "action" => "shadow"),
            section: section.clone(),
            name,
        })
    }

    /// Whether the limit covers requests on `route` (to `upstream`).
    fn covers(&self, ex: &Exchange) -> bool {
        self.section
            .upstream
            .as_ref()
            .is_none_or(|u| *u == ex.route.upstream.name)
            && self
                .section
                .route
                .as_ref()
                .is_none_or(|r| *r == ex.route.label)
    }

    /// The request's key, or `None` when a keyed header is missing.
    fn key_of(&self, ex: &Exchange) -> Option<String> {
        let mut key = String::new();
        for part in &self.parts {
            if !key.is_empty() {
                key.push('\u{1f}');
            }
            match part {
                KeyPart::ClientIp => key.push_str(&client_ip(ex)),
                KeyPart::Route => key.push_str(&ex.route.label),
                KeyPart::Header(name) => {
                    let v = ex.request.headers().get(name)?;
                    key.push_str(&String::from_utf8_lossy(v.as_bytes()));
                }
            }
        }
        Some(key)
    }

    fn check_local(&self, key: &String) -> Verdict {
        match self.local.check_key(key) {
            Ok(()) => Verdict::Pass,
            Err(not_until) => {
                Verdict::Over(not_until.wait_time_from(DefaultClock::default().now()))
            }
        }
    }

    async fn check(&self, key: String) -> Verdict {
        let local = self.check_local(&key);
        let Some(shared) = &self.shared else {
            return local;
        };
        if !matches!(local, Verdict::Pass) {
            return local;
        }
        match shared.check(&key).await {
            Some(Some(wait)) => Verdict::Over(wait),
            Some(None) => Verdict::Pass,
            None => match self.section.on_redis_error {
                OnRedisError::Local => Verdict::Pass,
                OnRedisError::Deny => Verdict::Unavailable,
            },
        }
    }

    /// The verdict as the request sees it: shadow limits only count.
    fn outcome(&self, verdict: Verdict) -> Result<()> {
        match verdict {
            Verdict::Pass => Ok(()),
            Verdict::Over(_) if self.section.shadow => {
                self.shadowed.increment(1);
                Ok(())
            }
            Verdict::Over(wait) => {
                self.rejected.increment(1);
                Err(ProxyError::RateLimited {
                    limit: self.name.clone(),
                    retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
                    policy: self.policy.clone(),
                })
            }
            Verdict::Unavailable => Err(ProxyError::RateLimiterUnavailable {
                limit: self.name.clone(),
            }),
        }
    }

    /// Drops keys that have been idle long enough to be back at full burst.
    pub fn sweep(&self) {
        self.local.retain_recent();
        self.local.shrink_to_fit();
    }
}

/// Every limit, kept across reloads in the registry.
#[derive(Default)]
pub struct RateLimits {
    by_name: Mutex<HashMap<String, Arc<Limit>>>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RateLimits")
    }
}

impl RateLimits {
    /// The limits of a config: an unchanged definition keeps its limiter
    /// (and its counts); a changed or new one starts afresh.
    pub fn for_config(&self, sections: &[RateLimitSection]) -> Arc<[Arc<Limit>]> {
        let mut by_name = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        let limits: Vec<Arc<Limit>> = sections
            .iter()
            .filter_map(|s| match by_name.get(&s.name) {
                Some(l) if l.section == *s => Some(l.clone()),
                _ => Limit::new(s).map(Arc::new),
            })
            .collect();
        *by_name = limits.iter().map(|l| (l.name.clone(), l.clone())).collect();
        limits.into()
    }

    /// Sweeps every limit's idle keys (the server's periodic loop).
    pub fn sweep(&self) {
        let limits: Vec<Arc<Limit>> = {
            let by_name = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
            by_name.values().cloned().collect()
        };
        for l in limits {
            l.sweep();
        }
    }
}

crate::proxy::layer!(RateLimitLayer, RateLimit);

type Result<T> = std::result::Result<T, ProxyError>;

impl<S> Service<Exchange> for RateLimit<S>
where
    S: crate::proxy::Downstream,
{
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response<ProxyBody>>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, ex: Exchange) -> Self::Future {
        if ex.state.rate_limits.is_empty() {
            return Either::Left(self.inner.call(ex));
        }
        let applicable: Vec<(Arc<Limit>, String)> = ex
            .state
            .rate_limits
            .iter()
            .filter(|l| l.covers(&ex))
            .filter_map(|l| Some((l.clone(), l.key_of(&ex)?)))
            .collect();
        if applicable.is_empty() {
            return Either::Left(self.inner.call(ex));
        }
        // Local-only limits decide now, with no allocation of a future.
        if applicable.iter().all(|(l, _)| l.shared.is_none()) {
            for (limit, key) in &applicable {
                if let Err(e) = limit.outcome(limit.check_local(key)) {
                    return Either::Right(Box::pin(std::future::ready(Err(e))));
                }
            }
            return Either::Left(self.inner.call(ex));
        }
        let mut inner = self.inner.clone();
        Either::Right(Box::pin(async move {
            for (limit, key) in applicable {
                let verdict = limit.check(key).await;
                limit.outcome(verdict)?;
            }
            inner.call(ex).await
        }))
    }
}

/// Headers of a 429: `Retry-After`, `RateLimit-Policy` and `RateLimit`.
pub fn rejection_headers(
    headers: &mut HeaderMap,
    limit: &str,
    retry_after_secs: u64,
    policy: &http::HeaderValue,
) {
    headers.insert(http::header::RETRY_AFTER, retry_after_secs.into());
    headers.insert("ratelimit-policy", policy.clone());
    if let Ok(v) = http::HeaderValue::from_str(&format!("\"{limit}\";r=0;t={retry_after_secs}")) {
        headers.insert("ratelimit", v);
    }
}

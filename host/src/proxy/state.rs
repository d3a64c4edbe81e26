//! The immutable data-plane state one config produces: routes, upstreams
//! with their backends and balancers, and the limits and timeouts.
//!
//! A `ProxyState` is built off the hot path (at start and on reload), then
//! published through an `ArcSwap`. Each request loads it once and runs to
//! completion on that snapshot, so a swap never changes a request midway.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::balance::{self, Backend, Balancer};
use crate::cache::{CacheStore, RouteCache};
use crate::config::{
    Config, HashKey, HealthSection, LimitsSection, OutlierSection, TimeoutsSection, UpstreamSection,
};
use crate::telemetry::{BackendMetrics, RouteMetrics, UpstreamMetrics, Windows};

use super::admission::Admission;
use super::registry::{Learned, Registry, weight_knob};
use crate::http1::client::ConnPool;

#[derive(Debug)]
pub struct ProxyState {
    /// Content hash of the config this state was built from.
    pub version: String,
    pub timeouts: TimeoutsSection,
    pub limits: LimitsSection,
    /// Most specific first; the first match wins.
    routes: Box<[Arc<Route>]>,
    pub upstreams: BTreeMap<String, Arc<Upstream>>,
    /// Metrics for requests no route matched.
    pub unrouted: RouteMetrics,
    pub admission: Arc<Admission>,
    /// `[[rate_limits]]`, their state kept by the registry.
    pub rate_limits: Arc<[Arc<crate::ratelimit::Limit>]>,
    pub windows: Arc<Windows>,
    pub cache: Arc<CacheStore>,
    /// `listen.trusted_proxies`.
    trusted_proxies: Box<[ipnet::IpNet]>,
    /// The HTTPS listener's rustls config (`[tls]`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The port plain-HTTP requests of `redirect_https` routes are sent to.
    pub https_port: Option<u16>,
    /// Pending ACME HTTP-01 challenges, answered before routing.
    pub challenges: Arc<crate::tls::Challenges>,
}

#[derive(Debug)]
pub struct Route {
    /// Label used in metrics: `host` + `path_prefix`.
    pub label: String,
    host: HostMatch,
    prefix: String,
    pub upstream: Arc<Upstream>,
    pub metrics: RouteMetrics,
    /// The process's sliding windows, which every finished request feeds.
    pub windows: Arc<Windows>,
    /// Cache settings when this route caches.
    pub cache: Option<RouteCache>,
    /// Plain-HTTP requests are redirected to HTTPS.
    pub redirect_https: bool,
    /// Response compression settings when this route compresses.
    pub compression: Option<Arc<crate::compress::RouteCompression>>,
    /// Admission class (0–7) of the route's requests.
    pub priority: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    Any,
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    Suffix(String),
}

impl HostMatch {
    fn parse(pattern: &str) -> Self {
        match pattern {
            "*" => HostMatch::Any,
            p => match p.strip_prefix('*') {
                Some(suffix) => HostMatch::Suffix(suffix.to_ascii_lowercase()),
                None => HostMatch::Exact(p.to_ascii_lowercase()),
            },
        }
    }

    /// Exact hosts beat suffixes, longer suffixes beat shorter, `*` is last.
    fn rank(&self) -> (u8, usize) {
        match self {
            HostMatch::Exact(h) => (2, h.len()),
            HostMatch::Suffix(s) => (1, s.len()),
            HostMatch::Any => (0, 0),
        }
    }

    #[inline]
    fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Any => true,
            HostMatch::Exact(h) => host.eq_ignore_ascii_case(h),
            HostMatch::Suffix(s) => {
                host.len() > s.len()
                    && host.is_char_boundary(host.len() - s.len())
                    && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
            }
        }
    }
}

/// One upstream: its backends as the current config lists them, and the
/// policies that govern them. What it learns lives in the registry.
#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub backends: Box<[Backend]>,
    pub balancer: Arc<dyn Balancer>,
    pub hash_key: Option<HashKey>,
    /// Percent of available backends below which every backend is picked.
    pub panic_threshold: u32,
    pub retry: crate::config::RetrySection,
    pub outlier: OutlierSection,
    pub health: Option<HealthSection>,
    /// Retry budget, in-flight count, rotation: kept across rebuilds.
    pub learned: Arc<Learned>,
    pub metrics: UpstreamMetrics,
    pub section: UpstreamSection,
    /// Idle connections of each backend, in `backends` order.
    pub pools: Box<[Arc<ConnPool>]>,
    /// For `protocol = "h2"`: each backend's multiplexed connections, in
    /// `backends` order; empty for HTTP/1.1 upstreams.
    pub h2: Box<[Arc<crate::http2::H2Pool>]>,
    /// Backends are spoken to over TLS.
    pub tls: bool,
    pub connect_timeout: std::time::Duration,
}

/// How long a panic-routing verdict is reused before the backends are
/// counted again.
const PANIC_RECHECK_MS: u64 = 100;

impl ProxyState {
    /// Builds the state for a validated config; what was learned comes from
    /// `registry`.
    pub fn build(
        config: &Config,
        version: &str,
        registry: &Registry,
        tls: &crate::tls::Materials,
    ) -> Self {
        let upstreams: BTreeMap<String, Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|(name, section)| {
                (
                    name.clone(),
                    Arc::new(Upstream::build(
                        name,
                        section,
                        config,
                        registry,
                        tls.upstreams.get(name),
                    )),
                )
            })
            .collect();
        let mut routes: Vec<Arc<Route>> = config
            .routes
            .iter()
            .filter_map(|r| {
                let upstream = upstreams.get(&r.upstream)?.clone();
                let label = format!("{}{}", r.host, r.path_prefix);
                Some(Arc::new(Route {
                    metrics: RouteMetrics::new(&label, &upstream.name),
                    label,
                    host: HostMatch::parse(&r.host),
                    prefix: r.path_prefix.clone(),
                    redirect_https: r.redirect_https,
                    compression: route_compression(r, &config.compression),
                    priority: r.priority,
                    upstream,
                    windows: registry.windows.clone(),
                    cache: r.cache.unwrap_or(config.cache.enabled).then(|| RouteCache {
                        key_headers: r
                            .cache_key_headers
                            .as_ref()
                            .unwrap_or(&config.cache.key_headers)
                            .iter()
                            .map(|h| h.to_ascii_lowercase())
                            .collect(),
                        max_object: config.cache.max_object_size.0,
                        targeted: config
                            .cache
                            .targeted_cache_control
                            .iter()
                            .filter_map(|n| http::HeaderName::from_bytes(n.as_bytes()).ok())
                            .collect(),
                        heuristic: config.cache.heuristic_freshness,
                        collapse_timeout: config.cache.collapse_timeout.get(),
                        purge_method: config.cache.purge_method,
                    }),
                }))
            })
            .collect();
        routes.sort_by(|a, b| {
            b.host
                .rank()
                .cmp(&a.host.rank())
                .then(b.prefix.len().cmp(&a.prefix.len()))
        });
        ProxyState {
            version: version.to_string(),
            timeouts: config.timeouts.clone(),
            limits: config.limits.clone(),
            routes: routes.into_boxed_slice(),
            upstreams,
            unrouted: RouteMetrics::new("none", "none"),
            admission: registry.admission.clone(),
            rate_limits: registry.rate_limits.for_config(&config.rate_limits),
            windows: registry.windows.clone(),
            cache: registry.cache_for(&config.cache),
            trusted_proxies: config.listen.trusted_proxies.clone().into_boxed_slice(),
            tls: config.tls.as_ref().and_then(|t| registry.server_tls(t)),
            https_port: config.tls.as_ref().map(|t| t.address.0.port()),
            challenges: registry.challenges.clone(),
        }
    }

    /// Whether a peer's forwarding headers are trusted.
    pub fn is_trusted(&self, ip: std::net::IpAddr) -> bool {
        // An IPv4 peer on a dual-stack socket shows as ::ffff:a.b.c.d.
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// Whether any route caches responses.
    pub fn caches(&self) -> bool {
        self.routes.iter().any(|r| r.cache.is_some())
    }

    /// `timeouts.request`, for requests the proxy makes on its own behalf
    /// (cache revalidations).
    pub fn request_timeout(&self) -> std::time::Duration {
        self.timeouts.request.get()
    }

    /// The route for a request: the most specific matching host, then the
    /// longest matching path prefix. `host` has no port.
    #[inline]
    pub fn route(&self, host: &str, path: &str) -> Option<&Arc<Route>> {
        self.routes
            .iter()
            .find(|r| r.host.matches(host) && path.starts_with(r.prefix.as_str()))
    }
}

impl Upstream {
    fn build(
        name: &str,
        section: &UpstreamSection,
        config: &Config,
        registry: &Registry,
        tls: Option<&crate::tls::BackendTls>,
    ) -> Self {
        let learned = registry.upstream(name);
        let retry = section.retry();
        learned
            .budget
            .configure(retry.budget_percent, retry.min_retries_per_second);
        let backends: Box<[Backend]> = section
            .backends
            .iter()
            .map(|b| {
                let owned = registry.knobs.get(&weight_knob(name, &b.address));
                Backend::new(
                    b.address.clone(),
                    owned.map_or(b.weight, |o| o.value as u32),
                    section.breaker().max_in_flight,
                    registry.backend(name, &b.address),
                    BackendMetrics::new(name, b.address.as_str()),
                )
            })
            .collect();
        let balancer = balance::build(section, &backends, learned.rotation.clone());
        Upstream {
            name: name.to_string(),
            hash_key: section.hash.as_ref().map(|h| h.key.clone()),
            panic_threshold: section.panic_threshold,
            retry: retry.clone(),
            outlier: section.outlier().clone(),
            health: section.health.clone(),
            metrics: UpstreamMetrics::new(name),
            section: section.clone(),
            pools: section
                .backends
                .iter()
                .map(|b| match tls {
                    Some(tls) => registry.tls_pool(b.address.as_str(), tls),
                    None => registry.pool(b.address.as_str()),
                })
                .collect(),
            h2: match section.protocol {
                crate::config::Protocol::H2 => section
                    .backends
                    .iter()
                    .map(|b| registry.h2_pool(b.address.as_str(), tls))
                    .collect(),
                crate::config::Protocol::Http1 => Box::default(),
            },
            tls: tls.is_some(),
            connect_timeout: config.timeouts.connect.get(),
            backends,
            balancer,
            learned,
        }
    }

    /// Whether fewer than `panic_threshold` percent of the backends are
    /// available (healthy, not ejected): then every backend is picked from,
    /// as in Envoy's panic mode. The count is redone at most every
    /// [`PANIC_RECHECK_MS`] unless `fresh`.
    pub fn in_panic(&self, now_ms: u64, fresh: bool) -> bool {
        if self.panic_threshold == 0 {
            return false;
        }
        let cached = self.learned.panic.load(Relaxed);
        if !fresh && now_ms.saturating_sub(cached >> 1) < PANIC_RECHECK_MS {
            return cached & 1 == 1;
        }
        let available = self
            .backends
            .iter()
            .filter(|b| b.state.is_healthy() && !b.state.is_ejected(now_ms))
            .count();
        let panic = available * 100 < self.backends.len() * self.panic_threshold as usize;
        self.learned
            .panic
            .store((now_ms << 1) | u64::from(panic), Relaxed);
        panic
    }

    /// Sets a backend's weight in force and tells the balancer; nothing
    /// else is rebuilt. `false`: no such backend.
    pub fn set_weight(&self, addr: &str, weight: u32) -> bool {
        let Some(backend) = self.backends.iter().find(|b| b.addr.as_str() == addr) else {
            return false;
        };
        backend.set_weight(weight);
        self.balancer.reweigh(&self.backends);
        true
    }
}

/// A route's compression settings: its own keys over `[compression]`.
fn route_compression(
    route: &crate::config::RouteSection,
    defaults: &crate::config::CompressionSection,
) -> Option<Arc<crate::compress::RouteCompression>> {
    use crate::compress::{CodingMetrics, Levels, MediaRange, RouteCompression};
    if !route.compression.unwrap_or(defaults.enabled) {
        return None;
    }
    Some(Arc::new(RouteCompression {
        codings: defaults.algorithms.clone().into(),
        min_size: route.compression_min_size.unwrap_or(defaults.min_size).0,
        types: route
            .compression_types
            .as_ref()
            .unwrap_or(&defaults.types)
            .iter()
            .filter_map(|t| MediaRange::parse(t))
            .collect(),
        levels: Levels {
            gzip: defaults.gzip_level,
            brotli: defaults.brotli_level,
            zstd: defaults.zstd_level,
        },
        metrics: CodingMetrics::all(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_matching() {
        let exact = HostMatch::parse("API.example.com");
        assert!(exact.matches("api.example.com"));
        assert!(!exact.matches("x.api.example.com"));
        let suffix = HostMatch::parse("*.example.com");
        assert!(suffix.matches("a.example.com") && suffix.matches("a.b.EXAMPLE.com"));
        assert!(!suffix.matches("example.com"));
        assert!(!suffix.matches("notexample.com"));
        assert!(HostMatch::Exact("a".into()).rank() > HostMatch::Suffix(".b.c".into()).rank());
    }
}

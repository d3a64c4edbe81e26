//! The immutable data-plane state one config produces: routes, upstreams
//! with their backends and balancers, and the limits and timeouts.
//!
//! A `ProxyState` is built off the hot path (at start and on reload), then
//! published through an `ArcSwap`. Each request loads it once and runs to
//! completion on that snapshot, so a swap never changes a request midway.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};

use crate::balance::{self, Backend, Balancer, StateRegistry};
use crate::cache::{CacheStore, RouteCache};
use crate::config::{
    CacheSection, Config, HashKey, HealthSection, LimitsSection, OutlierSection, TimeoutsSection,
    UpstreamSection,
};
use crate::telemetry::{BackendMetrics, RouteMetrics, UpstreamMetrics, Windows};

use super::admission::Admission;
use super::retry::RetryBudget;
use super::upstream::{ConnPool, Pools};

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
    pub windows: Arc<Windows>,
    pub cache: Arc<CacheStore>,
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
/// policies that govern them.
#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub backends: Box<[Backend]>,
    pub balancer: Arc<dyn Balancer>,
    pub hash_key: Option<HashKey>,
    pub panic_mode: bool,
    pub retry: crate::config::RetrySection,
    pub budget: RetryBudget,
    pub outlier: OutlierSection,
    /// Serialises ejection decisions so the max-ejection percent holds.
    pub ejection_lock: Mutex<()>,
    pub health: Option<HealthSection>,
    pub in_flight: Arc<AtomicU32>,
    pub metrics: UpstreamMetrics,
    pub section: UpstreamSection,
    /// Idle connections of each backend, in `backends` order.
    pub pools: Box<[Arc<ConnPool>]>,
    pub connect_timeout: std::time::Duration,
}

/// What each new state inherits from the ones before: learned backend state
/// and warm connection pools, both keyed by backend, so a reload keeps them
/// for backends that stay.
pub struct Carried {
    pub backends: StateRegistry,
    pub pools: Pools,
    pub windows: Arc<Windows>,
    pub admission: Arc<Admission>,
    /// Backend weights an optimizer set, by `upstream/address`; a config
    /// reload clears them so the config's weights apply again.
    pub weights: Mutex<HashMap<String, u32>>,
    /// The response cache; kept across reloads unless its capacity or
    /// eviction policy changes.
    pub cache: Mutex<Option<Arc<CacheStore>>>,
}

impl Carried {
    /// The cache store for `section`: the running one when it fits.
    pub fn cache_for(&self, section: &CacheSection) -> Arc<CacheStore> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        match cache.as_ref() {
            Some(c) if c.fits(section) => c.clone(),
            _ => {
                let fresh = Arc::new(CacheStore::new(section));
                *cache = Some(fresh.clone());
                fresh
            }
        }
    }
}

impl Default for Carried {
    fn default() -> Self {
        Carried {
            backends: StateRegistry::default(),
            pools: Pools::default(),
            windows: Arc::new(Windows::new(crate::clock::now_ms())),
            admission: Arc::new(Admission::default()),
            weights: Mutex::new(HashMap::new()),
            cache: Mutex::new(None),
        }
    }
}

impl ProxyState {
    /// Builds the state for a validated config.
    pub fn build(config: &Config, version: &str, carried: &Carried) -> Self {
        let upstreams: BTreeMap<String, Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|(name, section)| {
                (
                    name.clone(),
                    Arc::new(Upstream::build(name, section, config, carried)),
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
                    upstream,
                    windows: carried.windows.clone(),
                    cache: r.cache.unwrap_or(config.cache.enabled).then(|| RouteCache {
                        key_headers: r
                            .cache_key_headers
                            .as_ref()
                            .unwrap_or(&config.cache.key_headers)
                            .iter()
                            .map(|h| h.to_ascii_lowercase())
                            .collect(),
                        max_object: config.cache.max_object_size.0,
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
            admission: carried.admission.clone(),
            windows: carried.windows.clone(),
            cache: carried.cache_for(&config.cache),
        }
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
    fn build(name: &str, section: &UpstreamSection, config: &Config, carried: &Carried) -> Self {
        let weights = carried
            .weights
            .lock()
            .map(|w| w.clone())
            .unwrap_or_default();
        let backends: Box<[Backend]> = section
            .backends
            .iter()
            .map(|b| Backend {
                authority: b.address.authority(),
                addr: b.address.clone(),
                weight: weights
                    .get(&format!("{name}/{}", b.address))
                    .copied()
                    .unwrap_or(b.weight),
                max_in_flight: section.breaker().max_in_flight,
                state: carried.backends.state(name, &b.address),
                metrics: BackendMetrics::new(name, b.address.as_str()),
            })
            .collect();
        let balancer = balance::build(section, &backends);
        Upstream {
            name: name.to_string(),
            hash_key: section.hash.as_ref().map(|h| h.key.clone()),
            panic_mode: section.panic_mode,
            retry: section.retry().clone(),
            budget: RetryBudget::new(
                section.retry().budget_percent,
                section.retry().min_retries_per_second,
            ),
            outlier: section.outlier().clone(),
            ejection_lock: Mutex::new(()),
            health: section.health.clone(),
            in_flight: Arc::new(AtomicU32::new(0)),
            metrics: UpstreamMetrics::new(name),
            section: section.clone(),
            pools: section
                .backends
                .iter()
                .map(|b| carried.pools.pool(b.address.as_str()))
                .collect(),
            connect_timeout: config.timeouts.connect.get(),
            backends,
            balancer,
        }
    }
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

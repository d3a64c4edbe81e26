//! The one place where what the proxy has learned survives a rebuild or a
//! reload. A reader looking for "what does a reload keep?" finds all of it
//! here:
//!
//! - per upstream (by name): the retry budget's counters, the in-flight
//!   count, the balancer's rotation, the panic-routing verdict;
//! - per backend (by upstream name and address): Peak-EWMA latency,
//!   in-flight count, health, ejection and counters ([`BackendState`]);
//! - per backend address: the pool of idle connections;
//! - the sliding windows, the admission limit, the response cache;
//! - the knobs optimizers set, with their owners ([`Knobs`]).
//!
//! Building an upstream only looks entries up. An entry lives while some
//! published state uses it (the registry keeps weak references), so a
//! backend or upstream removed from the config is forgotten once the last
//! request on the old state is done, and one that stays keeps everything.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use serde::Serialize;

use super::admission::Admission;
use super::retry::RetryBudget;
use crate::balance::BackendState;
use crate::cache::CacheStore;
use crate::config::{BackendAddr, CacheSection, Config, TlsSection};
use crate::http1::client::ConnPool;
use crate::http2::H2Pool;
use crate::telemetry::Windows;

/// What one upstream has learned.
#[derive(Debug)]
pub struct Learned {
    pub budget: RetryBudget,
    /// Requests in flight over the whole upstream (bounded-load hashing).
    pub in_flight: AtomicU32,
    /// The balancer's position: round robin's turn, tie-breaking offsets.
    pub rotation: Arc<AtomicUsize>,
    /// Serialises ejection decisions so the max-ejection percent holds.
    pub ejection_lock: Mutex<()>,
    /// The last panic-routing verdict: `(clock ms << 1) | in_panic`.
    pub panic: AtomicU64,
}

impl Default for Learned {
    fn default() -> Self {
        Learned {
            budget: RetryBudget::new(0.0, 0),
            in_flight: AtomicU32::new(0),
            rotation: Arc::default(),
            ejection_lock: Mutex::new(()),
            panic: AtomicU64::new(0),
        }
    }
}

/// A knob value an optimizer set, and who owns it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Owned {
    pub value: u64,
    /// The optimizer plugin that set it.
    pub owner: String,
    /// When it was last set (RFC 3339).
    pub at: String,
    /// The config's value when it was set: a reload with another config
    /// value takes the knob back.
    #[serde(skip)]
    pub config_value: u64,
}

/// Knobs optimizers own: `concurrency_limit`, `cache_capacity_bytes`,
/// `weight UPSTREAM/ADDRESS`.
/// A knob without an owner has its config value.
#[derive(Debug, Default)]
pub struct Knobs {
    owned: Mutex<BTreeMap<String, Owned>>,
}

/// The knob name of a backend's weight.
pub fn weight_knob(upstream: &str, addr: &BackendAddr) -> String {
    format!("weight {upstream}/{addr}")
}

/// How a decision names the weight a plugin asked for `backend` (as the
/// plugin wrote it) in `/admin/optimizer` and `plugin test`.
pub fn requested_weight_knob(backend: &str) -> String {
    format!("weight {backend}")
}

pub const CONCURRENCY_LIMIT: &str = "concurrency_limit";
pub const CACHE_CAPACITY: &str = "cache_capacity_bytes";

impl Knobs {
    pub fn set(&self, knob: &str, value: u64, owner: &str, config_value: u64) {
        let owned = Owned {
            value,
            owner: owner.to_string(),
            at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            config_value,
        };
        self.lock().insert(knob.to_string(), owned);
    }

    pub fn get(&self, knob: &str) -> Option<Owned> {
        self.lock().get(knob).cloned()
    }

    pub fn all(&self) -> BTreeMap<String, Owned> {
        self.lock().clone()
    }

    /// Takes back, for `config`, every knob whose owner is no longer one of
    /// its optimizers, whose config value changed, or which no longer
    /// exists; returns what was released, for the log.
    pub fn release_for(&self, config: &Config) -> Vec<(String, Owned)> {
        let optimizers: Vec<&str> = config
            .plugins
            .iter()
            .filter(|p| p.kind == crate::config::PluginKind::Optimizer)
            .map(|p| p.name.as_str())
            .collect();
        let mut owned = self.lock();
        let released: Vec<String> = owned
            .iter()
            .filter(|(knob, o)| {
                !optimizers.contains(&o.owner.as_str())
                    || config_value(config, knob) != Some(o.config_value)
            })
            .map(|(knob, _)| knob.clone())
            .collect();
        released
            .into_iter()
            .filter_map(|knob| owned.remove(&knob).map(|o| (knob, o)))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Owned>> {
        self.owned.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What `config` says a knob is; `None`: no such knob in it.
pub fn config_value(config: &Config, knob: &str) -> Option<u64> {
    if knob == CONCURRENCY_LIMIT {
        return Some(config.admission.max_concurrency.into());
    }
    if knob == CACHE_CAPACITY {
        return Some(config.cache.capacity.0);
    }
    let (upstream, addr) = knob.strip_prefix("weight ")?.split_once('/')?;
    config
        .upstreams
        .get(upstream)?
        .backends
        .iter()
        .find(|b| b.address.as_str() == addr)
        .map(|b| b.weight.into())
}

#[derive(Debug)]
pub struct Registry {
    upstreams: Mutex<HashMap<String, Weak<Learned>>>,
    backends: Mutex<HashMap<(String, BackendAddr), Weak<BackendState>>>,
    /// By address: upstreams that share a backend share its connections.
    pools: Mutex<HashMap<String, Weak<ConnPool>>>,
    /// The same for HTTP/2 connections.
    h2_pools: Mutex<HashMap<String, Weak<H2Pool>>>,
    pub windows: Arc<Windows>,
    pub admission: Arc<Admission>,
    pub rate_limits: crate::ratelimit::RateLimits,
    pub knobs: Knobs,
    /// The response cache; kept unless its capacity or eviction policy
    /// changes.
    cache: Mutex<Option<Arc<CacheStore>>>,
    /// What the HTTPS listener serves: the certificate files of `[tls]` and
    /// ACME's certificate, each replaced whole.
    pub certs: Arc<crate::tls::CertStore>,
    /// Pending ACME HTTP-01 challenges, answered by the listeners.
    pub challenges: Arc<crate::tls::Challenges>,
    /// The HTTPS listener's rustls config, kept while its settings stay so
    /// that session tickets issued before a reload still resume after it.
    server_tls: Mutex<Option<(TlsSection, Arc<rustls::ServerConfig>)>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            upstreams: Mutex::default(),
            backends: Mutex::default(),
            pools: Mutex::default(),
            h2_pools: Mutex::default(),
            windows: Arc::new(Windows::new(crate::clock::now_ms())),
            admission: Arc::new(Admission::default()),
            rate_limits: crate::ratelimit::RateLimits::default(),
            knobs: Knobs::default(),
            cache: Mutex::new(None),
            certs: Arc::default(),
            challenges: Arc::default(),
            server_tls: Mutex::new(None),
        }
    }
}

/// The live entry for `key`, or a fresh one; dead entries are swept.
fn look_up<K, V>(map: &Mutex<HashMap<K, Weak<V>>>, key: K, fresh: impl FnOnce() -> V) -> Arc<V>
where
    K: std::hash::Hash + Eq,
{
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(existing) = map.get(&key).and_then(Weak::upgrade) {
        return existing;
    }
    let made = Arc::new(fresh());
    map.insert(key, Arc::downgrade(&made));
    map.retain(|_, w| w.strong_count() > 0);
    made
}

impl Registry {
    /// What upstream `name` has learned.
    pub fn upstream(&self, name: &str) -> Arc<Learned> {
        look_up(&self.upstreams, name.to_string(), Learned::default)
    }

    /// The state of backend `addr` of upstream `name`.
    pub fn backend(&self, upstream: &str, addr: &BackendAddr) -> Arc<BackendState> {
        look_up(
            &self.backends,
            (upstream.to_string(), addr.clone()),
            BackendState::default,
        )
    }

    /// The idle connections to `authority`.
    pub fn pool(&self, authority: &str) -> Arc<ConnPool> {
        look_up(&self.pools, authority.to_string(), ConnPool::default)
    }

    /// The idle TLS connections to backend `addr` made with `tls`.
    pub fn tls_pool(&self, addr: &str, tls: &crate::tls::BackendTls) -> Arc<ConnPool> {
        let Some(target) = tls.targets.get(addr) else {
            // Materials are made from the same config: not reached.
            return self.pool(addr);
        };
        look_up(&self.pools, tls.pool_key(addr), || {
            ConnPool::with_tls(target.clone())
        })
    }

    /// The HTTP/2 connections to backend `addr`, made with `tls` if set.
    pub fn h2_pool(&self, addr: &str, tls: Option<&crate::tls::BackendTls>) -> Arc<H2Pool> {
        let target = tls.and_then(|t| t.targets.get(addr));
        let key = match tls {
            Some(t) if target.is_some() => t.pool_key(addr),
            _ => addr.to_string(),
        };
        look_up(&self.h2_pools, key, || H2Pool::new(target.cloned()))
    }

    /// The rustls config of the HTTPS listener for `section`: the running
    /// one while the settings it is made of stay the same.
    pub fn server_tls(&self, section: &TlsSection) -> Option<Arc<rustls::ServerConfig>> {
        let mut current = self.server_tls.lock().unwrap_or_else(|e| e.into_inner());
        let same = |s: &TlsSection| {
            s.min_version == section.min_version && s.session_tickets == section.session_tickets
        };
        if let Some((s, config)) = current.as_ref()
            && same(s)
        {
            return Some(config.clone());
        }
        match crate::tls::server_config(section, self.certs.clone()) {
            Ok(config) => {
                *current = Some((section.clone(), config.clone()));
                Some(config)
            }
            Err(e) => {
                tracing::error!("{e}");
                None
            }
        }
    }

    /// Closes pooled connections their backends closed (or that idled too
    /// long) in every pool; returns how many.
    pub fn sweep_pools(&self) -> usize {
        let pools: Vec<Arc<ConnPool>> = {
            let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
            pools.values().filter_map(Weak::upgrade).collect()
        };
        let now = std::time::Instant::now();
        pools.iter().map(|p| p.sweep(now)).sum()
    }

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

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use super::*;

    #[test]
    fn entries_live_while_used_and_are_shared_meanwhile() {
        let r = Registry::default();
        let addr: BackendAddr = "10.0.0.1:80".parse().expect("address");
        let a = r.backend("app", &addr);
        a.requests.store(7, Relaxed);
        assert_eq!(r.backend("app", &addr).requests.load(Relaxed), 7);
        assert_eq!(r.backend("other", &addr).requests.load(Relaxed), 0);
        drop(a);
        assert_eq!(
            r.backend("app", &addr).requests.load(Relaxed),
            0,
            "forgotten once unused"
        );
        let up = r.upstream("app");
        up.in_flight.store(3, Relaxed);
        assert_eq!(r.upstream("app").in_flight.load(Relaxed), 3);
    }
}
